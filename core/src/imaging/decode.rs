//! Decoding PNG, JPEG, WebP, GIF (first frame), BMP and TIFF, any bit depth and channel
//! layout, to 8-bit RGB, with bounded memory.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

use crate::{Error, Result};

/// Largest width or height accepted (larger files are refused before decoding).
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Largest decoded buffer accepted (1 GiB).
pub const MAX_DECODED_BYTES: u64 = 1 << 30;

/// Decodes an encoded image to RGB8. `name` is used in error messages. Grey is replicated,
/// alpha is dropped (as PIL's `convert('RGB')`), 16-bit is reduced to 8-bit.
pub fn decode_image(bytes: &[u8], name: &str) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(Error::image(name, "the file is empty"));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::image(name, e.to_string()))?;
    if reader.format().is_none() {
        return Err(Error::image(
            name,
            "not a supported image format (PNG, JPEG, WebP, GIF, BMP, TIFF)",
        ));
    }
    let mut reader = reader;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let too_large = |detail: String| {
        Error::image(
            name,
            format!(
                "too large to decode (limit {MAX_IMAGE_SIDE} px per side and {} MiB decoded): \
                 {detail}",
                MAX_DECODED_BYTES >> 20
            ),
        )
    };
    let decoder = reader.into_decoder().map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(e.to_string()),
        _ => Error::image(name, format!("cannot decode: {e}")),
    })?;
    // Check the declared size before any pixel buffer exists.
    let (w, h) = decoder.dimensions();
    let bytes = decoder.total_bytes();
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || bytes > MAX_DECODED_BYTES {
        return Err(too_large(format!("{w}x{h} pixels, {} MiB", bytes >> 20)));
    }
    let img = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(e.to_string()),
        _ => Error::image(name, format!("cannot decode: {e}")),
    })?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::image(name, "the image has no pixels"));
    }
    Ok(img.to_rgb8())
}

/// Reads and decodes an image file.
#[cfg(not(target_family = "wasm"))]
pub fn load_image(path: &std::path::Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes, &path.display().to_string())
}
