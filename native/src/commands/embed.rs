//! `dino embed`: CLS features of many images, in argument order.

use std::path::PathBuf;

use anyhow::Context;
use dino_core::imaging::{Resize, load_image, prepare};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::model_args::WeightsArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    weights: WeightsArgs,
    /// How images are resized: `eval` (short side 256, centre crop 224: the official
    /// evaluation transform), `eval:SHORT/CROP`, `none` (own size, cropped to a multiple
    /// of the patch), a short side like `480`, or `HEIGHTxWIDTH`.
    #[arg(long, default_value = "eval")]
    resize: Resize,
    /// Output .npy file: f32 [N, D], row i is image i.
    #[arg(long, short, value_name = "FEATS.npy")]
    out: PathBuf,
    /// Images per forward pass (images of different sizes never share one).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    batch_size: u16,
    /// L2-normalise each feature (what k-NN and retrieval use).
    #[arg(long)]
    l2: bool,
    /// Image files (PNG, JPEG, WebP, GIF, BMP, TIFF).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let engine = args.weights.load_engine()?;
    let patch = engine.config().patch;
    let dim = engine.config().dim;
    let n = args.images.len();
    let bar = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template("{msg:>9} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_message("decoding");
    // Decode and resize in parallel; any unreadable image stops the run (rows must align).
    let prepared: Vec<_> = args
        .images
        .par_iter()
        .map(|p| {
            let img = load_image(p)?;
            let x =
                prepare(&img, &args.resize, patch).with_context(|| format!("{}", p.display()))?;
            bar.inc(1);
            Ok(x)
        })
        .collect::<anyhow::Result<_>>()?;
    bar.set_position(0);
    bar.set_message("embedding");
    // Batch images of equal size together, then put rows back in argument order.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (prepared[i].width(), prepared[i].height(), i));
    let mut feats = vec![0f32; n * dim];
    let mut start = 0;
    while start < n {
        let size = prepared[order[start]].dimensions();
        let mut end = start + 1;
        while end < n
            && end - start < args.batch_size as usize
            && prepared[order[end]].dimensions() == size
        {
            end += 1;
        }
        let batch: Vec<_> = order[start..end]
            .iter()
            .map(|&i| prepared[i].clone())
            .collect();
        let rows = engine.cls(&batch)?;
        for (k, &i) in order[start..end].iter().enumerate() {
            let row = &mut feats[i * dim..(i + 1) * dim];
            row.copy_from_slice(&rows[k * dim..(k + 1) * dim]);
            if args.l2 {
                // F.normalize: divide by max(||x||, 1e-12)
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                row.iter_mut().for_each(|v| *v /= norm);
            }
        }
        bar.inc((end - start) as u64);
        start = end;
    }
    bar.finish_and_clear();
    crate::npy::write(&args.out, &[n, dim], &feats)?;
    eprintln!("wrote {} ({n} x {dim} f32)", args.out.display());
    Ok(())
}
