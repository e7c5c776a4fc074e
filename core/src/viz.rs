//! Pictures a person wants to look at: attention heat maps and masks over the image,
//! in the spirit of the DINO paper's figures.

use image::{Rgb, RgbImage};

use crate::masks::upsample_nearest;

/// Distinct colours for heads (Tableau 10, then repeated).
pub fn head_colour(head: usize) -> [u8; 3] {
    let c = colorous::TABLEAU10[head % colorous::TABLEAU10.len()];
    [c.r, c.g, c.b]
}

/// A `gh x gw` map as a viridis heat map (min-max normalised, as `plt.imsave` does),
/// upsampled by `factor` with nearest neighbours.
pub fn heat_map(map: &[f32], gh: usize, gw: usize, factor: usize) -> RgbImage {
    let (lo, hi) = map
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let up = upsample_nearest(map, gh, gw, factor);
    let (w, h) = ((gw * factor) as u32, (gh * factor) as u32);
    RgbImage::from_fn(w, h, |x, y| {
        let v = (up[(y * w + x) as usize] - lo) / span;
        let c = colorous::VIRIDIS.eval_continuous(v.clamp(0.0, 1.0) as f64);
        Rgb([c.r, c.g, c.b])
    })
}

/// The image with a heat map blended over it (`alpha` of the heat map).
pub fn blend(image: &RgbImage, heat: &RgbImage, alpha: f32) -> RgbImage {
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let a = image.get_pixel(x, y).0;
        let b = if x < heat.width() && y < heat.height() {
            heat.get_pixel(x, y).0
        } else {
            a
        };
        Rgb(std::array::from_fn(|c| {
            (a[c] as f32 * (1.0 - alpha) + b[c] as f32 * alpha).round() as u8
        }))
    })
}

/// Masks (`heads` maps of `gh x gw` 0/1 values) over the image: each selected head's mask
/// tinted in its colour at half opacity with a solid outline, like the official
/// `display_instances`. Overlapping masks mix their colours.
pub fn overlay_masks(
    image: &RgbImage,
    masks: &[u8],
    heads: &[usize],
    gh: usize,
    gw: usize,
    patch: usize,
) -> RgbImage {
    let n = gh * gw;
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut out = image.clone();
    let ups: Vec<Vec<u8>> = heads
        .iter()
        .map(|&hd| upsample_nearest(&masks[hd * n..(hd + 1) * n], gh, gw, patch))
        .collect();
    let (mw, mh) = (gw * patch, gh * patch);
    let at = |m: &[u8], x: usize, y: usize| x < mw && y < mh && m[y * mw + x] != 0;
    for y in 0..h {
        for x in 0..w {
            let mut tint = [0f32; 3];
            let mut count = 0;
            let mut edge = None;
            for (k, m) in ups.iter().enumerate() {
                if !at(m, x, y) {
                    continue;
                }
                let c = head_colour(heads[k]);
                for i in 0..3 {
                    tint[i] += c[i] as f32;
                }
                count += 1;
                let border = x == 0
                    || y == 0
                    || !at(m, x - 1, y)
                    || !at(m, x + 1, y)
                    || !at(m, x, y - 1)
                    || !at(m, x, y + 1);
                if border {
                    edge = Some(c);
                }
            }
            if count == 0 {
                continue;
            }
            let px = out.get_pixel_mut(x as u32, y as u32);
            px.0 = match edge {
                Some(c) => c,
                None => std::array::from_fn(|i| {
                    (px.0[i] as f32 * 0.5 + tint[i] / count as f32 * 0.5).round() as u8
                }),
            };
        }
    }
    out
}

/// Lays out images left to right, top to bottom, `cols` per row, with a gap.
pub fn contact_sheet(tiles: &[RgbImage], cols: usize, gap: u32) -> RgbImage {
    let cols = cols.max(1);
    let tw = tiles.iter().map(|t| t.width()).max().unwrap_or(1);
    let th = tiles.iter().map(|t| t.height()).max().unwrap_or(1);
    let rows = tiles.len().div_ceil(cols);
    let w = cols as u32 * tw + (cols as u32 + 1) * gap;
    let h = rows as u32 * th + (rows as u32 + 1) * gap;
    let mut sheet = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    for (i, t) in tiles.iter().enumerate() {
        let x = gap + (i % cols) as u32 * (tw + gap);
        let y = gap + (i / cols) as u32 * (th + gap);
        image::imageops::replace(&mut sheet, t, x as i64, y as i64);
    }
    sheet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_map_spans_the_colour_map() {
        let m = heat_map(&[0.0, 1.0, 0.5, 0.25], 2, 2, 3);
        assert_eq!(m.dimensions(), (6, 6));
        let lo = colorous::VIRIDIS.eval_continuous(0.0);
        let hi = colorous::VIRIDIS.eval_continuous(1.0);
        assert_eq!(m.get_pixel(0, 0).0, [lo.r, lo.g, lo.b]);
        assert_eq!(m.get_pixel(5, 0).0, [hi.r, hi.g, hi.b]);
    }

    #[test]
    fn overlay_tints_only_masked_patches() {
        let img = RgbImage::from_pixel(8, 8, Rgb([0, 0, 0]));
        let masks = [1, 0, 0, 0];
        let out = overlay_masks(&img, &masks, &[0], 2, 2, 4);
        assert_ne!(out.get_pixel(1, 1).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(6, 6).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(0, 0).0, head_colour(0)); // outline
    }
}
