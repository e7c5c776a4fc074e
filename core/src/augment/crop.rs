//! `RandomResizedCrop` of torchvision: the crop sampler and the bicubic resize.

use image::RgbImage;
use rand::Rng;

use crate::Result;
use crate::imaging::{resize_bicubic, round_half_even};

/// A crop box: top, left, height, width (pixels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

/// `RandomResizedCrop.get_params`: up to ten tries of an area fraction in `scale` and a
/// log-uniform aspect ratio in `ratio`, then the central fallback.
pub fn sample_crop(
    rng: &mut impl Rng,
    width: u32,
    height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
) -> CropBox {
    let area = (width as f64) * (height as f64);
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let aspect = rng.random_range(lr0..=lr1).exp();
        let w = round_half_even((target * aspect).sqrt());
        let h = round_half_even((target / aspect).sqrt());
        if w > 0 && w <= width as i64 && h > 0 && h <= height as i64 {
            let top = rng.random_range(0..=(height as i64 - h)) as u32;
            let left = rng.random_range(0..=(width as i64 - w)) as u32;
            return CropBox {
                top,
                left,
                height: h as u32,
                width: w as u32,
            };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0 {
        (width as i64, round_half_even(width as f64 / ratio.0))
    } else if in_ratio > ratio.1 {
        (round_half_even(height as f64 * ratio.1), height as i64)
    } else {
        (width as i64, height as i64)
    };
    CropBox {
        top: ((height as i64 - h) / 2) as u32,
        left: ((width as i64 - w) / 2) as u32,
        height: h as u32,
        width: w as u32,
    }
}

/// `F.resized_crop`: crop, then PIL bicubic resize to `size x size`.
pub fn resized_crop(img: &RgbImage, b: CropBox, size: u32) -> Result<RgbImage> {
    let crop = image::imageops::crop_imm(img, b.left, b.top, b.width, b.height).to_image();
    resize_bicubic(&crop, size, size)
}
