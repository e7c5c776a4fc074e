//! `dino video`: per-frame attention of a video or a folder of frames (`video_generation.py`):
//! the head-mean CLS attention of the last block as a heat map blended over each frame, and
//! (with `--threshold`) the mass-threshold masks of every head drawn on it — the official
//! script computes these masks and never uses them. Frames, an animated GIF, and an MP4
//! where ffmpeg is installed.

use std::path::PathBuf;

use anyhow::Context;
use dino_core::imaging::Resize;
use dino_core::masks::mass_threshold_masks;
use dino_core::viz::{blend, heat_map, overlay_masks};

use crate::frames;
use crate::model_args::WeightsArgs;

/// Long side of the GIF's frames (the PNG frames and the MP4 keep the full size).
const GIF_SIDE: u32 = 480;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    weights: WeightsArgs,
    /// A video file (decoded with ffmpeg) or a folder of frame images (sorted by name).
    #[arg(value_name = "INPUT")]
    input: PathBuf,
    /// Output folder: attn-NNNNNN.png frames, attention.gif (at most 480 px), attention.mp4
    /// (with ffmpeg, full size).
    #[arg(long, short)]
    out: PathBuf,
    /// How frames are resized (the official default keeps them as they are: `none`).
    #[arg(long, default_value = "none")]
    resize: Resize,
    /// Draw the masks holding this share of each head's attention mass (e.g. 0.6).
    #[arg(long)]
    threshold: Option<f32>,
    /// Opacity of the heat map over the frame.
    #[arg(long, default_value_t = 0.6)]
    alpha: f32,
    /// Frame rate of the outputs (default: the video's, else 10).
    #[arg(long)]
    fps: Option<f32>,
    /// Process at most this many frames.
    #[arg(long)]
    max_frames: Option<usize>,
    /// Which animations to write beside the frames.
    #[arg(long, value_enum, default_value_t = Animation::Both)]
    animation: Animation,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Animation {
    /// An animated GIF (written here, always possible).
    Gif,
    /// An H.264 MP4 (needs ffmpeg).
    Mp4,
    /// Both: the MP4 where ffmpeg is installed.
    Both,
    /// Frames only.
    None,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(t) = args.threshold {
        anyhow::ensure!(t > 0.0 && t <= 1.0, "--threshold must be in (0, 1]");
    }
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.alpha),
        "--alpha must be in [0, 1]"
    );
    let engine = args.weights.load_engine()?;
    let vit = engine.vit_config("dino video")?;
    let (patch, heads) = (vit.patch, vit.heads);
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    let scratch = args.out.join(".frames");
    let list = frames::frames_of(&args.input, &scratch, args.max_frames)?;
    let fps = args
        .fps
        .or_else(|| frames::video_fps(&args.input))
        .unwrap_or(10.0);
    let progress = crate::features::bar(list.len(), "frames");
    let mut rendered = Vec::with_capacity(list.len());
    let mut skipped = 0;
    for (i, path) in list.iter().enumerate() {
        let input = match crate::features::prepare_file(path, &args.resize, patch) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("warning: skipped frame {}: {e:#}", path.display());
                skipped += 1;
                progress.inc(1);
                continue;
            }
        };
        if let Some(first) = rendered.first().map(|f: &image::RgbImage| f.dimensions())
            && first != input.dimensions()
        {
            anyhow::bail!(
                "frame {} is {}x{}, the first was {}x{}: give --resize HxW for mixed sizes",
                path.display(),
                input.width(),
                input.height(),
                first.0,
                first.1
            );
        }
        let (attn, (gh, gw)) = engine.cls_attention(&input)?;
        let n = gh * gw;
        let mean: Vec<f32> = (0..n)
            .map(|j| (0..heads).map(|h| attn[h * n + j]).sum::<f32>() / heads as f32)
            .collect();
        let mut frame = blend(&input, &heat_map(&mean, gh, gw, patch), args.alpha);
        if let Some(t) = args.threshold {
            let masks = mass_threshold_masks(&attn, heads, t)?;
            frame = overlay_masks(
                &frame,
                &masks,
                &(0..heads).collect::<Vec<_>>(),
                gh,
                gw,
                patch,
            );
        }
        frame
            .save(args.out.join(format!("attn-{:06}.png", i + 1)))
            .context("writing a frame")?;
        rendered.push(frame);
        progress.inc(1);
    }
    progress.finish_and_clear();
    anyhow::ensure!(!rendered.is_empty(), "no frame could be read");
    if scratch.exists() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let mut wrote = vec![format!("{} frames attn-*.png", rendered.len())];
    if matches!(args.animation, Animation::Gif | Animation::Both) {
        // GIFs of full-size frames get huge: at most GIF_SIDE px on the long side
        let small: Vec<image::RgbImage> = rendered
            .iter()
            .map(|f| {
                let long = f.width().max(f.height());
                if long <= GIF_SIDE {
                    return f.clone();
                }
                let (w, h) = (
                    (f.width() * GIF_SIDE / long).max(1),
                    (f.height() * GIF_SIDE / long).max(1),
                );
                image::imageops::resize(f, w, h, image::imageops::FilterType::Triangle)
            })
            .collect();
        frames::write_gif(&small, fps, &args.out.join("attention.gif"))?;
        wrote.push("attention.gif".into());
    }
    if matches!(args.animation, Animation::Mp4 | Animation::Both) {
        if frames::has_ffmpeg() && skipped == 0 {
            frames::write_mp4(
                &args.out.join("attn-%06d.png"),
                fps,
                &args.out.join("attention.mp4"),
            )?;
            wrote.push("attention.mp4".into());
        } else if args.animation == Animation::Mp4 {
            anyhow::bail!(
                "writing MP4 needs ffmpeg (sudo apt-get install ffmpeg) and no skipped frames"
            );
        } else {
            eprintln!(
                "note: no MP4 (ffmpeg is not installed or frames were skipped); the GIF is there"
            );
        }
    }
    println!(
        "{} frames at {fps} fps ({skipped} skipped); wrote {} in {}",
        rendered.len(),
        wrote.join(", "),
        args.out.display()
    );
    Ok(())
}
