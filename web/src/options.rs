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
}
