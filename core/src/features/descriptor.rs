//! Global descriptors of `eval_copy_detection.py` and `eval_image_retrieval.py`.

/// GeM pooling (`avg_pool2d(x.clamp(min=1e-6).pow(p)).pow(1/p)`) of `[T, D]` patch tokens.
pub fn gem(tokens: &[f32], dim: usize, p: f32) -> Vec<f32> {
    let t = tokens.len() / dim.max(1);
    let mut acc = vec![0f64; dim];
    for row in tokens.chunks_exact(dim) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += (v.max(1e-6) as f64).powf(p as f64);
        }
    }
    acc.iter()
        .map(|a| ((a / t.max(1) as f64).powf(1.0 / p as f64)) as f32)
        .collect()
}

/// The copy-detection descriptor: the normed CLS token followed by the GeM (p = 4) pool of
/// the normed patch tokens, `2 * D` wide. `cls` is `[B, D]`, `patches` `[B, T, D]`.
pub fn copy_detection(cls: &[f32], patches: &[f32], dim: usize) -> Vec<f32> {
    let b = cls.len() / dim;
    let t = patches.len() / (b.max(1) * dim);
    let mut out = Vec::with_capacity(b * 2 * dim);
    for i in 0..b {
        out.extend_from_slice(&cls[i * dim..(i + 1) * dim]);
        out.extend(gem(&patches[i * t * dim..(i + 1) * t * dim], dim, 4.0));
    }
    out
}

/// Adds `rows` into `acc` (for multi-scale averaging; divide and normalise after).
pub fn accumulate(acc: &mut [f32], rows: &[f32]) {
    acc.iter_mut().zip(rows).for_each(|(a, &r)| *a += r);
}

/// The scales of `utils.multi_scale`: 1, 1/sqrt(2), 1/2.
pub const MULTI_SCALES: [f32; 3] = [1.0, std::f32::consts::FRAC_1_SQRT_2, 0.5];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gem_is_a_power_mean_of_clamped_values() {
        // two tokens, two dims: dim 0 = (1, 3) -> ((1 + 81) / 2)^(1/4); dim 1 clamps negatives
        let g = gem(&[1.0, -5.0, 3.0, 2.0], 2, 4.0);
        assert!((g[0] - 41f32.powf(0.25)).abs() < 1e-5);
        assert!((g[1] - (8.0f32 + 1e-24).powf(0.25)).abs() < 1e-5);
        // p = 1 is the mean of positive values
        assert_eq!(gem(&[1.0, 3.0], 1, 1.0), vec![2.0]);
    }

    #[test]
    fn descriptor_concatenates_cls_and_pool() {
        let d = copy_detection(&[9.0, 8.0], &[1.0, 1.0, 1.0, 1.0], 2);
        assert_eq!(d.len(), 4);
        assert_eq!(&d[..2], &[9.0, 8.0]);
        assert!((d[2] - 1.0).abs() < 1e-6);
    }
}
