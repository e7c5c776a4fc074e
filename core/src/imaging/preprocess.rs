//! The official transforms: torchvision `Resize` (PIL bicubic with antialiasing),
//! `CenterCrop`, `ToTensor`, `Normalize` with ImageNet statistics.

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;

use crate::{Error, Result};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How an image is brought to the model's input size. Every mode ends by cropping
/// (top-left) to a multiple of the patch size, as `visualize_attention.py` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resize {
    /// The evaluation transform of `eval_knn.py` / `eval_linear.py`: resize the short
    /// side to `short` (default 256), then centre-crop `crop` x `crop` (default 224).
    Eval { short: u32, crop: u32 },
    /// Resize the short side to this many pixels, keeping the aspect ratio
    /// (torchvision `Resize(int)`).
    Short(u32),
    /// Resize to exactly height x width (torchvision `Resize((h, w))`).
    Exact { height: u32, width: u32 },
    /// Shrink (never enlarge) so the long side is at most this many pixels, keeping the
    /// aspect ratio (PIL `thumbnail`, what `eval_image_retrieval.py` does; bicubic here).
    Max(u32),
    /// Keep the image's own size.
    None,
}

impl Default for Resize {
    fn default() -> Self {
        Self::Eval {
            short: 256,
            crop: 224,
        }
    }
}

impl std::str::FromStr for Resize {
    type Err = Error;
    /// `eval`, `eval:256/224`, `none`, `480` (short side), `max:224` (long side, shrink
    /// only) or `480x640` (height x width).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Input(format!(
                "resize '{s}': expected 'eval', 'eval:SHORT/CROP', 'none', a short side \
                 like '480', a long side limit like 'max:224', or HEIGHTxWIDTH like '480x640'"
            ))
        };
        let num = |v: &str| -> Result<u32> {
            match v.trim().parse::<u32>() {
                Ok(n) if (1..=crate::imaging::MAX_IMAGE_SIDE).contains(&n) => Ok(n),
                _ => Err(bad()),
            }
        };
        let s = s.trim();
        Ok(match s {
            "eval" => Self::default(),
            "none" => Self::None,
            _ if s.starts_with("max:") => Self::Max(num(&s[4..])?),
            _ if s.starts_with("eval:") => {
                let (a, b) = s[5..].split_once('/').ok_or_else(bad)?;
                let (short, crop) = (num(a)?, num(b)?);
                if crop > short {
                    return Err(bad());
                }
                Self::Eval { short, crop }
            }
            _ if s.contains('x') => {
                let (h, w) = s.split_once('x').ok_or_else(bad)?;
                Self::Exact {
                    height: num(h)?,
                    width: num(w)?,
                }
            }
            _ => Self::Short(num(s)?),
        })
    }
}

impl std::fmt::Display for Resize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Eval { short, crop } => write!(f, "eval:{short}/{crop}"),
            Self::Short(n) => write!(f, "{n}"),
            Self::Max(n) => write!(f, "max:{n}"),
            Self::Exact { height, width } => write!(f, "{height}x{width}"),
            Self::None => write!(f, "none"),
        }
    }
}

/// Resizes with PIL's bicubic filter (what torchvision's `Resize` does on PIL images),
/// bit-exact: see [`super::pil_resize`].
pub fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    if width == 0 || height == 0 || img.width() == 0 || img.height() == 0 {
        return Err(Error::Input(format!(
            "cannot resize a {}x{} image to {width}x{height}",
            img.width(),
            img.height()
        )));
    }
    if width > super::MAX_IMAGE_SIDE || height > super::MAX_IMAGE_SIDE {
        return Err(Error::Input(format!(
            "cannot resize to {width}x{height}: the limit is {} px per side",
            super::MAX_IMAGE_SIDE
        )));
    }
    if img.width() == width && img.height() == height {
        return Ok(img.clone());
    }
    Ok(super::pil_resize::pil_bicubic(img, width, height))
}

/// torchvision's output size for `Resize(short)`: the long side is truncated, not rounded.
fn short_side_size(w: u32, h: u32, short: u32) -> (u32, u32) {
    if w <= h {
        (short, ((short as u64 * h as u64) / w as u64).max(1) as u32)
    } else {
        (((short as u64 * w as u64) / h as u64).max(1) as u32, short)
    }
}

/// Python's `round` (half to even), which torchvision uses for crop sizes and offsets.
pub fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 {
        (r - x.signum()) as i64
    } else {
        r as i64
    }
}

/// Applies the resize mode and the patch-multiple crop; returns what the model sees.
pub fn prepare(img: &RgbImage, resize: &Resize, patch: usize) -> Result<RgbImage> {
    let (w, h) = (img.width(), img.height());
    let resized = match *resize {
        Resize::Eval { short, crop } => {
            let (nw, nh) = short_side_size(w, h, short);
            let r = resize_bicubic(img, nw, nh)?;
            center_crop(&r, crop, crop)
        }
        Resize::Short(short) => {
            let (nw, nh) = short_side_size(w, h, short);
            resize_bicubic(img, nw, nh)?
        }
        Resize::Exact { height, width } => resize_bicubic(img, width, height)?,
        Resize::Max(side) if w.max(h) > side => {
            // PIL thumbnail: the long side becomes `side`, the other rounds, at least 1
            let scale = side as f64 / w.max(h) as f64;
            let nw = ((w as f64 * scale).round() as u32).clamp(1, side);
            let nh = ((h as f64 * scale).round() as u32).clamp(1, side);
            resize_bicubic(img, nw, nh)?
        }
        Resize::Max(_) | Resize::None => img.clone(),
    };
    let p = patch as u32;
    let (cw, ch) = (
        resized.width() - resized.width() % p,
        resized.height() - resized.height() % p,
    );
    if cw == 0 || ch == 0 {
        return Err(Error::Input(format!(
            "the image is {}x{} pixels after resizing ({resize}), smaller than one {p}x{p} patch",
            resized.height(),
            resized.width()
        )));
    }
    Ok(if (cw, ch) == (resized.width(), resized.height()) {
        resized
    } else {
        image::imageops::crop_imm(&resized, 0, 0, cw, ch).to_image()
    })
}

/// torchvision `CenterCrop` (pads nothing: a smaller image is what `Resize` never makes here).
fn center_crop(img: &RgbImage, cw: u32, ch: u32) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let (cw, ch) = (cw.min(w), ch.min(h));
    let top = round_half_even((h - ch) as f64 / 2.0) as u32;
    let left = round_half_even((w - cw) as f64 / 2.0) as u32;
    image::imageops::crop_imm(img, left, top, cw, ch).to_image()
}

/// `ToTensor` + `Normalize(IMAGENET_MEAN, IMAGENET_STD)`: CHW f32.
pub fn normalize_chw(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0f32; 3 * w * h];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * w * h + i] = (px[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    out
}

/// Stacks prepared images of one size into a `[B, 3, H, W]` tensor.
pub fn batch_tensor(images: &[RgbImage], device: &Device) -> Result<Tensor<4>> {
    let first = images
        .first()
        .ok_or_else(|| Error::Input("no images to batch".into()))?;
    let (w, h) = (first.width(), first.height());
    let mut data = Vec::with_capacity(images.len() * 3 * (w * h) as usize);
    for img in images {
        if (img.width(), img.height()) != (w, h) {
            return Err(Error::Input(format!(
                "images of one batch must share a size: {}x{} vs {}x{}",
                img.height(),
                img.width(),
                h,
                w
            )));
        }
        data.extend(normalize_chw(img));
    }
    Ok(Tensor::from_data(
        TensorData::new(data, [images.len(), 3, h as usize, w as usize]),
        device,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resize_modes() {
        assert_eq!("eval".parse::<Resize>().unwrap(), Resize::default());
        assert_eq!("none".parse::<Resize>().unwrap(), Resize::None);
        assert_eq!("480".parse::<Resize>().unwrap(), Resize::Short(480));
        assert_eq!("max:224".parse::<Resize>().unwrap(), Resize::Max(224));
        assert!("max:0".parse::<Resize>().is_err());
        assert_eq!(
            "320x240".parse::<Resize>().unwrap(),
            Resize::Exact {
                height: 320,
                width: 240
            }
        );
        assert_eq!(
            "eval:288/256".parse::<Resize>().unwrap(),
            Resize::Eval {
                short: 288,
                crop: 256
            }
        );
        for bad in ["", "0x10", "12x", "abc", "eval:200/300", "99999"] {
            assert!(bad.parse::<Resize>().is_err(), "{bad}");
        }
    }

    #[test]
    fn torchvision_sizes_and_offsets() {
        assert_eq!(short_side_size(451, 300, 256), (384, 256)); // 256*451/300 = 384.85 -> 384
        assert_eq!(short_side_size(300, 451, 256), (256, 384));
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(80.0), 80);
    }
}
