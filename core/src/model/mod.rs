//! The DINO Vision Transformer, one concept per file.

mod attention;
mod block;
mod drop_path;
pub mod params;
mod patch_embed;
pub mod pos_embed;
mod vit;

pub use attention::SelfAttention;
pub use block::{Block, BlockParams, Mlp};
pub use drop_path::DropPath;
pub use patch_embed::PatchEmbed;
pub use vit::{Features, VisionTransformer, VitParams};
