//! `F.normalize(x, dim=-1, p=2)` of PyTorch on the rows of a matrix: `x / max(||x||, 1e-12)`.
//! The DINO head normalises before its last layer; PAWS's soft nearest neighbours compare
//! normalised embeddings.

use burn::tensor::Tensor;

/// Each row scaled to unit L2 norm (rows of norm below 1e-12 divided by 1e-12).
pub fn l2_normalize_rows(x: Tensor<2>) -> Tensor<2> {
    let norm = x
        .clone()
        .powf_scalar(2.0)
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-12);
    x / norm
}
