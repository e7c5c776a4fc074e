//! Backbone + head as `MultiCropWrapper`: the backbone runs once per crop resolution, the head
//! once on all CLS features.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::{DinoHead, HeadConfig};
use crate::weights::StateDict;
use crate::{Result, VisionTransformer, VitConfig};

/// A student or teacher network.
#[derive(Module, Debug)]
pub struct DinoNet {
    pub backbone: VisionTransformer,
    pub head: DinoHead,
}

impl DinoNet {
    /// Randomly initialised (official init) from `seed`.
    pub fn new(vit: &VitConfig, head: &HeadConfig, device: &Device, seed: u64) -> Result<Self> {
        let mut rng = crate::rng::seeded(seed);
        Ok(Self {
            backbone: VisionTransformer::new_seeded(vit, device, &mut rng)?,
            head: DinoHead::new(vit.dim, head, device, &mut rng)?,
        })
    }

    /// Builds the network from official `MultiCropWrapper` keys (`backbone.*`, `head.*`).
    pub fn from_state_dict(
        vit: &VitConfig,
        head: &HeadConfig,
        sd: StateDict,
        device: &Device,
    ) -> Result<Self> {
        let mut backbone = StateDict::new();
        let mut head_sd = StateDict::new();
        let mut other = StateDict::new();
        for (k, t) in sd {
            if let Some(r) = k.strip_prefix("backbone.") {
                backbone.insert(r, t);
            } else if let Some(r) = k.strip_prefix("head.") {
                head_sd.insert(r, t);
            } else {
                other.insert(k, t);
            }
        }
        other.finish()?;
        let head = DinoHead::from_state_dict(vit.dim, head, &mut head_sd, device)?;
        head_sd.finish()?;
        let mut backbone = VisionTransformer::from_state_dict(vit, backbone, device)?;
        backbone.set_drop_path_rate(vit.drop_path_rate);
        Ok(Self { backbone, head })
    }

    /// Official `MultiCropWrapper` keys.
    pub fn to_state_dict(&self) -> Result<StateDict> {
        let mut sd = StateDict::new();
        for (k, t) in self.backbone.to_state_dict()? {
            sd.insert(format!("backbone.{k}"), t);
        }
        for (k, t) in self.head.to_state_dict()? {
            sd.insert(format!("head.{k}"), t);
        }
        Ok(sd)
    }

    /// `groups`: crops batched by resolution, in crop order (each `[crops_in_group * B, 3, H, W]`,
    /// crop-major as `torch.cat` of per-crop batches). Returns head outputs `[all crops * B, K]`
    /// in the same row order.
    pub fn forward(&self, groups: Vec<Tensor<4>>) -> Result<Tensor<2>> {
        let feats = groups
            .into_iter()
            .map(|g| self.backbone.forward(g))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.head.forward(Tensor::cat(feats, 0)))
    }
}
