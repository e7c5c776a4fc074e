//! Recognises which layout a set of tensors is in and brings it to the official one.

use super::{CheckpointKey, StateDict, WeightFormat, hf_to_official};
use crate::{Error, Result};

const HF_MARKER: &str = "embeddings.patch_embeddings.projection.weight";

/// Returns the detected format and the backbone tensors under official key names.
pub(crate) fn normalise(
    raw: StateDict,
    own: bool,
    key: CheckpointKey,
) -> Result<(WeightFormat, StateDict)> {
    if raw.is_empty() {
        return Err(Error::Weights("the file holds no tensors".into()));
    }
    // Hugging Face, possibly under `vit.` (ViTForImageClassification) or another prefix.
    let hf_prefix = raw
        .keys()
        .find_map(|k| k.strip_suffix(HF_MARKER))
        .map(String::from);
    if let Some(prefix) = hf_prefix {
        let sd = strip_prefix(raw, &prefix, &[]);
        return Ok((WeightFormat::HuggingFace, hf_to_official(sd)?));
    }
    // A PAWS checkpoint (suncet's `paws_train.py`): `encoder.module.*` beside the optimiser.
    let paws = !raw
        .keys()
        .any(|k| k.starts_with("teacher.") || k.starts_with("student."))
        && raw.keys().any(|k| k.starts_with("encoder."));
    if paws {
        let mut sd = StateDict::new();
        for (k, t) in raw {
            if let Some(rest) = k.strip_prefix("encoder.") {
                sd.insert(rest, t);
            }
        }
        return Ok((WeightFormat::PawsCheckpoint, strip_wrappers(sd)?));
    }
    // A training checkpoint: `teacher.backbone.*`, `student.module.backbone.*`.
    let nested = raw
        .keys()
        .any(|k| k.starts_with("teacher.") || k.starts_with("student."));
    if nested {
        let net = format!("{}.", key.as_str());
        if !raw.keys().any(|k| k.starts_with(&net)) {
            return Err(Error::Weights(format!(
                "this training checkpoint has no '{}' network",
                key.as_str()
            )));
        }
        // keep only the chosen network (training checkpoints also hold optimiser state)
        let mut sd = StateDict::new();
        for (k, t) in raw {
            if let Some(rest) = k.strip_prefix(&net) {
                sd.insert(rest, t);
            }
        }
        let sd = strip_wrappers(sd)?;
        let format = if own {
            WeightFormat::Dino
        } else {
            WeightFormat::OfficialCheckpoint(key)
        };
        return Ok((format, sd));
    }
    let sd = strip_wrappers(raw)?;
    Ok((
        if own {
            WeightFormat::Dino
        } else {
            WeightFormat::OfficialBackbone
        },
        sd,
    ))
}

/// Removes `module.` (DistributedDataParallel) and `backbone.` (MultiCropWrapper) prefixes
/// and the projection head, as the official evaluation scripts do; of a ResNet also the
/// classifier or PAWS heads (`fc.*`, `pred.*`): the features are the pooled last stage, as
/// DINO's `eval_knn.py` / `eval_linear.py` take them (`model.fc = nn.Identity()`).
fn strip_wrappers(mut sd: StateDict) -> Result<StateDict> {
    if sd.keys().all(|k| k.starts_with("module.")) {
        sd = strip_prefix(sd, "module.", &[]);
    }
    if sd.keys().any(|k| k.starts_with("backbone.")) {
        sd = strip_prefix(sd, "backbone.", &["head."]);
    }
    if sd.contains("cls_token") {
        return Ok(sd);
    }
    if sd.contains("conv1.weight") && sd.contains("layer1.0.conv1.weight") {
        let mut out = StateDict::new();
        for (k, t) in sd {
            if !k.starts_with("fc.") && !k.starts_with("pred.") {
                out.insert(k, t);
            }
        }
        return Ok(out);
    }
    let some: Vec<&str> = sd.keys().take(5).collect();
    Err(Error::Weights(format!(
        "no ViT or ResNet backbone found: expected official ViT keys ('cls_token', \
         'pos_embed', 'blocks.0.attn.qkv.weight', ...), Hugging Face ViTModel keys \
         ('embeddings.cls_token', ...) or ResNet keys ('conv1.weight', \
         'layer1.0.conv1.weight', ...), found {} tensors such as {some:?} (XCiT checkpoints \
         are not supported)",
        sd.len()
    )))
}

/// Keeps tensors under `prefix` (without it) and drops those under any of `drop`;
/// anything else is kept as is so that the model build reports it.
fn strip_prefix(sd: StateDict, prefix: &str, drop: &[&str]) -> StateDict {
    let mut out = StateDict::new();
    for (k, t) in sd {
        if let Some(rest) = k.strip_prefix(prefix) {
            out.insert(rest, t);
        } else if !drop.iter().any(|d| k.starts_with(d)) {
            out.insert(k, t);
        }
    }
    out
}
