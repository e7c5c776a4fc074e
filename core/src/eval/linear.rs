//! Linear probe of `eval_linear.py` on frozen features: a `Linear(D, classes)` (weights
//! N(0, 0.01), zero bias) trained by SGD with momentum 0.9, no weight decay, a cosine-annealed
//! learning rate (per epoch, to 0), softmax cross-entropy.
//!
//! Deliberate difference: features are computed once with the evaluation transform instead
//! of re-extracting RandomResizedCrop + flip views every epoch (which needs the backbone on
//! every training image every epoch, unaffordable on a CPU).

use rand::seq::SliceRandom;

use super::LabelledFeatures;
use crate::cpu::matmul::{Epilogue, matmul};
use crate::{Error, Result};

/// Settings (official defaults: 100 epochs, lr 0.001 for a batch of 256, batch 1024).
#[derive(Clone, Debug)]
pub struct LinearConfig {
    pub epochs: usize,
    /// For a batch of 256, scaled by batch / 256.
    pub lr: f64,
    pub batch_size: usize,
    pub momentum: f64,
    pub seed: u64,
}

impl Default for LinearConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            lr: 0.001,
            batch_size: 1024,
            momentum: 0.9,
            seed: 0,
        }
    }
}

/// A trained probe: `logits = x @ w + b` with `w` `[D, classes]`.
pub struct LinearProbe {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub dim: usize,
    pub classes: usize,
}

/// Top-1 / top-5 accuracy in percent.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProbeAccuracy {
    pub top1: f64,
    pub top5: f64,
}

impl LinearProbe {
    pub fn logits(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n * self.classes];
        matmul(
            x,
            n,
            self.dim,
            &self.w,
            self.classes,
            &mut out,
            Epilogue::Bias(&self.b),
        );
        out
    }

    pub fn evaluate(&self, data: LabelledFeatures) -> ProbeAccuracy {
        let n = data.labels.len();
        let logits = self.logits(data.features, n);
        let (mut c1, mut c5) = (0usize, 0usize);
        for (i, &y) in data.labels.iter().enumerate() {
            let row = &logits[i * self.classes..(i + 1) * self.classes];
            let mut ranked: Vec<usize> = (0..self.classes).collect();
            ranked.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            c1 += (ranked[0] == y) as usize;
            c5 += ranked[..5.min(self.classes)].contains(&y) as usize;
        }
        ProbeAccuracy {
            top1: 100.0 * c1 as f64 / n.max(1) as f64,
            top5: 100.0 * c5 as f64 / n.max(1) as f64,
        }
    }
}

/// Trains the probe; `progress(epoch, mean loss)` is called after each epoch.
pub fn train_linear(
    train: LabelledFeatures,
    classes: usize,
    cfg: &LinearConfig,
    mut progress: impl FnMut(usize, f64),
) -> Result<LinearProbe> {
    let (d, n) = (train.dim, train.labels.len());
    if n == 0 || train.features.len() != n * d || classes == 0 || cfg.batch_size == 0 {
        return Err(Error::Input(
            "linear probe: empty or inconsistent features".into(),
        ));
    }
    if train.labels.iter().any(|&l| l >= classes) {
        return Err(Error::Input("linear probe: a label is out of range".into()));
    }
    let mut rng = crate::rng::seeded(cfg.seed);
    let mut probe = LinearProbe {
        w: crate::rng::normal(&mut rng, d * classes, 0.0, 0.01),
        b: vec![0.0; classes],
        dim: d,
        classes,
    };
    let (mut vw, mut vb) = (vec![0f32; d * classes], vec![0f32; classes]);
    let base_lr = cfg.lr * cfg.batch_size as f64 / 256.0;
    let mut order: Vec<usize> = (0..n).collect();
    let mut first = true;
    for epoch in 0..cfg.epochs {
        // CosineAnnealingLR(T_max = epochs, eta_min = 0), stepped per epoch
        let lr = (base_lr
            * 0.5
            * (1.0 + (std::f64::consts::PI * epoch as f64 / cfg.epochs as f64).cos()))
            as f32;
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        for chunk in order.chunks(cfg.batch_size) {
            let bsz = chunk.len();
            let mut x = Vec::with_capacity(bsz * d);
            for &i in chunk {
                x.extend_from_slice(&train.features[i * d..(i + 1) * d]);
            }
            let mut p = probe.logits(&x, bsz);
            // softmax, cross-entropy, and dL/dlogits = (p - onehot) / B
            for (r, &i) in chunk.iter().enumerate() {
                let row = &mut p[r * classes..(r + 1) * classes];
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                let z: f32 = row.iter().map(|v| (v - m).exp()).sum();
                let y = train.labels[i];
                loss_sum += (z.ln() + m - row[y]) as f64;
                for (c, v) in row.iter_mut().enumerate() {
                    *v = ((*v - m).exp() / z - (c == y) as u8 as f32) / bsz as f32;
                }
            }
            // gw = x^T @ g, gb = sum of g
            let mut xt = vec![0f32; d * bsz];
            for r in 0..bsz {
                for j in 0..d {
                    xt[j * bsz + r] = x[r * d + j];
                }
            }
            let mut gw = vec![0f32; d * classes];
            matmul(
                &xt,
                d,
                bsz,
                &p,
                classes,
                &mut gw,
                Epilogue::Bias(&vec![0.0; classes]),
            );
            let mut gb = vec![0f32; classes];
            for r in 0..bsz {
                for c in 0..classes {
                    gb[c] += p[r * classes + c];
                }
            }
            // torch SGD: buf = momentum * buf + g (the first step: buf = g); p -= lr * buf
            let mom = if first { 0.0 } else { cfg.momentum as f32 };
            first = false;
            for (v, g) in vw.iter_mut().zip(&gw).chain(vb.iter_mut().zip(&gb)) {
                *v = mom * *v + g;
            }
            for (w, v) in probe
                .w
                .iter_mut()
                .zip(&vw)
                .chain(probe.b.iter_mut().zip(&vb))
            {
                *w -= lr * v;
            }
        }
        progress(epoch, loss_sum / n as f64);
    }
    Ok(probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_classes_are_learned() {
        // three Gaussian blobs in 4-D
        let mut rng = crate::rng::seeded(1);
        let centers = [
            [2.0, 0.0, 0.0, 0.0],
            [0.0, 2.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 1.0],
        ];
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let c = i % 3;
            let noise = crate::rng::normal(&mut rng, 4, 0.0, 0.5);
            x.extend(centers[c].iter().zip(noise).map(|(a, b)| *a as f32 + b));
            y.push(c);
        }
        let data = LabelledFeatures {
            features: &x,
            labels: &y,
            dim: 4,
        };
        let cfg = LinearConfig {
            epochs: 30,
            lr: 2.0,
            batch_size: 32,
            ..Default::default()
        };
        let mut losses = Vec::new();
        let probe = train_linear(data, 3, &cfg, |_, l| losses.push(l)).unwrap();
        assert!(losses.last().unwrap() < &(0.5 * losses[0]), "{losses:?}");
        assert!(probe.evaluate(data).top1 > 95.0);
    }
}
