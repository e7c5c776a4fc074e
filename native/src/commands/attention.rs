//! `dino attention`: the last block's CLS self-attention of one image, per head, with the
//! mass-threshold masks of `visualize_attention.py`, as arrays and as pictures.

use std::path::{Path, PathBuf};

use anyhow::Context;
use dino_core::imaging::{Resize, load_image, prepare};
use dino_core::masks::mass_threshold_masks;
use dino_core::viz::{blend, contact_sheet, heat_map, overlay_masks};
use image::RgbImage;

use crate::model_args::WeightsArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    weights: WeightsArgs,
    /// How the image is resized: `eval` (short side 256, centre crop 224), `eval:SHORT/CROP`,
    /// `none` (own size, cropped to a multiple of the patch, as visualize_attention.py does
    /// after its resize), a short side like `480`, or `HEIGHTxWIDTH` (the official script
    /// uses 480x480).
    #[arg(long, default_value = "none")]
    resize: Resize,
    /// Also compute masks keeping this fraction of each head's attention mass (the paper
    /// uses 0.6); writes masks.npy and mask overlays.
    #[arg(long, value_name = "T")]
    threshold: Option<f32>,
    /// Output folder (created if missing).
    #[arg(long, short, value_name = "DIR")]
    out: PathBuf,
    /// Image file.
    #[arg(value_name = "IMAGE")]
    image: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(t) = args.threshold {
        anyhow::ensure!(
            (0.0..=1.0).contains(&t),
            "--threshold {t}: expected a fraction of the attention mass in [0, 1]"
        );
    }
    let engine = args.weights.load_engine()?;
    let vit = engine.vit_config("dino attention")?;
    let (patch, heads) = (vit.patch, vit.heads);
    let img = load_image(&args.image)?;
    let input =
        prepare(&img, &args.resize, patch).with_context(|| format!("{}", args.image.display()))?;
    let t0 = std::time::Instant::now();
    let (attn, (gh, gw)) = engine.cls_attention(&input)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let out = |name: &str| args.out.join(name);
    let n = gh * gw;
    crate::npy::write(&out("attention.npy"), &[heads, gh, gw], &attn)?;
    save(&input, &out("img.png"))?;

    let mut tiles = vec![input.clone()];
    for h in 0..heads {
        let m = heat_map(&attn[h * n..(h + 1) * n], gh, gw, patch);
        save(&m, &out(&format!("attn-head{h}.png")))?;
        tiles.push(m);
    }
    let mean: Vec<f32> = (0..n)
        .map(|i| (0..heads).map(|h| attn[h * n + i]).sum::<f32>() / heads as f32)
        .collect();
    let mean_map = heat_map(&mean, gh, gw, patch);
    save(&mean_map, &out("attn-mean.png"))?;
    save(
        &blend(&input, &mean_map, 0.6),
        &out("attn-mean-overlay.png"),
    )?;
    tiles.push(mean_map);
    let cols = tiles.len();

    if let Some(t) = args.threshold {
        let masks = mass_threshold_masks(&attn, heads, t)?;
        crate::npy::write(&out("masks.npy"), &[heads, gh, gw], &masks)?;
        let mut row = vec![overlay_masks(
            &input,
            &masks,
            &(0..heads).collect::<Vec<_>>(),
            gh,
            gw,
            patch,
        )];
        save(&row[0], &out("masks.png"))?;
        for h in 0..heads {
            let o = overlay_masks(&input, &masks, &[h], gh, gw, patch);
            save(&o, &out(&format!("mask-th{t}-head{h}.png")))?;
            row.push(o);
        }
        tiles.extend(row);
    }
    save(&contact_sheet(&tiles, cols, 4), &out("summary.png"))?;
    eprintln!(
        "{heads} heads on a {gh}x{gw} patch grid ({}x{} px, {ms:.0} ms on the {}); wrote {}",
        input.height(),
        input.width(),
        engine.describe(),
        args.out.display()
    );
    Ok(())
}

fn save(img: &RgbImage, path: &Path) -> anyhow::Result<()> {
    img.save(path)
        .with_context(|| format!("writing {}", path.display()))
}
