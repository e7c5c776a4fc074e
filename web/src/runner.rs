//! The model on the backend `Dino.load` chose: the fused CPU engine, or (with the `webgpu`
//! feature) the Burn model on the browser's WebGPU device. Both give the same outputs.

use dino_core::VitConfig;
use dino_core::cpu::{CpuFeatures, CpuVit, Outputs};
use dino_core::weights::StateDict;

pub enum Runner {
    Cpu(CpuVit),
    #[cfg(feature = "webgpu")]
    WebGpu(Box<dino_core::VisionTransformer>, burn::tensor::Device),
}

impl Runner {
    pub fn cpu(config: &VitConfig, state: StateDict) -> Result<Self, String> {
        CpuVit::from_state_dict(config, state)
            .map(Runner::Cpu)
            .map_err(crate::explain)
    }

    #[cfg(feature = "webgpu")]
    pub fn webgpu(
        config: &VitConfig,
        state: StateDict,
        device: burn::tensor::Device,
    ) -> Result<Self, String> {
        dino_core::VisionTransformer::from_state_dict(config, state, &device)
            .map(|m| Runner::WebGpu(Box::new(m), device))
            .map_err(crate::explain)
    }

    pub fn config(&self) -> &VitConfig {
        match self {
            Runner::Cpu(e) => &e.config,
            #[cfg(feature = "webgpu")]
            Runner::WebGpu(m, _) => &m.config,
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Runner::Cpu(_) => "cpu",
            #[cfg(feature = "webgpu")]
            Runner::WebGpu(..) => "webgpu",
        }
    }

    /// One normalised `[3, h, w]` image through the model: the CLS feature always, patch
    /// tokens and last-block CLS attention when asked (`last_blocks` is not supported here).
    pub async fn run(
        &self,
        chw: Vec<f32>,
        h: usize,
        w: usize,
        want: Outputs,
    ) -> Result<CpuFeatures, String> {
        match self {
            Runner::Cpu(e) => e.run(&chw, 1, h, w, want).map_err(crate::explain),
            #[cfg(feature = "webgpu")]
            Runner::WebGpu(m, device) => gpu::run(m, device, chw, h, w, want).await,
        }
    }
}

#[cfg(feature = "webgpu")]
mod gpu {
    use burn::tensor::{Device, Tensor, TensorData};
    use dino_core::VisionTransformer;
    use dino_core::cpu::{CpuFeatures, Outputs};

    /// Reads a tensor back without blocking: synchronous readback panics on WebGPU in a
    /// browser (the GPU answers on the event loop).
    async fn read<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, String> {
        let data = t
            .into_data_async()
            .await
            .map_err(|e| format!("reading the result back from the GPU failed: {e:?}"))?;
        data.try_to_vec::<f32>()
            .map_err(|e| format!("unexpected GPU result: {e:?}"))
    }

    pub async fn run(
        m: &VisionTransformer,
        device: &Device,
        chw: Vec<f32>,
        h: usize,
        w: usize,
        want: Outputs,
    ) -> Result<CpuFeatures, String> {
        let x = Tensor::<4>::from_data(TensorData::new(chw, [1, 3, h, w]), device);
        let (features, attention) = if want.attention {
            let (f, a) = m.forward_with_cls_attention(x).map_err(crate::explain)?;
            (f, Some(a))
        } else {
            (m.forward_features(x).map_err(crate::explain)?, None)
        };
        let grid = features.grid;
        let cls = read(features.cls).await?;
        let patches = if want.patches {
            read(features.patches).await?
        } else {
            Vec::new()
        };
        let attention = match attention {
            Some(a) => read(a).await?,
            None => Vec::new(),
        };
        Ok(CpuFeatures {
            cls,
            patches,
            attention,
            last_blocks_cls: Vec::new(),
            grid,
        })
    }
}
