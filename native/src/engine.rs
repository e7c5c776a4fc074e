//! The ways to run a model: the fast CPU engine (`dino_core::cpu`) or the Burn ViT on any
//! backend, and a ResNet (DINO's and PAWS's ResNet-50) on Burn. Commands talk to this, not to
//! any of them directly; what needs patch tokens or attention says so for a ResNet.

use burn::tensor::Device;
use burn::tensor::Tensor;
use dino_core::cpu::{CpuVit, Outputs};
use dino_core::imaging::{batch_tensor, normalize_chw};
use dino_core::model::resnet::ResNet;
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
    /// A ResNet with its name for messages (BatchNorm with its running statistics).
    ResNet(Box<ResNet>, String, Device),
}

impl Engine {
    /// The ViT's shape; a ResNet is refused with what `needs` the ViT.
    pub fn vit_config(&self, needs: &str) -> anyhow::Result<&VitConfig> {
        match self {
            Engine::Cpu(e) => Ok(&e.config),
            Engine::Burn(m, _) => Ok(&m.config),
            Engine::ResNet(_, name, _) => Err(needs_vit(name, needs)),
        }
    }

    /// Width of the features [`Engine::cls`] gives (the ViT's dim, a ResNet's pooled width).
    pub fn feature_dim(&self) -> usize {
        match self {
            Engine::Cpu(e) => e.config.dim,
            Engine::Burn(m, _) => m.config.dim,
            Engine::ResNet(m, _, _) => m.features(),
        }
    }

    /// What image sides are rounded down to: the ViT's patch; 1 for a ResNet (any size).
    pub fn patch(&self) -> usize {
        match self {
            Engine::Cpu(e) => e.config.patch,
            Engine::Burn(m, _) => m.config.patch,
            Engine::ResNet(..) => 1,
        }
    }

    /// A short name for messages.
    pub fn describe(&self) -> String {
        match self {
            Engine::Cpu(_) => "CPU engine".into(),
            Engine::Burn(_, d) => format!("Burn on {d:?}"),
            Engine::ResNet(_, name, d) => format!("{name} on Burn ({d:?})"),
        }
    }

    /// Normed CLS features `[B, D]` of same-size prepared images; of a ResNet its pooled last
    /// stage (DINO's evaluation features: `fc` replaced by the identity).
    pub fn cls(&self, images: &[RgbImage]) -> anyhow::Result<Vec<f32>> {
        match self {
            Engine::Cpu(e) => {
                let (x, b, h, w) = host_batch(images)?;
                Ok(e.forward(&x, b, h, w)?)
            }
            Engine::Burn(m, d) => read(m.forward(batch_tensor(images, d)?)?),
            Engine::ResNet(m, _, d) => read(m.forward(batch_tensor(images, d)?)),
        }
    }

    /// Linear-probe features of same-size prepared images: the normed CLS tokens of the last
    /// `n` blocks, then (with `avgpool`) the mean of the last block's patch tokens; of a
    /// ResNet its pooled features (as `eval_linear.py` takes them).
    pub fn probe_features(
        &self,
        images: &[RgbImage],
        n: usize,
        avgpool: bool,
    ) -> anyhow::Result<Vec<f32>> {
        let d = self.feature_dim();
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
            Engine::ResNet(..) => return self.cls(images),
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
            Engine::ResNet(_, name, _) => Err(needs_vit(name, "this descriptor (patch tokens)")),
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
            Engine::ResNet(_, name, _) => Err(needs_vit(name, "an attention map")),
        }
    }
}

/// The refusal of a ResNet where a ViT is needed.
fn needs_vit(name: &str, needs: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the weights are a {name}: {needs} needs a Vision Transformer (a ResNet has no patch \
         tokens or attention maps; its features work with embed, knn, linear, retrieve, dedup \
         and cluster)"
    )
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
