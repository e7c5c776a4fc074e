//! Position-embedding interpolation exactly as the official `interpolate_pos_encoding`.
//!
//! The official code calls `F.interpolate(mode="bicubic", scale_factor=(h0/sqrt(N), w0/sqrt(N)))`
//! with `h0 = H/p + 0.1`. Because a scale factor (not a size) is given, PyTorch maps output
//! pixel `i` to the source coordinate `(i + 0.5) / scale_factor - 0.5`, which is *not* the
//! in/out size ratio. A generic resize would therefore differ; we build the same separable
//! cubic-convolution weights (A = -0.75, borders clamped) and apply them as two matmuls, so
//! the operation is backend-agnostic and differentiable.

use burn::tensor::{Device, Tensor, TensorData};

/// Cubic convolution coefficient of PyTorch for |x| <= 1.
fn cubic1(x: f32, a: f32) -> f32 {
    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
}

/// Cubic convolution coefficient of PyTorch for 1 < |x| < 2.
fn cubic2(x: f32, a: f32) -> f32 {
    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
}

/// Row-major `[out_size, in_size]` matrix of PyTorch's bicubic weights
/// (align_corners false, A = -0.75) for a given scale factor.
pub fn bicubic_matrix(in_size: usize, out_size: usize, scale_factor: f64) -> Vec<f32> {
    const A: f32 = -0.75;
    // PyTorch: compute_scales_value -> (float)(1.0 / scale), then float arithmetic.
    let scale = (1.0 / scale_factor) as f32;
    let mut m = vec![0f32; out_size * in_size];
    for o in 0..out_size {
        let real = scale * (o as f32 + 0.5) - 0.5;
        let base = real.floor();
        let t = real - base;
        let coeffs = [
            cubic2(t + 1.0, A),
            cubic1(t, A),
            cubic1(1.0 - t, A),
            cubic2(2.0 - t, A),
        ];
        for (k, c) in coeffs.iter().enumerate() {
            let idx = (base as i64 - 1 + k as i64).clamp(0, in_size as i64 - 1) as usize;
            m[o * in_size + idx] += c;
        }
    }
    m
}

/// The official scale factor for a grid of `cells` patches from `side` learned positions.
pub fn official_scale_factor(cells: usize, side: usize) -> f64 {
    (cells as f64 + 0.1) / (side as f64)
}

/// Interpolates learned position embeddings `[1, 1 + side*side, D]` to a `gh x gw` grid,
/// returning `[1, 1 + gh*gw, D]`. Skipped (returned as is) when the official code skips it:
/// same number of patches and a square input image (`square_pixels`: height == width).
pub fn interpolate_pos_embed(
    pos: Tensor<3>,
    side: usize,
    gh: usize,
    gw: usize,
    square_pixels: bool,
) -> Tensor<3> {
    let [_, n1, dim] = pos.dims();
    let n = n1 - 1;
    if gh * gw == n && square_pixels {
        return pos;
    }
    let device = pos.device();
    let cls = pos.clone().narrow(1, 0, 1);
    // [side, side, D] -> rows first: [gh, side] @ [side, side*D]
    let grid = pos.narrow(1, 1, n).reshape([side, side * dim]);
    let wy = weights(side, gh, &device);
    let rows = wy.matmul(grid).reshape([gh, side, dim]);
    // then columns: [gh, gw, side] @ [gh, side, D]
    let wx = weights(side, gw, &device)
        .unsqueeze_dim::<3>(0)
        .expand([gh, gw, side]);
    let out = wx.matmul(rows).reshape([1, gh * gw, dim]);
    Tensor::cat(vec![cls, out], 1)
}

fn weights(side: usize, cells: usize, device: &Device) -> Tensor<2> {
    let m = bicubic_matrix(side, cells, official_scale_factor(cells, side));
    Tensor::from_data(TensorData::new(m, [cells, side]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one() {
        for (i, o) in [(14, 18), (14, 28), (14, 6), (28, 60)] {
            let m = bicubic_matrix(i, o, official_scale_factor(o, i));
            for r in 0..o {
                let s: f32 = m[r * i..(r + 1) * i].iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "row {r} of {i}->{o} sums to {s}");
            }
        }
    }

    #[test]
    fn unit_scale_is_the_identity() {
        let m = bicubic_matrix(14, 14, 1.0);
        for r in 0..14 {
            for c in 0..14 {
                assert_eq!(m[r * 14 + c], if r == c { 1.0 } else { 0.0 });
            }
        }
    }
}
