//! Patch embedding: a Conv2d with kernel = stride = patch, flattened to tokens.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::ops::ConvOptions;

use super::Precision;

/// `PatchEmbed` of the official code (`proj` is the convolution).
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Conv2d,
    /// Precision of the convolution (its result is widened to f32).
    #[module(skip)]
    pub precision: Precision,
}

impl PatchEmbed {
    /// `[B, 3, H, W]` -> `[B, (H/p)*(W/p), D]`, row-major over the patch grid.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        let p = self.precision;
        let y = match p.half() {
            None => self.proj.forward(x),
            // kernel = stride, no padding: the patches do not overlap
            Some(_) => p.widen(burn::tensor::module::conv2d(
                p.narrow(x),
                p.narrow(self.proj.weight.val()),
                self.proj.bias.as_ref().map(|b| p.narrow(b.val())),
                ConvOptions::new(
                    self.proj.stride,
                    [0, 0],
                    self.proj.dilation,
                    self.proj.groups,
                ),
            )),
        };
        let [b, d, gh, gw] = y.dims();
        y.reshape([b, d, gh * gw]).swap_dims(1, 2)
    }
}
