//! Reading PyTorch `.pth` checkpoints (zip or legacy pickle) with `pytorch-reader`, which
//! parses the pickle without Python. Only the tensors of the wanted network are read.

use std::path::Path;

use pytorch_reader::{DType, PytorchReader};

use super::{CheckpointKey, RawTensor, StateDict};
use crate::{Error, Result};

pub(crate) fn read_pth(path: &Path, key: CheckpointKey) -> Result<StateDict> {
    let reader = PytorchReader::new(path).map_err(|e| {
        Error::Weights(format!(
            "{}: not a readable PyTorch checkpoint: {e}",
            path.display()
        ))
    })?;
    let tensors = reader.into_tensors();
    // A training checkpoint nests networks: read only the one asked for (the optimizer
    // state of a ViT-B checkpoint alone is 700 MB).
    let nested = tensors
        .keys()
        .any(|k| k.starts_with("teacher.") || k.starts_with("student."));
    let wanted = format!("{}.", key.as_str());
    if nested && !tensors.keys().any(|k| k.starts_with(&wanted)) {
        return Err(Error::Weights(format!(
            "{}: this training checkpoint has no '{}' network",
            path.display(),
            key.as_str()
        )));
    }
    let mut sd = StateDict::new();
    for (name, t) in tensors {
        if nested && !name.starts_with(&wanted) {
            continue;
        }
        let bytes = t.read().map_err(|e| {
            Error::Weights(format!(
                "{}: cannot read tensor '{name}': {e}",
                path.display()
            ))
        })?;
        let data = convert(t.dtype(), &bytes).ok_or_else(|| {
            Error::Weights(format!(
                "tensor '{name}' has unsupported dtype {:?}",
                t.dtype()
            ))
        })?;
        sd.insert(name, RawTensor::new(t.shape().to_vec(), data)?);
    }
    Ok(sd)
}

/// Native-endian bytes (as the reader returns them) to f32.
fn convert(dtype: DType, b: &[u8]) -> Option<Vec<f32>> {
    macro_rules! cast {
        ($t:ty, $n:expr) => {
            b.chunks_exact($n)
                .map(|c| <$t>::from_ne_bytes(c.try_into().unwrap()) as f32)
                .collect()
        };
    }
    Some(match dtype {
        DType::F32 => cast!(f32, 4),
        DType::F64 => cast!(f64, 8),
        DType::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_ne_bytes(c.try_into().unwrap()).to_f32())
            .collect(),
        DType::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_ne_bytes(c.try_into().unwrap()).to_f32())
            .collect(),
        DType::I64 => cast!(i64, 8),
        DType::I32 => cast!(i32, 4),
        DType::I16 => cast!(i16, 2),
        DType::I8 => cast!(i8, 1),
        DType::U8 | DType::Bool => b.iter().map(|&v| v as f32).collect(),
        _ => return None,
    })
}
