//! A label-free check that a backbone learned something about a collection: each image is cut
//! into a few random views with DINO's own augmentation (crops, flips, colour jitter,
//! grey-scale, blur: what DINO asks its features to agree on), and the score is the share of
//! views whose nearest other view (cosine of the CLS features) comes from the same image. A
//! random network matches views by their colours, which the augmentation changes; features
//! trained with DINO on the images should match them better. `dino train` reports it at the
//! start and the end of a run.

use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::augment::{MultiCropConfig, multi_crop};
use crate::cpu::CpuVit;
use crate::imaging::normalize_chw;
use crate::rng::mix;
use crate::{Error, Result};

/// The views: `views` (at least 2) per image, `size` px square, area in `scale`, with DINO's
/// photometric augmentation, drawn from `seed` (the same seed gives the same views, so scores
/// at two moments of a run compare the same pictures).
pub fn make_views(
    images: &[RgbImage],
    views: usize,
    size: u32,
    scale: (f64, f64),
    seed: u64,
) -> Result<Vec<RgbImage>> {
    let cfg = MultiCropConfig {
        global_size: size,
        local_size: size,
        global_scale: scale,
        local_scale: scale,
        local_crops: views.saturating_sub(2),
        // the official blur radii are for 224 px; scaled to the views' size
        blur_radius: (0.1 * size as f64 / 224.0, 2.0 * size as f64 / 224.0),
    };
    let mut out = Vec::with_capacity(images.len() * views);
    for (i, img) in images.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, i as u64, 0x71E));
        out.extend(multi_crop(img, &cfg, &mut rng)?.into_iter().take(views));
    }
    Ok(out)
}

/// The share (0..1) of `views` (consecutive groups of `per_image` from one image) whose nearest
/// other view under `engine`'s CLS features belongs to the same image.
pub fn view_retrieval(engine: &CpuVit, views: &[RgbImage], per_image: usize) -> Result<f64> {
    if per_image < 2 || views.len() < 2 * per_image || !views.len().is_multiple_of(per_image) {
        return Err(Error::Input(format!(
            "view retrieval needs at least 2 images of at least 2 views each; got {} views in \
             groups of {per_image}",
            views.len()
        )));
    }
    let (w, h) = (views[0].width() as usize, views[0].height() as usize);
    let d = engine.config.dim;
    let mut feats = Vec::with_capacity(views.len() * d);
    for chunk in views.chunks(16) {
        let x: Vec<f32> = chunk.iter().flat_map(normalize_chw).collect();
        feats.extend(engine.forward(&x, chunk.len(), h, w)?);
    }
    let rows: Vec<Vec<f32>> = feats
        .chunks_exact(d)
        .map(|r| {
            let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            r.iter().map(|v| v / n).collect()
        })
        .collect();
    let mut hits = 0;
    for (i, a) in rows.iter().enumerate() {
        let nearest = rows
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, b)| (j, a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()))
            .fold((i, f32::MIN), |best, c| if c.1 > best.1 { c } else { best })
            .0;
        hits += usize::from(nearest / per_image == i / per_image);
    }
    Ok(hits as f64 / rows.len() as f64)
}
