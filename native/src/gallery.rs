//! Outputs a person looks at for collections: thumbnails, rows of groups as a PNG sheet, and
//! self-contained HTML pages (thumbnails inlined, so the page can be moved or mailed).

use std::path::Path;

use base64::Engine as _;
use image::{Rgb, RgbImage};

/// A thumbnail fitting `side` x `side`, letterboxed on white; a grey tile when unreadable.
pub fn thumbnail(path: &Path, side: u32) -> RgbImage {
    let mut tile = RgbImage::from_pixel(side, side, Rgb([255, 255, 255]));
    match dino_core::imaging::load_image(path) {
        Ok(img) => {
            let t = image::imageops::thumbnail(&img, side, side);
            let t = if t.width() > side || t.height() > side {
                image::imageops::resize(&img, side, side, image::imageops::FilterType::Triangle)
            } else {
                t
            };
            let (x, y) = ((side - t.width()) / 2, (side - t.height()) / 2);
            image::imageops::replace(&mut tile, &t, x as i64, y as i64);
        }
        Err(_) => tile = RgbImage::from_pixel(side, side, Rgb([160, 160, 160])),
    }
    tile
}

/// One row of tiles per group (at most `per_row` tiles, the rest summarised by the row
/// length), separated by gaps: what a person checks groups of duplicates with.
pub fn group_rows(groups: &[Vec<RgbImage>], per_row: usize, side: u32) -> RgbImage {
    let gap = 6;
    let cols = groups
        .iter()
        .map(|g| g.len().min(per_row))
        .max()
        .unwrap_or(1)
        .max(1) as u32;
    let w = cols * side + (cols + 1) * gap;
    let h = groups.len().max(1) as u32 * (side + gap) + gap;
    let mut sheet = RgbImage::from_pixel(w, h, Rgb([40, 40, 40]));
    for (r, g) in groups.iter().enumerate() {
        for (c, t) in g.iter().take(per_row).enumerate() {
            let x = gap + c as u32 * (side + gap);
            let y = gap + r as u32 * (side + gap);
            image::imageops::replace(&mut sheet, t, x as i64, y as i64);
        }
    }
    sheet
}

/// `data:image/jpeg;base64,...` of an image.
pub fn data_uri(img: &RgbImage) -> String {
    let mut buf = std::io::Cursor::new(Vec::new());
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 85);
    if img.write_with_encoder(enc).is_err() {
        return String::new();
    }
    format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(buf.into_inner())
    )
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A minimal page around `body`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>{t}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}}\
         .group{{margin:1em 0;padding:.5em;background:#fff;border:1px solid #ddd;border-radius:6px}}\
         .group img{{height:128px;margin:2px;vertical-align:top}}\
         figure{{display:inline-block;margin:4px;text-align:center;font-size:11px;max-width:140px;\
         word-break:break-all}}</style></head><body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    )
}
