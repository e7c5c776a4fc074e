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
}

impl Backend {
    /// `n` devices for data parallelism: the first `n` adapters the backend finds (discrete
    /// GPUs first), the default one when n is 1, or the CPU n times. Too few is an error.
    pub fn devices(self, n: usize) -> anyhow::Result<Vec<Device>> {
        match n {
            0 => anyhow::bail!("--devices must be at least 1"),
            1 => Ok(vec![self.device()?]),
            _ if matches!(self, Backend::Cpu) => Ok(vec![self.device()?; n]),
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

    /// Every GPU of a GPU backend, discrete ones first; software adapters (a CPU rasterizer
    /// such as lavapipe, which wgpu lists too) are left out.
    #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal"))]
    fn enumerate(self) -> anyhow::Result<Vec<Device>> {
        use burn::tensor::DeviceType;
        let found = match self {
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Device::enumerate(DeviceType::Wgpu),
            #[cfg(feature = "vulkan")]
            Backend::Vulkan => Device::enumerate(DeviceType::Vulkan),
            #[cfg(feature = "metal")]
            Backend::Metal => Device::enumerate(DeviceType::Metal),
            // the CPU, or a backend this build lacks (its error)
            _ => return Ok(vec![self.device()?]),
        };
        Ok(found
            .into_vec()
            .into_iter()
            .filter(|d| d.identity().is_none_or(|id| id.physical.is_some()))
            .collect())
    }

    /// Without GPU backends: the CPU, or the error of the backend this build lacks.
    #[cfg(not(any(feature = "wgpu", feature = "vulkan", feature = "metal")))]
    fn enumerate(self) -> anyhow::Result<Vec<Device>> {
        Ok(vec![self.device()?])
    }

    /// The backend's default device.
    pub fn device(self) -> anyhow::Result<Device> {
        let missing = |f: &str| {
            anyhow::bail!(
                "this `dino` was built without the `{f}` backend: rebuild with \
                 `cargo build --release --features {f}`"
            )
        };
        match self {
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
        }
    }
}
