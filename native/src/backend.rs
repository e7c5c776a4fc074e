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
