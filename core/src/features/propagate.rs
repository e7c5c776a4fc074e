//! Video object segmentation by label propagation, as `eval_video_segmentation.py`: the
//! target frame's patch features attend to those of the first frame and the previous
//! `n` frames (`exp(cos / 0.1)`, restricted to a spatial neighbourhood, only the top-k
//! sources kept per target patch), and carry their soft labels over.

use crate::{Error, Result};

/// Parameters of the propagation (official defaults).
#[derive(Clone, Copy, Debug)]
pub struct PropagationConfig {
    /// Most recent frames used as context besides the first (`n_last_frames`, 7).
    pub n_last_frames: usize,
    /// Source patches must lie within this many patches of the target (`size_mask_neighborhood`,
    /// 12; 0 = anywhere).
    pub neighbourhood: usize,
    /// Sources that vote for each target patch (`topk`, 5).
    pub top_k: usize,
    /// Affinity temperature (0.1).
    pub temperature: f32,
}

impl Default for PropagationConfig {
    fn default() -> Self {
        PropagationConfig {
            n_last_frames: 7,
            neighbourhood: 12,
            top_k: 5,
            temperature: 0.1,
        }
    }
}

/// One context frame: L2-normalised patch features `[h*w, d]` and soft labels `[C, h*w]`.
#[derive(Clone, Debug)]
pub struct ContextFrame {
    pub features: Vec<f32>,
    pub labels: Vec<f32>,
}

/// Soft labels `[C, h*w]` of a target frame (normalised features `[h*w, d]`) from `context`.
pub fn propagate(
    target: &[f32],
    context: &[&ContextFrame],
    grid: (usize, usize),
    dim: usize,
    classes: usize,
    cfg: &PropagationConfig,
) -> Result<Vec<f32>> {
    let (h, w) = grid;
    let t = h * w;
    if target.len() != t * dim
        || context
            .iter()
            .any(|c| c.features.len() != t * dim || c.labels.len() != classes * t)
    {
        return Err(Error::Input(
            "all frames must share one patch grid and label count".into(),
        ));
    }
    if context.is_empty() || cfg.top_k == 0 {
        return Err(Error::Input(
            "propagation needs context frames and top_k >= 1".into(),
        ));
    }
    let r = cfg.neighbourhood as isize;
    let mut out = vec![0f32; classes * t];
    let mut cand: Vec<(f32, usize, usize)> = Vec::new();
    for q in 0..t {
        let (qi, qj) = ((q / w) as isize, (q % w) as isize);
        let fq = &target[q * dim..(q + 1) * dim];
        cand.clear();
        for (c, frame) in context.iter().enumerate() {
            for s in 0..t {
                let (si, sj) = ((s / w) as isize, (s % w) as isize);
                // masked-out sources get affinity 0, exactly as the official multiplication
                let inside = r == 0 || ((si - qi).abs() <= r && (sj - qj).abs() <= r);
                let a = if inside {
                    let fs = &frame.features[s * dim..(s + 1) * dim];
                    let cos: f32 = fq.iter().zip(fs).map(|(x, y)| x * y).sum();
                    (cos / cfg.temperature).exp()
                } else {
                    0.0
                };
                cand.push((a, c, s));
            }
        }
        let k = cfg.top_k.min(cand.len());
        cand.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
        let floor = cand[k - 1].0;
        // official: aff[aff < kth] = 0, so ties with the k-th value all vote
        let kept: Vec<_> = cand.iter().filter(|x| x.0 >= floor).copied().collect();
        let total: f32 = kept.iter().map(|x| x.0).sum();
        if total <= 0.0 {
            continue;
        }
        for (a, c, s) in kept {
            for l in 0..classes {
                out[l * t + q] += a / total * context[c].labels[l * t + s];
            }
        }
    }
    Ok(out)
}

/// Bilinear upsampling by an integer `factor` (`F.interpolate(scale_factor=factor,
/// mode='bilinear', align_corners=False)`) of `[C, h, w]` maps.
pub fn upsample_bilinear(
    maps: &[f32],
    channels: usize,
    h: usize,
    w: usize,
    factor: usize,
) -> Vec<f32> {
    let (oh, ow) = (h * factor, w * factor);
    let src = |o: usize, n: usize| {
        let x = ((o as f32 + 0.5) / factor as f32 - 0.5).max(0.0);
        let x0 = (x.floor() as usize).min(n - 1);
        let x1 = (x0 + 1).min(n - 1);
        (x0, x1, x - x0 as f32)
    };
    let rows: Vec<_> = (0..oh).map(|y| src(y, h)).collect();
    let cols: Vec<_> = (0..ow).map(|x| src(x, w)).collect();
    let mut out = vec![0f32; channels * oh * ow];
    for c in 0..channels {
        let m = &maps[c * h * w..(c + 1) * h * w];
        for (y, &(y0, y1, fy)) in rows.iter().enumerate() {
            for (x, &(x0, x1, fx)) in cols.iter().enumerate() {
                let top = m[y0 * w + x0] * (1.0 - fx) + m[y0 * w + x1] * fx;
                let bottom = m[y1 * w + x0] * (1.0 - fx) + m[y1 * w + x1] * fx;
                out[c * oh * ow + y * ow + x] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
    out
}

/// The official post-processing: per-channel min-max normalisation (`norm_mask`), then the
/// arg-max label of each pixel. `maps` is `[C, n]`.
pub fn argmax_labels(maps: &mut [f32], channels: usize) -> Vec<u8> {
    let n = maps.len() / channels;
    for c in maps.chunks_exact_mut(n) {
        let max = c.iter().copied().fold(f32::MIN, f32::max);
        if max > 0.0 {
            let min = c.iter().copied().fold(f32::MAX, f32::min);
            let span = max - min;
            c.iter_mut()
                .for_each(|v| *v = (*v - min) / span.max(f32::MIN_POSITIVE));
        }
    }
    (0..n)
        .map(|i| {
            let mut best = 0;
            for c in 1..channels {
                if maps[c * n + i] > maps[best * n + i] {
                    best = c;
                }
            }
            best as u8
        })
        .collect()
}

/// One-hot soft labels `[C, n]` of a label map.
pub fn one_hot(labels: &[u8], classes: usize) -> Vec<f32> {
    let n = labels.len();
    let mut out = vec![0f32; classes * n];
    for (i, &l) in labels.iter().enumerate() {
        if (l as usize) < classes {
            out[l as usize * n + i] = 1.0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_matching_features() {
        // 1x3 grid, 2-d features: the target's patches match the context's in reverse order
        let e = |a: f32, b: f32| [a, b];
        let ctx_feat: Vec<f32> = [e(1.0, 0.0), e(0.0, 1.0), e(0.6, 0.8)].concat();
        let tgt: Vec<f32> = [e(0.6, 0.8), e(0.0, 1.0), e(1.0, 0.0)].concat();
        let labels = one_hot(&[0, 1, 1], 2);
        let ctx = ContextFrame {
            features: ctx_feat,
            labels,
        };
        let cfg = PropagationConfig {
            top_k: 1,
            neighbourhood: 0,
            ..Default::default()
        };
        let out = propagate(&tgt, &[&ctx], (1, 3), 2, 2, &cfg).unwrap();
        let mut out2 = out.clone();
        assert_eq!(argmax_labels(&mut out2, 2), vec![1, 1, 0]);
        let _ = out;
        // within a 1-patch neighbourhood, target patch 2 cannot see source patch 0 (its
        // best match) and takes the label of source patch 2 (cos 0.6) instead
        let near = PropagationConfig {
            top_k: 1,
            neighbourhood: 1,
            ..Default::default()
        };
        let out = propagate(&tgt, &[&ctx], (1, 3), 2, 2, &near).unwrap();
        assert_eq!(out, vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        // two sources sharing the vote: weights exp(cos / 0.1), normalised
        let two = PropagationConfig {
            top_k: 2,
            neighbourhood: 0,
            ..Default::default()
        };
        let out = propagate(&tgt, &[&ctx], (1, 3), 2, 2, &two).unwrap();
        // target 0 = (0.6, 0.8): sources 2 (cos 1, label 1) and 1 (cos 0.8, label 1)
        assert!((out[3] - 1.0).abs() < 1e-6);
        // target 2 = (1, 0): sources 0 (cos 1, label 0) and 2 (cos 0.6, label 1)
        let w0 = 10f32.exp();
        let w2 = 6f32.exp();
        assert!((out[2] - w0 / (w0 + w2)).abs() < 1e-6);
        assert!((out[5] - w2 / (w0 + w2)).abs() < 1e-6);
    }

    #[test]
    fn bilinear_matches_half_pixel_convention() {
        // torch: F.interpolate([[0, 1]], scale_factor=2, bilinear) -> [0, 0.25, 0.75, 1]
        let up = upsample_bilinear(&[0.0, 1.0], 1, 1, 2, 2);
        assert_eq!(&up[..4], &[0.0, 0.25, 0.75, 1.0]);
    }
}
