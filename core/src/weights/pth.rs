//! Reading PyTorch `.pth` checkpoints (zip or legacy pickle) with `pytorch-reader`, which
//! parses the pickle without Python. Only the tensors of the wanted network are read, and
//! only after the file has shown, from its metadata alone, that they are a ViT's and that
//! it holds their bytes: a pickle can declare any shape over a one-element storage (zero
//! strides), which would otherwise be materialised in full (a 154 KB file asking for 6.4 GB
//! per tensor).

#[cfg(not(target_family = "wasm"))]
use std::path::Path;

use pytorch_reader::{DType, PytorchReader, Tensor};

use super::{CheckpointKey, RawTensor, StateDict, detect_config, layout};
use crate::model::VitParams;
use crate::model::params::ParamSource;
use crate::model::resnet::ResNetConfig;
use crate::{Error, Result};

/// The network `key` of a `.pth` file, its tensors read from the file only once checked.
#[cfg(not(target_family = "wasm"))]
pub(crate) fn read_pth(path: &Path, key: CheckpointKey) -> Result<StateDict> {
    let what = path.display().to_string();
    let bad = |m: String| Error::Weights(format!("{what}: {m}"));
    let reader = PytorchReader::new(path)
        .map_err(|e| bad(format!("not a readable PyTorch checkpoint: {e}")))?;
    let file_len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    select_and_read(reader, file_len, key, &bad)
}

/// The same from the bytes of a `.pth` file (the browser, which has no files); they are
/// moved into the reader, not copied.
pub(crate) fn read_pth_bytes(bytes: Vec<u8>, key: CheckpointKey) -> Result<StateDict> {
    let bad = |m: String| Error::Weights(m);
    let len = bytes.len() as u64;
    let reader = PytorchReader::from_bytes(bytes, None)
        .map_err(|e| bad(format!("not a readable PyTorch checkpoint: {e}")))?;
    select_and_read(reader, len, key, &bad)
}

fn select_and_read(
    reader: PytorchReader,
    file_len: u64,
    key: CheckpointKey,
    bad: &dyn Fn(String) -> Error,
) -> Result<StateDict> {
    let tensors = reader.into_tensors();
    // A training checkpoint nests networks: read only the one asked for (the optimizer
    // state of a ViT-B checkpoint alone is 700 MB).
    let nested = tensors
        .keys()
        .any(|k| k.starts_with("teacher.") || k.starts_with("student."));
    let wanted_prefix = format!("{}.", key.as_str());
    if nested && !tensors.keys().any(|k| k.starts_with(&wanted_prefix)) {
        return Err(bad(format!(
            "this training checkpoint has no '{}' network",
            key.as_str()
        )));
    }
    // A PAWS checkpoint: only its encoder (its optimiser state is as large).
    let paws = !nested && tensors.keys().any(|k| k.starts_with("encoder."));
    let wanted: Vec<(String, Tensor)> = tensors
        .into_iter()
        .filter(|(name, _)| {
            (!nested || name.starts_with(&wanted_prefix)) && (!paws || name.starts_with("encoder."))
        })
        .collect();

    // The file bounds what it can hold: torch.save writes each storage once, uncompressed.
    let declared: u128 = wanted.iter().map(|(_, t)| t.byte_len() as u128).sum();
    if declared > u128::from(file_len) {
        return Err(bad(format!(
            "its tensors declare {declared} bytes but the file has {file_len}: tensors that \
             repeat one storage (zero strides, overlapping views) or a corrupt archive; \
             refused before reading"
        )));
    }
    // The architecture, from the shapes alone: every tensor must be one the model uses.
    check_layout(&wanted, key).map_err(|e| match e {
        Error::Weights(m) => bad(format!("{m} (checked before reading any tensor)")),
        other => other,
    })?;

    let mut sd = StateDict::new();
    for (name, t) in wanted {
        let bytes = t
            .read()
            .map_err(|e| bad(format!("cannot read tensor '{name}': {e}")))?;
        let data = convert(t.dtype(), &bytes).ok_or_else(|| {
            bad(format!(
                "tensor '{name}' has unsupported dtype {:?}",
                t.dtype()
            ))
        })?;
        sd.insert(name, RawTensor::new(t.shape().to_vec(), data)?);
    }
    Ok(sd)
}

/// The load pipeline (layout normalisation, architecture detection, the ViT's constructor
/// with its shape checks, no tensor left over) run on shapes without values.
fn check_layout(wanted: &[(String, Tensor)], key: CheckpointKey) -> Result<()> {
    let mut skeleton = StateDict::new();
    for (name, t) in wanted {
        skeleton.insert(name.clone(), RawTensor::shape_only(t.shape().to_vec()));
    }
    let (_, official) = layout::normalise(skeleton, false, key)?;
    // a ResNet: its shapes are checked by the network's constructor after reading (the bytes
    // read are bounded by the file, checked above)
    if let Some(resnet) = ResNetConfig::detect(&official) {
        return resnet.map(|_| ());
    }
    // the number of heads changes no shape
    let config = detect_config(&official, Some(1))?;
    let source = ParamSource::load(official);
    VitParams::new(&config, &source.root())?;
    source.finish()
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
