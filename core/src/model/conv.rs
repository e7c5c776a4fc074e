//! A 2-D convolution from a parameter source: `weight` `[out, in, k, k]` (PyTorch's layout,
//! which Burn shares) and an optional `bias`, drawn with PyTorch's default (uniform
//! ±1/sqrt(fan_in)) unless a network says otherwise, or loaded.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor};

use super::params::{Init, Params};
use crate::Result;

/// The shape of a square convolution.
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub in_ch: usize,
    pub out_ch: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
}

impl ConvSpec {
    /// `k x k`, stride 1, padding k / 2 ("same" for odd k), with a bias.
    pub fn new(in_ch: usize, out_ch: usize, kernel: usize) -> Self {
        Self {
            in_ch,
            out_ch,
            kernel,
            stride: 1,
            padding: kernel / 2,
            bias: true,
        }
    }
    pub fn stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }
    pub fn padding(self, padding: usize) -> Self {
        Self { padding, ..self }
    }
    pub fn no_bias(self) -> Self {
        Self {
            bias: false,
            ..self
        }
    }
    pub fn fan_in(&self) -> usize {
        self.in_ch * self.kernel * self.kernel
    }
    pub fn fan_out(&self) -> usize {
        self.out_ch * self.kernel * self.kernel
    }
    /// PyTorch's default init (kaiming_uniform with a = sqrt(5)): U(±1/sqrt(fan_in)).
    pub fn default_init(&self) -> Init {
        Init::Uniform(1.0 / (self.fan_in() as f64).sqrt())
    }
}

/// The convolution `spec` under `vb`, its weight drawn with `init` (bias: PyTorch's default).
pub fn conv2d(spec: ConvSpec, init: Init, vb: &Params, device: &Device) -> Result<Conv2d> {
    let k = spec.kernel;
    let weight = vb.get("weight", &[spec.out_ch, spec.in_ch, k, k], init)?;
    let bias = if spec.bias {
        Some(vb.get("bias", &[spec.out_ch], spec.default_init())?)
    } else {
        None
    };
    let mut conv = Conv2dConfig::new([spec.in_ch, spec.out_ch], [k, k])
        .with_stride([spec.stride, spec.stride])
        .with_padding(PaddingConfig2d::Explicit(
            spec.padding,
            spec.padding,
            spec.padding,
            spec.padding,
        ))
        .with_bias(spec.bias)
        .init(device);
    conv.weight = weight.into_param(device);
    conv.bias = bias.map(|b| b.into_param(device));
    Ok(conv)
}

/// `layer`'s convolution of `x`, as `Conv2d::forward` computes it: on burn-flex through the
/// CPU kernels of [`crate::cpu::conv`] (feature `flex`, see [`super::flex_conv`]), Burn's own
/// convolution elsewhere.
pub fn conv_forward(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    {
        super::flex_conv::conv2d_layer(layer, x)
    }
    #[cfg(not(feature = "flex"))]
    {
        layer.forward(x)
    }
}
