#!/usr/bin/env bash
# Every test: the Rust workspace (unit, PyTorch reference fixtures, end-to-end CLI, the video
# tests on real footage), the browser package in headless Chromium (wasm-bindgen-test), the
# demo page end to end (trunk build, playwright-core) and the npm package (single-threaded and
# threads builds) installed into its example page. The browser tests and the page build the
# package with the same profile and features, so its dependencies compile once. First installs
# whatever of that is missing (tests/setup-tools.sh: ffmpeg, vtest.avi, chromium, chromedriver,
# wasm tools, the nightly of the threads build, ...); a test whose tool is still missing fails,
# it never skips. Also a short crash-safety soak
# (tests/soak.sh: 4 kills; 20 when run alone).
set -euo pipefail
cd "$(dirname "$0")/.."
# each part says when it starts (seconds since the start), so a slow run shows where it went
start=$SECONDS
part() { echo "=== run-all [$((SECONDS - start)) s] $*"; }
# Everything the tests and the tools they start write to the temporary folder goes into one
# folder of this run, removed at the end (KEEP=1 keeps it): chromedriver left a 51 MB browser
# profile in /tmp per run (wasm-bindgen-test-runner ends it without a clean session close),
# Chromium its singleton folders. The demo page's screenshots go next to the build.
RUN_TMP="$(mktemp -d "${TMPDIR:-/tmp}/dino-tests.XXXXXX")"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$RUN_TMP"' EXIT
export TMPDIR="$RUN_TMP"
export SHOTS="${SHOTS:-${CARGO_TARGET_DIR:-$PWD/target}/e2e-screenshots}"
mkdir -p "$SHOTS"
part "installing what is missing"
bash tests/setup-tools.sh
# the one feature set of every native build below (TEST_FEATURES: why in tests/features.sh) and
# their cargo profile (PROFILE, binaries in BUILT: release unless DINO_PROFILE names another, as CI does)
source tests/features.sh
part "the workspace's tests"
# (among them training across processes on MPI: mpirun -np 2 equals one process with two parts)
cargo test --profile "$PROFILE" "${TEST_FEATURES[@]}" "$@"
# the PyTorch fixtures (forward, attention, training iterations) on the GPU path, with the test
# binaries built above: CubeCL's kernels through wgpu as WGSL on Chromium's SwiftShader Vulkan, a
# CPU adapter (CubeCL's own SPIR-V, the `vulkan` feature, multiplies wrongly there:
# bench/results/gpu/device_ops_software_adapters.txt). (LibTorch's kernels: tests/features.sh.)
part "the PyTorch fixtures on wgpu (SwiftShader)"
(
    SWIFTSHADER=/usr/lib/chromium/vk_swiftshader_icd.json
    [ -f "$SWIFTSHADER" ] || { echo "no SwiftShader ($SWIFTSHADER, Debian chromium-common)"; exit 1; }
    # a software adapter runs a ViT-S forward in seconds and compiles every kernel shape anew:
    # the batch forward, the attention, and every training test (f32 iterations, the BatchNorm
    # head, the trainer with parts and accumulation, bf16 refused), not every weight format
    # (`every_case_matches_pytorch`: 5 min here) nor the CPU engine (no Burn device); and the
    # `dino` command itself on the GPU (`embed --device wgpu`: PyTorch's features, the kernel
    # line's counts, a warm kernel cache)
    DINO_TEST_DEVICE=wgpu VK_ICD_FILENAMES="$SWIFTSHADER" WGPU_BACKEND=vulkan CUBECL_AUTOTUNE_LEVEL=minimal \
        cargo test --profile "$PROFILE" "${TEST_FEATURES[@]}" --test reference --test training_vs_pytorch --test gpu "$@" \
        -- --skip every_case_matches_pytorch --skip cpu_engine
    # the fused attention kernels (`--attention-kernel fused`) against Burn's composed attention
    DINO_TEST_DEVICE=wgpu VK_ICD_FILENAMES="$SWIFTSHADER" WGPU_BACKEND=vulkan CUBECL_AUTOTUNE_LEVEL=minimal \
        cargo test --profile "$PROFILE" "${TEST_FEATURES[@]}" --test model "$@" \
        -- --exact fused_attention_kernels_match_the_composed_attention_and_its_gradient
)
part "the mixed-precision step on the GPU code path (lavapipe)"
(
    # f16 on CubeCL's kernels (WGSL with shader-f16) on Mesa's lavapipe, a CPU Vulkan driver with
    # f16 arithmetic (tests/setup-tools.sh unpacks bookworm-backports' Mesa): one f16 iteration
    # against PyTorch's f32 one within f16's rounding, and the trainer's loss-scaled step.
    # DINO_TEST_DEVICE_HAS=f16 fails the run where the adapter lacks f16 instead of letting the
    # tests pass by refusing it; and the fused attention kernels in f16 against the exact
    # attention (f32 is checked on SwiftShader). Only these three: lavapipe compiles CubeCL's kernels far slower
    # than SwiftShader (the whole fixture set above: 22 min there). Measured on 2 cores, cold:
    # 349 s as lavapipe comes, 273 s one test at a time (the second finds the first's shaders in
    # Mesa's cache), 125 s with 128-bit vectors instead of AVX2's 256 (LLVM compiles half-width
    # code much faster; GALLIVM_PERF=nopt was slower, 212 s); 19 s with Mesa's shader cache,
    # kept in ~/.cache/dino-rs/mesa-shader-cache for the next run. CubeCL keys its autotune
    # results by runtime and device index, not by adapter: lavapipe's choices (a sum with f32
    # atomics, which SwiftShader lacks) replayed on SwiftShader fail there, so lavapipe keeps
    # its own database (CUBECL_ENVIRONMENT: lavapipe.db beside default.db).
    LVP="$HOME/.cache/dino-rs/lavapipe"
    [ -s "$LVP/lvp_icd.json" ] || { echo "no lavapipe ($LVP): bash tests/setup-tools.sh"; exit 1; }
    DINO_TEST_DEVICE=wgpu DINO_TEST_DEVICE_HAS=f16 VK_ICD_FILENAMES="$LVP/lvp_icd.json" \
    LD_LIBRARY_PATH="$LVP/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    MESA_SHADER_CACHE_DIR="$HOME/.cache/dino-rs/mesa-shader-cache" LP_NATIVE_VECTOR_WIDTH=128 \
    WGPU_BACKEND=vulkan CUBECL_AUTOTUNE_LEVEL=minimal CUBECL_ENVIRONMENT=lavapipe \
        cargo test --profile "$PROFILE" "${TEST_FEATURES[@]}" --test training_vs_pytorch --test model "$@" -- \
        --exact --test-threads=1 f16_training_iteration_tracks_pytorch_f32_within_f16_rounding \
        f16_runs_within_f16_rounding_or_is_refused_by_name \
        fused_attention_kernels_compute_f16_within_its_rounding
)
part "crash-safety soak"
# crash safety: dino train killed at random moments resumes to the uninterrupted result
KILLS="${KILLS:-4}" bash tests/soak.sh
part "the browser package in Chromium"
(
    cd web
    CHROMEDRIVER="${CHROMEDRIVER:-$(command -v chromedriver)}" \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
    WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-300}" \
        cargo test --profile "$PROFILE" --target wasm32-unknown-unknown --features webgpu --test browser "$@"
)
part "the threads build, the demo page end to end"
# the CPU engine's threads build (a pinned nightly rebuilds std with wasm atomics): the page
# ships it (www/Trunk.toml copies it) and the example installs it
PKG_DIR=web/pkg-threads bash web/build.sh --cpu-only --threads
(cd www && trunk build --release --cargo-profile "$PROFILE")
DINO_BIN="$BUILT/dino" node www/e2e.mjs
part "the npm packages in Node and in their example page"
# the npm package as users get it (the CPU-only variant: the WebGPU one compiles the same crate
# and features as the page above): in Node, then `npm pack` + `npm install` into the example
# page, opened in Chromium; the threads build the same way, served cross-origin isolated:
# every core, the same attention
bash web/build.sh --cpu-only
node web/smoke.mjs
DINO_BIN="$BUILT/dino" node web/examples/test.mjs web/pkg web/pkg-threads
part "done"
