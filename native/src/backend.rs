//! Which Burn backend runs the model: picked at run time, compiled in by cargo features.

use burn::tensor::{Device, DeviceKind};
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
    pub fn device(self) -> anyhow::Result<Device> {
        self.device_of(DeviceKind::DefaultDevice)
    }

    /// `n` devices for data parallelism: the GPUs 0..n-1 of the backend (the default adapter
    /// when n is 1), or the CPU n times.
    pub fn devices(self, n: usize) -> anyhow::Result<Vec<Device>> {
        match n {
            0 => anyhow::bail!("--devices must be at least 1"),
            1 => Ok(vec![self.device()?]),
            _ if matches!(self, Backend::Cpu) => Ok(vec![self.device()?; n]),
            _ => (0..n)
                .map(|i| self.device_of(DeviceKind::DiscreteGpu(i)))
                .collect(),
        }
    }

    /// The device of this backend on the adapter `kind` (ignored by the CPU).
    #[cfg_attr(
        not(any(feature = "wgpu", feature = "vulkan", feature = "metal")),
        allow(unused_variables)
    )]
    fn device_of(self, kind: DeviceKind) -> anyhow::Result<Device> {
        let missing = |f: &str| {
            anyhow::bail!(
                "this `dino` was built without the `{f}` backend: rebuild with \
                 `cargo build --release --features {f}`"
            )
        };
        match self {
            Backend::Cpu => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Ok(Device::wgpu(kind)),
            #[cfg(not(feature = "wgpu"))]
            Backend::Wgpu => missing("wgpu"),
            #[cfg(feature = "vulkan")]
            Backend::Vulkan => Ok(Device::vulkan(kind)),
            #[cfg(not(feature = "vulkan"))]
            Backend::Vulkan => missing("vulkan"),
            #[cfg(feature = "metal")]
            Backend::Metal => Ok(Device::metal(kind)),
            #[cfg(not(feature = "metal"))]
            Backend::Metal => missing("metal"),
        }
    }
}
