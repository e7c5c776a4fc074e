//! Pre-norm transformer block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Device, Tensor};

use super::params::{Init, LinearParams, NormParams, Params};
use super::{AttentionKernel, DropPath, Precision, SelfAttention};
use crate::{Result, VitConfig};

/// One block's tensors in the official layout (`blocks.{i}.*`).
#[derive(Clone, Debug)]
pub struct BlockParams {
    pub norm1: NormParams,
    pub qkv: LinearParams,
    pub proj: LinearParams,
    pub norm2: NormParams,
    pub fc1: LinearParams,
    pub fc2: LinearParams,
}

impl BlockParams {
    pub fn new(config: &VitConfig, vb: &Params) -> Result<Self> {
        let (d, hid) = (config.dim, config.mlp_hidden);
        let w = Init::Normal(0.02);
        Ok(Self {
            norm1: NormParams::new(d, &vb.pp("norm1"))?,
            qkv: LinearParams::new(d, 3 * d, w, &vb.pp("attn.qkv"))?,
            proj: LinearParams::new(d, d, w, &vb.pp("attn.proj"))?,
            norm2: NormParams::new(d, &vb.pp("norm2"))?,
            fc1: LinearParams::new(d, hid, w, &vb.pp("mlp.fc1"))?,
            fc2: LinearParams::new(hid, d, w, &vb.pp("mlp.fc2"))?,
        })
    }
}

/// `Mlp` of the official code: fc1, exact GELU, fc2.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    /// Precision of the two products (GELU in f32 between them).
    #[module(skip)]
    pub precision: Precision,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let p = self.precision;
        let hidden = super::gelu(p.widen(p.linear(&self.fc1, x)));
        p.widen(p.linear(&self.fc2, hidden))
    }
}

/// `Block` of the official code.
#[derive(Module, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: SelfAttention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    pub drop_path: DropPath,
    /// The LayerNorms' epsilon (Burn keeps its own private).
    #[module(skip)]
    pub norm_eps: f64,
}

impl Block {
    /// The Burn block of `p` with stochastic depth `drop_path`.
    pub fn from_params(
        p: BlockParams,
        config: &VitConfig,
        drop_path: f64,
        device: &Device,
    ) -> Self {
        let eps = config.layer_norm_eps;
        Self {
            norm1: p.norm1.into_burn(eps, device),
            attn: SelfAttention {
                qkv: p.qkv.into_burn(device),
                proj: p.proj.into_burn(device),
                heads: config.heads,
                precision: Precision::F32,
                kernel: AttentionKernel::Composed,
            },
            norm2: p.norm2.into_burn(eps, device),
            mlp: Mlp {
                fc1: p.fc1.into_burn(device),
                fc2: p.fc2.into_burn(device),
                precision: Precision::F32,
            },
            drop_path: DropPath { rate: drop_path },
            norm_eps: eps,
        }
    }

    /// The precision of the block's products.
    pub fn set_precision(&mut self, precision: Precision) {
        self.attn.precision = precision;
        self.mlp.precision = precision;
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let y = self.attn.forward(self.norm1(x.clone()));
        self.finish(x, y)
    }

    /// Forward pass that also returns this block's attention probabilities `[B, H, N, N]`.
    pub fn forward_with_attention(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<4>) {
        let (y, probs) = self.attn.forward_with_weights(self.norm1(x.clone()));
        (self.finish(x, y), probs)
    }

    /// CLS-row attention probabilities `[B, H, N]` of this block for input `x`.
    pub fn cls_attention(&self, x: Tensor<3>) -> Tensor<3> {
        self.attn.cls_weights(self.norm1(x))
    }

    fn norm1(&self, x: Tensor<3>) -> Tensor<3> {
        super::layer_norm(&self.norm1, self.norm_eps, x)
    }

    fn finish(&self, x: Tensor<3>, y: Tensor<3>) -> Tensor<3> {
        let x = x + self.drop_path.forward(y);
        let m = self
            .mlp
            .forward(super::layer_norm(&self.norm2, self.norm_eps, x.clone()));
        x + self.drop_path.forward(m)
    }
}
