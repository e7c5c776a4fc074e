#!/usr/bin/env bash
# Everything the test command needs, installed piece by piece and only when missing
# (idempotent, safe on a fresh machine of the project's kind):
#   - a C++ compiler (g++: dino-native builds USearch);
#   - ffmpeg (the video tests decode and encode real videos) and OpenCV's vtest.avi (real
#     footage, unpacked from Debian's opencv-doc into ~/.cache/dino-rs);
#   - Debian chromium and chromium-driver (headless browser tests);
#   - Mesa's lavapipe from bookworm-backports, unpacked into ~/.cache/dino-rs/lavapipe (the
#     f16 step on the GPU code path);
#   - node and npm only when the machine has none: a Node.js that ships its own npm conflicts
#     with Debian's `npm` package, so the two are never asked for together with chromium;
#   - the wasm32 target, wasm-bindgen-cli (the version in Cargo.lock), trunk;
#   - the pinned nightly toolchain with rust-src that the browser package's threads build
#     rebuilds std with (minimal profile);
#   - from npm, playwright-core and binaryen (wasm-opt) in ~/.cache/dino-rs/npm-tools;
#   - Open MPI (openmpi-bin, libopenmpi-dev) and libclang-dev for the `mpi` feature's test.
# Needs apt (as root or with sudo), rustup and cargo.
#
#   bash tests/setup-tools.sh           # everything
#   bash tests/setup-tools.sh --build   # only what the native build of the test feature set
#                                       # (tests/features.sh) compiles against: g++, Open MPI,
#                                       # libclang (.ci/run, before its build)
set -euo pipefail
BUILD_ONLY=0
case "${1:-}" in
    --build) BUILD_ONLY=1 ;;
    "") ;;
    *) echo "usage: bash tests/setup-tools.sh [--build]" >&2; exit 2 ;;
esac
WB_VER=0.2.130      # must equal wasm-bindgen in Cargo.lock
TRUNK_VER=0.21.14   # 0.22 needs a newer rustc
CACHE="$HOME/.cache/dino-rs"
NPM_TOOLS="${NPM_TOOLS:-$CACHE/npm-tools}"
VTEST="$CACHE/vtest.avi"
export DEBIAN_FRONTEND=noninteractive
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
t() { local s=$SECONDS; "$@"; echo "[setup] $(( SECONDS - s ))s: $*" >&2; }
APT_UPDATED=0
apt_update() {
    [ "$APT_UPDATED" = 1 ] || t $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
    APT_UPDATED=1
}
# One Debian package at a time, so that a conflict names the package it comes from.
apt_install() {
    apt_update
    t $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$1" >/dev/null
}
mkdir -p "$CACHE"

# What the native build compiles against.
# dino-native compiles USearch (C++) for the approximate nearest-neighbour search
command -v c++ >/dev/null || apt_install g++
# multi-process training (dino-native's `mpi` feature): Open MPI, its headers, libclang for
# the bindings
command -v mpirun >/dev/null || apt_install openmpi-bin
# (mpicc comes with openmpi-bin; the headers and the pkg-config file the build asks for do not)
pkg-config --exists ompi-c 2>/dev/null || [ -e /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h ] ||
    apt_install libopenmpi-dev
# bindgen needs libclang.so (not only a versioned libclang.so.1) and clang's own headers
{ compgen -G '/usr/lib/llvm-*/lib/libclang.so' && compgen -G '/usr/lib/llvm-*/lib/clang/*/include/stddef.h'; } >/dev/null ||
    apt_install libclang-dev

[ "$BUILD_ONLY" = 1 ] && exit 0

command -v ffmpeg >/dev/null || apt_install ffmpeg
command -v chromium >/dev/null || apt_install chromium
command -v chromedriver >/dev/null || apt_install chromium-driver
# the GPU code path's tests run on Chromium's SwiftShader Vulkan (chromium-common ships it);
# wgpu opens it through the Vulkan loader
ldconfig -p | grep -q 'libvulkan\.so\.1' || apt_install libvulkan1
# The mixed-precision (f16) step on the GPU code path runs on Mesa's lavapipe, a CPU Vulkan driver
# with f16 arithmetic (SwiftShader has none). Debian 12's own (Mesa 22.3) runs the tests too, but
# its LLVM backend aborted one of two cold runs ("Do not know how to split the result of this
# operator"), so the driver is bookworm-backports' Mesa (25.0), unpacked with the libdrm it
# was built against into ~/.cache/dino-rs/lavapipe: the machine's apt sources, Mesa and libdrm
# stay as they are; the libraries it links that the machine lacks come from Debian 12 itself.
LVP="$CACHE/lavapipe"
if [ ! -s "$LVP/lvp_icd.json" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/debs"
    echo "deb http://deb.debian.org/debian bookworm-backports main" > "$tmp/sources.list"
    bp=(-o Dir::Etc::sourcelist="$tmp/sources.list" -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$tmp/lists" -o Dir::Cache="$tmp/cache" -o APT::Sandbox::User=root)
    t apt-get "${bp[@]}" update -qq
    (cd "$tmp/debs" && t apt-get "${bp[@]}" download -qq mesa-vulkan-drivers libdrm2 libdrm-amdgpu1)
    rm -rf "$LVP.part"; mkdir -p "$LVP.part/root"
    for deb in "$tmp"/debs/*.deb; do dpkg-deb -x "$deb" "$LVP.part/root"; done
    # only lavapipe and libdrm are used (the package's other drivers, layers and docs: 60 MB)
    find "$LVP.part/root" -type f ! -name libvulkan_lvp.so ! -name 'libdrm*' -delete
    find "$LVP.part/root" -xtype l -delete; find "$LVP.part/root" -type d -empty -delete
    deps=$(dpkg-deb -f "$tmp"/debs/mesa-vulkan-drivers_*.deb Depends | tr ',' '\n' |
        sed -e 's/(.*)//' -e 's/|.*//' -e 's/ //g' | grep -v -x -e libdrm2 -e libdrm-amdgpu1 -e '')
    for dep in $deps; do
        dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q 'ok installed' || apt_install "$dep"
    done
    lib="$LVP/root/usr/lib/x86_64-linux-gnu"
    if LD_LIBRARY_PATH="$LVP.part/root/usr/lib/x86_64-linux-gnu" \
        ldd "$LVP.part/root/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so" | grep 'not found'; then
        echo "[setup] lavapipe: libraries missing (above)" >&2; exit 1
    fi
    dpkg-deb -f "$tmp"/debs/mesa-vulkan-drivers_*.deb Version > "$LVP.part/VERSION"
    printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.4.0"}}\n' \
        "$lib/libvulkan_lvp.so" > "$LVP.part/lvp_icd.json"
    rm -rf "$LVP"; mv "$LVP.part" "$LVP"
    rm -rf "$tmp"; trap - EXIT
fi
command -v node >/dev/null || apt_install nodejs
command -v npm >/dev/null || apt_install npm

# Real footage for the video tests: only vtest.avi is unpacked from the opencv-doc package.
if [ ! -s "$VTEST" ] && [ ! -f /usr/share/doc/opencv-doc/examples/data/vtest.avi ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download opencv-doc >/dev/null 2>&1) ||
        { apt_update; (cd "$tmp" && t apt-get download opencv-doc >/dev/null); }
    dpkg-deb --fsys-tarfile "$tmp"/opencv-doc_*.deb |
        tar -x -O ./usr/share/doc/opencv-doc/examples/data/vtest.avi > "$VTEST.part"
    [ -s "$VTEST.part" ] || { echo "[setup] vtest.avi missing from opencv-doc" >&2; exit 1; }
    mv "$VTEST.part" "$VTEST"
    rm -rf "$tmp"; trap - EXIT
fi

rustup target list --installed | grep -q wasm32-unknown-unknown ||
    t rustup target add wasm32-unknown-unknown
# web/build.sh --threads (the same pin there)
NIGHTLY="${DINO_NIGHTLY:-nightly-2026-05-20}"
[ -d "$(rustup run "$NIGHTLY" rustc --print sysroot 2>/dev/null)/lib/rustlib/src/rust/library" ] ||
    t rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src
# Built for speed of building, not of running (they process one file per test run): no LTO
# (trunk's own profile asks for fat LTO in one codegen unit), opt-level 1 for wasm-bindgen (it
# rewrites multi-megabyte .wasm files), 0 for trunk (it only runs cargo and wasm-bindgen); no
# TLS (the default features compile rustls and ring; the tests reach only localhost, trunk runs
# offline); in cargo's own temporary target directory, not the workspace's CARGO_TARGET_DIR (on
# that one, cargo install waits for the workspace build's lock instead of compiling beside it),
# without CI's lint wrapper (.ci/run).
quick_install() {
    local opt=$1; shift
    t env -u CARGO_TARGET_DIR -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS \
        CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        CARGO_PROFILE_RELEASE_OPT_LEVEL="$opt" cargo install "$@" --no-default-features --force --quiet
}
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$WB_VER" ]; then
    # no --locked: its lockfile pins a webpki-roots version the registry mirror lacks
    quick_install 1 wasm-bindgen-cli --version "$WB_VER"
fi
if [ "$(trunk --version 2>/dev/null | cut -d' ' -f2)" != "$TRUNK_VER" ]; then
    quick_install 0 trunk --version "$TRUNK_VER" --locked
fi
if [ ! -d "$NPM_TOOLS/node_modules/playwright-core" ] || [ ! -x "$NPM_TOOLS/node_modules/.bin/wasm-opt" ]; then
    mkdir -p "$NPM_TOOLS"
    t npm --prefix "$NPM_TOOLS" install --no-audit --no-fund --silent \
        playwright-core@1.65.1 binaryen@132.0.0
fi
ffmpeg -version | head -1; chromium --version; chromedriver --version | head -1
node --version; npm --version; wasm-bindgen --version; trunk --version; ls -l "$VTEST" 2>/dev/null || true
echo "lavapipe (Mesa) $(cat "$LVP/VERSION")"
