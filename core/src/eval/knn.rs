//! Weighted k-NN classification of `eval_knn.py`: cosine similarity of L2-normalised features,
//! the k nearest training images vote for their class with weight `exp(sim / T)`.

use crate::cpu::matmul::{Epilogue, matmul};
use crate::{Error, Result};

/// Accuracy (%) at one k.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KnnAccuracy {
    pub k: usize,
    pub top1: f64,
    pub top5: f64,
}

/// Divides each `d`-wide row by its L2 norm (`F.normalize`, eps 1e-12).
pub fn l2_normalize(rows: &mut [f32], d: usize) {
    for r in rows.chunks_exact_mut(d) {
        let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        r.iter_mut().for_each(|v| *v /= n);
    }
}

/// L2-normalised features (`[N, d]` row-major) and their class labels.
#[derive(Clone, Copy, Debug)]
pub struct LabelledFeatures<'a> {
    pub features: &'a [f32],
    pub labels: &'a [usize],
    pub dim: usize,
}

/// `knn_classifier` for every k in `ks` at once, votes weighted by `exp(sim / temperature)`.
pub fn knn_classify(
    train: LabelledFeatures,
    test: LabelledFeatures,
    ks: &[usize],
    temperature: f32,
    num_classes: usize,
) -> Result<Vec<KnnAccuracy>> {
    let mut correct1 = vec![0usize; ks.len()];
    let mut correct5 = vec![0usize; ks.len()];
    knn_predict(train, test, ks, temperature, num_classes, |p| {
        let target = test.labels[p.test_index];
        correct1[p.k_index] += (p.ranked[0] == target) as usize;
        correct5[p.k_index] +=
            p.ranked[..5.min(p.k).min(p.ranked.len())].contains(&target) as usize;
    })?;
    let m = test.labels.len().max(1) as f64;
    Ok(ks
        .iter()
        .enumerate()
        .map(|(ki, &k)| KnnAccuracy {
            k,
            top1: 100.0 * correct1[ki] as f64 / m,
            top5: 100.0 * correct5[ki] as f64 / m,
        })
        .collect())
}

/// One test image's classes at one k, by summed vote, highest first (ties: lower class
/// first, as a stable sort).
#[derive(Clone, Copy, Debug)]
pub struct KnnPrediction<'a> {
    pub test_index: usize,
    pub k_index: usize,
    pub k: usize,
    pub ranked: &'a [usize],
}

/// The predictions behind [`knn_classify`], one call of `each` per test image and k.
pub fn knn_predict(
    train: LabelledFeatures,
    test: LabelledFeatures,
    ks: &[usize],
    temperature: f32,
    num_classes: usize,
    mut each: impl FnMut(KnnPrediction),
) -> Result<()> {
    let d = train.dim;
    let (train, train_labels, test, test_labels) =
        (train.features, train.labels, test.features, test.labels);
    let (n, m) = (train_labels.len(), test_labels.len());
    if train.len() != n * d || test.len() != m * d {
        return Err(Error::Input("feature and label counts disagree".into()));
    }
    let kmax = ks.iter().copied().max().unwrap_or(0);
    if kmax == 0 || kmax > n || ks.contains(&0) {
        return Err(Error::Input(format!(
            "k must be in 1..={n} (the training images)"
        )));
    }
    if train_labels
        .iter()
        .chain(test_labels)
        .any(|&l| l >= num_classes)
    {
        return Err(Error::Input("a label is out of range".into()));
    }
    // similarity = test @ train^T, chunk by chunk of test rows
    let mut train_t = vec![0f32; d * n];
    for i in 0..n {
        for j in 0..d {
            train_t[j * n + i] = train[i * d + j];
        }
    }
    let chunk = 256.min(m.max(1));
    let mut sim = vec![0f32; chunk * n];
    let zeros = vec![0f32; n];
    let mut order: Vec<usize> = Vec::with_capacity(n);
    let mut votes = vec![0f64; num_classes];
    let mut ranked: Vec<usize> = Vec::with_capacity(num_classes);
    for start in (0..m).step_by(chunk) {
        let rows = chunk.min(m - start);
        matmul(
            &test[start * d..(start + rows) * d],
            rows,
            d,
            &train_t,
            n,
            &mut sim[..rows * n],
            Epilogue::Bias(&zeros),
        );
        for r in 0..rows {
            let s = &sim[r * n..(r + 1) * n];
            order.clear();
            order.extend(0..n);
            // the kmax most similar, most similar first
            order.select_nth_unstable_by(kmax - 1, |&a, &b| s[b].total_cmp(&s[a]));
            order[..kmax].sort_by(|&a, &b| s[b].total_cmp(&s[a]));
            for (ki, &k) in ks.iter().enumerate() {
                votes.iter_mut().for_each(|v| *v = 0.0);
                for &j in &order[..k] {
                    votes[train_labels[j]] += ((s[j] / temperature) as f64).exp();
                }
                ranked.clear();
                ranked.extend(0..num_classes);
                ranked.sort_by(|&a, &b| votes[b].total_cmp(&votes[a]));
                each(KnnPrediction {
                    test_index: start + r,
                    k_index: ki,
                    k,
                    ranked: &ranked,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_follow_the_nearest_neighbours() {
        // two clusters on the unit circle
        let mut train = vec![1.0, 0.1, 0.9, -0.1, -1.0, 0.05, -0.95, 0.1];
        l2_normalize(&mut train, 2);
        let mut test = vec![0.8, 0.0, -0.7, 0.2];
        l2_normalize(&mut test, 2);
        let tr = LabelledFeatures {
            features: &train,
            labels: &[0, 0, 1, 1],
            dim: 2,
        };
        let right = LabelledFeatures {
            features: &test,
            labels: &[0, 1],
            dim: 2,
        };
        let r = knn_classify(tr, right, &[1, 2], 0.07, 2).unwrap();
        assert_eq!((r[0].top1, r[1].top1), (100.0, 100.0));
        // a wrong label makes half wrong
        let wrong = LabelledFeatures {
            labels: &[1, 1],
            ..right
        };
        assert_eq!(
            knn_classify(tr, wrong, &[1], 0.07, 2).unwrap()[0].top1,
            50.0
        );
        assert!(knn_classify(tr, right, &[5], 0.07, 2).is_err());
    }
}
