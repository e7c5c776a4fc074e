//! Label maps as PNG files: DAVIS-style palette (indexed) PNGs keep their indices and
//! palette; grey or colour masks map each distinct value to a label (0 = background).

use std::path::Path;

use anyhow::{Context, bail};

/// A label map and how to write labels back.
#[derive(Clone, Debug)]
pub struct LabelMap {
    pub width: u32,
    pub height: u32,
    /// One label per pixel, 0 = background, 1..classes objects.
    pub labels: Vec<u8>,
    /// The file value of each label (palette index or grey level).
    pub values: Vec<u8>,
    /// RGB palette of an indexed PNG.
    pub palette: Option<Vec<u8>>,
}

impl LabelMap {
    pub fn classes(&self) -> usize {
        self.values.len()
    }

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
        let (width, height, raw, palette) = match read_indexed(&bytes) {
            Some(x) => x,
            None => {
                let img = image::load_from_memory(&bytes)
                    .with_context(|| format!("{}: not a readable mask image", path.display()))?
                    .to_luma8();
                let (w, h) = img.dimensions();
                (w, h, img.into_raw(), None)
            }
        };
        let mut values: Vec<u8> = raw.clone();
        values.sort_unstable();
        values.dedup();
        if values.first() != Some(&0) {
            values.insert(0, 0);
        }
        if values.len() > 64 {
            bail!(
                "{}: {} distinct values; a label mask has a few (0 = background)",
                path.display(),
                values.len()
            );
        }
        let mut lut = [0u8; 256];
        for (l, &v) in values.iter().enumerate() {
            lut[v as usize] = l as u8;
        }
        Ok(LabelMap {
            width,
            height,
            labels: raw.iter().map(|&v| lut[v as usize]).collect(),
            values,
            palette,
        })
    }

    /// Writes `labels` (same classes) as a PNG in the input's style.
    pub fn write_like(
        &self,
        labels: &[u8],
        width: u32,
        height: u32,
        path: &Path,
    ) -> anyhow::Result<()> {
        let raw: Vec<u8> = labels.iter().map(|&l| self.values[l as usize]).collect();
        let file = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width, height);
        enc.set_depth(png::BitDepth::Eight);
        match &self.palette {
            Some(p) => {
                enc.set_color(png::ColorType::Indexed);
                enc.set_palette(p.clone());
            }
            None => enc.set_color(png::ColorType::Grayscale),
        }
        enc.write_header()?.write_image_data(&raw)?;
        Ok(())
    }
}

/// Width, height, pixel values and palette of a mask file.
type RawMask = (u32, u32, Vec<u8>, Option<Vec<u8>>);

/// An 8-bit indexed PNG's indices and palette (None for anything else).
fn read_indexed(bytes: &[u8]) -> Option<RawMask> {
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec.read_info().ok()?;
    let info = reader.info();
    if info.color_type != png::ColorType::Indexed || info.bit_depth != png::BitDepth::Eight {
        return None;
    }
    let palette = info.palette.as_ref().map(|p| p.to_vec());
    let (w, h) = (info.width, info.height);
    let mut buf = vec![0; reader.output_buffer_size()?];
    let frame = reader.next_frame(&mut buf).ok()?;
    buf.truncate(frame.buffer_size());
    Some((w, h, buf, palette))
}

/// PIL `NEAREST` resize of a label map (the source pixel under each target pixel's centre).
pub fn resize_nearest(labels: &[u8], w: usize, h: usize, nw: usize, nh: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(nw * nh);
    for y in 0..nh {
        let sy = (((y as f64 + 0.5) * h as f64 / nh as f64) as usize).min(h - 1);
        for x in 0..nw {
            let sx = (((x as f64 + 0.5) * w as f64 / nw as f64) as usize).min(w - 1);
            out.push(labels[sy * w + sx]);
        }
    }
    out
}
