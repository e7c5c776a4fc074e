#!/usr/bin/env bash
# The browser test toolchain, idempotent (skips what is already there at the right version):
# Debian chromium + chromium-driver, the wasm32 target, wasm-bindgen-cli (the version in
# Cargo.lock). Needs apt (as root or with sudo), rustup and cargo.
set -euo pipefail
WB_VER=0.2.130      # must equal wasm-bindgen in Cargo.lock
export DEBIAN_FRONTEND=noninteractive
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
t() { local s=$SECONDS; "$@"; echo "[setup] $(( SECONDS - s ))s: $*" >&2; }

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    t $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
    t $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null
fi
rustup target list --installed | grep -q wasm32-unknown-unknown ||
    t rustup target add wasm32-unknown-unknown
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$WB_VER" ]; then
    # no --locked: its lockfile pins a webpki-roots version the registry mirror lacks
    t cargo install wasm-bindgen-cli --version "$WB_VER" --force --quiet
fi
chromium --version; chromedriver --version | head -1; wasm-bindgen --version
