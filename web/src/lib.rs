//! DINO in the browser: the `dino-web` package's JavaScript API (wasm-bindgen).
//!
//! ```js
//! import init, { Dino } from './pkg/dino_web.js';
//! await init();
//! const model = await Dino.load(bytes, { backend: 'auto' });
//! const r = await model.attention(imageElement, { threshold: 0.6 });
//! // r.heads, r.gridH, r.gridW, r.attention (Float32Array), r.masks (Uint8Array), r.ms
//! ```
//!
//! The model runs on the browser's GPU through WebGPU (Burn, with the `webgpu` feature) or on
//! the project's fused CPU engine (`dino_core::cpu`, single-threaded in wasm); both give the
//! same outputs. Every error is a rejected promise with a readable message, never a trap.

#[cfg(target_family = "wasm")]
mod api;
#[cfg(target_family = "wasm")]
mod input;
pub mod options;
#[cfg(target_family = "wasm")]
mod runner;
#[cfg(all(target_family = "wasm", feature = "webgpu"))]
mod webgpu;

#[cfg(target_family = "wasm")]
pub use api::{Dino, find_duplicates, threshold_masks};
pub use options::{AttentionOptions, BackendChoice};
