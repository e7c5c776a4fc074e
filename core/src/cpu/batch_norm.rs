//! Training-mode batch normalisation of `[N, C, ...]` activations on host memory, forward and
//! backward, reading each channel where it lies.
//!
//! Why: Burn's default `batch_norm_train` (which burn-flex keeps) computes the statistics of a
//! `[N, C, H, W]` input by swapping the batch and channel axes and reshaping, which copies the
//! whole activation twice in the forward pass and twice more in the backward; in a PAWS step on
//! WRN-10-2 those copies were a fifth of the time. Here a channel's statistics are sums over
//! its `N` contiguous planes (f64 accumulators), and each channel is one task.

use super::parallel::{SharedMut, for_each_task, map_tasks};

/// `[batch, channels, spatial]`: the input's dimensions after the channel axis flattened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormShape {
    pub batch: usize,
    pub channels: usize,
    pub spatial: usize,
}

impl NormShape {
    /// Values per channel.
    pub fn count(&self) -> usize {
        self.batch * self.spatial
    }

    fn len(&self) -> usize {
        self.batch * self.channels * self.spatial
    }

    /// The planes of channel `c`, one per image.
    fn planes(&self, c: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        (0..self.batch).map(move |n| {
            let start = (n * self.channels + c) * self.spatial;
            start..start + self.spatial
        })
    }
}

/// Mean and biased variance of every channel.
fn statistics(x: &[f32], s: &NormShape) -> Vec<(f32, f32)> {
    map_tasks(s.channels, |c| {
        let count = s.count().max(1) as f64;
        let sum: f64 = s
            .planes(c)
            .map(|r| x[r].iter().map(|&v| v as f64).sum::<f64>())
            .sum();
        let mean = sum / count;
        let squares: f64 = s
            .planes(c)
            .map(|r| x[r].iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>())
            .sum();
        (mean as f32, (squares / count) as f32)
    })
}

/// `(y, mean, variance)`: `x` normalised with its batch statistics per channel, scaled by
/// `gamma` and shifted by `beta`; the mean and the biased variance it used.
pub fn batch_norm_train_forward(
    x: &[f32],
    s: &NormShape,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), s.len(), "input size");
    assert!(
        gamma.len() == s.channels && beta.len() == s.channels,
        "affine size"
    );
    let stats = statistics(x, s);
    let mut y = vec![0f32; s.len()];
    let dst = SharedMut(y.as_mut_ptr());
    for_each_task(s.channels, |c| {
        let (mean, var) = stats[c];
        let scale = gamma[c] / (var as f64 + eps).sqrt() as f32;
        let shift = beta[c] - mean * scale;
        for r in s.planes(c) {
            // SAFETY: channel c's planes are this task's alone; `y` has the input's size.
            let out = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(r.start), r.len()) };
            for (o, &v) in out.iter_mut().zip(&x[r]) {
                *o = v * scale + shift;
            }
        }
    });
    let (mean, var) = stats.into_iter().unzip();
    (y, mean, var)
}

/// Gradients of [`batch_norm_train_forward`] from the output gradient `dy`, given the
/// statistics it returned: `(dx, dgamma, dbeta)`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train_backward(
    x: &[f32],
    s: &NormShape,
    gamma: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert!(x.len() == s.len() && dy.len() == s.len(), "input size");
    assert!(gamma.len() == s.channels && mean.len() == s.channels && var.len() == s.channels);
    let inv_std: Vec<f32> = var
        .iter()
        .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
        .collect();
    // dbeta = sum dy, dgamma = sum dy * xhat
    let sums = map_tasks(s.channels, |c| {
        let (m, inv) = (mean[c], inv_std[c]);
        let (mut db, mut dg) = (0f64, 0f64);
        for r in s.planes(c) {
            for (&g, &v) in dy[r.clone()].iter().zip(&x[r]) {
                db += g as f64;
                dg += g as f64 * ((v - m) * inv) as f64;
            }
        }
        (dg as f32, db as f32)
    });
    let mut dx = vec![0f32; s.len()];
    let dst = SharedMut(dx.as_mut_ptr());
    let count = s.count().max(1) as f32;
    for_each_task(s.channels, |c| {
        let (m, inv) = (mean[c], inv_std[c]);
        let (dg, db) = sums[c];
        let (mean_db, mean_dg) = (db / count, dg / count);
        let k = gamma[c] * inv;
        for r in s.planes(c) {
            // SAFETY: channel c's planes are this task's alone; `dx` has the input's size.
            let out = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(r.start), r.len()) };
            for ((o, &g), &v) in out.iter_mut().zip(&dy[r.clone()]).zip(&x[r]) {
                let xhat = (v - m) * inv;
                *o = k * (g - mean_db - xhat * mean_dg);
            }
        }
    });
    let (dgamma, dbeta) = sums.into_iter().unzip();
    (dx, dgamma, dbeta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2654435761).wrapping_add(99);
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                (state >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 1.0
            })
            .collect()
    }

    const S: NormShape = NormShape {
        batch: 3,
        channels: 4,
        spatial: 5,
    };
    const EPS: f64 = 1e-5;

    fn loss(x: &[f32], gamma: &[f32], beta: &[f32], w: &[f32]) -> f64 {
        let (y, _, _) = batch_norm_train_forward(x, &S, gamma, beta, EPS);
        y.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum()
    }

    #[test]
    fn the_output_has_the_batch_statistics_normalised_away() {
        let x = values(S.len(), 1);
        let (gamma, beta) = (vec![2.0; 4], vec![0.5; 4]);
        let (y, mean, var) = batch_norm_train_forward(&x, &S, &gamma, &beta, EPS);
        for c in 0..S.channels {
            let xs: Vec<f32> = S.planes(c).flat_map(|r| x[r].to_vec()).collect();
            let m = xs.iter().sum::<f32>() / xs.len() as f32;
            let v = xs.iter().map(|a| (a - m).powi(2)).sum::<f32>() / xs.len() as f32;
            assert!((mean[c] - m).abs() < 1e-6 && (var[c] - v).abs() < 1e-5);
            let ys: Vec<f32> = S.planes(c).flat_map(|r| y[r].to_vec()).collect();
            let ym = ys.iter().sum::<f32>() / ys.len() as f32;
            let yv = ys.iter().map(|a| (a - ym).powi(2)).sum::<f32>() / ys.len() as f32;
            assert!((ym - 0.5).abs() < 1e-5, "{ym}");
            assert!((yv - 4.0 * v / (v + EPS as f32)).abs() < 1e-4, "{yv}");
        }
    }

    /// The backward pass against central differences of `sum(y * w)`.
    #[test]
    fn the_gradients_match_finite_differences() {
        let x = values(S.len(), 2);
        let gamma = values(4, 3);
        let beta = values(4, 4);
        let w = values(S.len(), 5);
        let (_, mean, var) = batch_norm_train_forward(&x, &S, &gamma, &beta, EPS);
        let (dx, dgamma, dbeta) = batch_norm_train_backward(&x, &S, &gamma, &mean, &var, EPS, &w);
        let h = 1e-2f32;
        let diff = |v: &mut Vec<f32>, i: usize, f: &dyn Fn(&[f32]) -> f64| {
            let old = v[i];
            v[i] = old + h;
            let up = f(v);
            v[i] = old - h;
            let down = f(v);
            v[i] = old;
            ((up - down) / (2.0 * h as f64)) as f32
        };
        let near = |a: f32, b: f32| assert!((a - b).abs() < 2e-3 * (1.0 + b.abs()), "{a} vs {b}");
        let mut xv = x.clone();
        for (i, &got) in dx.iter().enumerate() {
            near(got, diff(&mut xv, i, &|x| loss(x, &gamma, &beta, &w)));
        }
        let mut g = gamma.clone();
        let mut b = beta.clone();
        for c in 0..S.channels {
            near(dgamma[c], diff(&mut g, c, &|g| loss(&x, g, &beta, &w)));
            near(dbeta[c], diff(&mut b, c, &|b| loss(&x, &gamma, b, &w)));
        }
    }
}
