//! The ResNet of DINO's and PAWS's ImageNet runs: torchvision's network as suncet's
//! `src/resnet.py` generalises it (a stem width `width_per_group x widen`, so ResNet-50w2/w4
//! load), basic or bottleneck blocks without conv biases, BatchNorm after every convolution,
//! the 3x3 max pool after the stem and global average pooling. The classifier `fc` is not part
//! of it: DINO replaces it by the identity and PAWS by its projection head. Field names are the
//! official keys (`conv1`, `bn1`, `layer1.0.conv2`, `layer2.0.downsample.0`, ...), so
//! `dino_resnet50_pretrain.pth`, torchvision's files and PAWS's encoders load as they are.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::conv::{ConvSpec, conv_forward, conv2d};
use super::params::{Init, Params};
use super::{BN_MOMENTUM, BatchNorm};
use crate::weights::StateDict;
use crate::{Error, Result};

/// The two residual blocks of torchvision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResidualBlock {
    /// Two 3x3 convolutions (ResNet-18/34), expansion 1.
    Basic,
    /// 1x1, 3x3, 1x1 convolutions (ResNet-50 and deeper), expansion 4.
    Bottleneck,
}

impl ResidualBlock {
    pub fn expansion(self) -> usize {
        match self {
            Self::Basic => 1,
            Self::Bottleneck => 4,
        }
    }
}

/// The shape of a ResNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetConfig {
    pub block: ResidualBlock,
    /// Blocks in each of the four stages.
    pub layers: [usize; 4],
    /// Channels of the stem, and the `planes` of the first stage (doubled per stage):
    /// `width_per_group x widen` in suncet (64, 128 for w2, 256 for w4).
    pub stem_width: usize,
    /// `width_per_group`: a bottleneck's inner width is `planes x base_width / 64`.
    pub base_width: usize,
    /// The 3x3 stride-2 max pool after the stem (always in torchvision; suncet's
    /// `use_maxpool`, on by default).
    #[serde(default = "yes")]
    pub maxpool: bool,
}

fn yes() -> bool {
    true
}

impl ResNetConfig {
    fn official(block: ResidualBlock, layers: [usize; 4], widen: usize) -> Self {
        Self {
            block,
            layers,
            stem_width: 64 * widen,
            base_width: 64,
            maxpool: true,
        }
    }

    /// The networks suncet and torchvision name, by their official names (`resnet50`,
    /// `resnet50w2`, ...).
    pub fn named(name: &str) -> Result<Self> {
        use ResidualBlock::*;
        Ok(match name {
            "resnet18" => Self::official(Basic, [2, 2, 2, 2], 1),
            "resnet34" => Self::official(Basic, [3, 4, 6, 3], 1),
            "resnet50" => Self::official(Bottleneck, [3, 4, 6, 3], 1),
            "resnet50w2" => Self::official(Bottleneck, [3, 4, 6, 3], 2),
            "resnet50w4" => Self::official(Bottleneck, [3, 4, 6, 3], 4),
            "resnet101" => Self::official(Bottleneck, [3, 4, 23, 3], 1),
            "resnet101w2" => Self::official(Bottleneck, [3, 4, 23, 3], 2),
            "resnet152" => Self::official(Bottleneck, [3, 8, 36, 3], 1),
            "resnet200" => Self::official(Bottleneck, [3, 24, 36, 3], 1),
            other => {
                return Err(Error::Config(format!(
                    "unknown ResNet '{other}': expected resnet18, resnet34, resnet50, \
                     resnet50w2, resnet50w4, resnet101, resnet101w2, resnet152 or resnet200"
                )));
            }
        })
    }

    pub fn validate(&self) -> Result<()> {
        let inner = self.stem_width * self.base_width;
        if self.layers.contains(&0)
            || self.stem_width == 0
            || self.base_width == 0
            || (self.block == ResidualBlock::Basic && self.base_width != 64)
            || (self.block == ResidualBlock::Bottleneck && inner < 64)
            || self.layers.iter().sum::<usize>() > 1000
            || self.stem_width > 8192
        {
            return Err(Error::Config(format!(
                "not a ResNet: {self:?} (every stage needs a block, basic blocks have \
                 base width 64, widths must be positive and sane)"
            )));
        }
        Ok(())
    }

    /// `ResNet-50`, `ResNet-50w2`, or the shape when no official network has it.
    pub fn describe(&self) -> String {
        for name in [
            "resnet18",
            "resnet34",
            "resnet50",
            "resnet50w2",
            "resnet50w4",
            "resnet101",
            "resnet101w2",
            "resnet152",
            "resnet200",
        ] {
            if Self::named(name).ok()
                == Some(Self {
                    maxpool: true,
                    ..*self
                })
                && self.maxpool
            {
                return format!("ResNet-{}", &name[6..]);
            }
        }
        format!(
            "ResNet ({:?} blocks {:?}, stem width {}, base width {})",
            self.block, self.layers, self.stem_width, self.base_width
        )
    }

    /// `planes` of stage `s` (0-based).
    pub fn planes(&self, s: usize) -> usize {
        self.stem_width << s
    }

    /// A bottleneck's inner width in stage `s` (suncet: `int(planes * base_width / 64)`).
    pub fn inner_width(&self, s: usize) -> usize {
        match self.block {
            ResidualBlock::Basic => self.planes(s),
            ResidualBlock::Bottleneck => self.planes(s) * self.base_width / 64,
        }
    }

    /// Width of the pooled features (2048 for ResNet-50).
    pub fn features(&self) -> usize {
        self.planes(3) * self.block.expansion()
    }

    /// The network a state dict with the official keys holds (`conv1.weight`,
    /// `layer1.0.conv1.weight`, ...), from its shapes; `None` when it is not a ResNet.
    pub fn detect(sd: &StateDict) -> Option<Result<Self>> {
        let stem = sd.get("conv1.weight")?;
        sd.get("layer1.0.conv1.weight")?;
        Some(Self::detect_from(sd, &stem.shape))
    }

    fn detect_from(sd: &StateDict, stem: &[usize]) -> Result<Self> {
        let bad = |m: String| Error::Weights(format!("ResNet checkpoint: {m}"));
        if stem.len() != 4 || stem[1] != 3 {
            return Err(bad(format!(
                "the stem 'conv1.weight' has shape {stem:?}, expected [width, 3, k, k]"
            )));
        }
        let block = if sd.contains("layer1.0.conv3.weight") {
            ResidualBlock::Bottleneck
        } else {
            ResidualBlock::Basic
        };
        let mut layers = [0; 4];
        for (s, n) in layers.iter_mut().enumerate() {
            while sd.contains(&format!("layer{}.{}.conv1.weight", s + 1, *n)) {
                *n += 1;
                if *n > 1000 {
                    return Err(bad("more than 1000 blocks in one stage".into()));
                }
            }
        }
        let stem_width = stem[0];
        let base_width = match block {
            ResidualBlock::Basic => 64,
            ResidualBlock::Bottleneck => {
                let inner = sd.shape("layer1.0.conv1.weight")?[0];
                inner * 64 / stem_width.max(1)
            }
        };
        let cfg = Self {
            block,
            layers,
            stem_width,
            base_width,
            maxpool: true,
        };
        cfg.validate().map_err(|e| bad(e.to_string()))?;
        Ok(cfg)
    }
}

/// Kaiming normal, fan out, ReLU gain: the official init of every convolution.
fn kaiming_fan_out(spec: &ConvSpec) -> Init {
    Init::Normal((2.0 / spec.fan_out() as f64).sqrt())
}

fn conv(spec: ConvSpec, vb: &Params, device: &Device) -> Result<Conv2d> {
    conv2d(spec, kaiming_fan_out(&spec), vb, device)
}

fn bn(c: usize, vb: &Params, device: &Device) -> Result<BatchNorm> {
    BatchNorm::new(c, BN_MOMENTUM, false, vb, device)
}

/// One residual block (`BasicBlock` or `Bottleneck`): convolutions, each followed by a
/// BatchNorm, ReLU between, the shortcut added before the last ReLU.
#[derive(Module, Debug)]
pub struct ResBlock {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    /// Bottleneck only.
    pub conv3: Option<Conv2d>,
    pub bn3: Option<BatchNorm>,
    /// `downsample.0` (1x1 conv) and `downsample.1` (BatchNorm) when the shape changes.
    pub downsample: Option<(Conv2d, BatchNorm)>,
}

impl ResBlock {
    fn new(
        cfg: &ResNetConfig,
        stage: usize,
        in_ch: usize,
        stride: usize,
        vb: &Params,
        device: &Device,
    ) -> Result<Self> {
        let planes = cfg.planes(stage);
        let out = planes * cfg.block.expansion();
        let width = cfg.inner_width(stage);
        let k3 = |i, o| ConvSpec::new(i, o, 3).padding(1).no_bias();
        let k1 = |i, o| ConvSpec::new(i, o, 1).padding(0).no_bias();
        let downsample = if stride != 1 || in_ch != out {
            Some((
                conv(
                    k1(in_ch, out).stride(stride),
                    &vb.pp("downsample.0"),
                    device,
                )?,
                bn(out, &vb.pp("downsample.1"), device)?,
            ))
        } else {
            None
        };
        Ok(match cfg.block {
            ResidualBlock::Basic => Self {
                conv1: conv(k3(in_ch, planes).stride(stride), &vb.pp("conv1"), device)?,
                bn1: bn(planes, &vb.pp("bn1"), device)?,
                conv2: conv(k3(planes, planes), &vb.pp("conv2"), device)?,
                bn2: bn(planes, &vb.pp("bn2"), device)?,
                conv3: None,
                bn3: None,
                downsample,
            },
            ResidualBlock::Bottleneck => Self {
                conv1: conv(k1(in_ch, width), &vb.pp("conv1"), device)?,
                bn1: bn(width, &vb.pp("bn1"), device)?,
                conv2: conv(k3(width, width).stride(stride), &vb.pp("conv2"), device)?,
                bn2: bn(width, &vb.pp("bn2"), device)?,
                conv3: Some(conv(k1(width, out), &vb.pp("conv3"), device)?),
                bn3: Some(bn(out, &vb.pp("bn3"), device)?),
                downsample,
            },
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = relu(self.bn1.forward(conv_forward(&self.conv1, x.clone())));
        let mut out = self.bn2.forward(conv_forward(&self.conv2, out));
        if let (Some(c3), Some(b3)) = (&self.conv3, &self.bn3) {
            out = b3.forward(conv_forward(c3, relu(out)));
        }
        let identity = match &self.downsample {
            Some((c, b)) => b.forward(conv_forward(c, x)),
            None => x,
        };
        relu(out + identity)
    }

    fn batch_norms(&self) -> Vec<&BatchNorm> {
        let mut v = vec![&self.bn1, &self.bn2];
        v.extend(&self.bn3);
        v.extend(self.downsample.as_ref().map(|(_, b)| b));
        v
    }

    fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm> {
        let mut v = vec![&mut self.bn1, &mut self.bn2];
        v.extend(&mut self.bn3);
        v.extend(self.downsample.as_mut().map(|(_, b)| b));
        v
    }
}

/// The backbone: `[B, 3, H, W]` images (any size of at least 32) to `[B, features]`.
#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: Option<MaxPool2d>,
    pub layer1: Vec<ResBlock>,
    pub layer2: Vec<ResBlock>,
    pub layer3: Vec<ResBlock>,
    pub layer4: Vec<ResBlock>,
}

impl ResNet {
    /// The network of `cfg` with parameters from `vb` (the official init, or loaded).
    pub fn new(cfg: &ResNetConfig, vb: &Params, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let stem = ConvSpec::new(3, cfg.stem_width, 7)
            .stride(2)
            .padding(3)
            .no_bias();
        let conv1 = conv(stem, &vb.pp("conv1"), device)?;
        let bn1 = bn(cfg.stem_width, &vb.pp("bn1"), device)?;
        let mut in_ch = cfg.stem_width;
        let mut stages = Vec::new();
        for s in 0..4 {
            let mut blocks = Vec::new();
            for b in 0..cfg.layers[s] {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let vb = vb.pp(format!("layer{}.{b}", s + 1));
                blocks.push(ResBlock::new(cfg, s, in_ch, stride, &vb, device)?);
                in_ch = cfg.planes(s) * cfg.block.expansion();
            }
            stages.push(blocks);
        }
        let [layer1, layer2, layer3, layer4]: [Vec<ResBlock>; 4] =
            stages.try_into().expect("four stages");
        let maxpool = cfg.maxpool.then(|| {
            MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init()
        });
        Ok(Self {
            conv1,
            bn1,
            maxpool,
            layer1,
            layer2,
            layer3,
            layer4,
        })
    }

    /// From a state dict with the official keys, every tensor used.
    pub fn from_state_dict(cfg: &ResNetConfig, sd: StateDict, device: &Device) -> Result<Self> {
        let source = super::params::ParamSource::load(sd);
        let net = Self::new(cfg, &source.root(), device)?;
        source.finish()?;
        Ok(net)
    }

    /// Width of the pooled features.
    pub fn features(&self) -> usize {
        let last = self.layer4.last().expect("a stage has a block");
        match (&last.conv3, &last.bn3) {
            (Some(c), _) => c.weight.dims()[0],
            _ => last.conv2.weight.dims()[0],
        }
    }

    fn blocks(&self) -> impl Iterator<Item = &ResBlock> {
        self.layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
    }

    /// `_forward_backbone` without `fc`: the average-pooled last stage `[B, features]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = relu(self.bn1.forward(conv_forward(&self.conv1, x)));
        if let Some(p) = &self.maxpool {
            x = p.forward(x);
        }
        for block in self.blocks() {
            x = block.forward(x);
        }
        let [b, c, _, _] = x.dims();
        adaptive_avg_pool2d(x, [1, 1]).reshape([b, c])
    }

    /// Every BatchNorm, to change how it normalises.
    pub fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm> {
        let mut out = vec![&mut self.bn1];
        for b in self
            .layer1
            .iter_mut()
            .chain(&mut self.layer2)
            .chain(&mut self.layer3)
            .chain(&mut self.layer4)
        {
            out.extend(b.batch_norms_mut());
        }
        out
    }

    /// Every BatchNorm, for synchronising running statistics before they are read.
    pub fn batch_norms(&self) -> Vec<&BatchNorm> {
        let mut out = vec![&self.bn1];
        for b in self.blocks() {
            out.extend(b.batch_norms());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::params::ParamSource;
    use crate::weights::RawTensor;

    #[test]
    fn resnet50_has_the_official_size_and_features() {
        let cfg = ResNetConfig::named("resnet50").unwrap();
        assert_eq!(cfg.features(), 2048);
        assert_eq!(ResNetConfig::named("resnet50w2").unwrap().features(), 4096);
        assert_eq!(ResNetConfig::named("resnet18").unwrap().features(), 512);
        assert!(ResNetConfig::named("resnet49").is_err());
    }

    fn skeleton(cfg: &ResNetConfig) -> StateDict {
        let mut rng = crate::rng::seeded(0);
        let source = ParamSource::init(&mut rng);
        let net = ResNet::new(cfg, &source.root(), &Device::flex()).unwrap();
        crate::model::params::module_state_dict(&net).unwrap()
    }

    #[test]
    fn the_shape_is_read_back_from_the_tensors() {
        for cfg in [
            ResNetConfig::named("resnet18").unwrap(),
            ResNetConfig {
                block: ResidualBlock::Bottleneck,
                layers: [1, 2, 1, 1],
                stem_width: 16,
                base_width: 16,
                maxpool: true,
            },
        ] {
            let sd = skeleton(&cfg);
            assert!(sd.contains("layer1.0.bn1.running_var"), "official keys");
            assert_eq!(ResNetConfig::detect(&sd).unwrap().unwrap(), cfg);
        }
    }

    #[test]
    fn a_vit_or_a_broken_stem_is_not_taken_for_a_resnet() {
        let mut sd = StateDict::new();
        sd.insert("cls_token", RawTensor::shape_only(vec![1, 1, 8]));
        assert!(ResNetConfig::detect(&sd).is_none());
        sd.insert("conv1.weight", RawTensor::shape_only(vec![64, 1, 7, 7]));
        sd.insert(
            "layer1.0.conv1.weight",
            RawTensor::shape_only(vec![64, 64, 3, 3]),
        );
        assert!(ResNetConfig::detect(&sd).unwrap().is_err());
    }

    #[test]
    fn features_have_the_width_of_the_last_stage_at_any_size() {
        let cfg = ResNetConfig {
            block: ResidualBlock::Bottleneck,
            layers: [1, 1, 1, 1],
            stem_width: 8,
            base_width: 64,
            maxpool: true,
        };
        let mut rng = crate::rng::seeded(1);
        let source = ParamSource::init(&mut rng);
        let dev = Device::flex();
        let net = ResNet::new(&cfg, &source.root(), &dev).unwrap();
        for (h, w) in [(32, 32), (45, 70)] {
            let x = Tensor::<4>::ones([2, 3, h, w], &dev);
            assert_eq!(net.forward(x).dims(), [2, cfg.features()]);
        }
    }
}
