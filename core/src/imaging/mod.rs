//! Images in, model tensors out: decoding real files and the official transforms.

mod decode;
mod pil_resize;
mod preprocess;

#[cfg(not(target_family = "wasm"))]
pub use decode::load_image;
pub use decode::{MAX_DECODED_BYTES, MAX_IMAGE_SIDE, decode_image};
pub use preprocess::{
    IMAGENET_MEAN, IMAGENET_STD, Resize, batch_tensor, normalize_chw, prepare, resize_bicubic,
    round_half_even,
};
