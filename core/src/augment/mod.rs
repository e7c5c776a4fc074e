//! DINO's multi-crop data augmentation (`DataAugmentationDINO` of `main_dino.py`), with each
//! photometric operation matching Pillow's arithmetic.

mod crop;
mod multicrop;
pub mod pil_ops;

pub use crop::{CropBox, resized_crop, sample_crop};
pub use multicrop::{MultiCropConfig, multi_crop};
