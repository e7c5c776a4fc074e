# The one cargo feature set of every native build and test of the workspace (sourced by
# .ci/run and tests/run-all.sh). Cargo unifies features across the packages of a build, so a
# second feature set compiles the whole dependency tree a second time: the PyTorch-fixture run
# on wgpu compiled all 388 crates again (1343 s cold on 2 cores, measured 2026-12-02), and the
# MPI test's `dino-native/mpi` changes clang-sys's features, a build dependency (bindgen) of
# CubeCL's cache and so of all of burn. With wgpu and MPI in the one set, the workspace's tests
# (the MPI test among them) and the fixture run on wgpu share one compiled tree; Open MPI is
# installed before the build (tests/setup-tools.sh --build). Burn's backends are chosen
# explicitly everywhere (no default device), so the extra backend changes nothing the flex
# tests run; `dino` starts MPI only under a launcher (native/src/mpi_world.rs). dino-native's
# wgpu feature gives the `dino` binary `--device wgpu` (burn's wgpu is in the set already, so
# it adds only dino-native's own GPU code): the CLI's GPU path runs on SwiftShader in
# run-all.sh (native/tests/gpu.rs) and clippy lints that code in CI.
#
# LibTorch (`dino-tests/tch`) is not in the set: every binary would link LibTorch's CPU
# libraries, whose loading costs ~0.35 s per process (the CLI, MPI and soak tests start
# hundreds), and its C++ bindings add ~4 min of compile, which CI's 60 minutes cold do not hold
# (measured 2026-12-02: 1901 s for the build with it). The fixtures on LibTorch's kernels:
#   source tests/setup-libtorch.sh
#   DINO_TEST_DEVICE=libtorch cargo test --release -p dino-tests --features tch \
#       --test reference --test model --test training_vs_pytorch
TEST_FEATURES=(--workspace --features dino-tests/wgpu,dino-native/wgpu,dino-native/mpi)

# The cargo profile of those builds (and of the browser tests and demo page): `release`, or the
# one named by DINO_PROFILE (`.ci/run` sets `ci`: Cargo.toml says what it changes and why), and
# the folder its native binaries land in (`$BUILT/dino`: the soak, the page's and the example's
# end-to-end tests).
PROFILE="${DINO_PROFILE:-release}"
BUILT="${CARGO_TARGET_DIR:-$PWD/target}/$PROFILE"
