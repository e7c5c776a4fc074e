//! DINO (self-DIstillation with NO labels, Caron et al. 2021) Vision Transformers on Burn.
//!
//! The official PyTorch code (facebookresearch/dino) is the spec: the ViT of
//! `vision_transformer.py`, position embeddings interpolated as its
//! `interpolate_pos_encoding`, attention maps and mass-threshold masks as
//! `visualize_attention.py`, and the checkpoint layouts users download.
//!
//! This crate enables no Burn backend: the caller picks the [`burn::tensor::Device`].

pub mod augment;
pub mod config;
pub mod cpu;
#[cfg(not(target_family = "wasm"))]
pub mod data;
pub mod error;
pub mod eval;
pub mod features;
pub mod imaging;
pub mod masks;
pub mod model;
pub mod paws;
pub mod rng;
pub mod train;
pub mod viz;
pub mod weights;

pub use config::VitConfig;
pub use error::{Error, Result};
pub use model::VisionTransformer;

/// Writes a file atomically (temporary file in the same folder, fsync, rename): readers
/// see the old content or the new, never a torn file.
#[cfg(not(target_family = "wasm"))]
pub fn atomic_write(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
