//! Helpers shared by every test of the workspace (the cross-crate tests here, the CLI's
//! end-to-end tests, the browser package's tests in wasm): fixture paths, `.npy` reading,
//! comparisons; with the `models` feature, building fixture models.

use std::path::{Path, PathBuf};

#[cfg(feature = "models")]
use burn::tensor::TensorData;
#[cfg(feature = "models")]
use burn::tensor::{Device, Tensor};
#[cfg(feature = "models")]
use dino_core::VisionTransformer;
#[cfg(feature = "models")]
use dino_core::weights::{LoadOptions, RawTensor, StateDict, load_file};
#[cfg(feature = "models")]
use std::collections::HashMap;

/// `tests/fixtures/...`
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// The manifest written by `tests/reference/make_fixtures.py`.
pub fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("manifest.json")).expect("manifest.json");
    serde_json::from_str(&text).expect("valid manifest")
}

/// A `.npy` fixture as (shape, values as f32).
pub fn read_npy(rel: &str) -> (Vec<usize>, Vec<f32>) {
    read_npy_file(&fixture(rel))
}

/// A `.npy` file as (shape, values as f32).
pub fn read_npy_file(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    npy_from_bytes(&bytes)
}

/// The shape, element type (`<f4` or `|u1`) and data bytes of a little-endian C-order `.npy`
/// (versions 1-3: the format is a magic string, a header dict and the raw array).
fn npy_parts(bytes: &[u8]) -> (Vec<usize>, String, &[u8]) {
    assert_eq!(&bytes[..6], b"\x93NUMPY", "not a .npy file");
    let (len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + len]).expect("ASCII header");
    let field = |key: &str| -> &str {
        let at = header
            .find(key)
            .unwrap_or_else(|| panic!("{key} missing: {header}"));
        header[at + key.len()..].trim_start_matches([':', ' ', '\''])
    };
    assert!(field("'fortran_order'").starts_with("False"), "{header}");
    let descr = field("'descr'").split('\'').next().unwrap().to_string();
    let shape_text = field("'shape'");
    let shape = shape_text[1..shape_text.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    (shape, descr, &bytes[start + len..])
}

/// `.npy` bytes (f32, or u8 widened to f32) as (shape, values).
pub fn npy_from_bytes(bytes: &[u8]) -> (Vec<usize>, Vec<f32>) {
    let (shape, descr, data) = npy_parts(bytes);
    let values = match descr.as_str() {
        "<f4" => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "|u1" => data.iter().map(|&v| f32::from(v)).collect(),
        d => panic!("unsupported .npy type {d}"),
    };
    (shape, values)
}

/// The values of a u8 `.npy` file (masks).
pub fn read_npy_u8_file(path: &Path) -> Vec<u8> {
    npy_u8(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The values of u8 `.npy` bytes (masks).
pub fn npy_u8(bytes: &[u8]) -> Vec<u8> {
    let (_, descr, data) = npy_parts(bytes);
    assert_eq!(descr, "|u1", "not a u8 array");
    data.to_vec()
}

/// `DINO_TEST_DEVICE`: which backend the fixture tests run the Burn model on (empty: burn-flex).
#[cfg(feature = "models")]
fn test_device_name() -> String {
    std::env::var("DINO_TEST_DEVICE").unwrap_or_default()
}

/// Whether the fixture tests run on burn-flex (`DINO_TEST_DEVICE` unset or `flex`), the
/// backend whose summation order the tightest tolerances were set on.
#[cfg(feature = "models")]
pub fn on_flex() -> bool {
    matches!(test_device_name().as_str(), "" | "flex")
}

/// Whether the fixture tests run on the GPU path (`DINO_TEST_DEVICE=wgpu`): CubeCL's kernels,
/// whose reductions sum in other orders again (tree reductions across a workgroup).
#[cfg(feature = "models")]
pub fn on_gpu_path() -> bool {
    test_device_name() == "wgpu"
}

/// The device the fixture tests run the Burn model on: burn-flex; with
/// `DINO_TEST_DEVICE=libtorch` in a `--features tch` build LibTorch's CPU kernels (the CUDA
/// path's backend, checked against the same PyTorch fixtures without a GPU); with
/// `DINO_TEST_DEVICE=wgpu` in a `--features wgpu` build the GPU path (CubeCL's kernels) on the
/// default wgpu adapter, a software one in CI.
#[cfg(feature = "models")]
pub fn device() -> Device {
    if on_flex() {
        return Device::flex();
    }
    match test_device_name().as_str() {
        #[cfg(feature = "tch")]
        #[allow(deprecated)] // burn-tch: deprecated upstream, dino's CUDA path that builds
        "libtorch" => Device::libtorch(),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(Default::default()),
        other => panic!(
            "DINO_TEST_DEVICE={other}: `flex`, `libtorch` in a build with `--features tch`, \
             `wgpu` in a build with `--features wgpu`"
        ),
    }
}

/// Whether the test device computes in `dtype` (`Device::supports_dtype`), where the tests of a
/// half precision take their refusal branch when it does not. `DINO_TEST_DEVICE_HAS=f16`
/// (names, comma-separated) says it must: a run meant to exercise f16 on an adapter (lavapipe
/// in `tests/run-all.sh`) then fails where the adapter lacks it instead of passing by refusal.
#[cfg(feature = "models")]
pub fn device_computes_in(dtype: burn::tensor::DType) -> bool {
    let has = device().supports_dtype(dtype);
    let name = format!("{dtype:?}").to_lowercase();
    let required = std::env::var("DINO_TEST_DEVICE_HAS").unwrap_or_default();
    if required.split(',').any(|r| r.trim() == name) {
        assert!(
            has,
            "DINO_TEST_DEVICE_HAS={required}: the test device has no {name} arithmetic"
        );
    }
    has
}

/// Loads a fixture model the way the CLI does.
#[cfg(feature = "models")]
pub fn load_model(rel: &str, heads: Option<usize>) -> VisionTransformer {
    let opts = LoadOptions {
        heads,
        ..Default::default()
    };
    let w = load_file(fixture(rel), &opts).unwrap_or_else(|e| panic!("{rel}: {e}"));
    VisionTransformer::from_state_dict(&w.config, w.state, &device()).expect("model builds")
}

#[cfg(feature = "models")]
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 tensor")
}

/// Largest absolute difference.
pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// ||a - b|| / ||b||.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt() as f32
}

#[cfg(feature = "models")]
/// A reference script's safetensors fixture: f32 tensors by name and its settings.
pub struct Fixture {
    pub tensors: HashMap<String, RawTensor>,
    pub meta: serde_json::Value,
}

#[cfg(feature = "models")]
impl Fixture {
    /// `tests/fixtures/NAME`: its tensors and the JSON of its `reference` header entry.
    pub fn load_file(name: &str) -> Self {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().as_ref().unwrap()["reference"].clone();
        let tensors = safetensors_f32(&bytes).into_iter().collect();
        Self {
            tensors,
            meta: serde_json::from_str(&meta).unwrap(),
        }
    }

    pub fn get(&self, k: &str) -> &RawTensor {
        self.tensors
            .get(k)
            .unwrap_or_else(|| panic!("fixture has no {k}"))
    }

    /// The tensors under `prefix`, prefix removed.
    pub fn prefixed(&self, prefix: &str) -> StateDict {
        let mut sd = StateDict::new();
        for (k, t) in &self.tensors {
            if let Some(r) = k.strip_prefix(prefix) {
                sd.insert(r, t.clone());
            }
        }
        sd
    }

    pub fn tensor<const D: usize>(&self, k: &str, device: &burn::tensor::Device) -> Tensor<D> {
        let t = self.get(k);
        Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device)
    }

    pub fn f(&self, k: &str) -> f64 {
        self.meta[k].as_f64().unwrap()
    }

    pub fn u(&self, k: &str) -> usize {
        self.meta[k].as_u64().unwrap() as usize
    }
}

/// Every tensor of f32 safetensors bytes, by name.
#[cfg(feature = "models")]
pub fn safetensors_f32(bytes: &[u8]) -> Vec<(String, RawTensor)> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (k, RawTensor::new(v.shape().to_vec(), data).unwrap())
        })
        .collect()
}
