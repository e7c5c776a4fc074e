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
    let meta = HashMap::from([
        ("format".to_string(), OWN_FORMAT.to_string()),
        (
            CONFIG_KEY.to_string(),
            serde_json::to_string(config).expect("config serialises"),
        ),
    ]);
    safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::Weights(format!("cannot serialise: {e}")))
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
