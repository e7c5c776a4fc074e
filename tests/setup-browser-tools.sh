#!/usr/bin/env bash
# The browser test toolchain, idempotent (skips what is already there at the right version):
# Debian chromium + chromium-driver (+ node/npm), the wasm32 target, wasm-bindgen-cli (the
# version in Cargo.lock), trunk, and from npm playwright-core and binaryen (wasm-opt) in
# ~/.cache/dino-rs/npm-tools. Needs apt (as root or with sudo), rustup and cargo.
set -euo pipefail
WB_VER=0.2.130      # must equal wasm-bindgen in Cargo.lock
TRUNK_VER=0.21.14   # 0.22 needs a newer rustc
NPM_TOOLS="${NPM_TOOLS:-$HOME/.cache/dino-rs/npm-tools}"
export DEBIAN_FRONTEND=noninteractive
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
t() { local s=$SECONDS; "$@"; echo "[setup] $(( SECONDS - s ))s: $*" >&2; }

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null ||
    ! command -v npm >/dev/null; then
    t $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
    t $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
        chromium chromium-driver nodejs npm >/dev/null
fi
rustup target list --installed | grep -q wasm32-unknown-unknown ||
    t rustup target add wasm32-unknown-unknown
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$WB_VER" ]; then
    # no --locked: its lockfile pins a webpki-roots version the registry mirror lacks
    t cargo install wasm-bindgen-cli --version "$WB_VER" --force --quiet
fi
if [ "$(trunk --version 2>/dev/null | cut -d' ' -f2)" != "$TRUNK_VER" ]; then
    t cargo install trunk --version "$TRUNK_VER" --locked --force --quiet
fi
if [ ! -d "$NPM_TOOLS/node_modules/playwright-core" ] || [ ! -x "$NPM_TOOLS/node_modules/.bin/wasm-opt" ]; then
    mkdir -p "$NPM_TOOLS"
    t npm --prefix "$NPM_TOOLS" install --no-audit --no-fund --silent \
        playwright-core@1.65.1 binaryen@132.0.0
fi
chromium --version; chromedriver --version | head -1; wasm-bindgen --version; trunk --version
