#!/usr/bin/env bash
# The GPU checks of the training issue, as one script for a lent GPU machine (the `device`
# tool) with PyTorch installed. Steps, run in the order STEPS gives them:
#   0  each op of the ViT on the GPU against the CPU (`dino-device-ops`), fused attention too;
#   K  the kernel cache: `dino embed` cold and warm, `--autotune balanced` and `minimal`;
#   A  one DINO training step of ViT-S/16 (2 x 224 + 8 x 96 crops per image, official head) on
#      Burn's Vulkan backend in f32, bf16 and f16 (`--precision`), with Burn's composed
#      attention and dino-rs's fused attention kernels (`--attention-kernel`), against PyTorch
#      CUDA in fp32, TF32 and AMP bf16 / f16, same run;
#   C  the same step on LibTorch CUDA (`--device cuda` of a `--features tch` build:
#      `dino-bench-tch` beside BINARY, as bench/gpu_session.sh packs it, else `dino-bench`);
#   P  the per-kernel breakdown of the step (`--profile-kernels`, bench/kernel_profile.py);
#   B  the Fashion-MNIST learning recipe of bench/fashion_mnist.sh with a longer budget,
#      dino-rs on Vulkan in each of B_PRECISIONS (f32 f16: the mixed-precision run against the
#      f32 one) and the PyTorch reference on CUDA, all at once (their times are not a
#      comparison: they share the GPU; their k-NN is).
#
#   bash bench/gpu_check.sh BINARY FM_TRAIN_TAR_XZ OUTDIR
#
# BINARY is `dino`; `dino-bench` is taken from beside it (or BENCH_BIN), and so is
# `dino-device-ops` if built. FM_TRAIN_TAR_XZ (train_10000 of bench/fashion_mnist_folders.py
# as tar.xz) is read by step B only. bench/gpu_session.sh builds and packs all of it for the
# device tool and runs this script there.
#
# Settings (environment):
#   STEPS="C A P K 0 B"   which steps, in this order (the most wanted first)
#   DEADLINE_S=540        seconds from the start after which no step starts, and every step's
#                         timeout is cut to what is left (the device tool kills a command at
#                         600 s); unset: each step's own timeout
#   PRECISIONS, ATTENTION_KERNELS, PROFILES ("precision:kernel" pairs), STEP_BATCH, EPOCHS,
#   STEP_ITERS (4), STEP_ROUNDS (2), ARCH (vit_small), GPU_DEVICE (vulkan), TORCH_DEVICE
#   (cuda), REFERENCE (on: PyTorch must run; `off` for a dry run on a machine without it,
#   e.g. GPU_DEVICE=wgpu on SwiftShader: bench/gpu_session.sh shows one)
#
# The k-NN evaluation of the teachers is cheap and runs afterwards on any machine
# (`dino knn`, see bench/fashion_mnist.sh).
set -uo pipefail
BIN="$1"; DATA_TAR="$2"; OUT="$3"
BENCH="${BENCH_BIN:-$(dirname "$BIN")/dino-bench}"
BENCH_TCH="${BENCH_TCH_BIN:-$(dirname "$BIN")/dino-bench-tch}"
[ -x "$BENCH_TCH" ] || BENCH_TCH="$BENCH"
OPS="$(dirname "$BIN")/dino-device-ops"
W="${WORK_DIR:-/tmp/gpucheck}"
STEPS="${STEPS:-C A P K 0 B}"
GPU="${GPU_DEVICE:-vulkan}"
TORCH="${TORCH_DEVICE:-cuda}"
REF="${REFERENCE:-on}"
ARCH="${ARCH:-vit_small}"
BATCH="${STEP_BATCH:-32}"
mkdir -p "$W" "$OUT"
START=$SECONDS

# `limit T`: T cut to what the deadline leaves (0 when it has passed)
limit() {
    if [ -z "${DEADLINE_S:-}" ]; then echo "$1"; return; fi
    local left=$(( DEADLINE_S - (SECONDS - START) ))
    [ "$left" -lt 0 ] && left=0
    echo $(( $1 < left ? $1 : left ))
}
# `starts NAME MIN`: whether a step that needs at least MIN seconds may start
starts() {
    local t; t=$(limit "$2")
    if [ "$t" -lt "$2" ]; then
        echo "== $1: skipped, $t s left before DEADLINE_S=$DEADLINE_S ==" | tee -a "$OUT/skipped.txt"
        return 1
    fi
}
# `timed T CMD...`: CMD under timeout T (cut by the deadline), its status and wall time logged
timed() {
    local t; t=$(limit "$1"); shift
    local s=$SECONDS
    timeout "$t" "$@"
    local rc=$?
    echo "[gpu_check] rc=$rc after $(( SECONDS - s )) s (limit $t s): ${*:1:4} ..." >&2
    return $rc
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null ||
    echo "no nvidia-smi"; } | tee "$OUT/gpu.txt"

step_0() {
    [ -x "$OPS" ] || { echo "no $OPS: skipped"; return; }
    starts 0 30 || return
    echo "== 0: each op of the ViT on the GPU against the CPU (dino-device-ops) =="
    timed 120 "$OPS" "$GPU" 2>&1 | tee "$OUT/device_ops.txt"
}

step_K() {
    echo "== K: kernel cache: embed cold and warm, --autotune balanced and minimal =="
    for level in balanced minimal; do
        rm -rf "$W/kc_$level"
        for run in cold warm; do
            starts "K $level $run" 20 || return
            local start; start=$(date +%s%N)
            timed 300 "$BIN" embed tests/fixtures/images/*.png -w tests/fixtures/weights/s16_backbone.pth \
                --device "$GPU" -o "$W/kc.npy" --kernel-cache "$W/kc_$level" --autotune "$level" 2>&1 |
                grep "GPU kernels"
            echo "$level $run: $(( ($(date +%s%N) - start) / 1000000 )) ms" | tee -a "$OUT/kernel_cache.txt"
        done
    done
}

# `train_step BENCH DEVICE PRECISION NAME TIMEOUT ARGS...`: one precision's training-step row of
# BENCH on DEVICE beside PyTorch (fp32, TF32 and that precision's AMP), into $OUT/NAME.{json,txt}
train_step() {
    local bench="$1" device="$2" p="$3" name="$4" t="$5"; shift 5
    timed "$t" "$bench" --mode train-step --device "$device" --arch "$ARCH" --batch "$BATCH" \
        --iters "${STEP_ITERS:-4}" --rounds "${STEP_ROUNDS:-2}" --warmup 1 \
        --torch-device "$TORCH" --reference "$REF" --precision "$p" "$@" \
        --json "$OUT/$name.json" 2>&1 | tee "$OUT/$name.txt"
}

step_A() {
    echo "== A: training step, $ARCH, batch $BATCH, each precision =="
    # one invocation per precision, so that a precision the Vulkan driver cannot run (bf16 needs
    # VK_KHR_shader_bfloat16) costs only its own row; each prints PyTorch CUDA fp32, TF32 and the
    # AMP of that precision beside dino-rs. The kernels compiled here are cached for step P.
    # A fresh machine's first step compiles and autotunes every kernel (over 200 s on the H200
    # on 2026-11-26, before fusion and the half-precision kernels): hence 300 s per precision.
    for p in ${PRECISIONS:-f32 bf16 f16}; do
        starts "A $p" 40 || return
        train_step "$BENCH" "$GPU" "$p" "train_step_$p" "${STEP_TIMEOUT:-300}" \
            --attention-kernel "${ATTENTION_KERNELS:-composed,fused}"
    done
}

step_C() {
    echo "== C: the same step on LibTorch CUDA (--device cuda, a --features tch build), each precision =="
    # the binary links LibTorch's CPU part only; PyTorch's own lib folder gives it libtorch_cuda
    local torch_lib
    torch_lib="$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib"
    for p in ${PRECISIONS:-f32 bf16 f16}; do
        starts "C $p" 40 || return
        LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
            train_step "$BENCH_TCH" cuda "$p" "train_step_tch_$p" "${STEP_TIMEOUT:-150}"
    done
}

step_P() {
    echo "== P: where the step's time goes: per-kernel table (precision:attention kernel; cached by A) =="
    for pk in ${PROFILES:-f32:composed f32:fused f16:composed}; do
        local p="${pk%%:*}" k="${pk##*:}"
        starts "P $pk" 30 || return
        timed "${PROFILE_TIMEOUT:-90}" "$BENCH" --mode train-step --device "$GPU" --arch "$ARCH" \
            --batch "$BATCH" --iters 1 --rounds 1 --warmup 1 --reference off --precision "$p" \
            --attention-kernel "$k" --profile-kernels "$OUT/kernels_${p}_$k.log" > /dev/null 2>&1
        python3 bench/kernel_profile.py "$OUT/kernels_${p}_$k.log" --steps 2 --top 25 2>&1 |
            tee "$OUT/kernels_${p}_$k.txt"
        xz -f "$OUT/kernels_${p}_$k.log"
    done
}

step_B() {
    local epochs="${EPOCHS:-30}"
    [ -f "$DATA_TAR" ] || { echo "== B: no $DATA_TAR: skipped =="; return; }
    starts B 120 || return
    echo "== B: Fashion-MNIST, $epochs epochs x 10k images =="
    [ -d "$W/train_10000" ] || tar -C "$W" -xJf "$DATA_TAR"
    local recipe=(--embed-dim 192 --depth 4 --num-heads 3 --patch-size 7 --global-crop-size 28
        --local-crop-size 14 --local-crops-number 6 --out-dim 2048 --head-hidden-dim 512
        --head-bottleneck-dim 128 --batch-size 128 --epochs "$epochs" --warmup-epochs 3 --seed 0)
    local t start p precisions="${B_PRECISIONS:-f32 f16}"
    t=$(limit "${TRAIN_TIMEOUT:-300}"); start=$(date +%s)
    for p in $precisions; do
        ( timeout "$t" "$BIN" train --recipe official --device "$GPU" --precision "$p" \
            --data "$W/train_10000" --output-dir "$W/ours_$p" --attention-every 0 "${recipe[@]}" \
            > "$OUT/fm_ours_$p.txt" 2>&1
          echo "dino-rs $p exit $? after $(( $(date +%s) - start )) s" >> "$OUT/fm_ours_$p.txt" ) &
    done
    ( PYTHONUNBUFFERED=1 timeout "$t" python3 bench/dino_reference_train.py \
        --data "$W/train_10000" --out "$W/pytorch" --device "$TORCH" --threads 4 --workers 6 "${recipe[@]}" \
        > "$OUT/fm_pytorch.txt" 2>&1
      echo "PyTorch exit $? after $(( $(date +%s) - start )) s" >> "$OUT/fm_pytorch.txt" ) &
    wait
    for p in $precisions; do
        tail -n 3 "$OUT/fm_ours_$p.txt"
        cp "$W/ours_$p/metrics.jsonl" "$OUT/fm_ours_${p}_metrics.jsonl" 2>/dev/null
        if [ ! -f "$W/ours_$p/teacher.safetensors" ] && [ -f "$W/ours_$p/checkpoint.safetensors" ]; then
            "$BIN" export --weights "$W/ours_$p/checkpoint.safetensors" --out "$W/ours_$p/teacher.safetensors"
        fi
        cp "$W/ours_$p/teacher.safetensors" "$OUT/fm_ours_${p}_teacher.safetensors" 2>/dev/null
    done
    tail -n 3 "$OUT/fm_pytorch.txt"
    cp "$W/pytorch/teacher_backbone.safetensors" "$OUT/fm_pytorch_teacher.safetensors" 2>/dev/null
}

for s in $STEPS; do
    case "$s" in
        0|K|A|C|P|B) "step_$s" ;;
        *) echo "unknown step '$s' (0 K A C P B)" >&2; exit 2 ;;
    esac
done
echo "== done in $(( SECONDS - START )) s: steps $STEPS =="
ls -la "$OUT"
