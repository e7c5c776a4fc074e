//! CLS features of many image files: decoding and resizing in parallel, batches of equal-size
//! images through the engine, rows in input order, with a progress bar.

use std::path::{Path, PathBuf};

use anyhow::Context;
use dino_core::imaging::{Resize, load_image, prepare};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::engine::Engine;

/// An image file decoded and prepared for the model (resized, cropped to whole patches); every
/// error names the file.
pub fn prepare_file(path: &Path, resize: &Resize, patch: usize) -> anyhow::Result<image::RgbImage> {
    let img = load_image(path)?;
    prepare(&img, resize, patch).with_context(|| format!("{}", path.display()))
}

/// A progress bar in the project's style.
pub fn bar(len: usize, msg: &str) -> ProgressBar {
    let b = ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    b.set_message(msg.to_string());
    crate::terminal::show(b)
}

/// A spinner in the project's style, for work of unknown length (seconds or more).
pub fn spinner(msg: &str) -> ProgressBar {
    let b = crate::terminal::show(ProgressBar::new_spinner().with_message(msg.to_string()));
    b.enable_steady_tick(std::time::Duration::from_millis(120));
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
    let dim = engine.feature_dim();
    features_with(engine, files, resize, batch_size, label, dim, |batch| {
        engine.cls(batch)
    })
}

/// `[N, dim]` rows of `f` applied to batches of equal-size prepared images, in file order.
/// Any unreadable image stops with an error naming it.
pub fn features_with(
    engine: &Engine,
    files: &[PathBuf],
    resize: &Resize,
    batch_size: usize,
    label: &str,
    dim: usize,
    f: impl Fn(&[image::RgbImage]) -> anyhow::Result<Vec<f32>>,
) -> anyhow::Result<Vec<f32>> {
    let out = extract(engine, files, resize, batch_size, label, dim, false, f)?;
    Ok(out.rows)
}

/// Rows for the readable images of a collection; what could not be read is listed.
pub struct Extracted {
    /// The files the rows belong to, in input order.
    pub files: Vec<PathBuf>,
    /// `[files.len(), dim]`
    pub rows: Vec<f32>,
    pub dim: usize,
    /// Unreadable files and why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// `f` over batches of equal-size prepared images (decoded and resized in parallel, a few
/// batches at a time for bounded memory). With `skip`, unreadable images are left out and
/// listed; without, the first one stops with an error naming it.
#[allow(clippy::too_many_arguments)]
pub fn extract(
    engine: &Engine,
    files: &[PathBuf],
    resize: &Resize,
    batch_size: usize,
    label: &str,
    dim: usize,
    skip: bool,
    f: impl Fn(&[image::RgbImage]) -> anyhow::Result<Vec<f32>>,
) -> anyhow::Result<Extracted> {
    let progress = bar(files.len(), label);
    let out = extract_counted(engine, files, resize, batch_size, &progress, dim, skip, f)?;
    progress.finish_and_clear();
    Ok(out)
}

/// [`extract`] advancing a progress bar the caller holds (one bar over several calls).
#[allow(clippy::too_many_arguments)]
pub fn extract_counted(
    engine: &Engine,
    files: &[PathBuf],
    resize: &Resize,
    batch_size: usize,
    progress: &ProgressBar,
    dim: usize,
    skip: bool,
    f: impl Fn(&[image::RgbImage]) -> anyhow::Result<Vec<f32>>,
) -> anyhow::Result<Extracted> {
    let patch = engine.patch();
    let n = files.len();
    let mut out = Extracted {
        files: Vec::with_capacity(n),
        rows: Vec::with_capacity(n * dim),
        dim,
        skipped: Vec::new(),
    };
    let window = (batch_size * 8).max(64);
    for w0 in (0..n).step_by(window) {
        let w1 = (w0 + window).min(n);
        let decoded: Vec<anyhow::Result<image::RgbImage>> = files[w0..w1]
            .par_iter()
            .map(|p| prepare_file(p, resize, patch))
            .collect();
        let mut prepared = Vec::with_capacity(decoded.len());
        let mut names = Vec::with_capacity(decoded.len());
        for (i, d) in decoded.into_iter().enumerate() {
            match d {
                Ok(img) => {
                    prepared.push(img);
                    names.push(files[w0 + i].clone());
                }
                Err(e) if skip => {
                    out.skipped.push((files[w0 + i].clone(), format!("{e:#}")));
                    progress.inc(1);
                }
                Err(e) => return Err(e),
            }
        }
        let mut rows = vec![0f32; prepared.len() * dim];
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
            let got = f(&batch)?;
            anyhow::ensure!(got.len() == batch.len() * dim, "feature width mismatch");
            for (k, &i) in order[start..end].iter().enumerate() {
                rows[i * dim..(i + 1) * dim].copy_from_slice(&got[k * dim..(k + 1) * dim]);
            }
            progress.inc((end - start) as u64);
            start = end;
        }
        out.rows.extend(rows);
        out.files.extend(names);
    }
    Ok(out)
}
