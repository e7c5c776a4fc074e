//! Reading safetensors bytes into a [`StateDict`] (any float dtype becomes f32).

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors};

use super::{RawTensor, StateDict};
use crate::{Error, Result};

/// The tensors and the header metadata of a safetensors file.
pub(crate) fn read(bytes: &[u8]) -> Result<(StateDict, HashMap<String, String>)> {
    let bad = |e: safetensors::SafeTensorError| {
        Error::Weights(format!("not a valid safetensors file: {e}"))
    };
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    let st = SafeTensors::deserialize(bytes).map_err(bad)?;
    let mut sd = StateDict::new();
    for (name, view) in st.tensors() {
        let data = to_f32(view.dtype(), view.data()).ok_or_else(|| {
            Error::Weights(format!(
                "tensor '{name}' has unsupported dtype {:?}",
                view.dtype()
            ))
        })?;
        sd.insert(name, RawTensor::new(view.shape().to_vec(), data)?);
    }
    Ok((sd, meta.metadata().clone().unwrap_or_default()))
}

/// Little-endian bytes of a float tensor to f32.
pub(crate) fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        _ => return None,
    })
}
