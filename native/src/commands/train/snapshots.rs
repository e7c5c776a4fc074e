//! Attention maps of a few fixed images during training, so one can watch segmentation
//! emerge: per image, the photo, the teacher's mean last-block CLS attention over it, and
//! the 60%-mass masks of every head.

use std::path::Path;

use dino_core::cpu::{CpuVit, Outputs};
use dino_core::data::ImageSource;
use dino_core::imaging::{Resize, normalize_chw, prepare};
use dino_core::masks::mass_threshold_masks;
use dino_core::train::Trainer;
use dino_core::viz::{blend, contact_sheet, heat_map, overlay_masks};

/// Writes one contact sheet: a row per image.
pub fn attention_sheet(
    trainer: &Trainer,
    source: &dyn ImageSource,
    n: usize,
    path: &Path,
) -> anyhow::Result<()> {
    let engine = CpuVit::from_model(&trainer.teacher().backbone)?;
    let cfg = &engine.config;
    // twice the global crop size: enough patches to see shapes
    let side = (2 * trainer.cfg.global_crop_size).max(cfg.patch as u32 * 4);
    let n = n.min(source.len());
    let mut tiles = Vec::new();
    for k in 0..n {
        let i = k * source.len() / n.max(1);
        let Ok(img) = source.load(i) else { continue };
        let input = prepare(&img, &Resize::Short(side), cfg.patch)?;
        let (w, h) = (input.width() as usize, input.height() as usize);
        let want = Outputs {
            attention: true,
            ..Default::default()
        };
        let out = engine.run(&normalize_chw(&input), 1, h, w, want)?;
        let (gh, gw) = out.grid;
        let heads = cfg.heads;
        let cells = gh * gw;
        let mean: Vec<f32> = (0..cells)
            .map(|c| {
                (0..heads)
                    .map(|hd| out.attention[hd * cells + c])
                    .sum::<f32>()
                    / heads as f32
            })
            .collect();
        let masks = mass_threshold_masks(&out.attention, heads, 0.6)?;
        tiles.push(input.clone());
        tiles.push(blend(&input, &heat_map(&mean, gh, gw, cfg.patch), 0.6));
        tiles.push(overlay_masks(
            &input,
            &masks,
            &(0..heads).collect::<Vec<_>>(),
            gh,
            gw,
            cfg.patch,
        ));
    }
    if tiles.is_empty() {
        anyhow::bail!("no readable image for the snapshot");
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let sheet = contact_sheet(&tiles, 3, 4);
    dino_core::atomic_replace(path, |tmp| Ok::<_, anyhow::Error>(sheet.save(tmp)?))?;
    Ok(())
}
