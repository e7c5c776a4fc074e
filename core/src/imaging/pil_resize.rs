//! Pillow's bicubic resampling, reproduced to the bit.
//!
//! torchvision's `Resize` on a PIL image calls `Image.resize(size, BICUBIC)`, i.e. Pillow's
//! `ImagingResample`: a separable convolution (horizontal pass first, into an 8-bit
//! intermediate), the cubic kernel with a = -0.5, support widened by the scale when
//! shrinking (antialiasing), weights normalised per output pixel and rounded to 22-bit
//! fixed point. Generic resizers (fast_image_resize, image) differ from it by +-1..2 on a
//! fifth of the pixels, which moves DINO features by ~1e-2 relative; matching Pillow
//! exactly makes our features equal the PyTorch pipeline's.

use image::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: first source index, and fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` of Pillow's Resample.c.
fn coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for x in 0..xmax {
            let v = if ww != 0.0 { k[x] / ww } else { k[x] };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if v < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs {
        bounds,
        ksize,
        weights,
    }
}

fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an RGB image exactly as Pillow's `Image.resize((width, height), BICUBIC)`.
pub fn pil_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (width as usize, height as usize);
    let src = img.as_raw();
    let horiz = coeffs(iw, ow);
    let vert = coeffs(ih, oh);
    // Horizontal pass over the rows the vertical pass will read.
    let (first, last) = if oh != ih {
        let (f, _) = vert.bounds[0];
        let (l, n) = vert.bounds[oh - 1];
        (f, l + n)
    } else {
        (0, ih)
    };
    let (tmp, tw) = if ow != iw {
        let rows = last - first;
        let mut tmp = vec![0u8; rows * ow * 3];
        for y in 0..rows {
            let row = &src[(y + first) * iw * 3..(y + first + 1) * iw * 3];
            for (xx, &(xmin, n)) in horiz.bounds.iter().enumerate() {
                let k = &horiz.weights[xx * horiz.ksize..xx * horiz.ksize + n];
                let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
                for (x, &w) in k.iter().enumerate() {
                    let p = &row[(xmin + x) * 3..(xmin + x) * 3 + 3];
                    for c in 0..3 {
                        acc[c] += p[c] as i32 * w;
                    }
                }
                for c in 0..3 {
                    tmp[(y * ow + xx) * 3 + c] = clip8(acc[c]);
                }
            }
        }
        (tmp, ow)
    } else {
        (src[first * iw * 3..last * iw * 3].to_vec(), iw)
    };
    if oh == ih {
        return RgbImage::from_raw(tw as u32, oh as u32, tmp).expect("size");
    }
    let mut out = vec![0u8; oh * tw * 3];
    for (yy, &(ymin, n)) in vert.bounds.iter().enumerate() {
        let k = &vert.weights[yy * vert.ksize..yy * vert.ksize + n];
        let ymin = ymin - first;
        for x in 0..tw * 3 {
            let mut acc = 1i32 << (PRECISION_BITS - 1);
            for (y, &w) in k.iter().enumerate() {
                acc += tmp[(ymin + y) * tw * 3 + x] as i32 * w;
            }
            out[yy * tw * 3 + x] = clip8(acc);
        }
    }
    RgbImage::from_raw(tw as u32, oh as u32, out).expect("size")
}
