//! The architecture of a checkpoint, read from its tensor shapes (official key layout).

use super::StateDict;
use crate::{Error, Result, VitConfig};

/// Reads dim, depth, patch, MLP width and the position grid from the tensors. Heads are
/// not stored anywhere: `heads` if given, else dim / 64 as in every official model.
pub fn detect_config(sd: &StateDict, heads: Option<usize>) -> Result<VitConfig> {
    let bad = |m: String| Err(Error::Weights(m));
    let cls = sd.shape("cls_token")?;
    let [1, 1, dim] = cls[..] else {
        return bad(format!(
            "'cls_token' has shape {cls:?}, expected [1, 1, dim]"
        ));
    };
    let pw = sd.shape("patch_embed.proj.weight")?;
    let [d, 3, ph, pw2] = pw[..] else {
        return bad(format!(
            "'patch_embed.proj.weight' has shape {pw:?}, expected [{dim}, 3, patch, patch]"
        ));
    };
    if d != dim || ph != pw2 || ph == 0 {
        return bad(format!(
            "'patch_embed.proj.weight' has shape {pw:?}, expected [{dim}, 3, patch, patch]"
        ));
    }
    let pos = sd.shape("pos_embed")?;
    let [1, n1, d] = pos[..] else {
        return bad(format!(
            "'pos_embed' has shape {pos:?}, expected [1, 1 + positions, {dim}]"
        ));
    };
    let side = (n1.saturating_sub(1) as f64).sqrt().round() as usize;
    if d != dim || n1 < 2 || side * side + 1 != n1 {
        return bad(format!(
            "'pos_embed' has shape {pos:?}: expected [1, 1 + side*side, {dim}] (a square grid)"
        ));
    }
    let mut depth = 0;
    while sd.contains(&format!("blocks.{depth}.norm1.weight")) {
        depth += 1;
    }
    if depth == 0 {
        return bad("no transformer blocks ('blocks.0.norm1.weight' is missing)".into());
    }
    let fc1 = sd.shape("blocks.0.mlp.fc1.weight")?;
    let [hidden, d] = fc1[..] else {
        return bad(format!(
            "'blocks.0.mlp.fc1.weight' has shape {fc1:?}, expected [hidden, {dim}]"
        ));
    };
    if d != dim || hidden == 0 {
        return bad(format!(
            "'blocks.0.mlp.fc1.weight' has shape {fc1:?}, expected [hidden, {dim}]"
        ));
    }
    let heads = match heads {
        Some(h) => h,
        None if dim % 64 == 0 => dim / 64,
        None => return Err(Error::UnknownHeads { dim }),
    };
    let config = VitConfig {
        dim,
        depth,
        heads,
        patch: ph,
        mlp_hidden: hidden,
        pos_grid: side,
        layer_norm_eps: 1e-6,
        drop_path_rate: 0.0,
    };
    config
        .validate()
        .map_err(|e| Error::Weights(e.to_string()))?;
    Ok(config)
}
