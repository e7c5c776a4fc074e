//! The PAWS encoder of suncet's `paws_train.py` (`init_model`): a backbone (the Wide ResNet of
//! the CIFAR-10 recipe or a ResNet of the ImageNet one), the projection
//! head `fc` (fc1-bn1-ReLU-fc2-bn2-ReLU-fc3, hidden width = the backbone's features) and the
//! optional prediction head `pred` (bn1-fc1-bn2-ReLU-fc2, a 4x bottleneck). As the official
//! `forward`, consecutive inputs of one resolution run through the backbone and the heads
//! together (so each BatchNorm sees that group as its batch).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::params::{LinearParams, ParamSource, Params, module_state_dict};
use crate::model::resnet::{ResNet, ResNetConfig};
use crate::model::wide_resnet::{WideResNet, WideResNetConfig};
use crate::model::{BN_MOMENTUM, BatchNorm, linear};
use crate::weights::StateDict;
use crate::{Error, Result};

/// The backbone of a PAWS encoder.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackboneConfig {
    WideResNet(WideResNetConfig),
    ResNet(ResNetConfig),
}

impl BackboneConfig {
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::WideResNet(c) => c.validate(),
            Self::ResNet(c) => c.validate(),
        }
    }

    /// A short name for messages: `WRN-28-2`, `ResNet-50`, `ResNet (bottleneck [3, 4, 6, 3],
    /// stem 16)`.
    pub fn describe(&self) -> String {
        match self {
            Self::WideResNet(c) => format!("WRN-{}-{}", c.depth, c.widen),
            Self::ResNet(c) => c.describe(),
        }
    }

    /// Width of the pooled features: the projection head's hidden width (`hidden_dim` of
    /// `init_model`: 128 for WRN-28-2, 2048 for ResNet-50, 4096 for ResNet-50w2).
    pub fn features(&self) -> usize {
        match self {
            Self::WideResNet(c) => c.features(),
            Self::ResNet(c) => c.features(),
        }
    }
}

/// A backbone as a module; its variant adds no level to the parameter names (see
/// [`crate::model::params::ModulePath`]), so the official keys stay `conv1.weight`, ...
#[derive(Module, Debug)]
pub enum Backbone {
    WideResNet(WideResNet),
    ResNet(ResNet),
}

impl Backbone {
    fn new(cfg: &BackboneConfig, vb: &Params, device: &Device) -> Result<Self> {
        Ok(match cfg {
            BackboneConfig::WideResNet(c) => Self::WideResNet(WideResNet::new(c, vb, device)?),
            BackboneConfig::ResNet(c) => Self::ResNet(ResNet::new(c, vb, device)?),
        })
    }

    /// Pooled features `[B, features]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Self::WideResNet(n) => n.forward(x),
            Self::ResNet(n) => n.forward(x),
        }
    }

    pub fn batch_norms(&self) -> Vec<&BatchNorm> {
        match self {
            Self::WideResNet(n) => n.batch_norms(),
            Self::ResNet(n) => n.batch_norms(),
        }
    }

    pub fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm> {
        match self {
            Self::WideResNet(n) => n.batch_norms_mut(),
            Self::ResNet(n) => n.batch_norms_mut(),
        }
    }
}

/// Sizes of the encoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    pub backbone: BackboneConfig,
    /// Output of the projection head (128 officially).
    pub output_dim: usize,
    /// A prediction head on top of the projection (`use_pred_head`; off in the CIFAR recipe).
    pub use_pred_head: bool,
}

impl EncoderConfig {
    pub fn validate(&self) -> Result<()> {
        self.backbone.validate()?;
        if self.output_dim == 0 || (self.use_pred_head && self.output_dim < 4) {
            return Err(Error::Config(format!(
                "output_dim {} is too small{}",
                self.output_dim,
                if self.use_pred_head {
                    " for a 4x-bottleneck prediction head"
                } else {
                    ""
                }
            )));
        }
        Ok(())
    }
}

/// `fc`: the projection head.
#[derive(Module, Debug)]
pub struct ProjectionHead {
    pub fc1: Linear,
    pub bn1: BatchNorm,
    pub fc2: Linear,
    pub bn2: BatchNorm,
    pub fc3: Linear,
}

impl ProjectionHead {
    fn new(hidden: usize, out: usize, vb: &Params, device: &Device) -> Result<Self> {
        let lin = |i, o, name: &str| -> Result<Linear> {
            Ok(LinearParams::pytorch_default(i, o, &vb.pp(name))?.into_burn(device))
        };
        let bn = |c, name: &str| BatchNorm::new(c, BN_MOMENTUM, false, &vb.pp(name), device);
        Ok(Self {
            fc1: lin(hidden, hidden, "fc1")?,
            bn1: bn(hidden, "bn1")?,
            fc2: lin(hidden, hidden, "fc2")?,
            bn2: bn(hidden, "bn2")?,
            fc3: lin(hidden, out, "fc3")?,
        })
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = relu(self.bn1.forward(linear(&self.fc1, x)));
        let x = relu(self.bn2.forward(linear(&self.fc2, x)));
        linear(&self.fc3, x)
    }
}

/// `pred`: the prediction head.
#[derive(Module, Debug)]
pub struct PredictionHead {
    pub bn1: BatchNorm,
    pub fc1: Linear,
    pub bn2: BatchNorm,
    pub fc2: Linear,
}

impl PredictionHead {
    fn new(dim: usize, vb: &Params, device: &Device) -> Result<Self> {
        let mid = dim / 4;
        let bn = |c, name: &str| BatchNorm::new(c, BN_MOMENTUM, false, &vb.pp(name), device);
        let lin = |i, o, name: &str| -> Result<Linear> {
            Ok(LinearParams::pytorch_default(i, o, &vb.pp(name))?.into_burn(device))
        };
        Ok(Self {
            bn1: bn(dim, "bn1")?,
            fc1: lin(dim, mid, "fc1")?,
            bn2: bn(mid, "bn2")?,
            fc2: lin(mid, dim, "fc2")?,
        })
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = linear(&self.fc1, self.bn1.forward(x));
        linear(&self.fc2, relu(self.bn2.forward(x)))
    }
}

/// Backbone and heads.
#[derive(Module, Debug)]
pub struct PawsEncoder {
    pub backbone: Backbone,
    pub fc: ProjectionHead,
    pub pred: Option<PredictionHead>,
    /// The shape it was built with (written into checkpoints, so that any encoder resumes).
    #[module(skip)]
    pub config: EncoderConfig,
}

/// The encoder's outputs for a batch of views.
pub struct EncoderOutput {
    /// Projections `[views, output_dim]` (the targets' source).
    pub h: Tensor<2>,
    /// Predictions (`h` again without a prediction head): the anchors.
    pub z: Tensor<2>,
}

impl PawsEncoder {
    /// The encoder of `cfg` with the official keys under `vb`: the backbone's at the top
    /// level, `fc.*`, `pred.*`.
    pub fn new(cfg: &EncoderConfig, vb: &Params, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let backbone = Backbone::new(&cfg.backbone, vb, device)?;
        let hidden = cfg.backbone.features();
        let fc = ProjectionHead::new(hidden, cfg.output_dim, &vb.pp("fc"), device)?;
        let pred = if cfg.use_pred_head {
            Some(PredictionHead::new(cfg.output_dim, &vb.pp("pred"), device)?)
        } else {
            None
        };
        Ok(Self {
            backbone,
            fc,
            pred,
            config: cfg.clone(),
        })
    }

    /// Drawn as PyTorch initialises the official model (seeded).
    pub fn seeded(cfg: &EncoderConfig, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = crate::rng::seeded(seed);
        Self::new(cfg, &ParamSource::init(&mut rng).root(), device)
    }

    /// From the official keys (`module.` prefixes of a DDP checkpoint removed first), every
    /// tensor used.
    pub fn from_state_dict(cfg: &EncoderConfig, sd: StateDict, device: &Device) -> Result<Self> {
        let source = ParamSource::load(sd);
        let enc = Self::new(cfg, &source.root(), device)?;
        source.finish()?;
        Ok(enc)
    }

    /// The official keys: the backbone's at the top level, `fc.*`, `pred.*`.
    pub fn to_state_dict(&self) -> Result<StateDict> {
        for bn in self.batch_norms() {
            bn.sync();
        }
        let mut sd = StateDict::new();
        for (k, t) in module_state_dict(self)? {
            let k = k.strip_prefix("backbone.").map(str::to_string).unwrap_or(k);
            sd.insert(k, t);
        }
        Ok(sd)
    }

    /// Every BatchNorm normalises with its running statistics and keeps them, also while
    /// training (suncet's fine-tuning sets each BatchNorm to `eval()`); the affine parameters
    /// still learn.
    pub fn freeze_batch_norms(&mut self) {
        let mut all = self.backbone.batch_norms_mut();
        all.extend([&mut self.fc.bn1, &mut self.fc.bn2]);
        if let Some(p) = &mut self.pred {
            all.extend([&mut p.bn1, &mut p.bn2]);
        }
        for bn in all {
            bn.frozen = true;
        }
    }

    fn batch_norms(&self) -> Vec<&BatchNorm> {
        let mut out = self.backbone.batch_norms();
        out.extend([&self.fc.bn1, &self.fc.bn2]);
        if let Some(p) = &self.pred {
            out.extend([&p.bn1, &p.bn2]);
        }
        out
    }

    /// Backbone features `[B, features]` (pooled, before the heads).
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        self.backbone.forward(x)
    }

    /// The official `forward(imgs)` of one batch: the predictions `z` (the projections without
    /// a prediction head), what the soft-NN evaluation compares. On a device without autodiff
    /// the BatchNorms use their running statistics (`encoder.eval()`).
    pub fn embed(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(vec![x]).z
    }

    /// The official `forward(inputs, return_before_head=True)`: each group (consecutive views
    /// of one resolution, concatenated) through the backbone and heads on its own; outputs in
    /// input order.
    pub fn forward(&self, groups: Vec<Tensor<4>>) -> EncoderOutput {
        let (mut hs, mut zs) = (Vec::new(), Vec::new());
        for g in groups {
            let h = self.fc.forward(self.backbone.forward(g));
            let z = match &self.pred {
                Some(p) => p.forward(h.clone()),
                None => h.clone(),
            };
            hs.push(h);
            zs.push(z);
        }
        EncoderOutput {
            h: Tensor::cat(hs, 0),
            z: Tensor::cat(zs, 0),
        }
    }
}
