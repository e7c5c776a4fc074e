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
case "${1:-}" in
    --cpu-only) FEATURES=(); VARIANT="CPU engine only"; NAME=dino-web-cpu ;;
    "") ;;
    *) echo "usage: bash web/build.sh [--cpu-only]" >&2; exit 2 ;;
esac
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
cargo build -p dino-web --target wasm32-unknown-unknown --profile wasm-release --locked "${FEATURES[@]}"
rm -rf web/pkg
wasm-bindgen --target web --out-dir web/pkg --out-name dino_web \
    "$TARGET_DIR/wasm32-unknown-unknown/wasm-release/dino_web.wasm"
"$TOOLS/node_modules/.bin/wasm-opt" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue --enable-simd \
    --strip-debug --strip-producers \
    web/pkg/dino_web_bg.wasm -o web/pkg/dino_web_bg.wasm
VERSION=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
# An npm package (`npm pack web/pkg`): the two variants have their own names, and code imports
# either as 'dino-web' (npm install dino-web@npm:dino-web-cpu for the small one).
cat > web/pkg/package.json <<JSON
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
  "files": ["dino_web.js", "dino_web_bg.wasm", "dino_web.d.ts", "dino_web_bg.wasm.d.ts", "README.md"],
  "sideEffects": false
}
JSON
cp web/README.md web/pkg/README.md
grep -q "attention(image: ImageInput, options?: AttentionOptions): Promise<AttentionResult>" \
    web/pkg/dino_web.d.ts || { echo "web/pkg: unexpected TypeScript declarations" >&2; exit 1; }
raw=$(stat -c %s web/pkg/dino_web_bg.wasm)
gz=$(gzip -9 -c web/pkg/dino_web_bg.wasm | wc -c)
echo "web/pkg: dino_web_bg.wasm $((raw / 1024)) KiB, $((gz / 1024)) KiB gzipped ($VARIANT)"
