//! The exported `Dino` class.

use dino_core::VitConfig;
use dino_core::cpu::{CpuFeatures, Outputs};
use dino_core::features::search::Index;
use dino_core::features::{descriptor, groups, l2_normalize};
use dino_core::imaging::{Resize, normalize_chw, prepare};
use dino_core::masks::mass_threshold_masks;
use dino_core::weights::{CheckpointKey, LoadOptions, StateDict, load_network_owned};
use js_sys::{Float32Array, Object, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::input::to_rgb;
use crate::options::{
    AttentionOptions, BackendChoice, check_fits_in_memory, check_threshold, parse_size,
};
use crate::runner::Runner;

fn get(options: &JsValue, key: &str) -> Option<JsValue> {
    if options.is_undefined() || options.is_null() {
        return None;
    }
    Reflect::get(options, &key.into())
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(obj, &key.into(), &value.into());
}

/// `options.size`: a number (short side) or a resize string; `default` when absent.
fn size_option(options: &JsValue, default: Resize) -> Result<Resize, JsError> {
    match get(options, "size") {
        Some(s) => {
            let s = s
                .as_f64()
                .map(|n| format!("{n}"))
                .or_else(|| s.as_string())
                .ok_or_else(|| JsError::new("size must be a number or a string"))?;
            parse_size(Some(&s)).map_err(|e| JsError::new(&e))
        }
        None => Ok(default),
    }
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
export type Backend = 'auto' | 'webgpu' | 'cpu';
export interface LoadOptions {
  backend?: Backend; heads?: number; patch?: number; checkpoint?: 'teacher' | 'student';
}
export type ImageInput = Uint8Array | ArrayBuffer | Blob | ImageData | HTMLImageElement
  | HTMLCanvasElement | HTMLVideoElement | ImageBitmap | OffscreenCanvas;
export interface AttentionOptions { threshold?: number; size?: number | string; }
export interface EmbedOptions { size?: number | string; }
export interface Duplicates {
  pairs: { a: number; b: number; score: number }[];
  groups: { members: number[]; minScore: number; maxScore: number }[];
}
export interface AttentionResult {
  heads: number; gridH: number; gridW: number; width: number; height: number;
  threshold: number; attention: Float32Array; masks: Uint8Array; ms: number; backend: string;
}
"#;

/// `thresholdMasks(attention, heads, threshold)`: the masks of `visualize_attention.py` from
/// attention already computed (a slider can recompute them without running the model).
#[wasm_bindgen(js_name = thresholdMasks)]
pub fn threshold_masks(
    attention: &[f32],
    heads: usize,
    threshold: f64,
) -> Result<Uint8Array, JsError> {
    let t = check_threshold(threshold).map_err(|e| JsError::new(&e))?;
    let m =
        mass_threshold_masks(attention, heads, t).map_err(|e| JsError::new(&crate::explain(e)))?;
    Ok(Uint8Array::from(&m[..]))
}

/// `findDuplicates(descriptors, dim, threshold, k = 10)`: near-duplicate pairs and groups of
/// `[N, dim]` descriptors (from `copyDescriptor`), as `dino dedup` finds them: cosine
/// similarity of the L2-normalised rows, each row's `k` best matches, pairs at or above the
/// threshold, groups = connected components. Returns `{ pairs: [{a, b, score}], groups:
/// [{members, minScore, maxScore}] }`, strongest pairs and largest groups first.
#[wasm_bindgen(js_name = findDuplicates, unchecked_return_type = "Duplicates")]
pub fn find_duplicates(
    descriptors: &[f32],
    dim: usize,
    threshold: f64,
    #[wasm_bindgen(unchecked_optional_param_type = "number")] k: Option<usize>,
) -> Result<JsValue, JsError> {
    if dim == 0 || !descriptors.len().is_multiple_of(dim) {
        return Err(JsError::new(&format!(
            "{} values are not rows of {dim}",
            descriptors.len()
        )));
    }
    if !(-1.0..=1.0).contains(&threshold) {
        return Err(JsError::new(
            "threshold is a cosine similarity, between -1 and 1",
        ));
    }
    let n = descriptors.len() / dim;
    let mut rows = descriptors.to_vec();
    l2_normalize(&mut rows, dim);
    let index = Index::new(&rows, dim).map_err(|e| JsError::new(&crate::explain(e)))?;
    let hits = index
        .search(&rows, k.unwrap_or(10).max(1), true)
        .map_err(|e| JsError::new(&crate::explain(e)))?;
    let pairs = groups::pairs_above(&hits, threshold as f32);
    let found = groups::connected_groups(n, &pairs);
    let out = Object::new();
    let js_pairs = js_sys::Array::new();
    for p in &pairs {
        let o = Object::new();
        set(&o, "a", p.a as u32);
        set(&o, "b", p.b as u32);
        set(&o, "score", p.score);
        js_pairs.push(&o);
    }
    let js_groups = js_sys::Array::new();
    for g in &found {
        let o = Object::new();
        let members: js_sys::Array = g.members.iter().map(|&m| JsValue::from(m as u32)).collect();
        set(&o, "members", members);
        set(&o, "minScore", g.min_score);
        set(&o, "maxScore", g.max_score);
        js_groups.push(&o);
    }
    set(&out, "pairs", js_pairs);
    set(&out, "groups", js_groups);
    Ok(out.into())
}

/// A DINO ViT loaded in the page.
#[wasm_bindgen]
pub struct Dino {
    runner: Runner,
    note: Option<String>,
}

#[wasm_bindgen]
impl Dino {
    /// `await Dino.load(bytes, { backend: 'auto' | 'webgpu' | 'cpu', heads?, patch?,
    /// checkpoint: 'teacher' | 'student' })`: the bytes of a weights file, as natively:
    /// safetensors in the official layout, the Hugging Face `ViTModel` layout or this
    /// project's format (f32 or f16), or an official PyTorch `.pth` (a backbone such as
    /// `dino_deitsmall8_pretrain.pth`, or a `main_dino.py` training checkpoint: its teacher
    /// by default).
    pub async fn load(
        bytes: Uint8Array,
        #[wasm_bindgen(unchecked_optional_param_type = "LoadOptions")] options: JsValue,
    ) -> Result<Dino, JsError> {
        let backend = match get(&options, "backend").and_then(|v| v.as_string()) {
            Some(s) => s.parse::<BackendChoice>().map_err(|e| JsError::new(&e))?,
            None => BackendChoice::Auto,
        };
        let heads = match get(&options, "heads") {
            Some(v) => Some(
                v.as_f64()
                    .filter(|h| *h >= 1.0 && h.fract() == 0.0)
                    .ok_or_else(|| JsError::new("heads must be a positive integer"))?
                    as usize,
            ),
            None => None,
        };
        let checkpoint_key = match get(&options, "checkpoint") {
            Some(v) => v
                .as_string()
                .ok_or_else(|| JsError::new("checkpoint must be 'teacher' or 'student'"))?
                .parse::<CheckpointKey>()
                .map_err(|e| JsError::new(&e.to_string()))?,
            None => CheckpointKey::Teacher,
        };
        let opts = LoadOptions {
            checkpoint_key,
            heads,
        };
        check_fits_in_memory(bytes.length() as u64, wasm_memory_in_use())
            .map_err(|e| JsError::new(&e))?;
        let w = load_network_owned(bytes.to_vec(), &opts)
            .and_then(|n| n.into_vit("the browser package"))
            .map_err(|e| JsError::new(&crate::explain(e)))?;
        if let Some(p) = get(&options, "patch").and_then(|v| v.as_f64())
            && p as usize != w.config.patch
        {
            return Err(JsError::new(&format!(
                "the weights have patch size {}, not {p}",
                w.config.patch
            )));
        }
        let (runner, note) = choose_backend(backend, &w.config, w.state)
            .await
            .map_err(|e| JsError::new(&e))?;
        Ok(Dino { runner, note })
    }

    /// Which backend runs the model: `'cpu'` or `'webgpu'`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.runner.backend().into()
    }

    /// Why `auto` chose this backend (or `undefined`).
    #[wasm_bindgen(getter, js_name = backendNote)]
    pub fn backend_note(&self) -> Option<String> {
        self.note.clone()
    }

    #[wasm_bindgen(getter)]
    pub fn heads(&self) -> usize {
        self.runner.config().heads
    }

    #[wasm_bindgen(getter)]
    pub fn patch(&self) -> usize {
        self.runner.config().patch
    }

    /// Feature dimension of `embed`.
    #[wasm_bindgen(getter)]
    pub fn dim(&self) -> usize {
        self.runner.config().dim
    }

    /// `await model.attention(image, { threshold: 0.6, size: 480 })` ->
    /// `{ heads, gridH, gridW, width, height, attention: Float32Array [heads*gridH*gridW],
    /// masks: Uint8Array (same shape, 0/1), ms }`: the last block's CLS-to-patch attention
    /// per head and the masks keeping `threshold` of each head's mass. `size` resizes the
    /// short side (a number) or takes a CLI `--resize` string (`'none'`, `'224x224'`...).
    #[wasm_bindgen(unchecked_return_type = "AttentionResult")]
    pub async fn attention(
        &self,
        #[wasm_bindgen(unchecked_param_type = "ImageInput")] image: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "AttentionOptions")] options: JsValue,
    ) -> Result<JsValue, JsError> {
        let mut opts = AttentionOptions::default();
        if let Some(t) = get(&options, "threshold") {
            let t = t
                .as_f64()
                .ok_or_else(|| JsError::new("threshold must be a number"))?;
            opts.threshold = check_threshold(t).map_err(|e| JsError::new(&e))?;
        }
        opts.resize = size_option(&options, opts.resize)?;
        let input = self.prepare(&image, &opts.resize).await?;
        let t0 = now_ms();
        let out = self
            .run(
                &input,
                Outputs {
                    attention: true,
                    ..Default::default()
                },
            )
            .await?;
        let heads = self.runner.config().heads;
        let masks = mass_threshold_masks(&out.attention, heads, opts.threshold)
            .map_err(|e| JsError::new(&crate::explain(e)))?;
        let ms = now_ms() - t0;
        let r = Object::new();
        set(&r, "heads", heads as u32);
        set(&r, "gridH", out.grid.0 as u32);
        set(&r, "gridW", out.grid.1 as u32);
        set(&r, "width", input.width());
        set(&r, "height", input.height());
        set(&r, "threshold", opts.threshold);
        set(&r, "attention", Float32Array::from(&out.attention[..]));
        set(&r, "masks", Uint8Array::from(&masks[..]));
        set(&r, "ms", ms);
        set(&r, "backend", self.runner.backend());
        Ok(r.into())
    }

    /// `await model.embed(image, { size })` -> `Float32Array` (the normed CLS feature; with
    /// the official evaluation transform by default: short side 256, centre crop 224).
    pub async fn embed(
        &self,
        #[wasm_bindgen(unchecked_param_type = "ImageInput")] image: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "EmbedOptions")] options: JsValue,
    ) -> Result<Float32Array, JsError> {
        let resize = size_option(&options, Resize::default())?;
        let f = self.cls(&image, &resize).await?;
        Ok(Float32Array::from(&f[..]))
    }

    /// `await model.copyDescriptor(image, { size = '320x320' })` -> `Float32Array` of
    /// `2 * dim`: the normed CLS token and the GeM (p = 4) pool of the patch tokens, the
    /// descriptor of `eval_copy_detection.py` (and `dino dedup`).
    #[wasm_bindgen(js_name = copyDescriptor)]
    pub async fn copy_descriptor(
        &self,
        #[wasm_bindgen(unchecked_param_type = "ImageInput")] image: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "EmbedOptions")] options: JsValue,
    ) -> Result<Float32Array, JsError> {
        let resize = size_option(
            &options,
            Resize::Exact {
                height: 320,
                width: 320,
            },
        )?;
        let input = self.prepare(&image, &resize).await?;
        let out = self
            .run(
                &input,
                Outputs {
                    patches: true,
                    ..Default::default()
                },
            )
            .await?;
        let d = descriptor::copy_detection(&out.cls, &out.patches, self.runner.config().dim);
        Ok(Float32Array::from(&d[..]))
    }

    /// `await model.similarity(a, b)` -> cosine similarity of the two images' CLS features.
    pub async fn similarity(
        &self,
        #[wasm_bindgen(unchecked_param_type = "ImageInput")] a: JsValue,
        #[wasm_bindgen(unchecked_param_type = "ImageInput")] b: JsValue,
    ) -> Result<f64, JsError> {
        let r = Resize::default();
        let (x, y) = (self.cls(&a, &r).await?, self.cls(&b, &r).await?);
        let dot: f32 = x.iter().zip(&y).map(|(p, q)| p * q).sum();
        let n = |v: &[f32]| v.iter().map(|p| p * p).sum::<f32>().sqrt().max(1e-12);
        Ok((dot / (n(&x) * n(&y))) as f64)
    }
}

impl Dino {
    /// One prepared image through the model.
    async fn run(&self, input: &image::RgbImage, want: Outputs) -> Result<CpuFeatures, JsError> {
        let (w, h) = (input.width() as usize, input.height() as usize);
        self.runner
            .run(normalize_chw(input), h, w, want)
            .await
            .map_err(|e| JsError::new(&e))
    }

    async fn prepare(&self, image: &JsValue, resize: &Resize) -> Result<image::RgbImage, JsError> {
        let rgb = to_rgb(image).await.map_err(|e| JsError::new(&e))?;
        prepare(&rgb, resize, self.runner.config().patch)
            .map_err(|e| JsError::new(&crate::explain(e)))
    }

    async fn cls(&self, image: &JsValue, resize: &Resize) -> Result<Vec<f32>, JsError> {
        let input = self.prepare(image, resize).await?;
        Ok(self.run(&input, Outputs::default()).await?.cls)
    }
}

/// Bytes of WebAssembly memory the module holds now.
fn wasm_memory_in_use() -> u64 {
    wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .ok()
        .and_then(|m| m.buffer().dyn_into::<js_sys::ArrayBuffer>().ok())
        .map_or(0, |b| b.byte_length() as u64)
}

/// Where a model would run: the CPU engine, or the browser's WebGPU device.
enum Chosen {
    Cpu,
    #[cfg(feature = "webgpu")]
    WebGpu(burn::tensor::Device),
}

/// The backend `backend` resolves to in this browser, and for `auto` a note on why; an error
/// when WebGPU is asked for and there is none. One rule for [`Dino::load`] and
/// [`resolve_backend`].
async fn decide(backend: BackendChoice) -> Result<(Chosen, Option<String>), String> {
    match backend {
        BackendChoice::Cpu => Ok((Chosen::Cpu, None)),
        #[cfg(feature = "webgpu")]
        BackendChoice::WebGpu => Ok((Chosen::WebGpu(crate::webgpu::device().await?), None)),
        #[cfg(not(feature = "webgpu"))]
        BackendChoice::WebGpu => Err("this build of dino-web is CPU-only (built without the \
             `webgpu` feature): use backend 'cpu' or 'auto'"
            .into()),
        #[cfg(feature = "webgpu")]
        BackendChoice::Auto => match crate::webgpu::device().await {
            Ok(device) => Ok((
                Chosen::WebGpu(device),
                Some("auto: WebGPU, the browser gave an adapter".into()),
            )),
            Err(why) => Ok((
                Chosen::Cpu,
                Some(format!("auto: the CPU engine, because {why}")),
            )),
        },
        #[cfg(not(feature = "webgpu"))]
        BackendChoice::Auto => Ok((
            Chosen::Cpu,
            Some("auto: the CPU engine (this build of dino-web has no WebGPU)".into()),
        )),
    }
}

/// `await resolveBackend('auto' | 'webgpu' | 'cpu')` -> `{ backend: 'cpu' | 'webgpu', note }`:
/// where `Dino.load` with this choice would run the model and why, without any weights (so a
/// page can pick a build for it, e.g. the threads build for the CPU). Rejects as `Dino.load`
/// would for WebGPU without an adapter.
#[wasm_bindgen(js_name = resolveBackend)]
pub async fn resolve_backend(
    #[wasm_bindgen(unchecked_param_type = "Backend")] backend: String,
) -> Result<JsValue, JsError> {
    let choice = backend
        .parse::<BackendChoice>()
        .map_err(|e| JsError::new(&e))?;
    let (chosen, note) = decide(choice).await.map_err(|e| JsError::new(&e))?;
    let out = Object::new();
    let name = match chosen {
        Chosen::Cpu => "cpu",
        #[cfg(feature = "webgpu")]
        Chosen::WebGpu(_) => "webgpu",
    };
    set(&out, "backend", name);
    if let Some(note) = note {
        set(&out, "note", note);
    }
    Ok(out.into())
}

/// The runner for `backend`, and for `auto` a note on why it chose what it chose.
async fn choose_backend(
    backend: BackendChoice,
    config: &VitConfig,
    state: StateDict,
) -> Result<(Runner, Option<String>), String> {
    let (chosen, note) = decide(backend).await?;
    let runner = match chosen {
        Chosen::Cpu => Runner::cpu(config, state)?,
        #[cfg(feature = "webgpu")]
        Chosen::WebGpu(device) => Runner::webgpu(config, state, device)?,
    };
    Ok((runner, note))
}
