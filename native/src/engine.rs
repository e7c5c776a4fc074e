//! The two ways to run the model: the fast CPU engine (`dino_core::cpu`) or the Burn model
//! on any backend. Commands talk to this, not to either directly.

use burn::tensor::Device;
use burn::tensor::Tensor;
use dino_core::cpu::{CpuVit, Outputs};
use dino_core::imaging::{batch_tensor, normalize_chw};
use dino_core::{VisionTransformer, VitConfig};
use image::RgbImage;

/// The last layer's normed tokens of a batch.
pub struct Tokens {
    /// `[B, D]`
    pub cls: Vec<f32>,
    /// `[B, gh*gw, D]`
    pub patches: Vec<f32>,
    /// `(gh, gw)`
    pub grid: (usize, usize),
}

/// A loaded model, ready for inference.
pub enum Engine {
    Cpu(CpuVit),
    Burn(Box<VisionTransformer>, Device),
}

impl Engine {
    pub fn config(&self) -> &VitConfig {
        match self {
            Engine::Cpu(e) => &e.config,
            Engine::Burn(m, _) => &m.config,
        }
    }

    /// A short name for messages.
    pub fn describe(&self) -> String {
        match self {
            Engine::Cpu(_) => "CPU engine".into(),
            Engine::Burn(_, d) => format!("Burn on {d:?}"),
        }
    }

    /// Normed CLS features `[B, D]` of same-size prepared images.
    pub fn cls(&self, images: &[RgbImage]) -> anyhow::Result<Vec<f32>> {
        match self {
            Engine::Cpu(e) => {
                let (x, b, h, w) = host_batch(images)?;
                Ok(e.forward(&x, b, h, w)?)
            }
            Engine::Burn(m, d) => read(m.forward(batch_tensor(images, d)?)?),
        }
    }

    /// Linear-probe features of same-size prepared images: the normed CLS tokens of the last
    /// `n` blocks, then (with `avgpool`) the mean of the last block's patch tokens.
    pub fn probe_features(
        &self,
        images: &[RgbImage],
        n: usize,
        avgpool: bool,
    ) -> anyhow::Result<Vec<f32>> {
        let d = self.config().dim;
        let b = images.len();
        let (cls, patches) = match self {
            Engine::Cpu(e) => {
                let (x, b, h, w) = host_batch(images)?;
                let want = Outputs {
                    last_blocks: n,
                    patches: avgpool,
                    ..Default::default()
                };
                let out = e.run(&x, b, h, w, want)?;
                (out.last_blocks_cls, out.patches)
            }
            Engine::Burn(m, dev) => {
                let layers = m.intermediate_layers(batch_tensor(images, dev)?, n)?;
                let t = layers[0].dims()[1];
                let cls: Vec<Tensor<3>> =
                    layers.iter().map(|l| l.clone().narrow(1, 0, 1)).collect();
                let cls = read(Tensor::cat(cls, 2).reshape([b, n * d]))?;
                let patches = if avgpool {
                    read(layers[n - 1].clone().narrow(1, 1, t - 1))?
                } else {
                    Vec::new()
                };
                (cls, patches)
            }
        };
        if !avgpool {
            return Ok(cls);
        }
        let tokens = patches.len() / (b * d);
        let mut out = Vec::with_capacity(b * (n + 1) * d);
        for i in 0..b {
            out.extend_from_slice(&cls[i * n * d..(i + 1) * n * d]);
            let p = &patches[i * tokens * d..(i + 1) * tokens * d];
            out.extend((0..d).map(|j| p.iter().skip(j).step_by(d).sum::<f32>() / tokens as f32));
        }
        Ok(out)
    }

    /// Normed CLS `[B, D]` and patch tokens `[B, gh*gw, D]` (the output of
    /// `get_intermediate_layers(x, n=1)`) of same-size prepared images, and the grid.
    pub fn tokens(&self, images: &[RgbImage]) -> anyhow::Result<Tokens> {
        match self {
            Engine::Cpu(e) => {
                let (x, b, h, w) = host_batch(images)?;
                let want = Outputs {
                    patches: true,
                    ..Default::default()
                };
                let out = e.run(&x, b, h, w, want)?;
                Ok(Tokens {
                    cls: out.cls,
                    patches: out.patches,
                    grid: out.grid,
                })
            }
            Engine::Burn(m, dev) => {
                let x = batch_tensor(images, dev)?;
                let grid = m.check_input(x.dims())?;
                let layer = m.intermediate_layers(x, 1)?.remove(0);
                let [b, t, d] = layer.dims();
                let cls = read(layer.clone().narrow(1, 0, 1).reshape([b, d]))?;
                let patches = read(layer.narrow(1, 1, t - 1))?;
                Ok(Tokens { cls, patches, grid })
            }
        }
    }

    /// Last-block CLS-to-patch attention `[H, gh*gw]` of one prepared image, and its grid.
    pub fn cls_attention(&self, image: &RgbImage) -> anyhow::Result<(Vec<f32>, (usize, usize))> {
        match self {
            Engine::Cpu(e) => {
                let (x, b, h, w) = host_batch(std::slice::from_ref(image))?;
                let want = Outputs {
                    attention: true,
                    ..Default::default()
                };
                let out = e.run(&x, b, h, w, want)?;
                Ok((out.attention, out.grid))
            }
            Engine::Burn(m, d) => {
                let x = batch_tensor(std::slice::from_ref(image), d)?;
                let grid = m.check_input(x.dims())?;
                Ok((read(m.cls_attention(x)?)?, grid))
            }
        }
    }
}

fn host_batch(images: &[RgbImage]) -> anyhow::Result<(Vec<f32>, usize, usize, usize)> {
    let first = images.first().ok_or_else(|| anyhow::anyhow!("no images"))?;
    let (w, h) = first.dimensions();
    anyhow::ensure!(
        images.iter().all(|i| i.dimensions() == (w, h)),
        "images of one batch must share a size"
    );
    let x = images.iter().flat_map(normalize_chw).collect();
    Ok((x, images.len(), h as usize, w as usize))
}

fn read<const D: usize>(t: burn::Tensor<D>) -> anyhow::Result<Vec<f32>> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading a result back: {e:?}"))
}
