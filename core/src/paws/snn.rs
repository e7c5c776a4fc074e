//! The soft nearest-neighbour evaluation of suncet's `snn_eval.py`: a validation image's
//! class probabilities are `softmax(z @ z_train.T / tau) @ onehot(train labels)` over the
//! L2-normalised encoder outputs of the labelled images; top-1 and top-5 accuracy.

use crate::{Error, Result};

/// Accuracies and predictions of a soft-NN evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct SnnResult {
    pub top1: f64,
    pub top5: f64,
    /// The most probable class of each validation row.
    pub predictions: Vec<usize>,
}

fn normalized(rows: &[f32], dim: usize) -> Vec<f32> {
    rows.chunks_exact(dim)
        .flat_map(|r| {
            let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            r.iter().map(move |v| v / n)
        })
        .collect()
}

/// Soft-NN class probabilities of each `val` row (`[n, dim]`) from the labelled `train` rows.
pub fn snn_probabilities(
    train: &[f32],
    train_labels: &[usize],
    classes: usize,
    val: &[f32],
    dim: usize,
    tau: f64,
) -> Result<Vec<Vec<f32>>> {
    if dim == 0 || train.len() != train_labels.len() * dim || !val.len().is_multiple_of(dim) {
        return Err(Error::Input(format!(
            "soft-NN: {} training values for {} labels of {dim} dimensions, {} validation values",
            train.len(),
            train_labels.len(),
            val.len()
        )));
    }
    if train_labels.is_empty() || train_labels.iter().any(|&l| l >= classes) {
        return Err(Error::Input(
            "soft-NN: no labelled rows, or a label out of range".into(),
        ));
    }
    let (t, v) = (normalized(train, dim), normalized(val, dim));
    let rows = |i: usize| &v[i * dim..(i + 1) * dim];
    let out = (0..val.len() / dim)
        .map(|i| {
            let q = rows(i);
            let sims: Vec<f64> = t
                .chunks_exact(dim)
                .map(|r| r.iter().zip(q).map(|(a, b)| a * b).sum::<f32>() as f64 / tau)
                .collect();
            let max = sims.iter().copied().fold(f64::MIN, f64::max);
            let weights: Vec<f64> = sims.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            let mut p = vec![0f32; classes];
            for (w, &l) in weights.iter().zip(train_labels) {
                p[l] += (w / total) as f32;
            }
            p
        })
        .collect();
    Ok(out)
}

/// Top-1 / top-5 accuracy (percent) of soft-NN predictions against `val_labels`.
pub fn snn_evaluate(
    train: &[f32],
    train_labels: &[usize],
    classes: usize,
    val: &[f32],
    val_labels: &[usize],
    dim: usize,
    tau: f64,
) -> Result<SnnResult> {
    let probs = snn_probabilities(train, train_labels, classes, val, dim, tau)?;
    if probs.len() != val_labels.len() || probs.is_empty() {
        return Err(Error::Input(format!(
            "soft-NN: {} validation rows for {} labels",
            probs.len(),
            val_labels.len()
        )));
    }
    let (mut top1, mut top5) = (0usize, 0usize);
    let mut predictions = Vec::with_capacity(probs.len());
    for (p, &want) in probs.iter().zip(val_labels) {
        let mut order: Vec<usize> = (0..classes).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        predictions.push(order[0]);
        top1 += usize::from(order[0] == want);
        top5 += usize::from(order.iter().take(5).any(|&c| c == want));
    }
    let n = val_labels.len() as f64;
    Ok(SnnResult {
        top1: 100.0 * top1 as f64 / n,
        top5: 100.0 * top5 as f64 / n,
        predictions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_labelled_rows_decide() {
        // two clusters: class 0 near (1, 0), class 1 near (0, 1)
        let train = [1.0, 0.1, 0.9, 0.0, 0.0, 1.0, 0.1, 0.8];
        let labels = [0, 0, 1, 1];
        let val = [2.0, 0.3, 0.2, 3.0];
        let r = snn_evaluate(&train, &labels, 2, &val, &[0, 1], 2, 0.1).unwrap();
        assert_eq!(r.predictions, vec![0, 1]);
        assert_eq!((r.top1, r.top5), (100.0, 100.0));
        let p = snn_probabilities(&train, &labels, 2, &val, 2, 0.1).unwrap();
        assert!((p[0][0] + p[0][1] - 1.0).abs() < 1e-6 && p[0][0] > 0.99);
        assert!(snn_evaluate(&train, &[0, 0, 1], 2, &val, &[0, 1], 2, 0.1).is_err());
        assert!(snn_evaluate(&train, &[0, 0, 1, 2], 2, &val, &[0, 1], 2, 0.1).is_err());
    }
}
