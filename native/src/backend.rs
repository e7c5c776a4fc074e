//! Which Burn backend runs the model: picked at run time, compiled in by cargo features.

use burn::tensor::Device;
use clap::ValueEnum;

/// `--device`: `cpu` (burn-flex) is always there; GPU backends with their cargo feature.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Backend {
    /// Pure-Rust CPU backend (burn-flex: SIMD + threads).
    #[default]
    Cpu,
    /// WebGPU API natively (Vulkan, Metal or DX12 underneath); needs `--features wgpu`.
    Wgpu,
    /// Vulkan with SPIR-V kernels; needs `--features vulkan`.
    Vulkan,
    /// Metal with MSL kernels; needs `--features metal`.
    Metal,
    /// NVIDIA GPUs through LibTorch (PyTorch's cuBLAS/cuDNN kernels); needs `--features tch`
    /// and PyTorch's `lib` folder on the library path (README, "CUDA through LibTorch"), or
    /// Burn's own CUDA backend in a `--features cuda` build.
    Cuda,
    /// PyTorch's CPU kernels through LibTorch; needs `--features tch`.
    Libtorch,
}

impl Backend {
    /// `n` devices for data parallelism: the first `n` adapters the backend finds (discrete
    /// GPUs first), the default one when n is 1, or the CPU n times. Too few is an error.
    pub fn devices(self, n: usize) -> anyhow::Result<Vec<Device>> {
        match n {
            0 => anyhow::bail!("--devices must be at least 1"),
            1 => Ok(vec![self.device()?]),
            _ if self.is_cpu() => Ok(vec![self.device()?; n]),
            _ => {
                let found = self.enumerate()?;
                if found.len() < n {
                    anyhow::bail!(
                        "--devices {n}: the {self:?} backend finds {} device(s) on this machine",
                        found.len()
                    );
                }
                Ok(found.into_iter().take(n).collect())
            }
        }
    }

    /// `n` devices from index `first` on: the GPUs of one MPI rank on a machine with several
    /// (local rank x devices per rank, ...). The CPU is one device whatever `first`.
    pub fn devices_from(self, first: usize, n: usize) -> anyhow::Result<Vec<Device>> {
        if first == 0 || self.is_cpu() {
            return self.devices(n);
        }
        let found = self.enumerate()?;
        if found.len() < first + n {
            anyhow::bail!(
                "devices {first}..{} of this machine (its MPI ranks take {n} each): the {self:?} \
                 backend finds {}",
                first + n - 1,
                found.len()
            );
        }
        Ok(found.into_iter().skip(first).take(n).collect())
    }

    /// A backend on the CPU: one device, which `--devices N` splits into parts.
    pub fn is_cpu(self) -> bool {
        matches!(self, Backend::Cpu | Backend::Libtorch)
    }

    /// A backend on CubeCL's kernels, where `--attention-kernel fused` applies: wgpu, Vulkan,
    /// Metal, and CUDA in a `--features cuda` build (LibTorch's in a `--features tch` one).
    pub fn is_cube(self) -> bool {
        match self {
            Backend::Wgpu | Backend::Vulkan | Backend::Metal => true,
            Backend::Cuda => !cfg!(feature = "tch"),
            Backend::Cpu | Backend::Libtorch => false,
        }
    }

    /// How many parts a batch of `batch` images runs as when `--devices` is not given: one
    /// device on GPUs; on the CPU 4 parts at the same time (2, 1 when the batch does not split),
    /// because burn-flex runs its element-wise ops on one thread and only its matrix products
    /// on all cores: parts on their own threads fill the idle cores (measured on 2 cores:
    /// 1.6x the images/s of one part on a small ViT, 1.2x on ViT-S/16; BENCHMARKS.md). A
    /// BatchNorm head normalises over all parts (synchronised, as the official SyncBatchNorm).
    /// LibTorch runs every op on all cores itself: one part.
    pub fn default_parts(self, batch: usize) -> usize {
        match self {
            Backend::Cpu => [4, 2]
                .into_iter()
                .find(|n| batch.is_multiple_of(*n))
                .unwrap_or(1),
            _ => 1,
        }
    }

    /// Every GPU of a GPU backend, discrete ones first; software adapters (a CPU rasterizer
    /// such as lavapipe, which wgpu lists too) are left out.
    fn enumerate(self) -> anyhow::Result<Vec<Device>> {
        #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal"))]
        {
            use burn::tensor::DeviceType;
            let found = match self {
                #[cfg(feature = "wgpu")]
                Backend::Wgpu => Some(Device::enumerate(DeviceType::Wgpu)),
                #[cfg(feature = "vulkan")]
                Backend::Vulkan => Some(Device::enumerate(DeviceType::Vulkan)),
                #[cfg(feature = "metal")]
                Backend::Metal => Some(Device::enumerate(DeviceType::Metal)),
                _ => None,
            };
            if let Some(found) = found {
                return Ok(found
                    .into_vec()
                    .into_iter()
                    .filter(|d| d.identity().is_none_or(|id| id.physical.is_some()))
                    .collect());
            }
        }
        #[cfg(feature = "tch")]
        if let Backend::Cuda = self {
            #[allow(deprecated)] // burn-tch: deprecated upstream, the CUDA path that builds here
            return Ok((0..crate::libtorch::cuda_devices()?)
                .map(Device::libtorch_cuda)
                .collect());
        }
        // the CPU, or a backend this build lacks (its error)
        Ok(vec![self.device()?])
    }

    /// The backend's default device.
    pub fn device(self) -> anyhow::Result<Device> {
        let missing = |f: &str| {
            let how = if f == "tch" {
                " against an installed PyTorch (README, \"CUDA through LibTorch\")"
            } else {
                ""
            };
            anyhow::bail!(
                "this `dino` was built without the `{f}` backend: rebuild with \
                 `cargo build --release --features {f}`{how}"
            )
        };
        let device = match self {
            Backend::Cpu => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Ok(Device::wgpu(Default::default())),
            #[cfg(not(feature = "wgpu"))]
            Backend::Wgpu => missing("wgpu"),
            #[cfg(feature = "vulkan")]
            Backend::Vulkan => Ok(Device::vulkan(Default::default())),
            #[cfg(not(feature = "vulkan"))]
            Backend::Vulkan => missing("vulkan"),
            #[cfg(feature = "metal")]
            Backend::Metal => Ok(Device::metal(Default::default())),
            #[cfg(not(feature = "metal"))]
            Backend::Metal => missing("metal"),
            #[cfg(feature = "tch")]
            #[allow(deprecated)]
            // burn-tch: deprecated upstream, the CUDA path that builds here
            Backend::Cuda => crate::libtorch::cuda_devices().map(|_| Device::libtorch_cuda(0)),
            #[cfg(feature = "tch")]
            #[allow(deprecated)]
            Backend::Libtorch => Ok(Device::libtorch()),
            // Burn's own CUDA backend, for those who can build it (not built or tested here)
            #[cfg(all(feature = "cuda", not(feature = "tch")))]
            Backend::Cuda => Ok(Device::cuda(0)),
            #[cfg(not(any(feature = "tch", feature = "cuda")))]
            Backend::Cuda => missing("tch"),
            #[cfg(not(feature = "tch"))]
            Backend::Libtorch => missing("tch"),
        };
        #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal"))]
        if device.is_ok() && matches!(self, Backend::Wgpu | Backend::Vulkan | Backend::Metal) {
            crate::gpu_kernels::announce();
        }
        device
    }
}

#[cfg(test)]
mod tests {
    use super::Backend;

    #[test]
    fn the_cpu_splits_a_batch_into_as_many_parts_as_it_can_up_to_four() {
        let parts = |b| Backend::Cpu.default_parts(b);
        assert_eq!([parts(64), parts(6), parts(7)], [4, 2, 1]);
        assert_eq!(Backend::Vulkan.default_parts(64), 1, "one GPU by default");
    }

    #[cfg(not(any(feature = "tch", feature = "cuda")))]
    #[test]
    fn libtorch_devices_in_a_build_without_it_say_how_to_build_it() {
        for backend in [Backend::Cuda, Backend::Libtorch] {
            let e = backend.device().unwrap_err().to_string();
            assert!(e.contains("without the `tch` backend"), "{e}");
            assert!(
                e.contains("--features tch` against an installed PyTorch"),
                "{e}"
            );
            let e = backend.devices(2).unwrap_err().to_string();
            assert!(e.contains("without the `tch` backend"), "{e}");
        }
    }
}
