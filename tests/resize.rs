//! Our preprocessing against torchvision on PIL (the official transforms): the images the
//! reference script fed PyTorch were resized by PIL; ours must be the same pixels.
//! (The "none" cases check the top-left crop to a multiple of the patch.)

use dino_core::imaging::{Resize, load_image, prepare};
use dino_tests::*;

#[test]
fn resize_matches_pil_bicubic() {
    let manifest = manifest();
    for case in manifest["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let image = case["image"].as_str().unwrap();
        let resize: Resize = case["resize"].as_str().unwrap().parse().unwrap();
        let patch = manifest["models"][case["model"].as_str().unwrap()]["patch"]
            .as_u64()
            .unwrap();
        let orig = load_image(&fixture(&format!("images/{image}"))).unwrap();
        let ours = prepare(&orig, &resize, patch as usize).unwrap();
        let pil = load_image(&fixture(&format!("inputs/{name}.png"))).unwrap();
        assert_eq!(ours.dimensions(), pil.dimensions(), "{name}");
        let diffs: Vec<i32> = ours
            .as_raw()
            .iter()
            .zip(pil.as_raw())
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .collect();
        let max = diffs.iter().max().copied().unwrap_or(0);
        let off = diffs.iter().filter(|&&d| d > 0).count();
        println!(
            "{name}: max diff {max}, {off} of {} values differ",
            diffs.len()
        );
        if image.ends_with(".png") {
            // lossless source: bit-exact with Pillow
            assert_eq!(max, 0, "{name}: {off} values differ, max diff {max}");
        } else {
            // JPEG decoders differ slightly (IDCT, chroma upsampling) from libjpeg-turbo
            assert!(
                max <= 3 && off * 50 < diffs.len(),
                "{name}: max diff {max}, {off} differ"
            );
        }
    }
}
