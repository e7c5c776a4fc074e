//! The photometric operations of DINO's augmentation, reproducing Pillow's integer arithmetic
//! (torchvision applies them to PIL images): `ImageEnhance` blends, the HSV round trip of
//! `adjust_hue`, `convert("L")`, `ImageOps.solarize`, `ImageFilter.GaussianBlur` (three
//! extended box blurs) and a horizontal flip.

use image::{Rgb, RgbImage};
use rand::Rng;
use rand::seq::SliceRandom;

/// `Image.blend(degenerate, img, factor)`: `deg + factor * (img - deg)` in float, truncated
/// to 8 bits (clipped to [0, 255] when extrapolating).
fn blend(deg: &[u8; 3], px: &[u8; 3], factor: f32) -> [u8; 3] {
    std::array::from_fn(|c| {
        let v = deg[c] as f32 + factor * (px[c] as f32 - deg[c] as f32);
        if (0.0..=1.0).contains(&factor) {
            v as u8
        } else if v <= 0.0 {
            0
        } else if v >= 255.0 {
            255
        } else {
            v as u8
        }
    })
}

/// Pillow's RGB to L: `(R*19595 + G*38470 + B*7471 + 0x8000) >> 16`.
pub fn luma(px: &[u8; 3]) -> u8 {
    ((px[0] as u32 * 19595 + px[1] as u32 * 38470 + px[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `F.adjust_brightness`: blend with black.
pub fn brightness(img: &RgbImage, factor: f32) -> RgbImage {
    map(img, |p| blend(&[0, 0, 0], p, factor))
}

/// `F.adjust_contrast`: blend with the mean grey level (rounded) of the image.
pub fn contrast(img: &RgbImage, factor: f32) -> RgbImage {
    let n = (img.width() * img.height()).max(1) as f64;
    let sum: f64 = img.pixels().map(|p| luma(&p.0) as f64).sum();
    let mean = (sum / n + 0.5) as u8;
    map(img, |p| blend(&[mean; 3], p, factor))
}

/// `F.adjust_saturation`: blend with the grey version of the image.
pub fn saturation(img: &RgbImage, factor: f32) -> RgbImage {
    map(img, |p| {
        let l = luma(p);
        blend(&[l; 3], p, factor)
    })
}

/// `F.rgb_to_grayscale(num_output_channels=3)`.
pub fn grayscale(img: &RgbImage) -> RgbImage {
    map(img, |p| [luma(p); 3])
}

/// `ImageOps.solarize(threshold=128)`: invert every value >= 128.
pub fn solarize(img: &RgbImage) -> RgbImage {
    solarize_at(img, 128.0)
}

/// `ImageOps.solarize(img, threshold)` for any threshold (PAWS draws it in [0, 256)): invert
/// every value not below it.
pub fn solarize_at(img: &RgbImage, threshold: f64) -> RgbImage {
    map(img, |p| {
        p.map(|v| if (v as f64) < threshold { v } else { 255 - v })
    })
}

/// `ImageOps.equalize`: per channel, Pillow's histogram equalisation (the lookup table of
/// `_lut`: step = (pixels - count of the last used level) // 255, identity when 0).
pub fn equalize(img: &RgbImage) -> RgbImage {
    let mut luts = [[0u8; 256]; 3];
    for (c, lut) in luts.iter_mut().enumerate() {
        let mut h = [0u64; 256];
        for p in img.pixels() {
            h[p.0[c] as usize] += 1;
        }
        let used: Vec<u64> = h.iter().copied().filter(|&n| n > 0).collect();
        let total: u64 = used.iter().sum();
        let step = used.last().map_or(0, |last| (total - last) / 255);
        if step == 0 {
            *lut = std::array::from_fn(|i| i as u8);
        } else {
            let mut n = step / 2;
            for (i, count) in h.iter().enumerate() {
                lut[i] = (n / step).min(255) as u8;
                n += count;
            }
        }
    }
    map(img, |p| std::array::from_fn(|c| luts[c][p[c] as usize]))
}

/// `ColorJitter(brightness, contrast, saturation, hue)` with strengths `[b, c, s, h]`: the
/// four factors drawn first (U[max(0, 1 - x), 1 + x], hue U[-h, h]), then applied in a
/// random order.
pub fn color_jitter(img: &RgbImage, [b, c, s, h]: [f64; 4], rng: &mut impl Rng) -> RgbImage {
    let mut order = [0usize, 1, 2, 3];
    order.shuffle(rng);
    let factor = |rng: &mut _, x: f64| Rng::random_range(rng, (1.0 - x).max(0.0)..=1.0 + x) as f32;
    let bf = factor(rng, b);
    let cf = factor(rng, c);
    let sf = factor(rng, s);
    let hf = rng.random_range(-h..=h) as f32;
    let mut out = img.clone();
    for op in order {
        out = match op {
            0 => brightness(&out, bf),
            1 => contrast(&out, cf),
            2 => saturation(&out, sf),
            _ => hue(&out, hf),
        };
    }
    out
}

/// Horizontal flip.
pub fn hflip(img: &RgbImage) -> RgbImage {
    image::imageops::flip_horizontal(img)
}

/// `F.adjust_hue(img, factor)`: PIL's RGB -> HSV, the hue byte shifted by
/// `uint8(factor * 255)` with wrap-around, HSV -> RGB.
pub fn hue(img: &RgbImage, factor: f32) -> RgbImage {
    // np.array(factor * 255).astype(np.uint8): truncation toward zero, then wrap
    let shift = ((factor as f64 * 255.0) as i64).rem_euclid(256) as u8;
    map(img, |p| {
        let [h, s, v] = rgb_to_hsv(p);
        hsv_to_rgb(h.wrapping_add(shift), s, v)
    })
}

fn clip8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Pillow's `rgb2hsv_row` (following `colorsys`), in its float and integer steps.
fn rgb_to_hsv(px: &[u8; 3]) -> [u8; 3] {
    let [r, g, b] = *px;
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if maxc == minc {
        return [0, 0, maxc];
    }
    let cr = (maxc - minc) as f32;
    let s = cr / maxc as f32;
    let rc = (maxc - r) as f32 / cr;
    let gc = (maxc - g) as f32 / cr;
    let bc = (maxc - b) as f32 / cr;
    let h = if r == maxc {
        bc - gc
    } else if g == maxc {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    let h = ((h as f64 / 6.0 + 1.0) % 1.0) as f32;
    [
        clip8((h as f64 * 255.0) as i32),
        clip8((s as f64 * 255.0) as i32),
        maxc,
    ]
}

/// Pillow's `hsv2rgb` (following `colorsys`).
fn hsv_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    if s == 0 {
        return [v, v, v];
    }
    let hf = h as f32 as f64 * 6.0 / 255.0;
    let i = hf.floor() as i32;
    let f = (hf - i as f64) as f32;
    let fs = (s as f32 as f64 / 255.0) as f32;
    let vf = v as f32;
    let p = clip8((vf as f64 * (1.0 - fs as f64)).round() as i32);
    let q = clip8((vf as f64 * (1.0 - (fs * f) as f64)).round() as i32);
    let t = clip8((vf as f64 * (1.0 - (fs * (1.0 - f)) as f64)).round() as i32);
    match i.rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

fn map(img: &RgbImage, f: impl Fn(&[u8; 3]) -> [u8; 3]) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        *p = Rgb(f(&p.0));
    }
    out
}

/// `ImageFilter.GaussianBlur(radius)`: Pillow approximates the Gaussian by three passes of an
/// "extended" box blur (fractional radius) per direction.
pub fn gaussian_blur(img: &RgbImage, radius: f32) -> RgbImage {
    let r = box_radius(radius, 3);
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = img.as_raw().clone();
    if r == 0.0 || w == 0 || h == 0 {
        return img.clone();
    }
    // rows
    let mut line = vec![[0u8; 3]; w.max(h)];
    let mut out = vec![[0u8; 3]; w.max(h)];
    for _ in 0..3 {
        for y in 0..h {
            for x in 0..w {
                line[x] = [
                    data[(y * w + x) * 3],
                    data[(y * w + x) * 3 + 1],
                    data[(y * w + x) * 3 + 2],
                ];
            }
            box_blur_line(&line[..w], &mut out[..w], r);
            for x in 0..w {
                data[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&out[x]);
            }
        }
    }
    // columns
    for _ in 0..3 {
        for x in 0..w {
            for y in 0..h {
                line[y] = [
                    data[(y * w + x) * 3],
                    data[(y * w + x) * 3 + 1],
                    data[(y * w + x) * 3 + 2],
                ];
            }
            box_blur_line(&line[..h], &mut out[..h], r);
            for y in 0..h {
                data[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&out[y]);
            }
        }
    }
    RgbImage::from_raw(w as u32, h as u32, data).expect("size")
}

/// `_gaussian_blur_radius`: the extended box radius whose `passes` give the Gaussian's
/// variance (Gwosdek et al. 2011).
fn box_radius(radius: f32, passes: u32) -> f32 {
    let sigma2 = radius * radius / passes as f32;
    let big_l = (12.0 * sigma2 + 1.0).sqrt();
    let l = ((big_l - 1.0) / 2.0).floor();
    let mut a = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2);
    a /= 6.0 * (sigma2 - (l + 1.0) * (l + 1.0));
    l + a
}

/// `ImagingLineBoxBlur`: a box of `2r+1` pixels with fractional ends, edges repeated,
/// 24-bit fixed-point weights.
fn box_blur_line(inp: &[[u8; 3]], out: &mut [[u8; 3]], float_radius: f32) {
    let n = inp.len();
    let lastx = n as i64 - 1;
    let radius = float_radius as i64;
    let ww = ((1u64 << 24) as f64 / (float_radius as f64 * 2.0 + 1.0)) as u32;
    let fw = ((1u32 << 24) - (radius as u32 * 2 + 1) * ww) / 2;
    let edge_a = (radius + 1).min(n as i64);
    let edge_b = (n as i64 - radius - 1).max(0);
    let px = |i: i64| inp[i.clamp(0, lastx) as usize];
    let mut acc = [0u32; 3];
    for c in 0..3 {
        acc[c] = inp[0][c] as u32 * (radius as u32 + 1);
    }
    for x in 0..edge_a - 1 {
        for c in 0..3 {
            acc[c] += inp[x as usize][c] as u32;
        }
    }
    for c in 0..3 {
        acc[c] += inp[lastx as usize][c] as u32 * (radius - edge_a + 1) as u32;
    }
    let mut step = |x: i64, sub: i64, add: i64, far_left: i64, far_right: i64| {
        for c in 0..3 {
            acc[c] = acc[c] + px(add)[c] as u32 - px(sub)[c] as u32;
            let bulk = acc[c] * ww + (px(far_left)[c] as u32 + px(far_right)[c] as u32) * fw;
            out[x as usize][c] = ((bulk + (1 << 23)) >> 24) as u8;
        }
    };
    if edge_a <= edge_b {
        for x in 0..edge_a {
            step(x, 0, x + radius, 0, x + radius + 1);
        }
        for x in edge_a..edge_b {
            step(
                x,
                x - radius - 1,
                x + radius,
                x - radius - 1,
                x + radius + 1,
            );
        }
        for x in edge_b..=lastx {
            step(x, x - radius - 1, lastx, x - radius - 1, lastx);
        }
    } else {
        for x in 0..edge_b {
            step(x, 0, x + radius, 0, x + radius + 1);
        }
        for x in edge_b..edge_a {
            step(x, 0, lastx, 0, lastx);
        }
        for x in edge_a..=lastx {
            step(x, x - radius - 1, lastx, x - radius - 1, lastx);
        }
    }
}
