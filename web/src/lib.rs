//! The browser package lands with the web issue; it only re-exports the core for now.
pub use dino_core;
