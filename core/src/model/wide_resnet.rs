//! The Wide ResNet of PAWS's CIFAR-10 recipe (suncet's `src/wide_resnet.py`, WRN-28-2 by
//! default): pre-activation blocks (BN, ReLU, conv), convolutions with biases, a final
//! BatchNorm with PyTorch momentum 0.99 (sic, as the official code), ReLU and global average
//! pooling. Field names are the official keys, so official checkpoints load as they are.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::relu;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::conv::{ConvSpec, conv_forward, conv2d};
use super::params::Params;
use super::{BN_MOMENTUM, BatchNorm};
use crate::{Error, Result};

/// Depth (6n + 4) and width of a Wide ResNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WideResNetConfig {
    pub depth: usize,
    pub widen: usize,
}

impl WideResNetConfig {
    /// WRN-28-2, PAWS's CIFAR-10 backbone (1.47 M parameters, 128 features).
    pub fn wrn28_2() -> Self {
        Self {
            depth: 28,
            widen: 2,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.depth < 10 || !(self.depth - 4).is_multiple_of(6) || self.widen == 0 {
            return Err(Error::Config(format!(
                "a Wide ResNet has depth 6n + 4 (10, 16, 22, 28, ...) and width >= 1; got \
                 depth {} width {}",
                self.depth, self.widen
            )));
        }
        Ok(())
    }

    /// Blocks per stage.
    pub fn blocks(&self) -> usize {
        (self.depth - 4) / 6
    }

    /// Channels of the stem and of the three stages.
    pub fn stages(&self) -> [usize; 4] {
        let k = self.widen;
        [16, 16 * k, 32 * k, 64 * k]
    }

    /// Width of the pooled features (64 x width).
    pub fn features(&self) -> usize {
        self.stages()[3]
    }
}

/// `WideBasicBlock`: `conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut(x)`.
#[derive(Module, Debug)]
pub struct WideBlock {
    pub bn1: BatchNorm,
    pub conv1: Conv2d,
    pub bn2: BatchNorm,
    pub conv2: Conv2d,
    /// A 1x1 convolution when the shape changes (official `shortcut.0`), else the identity.
    pub shortcut: Option<Vec<Conv2d>>,
}

impl WideBlock {
    fn new(
        in_ch: usize,
        out_ch: usize,
        stride: usize,
        vb: &Params,
        device: &Device,
    ) -> Result<Self> {
        let c1 = ConvSpec::new(in_ch, out_ch, 3);
        let c2 = ConvSpec::new(out_ch, out_ch, 3).stride(stride);
        let shortcut = if stride != 1 || in_ch != out_ch {
            let s = ConvSpec::new(in_ch, out_ch, 1).stride(stride);
            Some(vec![conv2d(
                s,
                s.default_init(),
                &vb.pp("shortcut.0"),
                device,
            )?])
        } else {
            None
        };
        Ok(Self {
            bn1: BatchNorm::new(in_ch, BN_MOMENTUM, false, &vb.pp("bn1"), device)?,
            conv1: conv2d(c1, c1.default_init(), &vb.pp("conv1"), device)?,
            bn2: BatchNorm::new(out_ch, BN_MOMENTUM, false, &vb.pp("bn2"), device)?,
            conv2: conv2d(c2, c2.default_init(), &vb.pp("conv2"), device)?,
            shortcut,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = conv_forward(&self.conv1, relu(self.bn1.forward(x.clone())));
        let out = conv_forward(&self.conv2, relu(self.bn2.forward(out)));
        let skip = match &self.shortcut {
            Some(s) => conv_forward(&s[0], x),
            None => x,
        };
        out + skip
    }
}

/// The backbone without its heads: `[B, 3, H, W]` images to `[B, 64 x width]` features.
#[derive(Module, Debug)]
pub struct WideResNet {
    pub conv1: Conv2d,
    pub layer1: Vec<WideBlock>,
    pub layer2: Vec<WideBlock>,
    pub layer3: Vec<WideBlock>,
    pub bn1: BatchNorm,
}

impl WideResNet {
    /// The network of `cfg` with parameters from `vb` (PyTorch's default init, as the
    /// official code keeps it, or loaded).
    pub fn new(cfg: &WideResNetConfig, vb: &Params, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let st = cfg.stages();
        let stem = ConvSpec::new(3, st[0], 3);
        let mut in_ch = st[0];
        let mut layers = Vec::new();
        for (s, stride) in [(1usize, 1usize), (2, 2), (3, 2)] {
            let mut blocks = Vec::new();
            for b in 0..cfg.blocks() {
                let vb = vb.pp(format!("layer{s}.{b}"));
                let stride = if b == 0 { stride } else { 1 };
                blocks.push(WideBlock::new(in_ch, st[s], stride, &vb, device)?);
                in_ch = st[s];
            }
            layers.push(blocks);
        }
        let [layer1, layer2, layer3]: [Vec<WideBlock>; 3] =
            layers.try_into().expect("three stages");
        Ok(Self {
            conv1: conv2d(stem, stem.default_init(), &vb.pp("conv1"), device)?,
            layer1,
            layer2,
            layer3,
            // PyTorch momentum 0.99: the running statistics follow the last batch closely
            bn1: BatchNorm::new(st[3], 0.99, false, &vb.pp("bn1"), device)?,
        })
    }

    /// `_forward_backbone` without the projection head: pooled features `[B, 64 x width]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = conv_forward(&self.conv1, x);
        for block in self.layer1.iter().chain(&self.layer2).chain(&self.layer3) {
            x = block.forward(x);
        }
        let x = relu(self.bn1.forward(x));
        let [b, c, _, _] = x.dims();
        adaptive_avg_pool2d(x, [1, 1]).reshape([b, c])
    }

    /// Every BatchNorm, to change how it normalises.
    pub fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm> {
        let mut out = Vec::new();
        for b in self
            .layer1
            .iter_mut()
            .chain(&mut self.layer2)
            .chain(&mut self.layer3)
        {
            out.push(&mut b.bn1);
            out.push(&mut b.bn2);
        }
        out.push(&mut self.bn1);
        out
    }

    /// Every BatchNorm, for synchronising running statistics before they are read.
    pub fn batch_norms(&self) -> Vec<&BatchNorm> {
        let mut out = Vec::new();
        for b in self.layer1.iter().chain(&self.layer2).chain(&self.layer3) {
            out.push(&b.bn1);
            out.push(&b.bn2);
        }
        out.push(&self.bn1);
        out
    }
}
