//! Helpers the end-to-end test files share: run the `dino` binary, expect success or a clean
//! failure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn dino(args: &[&str]) -> Output {
    dino_with_env(&[], args)
}

/// Runs `dino` with some environment variables set (e.g. a `PATH` without ffmpeg).
pub fn dino_with_env(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dino"))
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("dino runs")
}

fn run_ok(args: &[&str]) -> Output {
    let out = dino(args);
    assert!(
        out.status.success(),
        "dino {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command that must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    String::from_utf8_lossy(&run_ok(args).stdout).into_owned()
}

/// Runs a command that must succeed; its stdout and stderr (warnings, progress notes).
pub fn ok_all(args: &[&str]) -> String {
    let out = run_ok(args);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Runs a command that must fail cleanly: exit code 1, an `error:` line (after any
/// warnings), no panic.
pub fn fails(args: &[&str]) -> String {
    fails_with_env(&[], args)
}

/// As [`fails`], with some environment variables set.
pub fn fails_with_env(env: &[(&str, &str)], args: &[&str]) -> String {
    let out = dino_with_env(env, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "dino {args:?}: {err}");
    assert!(
        err.starts_with("error: ") || err.contains("\nerror: "),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A JSON file the command wrote.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `dino embed` of coffee.png then chelsea.png with the fixture ViT (`s16_full_checkpoint.pth`),
/// one image per batch, into `out`, `extra` flags added (a device, a kernel cache); must
/// succeed: its stdout and stderr.
pub fn embed_coffee_and_chelsea(out: &Path, extra: &[&str]) -> String {
    let w = dino_tests::fixture("weights/s16_full_checkpoint.pth");
    let (c, k) = (
        dino_tests::fixture("images/coffee.png"),
        dino_tests::fixture("images/chelsea.png"),
    );
    let mut args = vec![
        "embed",
        "-w",
        s(&w),
        s(&c),
        s(&k),
        "--batch-size",
        "1",
        "-o",
        s(out),
    ];
    args.extend(extra);
    ok_all(&args)
}

/// The rows [`embed_coffee_and_chelsea`] wrote to `out`, asserted to be PyTorch's (1e-4).
pub fn coffee_and_chelsea_rows_as_pytorch(out: &Path) -> Vec<f32> {
    let (shape, f) = dino_tests::read_npy_file(out);
    assert_eq!(shape, vec![2, 128]);
    let want = dino_tests::read_npy_file(&dino_tests::fixture("outputs/s16_batch_eval_cls.npy")).1;
    // reference rows: chelsea, coffee, rocket
    assert!(dino_tests::max_abs(&f[..128], &want[128..256]) <= 1e-4);
    assert!(dino_tests::max_abs(&f[128..], &want[..128]) <= 1e-4);
    f
}

/// `dino train` of a tiny ViT on `data` (the official recipe): quick enough for tests.
pub fn train_args_with<'a>(
    data: &'a str,
    out: &'a str,
    epochs: &'a str,
    warmup: &'a str,
) -> Vec<&'a str> {
    vec![
        "train",
        "--recipe",
        "official",
        "--data",
        data,
        "--output-dir",
        out,
        "--arch",
        "vit_tiny",
        "--out-dim",
        "32",
        "--head-hidden-dim",
        "16",
        "--head-bottleneck-dim",
        "8",
        "--batch-size",
        "2",
        "--epochs",
        epochs,
        "--warmup-epochs",
        warmup,
        "--global-crop-size",
        "32",
        "--local-crop-size",
        "16",
        "--local-crops-number",
        "2",
        "--checkpoint-every",
        "1",
        "--attention-images",
        "2",
        "--seed",
        "3",
    ]
}

/// An ImageFolder of fixture photos: two classes, one of them with a JPEG.
pub fn class_folder(dir: &Path) -> PathBuf {
    let root = dir.join("classes");
    for (class, files) in [
        ("cats", ["chelsea.png", "formats/rgb.png"]),
        ("things", ["coffee.png", "rocket.jpg"]),
    ] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for f in files {
            let name = f.replace('/', "_");
            std::fs::copy(
                dino_tests::fixture(&format!("images/{f}")),
                root.join(class).join(name),
            )
            .unwrap();
        }
    }
    root
}

/// `dino paws` arguments of a tiny run on a class folder: WRN-10-1, 16 px views and one 8 px
/// crop, 2 unlabelled images and 2 classes x 1 image x 2 views of support per iteration.
pub fn paws_args<'a>(labels: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "paws",
        "--labels",
        labels,
        "--output-dir",
        out,
        "--depth",
        "10",
        "--widen",
        "1",
        "--output-dim",
        "16",
        "--crop-size",
        "16",
        "--multicrop",
        "1",
        "--multicrop-size",
        "8",
        "--unsupervised-batch-size",
        "2",
        "--classes-per-batch",
        "2",
        "--supervised-imgs-per-class",
        "1",
        "--epochs",
        "2",
        "--warmup",
        "1",
    ]
}
