//! Attention masks of `visualize_attention.py`: per head, the smallest set of patches
//! holding `threshold` of the CLS attention mass.

use crate::{Error, Result};

/// For each of `heads` rows of `n` attention values: sort ascending, normalise to sum 1,
/// cumulative sum, keep the patches whose cumulative value exceeds `1 - threshold`, and
/// put them back in patch order. Returns 0/1 per patch, row-major like the input.
///
/// Mirrors PyTorch's arithmetic: f32 values and comparison, the cumulative sum
/// accumulated in f64 (as `torch.cumsum` does on the CPU).
pub fn mass_threshold_masks(attn: &[f32], heads: usize, threshold: f32) -> Result<Vec<u8>> {
    if heads == 0 || attn.is_empty() || !attn.len().is_multiple_of(heads) {
        return Err(Error::Input(format!(
            "{} attention values do not split into {heads} heads",
            attn.len()
        )));
    }
    if !(0.0..=1.0).contains(&threshold) {
        return Err(Error::Input(format!(
            "threshold {threshold} is not a fraction of the attention mass in [0, 1]"
        )));
    }
    let n = attn.len() / heads;
    let cut = 1.0f32 - threshold;
    let mut masks = vec![0u8; attn.len()];
    let mut order: Vec<usize> = Vec::with_capacity(n);
    for h in 0..heads {
        let row = &attn[h * n..(h + 1) * n];
        order.clear();
        order.extend(0..n);
        order.sort_by(|&a, &b| row[a].total_cmp(&row[b]));
        let sum = row.iter().map(|&v| v as f64).sum::<f64>() as f32;
        let mut acc = 0f64;
        for &i in &order {
            acc += (row[i] / sum) as f64;
            if (acc as f32) > cut {
                masks[h * n + i] = 1;
            }
        }
    }
    Ok(masks)
}

/// Nearest-neighbour upsampling of a `h x w` map by an integer factor (the official
/// `interpolate(scale_factor=patch, mode="nearest")`), for display.
pub fn upsample_nearest<T: Copy>(map: &[T], h: usize, w: usize, factor: usize) -> Vec<T> {
    let (oh, ow) = (h * factor, w * factor);
    let mut out = Vec::with_capacity(oh * ow);
    for y in 0..oh {
        let row = &map[(y / factor) * w..(y / factor + 1) * w];
        for x in 0..ow {
            out.push(row[x / factor]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_smallest_set_holding_the_mass() {
        // 0.5 + 0.3 hold 80% >= 60%; 0.5 alone does not
        let attn = [0.1, 0.5, 0.3, 0.1];
        assert_eq!(
            mass_threshold_masks(&attn, 1, 0.6).unwrap(),
            vec![0, 1, 1, 0]
        );
        assert_eq!(
            mass_threshold_masks(&attn, 1, 0.5).unwrap(),
            vec![0, 1, 0, 0]
        );
        // unnormalised input gives the same answer
        let scaled: Vec<f32> = attn.iter().map(|v| v * 7.0).collect();
        assert_eq!(
            mass_threshold_masks(&scaled, 1, 0.6).unwrap(),
            vec![0, 1, 1, 0]
        );
    }

    #[test]
    fn heads_are_independent() {
        let attn = [0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.7];
        assert_eq!(
            mass_threshold_masks(&attn, 2, 0.6).unwrap(),
            vec![1, 0, 0, 0, 0, 0, 0, 1]
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(mass_threshold_masks(&[0.5, 0.5, 0.1], 2, 0.6).is_err());
        assert!(mass_threshold_masks(&[0.5, 0.5], 1, 1.5).is_err());
        assert!(mass_threshold_masks(&[], 1, 0.5).is_err());
    }

    #[test]
    fn nearest_upsampling() {
        assert_eq!(
            upsample_nearest(&[1, 2, 3, 4], 2, 2, 2),
            vec![1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]
        );
    }
}
