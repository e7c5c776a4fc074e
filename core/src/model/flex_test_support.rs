//! What the burn-flex custom operations' tests share: deterministic test values, reading a
//! tensor back and comparing two readings.

use burn::tensor::Tensor;

/// The f32 values of `t`.
pub fn vec_of<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// The largest absolute difference between `a` and `b` (of one length).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max)
}

/// `n` deterministic values in `[-0.55 + offset, 0.55 + offset]`, a different sequence per
/// `seed` (no random generator: the tests' inputs are the same on every machine).
pub fn values(n: usize, seed: usize, offset: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 37 + seed * 11) % 23) as f32 - 11.0) * 0.05 + offset)
        .collect()
}
