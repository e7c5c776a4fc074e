//! Hugging Face `ViTModel` key layout (as published for `facebook/dino-vit{s,b}{8,16}`)
//! to the official one: separate query/key/value become the fused `qkv`.

use super::{RawTensor, StateDict};
use crate::Result;

const RENAMES: [(&str, &str); 5] = [
    ("attention.output.dense", "attn.proj"),
    ("layernorm_before", "norm1"),
    ("layernorm_after", "norm2"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
];

/// Converts a HF state dict (keys without any `vit.` prefix) to the official layout.
/// Tensors it does not know stay under their HF name, so the model build reports them.
pub fn hf_to_official(mut hf: StateDict) -> Result<StateDict> {
    let mut out = StateDict::new();
    fn mv(hf: &mut StateDict, out: &mut StateDict, from: &str, to: &str) {
        if let Some(t) = hf.remove(from) {
            out.insert(to, t);
        }
    }
    for (from, to) in [
        ("embeddings.cls_token", "cls_token"),
        ("embeddings.position_embeddings", "pos_embed"),
        (
            "embeddings.patch_embeddings.projection.weight",
            "patch_embed.proj.weight",
        ),
        (
            "embeddings.patch_embeddings.projection.bias",
            "patch_embed.proj.bias",
        ),
        ("layernorm.weight", "norm.weight"),
        ("layernorm.bias", "norm.bias"),
    ] {
        mv(&mut hf, &mut out, from, to);
    }
    let mut i = 0;
    while hf
        .keys()
        .any(|k| k.starts_with(&format!("encoder.layer.{i}.")))
    {
        let h = format!("encoder.layer.{i}.");
        let o = format!("blocks.{i}.");
        for suffix in ["weight", "bias"] {
            let parts: Vec<String> = ["query", "key", "value"]
                .iter()
                .map(|n| format!("{h}attention.attention.{n}.{suffix}"))
                .collect();
            let mut pieces = Vec::new();
            for p in &parts {
                pieces.push(hf.take_any(p)?);
            }
            out.insert(format!("{o}attn.qkv.{suffix}"), concat_rows(pieces)?);
            for (from, to) in RENAMES {
                mv(
                    &mut hf,
                    &mut out,
                    &format!("{h}{from}.{suffix}"),
                    &format!("{o}{to}.{suffix}"),
                );
            }
        }
        i += 1;
    }
    // The pooler (dense + tanh on CLS) is not part of DINO; published DINO repos have none.
    let pooler: Vec<String> = hf
        .keys()
        .filter(|k| k.starts_with("pooler."))
        .map(String::from)
        .collect();
    for k in pooler {
        hf.remove(&k);
    }
    for (k, t) in hf {
        out.insert(k, t);
    }
    Ok(out)
}

/// Concatenates tensors along their first axis (all other axes must agree).
fn concat_rows(parts: Vec<RawTensor>) -> Result<RawTensor> {
    if parts.iter().any(|p| p.shape.is_empty()) {
        return Err(crate::Error::Weights(
            "query/key/value tensors must not be scalars".into(),
        ));
    }
    let rest = parts[0].shape[1..].to_vec();
    let shape_only = parts.iter().all(RawTensor::is_shape_only);
    let mut rows = 0;
    let mut data = Vec::new();
    for p in parts {
        if p.shape[1..] != rest[..] {
            return Err(crate::Error::Weights(format!(
                "query/key/value tensors disagree in shape: {:?} vs {:?}",
                p.shape, rest
            )));
        }
        rows += p.shape[0];
        data.extend_from_slice(&p.data);
    }
    let mut shape = vec![rows];
    shape.extend(rest);
    if shape_only {
        return Ok(RawTensor::shape_only(shape));
    }
    RawTensor::new(shape, data)
}
