//! A checkpoint's tensors by name, as f32 host memory, with checked access.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use crate::{Error, Result};

/// One tensor: row-major f32 data and its shape (PyTorch orientation).
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl RawTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::Weights(format!(
                "tensor of shape {shape:?} holds {} values instead of {n}",
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }

    /// A tensor's shape without its values: checks a file's layout against a model before
    /// anything is read from it (see `pth.rs`).
    pub(crate) fn shape_only(shape: Vec<usize>) -> Self {
        Self {
            shape,
            data: Vec::new(),
        }
    }

    /// Whether this is a [`shape_only`](Self::shape_only) tensor (of nonzero size).
    pub(crate) fn is_shape_only(&self) -> bool {
        self.data.is_empty() && self.shape.iter().product::<usize>() != 0
    }
}

impl RawTensor {
    /// A Burn parameter holding this tensor on `device`.
    pub fn into_param<const D: usize>(self, device: &Device) -> Param<Tensor<D>> {
        Param::from_tensor(Tensor::from_data(
            TensorData::new(self.data, self.shape),
            device,
        ))
    }

    /// A host copy of a (non-autodiff or autodiff) tensor.
    pub fn from_tensor<const D: usize>(t: Tensor<D>) -> Result<Self> {
        let shape = t.dims().to_vec();
        let data = t
            .inner()
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Weights(format!("cannot read a tensor back: {e:?}")))?;
        Self::new(shape, data)
    }
}

/// Tensors by key. `take` checks presence and shape, `finish` refuses leftovers, so a
/// model built from it used every tensor exactly once.
#[derive(Clone, Debug, Default)]
pub struct StateDict {
    tensors: BTreeMap<String, RawTensor>,
}

impl StateDict {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, key: impl Into<String>, tensor: RawTensor) {
        self.tensors.insert(key.into(), tensor);
    }

    pub fn get(&self, key: &str) -> Option<&RawTensor> {
        self.tensors.get(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawTensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn remove(&mut self, key: &str) -> Option<RawTensor> {
        self.tensors.remove(key)
    }

    /// Shape of a required tensor.
    pub fn shape(&self, key: &str) -> Result<&[usize]> {
        self.tensors
            .get(key)
            .map(|t| t.shape.as_slice())
            .ok_or_else(|| missing(key))
    }

    /// Removes a required tensor of any shape.
    pub fn take_any(&mut self, key: &str) -> Result<RawTensor> {
        self.tensors.remove(key).ok_or_else(|| missing(key))
    }

    /// Removes a required tensor, checking its shape.
    pub fn take(&mut self, key: &str, expected: &[usize]) -> Result<RawTensor> {
        let t = self.tensors.remove(key).ok_or_else(|| missing(key))?;
        if t.shape != expected {
            return Err(Error::Weights(format!(
                "tensor '{key}' has shape {:?}, the model expects {expected:?}",
                t.shape
            )));
        }
        Ok(t)
    }

    /// Fails if any tensor was not used: a file with extra tensors is not the model we built.
    pub fn finish(self) -> Result<()> {
        if self.tensors.is_empty() {
            return Ok(());
        }
        let extra: Vec<String> = self
            .tensors
            .iter()
            .take(8)
            .map(|(k, t)| format!("'{k}' {:?}", t.shape))
            .collect();
        Err(Error::Weights(format!(
            "{} unexpected tensor(s) the model does not use: {}{}",
            self.tensors.len(),
            extra.join(", "),
            if self.tensors.len() > 8 { ", ..." } else { "" }
        )))
    }
}

impl IntoIterator for StateDict {
    type Item = (String, RawTensor);
    type IntoIter = std::collections::btree_map::IntoIter<String, RawTensor>;
    fn into_iter(self) -> Self::IntoIter {
        self.tensors.into_iter()
    }
}

/// Transposes a row-major `rows x cols` matrix (PyTorch `Linear` weights are `[out, in]`,
/// products here want `[in, out]`).
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

fn missing(key: &str) -> Error {
    Error::Weights(format!("missing tensor '{key}'"))
}
