//! End-to-end tests of the `dino` binary on the reference fixtures in tests/fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(rel)
}

fn dino(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dino"))
        .args(args)
        .output()
        .expect("dino runs")
}

fn ok(args: &[&str]) -> String {
    let out = dino(args);
    assert!(
        out.status.success(),
        "dino {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail cleanly: exit code 1, one `error:` line, no panic.
fn fails(args: &[&str]) -> String {
    let out = dino(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "dino {args:?}: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn npy_f32(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<f32>().unwrap())
}

fn npy_u8(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    npyz::NpyFile::new(&bytes[..])
        .unwrap()
        .into_vec::<u8>()
        .unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn help_explains_every_subcommand() {
    let top = ok(&["--help"]);
    for cmd in ["embed", "attention", "inspect", "export", "bench"] {
        assert!(top.contains(cmd), "{cmd} missing from --help");
        let help = ok(&[cmd, "--help"]);
        assert!(
            help.contains("--weights") || cmd == "bench",
            "{cmd}: {help}"
        );
    }
    let att = ok(&["attention", "--help"]);
    for flag in [
        "--threshold",
        "--resize",
        "--out",
        "--heads",
        "--checkpoint-key",
        "--device",
    ] {
        assert!(att.contains(flag), "attention --help lacks {flag}");
    }
}

#[test]
fn attention_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let w = fixture("weights/s16_hf.safetensors");
    let img = fixture("images/chelsea.png");
    ok(&[
        "attention",
        "-w",
        s(&w),
        "--resize",
        "none",
        "--threshold",
        "0.6",
        s(&img),
        "-o",
        s(dir.path()),
    ]);
    let (shape, attn) = npy_f32(&dir.path().join("attention.npy"));
    assert_eq!(shape, vec![2, 18, 28]);
    let want = npy_f32(&fixture("outputs/s16_chelsea_none_attention.npy")).1;
    assert!(max_abs(&attn, &want) <= 1e-5);
    assert_eq!(
        npy_u8(&dir.path().join("masks.npy")),
        npy_u8(&fixture("outputs/s16_chelsea_none_masks.npy"))
    );
    for png in [
        "img.png",
        "attn-head0.png",
        "attn-head1.png",
        "attn-mean.png",
        "masks.png",
        "summary.png",
    ] {
        let im = image::open(dir.path().join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        if png != "summary.png" {
            assert_eq!((im.width(), im.height()), (448, 288), "{png}");
        }
    }
}

#[test]
fn attention_patch8_with_heads_override() {
    let dir = tempfile::tempdir().unwrap();
    let w = fixture("weights/p8_backbone.pth");
    let img = fixture("images/coffee.png");
    let args = [
        "attention",
        "-w",
        s(&w),
        "--heads",
        "3",
        "--threshold",
        "0.6",
        s(&img),
        "-o",
        s(dir.path()),
    ];
    ok(&args);
    let (shape, attn) = npy_f32(&dir.path().join("attention.npy"));
    assert_eq!(shape, vec![3, 50, 75]);
    let want = npy_f32(&fixture("outputs/p8_coffee_none_attention.npy")).1;
    assert!(max_abs(&attn, &want) <= 1e-5);
    assert_eq!(
        npy_u8(&dir.path().join("masks.npy")),
        npy_u8(&fixture("outputs/p8_coffee_none_masks.npy"))
    );
    // no --heads: 48 dims do not split by the dim/64 rule
    let err = fails(&["attention", "-w", s(&w), s(&img), "-o", s(dir.path())]);
    assert!(err.contains("--heads"), "{err}");
}

#[test]
fn embed_rows_follow_argument_order() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.npy");
    let w = fixture("weights/s16_full_checkpoint.pth");
    let (c, k) = (fixture("images/coffee.png"), fixture("images/chelsea.png"));
    ok(&[
        "embed",
        "-w",
        s(&w),
        s(&c),
        s(&k),
        "--batch-size",
        "1",
        "-o",
        s(&out),
    ]);
    let (shape, f) = npy_f32(&out);
    assert_eq!(shape, vec![2, 128]);
    let want = npy_f32(&fixture("outputs/s16_batch_eval_cls.npy")).1;
    // reference rows: chelsea, coffee, rocket
    assert!(max_abs(&f[..128], &want[128..256]) <= 1e-4);
    assert!(max_abs(&f[128..], &want[..128]) <= 1e-4);
    // --l2 gives unit rows
    ok(&["embed", "-w", s(&w), s(&c), "--l2", "-o", s(&out)]);
    let f = npy_f32(&out).1;
    let norm: f32 = f.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
}

#[test]
fn inspect_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let text = ok(&[
        "inspect",
        "-w",
        s(&fixture("weights/s16_full_checkpoint.pth")),
    ]);
    assert!(
        text.contains("training checkpoint (teacher network)"),
        "{text}"
    );
    assert!(text.contains("patch size:    16"), "{text}");
    let json = ok(&[
        "inspect",
        "--json",
        "-w",
        s(&fixture("weights/s16_hf.safetensors")),
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["format"], "Hugging Face ViTModel");
    assert_eq!(v["config"]["dim"], 128);

    let out = dir.path().join("m.safetensors");
    let half = dir.path().join("m16.safetensors");
    let w = fixture("weights/p8_backbone.pth");
    ok(&["export", "-w", s(&w), "--heads", "3", "-o", s(&out)]);
    ok(&[
        "export",
        "-w",
        s(&w),
        "--heads",
        "3",
        "--half",
        "-o",
        s(&half),
    ]);
    let text = ok(&["inspect", "-w", s(&out)]);
    assert!(
        text.contains("dino-rs safetensors") && text.contains("heads:         3"),
        "{text}"
    );
    assert!(
        std::fs::metadata(&half).unwrap().len() < std::fs::metadata(&out).unwrap().len() * 6 / 10
    );
    // the exported file gives the same attention without --heads
    let a = dir.path().join("a");
    ok(&[
        "attention",
        "-w",
        s(&out),
        s(&fixture("images/coffee.png")),
        "-o",
        s(&a),
    ]);
    let want = npy_f32(&fixture("outputs/p8_coffee_none_attention.npy")).1;
    assert!(max_abs(&npy_f32(&a.join("attention.npy")).1, &want) <= 1e-5);
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let w = fixture("weights/s16_backbone.pth");
    let img = fixture("images/chelsea.png");
    let o = dir.path().join("o");
    let corrupt = dir.path().join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();

    let e = fails(&[
        "attention",
        "-w",
        "/nonexistent/w.pth",
        s(&img),
        "-o",
        s(&o),
    ]);
    assert!(e.contains("/nonexistent/w.pth"), "{e}");
    let e = fails(&["attention", "-w", s(&img), s(&img), "-o", s(&o)]);
    assert!(e.contains("not a checkpoint"), "{e}");
    let e = fails(&["attention", "-w", s(&w), s(&corrupt), "-o", s(&o)]);
    assert!(
        e.contains("corrupt.jpg") && e.contains("cannot decode"),
        "{e}"
    );
    let e = fails(&["embed", "-w", s(&w), s(&img), s(&empty), "-o", s(&o)]);
    assert!(e.contains("empty.png") && e.contains("empty"), "{e}");
    let e = fails(&[
        "attention",
        "-w",
        s(&w),
        "--threshold",
        "1.5",
        s(&img),
        "-o",
        s(&o),
    ]);
    assert!(e.contains("threshold"), "{e}");
    let e = fails(&[
        "attention",
        "-w",
        s(&w),
        "--resize",
        "8x8",
        s(&img),
        "-o",
        s(&o),
    ]);
    assert!(e.contains("smaller than one 16x16 patch"), "{e}");
    let e = fails(&[
        "attention",
        "-w",
        s(&w),
        "--resize",
        "4000x4000",
        s(&img),
        "-o",
        s(&o),
    ]);
    assert!(e.contains("limit"), "{e}");
    let e = fails(&["inspect", "-w", s(&w), "--heads", "3"]);
    assert!(e.contains("not divisible by 3 heads"), "{e}");
    // argument errors are clap's (exit code 2) with a usage hint
    let out = dino(&[
        "attention",
        "-w",
        s(&w),
        "--resize",
        "big",
        s(&img),
        "-o",
        s(&o),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resize"));
    assert!(!o.join("attention.npy").exists());
}
