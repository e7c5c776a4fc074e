#!/usr/bin/env bash
# A lent GPU machine's session, prepared here and run there (the `device` tool: 15 minutes of
# device time in all, machine start and transfers included; 10 minutes a command; 64 MiB of
# working tree and carried files a call; 8 files back). Two halves:
#
#   bash bench/gpu_session.sh pack            # here, before asking for the machine
#   DEADLINE_S=420 bash bench/gpu_session.sh run "A 0"   # there, as the device tool's command
#
# `pack` builds `dino`, `dino-bench` and `dino-device-ops` for the GPU (FEATURES, default
# Vulkan + wgpu: dino-device-ops needs wgpu) and, unless TCH=0, `dino-bench-tch` (dino-bench
# with `--features tch` alone, LibTorch 2.11.0 from tests/setup-libtorch.sh: the CUDA path of
# step C, run against the GPU machine's own PyTorch libraries), strips them and packs them into
# ignored files the device tool can carry: .gpu/dino-bench.tar.xz (dino-bench and
# dino-bench-tch, ~24 MB), .gpu/dino.tar.xz (~22 MB), .gpu/dino-device-ops.tar.xz (~18 MB), the
# Fashion-MNIST training folder of step B (.gpu/fm10k.tar.xz, ~5 MB, from Debian's
# dataset-fashion-mnist) and the Vulkan loader packages the device README asks for (.gl/).
# The Vulkan binaries are 110-130 MB each stripped, and with the repository (~37 MiB) no two
# of them travel in one call (64 MiB), so a session is a few calls, each carrying one file,
# the next made at once while the machine is warm (the unpacked binaries and CubeCL's kernel
# cache stay there between calls). `pack` prints the calls, their sizes and deadlines.
#
# `run STEPS` (on the machine) unpacks the loaders and whatever binaries were carried into
# /tmp/dino-gpu/bin (kept for the next call), runs bench/gpu_check.sh with STEPS under a
# deadline (DEADLINE_S, default 510 s: every step's timeout is cut to what is left, and no
# step starts after it), and returns the results as at most five files in $OUT: the log,
# the results as one tar.xz, and the three Fashion-MNIST teachers of step B.
#
# A dry run of `run` here, on Chromium's SwiftShader instead of a GPU and without PyTorch:
#   FEATURES=dino-bench/wgpu TCH=0 bash bench/gpu_session.sh pack
#   VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json WGPU_BACKEND=vulkan \
#   GPU_DEVICE=wgpu REFERENCE=off ARCH=vit_tiny STEP_BATCH=1 STEP_ITERS=1 STEP_ROUNDS=1 \
#   PRECISIONS="f32 f16" ATTENTION_KERNELS=fused PROFILES=f32:fused OUT=/tmp/gpu-dry \
#   bash bench/gpu_session.sh run "A 0 P K"
# (SwiftShader has no f16: that row is refused by name, as bf16 is on a GPU without it.)
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=/tmp/dino-gpu

pack() {
    local features="${FEATURES:-dino-bench/vulkan,dino-bench/wgpu}"
    local target="${CARGO_TARGET_DIR:-$PWD/target}"
    local bins=(dino dino-bench)
    [[ "$features" == *wgpu* ]] && bins+=(dino-device-ops)
    local args=()
    for b in "${bins[@]}"; do args+=(--bin "$b"); done
    echo "== building ${bins[*]} with $features (release) =="
    cargo build --release --locked -p dino-native -p dino-bench --features "$features" "${args[@]}"
    mkdir -p .gpu .gl
    local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
    for b in "${bins[@]}"; do strip -o "$tmp/$b" "$target/release/$b"; done
    if [ "${TCH:-1}" != 0 ]; then
        # a second dino-bench on LibTorch (step C); built after the first was copied out, since
        # both are target/release/dino-bench. It links LibTorch's CPU libraries and loads
        # libtorch_cuda.so at run time from the machine's PyTorch (LD_LIBRARY_PATH, step C)
        ( source tests/setup-libtorch.sh &&
            echo "== building dino-bench with tch (LibTorch $TORCH_VERSION) ==" &&
            cargo build --release --locked -p dino-bench --features tch --bin dino-bench )
        strip -o "$tmp/dino-bench-tch" "$target/release/dino-bench"
    fi
    echo "== packing (xz, a few minutes) =="
    # one stream per call (a dictionary larger than a binary: dino-bench-tch shares much of
    # dino-bench's code, and xz finds it only within its dictionary), compressed side by side
    local first=(dino-bench); [ -f "$tmp/dino-bench-tch" ] && first+=(dino-bench-tch)
    rm -f .gpu/dino-device-ops.tar.xz
    local packs=("dino-bench:${first[*]}" "dino:dino") p pids=()
    [ -f "$tmp/dino-device-ops" ] && packs+=("dino-device-ops:dino-device-ops")
    for p in "${packs[@]}"; do
        # shellcheck disable=SC2086 # the file list splits on purpose
        tar -C "$tmp" -cf - ${p#*:} | xz -T1 --lzma2=preset=7,dict=256MiB > ".gpu/${p%%:*}.tar.xz" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    if [ ! -s .gpu/fm10k.tar.xz ]; then
        [ -d /usr/share/datasets/fashion-mnist ] ||
            apt-get install -y -qq --no-install-recommends dataset-fashion-mnist > /dev/null ||
            echo "no Fashion-MNIST (apt-get install dataset-fashion-mnist): step B cannot run"
        # the converter needs numpy and Pillow (pip: the python3 on PATH may not be Debian's)
        python3 -c 'import numpy, PIL' 2>/dev/null || python3 -m pip install -q numpy pillow || true
        if [ -d /usr/share/datasets/fashion-mnist ]; then
            python3 bench/fashion_mnist_folders.py "$tmp/fm" --train-subset 10000
            tar -C "$tmp/fm" -cJf .gpu/fm10k.tar.xz train_10000
        fi
    fi
    if ! compgen -G '.gl/*.deb' > /dev/null; then
        # the Vulkan loader for the device machine, as its README says (amd64 packages)
        local o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
        mkdir -p /tmp/amd64/partial
        apt-get "${o[@]}" update -qq
        (cd .gl && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    fi
    local tree; tree=$(git ls-files -z | xargs -0 stat -c %s | awk '{t += $1} END {print t}')
    local gl; gl=$(du -cb .gl/*.deb | tail -1 | cut -f1)
    size() {
        local t=$(( tree + gl )) f
        for f in "$@"; do [ -f "$f" ] && t=$(( t + $(stat -c %s "$f") )); done
        echo "$(( t / 1048576 )) MiB of 64$([ "$t" -gt $(( 63 << 20 )) ] && echo ': TOO LARGE, carry less')"
    }
    ls -la .gpu .gl
    cat <<EOF

Device calls, the second at once after the first (the machine stays warm 30 s); about
12 minutes of commands, leaving the machine's start inside the session's 15:
  1. carry [".gl", ".gpu/dino-bench.tar.xz"]                   $(size .gpu/dino-bench.tar.xz)
     command: DEADLINE_S=420 bash bench/gpu_session.sh run "C A"    timeout_s 450
     (the training step against PyTorch: on LibTorch CUDA in f32, bf16, f16 (no kernels to
     compile: a minute or two), then on Vulkan, f32, bf16, f16 x composed, fused attention)
  2. carry [".gl", ".gpu/dino.tar.xz"]                         $(size .gpu/dino.tar.xz)
     command: DEADLINE_S=240 bash bench/gpu_session.sh run "P K"    timeout_s 270
     (the per-kernel tables from the kernels A cached, then first-step times of dino embed)
  3. if the session has time left (another session: call 2 first, for its dino):
     carry [".gl", ".gpu/dino-device-ops.tar.xz", ".gpu/fm10k.tar.xz"]
                                                               $(size .gpu/dino-device-ops.tar.xz .gpu/fm10k.tar.xz)
     command: DEADLINE_S=420 bash bench/gpu_session.sh run "0 B"    timeout_s 450
     (each op against the CPU; the Fashion-MNIST learning curves, f32 and f16 beside PyTorch)
Then commit the logs and the results' contents under bench/results/gpu/ with the date.
EOF
}

run() {
    local steps="$1"
    local out="${OUT:?OUT: where the results go (the device tool sets it)}"
    local tag; tag="$(date +%Y%m%d-%H%M%S)-$(echo "$steps" | tr -cd 'A-Za-z0-9')"
    mkdir -p "$STATE/bin" "$out"
    if compgen -G '.gl/*.deb' > /dev/null && ! ldconfig -p | grep 'libvulkan\.so\.1' > /dev/null; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    local nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    if [ -f "$nvidia_icd" ] && ! compgen -G '/usr/share/vulkan/icd.d/nvidia*' > /dev/null &&
        [ -z "${VK_ICD_FILENAMES:-}${VK_DRIVER_FILES:-}" ]; then
        export VK_DRIVER_FILES="$nvidia_icd"
        export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    fi
    for pkg in .gpu/dino-bench.tar.xz .gpu/dino.tar.xz .gpu/dino-device-ops.tar.xz; do
        [ -f "$pkg" ] && tar -C "$STATE/bin" -xJf "$pkg"
    done
    ls -la "$STATE/bin"
    local log="$out/gpu_check_$tag.log"
    DEADLINE_S="${DEADLINE_S:-510}" STEPS="$steps" WORK_DIR="$STATE/work" \
        bash bench/gpu_check.sh "$STATE/bin/dino" .gpu/fm10k.tar.xz "$STATE/out-$tag" 2>&1 | tee "$log"
    # at most 8 files come back: the teachers alone (safetensors), everything else in one tar.xz
    local f
    for f in "$STATE/out-$tag"/*.safetensors; do
        [ -f "$f" ] && mv "$f" "$out/"
    done
    tar -C "$STATE" -cJf "$out/gpu_check_$tag.tar.xz" "out-$tag"
    ls -la "$out"
}

case "${1:-}" in
    pack) pack ;;
    run) run "${2:?run STEPS, e.g. run \"0 A P\"}" ;;
    *) echo "usage: bash bench/gpu_session.sh pack | run STEPS" >&2; exit 2 ;;
esac
