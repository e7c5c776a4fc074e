#!/usr/bin/env bash
# Builds the embeddable npm-style package in web/pkg/: dino_web.js (ES module glue),
# dino_web_bg.wasm, TypeScript declarations and package.json.
#
#   bash web/build.sh              # WebGPU + CPU engine (backend 'auto' picks WebGPU when the
#                                  # browser gives an adapter)
#   bash web/build.sh --cpu-only   # the CPU engine alone: a much smaller .wasm
#
# needs: rustup target wasm32-unknown-unknown, wasm-bindgen-cli 0.2.130, node/npm (wasm-opt)
set -euo pipefail
cd "$(dirname "$0")/.."
FEATURES=(--features webgpu)
VARIANT="WebGPU + CPU engine"
NAME=dino-web
THREADS=0
for arg in "$@"; do
    case "$arg" in
        --cpu-only) FEATURES=(); VARIANT="CPU engine only"; NAME=dino-web-cpu ;;
        --threads) THREADS=1 ;;
        *) echo "usage: bash web/build.sh [--cpu-only] [--threads]" >&2; exit 2 ;;
    esac
done
# where the package goes (the benchmark builds several side by side)
PKG="${PKG_DIR:-web/pkg}"
WB_VER=0.2.130
TOOLS="${TOOLS_DIR:-$HOME/.cache/dino-rs/npm-tools}"
command -v wasm-bindgen >/dev/null && [ "$(wasm-bindgen --version | cut -d' ' -f2)" = "$WB_VER" ] || {
    echo "wasm-bindgen $WB_VER is required: cargo install wasm-bindgen-cli --version $WB_VER" >&2
    exit 1
}
if [ ! -x "$TOOLS/node_modules/.bin/wasm-opt" ]; then
    mkdir -p "$TOOLS"
    npm --prefix "$TOOLS" install --no-audit --no-fund --silent binaryen@132.0.0
fi
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
OPT_FEATURES=(--enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext
    --enable-mutable-globals --enable-reference-types --enable-multivalue --enable-simd)
if [ "$THREADS" = 1 ]; then
    # Threads: std rebuilt with wasm atomics (a pinned nightly and its rust-src), in a target
    # directory of its own (other flags: it would otherwise throw the stable builds away); the
    # memory is shared and may grow to 4 GiB, as the single-threaded build's.
    NIGHTLY="${DINO_NIGHTLY:-nightly-2026-05-20}"
    rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1 &&
        [ -d "$(rustup run "$NIGHTLY" rustc --print sysroot)/lib/rustlib/src/rust/library" ] || {
        echo "the threads build needs $NIGHTLY with rust-src: rustup toolchain install $NIGHTLY" \
            "--profile minimal --component rust-src" >&2
        exit 1
    }
    FEATURES+=(--features threads)
    VARIANT="$VARIANT, multi-threaded"
    NAME="$NAME-threads"
    TARGET_DIR="$TARGET_DIR/wasm-threads"
    # (the linker flags make the memory shared, imported by the glue, with the thread-local
    # storage exports wasm-bindgen's thread support initialises each worker with)
    LINK="--shared-memory --import-memory --max-memory=4294967296 --export=__wasm_init_tls"
    LINK="$LINK --export=__tls_size --export=__tls_align --export=__tls_base"
    # (without a rustc wrapper of the stable toolchain: CI's clippy-driver, .ci/run, cannot
    # drive the nightly's compiler)
    RUSTFLAGS="-C target-feature=+atomics,+bulk-memory,+mutable-globals $(printf -- ' -C link-arg=%s' $LINK)" \
        CARGO_TARGET_DIR="$TARGET_DIR" env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS cargo "+$NIGHTLY" build -p dino-web --target wasm32-unknown-unknown \
        --profile wasm-release --locked "${FEATURES[@]}" -Z build-std=panic_abort,std
    OPT_FEATURES+=(--enable-threads)
else
    cargo build -p dino-web --target wasm32-unknown-unknown --profile wasm-release --locked "${FEATURES[@]}"
fi
rm -rf "$PKG"
wasm-bindgen --target web --out-dir "$PKG" --out-name dino_web \
    "$TARGET_DIR/wasm32-unknown-unknown/wasm-release/dino_web.wasm"
"$TOOLS/node_modules/.bin/wasm-opt" -Oz "${OPT_FEATURES[@]}" --strip-debug --strip-producers \
    "$PKG/dino_web_bg.wasm" -o "$PKG/dino_web_bg.wasm"
VERSION=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
# An npm package (`npm pack web/pkg`): the two variants have their own names, and code imports
# either as 'dino-web' (npm install dino-web@npm:dino-web-cpu for the small one).
FILES='"dino_web.js", "dino_web_bg.wasm", "dino_web.d.ts", "dino_web_bg.wasm.d.ts", "README.md"'
# the threads' worker script (wasm-bindgen-rayon's snippet) ships with the package
[ -d "$PKG/snippets" ] && FILES="$FILES, \"snippets/\""
cat > "$PKG/package.json" <<JSON
{
  "name": "$NAME",
  "version": "$VERSION",
  "description": "DINO self-supervised ViT attention maps, masks and features in the browser ($VARIANT)",
  "license": "MIT OR Apache-2.0",
  "keywords": ["dino", "vision-transformer", "self-supervised", "attention", "segmentation", "wasm", "webgpu"],
  "type": "module",
  "main": "./dino_web.js",
  "module": "./dino_web.js",
  "types": "./dino_web.d.ts",
  "exports": {
    ".": { "types": "./dino_web.d.ts", "default": "./dino_web.js" },
    "./dino_web_bg.wasm": "./dino_web_bg.wasm",
    "./package.json": "./package.json"
  },
  "files": [$FILES],
  "sideEffects": false
}
JSON
cp web/README.md "$PKG/README.md"
grep -q "attention(image: ImageInput, options?: AttentionOptions): Promise<AttentionResult>" \
    "$PKG/dino_web.d.ts" || { echo "$PKG: unexpected TypeScript declarations" >&2; exit 1; }
raw=$(stat -c %s "$PKG/dino_web_bg.wasm")
gz=$(gzip -9 -c "$PKG/dino_web_bg.wasm" | wc -c)
echo "$PKG: dino_web_bg.wasm $((raw / 1024)) KiB, $((gz / 1024)) KiB gzipped ($VARIANT)"
