//! The package in a real browser (headless Chromium through wasm-bindgen-test): the CPU
//! path's attention, masks and features equal the PyTorch reference fixtures (which the
//! native `dino attention` matches too), every image input kind gives the same pixels,
//! and bad input rejects the promise with a message.
#![cfg(target_family = "wasm")]

use dino_tests::{max_abs, npy_from_bytes, npy_u8};
use dino_web::Dino;
use js_sys::{Float32Array, Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const WEIGHTS: &[u8] = include_bytes!("../../tests/fixtures/weights/s16_hf.safetensors");
const CHELSEA: &[u8] = include_bytes!("../../tests/fixtures/images/chelsea.png");
const ATTN_NONE: &[u8] =
    include_bytes!("../../tests/fixtures/outputs/s16_chelsea_none_attention.npy");
const MASKS_NONE: &[u8] = include_bytes!("../../tests/fixtures/outputs/s16_chelsea_none_masks.npy");
const CLS_EVAL: &[u8] = include_bytes!("../../tests/fixtures/outputs/s16_chelsea_eval_cls.npy");

fn npy_f32(bytes: &[u8]) -> Vec<f32> {
    npy_from_bytes(bytes).1
}

fn obj(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &(*k).into(), v).unwrap();
    }
    o.into()
}

fn field(v: &JsValue, k: &str) -> JsValue {
    Reflect::get(v, &k.into()).unwrap()
}

/// The fixture model on `backend` ('cpu', 'webgpu' or 'auto').
async fn model_on(backend: &str) -> Dino {
    Dino::load(
        Uint8Array::from(WEIGHTS),
        obj(&[("backend", backend.into())]),
    )
    .await
    .map_err(JsValue::from)
    .unwrap_or_else(|e| panic!("the fixture loads on {backend}: {e:?}"))
}

async fn model() -> Dino {
    model_on("cpu").await
}

/// A `Float32Array` field of a result object.
fn f32_field(v: &JsValue, k: &str) -> Vec<f32> {
    field(v, k).dyn_into::<Float32Array>().unwrap().to_vec()
}

/// A `Uint8Array` field of a result object.
fn u8_field(v: &JsValue, k: &str) -> Vec<u8> {
    field(v, k).dyn_into::<Uint8Array>().unwrap().to_vec()
}

/// Max abs error of a CLS feature against the PyTorch fixture, relative to its norm.
fn cls_rel_error(f: &[f32]) -> f32 {
    let want = npy_f32(CLS_EVAL);
    let norm = want.iter().map(|v| v * v).sum::<f32>().sqrt();
    max_abs(f, &want) / norm
}

fn message(e: JsValue) -> String {
    field(&e, "message").as_string().unwrap_or_default()
}

#[wasm_bindgen_test]
async fn attention_and_masks_match_the_reference() {
    let m = model().await;
    assert_eq!(
        (m.heads(), m.patch(), m.dim(), m.backend()),
        (2, 16, 128, "cpu".to_string())
    );
    let r = m
        .attention(
            Uint8Array::from(CHELSEA).into(),
            obj(&[("size", "none".into()), ("threshold", 0.6.into())]),
        )
        .await
        .map_err(JsValue::from)
        .unwrap();
    assert_eq!(field(&r, "heads").as_f64(), Some(2.0));
    assert_eq!(field(&r, "gridH").as_f64(), Some(18.0));
    assert_eq!(field(&r, "gridW").as_f64(), Some(28.0));
    let attn = f32_field(&r, "attention");
    let err = max_abs(&attn, &npy_f32(ATTN_NONE));
    assert!(err <= 1e-5, "attention max abs error {err}");
    let masks = u8_field(&r, "masks");
    assert_eq!(masks, npy_u8(MASKS_NONE));
    // recomputed from the attention alone (what the page's slider does)
    let again = dino_web::threshold_masks(&attn, 2, 0.6)
        .map_err(JsValue::from)
        .unwrap();
    assert_eq!(again.to_vec(), masks);
    assert!(dino_web::threshold_masks(&attn, 2, 1.5).is_err());
    assert!(field(&r, "ms").as_f64().unwrap() >= 0.0);
}

#[wasm_bindgen_test]
async fn features_match_the_reference_and_inputs_agree() {
    let m = model().await;
    let bytes: JsValue = Uint8Array::from(CHELSEA).into();
    let f = m
        .embed(bytes.clone(), JsValue::UNDEFINED)
        .await
        .map_err(JsValue::from)
        .unwrap()
        .to_vec();
    let rel = cls_rel_error(&f);
    assert!(rel <= 1e-5, "CLS relative error {rel}");
    // the same pixels as ImageData and as a Blob
    let img = image::load_from_memory(CHELSEA).unwrap().to_rgba8();
    // an ImageData owning its pixels in JS memory, as a canvas hands it out
    let data = web_sys::ImageData::new_with_sw(img.width(), img.height()).unwrap();
    field(&data, "data")
        .dyn_into::<js_sys::Uint8ClampedArray>()
        .unwrap()
        .copy_from(img.as_raw());
    let g = m
        .embed(data.into(), JsValue::UNDEFINED)
        .await
        .map_err(JsValue::from)
        .unwrap()
        .to_vec();
    assert_eq!(f, g);
    let parts = js_sys::Array::of1(&Uint8Array::from(CHELSEA));
    let blob = web_sys::Blob::new_with_u8_array_sequence(&parts).unwrap();
    let h = m
        .embed(blob.into(), JsValue::UNDEFINED)
        .await
        .map_err(JsValue::from)
        .unwrap()
        .to_vec();
    assert_eq!(f, h);
    let s = m
        .similarity(bytes.clone(), bytes)
        .await
        .map_err(JsValue::from)
        .unwrap();
    assert!((s - 1.0).abs() < 1e-6, "{s}");
}

#[wasm_bindgen_test]
async fn bad_input_rejects_with_a_message() {
    let e = Dino::load(
        Uint8Array::from(&b"not a checkpoint"[..]),
        JsValue::UNDEFINED,
    )
    .await
    .map(|_| ())
    .map_err(JsValue::from)
    .unwrap_err();
    assert!(!message(e).is_empty());
    let e = Dino::load(
        Uint8Array::from(WEIGHTS),
        obj(&[("backend", "cuda".into())]),
    )
    .await
    .map(|_| ())
    .map_err(JsValue::from)
    .unwrap_err();
    assert!(message(e).contains("expected 'auto', 'webgpu' or 'cpu'"));
    // the backend decision alone, as Dino.load makes it
    let e = dino_web::resolve_backend("cuda".into())
        .await
        .map_err(JsValue::from)
        .unwrap_err();
    assert!(message(e).contains("expected 'auto', 'webgpu' or 'cpu'"));
    let cpu = dino_web::resolve_backend("cpu".into())
        .await
        .map_err(JsValue::from)
        .unwrap();
    assert_eq!(field(&cpu, "backend").as_string().as_deref(), Some("cpu"));
    let m = model().await;
    let e = m
        .attention(Uint8Array::from(&CHELSEA[..200]).into(), JsValue::UNDEFINED)
        .await
        .map_err(JsValue::from)
        .unwrap_err();
    assert!(!message(e).is_empty());
    let e = m
        .attention(
            Uint8Array::from(CHELSEA).into(),
            obj(&[("threshold", 2.0.into())]),
        )
        .await
        .map_err(JsValue::from)
        .unwrap_err();
    assert!(message(e).contains("threshold"));
    let e = m
        .attention(JsValue::from(42), JsValue::UNDEFINED)
        .await
        .map_err(JsValue::from)
        .unwrap_err();
    assert!(message(e).contains("unsupported image"));
    // the model still works after errors
    m.attention(
        Uint8Array::from(CHELSEA).into(),
        obj(&[("size", 224.into())]),
    )
    .await
    .map_err(JsValue::from)
    .unwrap();
}

const COFFEE: &[u8] = include_bytes!("../../tests/fixtures/images/coffee.png");

#[wasm_bindgen_test]
async fn copy_descriptors_group_duplicates() {
    let m = model().await;
    let mut rows = Vec::new();
    for bytes in [CHELSEA, COFFEE, CHELSEA] {
        let d = m
            .copy_descriptor(Uint8Array::from(bytes).into(), JsValue::UNDEFINED)
            .await
            .map_err(JsValue::from)
            .unwrap()
            .to_vec();
        assert_eq!(d.len(), 2 * 128);
        rows.extend(d);
    }
    let r = dino_web::find_duplicates(&rows, 256, 0.999, None)
        .map_err(JsValue::from)
        .unwrap();
    let groups = js_sys::Array::from(&field(&r, "groups"));
    assert_eq!(groups.length(), 1);
    let members: Vec<f64> = js_sys::Array::from(&field(&groups.get(0), "members"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(members, vec![0.0, 2.0]);
    let pairs = js_sys::Array::from(&field(&r, "pairs"));
    assert_eq!(pairs.length(), 1);
    assert!(field(&pairs.get(0), "score").as_f64().unwrap() > 0.999);
    assert!(dino_web::find_duplicates(&rows[..100], 256, 0.9, None).is_err());
    assert!(dino_web::find_duplicates(&rows, 256, 2.0, None).is_err());
}

/// WebGPU (here: Chromium's SwiftShader software adapter, `--enable-unsafe-webgpu` in
/// webdriver.json) gives what the CPU path and the PyTorch reference give.
#[cfg(feature = "webgpu")]
mod webgpu {
    use super::*;

    #[wasm_bindgen_test]
    async fn webgpu_attention_matches_the_reference() {
        let m = model_on("webgpu").await;
        assert_eq!(m.backend(), "webgpu");
        let r = m
            .attention(
                Uint8Array::from(CHELSEA).into(),
                obj(&[("size", "none".into()), ("threshold", 0.6.into())]),
            )
            .await
            .map_err(JsValue::from)
            .unwrap();
        assert_eq!(field(&r, "backend").as_string().as_deref(), Some("webgpu"));
        assert_eq!(field(&r, "gridH").as_f64(), Some(18.0));
        assert_eq!(field(&r, "gridW").as_f64(), Some(28.0));
        let attn = f32_field(&r, "attention");
        let err = max_abs(&attn, &npy_f32(ATTN_NONE));
        console_log!("WebGPU attention vs PyTorch: max abs error {err:e}");
        assert!(err <= 1e-4, "WebGPU attention max abs error {err}");
        // masks cut a sorted cumulative sum: only patches within float noise of the cut
        // may flip
        let masks = u8_field(&r, "masks");
        let want = npy_u8(MASKS_NONE);
        let flipped = masks.iter().zip(&want).filter(|(a, b)| a != b).count();
        console_log!("WebGPU masks: {flipped} of {} patches differ", want.len());
        assert!(
            flipped <= 2,
            "{flipped} of {} mask patches differ",
            want.len()
        );
    }

    #[wasm_bindgen_test]
    async fn webgpu_features_equal_the_cpu_path() {
        let gpu = model_on("auto").await;
        assert_eq!(gpu.backend(), "webgpu", "{:?}", gpu.backend_note());
        assert!(gpu.backend_note().unwrap().contains("WebGPU"));
        let cpu = model().await;
        let bytes: JsValue = Uint8Array::from(CHELSEA).into();
        let f = gpu
            .embed(bytes.clone(), JsValue::UNDEFINED)
            .await
            .map_err(JsValue::from)
            .unwrap()
            .to_vec();
        let rel = cls_rel_error(&f);
        console_log!("WebGPU CLS vs PyTorch: relative error {rel:e}");
        assert!(rel <= 1e-4, "WebGPU CLS relative error {rel}");
        let opts = || obj(&[("size", 160.into())]);
        let g = gpu
            .copy_descriptor(bytes.clone(), opts())
            .await
            .map_err(JsValue::from)
            .unwrap()
            .to_vec();
        let c = cpu
            .copy_descriptor(bytes.clone(), opts())
            .await
            .map_err(JsValue::from)
            .unwrap()
            .to_vec();
        let err = max_abs(&g, &c);
        console_log!("WebGPU copy descriptor vs CPU: max abs error {err:e}");
        assert!(err <= 1e-4, "copy descriptors differ by {err}");
        // errors still reject, and the GPU model keeps working after them
        let e = gpu
            .attention(Uint8Array::from(&CHELSEA[..200]).into(), JsValue::UNDEFINED)
            .await
            .map_err(JsValue::from)
            .unwrap_err();
        assert!(!message(e).is_empty());
        let s = gpu
            .similarity(bytes.clone(), bytes)
            .await
            .map_err(JsValue::from)
            .unwrap();
        assert!((s - 1.0).abs() < 1e-5, "{s}");
    }
}

const BACKBONE_PTH: &[u8] = include_bytes!("../../tests/fixtures/weights/s16_backbone.pth");
const CHECKPOINT_PTH: &[u8] =
    include_bytes!("../../tests/fixtures/weights/s16_full_checkpoint.pth");
const STUDENT_CLS_EVAL: &[u8] =
    include_bytes!("../../tests/fixtures/outputs/s16_student_chelsea_eval_cls.npy");

async fn load_with(bytes: &[u8], options: JsValue) -> Result<Dino, String> {
    Dino::load(Uint8Array::from(bytes), options)
        .await
        .map_err(|e| message(JsValue::from(e)))
}

async fn cls_of(m: &Dino) -> Vec<f32> {
    m.embed(Uint8Array::from(CHELSEA).into(), JsValue::UNDEFINED)
        .await
        .map_err(JsValue::from)
        .unwrap()
        .to_vec()
}

/// Official `.pth` files read in the browser by the core's zip/pickle reader: the backbone
/// gives PyTorch's attention, a training checkpoint its teacher by default and its student
/// when asked; a cut file and a wrong choice reject with a message.
#[wasm_bindgen_test]
async fn official_pth_files_load_in_the_browser() {
    let m = load_with(BACKBONE_PTH, obj(&[("backend", "cpu".into())]))
        .await
        .unwrap();
    let r = m
        .attention(
            Uint8Array::from(CHELSEA).into(),
            obj(&[("size", "none".into())]),
        )
        .await
        .map_err(JsValue::from)
        .unwrap();
    let err = max_abs(&f32_field(&r, "attention"), &npy_f32(ATTN_NONE));
    assert!(err <= 1e-5, "attention from the .pth: max abs error {err}");
    assert_eq!(u8_field(&r, "masks"), npy_u8(MASKS_NONE));

    let teacher = load_with(CHECKPOINT_PTH, obj(&[("backend", "cpu".into())]))
        .await
        .unwrap();
    let rel = cls_rel_error(&cls_of(&teacher).await);
    assert!(rel <= 1e-5, "teacher CLS relative error {rel}");
    let student = load_with(
        CHECKPOINT_PTH,
        obj(&[("backend", "cpu".into()), ("checkpoint", "student".into())]),
    )
    .await
    .unwrap();
    let want = npy_f32(STUDENT_CLS_EVAL);
    let norm = want.iter().map(|v| v * v).sum::<f32>().sqrt();
    let rel = max_abs(&cls_of(&student).await, &want) / norm;
    assert!(rel <= 1e-5, "student CLS relative error {rel}");

    let e = load_with(
        &CHECKPOINT_PTH[..CHECKPOINT_PTH.len() / 2],
        JsValue::UNDEFINED,
    )
    .await
    .err()
    .unwrap();
    assert!(e.contains("PyTorch checkpoint"), "{e}");
    let e = load_with(CHECKPOINT_PTH, obj(&[("checkpoint", "ema".into())]))
        .await
        .err()
        .unwrap();
    assert!(e.contains("'teacher' or 'student'"), "{e}");
}

/// Half-precision safetensors (`dino export --half`, half the download) load directly.
#[wasm_bindgen_test]
async fn half_precision_safetensors_load_directly() {
    use dino_core::weights::{LoadOptions, load_bytes, to_safetensors_bytes};
    let w = load_bytes(WEIGHTS, &LoadOptions::default()).unwrap();
    let half = to_safetensors_bytes(&w.state, &w.config, true).unwrap();
    assert!(
        half.len() < WEIGHTS.len() * 6 / 10,
        "{} vs {}",
        half.len(),
        WEIGHTS.len()
    );
    let m = load_with(&half, obj(&[("backend", "cpu".into())]))
        .await
        .unwrap();
    let rel = cls_rel_error(&cls_of(&m).await);
    // f16 weights: about 1e-3 relative rounding per weight
    assert!(rel <= 2e-2, "f16 CLS relative error {rel}");
}
