//! `dino propagate`: semi-supervised video object segmentation by label propagation with
//! patch-feature affinities, as `eval_video_segmentation.py` (first frame + the last
//! `n` frames as context, top-k affinities in a local neighbourhood). Given the first
//! frame's mask it writes every frame's mask (in the input mask's style: DAVIS palette PNGs
//! stay palette PNGs), overlays and a GIF; given ground truth, the DAVIS J&F scores.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use anyhow::Context;
use dino_core::features::davis::{f_measure, jaccard};
use dino_core::features::l2_normalize;
use dino_core::features::propagate::{
    ContextFrame, PropagationConfig, argmax_labels, one_hot, propagate, upsample_bilinear,
};
use dino_core::imaging::{load_image, resize_bicubic};
use dino_core::viz::head_colour;
use image::RgbImage;

use crate::frames;
use crate::label_png::{LabelMap, resize_nearest};
use crate::model_args::WeightsArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    weights: WeightsArgs,
    /// A folder of frames (sorted by name) or a video file (decoded with ffmpeg).
    #[arg(value_name = "FRAMES")]
    frames: PathBuf,
    /// The first frame's mask: a DAVIS palette PNG, or a grey/colour PNG whose distinct
    /// values are the objects (0 = background).
    #[arg(long, value_name = "PNG")]
    first_mask: PathBuf,
    /// Output folder: one mask per frame (named after the frame), overlays, overlay.gif.
    #[arg(long, short)]
    out: PathBuf,
    /// Ground-truth masks (named like the frames, .png): report J, F and J&F.
    #[arg(long, value_name = "DIR")]
    truth: Option<PathBuf>,
    /// Short side of the frames the model sees (the long side is floored to a multiple of
    /// 64, as the official code does).
    #[arg(long, default_value_t = 480)]
    size: u32,
    /// Preceding frames used as context besides the first.
    #[arg(long, default_value_t = 7)]
    n_last_frames: usize,
    /// Only source patches within this many patches of the target vote (0: anywhere).
    #[arg(long, default_value_t = 12)]
    neighbourhood: usize,
    /// Sources voting for each target patch.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Process at most this many frames.
    #[arg(long)]
    max_frames: Option<usize>,
}

/// The official model input size: short side `size`, the other floored to a multiple of 64.
fn model_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    if h > w {
        let th = ((size as f64 * h as f64 / w as f64) as u32 / 64) * 64;
        (size, th.max(64))
    } else {
        let tw = ((size as f64 * w as f64 / h as f64) as u32 / 64) * 64;
        (tw.max(64), size)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.size >= 64, "--size must be at least 64");
    anyhow::ensure!(args.top_k >= 1, "--top-k must be at least 1");
    let engine = args.weights.load_engine()?;
    let vit = engine.vit_config("dino propagate")?;
    let (d, patch) = (vit.dim, vit.patch);
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    let scratch = args.out.join(".frames");
    let list = frames::frames_of(&args.frames, &scratch, args.max_frames)?;
    anyhow::ensure!(list.len() >= 2, "propagation needs at least 2 frames");
    let first = LabelMap::read(&args.first_mask)?;
    let classes = first.classes();
    anyhow::ensure!(
        classes >= 2,
        "{}: the mask has no object",
        args.first_mask.display()
    );

    let frame0 = load_image(&list[0])?;
    let (ow, oh) = frame0.dimensions();
    anyhow::ensure!(
        (first.width, first.height) == (ow, oh),
        "the first mask is {}x{} but the frames are {}x{}",
        first.width,
        first.height,
        ow,
        oh
    );
    let (tw, th) = model_size(ow, oh, args.size);
    let (gw, gh) = ((tw as usize) / patch, (th as usize) / patch);
    let cfg = PropagationConfig {
        n_last_frames: args.n_last_frames,
        neighbourhood: args.neighbourhood,
        top_k: args.top_k,
        ..Default::default()
    };
    let features = |img: &RgbImage| -> anyhow::Result<Vec<f32>> {
        anyhow::ensure!(
            img.dimensions() == (ow, oh),
            "all frames must share one size"
        );
        let input = resize_bicubic(img, tw, th)?;
        let t = engine.tokens(std::slice::from_ref(&input))?;
        anyhow::ensure!(t.grid == (gh, gw), "unexpected patch grid");
        let mut patches = t.patches;
        l2_normalize(&mut patches, d);
        Ok(patches)
    };
    let small = resize_nearest(&first.labels, ow as usize, oh as usize, gw, gh);
    let first_ctx = ContextFrame {
        features: features(&frame0)?,
        labels: one_hot(&small, classes),
    };
    let name = |p: &Path| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    first.write_like(
        &first.labels,
        ow,
        oh,
        &args.out.join(format!("{}.png", name(&list[0]))),
    )?;
    let mut overlays = vec![overlay(&frame0, &first.labels)];
    let mut predictions = vec![first.labels.clone()];
    let mut queue: VecDeque<ContextFrame> = VecDeque::new();
    let progress = crate::features::bar(list.len() - 1, "frames");
    for path in &list[1..] {
        let img = load_image(path).with_context(|| format!("{}", path.display()))?;
        let feat = features(&img)?;
        let ctx: Vec<&ContextFrame> = std::iter::once(&first_ctx).chain(queue.iter()).collect();
        let soft = propagate(&feat, &ctx, (gh, gw), d, classes, &cfg)?;
        if queue.len() == cfg.n_last_frames {
            queue.pop_front();
        }
        if cfg.n_last_frames > 0 {
            queue.push_back(ContextFrame {
                features: feat,
                labels: soft.clone(),
            });
        }
        let mut up = upsample_bilinear(&soft, classes, gh, gw, patch);
        let labels = argmax_labels(&mut up, classes);
        let labels = resize_nearest(&labels, gw * patch, gh * patch, ow as usize, oh as usize);
        first.write_like(
            &labels,
            ow,
            oh,
            &args.out.join(format!("{}.png", name(path))),
        )?;
        overlays.push(overlay(&img, &labels));
        predictions.push(labels);
        progress.inc(1);
    }
    progress.finish_and_clear();
    let _ = std::fs::remove_dir_all(&scratch);
    frames::write_gif(&overlays, 10.0, &args.out.join("overlay.gif"))?;
    println!(
        "{} frames, {} object(s), model input {tw}x{th} ({gw}x{gh} patches); wrote {}",
        list.len(),
        classes - 1,
        args.out.display()
    );
    if let Some(dir) = &args.truth {
        let scores = evaluate(dir, &list, &predictions, &first, ow, oh)?;
        std::fs::write(
            args.out.join("scores.json"),
            serde_json::to_string_pretty(&scores)?,
        )?;
        println!(
            "J&F {:.4} (J {:.4}, F {:.4}) over {} frames (first and last excluded, as DAVIS)",
            scores["jf"].as_f64().unwrap_or(0.0),
            scores["j"].as_f64().unwrap_or(0.0),
            scores["f"].as_f64().unwrap_or(0.0),
            scores["frames"]
        );
    }
    Ok(())
}

fn overlay(img: &RgbImage, labels: &[u8]) -> RgbImage {
    let mut out = img.clone();
    for (px, &l) in out.pixels_mut().zip(labels) {
        if l > 0 {
            let c = head_colour(l as usize - 1);
            for k in 0..3 {
                px[k] = ((px[k] as u16 + c[k] as u16) / 2) as u8;
            }
        }
    }
    out
}

/// DAVIS J and F per object, averaged over objects and the frames between the first and the
/// last.
fn evaluate(
    dir: &Path,
    list: &[PathBuf],
    predictions: &[Vec<u8>],
    first: &LabelMap,
    w: u32,
    h: u32,
) -> anyhow::Result<serde_json::Value> {
    let (mut js, mut fs) = (Vec::new(), Vec::new());
    let inner = 1..list.len().saturating_sub(1).max(1);
    for i in inner.clone() {
        let stem = list[i]
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let truth = LabelMap::read(&dir.join(format!("{stem}.png")))?;
        anyhow::ensure!(
            (truth.width, truth.height) == (w, h),
            "ground truth {stem}.png is {}x{}, frames are {w}x{h}",
            truth.width,
            truth.height
        );
        // compare by file value, so label numbering differences cannot matter
        let tv: Vec<u8> = truth
            .labels
            .iter()
            .map(|&l| truth.values[l as usize])
            .collect();
        let pv: Vec<u8> = predictions[i]
            .iter()
            .map(|&l| first.values[l as usize])
            .collect();
        for &obj in &first.values[1..] {
            let t: Vec<bool> = tv.iter().map(|&v| v == obj).collect();
            let p: Vec<bool> = pv.iter().map(|&v| v == obj).collect();
            js.push(jaccard(&p, &t));
            fs.push(f_measure(&p, &t, w as usize, h as usize));
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (j, f) = (mean(&js), mean(&fs));
    Ok(serde_json::json!({"j": j, "f": f, "jf": (j + f) / 2.0, "frames": inner.len()}))
}
