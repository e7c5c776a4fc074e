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

/// Writes a file atomically: readers (and a run killed at any moment) see the old content
/// or the new, never a torn file. See [`atomic_replace`].
#[cfg(not(target_family = "wasm"))]
pub fn atomic_write(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    atomic_replace(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e))
    })
}

/// Produces `path` atomically with `write`, which writes to the temporary path it is given
/// (in the same folder, same extension, a name starting with [`TEMP_PREFIX`]): then fsync of
/// the file, rename over `path`, fsync of the folder (so the rename itself survives a power
/// cut). On error the temporary file is removed; one left by a killed process is removed by
/// [`remove_temp_files`].
#[cfg(not(target_family = "wasm"))]
pub fn atomic_replace<E>(
    path: &std::path::Path,
    write: impl FnOnce(&std::path::Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E>
where
    E: From<Error>,
{
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!("{TEMP_PREFIX}{}.{name}", std::process::id()));
    let commit = || -> std::io::Result<()> {
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        #[cfg(unix)]
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    };
    let done = write(&tmp).and_then(|()| commit().map_err(|e| Error::io(path, e).into()));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// How the temporary files of [`atomic_replace`] start (`.tmp{pid}.{name}`).
pub const TEMP_PREFIX: &str = ".tmp";

/// Removes what a killed process left of [`atomic_replace`] in `dir` (not recursively; this
/// process's own are kept); returns how many files it removed.
#[cfg(not(target_family = "wasm"))]
pub fn remove_temp_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_prefix(TEMP_PREFIX)
                .and_then(|rest| rest.split_once('.'))
                .is_some_and(|(pid, _)| {
                    !pid.is_empty()
                        && pid.bytes().all(|b| b.is_ascii_digit())
                        && pid != std::process::id().to_string()
                })
                && e.file_type().is_ok_and(|t| t.is_file())
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}
