//! CLS features of many image files: decoding and resizing in parallel, batches of equal-size
//! images through the engine, rows in input order, with a progress bar.

use std::path::PathBuf;

use anyhow::Context;
use dino_core::imaging::{Resize, load_image, prepare};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::engine::Engine;

/// A progress bar in the project's style.
pub fn bar(len: usize, msg: &str) -> ProgressBar {
    let b = ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    b.set_message(msg.to_string());
    b
}

/// `[N, D]` CLS features (normed by the final LayerNorm, not L2) of `files`, in order.
/// Any unreadable image stops with an error naming it (rows must stay aligned).
pub fn cls_features(
    engine: &Engine,
    files: &[PathBuf],
    resize: &Resize,
    batch_size: usize,
    label: &str,
) -> anyhow::Result<Vec<f32>> {
    let dim = engine.config().dim;
    features_with(engine, files, resize, batch_size, label, dim, |batch| {
        engine.cls(batch)
    })
}

/// `[N, dim]` rows of `f` applied to batches of equal-size prepared images, in file order.
pub fn features_with(
    engine: &Engine,
    files: &[PathBuf],
    resize: &Resize,
    batch_size: usize,
    label: &str,
    dim: usize,
    f: impl Fn(&[image::RgbImage]) -> anyhow::Result<Vec<f32>>,
) -> anyhow::Result<Vec<f32>> {
    let patch = engine.config().patch;
    let n = files.len();
    let progress = bar(n, label);
    let mut feats = vec![0f32; n * dim];
    // bounded memory: decode a few batches at a time
    let window = (batch_size * 8).max(64);
    for w0 in (0..n).step_by(window) {
        let w1 = (w0 + window).min(n);
        let prepared: Vec<_> = files[w0..w1]
            .par_iter()
            .map(|p| {
                let img = load_image(p)?;
                prepare(&img, resize, patch).with_context(|| format!("{}", p.display()))
            })
            .collect::<anyhow::Result<_>>()?;
        let mut order: Vec<usize> = (0..prepared.len()).collect();
        order.sort_by_key(|&i| (prepared[i].width(), prepared[i].height(), i));
        let mut start = 0;
        while start < order.len() {
            let size = prepared[order[start]].dimensions();
            let mut end = start + 1;
            while end < order.len()
                && end - start < batch_size
                && prepared[order[end]].dimensions() == size
            {
                end += 1;
            }
            let batch: Vec<_> = order[start..end]
                .iter()
                .map(|&i| prepared[i].clone())
                .collect();
            let rows = f(&batch)?;
            for (k, &i) in order[start..end].iter().enumerate() {
                let g = w0 + i;
                feats[g * dim..(g + 1) * dim].copy_from_slice(&rows[k * dim..(k + 1) * dim]);
            }
            progress.inc((end - start) as u64);
            start = end;
        }
    }
    progress.finish_and_clear();
    Ok(feats)
}
