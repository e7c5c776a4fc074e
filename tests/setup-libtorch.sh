#!/usr/bin/env bash
# LibTorch for a `--features tch` build (`--device cuda`, `--device libtorch`), taken from the
# PyTorch wheel on PyPI without installing PyTorch: its headers, its CPU libraries and the two
# small CUDA runtime libraries those link to (libtorch_cpu.so needs libcudart and libcupti even
# on a CPU). CUDA's large libraries (libtorch_cuda, cuBLAS, cuDNN) are left out on purpose: the
# binary links only the CPU part and `--device cuda` loads libtorch_cuda.so at run time from a
# full PyTorch of the same version (LD_LIBRARY_PATH=<site-packages>/torch/lib).
#
#   source tests/setup-libtorch.sh        # downloads once (~545 MB), then exports:
#   LIBTORCH, LIBTORCH_BYPASS_VERSION_CHECK (tch 0.22 expects 2.9; 2.11 is the GPU machine's
#   version, and the API the build uses is unchanged), LD_LIBRARY_PATH (to run on the CPU)
#
# TORCH_VERSION (default 2.11.0) must equal the PyTorch the binary will run against on the GPU
# machine; the CUDA runtime pins below are the ones that version's wheel requires.
# Sourced, it leaves the caller's shell options as they were (the download runs in a subshell).

TORCH_VERSION="${TORCH_VERSION:-2.11.0}"
DEST="${LIBTORCH_DIR:-$HOME/.cache/dino-rs/libtorch-$TORCH_VERSION}"

if [ ! -f "$DEST/lib/libtorch_cpu.so" ]; then
  (
    set -euo pipefail
    case "$TORCH_VERSION" in
        2.11.0) CUDA_PINS=(nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85) ;;
        *) echo "setup-libtorch: no CUDA runtime pins known for torch $TORCH_VERSION" >&2; exit 1 ;;
    esac
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    echo "setup-libtorch: downloading torch $TORCH_VERSION from PyPI into $DEST" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        "torch==$TORCH_VERSION" "${CUDA_PINS[@]}" -d "$tmp"
    rm -rf "$DEST.part"
    # the headers, the CPU libraries, the version, and the two CUDA runtime libraries
    python3 - "$tmp" "$DEST.part" <<'PY'
import glob, os, re, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
libs = {"libc10.so", "libtorch.so", "libtorch_cpu.so", "libgomp.so.1", "libtorch_global_deps.so",
        "libshm.so", "libcudart.so.13", "libcupti.so.13"}
os.makedirs(os.path.join(out, "lib"))
for wheel in glob.glob(os.path.join(tmp, "*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            base = os.path.basename(name)
            if name.startswith("torch/include/") and not name.endswith("/"):
                dest = os.path.join(out, name[len("torch/"):])
            elif base in libs:
                dest = os.path.join(out, "lib", base)
            elif name == "torch/version.py":
                version = re.search(r"__version__ = '([^']+)'", z.read(name).decode()).group(1)
                with open(os.path.join(out, "build-version"), "w") as f:
                    f.write(version + "\n")
                continue
            else:
                continue
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(name) as src, open(dest, "wb") as f:
                f.write(src.read())
missing = libs - set(os.listdir(os.path.join(out, "lib")))
if missing:
    sys.exit(f"setup-libtorch: the wheels lack {sorted(missing)}")
PY
    rm -rf "$DEST"
    mv "$DEST.part" "$DEST"
    echo "setup-libtorch: LibTorch $(cat "$DEST/build-version") in $DEST" >&2
  )
  # the status read on its own line: in a `||` list errexit would not hold inside the subshell
  # shellcheck disable=SC2181
  if [ $? -ne 0 ]; then echo "setup-libtorch: failed" >&2; return 1 2>/dev/null || exit 1; fi
fi

export LIBTORCH="$DEST"
export LIBTORCH_BYPASS_VERSION_CHECK=1
case ":${LD_LIBRARY_PATH:-}:" in
    *":$DEST/lib:"*) ;;
    *) export LD_LIBRARY_PATH="$DEST/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
esac
# run (not sourced): say what to export
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    echo "export LIBTORCH=$LIBTORCH LIBTORCH_BYPASS_VERSION_CHECK=1 LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
fi
