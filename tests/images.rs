//! Decoding real files in every layout, and clear refusals for bad images.

use dino_core::VisionTransformer;
use dino_core::VitConfig;
use dino_core::imaging::{Resize, decode_image, load_image, prepare};
use dino_tests::*;

fn reference_rgb() -> Vec<u8> {
    let (shape, data) = read_npy("images/formats/rgb.npy");
    assert_eq!(shape, vec![64, 96, 3]);
    data.into_iter().map(|v| v as u8).collect()
}

fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
}

#[test]
fn decodes_every_format_to_the_same_rgb() {
    let want = reference_rgb();
    for (file, tol) in [
        ("rgb.png", 0),
        ("rgb.webp", 0),
        ("rgba.png", 0),
        ("rgb16.png", 0),
        ("rgb.jpg", 40),
    ] {
        let img = load_image(&fixture(&format!("images/formats/{file}"))).unwrap();
        assert_eq!(img.dimensions(), (96, 64), "{file}");
        let d = max_diff(img.as_raw(), &want);
        assert!(d <= tol, "{file}: max diff {d}");
    }
    let grey = load_image(&fixture("images/formats/grey.png")).unwrap();
    assert!(grey.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    // GIF: the first frame (not the flipped second one), palette-quantised
    let gif = load_image(&fixture("images/formats/anim.gif")).unwrap();
    let mean = |a: &[u8], b: &[u8]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.abs_diff(*y) as f64)
            .sum::<f64>()
            / a.len() as f64
    };
    let flipped =
        image::imageops::flip_horizontal(&image::RgbImage::from_raw(96, 64, want.clone()).unwrap());
    assert!(mean(gif.as_raw(), &want) < 0.25 * mean(gif.as_raw(), flipped.as_raw()));
}

#[test]
fn corrupt_truncated_and_empty_files_are_errors() {
    let png = std::fs::read(fixture("images/chelsea.png")).unwrap();
    let jpg = std::fs::read(fixture("images/rocket.jpg")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("text", b"hello, I am not an image".to_vec()),
        ("truncated png", png[..png.len() / 3].to_vec()),
        ("png header only", png[..40].to_vec()),
        ("truncated jpeg", jpg[..200].to_vec()),
        (
            "png with garbage body",
            [&png[..60], &[0xAB; 500][..]].concat(),
        ),
    ];
    for (name, bytes) in cases {
        let e = decode_image(&bytes, name).unwrap_err().to_string();
        assert!(e.starts_with(&format!("image {name}:")), "{name}: {e}");
    }
}

fn png_header(width: u32, height: u32, depth: u8, colour: u8) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend(b"IHDR");
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([depth, colour, 0, 0, 0]);
    let crc = crc32(&ihdr);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(13u32.to_be_bytes());
    out.extend(&ihdr);
    out.extend(crc.to_be_bytes());
    // a start of (truncated) image data, as a real file would have
    let mut idat = b"IDAT".to_vec();
    idat.extend([0x78, 0x9c, 0x01, 0x00, 0x00]);
    out.extend(5u32.to_be_bytes());
    out.extend(&idat);
    out.extend(crc32(&idat).to_be_bytes());
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn huge_images_are_refused_before_allocating() {
    let t = std::time::Instant::now();
    let e = decode_image(&png_header(100_000, 100_000, 8, 2), "huge.png").unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");
    // within the side limit, but 16000 x 16000 RGBA16 needs 2 GiB
    let e = decode_image(&png_header(16_000, 16_000, 16, 6), "deep.png").unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");
    assert!(t.elapsed().as_secs() < 5);
}

#[test]
fn tiny_images() {
    let one = image::RgbImage::from_pixel(1, 1, image::Rgb([200, 10, 10]));
    // the eval transform upsamples anything to 224
    let x = prepare(&one, &Resize::default(), 16).unwrap();
    assert_eq!(x.dimensions(), (224, 224));
    assert!(x.pixels().all(|p| p.0 == [200, 10, 10]));
    // at its own size it is smaller than a patch
    let e = prepare(&one, &Resize::None, 16).unwrap_err().to_string();
    assert!(e.contains("smaller than one 16x16 patch"), "{e}");
    let small = image::RgbImage::new(15, 40);
    assert!(prepare(&small, &Resize::None, 16).is_err());
    assert_eq!(
        prepare(&small, &Resize::None, 8).unwrap().dimensions(),
        (8, 40)
    );
}

#[test]
fn model_refuses_inputs_it_cannot_take() {
    let model = VisionTransformer::new(&VitConfig::new(64, 1, 1, 8), &device()).unwrap();
    let e = model
        .check_input([1, 3, 2048, 2048])
        .unwrap_err()
        .to_string();
    assert!(e.contains("65536 patches") && e.contains("limit"), "{e}");
    assert!(
        model
            .check_input([1, 1, 64, 64])
            .unwrap_err()
            .to_string()
            .contains("channels")
    );
    assert!(
        model
            .check_input([1, 3, 4, 64])
            .unwrap_err()
            .to_string()
            .contains("smaller")
    );
    assert!(model.check_input([0, 3, 64, 64]).is_err());
    assert_eq!(model.check_input([2, 3, 64, 72]).unwrap(), (8, 9));
}
