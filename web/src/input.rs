//! Whatever a page has as an image, as an RGB image: encoded file bytes (`Uint8Array`,
//! `ArrayBuffer`, `Blob`/`File`), `ImageData`, or anything a 2D canvas can draw
//! (`HTMLImageElement`, `HTMLCanvasElement`, `HTMLVideoElement`, `ImageBitmap`,
//! `OffscreenCanvas`), drawn on an `OffscreenCanvas` so it also works in workers.

use dino_core::imaging::decode_image;
use image::RgbImage;
use js_sys::{ArrayBuffer, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Blob, HtmlCanvasElement, HtmlImageElement, HtmlVideoElement, ImageBitmap, ImageData,
    OffscreenCanvas, OffscreenCanvasRenderingContext2d,
};

fn js_err(e: JsValue) -> String {
    e.as_string()
        .or_else(|| {
            e.dyn_ref::<js_sys::Error>()
                .map(|e| String::from(e.message()))
        })
        .unwrap_or_else(|| format!("{e:?}"))
}

/// RGBA pixels (row-major) to RGB, alpha dropped (as PIL's `convert('RGB')`).
pub fn rgba_to_rgb(rgba: &[u8], w: u32, h: u32) -> Result<RgbImage, String> {
    if w == 0 || h == 0 || rgba.len() != (w as usize) * (h as usize) * 4 {
        return Err(format!("{w}x{h} image with {} bytes of RGBA", rgba.len()));
    }
    let rgb: Vec<u8> = rgba
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    RgbImage::from_raw(w, h, rgb).ok_or_else(|| "bad pixel buffer".to_string())
}

fn draw(
    w: u32,
    h: u32,
    paint: impl FnOnce(&OffscreenCanvasRenderingContext2d) -> Result<(), JsValue>,
) -> Result<RgbImage, String> {
    if w == 0 || h == 0 {
        return Err("the image has no pixels (not loaded yet?)".into());
    }
    if w > dino_core::imaging::MAX_IMAGE_SIDE || h > dino_core::imaging::MAX_IMAGE_SIDE {
        return Err(format!(
            "the image is {w}x{h}: the limit is {} px per side",
            dino_core::imaging::MAX_IMAGE_SIDE
        ));
    }
    let canvas = OffscreenCanvas::new(w, h).map_err(js_err)?;
    let ctx: OffscreenCanvasRenderingContext2d = canvas
        .get_context("2d")
        .map_err(js_err)?
        .ok_or("no 2D canvas context")?
        .dyn_into()
        .map_err(|_| "unexpected canvas context".to_string())?;
    paint(&ctx).map_err(js_err)?;
    let data = ctx
        .get_image_data(0.0, 0.0, w as f64, h as f64)
        .map_err(js_err)?;
    rgba_to_rgb(&data.data(), w, h)
}

/// The RGB pixels of a JS image value.
pub async fn to_rgb(value: &JsValue) -> Result<RgbImage, String> {
    if let Some(a) = value.dyn_ref::<Uint8Array>() {
        return decode_image(&a.to_vec(), "image bytes").map_err(|e| e.to_string());
    }
    if let Some(b) = value.dyn_ref::<ArrayBuffer>() {
        return decode_image(&Uint8Array::new(b).to_vec(), "image bytes")
            .map_err(|e| e.to_string());
    }
    if let Some(blob) = value.dyn_ref::<Blob>() {
        let buf = JsFuture::from(blob.array_buffer()).await.map_err(js_err)?;
        let name = js_sys::Reflect::get(value, &"name".into())
            .ok()
            .and_then(|n| n.as_string())
            .unwrap_or_else(|| "file".into());
        return decode_image(&Uint8Array::new(&buf).to_vec(), &name).map_err(|e| e.to_string());
    }
    if let Some(d) = value.dyn_ref::<ImageData>() {
        return rgba_to_rgb(&d.data(), d.width(), d.height());
    }
    if let Some(img) = value.dyn_ref::<HtmlImageElement>() {
        if !img.complete() {
            return Err("the <img> has not finished loading".into());
        }
        let (w, h) = (img.natural_width(), img.natural_height());
        return draw(w, h, |c| {
            c.draw_image_with_html_image_element(img, 0.0, 0.0)
        });
    }
    if let Some(b) = value.dyn_ref::<ImageBitmap>() {
        return draw(b.width(), b.height(), |c| {
            c.draw_image_with_image_bitmap(b, 0.0, 0.0)
        });
    }
    if let Some(cv) = value.dyn_ref::<HtmlCanvasElement>() {
        return draw(cv.width(), cv.height(), |c| {
            c.draw_image_with_html_canvas_element(cv, 0.0, 0.0)
        });
    }
    if let Some(cv) = value.dyn_ref::<OffscreenCanvas>() {
        return draw(cv.width(), cv.height(), |c| {
            c.draw_image_with_offscreen_canvas(cv, 0.0, 0.0)
        });
    }
    if let Some(v) = value.dyn_ref::<HtmlVideoElement>() {
        return draw(v.video_width(), v.video_height(), |c| {
            c.draw_image_with_html_video_element(v, 0.0, 0.0)
        });
    }
    Err(
        "unsupported image: give file bytes (Uint8Array, ArrayBuffer, Blob/File), ImageData, \
         an <img>, <canvas>, <video>, ImageBitmap or OffscreenCanvas"
            .into(),
    )
}
