//! Pre-norm transformer block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
use burn::tensor::activation::gelu;

use super::{DropPath, SelfAttention};

/// `Mlp` of the official code: fc1, exact GELU, fc2.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.fc2.forward(gelu(self.fc1.forward(x)))
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
}

impl Block {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let y = self.attn.forward(self.norm1.forward(x.clone()));
        self.finish(x, y)
    }

    /// Forward pass that also returns this block's attention probabilities `[B, H, N, N]`.
    pub fn forward_with_attention(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<4>) {
        let (y, probs) = self
            .attn
            .forward_with_weights(self.norm1.forward(x.clone()));
        (self.finish(x, y), probs)
    }

    /// CLS-row attention probabilities `[B, H, N]` of this block for input `x`.
    pub fn cls_attention(&self, x: Tensor<3>) -> Tensor<3> {
        self.attn.cls_weights(self.norm1.forward(x))
    }

    fn finish(&self, x: Tensor<3>, y: Tensor<3>) -> Tensor<3> {
        let x = x + self.drop_path.forward(y);
        let m = self.mlp.forward(self.norm2.forward(x.clone()));
        x + self.drop_path.forward(m)
    }
}
