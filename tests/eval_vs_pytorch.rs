//! The evaluators behind every learning number, against the official code paths on fixed
//! features (tests/reference/make_eval_fixtures.py): `eval_knn.py`'s weighted k-NN (every
//! prediction at k = 10, 20, 100) and `eval_linear.py`'s linear classifier (accuracy within
//! 0.5 point: the two trainings draw their initial weights and data order from different
//! generators).

use std::collections::BTreeMap;

use dino_core::eval::{LabelledFeatures, LinearConfig, knn_classify, knn_predict, train_linear};
use dino_core::features::descriptor::copy_detection;
use dino_core::features::pca::Pca;
use dino_core::weights::RawTensor;
use dino_tests::*;

fn load(rel: &str) -> BTreeMap<String, RawTensor> {
    safetensors_f32(&std::fs::read(fixture(rel)).unwrap())
        .into_iter()
        .collect()
}

fn labels(t: &RawTensor) -> Vec<usize> {
    t.data.iter().map(|&v| v as usize).collect()
}

#[test]
fn knn_predictions_match_eval_knn() {
    let fx = load("eval/knn.safetensors");
    let (train_y, test_y) = (labels(&fx["train_labels"]), labels(&fx["test_labels"]));
    let dim = fx["train_features"].shape[1];
    let train = LabelledFeatures {
        features: &fx["train_features"].data,
        labels: &train_y,
        dim,
    };
    let test = LabelledFeatures {
        features: &fx["test_features"].data,
        labels: &test_y,
        dim,
    };
    let ks = [10, 20, 100];
    let acc = knn_classify(train, test, &ks, 0.07, 10).unwrap();
    let mut predicted = vec![vec![usize::MAX; test_y.len()]; ks.len()];
    knn_predict(train, test, &ks, 0.07, 10, |p| {
        predicted[p.k_index][p.test_index] = p.ranked[0]
    })
    .unwrap();
    for (ki, k) in ks.iter().enumerate() {
        let want = labels(&fx[&format!("k{k}_predictions")]);
        let wrong: Vec<usize> = (0..want.len())
            .filter(|&i| predicted[ki][i] != want[i])
            .collect();
        assert!(wrong.is_empty(), "k = {k}: predictions differ at {wrong:?}");
        assert_eq!(
            acc[ki].top1,
            fx[&format!("k{k}_top1")].data[0] as f64,
            "k = {k}"
        );
        assert_eq!(
            acc[ki].top5,
            fx[&format!("k{k}_top5")].data[0] as f64,
            "k = {k}"
        );
        // the data makes the weighting matter: an unweighted vote predicts otherwise
        let majority = labels(&fx[&format!("k{k}_majority")]);
        let differ = (0..want.len()).filter(|&i| majority[i] != want[i]).count();
        assert!(
            differ >= 20,
            "k = {k}: only {differ} predictions depend on the weights"
        );
    }
    // and a different temperature (the weighting) changes predictions
    let other = knn_classify(train, test, &ks, 0.5, 10).unwrap();
    assert_ne!(other, acc);
}

#[test]
fn linear_probe_matches_eval_linear() {
    let fx = load("eval/linear.safetensors");
    let (train_y, test_y) = (labels(&fx["train_labels"]), labels(&fx["test_labels"]));
    let dim = fx["train_features"].shape[1];
    let s = &fx["settings"].data;
    let cfg = LinearConfig {
        epochs: s[0] as usize,
        lr: s[1] as f64,
        batch_size: s[2] as usize,
        ..LinearConfig::default()
    };
    let probe = train_linear(
        LabelledFeatures {
            features: &fx["train_features"].data,
            labels: &train_y,
            dim,
        },
        10,
        &cfg,
        |_, _| {},
    )
    .unwrap();
    let acc = probe.evaluate(LabelledFeatures {
        features: &fx["test_features"].data,
        labels: &test_y,
        dim,
    });
    let (top1, top5) = (fx["top1"].data[0] as f64, fx["top5"].data[0] as f64);
    println!(
        "linear probe: top-1 {:.2} / top-5 {:.2}; eval_linear.py: {top1:.2} / {top5:.2}",
        acc.top1, acc.top5
    );
    assert!(
        (acc.top1 - top1).abs() <= 0.5,
        "top-1 {} against eval_linear's {top1}",
        acc.top1
    );
    assert!(
        (acc.top5 - top5).abs() <= 0.5,
        "top-5 {} against eval_linear's {top5}",
        acc.top5
    );
}

#[test]
fn copy_detection_descriptor_and_whitening_match_the_official_ones() {
    let fx = load("eval/copy.safetensors");
    // the descriptor: CLS, then GeM (p = 4) of the patch tokens (negative values clamped)
    let tokens = &fx["tokens"];
    let (b, t, d) = (tokens.shape[0], tokens.shape[1], tokens.shape[2]);
    let (mut cls, mut patches) = (Vec::new(), Vec::new());
    for i in 0..b {
        let img = &tokens.data[i * t * d..(i + 1) * t * d];
        cls.extend_from_slice(&img[..d]);
        patches.extend_from_slice(&img[d..]);
    }
    let desc = copy_detection(&cls, &patches, d);
    let want = &fx["descriptor"].data;
    assert_eq!(desc.len(), want.len());
    let err = max_abs(&desc, want);
    assert!(err < 1e-5, "descriptor differs by {err}");

    // whitening: eigenvalues, kept energy and the whitened rows (each component up to its
    // sign, which an eigen-solver may choose either way)
    let rows = &fx["rows"];
    let dim_in = rows.shape[1];
    let pca = Pca::fit_whitening(&rows.data, dim_in, 8, 0.5).unwrap();
    let ev = &fx["eigenvalues"].data;
    for (a, b) in pca.eigenvalues.iter().zip(ev) {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs(),
            "eigenvalues {:?} vs {ev:?}",
            pca.eigenvalues
        );
    }
    assert!((pca.energy - fx["energy"].data[0]).abs() < 1e-5);
    let got = pca.apply(&fx["queries"].data).unwrap();
    let want = &fx["whitened"].data;
    for c in 0..8 {
        let col = |v: &[f32]| v.iter().skip(c).step_by(8).copied().collect::<Vec<f32>>();
        let (g, w) = (col(&got), col(want));
        let sign = if g.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>() < 0.0 {
            -1.0
        } else {
            1.0
        };
        let g: Vec<f32> = g.iter().map(|v| v * sign).collect();
        let err = max_abs(&g, &w);
        assert!(err < 1e-3, "whitened component {c} differs by {err}");
    }
}
