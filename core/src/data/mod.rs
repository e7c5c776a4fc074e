//! Training data: image folders and multi-crop batches.

mod folder;
mod loader;

pub use folder::{IMAGE_EXTENSIONS, ImageFolder, is_image};
pub use loader::{CropBatch, ImageSource, MultiCropBatches, MultiCropLoader, Skipped, mix};
