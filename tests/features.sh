# The one cargo feature set of every native build and test of the workspace (sourced by
# .ci/run and tests/run-all.sh). Cargo unifies features across the packages of a build, so a
# second feature set compiles the whole dependency tree a second time (22 min cold on 2 cores
# for the PyTorch-fixture run on LibTorch and wgpu, measured 2026-12-02). With LibTorch and wgpu
# in the one set, the workspace's tests, the MPI test and the fixture runs on the three devices
# share one compiled burn; every binary then links LibTorch's CPU libraries, so
# tests/setup-libtorch.sh is sourced (LIBTORCH, LD_LIBRARY_PATH) before any build or run.
# Burn's backends are chosen explicitly everywhere (no default device), so the extra backends
# change nothing that the flex tests run; `dino`'s own device flags come from dino-native's
# features, which stay off.
TEST_FEATURES=(--workspace --features dino-tests/tch,dino-tests/wgpu)
