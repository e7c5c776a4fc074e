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
pub use api::{Dino, find_duplicates, resolve_backend, threshold_masks};
/// `await initThreadPool(n)` after `init()`: the CPU engine's threads (the `threads` build).
#[cfg(all(target_family = "wasm", feature = "threads"))]
pub use wasm_bindgen_rayon::init_thread_pool;

/// A core error as the page's caller should read it: with the JavaScript option that fixes
/// it where there is one (the core names no flags or options).
pub fn explain(e: dino_core::Error) -> String {
    use dino_core::Error;
    let hint = match &e {
        Error::TooManyTokens { .. } => " (pass a smaller size, e.g. { size: 480 })",
        Error::UnknownHeads { .. } => " (pass { heads: N } to Dino.load)",
        _ => "",
    };
    format!("{e}{hint}")
}
pub use options::{AttentionOptions, BackendChoice};

#[cfg(test)]
mod tests {
    use dino_core::Error;

    #[test]
    fn core_errors_get_the_javascript_option_that_fixes_them() {
        let e = super::explain(Error::UnknownHeads { dim: 48 });
        assert!(e.contains("48-dim") && e.contains("{ heads: N }"), "{e}");
        let big = Error::TooManyTokens {
            h: 2048,
            w: 2048,
            gh: 128,
            gw: 128,
            patch: 16,
            limit: 16_384,
        };
        let e = super::explain(big);
        assert!(
            e.contains("16384 patches") && e.contains("size: 480"),
            "{e}"
        );
    }
}
