//! Image decoding (PNG, JPEG, WebP, GIF, BMP, TIFF): an error or an image, within the decoder's
//! limits.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = dino_core::imaging::decode_image(data, "fuzz");
});
