//! One error type for every fallible operation of the crate: messages are meant
//! for the person running the command, so they name the file, key or shape at fault.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each with a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {err}", path.display())]
    Io {
        path: PathBuf,
        // not named `source`: thiserror would chain it, and `{:#}` would print it twice
        err: std::io::Error,
    },
    /// An image could not be decoded, or is unusable (empty, too large, too small).
    #[error("image {name}: {reason}")]
    Image { name: String, reason: String },
    /// A weights file is not a checkpoint we know, or does not match the model.
    #[error("weights: {0}")]
    Weights(String),
    /// A tensor or option has a size the model cannot take.
    #[error("{0}")]
    Input(String),
}

impl Error {
    #[cfg_attr(target_family = "wasm", allow(dead_code))]
    pub(crate) fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err,
        }
    }

    pub(crate) fn image(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Image {
            name: name.into(),
            reason: reason.into(),
        }
    }
}
