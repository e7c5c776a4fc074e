//! `DataAugmentationDINO`: two global crops and `local_crops_number` local crops of one image,
//! each with flip, colour jitter, grayscale, Gaussian blur (and solarisation on the second
//! global crop), then ImageNet normalisation. Deterministic for a given RNG.

use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::crop::{resized_crop, sample_crop};
use super::pil_ops;
use crate::{Error, Result};

/// Multi-crop settings (defaults of `main_dino.py`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MultiCropConfig {
    pub global_size: u32,
    pub local_size: u32,
    pub global_scale: (f64, f64),
    pub local_scale: (f64, f64),
    pub local_crops: usize,
    /// Range of the Gaussian blur radius (sigma) in pixels, drawn uniformly. The official
    /// (0.1, 2.0) is meant for 224 px crops; small images want it scaled down.
    pub blur_radius: (f64, f64),
}

impl Default for MultiCropConfig {
    fn default() -> Self {
        Self {
            global_size: 224,
            local_size: 96,
            global_scale: (0.4, 1.0),
            local_scale: (0.05, 0.4),
            local_crops: 8,
            blur_radius: (0.1, 2.0),
        }
    }
}

impl MultiCropConfig {
    pub fn validate(&self) -> Result<()> {
        let ok_scale = |s: (f64, f64)| 0.0 < s.0 && s.0 <= s.1 && s.1 <= 1.0;
        if self.global_size == 0 || self.local_size == 0 {
            return Err(Error::Config("crop sizes must be positive".into()));
        }
        if !ok_scale(self.global_scale) || !ok_scale(self.local_scale) {
            return Err(Error::Config(format!(
                "crop scales must satisfy 0 < min <= max <= 1: global {:?}, local {:?}",
                self.global_scale, self.local_scale
            )));
        }
        let (lo, hi) = self.blur_radius;
        if !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi && hi <= 64.0) {
            return Err(Error::Config(format!(
                "blur radius must satisfy 0 < min <= max <= 64: {:?}",
                self.blur_radius
            )));
        }
        Ok(())
    }

    /// Crops per image.
    pub fn ncrops(&self) -> usize {
        2 + self.local_crops
    }
}

const RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// The crops of one image, global ones first (RGB, not yet normalised).
pub fn multi_crop(
    img: &RgbImage,
    cfg: &MultiCropConfig,
    rng: &mut impl Rng,
) -> Result<Vec<RgbImage>> {
    let mut crops = Vec::with_capacity(cfg.ncrops());
    // global 1: blur always; global 2: blur p=0.1, solarize p=0.2; locals: blur p=0.5
    let blur = cfg.blur_radius;
    crops.push(view(
        img,
        cfg.global_size,
        cfg.global_scale,
        (1.0, blur),
        0.0,
        rng,
    )?);
    crops.push(view(
        img,
        cfg.global_size,
        cfg.global_scale,
        (0.1, blur),
        0.2,
        rng,
    )?);
    for _ in 0..cfg.local_crops {
        crops.push(view(
            img,
            cfg.local_size,
            cfg.local_scale,
            (0.5, blur),
            0.0,
            rng,
        )?);
    }
    Ok(crops)
}

fn view(
    img: &RgbImage,
    size: u32,
    scale: (f64, f64),
    (blur_p, (blur_min, blur_max)): (f64, (f64, f64)),
    solarize_p: f64,
    rng: &mut impl Rng,
) -> Result<RgbImage> {
    let b = sample_crop(rng, img.width(), img.height(), scale, RATIO);
    let mut out = resized_crop(img, b, size)?;
    if rng.random::<f64>() < 0.5 {
        out = pil_ops::hflip(&out);
    }
    if rng.random::<f64>() < 0.8 {
        // ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)
        out = pil_ops::color_jitter(&out, [0.4, 0.4, 0.2, 0.1], rng);
    }
    if rng.random::<f64>() < 0.2 {
        out = pil_ops::grayscale(&out);
    }
    // utils.GaussianBlur: `random.random() <= p`, radius U[min, max] (officially [0.1, 2])
    if rng.random::<f64>() <= blur_p {
        let radius = rng.random_range(blur_min..=blur_max);
        out = pil_ops::gaussian_blur(&out, radius as f32);
    }
    if solarize_p > 0.0 && rng.random::<f64>() < solarize_p {
        out = pil_ops::solarize(&out);
    }
    Ok(out)
}
