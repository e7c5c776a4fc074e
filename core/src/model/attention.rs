//! Multi-head self-attention with the fused `qkv` projection of timm / the official code.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::{AttentionKernel, Precision};

/// `Attention` of `vision_transformer.py`: `qkv` Linear(D, 3D) with bias, `proj` Linear(D, D).
#[derive(Module, Debug)]
pub struct SelfAttention {
    pub qkv: Linear,
    pub proj: Linear,
    pub heads: usize,
    /// Precision of the products ([`Precision`]): in half, q, k, v and the output of the
    /// probabilities' product stay half, the scores are widened for the softmax.
    #[module(skip)]
    pub precision: Precision,
    /// Which kernels compute `softmax(q k^T / sqrt(hd)) v` ([`AttentionKernel`]).
    #[module(skip)]
    pub kernel: AttentionKernel,
}

impl SelfAttention {
    /// Splits `[B, N, D]` into q, k, v of `[B, H, N, D/H]` each (in the products' precision).
    fn split_heads(&self, x: Tensor<3>) -> [Tensor<4>; 3] {
        self.heads_of(self.precision.linear(&self.qkv, x))
    }

    /// q, k, v of `[B, H, N, D/H]` each from the fused projection `[B, N, 3D]`.
    fn heads_of(&self, qkv: Tensor<3>) -> [Tensor<4>; 3] {
        heads_of(qkv, self.heads)
    }

    /// `[B, H, N, D/H]` to the projected `[B, N, D]`, in f32.
    fn merge_heads(&self, x: Tensor<4>) -> Tensor<3> {
        let [b, h, n, hd] = x.dims();
        self.project(x.swap_dims(1, 2).reshape([b, n, h * hd]))
    }

    /// The heads side by side `[B, N, D]` through `proj`, in f32.
    fn project(&self, x: Tensor<3>) -> Tensor<3> {
        let p = self.precision;
        p.widen(p.linear(&self.proj, x))
    }

    /// Attention output through the backend's fused attention (no weights materialised
    /// where the backend avoids it), or, in f32 on burn-flex, one custom operation from the
    /// projection to the merged heads ([`super::flex_attention`]); in half precision the
    /// official decomposed form with half products and an f32 softmax (Burn's fused attention
    /// has no backward pass anyway: it decomposes under autodiff). With
    /// [`AttentionKernel::Fused`] on a CubeCL device, dino-rs's fused kernels with their
    /// backward pass ([`super::cube_attention`]), in any precision.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let qkv = self.precision.linear(&self.qkv, x);
        #[cfg(feature = "cube")]
        if self.kernel == AttentionKernel::Fused
            && let Some(out) = super::cube_attention::attention(&qkv, self.heads)
        {
            return self.project(out);
        }
        #[cfg(feature = "flex")]
        if self.precision.half().is_none()
            && let Some(out) = super::flex_attention::attention(&qkv, self.heads)
        {
            return super::linear(&self.proj, out);
        }
        let [q, k, v] = self.heads_of(qkv);
        let out = match self.precision.half() {
            None => attention(q, k, v, None, None, AttentionModuleOptions::default()),
            Some(_) => {
                let p = self.precision;
                let scale = (q.dims()[3] as f64).powf(-0.5);
                let scores = p.widen(p.matmul(q, k.swap_dims(2, 3))) * scale;
                p.matmul(softmax(scores, 3), v)
            }
        };
        self.merge_heads(out)
    }

    /// Attention output and the softmax probabilities `[B, H, N, N]`, as the official
    /// `Attention.forward` returns them.
    pub fn forward_with_weights(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<4>) {
        let [q, k, v] = self.split_heads(x);
        let p = self.precision;
        let scale = (q.dims()[3] as f64).powf(-0.5);
        let probs = softmax(p.widen(p.matmul(q, k.swap_dims(2, 3))) * scale, 3);
        let out = p.matmul(probs.clone(), v);
        (self.merge_heads(out), probs)
    }

    /// Only the CLS row of the probabilities, `[B, H, N]` (CLS to every token, itself
    /// included): what attention maps need, at O(N) memory instead of O(N^2).
    pub fn cls_weights(&self, x: Tensor<3>) -> Tensor<3> {
        let [q, k, _] = self.split_heads(x);
        let [b, h, _, hd] = q.dims();
        let p = self.precision;
        let q_cls = q.narrow(2, 0, 1);
        let scores = p.widen(p.matmul(q_cls, k.swap_dims(2, 3))) * (hd as f64).powf(-0.5);
        let n = scores.dims()[3];
        softmax(scores, 3).reshape([b, h, n])
    }
}

/// q, k, v of `[B, H, N, D/H]` each from the fused projection `[B, N, 3D]` of `heads` heads.
fn heads_of(qkv: Tensor<3>, heads: usize) -> [Tensor<4>; 3] {
    let [b, n, d3] = qkv.dims();
    let qkv = qkv
        .reshape([b, n, 3, heads, d3 / 3 / heads])
        .permute([2, 0, 3, 1, 4]);
    [0, 1, 2].map(|i| qkv.clone().narrow(0, i, 1).squeeze_dim::<4>(0))
}

/// Burn's composed attention core in f32, from `qkv` `[B, N, 3D]` to the heads side by side
/// `[B, N, D]` (split, scores, softmax, second product, merge): the reference the fused
/// attention operations (burn-flex's, the GPU kernels) are checked against.
pub fn composed_attention(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    let [q, k, v] = heads_of(qkv, heads);
    let [b, h, n, hd] = q.dims();
    let p = softmax(q.matmul(k.swap_dims(2, 3)) * (hd as f64).powf(-0.5), 3);
    p.matmul(v).swap_dims(1, 2).reshape([b, n, h * hd])
}
