#!/usr/bin/env bash
# The GPU checks of the training issue, as one script for a lent GPU machine (the `device`
# tool) with PyTorch installed: (A) one DINO training step of ViT-S/16 (2 x 224 + 8 x 96 crops
# per image, official head) on Burn's Vulkan backend in f32, bf16 and f16 (`--precision`), with
# Burn's composed attention and dino-rs's fused attention kernels (`--attention-kernel`),
# against PyTorch CUDA in fp32, TF32 and AMP bf16 / f16, same run, (C) the same on LibTorch CUDA
# (`--device cuda` of a `--features tch` build: dino-bench built with
# `--features vulkan,wgpu,tch` after `source tests/setup-libtorch.sh`), and (P) the per-kernel
# breakdown of the step (`--profile-kernels`, bench/kernel_profile.py); (B) the Fashion-MNIST learning recipe of bench/fashion_mnist.sh with a longer
# budget, dino-rs on Vulkan and the PyTorch reference on CUDA side by side.
#
#   bash bench/gpu_check.sh BINARY FM_TRAIN_TAR_XZ OUTDIR
#
# BINARY is `dino`; `dino-bench` is taken from beside it (or BENCH_BIN), and so is
# `dino-device-ops` if built (`cargo build --release -p dino-bench --features vulkan,wgpu`).
#
# The k-NN evaluation of the teachers is cheap and runs afterwards on any machine
# (`dino knn`, see bench/fashion_mnist.sh).
set -uo pipefail
BIN="$1"; DATA_TAR="$2"; OUT="$3"
BENCH="${BENCH_BIN:-$(dirname "$BIN")/dino-bench}"
W=/tmp/gpucheck
mkdir -p "$W" "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
tar -C "$W" -xJf "$DATA_TAR"
EPOCHS="${EPOCHS:-30}"

OPS="$(dirname "$BIN")/dino-device-ops"
if [ -x "$OPS" ]; then
    echo "== 0: each op of the ViT on the GPU against the CPU (dino-device-ops) =="
    timeout 120 "$OPS" vulkan 2>&1 | tee "$OUT/device_ops.txt"
fi

echo "== K: kernel cache: embed cold and warm, --autotune balanced and minimal =="
for level in balanced minimal; do
    rm -rf "$W/kc_$level"
    for run in cold warm; do
        start=$(date +%s%N)
        timeout 300 "$BIN" embed tests/fixtures/images/*.png -w tests/fixtures/weights/s16_backbone.pth \
            --device vulkan -o "$W/kc.npy" --kernel-cache "$W/kc_$level" --autotune "$level" 2>&1 | grep "GPU kernels"
        echo "$level $run: $(( ($(date +%s%N) - start) / 1000000 )) ms" | tee -a "$OUT/kernel_cache.txt"
    done
done

echo "== A: training step, ViT-S/16, batch ${STEP_BATCH:-32}, each precision =="
# one invocation per precision, so that a precision the Vulkan driver cannot run (bf16 needs
# VK_KHR_shader_bfloat16) costs only its own row; each prints PyTorch CUDA fp32, TF32 and the
# AMP of that precision beside dino-rs
for p in ${PRECISIONS:-f32 bf16 f16}; do
    timeout "${STEP_TIMEOUT:-150}" "$BENCH" --mode train-step --device vulkan --batch "${STEP_BATCH:-32}" \
        --iters 4 --rounds 2 --warmup 1 --torch-device cuda --precision "$p" \
        --attention-kernel "${ATTENTION_KERNELS:-composed,fused}" \
        --json "$OUT/train_step_$p.json" 2>&1 | tee "$OUT/train_step_$p.txt"
done

echo "== C: the same step on LibTorch CUDA (--device cuda, a --features tch build), each precision =="
# the binary links LibTorch's CPU part only; PyTorch's own lib folder gives it libtorch_cuda
TORCH_LIB="$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib"
for p in ${PRECISIONS:-f32 bf16 f16}; do
    LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" timeout "${STEP_TIMEOUT:-150}" \
        "$BENCH" --mode train-step --device cuda --batch "${STEP_BATCH:-32}" \
        --iters 4 --rounds 2 --warmup 1 --torch-device cuda --precision "$p" \
        --json "$OUT/train_step_tch_$p.json" 2>&1 | tee "$OUT/train_step_tch_$p.txt"
done

echo "== P: where the step's time goes: per-kernel table (precision:attention kernel; cached by A) =="
for pk in ${PROFILES:-f32:composed f32:fused f16:composed}; do
    p="${pk%%:*}"; k="${pk##*:}"
    timeout "${PROFILE_TIMEOUT:-90}" "$BENCH" --mode train-step --device vulkan --batch "${STEP_BATCH:-32}" \
        --iters 1 --rounds 1 --warmup 1 --reference off --precision "$p" --attention-kernel "$k" \
        --profile-kernels "$OUT/kernels_${p}_$k.log" > /dev/null 2>&1
    python3 bench/kernel_profile.py "$OUT/kernels_${p}_$k.log" --steps 2 --top 25 2>&1 | tee "$OUT/kernels_${p}_$k.txt"
    xz -f "$OUT/kernels_${p}_$k.log"
done

echo "== B: Fashion-MNIST, $EPOCHS epochs x 10k images =="
RECIPE=(--embed-dim 192 --depth 4 --num-heads 3 --patch-size 7 --global-crop-size 28
        --local-crop-size 14 --local-crops-number 6 --out-dim 2048 --head-hidden-dim 512
        --head-bottleneck-dim 128 --batch-size 128 --epochs "$EPOCHS" --warmup-epochs 3 --seed 0)
start=$(date +%s)
( timeout "${TRAIN_TIMEOUT:-300}" "$BIN" train --recipe official --device vulkan --data "$W/train_10000" \
    --output-dir "$W/ours" --attention-every 0 "${RECIPE[@]}" > "$OUT/fm_ours.txt" 2>&1
  echo "dino-rs exit $? after $(( $(date +%s) - start )) s" >> "$OUT/fm_ours.txt" ) &
( PYTHONUNBUFFERED=1 timeout "${TRAIN_TIMEOUT:-300}" python3 bench/dino_reference_train.py \
    --data "$W/train_10000" --out "$W/pytorch" --device cuda --threads 4 --workers 6 "${RECIPE[@]}" \
    > "$OUT/fm_pytorch.txt" 2>&1
  echo "PyTorch exit $? after $(( $(date +%s) - start )) s" >> "$OUT/fm_pytorch.txt" ) &
wait
tail -n 3 "$OUT/fm_ours.txt" "$OUT/fm_pytorch.txt"
cp "$W/ours/metrics.jsonl" "$OUT/fm_ours_metrics.jsonl" 2>/dev/null
if [ ! -f "$W/ours/teacher.safetensors" ] && [ -f "$W/ours/checkpoint.safetensors" ]; then
    "$BIN" export --weights "$W/ours/checkpoint.safetensors" --out "$W/ours/teacher.safetensors"
fi
cp "$W/ours/teacher.safetensors" "$OUT/fm_ours_teacher.safetensors" 2>/dev/null
cp "$W/pytorch/teacher_backbone.safetensors" "$OUT/fm_pytorch_teacher.safetensors" 2>/dev/null
ls -la "$OUT"
