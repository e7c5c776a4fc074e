//! Backbone + head as `MultiCropWrapper`: the backbone runs once per crop resolution, the head
//! once on all CLS features.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::{BatchSync, DinoHead, HeadConfig};
use crate::model::Precision;
use crate::model::params::ParamSource;
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
        Self::new_from(vit, head, &ParamSource::init(&mut rng), device)
    }

    /// The network with parameters from `source` under the official `MultiCropWrapper` keys
    /// (`backbone.*`, `head.*`).
    pub fn new_from(
        vit: &VitConfig,
        head: &HeadConfig,
        source: &ParamSource,
        device: &Device,
    ) -> Result<Self> {
        let vb = source.root();
        Ok(Self {
            backbone: VisionTransformer::new_from(vit, &vb.pp("backbone"), device)?,
            head: DinoHead::new_from(vit.dim, head, &vb.pp("head"), device)?,
        })
    }

    /// Builds the network from official `MultiCropWrapper` keys, every tensor used.
    pub fn from_state_dict(
        vit: &VitConfig,
        head: &HeadConfig,
        sd: StateDict,
        device: &Device,
    ) -> Result<Self> {
        let source = ParamSource::load(sd);
        let net = Self::new_from(vit, head, &source, device)?;
        source.finish()?;
        Ok(net)
    }

    /// The precision of every matrix product of backbone and head ([`Precision`]).
    pub fn set_precision(&mut self, precision: Precision) {
        self.backbone.set_precision(precision);
        self.head.precision = precision;
    }

    /// The precision of the network's products.
    pub fn precision(&self) -> Precision {
        self.backbone.precision()
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
        self.forward_synced(groups, None)
    }

    /// [`Self::forward`], the head's BatchNorms synchronised over the ranks of `sync` if given.
    pub fn forward_synced(
        &self,
        groups: Vec<Tensor<4>>,
        sync: Option<&BatchSync>,
    ) -> Result<Tensor<2>> {
        let feats = groups
            .into_iter()
            .map(|g| self.backbone.forward(g))
            .collect::<Result<Vec<_>>>()?;
        self.head.forward(Tensor::cat(feats, 0), sync)
    }
}
