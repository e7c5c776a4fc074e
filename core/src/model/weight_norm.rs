//! The DINO head's last layer: `x @ w^T` with `w = g * v / ||v||` (PyTorch's `weight_norm`
//! over each output row, `g` fixed to one under `norm_last_layer`). The head holds `v`
//! (`[out_dim, bottleneck]`: 65,536 x 256 in the official recipe, 16.8 M values) and
//! recomputes `w` at every forward pass, as the official hook does.
//!
//! Written with Burn's operations, `w` is materialised and its backward pass walks the 16.8 M
//! values half a dozen times with a fresh buffer each time (the division's two gradients,
//! the square's, the broadcast sums): 15% of a ViT-S/16 training step on the CPU, most of it
//! the kernel zeroing fresh pages, and once per part of the batch. On burn-flex
//! [`super::flex_weight_norm`] computes the same thing as one operation.

use burn::tensor::Tensor;

/// `x @ (g * v / ||v||)^T`: `x` `[n, k]`, `v` `[o, k]`, `g` `[o, 1]` (`None`: ones).
pub fn weight_normed_linear(x: Tensor<2>, v: Tensor<2>, g: Option<Tensor<2>>) -> Tensor<2> {
    #[cfg(feature = "flex")]
    if let Some(y) = super::flex_weight_norm::weight_normed_linear(&x, &v, g.as_ref()) {
        return y;
    }
    composed(x, v, g)
}

/// The same with Burn's operations (any backend and dtype).
pub fn composed(x: Tensor<2>, v: Tensor<2>, g: Option<Tensor<2>>) -> Tensor<2> {
    super::linear_with(x, weight(v, g).transpose(), None)
}

/// `g * v / ||v||` (each row of `v` by its L2 norm), for the half-precision path.
pub fn weight(v: Tensor<2>, g: Option<Tensor<2>>) -> Tensor<2> {
    let norm = v.clone().powf_scalar(2.0).sum_dim(1).sqrt();
    let w = v / norm;
    match g {
        Some(g) => w * g,
        None => w,
    }
}
