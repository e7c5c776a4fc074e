//! Patch embedding: a Conv2d with kernel = stride = patch, flattened to tokens.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

/// `PatchEmbed` of the official code (`proj` is the convolution).
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Conv2d,
}

impl PatchEmbed {
    /// `[B, 3, H, W]` -> `[B, (H/p)*(W/p), D]`, row-major over the patch grid.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        let y = self.proj.forward(x);
        let [b, d, gh, gw] = y.dims();
        y.reshape([b, d, gh * gw]).swap_dims(1, 2)
    }
}
