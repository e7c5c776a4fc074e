//! `dino pca`: the DINOv2-style picture of patch features: a PCA of the patch tokens of all
//! the given images together; the first component separates foreground from background
//! (thresholded), and the first three components of a second PCA over the foreground
//! patches become red, green and blue. Similar parts get similar colours across images.

use std::path::PathBuf;

use anyhow::Context;
use dino_core::features::pca::Pca;
use dino_core::imaging::Resize;
use dino_core::masks::upsample_nearest;
use image::{Rgb, RgbImage};

use crate::model_args::WeightsArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    weights: WeightsArgs,
    /// Images (analysed together: colours are comparable across them).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// Output folder: NAME-pca.png, NAME-side.png per image, and sheet.png.
    #[arg(long, short)]
    out: PathBuf,
    /// How images are resized (short side; larger gives finer maps).
    #[arg(long, default_value = "448")]
    resize: Resize,
    /// Patches whose first component (min-max scaled to [0, 1]) exceeds this are
    /// foreground.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// Keep the background: colour every patch with one PCA.
    #[arg(long)]
    no_background_removal: bool,
}

struct Item {
    name: String,
    image: RgbImage,
    grid: (usize, usize),
    offset: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..1.0).contains(&args.threshold),
        "--threshold must be in [0, 1)"
    );
    let engine = args.weights.load_engine()?;
    let vit = engine.vit_config("dino pca")?;
    let (d, patch) = (vit.dim, vit.patch);
    let mut items = Vec::new();
    let mut tokens: Vec<f32> = Vec::new();
    let progress = crate::features::bar(args.images.len(), "features");
    let mut skipped = 0;
    for path in &args.images {
        let input = match crate::features::prepare_file(path, &args.resize, patch) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("warning: skipped {}: {e:#}", path.display());
                skipped += 1;
                progress.inc(1);
                continue;
            }
        };
        let t = engine.tokens(std::slice::from_ref(&input))?;
        let (patches, grid) = (t.patches, t.grid);
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        items.push(Item {
            name,
            image: input,
            grid,
            offset: tokens.len() / d,
        });
        tokens.extend(patches);
        progress.inc(1);
    }
    progress.finish_and_clear();
    anyhow::ensure!(
        !items.is_empty(),
        "none of the {skipped} images could be read"
    );
    let n = tokens.len() / d;
    anyhow::ensure!(
        n >= 4,
        "too few patches for a PCA: use larger images or --resize"
    );

    // foreground: the first component, min-max scaled, its sign chosen so that the image
    // borders (mostly background) score low
    let mut foreground = vec![true; n];
    if !args.no_background_removal {
        let first = Pca::fit(&tokens, d, 1)?.apply(&tokens)?;
        let (lo, hi) = first
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let mut score: Vec<f32> = first
            .iter()
            .map(|v| (v - lo) / (hi - lo).max(1e-12))
            .collect();
        let (mut border, mut count) = (0.0, 0);
        for it in &items {
            let (gh, gw) = it.grid;
            for i in 0..gh {
                for j in 0..gw {
                    if i == 0 || j == 0 || i + 1 == gh || j + 1 == gw {
                        border += score[it.offset + i * gw + j];
                        count += 1;
                    }
                }
            }
        }
        if border / count.max(1) as f32 > 0.5 {
            score.iter_mut().for_each(|v| *v = 1.0 - *v);
        }
        foreground = score.iter().map(|&v| v > args.threshold).collect();
    }
    let fg_rows: Vec<f32> = tokens
        .chunks_exact(d)
        .zip(&foreground)
        .filter(|(_, f)| **f)
        .flat_map(|(r, _)| r.iter().copied())
        .collect();
    anyhow::ensure!(
        fg_rows.len() / d >= 4,
        "almost no foreground patches at --threshold {}: lower it or pass --no-background-removal",
        args.threshold
    );
    let pca = Pca::fit(&fg_rows, d, 3)?;
    let rgb = pca.apply(&tokens)?;
    let mut lo = [f32::MAX; 3];
    let mut hi = [f32::MIN; 3];
    for (r, _) in rgb.chunks_exact(3).zip(&foreground).filter(|(_, f)| **f) {
        for c in 0..3 {
            lo[c] = lo[c].min(r[c]);
            hi[c] = hi[c].max(r[c]);
        }
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    let mut tiles = Vec::new();
    for it in &items {
        let (gh, gw) = it.grid;
        let cells: Vec<[u8; 3]> = (0..gh * gw)
            .map(|k| {
                let g = it.offset + k;
                if !foreground[g] {
                    return [0, 0, 0];
                }
                let mut px = [0u8; 3];
                for c in 0..3 {
                    let v = (rgb[3 * g + c] - lo[c]) / (hi[c] - lo[c]).max(1e-12);
                    px[c] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                }
                px
            })
            .collect();
        let up = upsample_nearest(&cells, gh, gw, patch);
        let (w, h) = ((gw * patch) as u32, (gh * patch) as u32);
        let map = RgbImage::from_fn(w, h, |x, y| Rgb(up[y as usize * w as usize + x as usize]));
        map.save(args.out.join(format!("{}-pca.png", it.name)))?;
        let side = dino_core::viz::contact_sheet(&[it.image.clone(), map.clone()], 2, 4);
        side.save(args.out.join(format!("{}-side.png", it.name)))?;
        tiles.push(it.image.clone());
        tiles.push(map);
    }
    dino_core::viz::contact_sheet(&tiles, 2, 4).save(args.out.join("sheet.png"))?;
    let fg = foreground.iter().filter(|&&f| f).count();
    if skipped > 0 {
        println!("{skipped} unreadable image(s) skipped");
    }
    println!(
        "{} images, {n} patches ({fg} foreground, {:.1}% of the foreground variance in 3 components); wrote {}",
        items.len(),
        100.0 * pca.energy,
        args.out.display()
    );
    Ok(())
}
