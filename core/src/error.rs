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
    /// A setting is out of range or inconsistent: an architecture, a training recipe, crop
    /// sizes, a head.
    #[error("{0}")]
    Config(String),
    /// The data cannot give what a run needs: no images, fewer than a batch, none readable.
    #[error("{0}")]
    Data(String),
    /// An image too large for a forward pass: more patches than [`crate::config::MAX_TOKENS`].
    #[error(
        "a {h}x{w} input makes {gh}x{gw} = {tokens} patches at patch size {patch}, more than \
         the limit of {limit}: resize it",
        tokens = gh * gw
    )]
    TooManyTokens {
        h: usize,
        w: usize,
        gh: usize,
        gw: usize,
        patch: usize,
        limit: usize,
    },
    /// The weights do not say how many attention heads the model has, and the official rule
    /// (dim / 64) does not apply.
    #[error(
        "weights: cannot tell the number of heads of a {dim}-dim model (official models use \
         dim / 64): give it explicitly"
    )]
    UnknownHeads { dim: usize },
    /// The training loss stopped being finite (the official code stops too).
    #[error(
        "the loss is {loss} at iteration {iteration} (epoch {epoch}): stopping, as the official \
         code does. Lower the learning rate or the teacher temperature, or resume from the \
         last checkpoint"
    )]
    Diverged {
        loss: f64,
        iteration: usize,
        epoch: usize,
    },
    /// Any other argument the operation cannot take (a count, a size, a threshold, a shape).
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
