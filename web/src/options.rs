//! The options objects of the JS API, parsed into Rust values (testable natively).

use dino_core::imaging::Resize;

/// `backend` of `Dino.load`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    WebGpu,
    Cpu,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "webgpu" => Ok(Self::WebGpu),
            "cpu" => Ok(Self::Cpu),
            other => Err(format!(
                "backend '{other}': expected 'auto', 'webgpu' or 'cpu'"
            )),
        }
    }
}

/// Options of `model.attention(image, options)`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionOptions {
    /// Share of each head's attention mass the masks keep (visualize_attention.py: 0.6).
    pub threshold: f32,
    /// How the image is resized before the model sees it.
    pub resize: Resize,
}

impl Default for AttentionOptions {
    fn default() -> Self {
        AttentionOptions {
            threshold: 0.6,
            resize: Resize::Short(480),
        }
    }
}

/// `size`: a number (short side in px), or a resize string as the CLI's `--resize`
/// ('none', 'eval', '480', '320x240', 'max:512').
pub fn parse_size(size: Option<&str>) -> Result<Resize, String> {
    match size {
        None => Ok(AttentionOptions::default().resize),
        Some(s) => s.parse::<Resize>().map_err(|e| e.to_string()),
    }
}

/// Checks a mask threshold.
pub fn check_threshold(t: f64) -> Result<f32, String> {
    if t.is_finite() && t > 0.0 && t <= 1.0 {
        Ok(t as f32)
    } else {
        Err(format!("threshold must be in (0, 1], got {t}"))
    }
}

/// The most WebAssembly memory a wasm32 module can have (65,536 pages of 64 KiB).
pub const WASM_MEMORY_LIMIT: u64 = 4 << 30;

/// Refuses a weights file of `len` bytes that cannot fit beside the `in_use` bytes the module
/// already holds, before anything is copied: the file is copied in, and its network read as
/// f32 (up to twice an f16 file) and built from that, so about three times the file must be
/// free. A failed allocation would abort the module instead of answering.
pub fn check_fits_in_memory(len: u64, in_use: u64) -> Result<(), String> {
    let need = len.saturating_mul(3);
    if need.saturating_add(in_use) <= WASM_MEMORY_LIMIT {
        return Ok(());
    }
    let mb = |b: u64| b as f64 / 1e6;
    Err(format!(
        "this weights file is {:.0} MB: loading it needs about {:.0} MB of the page's \
         WebAssembly memory, which is at most 4,295 MB ({:.0} MB already in use). Load the \
         network alone: `dino export -w FILE -o model.safetensors --half` writes it in half \
         precision",
        mb(len),
        mb(need),
        mb(in_use)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        assert_eq!("auto".parse::<BackendChoice>(), Ok(BackendChoice::Auto));
        assert!("cuda".parse::<BackendChoice>().is_err());
        assert_eq!(parse_size(Some("224")), Ok(Resize::Short(224)));
        assert_eq!(parse_size(Some("none")), Ok(Resize::None));
        assert!(parse_size(Some("big")).is_err());
        assert_eq!(check_threshold(0.6), Ok(0.6));
        assert!(check_threshold(0.0).is_err());
        assert!(check_threshold(f64::NAN).is_err());
    }

    #[test]
    fn weights_that_cannot_fit_are_refused_before_copying() {
        // the largest official file, ViT-B/16's training checkpoint (1.1 GB), fits
        assert_eq!(check_fits_in_memory(1_100_000_000, 60_000_000), Ok(()));
        let e = check_fits_in_memory(1_500_000_000, 60_000_000).unwrap_err();
        assert!(
            e.contains("1500 MB") && e.contains("4500 MB") && e.contains("--half"),
            "{e}"
        );
        assert!(check_fits_in_memory(u64::MAX, 0).is_err());
        assert!(check_fits_in_memory(1, WASM_MEMORY_LIMIT).is_err());
    }
}
