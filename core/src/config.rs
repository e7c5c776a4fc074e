//! Architecture of a DINO Vision Transformer: the official presets and any custom size.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Largest number of patch tokens a forward pass accepts (e.g. 1024x1024 at patch 8).
/// Above it, compute grows quadratically and memory for the attention of the
/// last block with it: the caller gets a clear refusal instead.
pub const MAX_TOKENS: usize = 16_384;

/// Hyper-parameters of `vision_transformer.VisionTransformer` in the official code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Embedding dimension (192 tiny, 384 small, 768 base).
    pub dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads (dim / 64 in every official model).
    pub heads: usize,
    /// Patch size in pixels (8 or 16 officially).
    pub patch: usize,
    /// Hidden width of the MLP (4 x dim officially).
    pub mlp_hidden: usize,
    /// Side of the square grid the learned position embeddings were trained at
    /// (224 / patch = 14 or 28); other grids are interpolated.
    pub pos_grid: usize,
    /// LayerNorm epsilon (1e-6 in the official models).
    pub layer_norm_eps: f64,
    /// Stochastic-depth rate of the last block (training only; linear per-block rule).
    #[serde(default)]
    pub drop_path_rate: f64,
}

impl VitConfig {
    /// A custom architecture with the official conventions (MLP ratio 4, eps 1e-6, trained at 224).
    pub fn new(dim: usize, depth: usize, heads: usize, patch: usize) -> Self {
        Self {
            dim,
            depth,
            heads,
            patch,
            mlp_hidden: 4 * dim,
            pos_grid: 224 / patch.max(1),
            layer_norm_eps: 1e-6,
            drop_path_rate: 0.0,
        }
    }

    /// `vit_tiny`: 192 dims, 12 blocks, 3 heads.
    pub fn vit_tiny(patch: usize) -> Self {
        Self::new(192, 12, 3, patch)
    }

    /// `vit_small`: 384 dims, 12 blocks, 6 heads (ViT-S/16 has 21.7M parameters).
    pub fn vit_small(patch: usize) -> Self {
        Self::new(384, 12, 6, patch)
    }

    /// `vit_base`: 768 dims, 12 blocks, 12 heads.
    pub fn vit_base(patch: usize) -> Self {
        Self::new(768, 12, 12, patch)
    }

    /// A preset by name: `vit_tiny`, `vit_small`, `vit_base` (also `tiny`, `small`, `base`).
    pub fn preset(name: &str, patch: usize) -> Result<Self> {
        let cfg = match name.trim_start_matches("vit_") {
            "tiny" => Self::vit_tiny(patch),
            "small" => Self::vit_small(patch),
            "base" => Self::vit_base(patch),
            other => {
                return Err(Error::Config(format!(
                    "unknown architecture '{other}': expected vit_tiny, vit_small or vit_base"
                )));
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Size of one head.
    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }

    /// Number of learned patch position embeddings.
    pub fn num_positions(&self) -> usize {
        self.pos_grid * self.pos_grid
    }

    /// Checks the invariants every other function relies on.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(format!("invalid ViT configuration: {msg}")));
        if self.dim == 0 || self.depth == 0 || self.heads == 0 || self.patch == 0 {
            return bad(format!(
                "dim {}, depth {}, heads {} and patch {} must all be positive",
                self.dim, self.depth, self.heads, self.patch
            ));
        }
        if !self.dim.is_multiple_of(self.heads) {
            return bad(format!(
                "dim {} is not divisible by {} heads",
                self.dim, self.heads
            ));
        }
        if self.mlp_hidden == 0 || self.pos_grid == 0 {
            return bad("MLP width and position grid must be positive".into());
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return bad(format!(
                "drop-path rate {} is not in [0, 1)",
                self.drop_path_rate
            ));
        }
        Ok(())
    }

    /// Checks a `[B, C, H, W]` input against the model and returns its patch grid
    /// `(H/p, W/p)` (remainders are dropped, as the official convolution does).
    pub fn input_grid(&self, [b, c, h, w]: [usize; 4]) -> Result<(usize, usize)> {
        let p = self.patch;
        if b == 0 {
            return Err(Error::Input("empty batch".into()));
        }
        if c != 3 {
            return Err(Error::Input(format!("expected 3 colour channels, got {c}")));
        }
        if h < p || w < p {
            return Err(Error::Input(format!(
                "a {h}x{w} input is smaller than one {p}x{p} patch"
            )));
        }
        let (gh, gw) = (h / p, w / p);
        if gh * gw > MAX_TOKENS {
            return Err(Error::TooManyTokens {
                h,
                w,
                gh,
                gw,
                patch: p,
                limit: MAX_TOKENS,
            });
        }
        Ok((gh, gw))
    }

    /// Number of parameters (all learned tensors of the backbone).
    pub fn num_params(&self) -> usize {
        let d = self.dim;
        let block = 2 * 2 * d
            + (3 * d * d + 3 * d)
            + (d * d + d)
            + 2 * d * self.mlp_hidden
            + self.mlp_hidden
            + d;
        let embed = 3 * self.patch * self.patch * d + d + d + (self.num_positions() + 1) * d;
        embed + self.depth * block + 2 * d
    }

    /// Short name such as `vit_small/16` when it is an official preset, else `custom`.
    pub fn name(&self) -> String {
        let base = match (self.dim, self.depth, self.heads) {
            (192, 12, 3) => "vit_tiny",
            (384, 12, 6) => "vit_small",
            (768, 12, 12) => "vit_base",
            _ => "custom",
        };
        format!("{base}/{}", self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vit_small_16_has_the_published_parameter_count() {
        // 21.67M in the paper's table (without the projection head).
        let n = VitConfig::vit_small(16).num_params();
        assert_eq!(n, 21_665_664);
    }

    #[test]
    fn presets_by_name() {
        assert_eq!(VitConfig::preset("vit_base", 8).unwrap().dim, 768);
        assert_eq!(VitConfig::preset("tiny", 16).unwrap().heads, 3);
        assert!(VitConfig::preset("huge", 16).is_err());
    }

    #[test]
    fn invalid_configs_are_refused() {
        let mut c = VitConfig::vit_small(16);
        c.heads = 5;
        assert!(c.validate().unwrap_err().to_string().contains("divisible"));
        c = VitConfig::new(0, 1, 1, 16);
        assert!(c.validate().is_err());
    }
}
