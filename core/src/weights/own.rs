//! This project's weights file: safetensors with the official key layout (readable by any
//! safetensors tool, loadable by timm) and the architecture in the header metadata.

use std::collections::HashMap;

use safetensors::{Dtype, tensor::TensorView};

use super::StateDict;
use crate::{Error, Result, VitConfig};

/// Value of the `format` header entry.
pub const OWN_FORMAT: &str = "dino-rs";
const CONFIG_KEY: &str = "dino.config";

/// The architecture stored in a header, if the file is ours.
pub(crate) fn read_header(meta: &HashMap<String, String>) -> Option<Result<VitConfig>> {
    if meta.get("format").map(String::as_str) != Some(OWN_FORMAT) {
        return None;
    }
    Some(
        meta.get(CONFIG_KEY)
            .ok_or_else(|| Error::Weights(format!("dino-rs file without '{CONFIG_KEY}' header")))
            .and_then(|s| {
                serde_json::from_str::<VitConfig>(s)
                    .map_err(|e| Error::Weights(format!("bad '{CONFIG_KEY}' header: {e}")))
            }),
    )
}

/// Serialises tensors (official layout) and the architecture; `half` stores f16.
pub fn to_safetensors_bytes(sd: &StateDict, config: &VitConfig, half: bool) -> Result<Vec<u8>> {
    to_safetensors_bytes_with(sd, config, half, &[])
}

/// [`to_safetensors_bytes`] with more header entries. The header is written with sorted keys,
/// so the same content always gives the same bytes.
pub fn to_safetensors_bytes_with(
    sd: &StateDict,
    config: &VitConfig,
    half: bool,
    extra: &[(&str, String)],
) -> Result<Vec<u8>> {
    let mut meta = vec![(
        CONFIG_KEY,
        serde_json::to_string(config).expect("config serialises"),
    )];
    meta.extend(extra.iter().cloned());
    safetensors_bytes(sd, half, OWN_FORMAT, &meta)
}

/// Tensors (f32, or f16 with `half`) and header entries as safetensors bytes with the given
/// `format` entry; the header is written with sorted keys, so the same content always gives
/// the same bytes.
pub fn safetensors_bytes(
    sd: &StateDict,
    half: bool,
    format: &str,
    meta: &[(&str, String)],
) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = sd
        .iter()
        .map(|(k, t)| {
            let data = if half {
                t.data
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect()
            } else {
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect()
            };
            (k.to_string(), t.shape.clone(), data)
        })
        .collect();
    let dtype = if half { Dtype::F16 } else { Dtype::F32 };
    let views = bytes
        .iter()
        .map(|(k, s, d)| Ok((k.clone(), TensorView::new(dtype, s.clone(), d)?)))
        .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| Error::Weights(format!("cannot serialise: {e}")))?;
    let mut header = HashMap::from([("format".to_string(), format.to_string())]);
    for (k, v) in meta {
        header.insert(k.to_string(), v.clone());
    }
    let bytes = safetensors::serialize(views, Some(header))
        .map_err(|e| Error::Weights(format!("cannot serialise: {e}")))?;
    canonical_header(bytes)
}

/// Rewrites the JSON header with sorted keys (safetensors writes its metadata map in hash
/// order), keeping the data 8-byte aligned.
fn canonical_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let bad = |m: &str| Error::Weights(format!("cannot write the header: {m}"));
    let n = u64::from_le_bytes(bytes[..8].try_into().map_err(|_| bad("short"))?) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[8..8 + n]).map_err(|_| bad("not JSON"))?;
    let mut text = serde_json::to_vec(&header).map_err(|_| bad("not JSON"))?;
    while (8 + text.len()) % 8 != 0 {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend((text.len() as u64).to_le_bytes());
    out.extend(text);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// Writes the file atomically: a temporary file in the same folder, then a rename, so an
/// interrupted export never leaves a truncated file under the final name.
#[cfg(not(target_family = "wasm"))]
pub fn save_safetensors(
    path: &std::path::Path,
    sd: &StateDict,
    config: &VitConfig,
    half: bool,
) -> Result<()> {
    let bytes = to_safetensors_bytes(sd, config, half)?;
    crate::atomic_write(path, &bytes)
}
