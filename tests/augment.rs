//! Each augmentation op against torchvision / Pillow on a real photo (fixtures written by
//! make_fixtures.py), and the properties of the multi-crop sampler.

use dino_core::augment::{
    CropBox, MultiCropConfig, multi_crop, pil_ops, resized_crop, sample_crop,
};
use dino_core::imaging::load_image;
use dino_tests::*;
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn fx(name: &str) -> RgbImage {
    load_image(&fixture(&format!("augment/{name}.png"))).unwrap()
}

/// (max difference, number of differing values)
fn diff(a: &RgbImage, b: &RgbImage) -> (u8, usize) {
    assert_eq!(a.dimensions(), b.dimensions());
    let d: Vec<u8> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .collect();
    (
        *d.iter().max().unwrap(),
        d.iter().filter(|&&v| v > 0).count(),
    )
}

#[test]
fn photometric_ops_match_pillow() {
    let src = fx("source");
    let cases: Vec<(&str, RgbImage)> = vec![
        ("brightness_1.3", pil_ops::brightness(&src, 1.3)),
        ("brightness_0.7", pil_ops::brightness(&src, 0.7)),
        ("contrast_1.35", pil_ops::contrast(&src, 1.35)),
        ("contrast_0.65", pil_ops::contrast(&src, 0.65)),
        ("saturation_1.2", pil_ops::saturation(&src, 1.2)),
        ("saturation_0.8", pil_ops::saturation(&src, 0.8)),
        ("hue_0.07", pil_ops::hue(&src, 0.07)),
        ("hue_-0.08", pil_ops::hue(&src, -0.08)),
        ("grayscale", pil_ops::grayscale(&src)),
        ("solarize", pil_ops::solarize(&src)),
        ("blur_0.7", pil_ops::gaussian_blur(&src, 0.7)),
        ("blur_1.9", pil_ops::gaussian_blur(&src, 1.9)),
        ("flip", pil_ops::hflip(&src)),
        (
            "resized_crop_10_20_50_70_48",
            resized_crop(
                &src,
                CropBox {
                    top: 10,
                    left: 20,
                    height: 50,
                    width: 70,
                },
                48,
            )
            .unwrap(),
        ),
    ];
    let mut report = Vec::new();
    for (name, ours) in cases {
        let (max, n) = diff(&ours, &fx(name));
        report.push(format!("{name}: max {max}, {n} differ"));
        assert_eq!(
            (max, n),
            (0, 0),
            "{name}: max diff {max}, {n} values differ"
        );
    }
    println!("{}", report.join("\n"));
}

#[test]
fn crop_sampler_follows_torchvision() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (w, h) = (640u32, 427u32);
    let mut areas = Vec::new();
    for _ in 0..2000 {
        let b = sample_crop(&mut rng, w, h, (0.05, 0.4), (3.0 / 4.0, 4.0 / 3.0));
        assert!(b.width > 0 && b.height > 0 && b.left + b.width <= w && b.top + b.height <= h);
        let ratio = b.width as f64 / b.height as f64;
        assert!((0.74..=1.35).contains(&ratio), "{b:?}");
        areas.push((b.width * b.height) as f64 / (w * h) as f64);
    }
    let mean = areas.iter().sum::<f64>() / areas.len() as f64;
    // uniform in [0.05, 0.4] has mean 0.225 (rounding moves it slightly)
    assert!((mean - 0.225).abs() < 0.01, "mean area {mean}");
    // a tall sliver cannot hold a 3/4..4/3 box of the asked area: central fallback
    let b = sample_crop(&mut rng, 10, 400, (0.9, 1.0), (3.0 / 4.0, 4.0 / 3.0));
    assert_eq!((b.width, b.height, b.left), (10, 13, 0));
}

#[test]
fn multi_crop_is_deterministic_and_shaped() {
    let img = load_image(&fixture("images/chelsea.png")).unwrap();
    let cfg = MultiCropConfig::default();
    let a = multi_crop(&img, &cfg, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    let b = multi_crop(&img, &cfg, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    let c = multi_crop(&img, &cfg, &mut ChaCha8Rng::seed_from_u64(6)).unwrap();
    assert_eq!(a.len(), 10);
    assert!(a[..2].iter().all(|x| x.dimensions() == (224, 224)));
    assert!(a[2..].iter().all(|x| x.dimensions() == (96, 96)));
    assert!(
        a.iter().zip(&b).all(|(x, y)| x == y),
        "same seed, same crops"
    );
    assert!(
        a.iter().zip(&c).any(|(x, y)| x != y),
        "another seed, other crops"
    );
    let bad = MultiCropConfig {
        local_scale: (0.5, 0.1),
        ..Default::default()
    };
    assert!(bad.validate().is_err());
    for blur_radius in [(0.0, 1.0), (2.0, 1.0), (0.1, f64::NAN), (0.1, 1e6)] {
        let bad = MultiCropConfig {
            blur_radius,
            ..Default::default()
        };
        assert!(bad.validate().is_err(), "{blur_radius:?}");
    }
}
