//! What a PAWS run's checkpoint file is, for both runs that write one (`dino paws` and the
//! fine-tuning): the encoder under `encoder.` (official keys), each optimiser buffer under
//! `optimizer.{parameter}.{i}`, the run's settings and position as JSON in the header under a
//! `format` of its own; and the reading back, which names the file's kind in its errors.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::PawsEncoder;
use crate::train::DinoOptimizer;
use crate::weights::{RawTensor, StateDict, safetensors_bytes};
use crate::{Error, Result};

/// The checkpoint of a run as bytes: the encoder and the optimiser's buffers as tensors, and
/// `header` (given each parameter's optimiser step count) under `key`.
pub(crate) fn checkpoint_bytes<H: Serialize>(
    encoder: &PawsEncoder,
    optimizer: &DinoOptimizer,
    format: &str,
    key: &str,
    header: impl FnOnce(BTreeMap<String, u64>) -> H,
) -> Result<Vec<u8>> {
    let mut sd = StateDict::new();
    for (k, t) in encoder.to_state_dict()? {
        sd.insert(format!("encoder.{k}"), t);
    }
    let mut steps = BTreeMap::new();
    for (name, state) in &optimizer.states {
        steps.insert(name.clone(), state.step);
        for (i, buf) in state.buffers.iter().enumerate() {
            sd.insert(
                format!("optimizer.{name}.{i}"),
                RawTensor::from_tensor(buf.clone())?,
            );
        }
    }
    let header = serde_json::to_string(&header(steps)).expect("serialises");
    safetensors_bytes(&sd, false, format, &[(key, header)])
}

/// The header entries of a file of `format`; `what` names the kind of file in errors and
/// `not_it` says what a file of another format is not.
pub(crate) fn metadata(
    bytes: &[u8],
    format: &str,
    what: &str,
    not_it: &str,
) -> Result<HashMap<String, String>> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::Weights(format!("{what}: {e}")))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(format) {
        return Err(Error::Weights(format!("{what}: {not_it}")));
    }
    Ok(meta)
}

/// The JSON header entry `key` of `meta` (`missing`: what its absence means).
pub(crate) fn header<T: DeserializeOwned>(
    meta: &HashMap<String, String>,
    key: &str,
    what: &str,
    missing: &str,
) -> Result<T> {
    let bad = |m: String| Error::Weights(format!("{what}: {m}"));
    serde_json::from_str(meta.get(key).ok_or_else(|| bad(missing.into()))?)
        .map_err(|e| bad(format!("bad header: {e}")))
}

/// A run read from the checkpoint file at `path` by `read`, errors prefixed with the path.
pub(crate) fn load<T>(path: &std::path::Path, read: impl FnOnce(&[u8]) -> Result<T>) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read(&bytes).map_err(|e| Error::Weights(format!("{}: {e}", path.display())))
}

/// The tensors of a safetensors file split into those under `prefix` (prefix removed) and the
/// rest.
pub(crate) fn read_tensors(bytes: &[u8], prefix: &str) -> Result<(StateDict, StateDict)> {
    let bad = |m: String| Error::Weights(format!("PAWS checkpoint: {m}"));
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let (mut inside, mut rest) = (StateDict::new(), StateDict::new());
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(bad(format!(
                "tensor '{name}' is {:?}, not f32",
                view.dtype()
            )));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let t = RawTensor::new(view.shape().to_vec(), data)?;
        match name.strip_prefix(prefix) {
            Some(k) => inside.insert(k, t),
            None => rest.insert(name, t),
        }
    }
    Ok((inside, rest))
}
