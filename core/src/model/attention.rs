//! Multi-head self-attention with the fused `qkv` projection of timm / the official code.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

/// `Attention` of `vision_transformer.py`: `qkv` Linear(D, 3D) with bias, `proj` Linear(D, D).
#[derive(Module, Debug)]
pub struct SelfAttention {
    pub qkv: Linear,
    pub proj: Linear,
    pub heads: usize,
}

impl SelfAttention {
    /// Splits `[B, N, D]` into q, k, v of `[B, H, N, D/H]` each.
    fn split_heads(&self, x: Tensor<3>) -> [Tensor<4>; 3] {
        let [b, n, d] = x.dims();
        let h = self.heads;
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, n, 3, h, d / h])
            .permute([2, 0, 3, 1, 4]);
        let [q, k, v] = [0, 1, 2].map(|i| qkv.clone().narrow(0, i, 1).squeeze_dim::<4>(0));
        [q, k, v]
    }

    fn merge_heads(&self, x: Tensor<4>) -> Tensor<3> {
        let [b, h, n, hd] = x.dims();
        self.proj.forward(x.swap_dims(1, 2).reshape([b, n, h * hd]))
    }

    /// Attention output through the backend's fused attention (no weights materialised
    /// where the backend avoids it).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [q, k, v] = self.split_heads(x);
        let out = attention(q, k, v, None, None, AttentionModuleOptions::default());
        self.merge_heads(out)
    }

    /// Attention output and the softmax probabilities `[B, H, N, N]`, as the official
    /// `Attention.forward` returns them.
    pub fn forward_with_weights(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<4>) {
        let [q, k, v] = self.split_heads(x);
        let scale = (q.dims()[3] as f64).powf(-0.5);
        let probs = softmax(q.matmul(k.swap_dims(2, 3)) * scale, 3);
        let out = probs.clone().matmul(v);
        (self.merge_heads(out), probs)
    }

    /// Only the CLS row of the probabilities, `[B, H, N]` (CLS to every token, itself
    /// included): what attention maps need, at O(N) memory instead of O(N^2).
    pub fn cls_weights(&self, x: Tensor<3>) -> Tensor<3> {
        let [q, k, _] = self.split_heads(x);
        let [b, h, _, hd] = q.dims();
        let q_cls = q.narrow(2, 0, 1);
        let scores = q_cls.matmul(k.swap_dims(2, 3)) * (hd as f64).powf(-0.5);
        let n = scores.dims()[3];
        softmax(scores, 3).reshape([b, h, n])
    }
}
