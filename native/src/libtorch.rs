//! LibTorch (PyTorch's C++ library) as the Burn backend of NVIDIA GPUs: the CUDA path that
//! builds on machines where Burn's own `cuda` feature cannot (cubecl-cuda's build downloads an
//! LLVM bundle). The same Burn model then runs on PyTorch's kernels: cuBLAS and cuDNN on the
//! GPU, MKL-DNN/OpenMP on the CPU (`--device libtorch`).
//!
//! A `--features tch` build links only LibTorch's CPU libraries (`libtorch_cpu`, `libc10`), so
//! one binary runs on machines with and without CUDA; `--device cuda` loads `libtorch_cuda.so`
//! at run time from the library path, as `import torch` does through `libtorch.so`, which
//! registers PyTorch's CUDA kernels. Both the build and the run take their libraries from an
//! installed PyTorch of the same version (README, "CUDA through LibTorch").

use std::sync::OnceLock;

/// How many CUDA devices LibTorch sees, after loading its CUDA library once; an error that
/// says what to install or set when it cannot be loaded or finds no device.
pub fn cuda_devices() -> anyhow::Result<usize> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(load_cuda_library)
        .clone()
        .map_err(anyhow::Error::msg)?;
    match tch::Cuda::device_count() {
        n if n > 0 => Ok(n as usize),
        _ => anyhow::bail!(
            "PyTorch's CUDA library is loaded but sees no CUDA device (no NVIDIA driver, or \
             CUDA_VISIBLE_DEVICES hides them)"
        ),
    }
}

/// `--threads N` for LibTorch's own thread pool (intra-op parallelism), which Rayon's setting
/// does not reach.
pub fn set_threads(n: usize) {
    tch::set_num_threads(n.max(1) as i32);
}

const WHERE_TORCH_LIBS_ARE: &str = "LD_LIBRARY_PATH=$(python3 -c 'import torch, os; \
                                    print(os.path.dirname(torch.__file__))')/lib";

#[cfg(target_os = "linux")]
fn load_cuda_library() -> Result<(), String> {
    use std::ffi::{CStr, CString};
    if tch::Cuda::is_available() {
        return Ok(()); // linked in already (a build against a CUDA LibTorch with --no-as-needed)
    }
    let name = CString::new("libtorch_cuda.so").expect("no NUL in a constant");
    // SAFETY: dlopen/dlerror with a valid C string; the handle stays open for the process's
    // life (PyTorch's CUDA kernels must stay registered), so it is never closed.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns null or a C string valid until the next dl* call.
        let why = unsafe {
            let e = libc::dlerror();
            if e.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(e).to_string_lossy().into_owned()
            }
        };
        return Err(format!(
            "--device cuda loads PyTorch's CUDA library at run time and cannot: {why}. Put the \
             `lib` folder of a CUDA build of PyTorch (the version this dino was built against) \
             on the library path: {WHERE_TORCH_LIBS_ARE}"
        ));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn load_cuda_library() -> Result<(), String> {
    if tch::Cuda::is_available() {
        Ok(())
    } else {
        Err(
            "LibTorch finds no CUDA device; --device cuda through LibTorch is built and tested \
             on Linux"
                .into(),
        )
    }
}
