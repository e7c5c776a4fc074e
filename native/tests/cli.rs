//! End-to-end tests of the `dino` binary on the reference fixtures in tests/fixtures.

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    class_folder, coffee_and_chelsea_rows_as_pytorch, dino, embed_coffee_and_chelsea, fails, ok,
    ok_all, paws_args, read_json, s, train_args_with,
};
use dino_tests::{fixture, max_abs, read_npy_file, read_npy_u8_file};

#[test]
fn help_explains_every_subcommand() {
    let top = ok(&["--help"]);
    for cmd in [
        "embed",
        "attention",
        "inspect",
        "export",
        "dedup",
        "retrieve",
        "video",
        "propagate",
        "cluster",
        "pca",
    ] {
        assert!(top.contains(cmd), "{cmd} missing from --help");
        let help = ok(&[cmd, "--help"]);
        assert!(help.contains("--weights"), "{cmd}: {help}");
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
    let (shape, attn) = read_npy_file(&dir.path().join("attention.npy"));
    assert_eq!(shape, vec![2, 18, 28]);
    let want = read_npy_file(&fixture("outputs/s16_chelsea_none_attention.npy")).1;
    assert!(max_abs(&attn, &want) <= 1e-5);
    assert_eq!(
        read_npy_u8_file(&dir.path().join("masks.npy")),
        read_npy_u8_file(&fixture("outputs/s16_chelsea_none_masks.npy"))
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
    let (shape, attn) = read_npy_file(&dir.path().join("attention.npy"));
    assert_eq!(shape, vec![3, 50, 75]);
    let want = read_npy_file(&fixture("outputs/p8_coffee_none_attention.npy")).1;
    assert!(max_abs(&attn, &want) <= 1e-5);
    assert_eq!(
        read_npy_u8_file(&dir.path().join("masks.npy")),
        read_npy_u8_file(&fixture("outputs/p8_coffee_none_masks.npy"))
    );
    // no --heads: 48 dims do not split by the dim/64 rule
    let err = fails(&["attention", "-w", s(&w), s(&img), "-o", s(dir.path())]);
    assert!(err.contains("--heads"), "{err}");
}

#[test]
fn embed_rows_follow_argument_order() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.npy");
    embed_coffee_and_chelsea(&out, &[]);
    coffee_and_chelsea_rows_as_pytorch(&out);
    // --l2 gives unit rows
    let (w, c) = (
        fixture("weights/s16_full_checkpoint.pth"),
        fixture("images/coffee.png"),
    );
    ok(&["embed", "-w", s(&w), s(&c), "--l2", "-o", s(&out)]);
    let f = read_npy_file(&out).1;
    let norm: f32 = f.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
}

/// A ResNet checkpoint (DINO's ResNet-50 layout, narrowed): inspected, embedded, used by k-NN
/// and dedup; the commands that need attention maps say why they cannot.
#[test]
fn resnet_weights_embed_classify_and_refuse_attention() {
    let dir = tempfile::tempdir().unwrap();
    let w = fixture("weights/resnet_backbone.pth");
    let text = ok(&["inspect", "-w", s(&w)]);
    assert!(text.contains("features:      256"), "{text}");
    assert!(text.contains("Bottleneck"), "{text}");
    let out = dir.path().join("f.npy");
    let (c, k) = (fixture("images/coffee.png"), fixture("images/chelsea.png"));
    ok(&["embed", "-w", s(&w), s(&c), s(&k), "-o", s(&out)]);
    let (shape, f) = read_npy_file(&out);
    assert_eq!(shape, vec![2, 256]);
    assert!(f.iter().all(|v| v.is_finite()) && max_abs(&f[..256], &f[256..]) > 1e-3);
    // the PAWS checkpoint's backbone and the DINO checkpoint's student load too
    let paws = fixture("weights/resnet_paws_checkpoint.pth.tar");
    ok(&["embed", "-w", s(&paws), s(&c), "-o", s(&out)]);
    let dino = fixture("weights/resnet_dino_checkpoint.pth");
    let student = ok(&["inspect", "-w", s(&dino), "--checkpoint-key", "student"]);
    assert!(student.contains("student network"), "{student}");
    let data = class_folder(dir.path());
    let knn = ok(&[
        "knn",
        "-w",
        s(&w),
        "--train",
        s(&data),
        "--val",
        s(&data),
        "--nb-knn",
        "1",
    ]);
    assert!(knn.contains("| 1 | 100.00 |"), "{knn}");
    // dino snn and the fine-tuning take the official PAWS checkpoint with its heads
    let snn = |w: &Path| ok(&["snn", "-w", s(w), "--train", s(&data), "--val", s(&data)]);
    let text = snn(&paws);
    assert!(text.contains("top-1"), "{text}");
    let ft = dir.path().join("finetuned");
    let log = common::ok_all(&[
        "paws-finetune",
        "-w",
        s(&paws),
        "--labels",
        s(&data),
        "--output-dir",
        s(&ft),
        "--classes-per-batch",
        "2",
        "--supervised-imgs-per-class",
        "1",
        "--epochs",
        "1",
    ]);
    assert!(
        log.contains("projection to 16") && log.contains("224 px"),
        "{log}"
    );
    let text = snn(&ft.join("encoder.safetensors"));
    assert!(text.contains("top-1"), "{text}");
    let e = fails(&["dedup", "-w", s(&w), s(&data)]);
    assert!(e.contains("--descriptor cls"), "{e}");
    let out = dir.path().join("dedup");
    let dedup = ok(&[
        "dedup",
        "-w",
        s(&w),
        s(&data),
        "--descriptor",
        "cls",
        "-o",
        s(&out),
    ]);
    assert!(dedup.contains("4 images"), "{dedup}");
    let e = fails(&["attention", "-w", s(&w), s(&c), "-o", s(dir.path())]);
    assert!(
        e.contains("ResNet") && e.contains("needs a Vision Transformer"),
        "{e}"
    );
}

#[test]
fn kernel_cache_flags_are_checked_and_said_to_need_a_gpu_backend() {
    // the flags are accepted and the folder made; a build without a GPU backend says they do
    // nothing there (CI's has wgpu: native/tests/gpu.rs runs them on it); a folder that cannot
    // be made is an error before any work
    let dir = tempfile::tempdir().unwrap();
    let w = fixture("weights/s16_backbone.pth");
    let cache = dir.path().join("kernels");
    let all = ok_all(&[
        "inspect",
        "-w",
        s(&w),
        "--kernel-cache",
        s(&cache),
        "--autotune",
        "minimal",
    ]);
    assert!(cache.is_dir());
    let gpu = cfg!(any(feature = "wgpu", feature = "vulkan", feature = "metal"));
    assert_eq!(
        all.contains("apply to GPU backends; this dino has none"),
        !gpu,
        "{all}"
    );
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    // a path below a plain file can be neither a folder nor a file
    for (flag, says) in [
        ("--kernel-cache", "cannot create it"),
        ("--profile-kernels", "cannot write it"),
    ] {
        let e = fails(&["inspect", "-w", s(&w), flag, s(&file.join("sub"))]);
        assert!(e.contains(flag) && e.contains(says), "{e}");
    }
    let e = dino(&["inspect", "-w", s(&w), "--autotune", "fastest"]);
    assert!(!e.status.success());
}

#[test]
fn a_bad_spin_setting_is_refused_before_any_work() {
    let w = fixture("weights/s16_backbone.pth");
    for bad in ["abc", "-5", "1.5"] {
        let r = Command::new(env!("CARGO_BIN_EXE_dino"))
            .args(["inspect", "-w", s(&w)])
            .env("DINO_CPU_SPIN_US", bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{err}");
        assert!(
            err.contains("DINO_CPU_SPIN_US") && err.contains("whole number of microseconds"),
            "{err}"
        );
    }
    let r = Command::new(env!("CARGO_BIN_EXE_dino"))
        .args(["inspect", "-w", s(&w)])
        .env("DINO_CPU_SPIN_US", "0")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
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
    let want = read_npy_file(&fixture("outputs/p8_coffee_none_attention.npy")).1;
    assert!(max_abs(&read_npy_file(&a.join("attention.npy")).1, &want) <= 1e-5);
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

    let (w, img, o) = (s(&w), s(&img), s(&o));
    let attention = |extra: &[&'static str], image: &str| -> Vec<String> {
        let mut a: Vec<String> = ["attention", "-w", w].map(String::from).to_vec();
        a.extend(extra.iter().map(|x| x.to_string()));
        a.extend([image, "-o", o].map(String::from));
        a
    };
    // each bad input, and what its error message must say
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            ["attention", "-w", "/nonexistent/w.pth", img, "-o", o]
                .map(String::from)
                .to_vec(),
            vec!["/nonexistent/w.pth"],
        ),
        (
            ["attention", "-w", img, img, "-o", o]
                .map(String::from)
                .to_vec(),
            vec!["not a checkpoint"],
        ),
        (
            attention(&[], s(&corrupt)),
            vec!["corrupt.jpg", "cannot decode"],
        ),
        // the hardening issue's file: zero-stride views declaring 6.4 GB each
        (
            vec![
                "inspect".to_string(),
                "-w".to_string(),
                s(&fixture("hostile/zero_stride.pth")).to_string(),
            ],
            vec!["zero_stride.pth", "refused before reading"],
        ),
        (
            ["embed", "-w", w, img, s(&empty), "-o", o]
                .map(String::from)
                .to_vec(),
            vec!["empty.png", "empty"],
        ),
        (attention(&["--threshold", "1.5"], img), vec!["threshold"]),
        (
            attention(&["--resize", "8x8"], img),
            vec!["smaller than one 16x16 patch"],
        ),
        (
            attention(&["--resize", "4000x4000"], img),
            vec!["limit", "--resize 480x480"],
        ),
        (
            ["inspect", "-w", w, "--heads", "3"]
                .map(String::from)
                .to_vec(),
            vec!["not divisible by 3 heads"],
        ),
    ];
    for (args, expected) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = fails(&args);
        for want in expected {
            assert!(e.contains(want), "dino {args:?}: {e}");
        }
    }
    // argument errors are clap's (exit code 2) with a usage hint
    let args = attention(&["--resize", "big"], img);
    let out = dino(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resize"));
    assert!(!Path::new(o).join("attention.npy").exists());
}

fn train_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    train_args_with(data, out, "3", "1")
}

#[test]
fn train_writes_everything_a_person_looks_at() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = fixture("images");
    ok(&train_args(s(&data), s(&out)));
    for f in [
        "checkpoint.safetensors",
        "teacher.safetensors",
        "config.toml",
        "log.txt",
        "metrics.jsonl",
        "plots/loss.png",
        "plots/schedules.png",
        "attention/epoch003.png",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let log = std::fs::read_to_string(out.join("log.txt")).unwrap();
    assert_eq!(log.lines().count(), 3);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 15); // 3 epochs x 5 iterations
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    for k in ["loss", "lr", "wd", "momentum", "teacher_temp", "img_per_s"] {
        assert!(first[k].is_number(), "{k}");
    }
    // the exported teacher is a model file for every command
    let a = dir.path().join("att");
    ok(&[
        "attention",
        "-w",
        s(&out.join("teacher.safetensors")),
        s(&fixture("images/chelsea.png")),
        "-o",
        s(&a),
    ]);
    let text = ok(&["inspect", "-w", s(&out.join("checkpoint.safetensors"))]);
    assert!(
        text.contains("dino-rs") && text.contains("embed dim:     192"),
        "{text}"
    );
    // a finished run is not trained again
    let again = dino(&train_args(s(&data), s(&out)));
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already finished"));
}

#[test]
fn a_killed_run_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture("images");
    let (a, b) = (dir.path().join("straight"), dir.path().join("killed"));
    ok(&train_args(s(&data), s(&a)));
    // kill the second run as soon as its first checkpoint exists
    let mut child = Command::new(env!("CARGO_BIN_EXE_dino"))
        .args(train_args(s(&data), s(&b)))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = b.join("checkpoint.safetensors");
    let t = std::time::Instant::now();
    while !ckpt.exists() && t.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let resumed = dino(&train_args(s(&data), s(&b)));
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{err}");
    assert!(
        err.contains("resuming") || err.contains("already finished"),
        "{err}"
    );
    let wa = std::fs::read(a.join("teacher.safetensors")).unwrap();
    let wb = std::fs::read(b.join("teacher.safetensors")).unwrap();
    assert!(
        wa == wb,
        "the resumed run's teacher differs from the uninterrupted one"
    );
    let ca = std::fs::read(a.join("checkpoint.safetensors")).unwrap();
    let cb = std::fs::read(b.join("checkpoint.safetensors")).unwrap();
    assert!(ca == cb, "the resumed run's checkpoint differs");
    // the metrics log has each iteration once
    let m = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    assert_eq!(m.lines().count(), 15);
}

#[test]
fn a_damaged_checkpoint_names_the_newest_intact_copy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = fixture("images");
    let mut args = train_args_with(s(&data), s(&out), "2", "0");
    args.extend(["--attention-every", "0", "--saveckp-freq", "1"]);
    ok(&args);
    // the run is finished; damage its rolling checkpoint and ask for a longer run
    let ckpt = out.join("checkpoint.safetensors");
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    let e = fails(&args);
    assert!(
        e.contains("checkpoint.safetensors")
            && e.contains("the newest intact copy is")
            && e.contains("checkpoint0001.safetensors")
            && e.contains("--resume-intact"),
        "{e}"
    );
    // the temporary files a killed run would leave, in the run folder and the folders the CLI
    // writes below it (plots, attention sheets)
    std::fs::write(out.join(".tmp99999.config.toml"), "half").unwrap();
    for sub in ["plots", "attention"] {
        std::fs::create_dir_all(out.join(sub)).unwrap();
        std::fs::write(out.join(sub).join(".tmp99999.epoch001.png"), "half").unwrap();
    }
    let mut intact = args.clone();
    intact.push("--resume-intact");
    let r = dino(&intact);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(
        err.contains("resuming from the newest intact copy")
            && err.contains("removed 3 half-written temporary file"),
        "{err}"
    );
    assert!(!out.join(".tmp99999.config.toml").exists());
    for sub in ["plots", "attention"] {
        assert!(!out.join(sub).join(".tmp99999.epoch001.png").exists());
    }
    assert_eq!(std::fs::read(&ckpt).unwrap().len(), bytes.len());
}

#[test]
fn a_resumed_run_refuses_recipe_changes_and_applies_harmless_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = fixture("images");
    let mut args = train_args_with(s(&data), s(&out), "1", "0");
    args.extend(["--attention-every", "0"]);
    ok(&args);
    // a recipe flag that differs from the checkpoint's config is refused, naming each
    let mut changed = args.clone();
    changed.extend(["--teacher-temp", "0.07", "--lr", "0.01"]);
    let e = fails(&changed);
    assert!(
        e.contains("--teacher-temp 0.07 (the run has 0.04)")
            && e.contains("--lr 0.01 (the run has 0.0005)")
            && e.contains("--no-resume"),
        "{e}"
    );
    // so is the same change from a --config file
    let toml = dir.path().join("run.toml");
    std::fs::write(&toml, "teacher_temp = 0.07\n").unwrap();
    let mut from_file = args.clone();
    from_file.extend(["--config", s(&toml)]);
    let e = fails(&from_file);
    assert!(e.contains("--teacher-temp 0.07"), "{e}");
    // a flag equal to the run's own value is no change; a harmless one applies
    let mut same = args.clone();
    same.extend(["--teacher-temp", "0.04", "--checkpoint-every", "2"]);
    let log = common::ok_all(&same);
    assert!(
        log.contains("checkpoint_every = 2 (was 1) applies") && !log.contains("teacher_temp"),
        "{log}"
    );
    // an unknown field in a config file is an error naming it
    std::fs::write(&toml, "teacher_temperature = 0.07\n").unwrap();
    let e = fails(&from_file);
    assert!(e.contains("teacher_temperature"), "{e}");
}

#[test]
fn a_small_folder_gets_the_small_data_recipe_and_says_so() {
    let data = fixture("images");
    let config = |extra: &[&str]| -> toml::Table {
        let mut args = vec!["train", "--data", s(&data), "--print-config"];
        args.extend(extra);
        ok(&args).parse().unwrap()
    };
    // 11 images: the small-data recipe, its last layer frozen for the whole run
    let auto = config(&["--epochs", "12"]);
    for (field, value) in [
        ("out_dim", "256"),
        ("teacher_temp", "0.02"),
        ("momentum_teacher", "0.99"),
        ("lr", "0.002"),
        ("freeze_last_layer", "12"),
    ] {
        assert_eq!(auto[field].to_string(), value, "{field}");
    }
    // flags still override it; --recipe official is main_dino.py's
    let flagged = config(&["--out-dim", "1024", "--freeze-last-layer", "1"]);
    assert_eq!(flagged["out_dim"].as_integer(), Some(1024));
    assert_eq!(flagged["freeze_last_layer"].as_integer(), Some(1));
    let official = config(&["--recipe", "official"]);
    assert_eq!(official["out_dim"].as_integer(), Some(65536));
    assert_eq!(official["freeze_last_layer"].as_integer(), Some(1));
    // and a run says which recipe it uses
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut args = train_args_with(s(&data), s(&out), "1", "0");
    args.retain(|a| *a != "--recipe" && *a != "official");
    args.extend(["--attention-every", "0"]);
    let r = dino(&args);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(
        err.contains("recipe: small data (11 images, fewer than 20000")
            && err.contains("--recipe official"),
        "{err}"
    );
}

#[test]
fn train_help_shows_the_official_defaults() {
    // every field of the config is a flag whose help shows TrainConfig::default()'s value
    let help = ok(&["train", "--help"]);
    let official = ok(&[
        "train",
        "--data",
        "anywhere",
        "--recipe",
        "official",
        "--print-config",
    ]);
    let table: toml::Table = official.parse().unwrap();
    assert!(table.len() >= 30, "{official}");
    for (field, value) in &table {
        let flag = format!("--{}", field.replace('_', "-"));
        let at = help
            .find(&format!("\n      {flag} "))
            .unwrap_or_else(|| panic!("{flag} missing from the help"))
            + 1;
        let shown = match value {
            toml::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        // this flag's entry: up to the next line that starts another flag
        let entry: Vec<&str> = help[at..]
            .lines()
            .enumerate()
            .take_while(|(i, l)| *i == 0 || !l.trim_start().starts_with('-'))
            .map(|(_, l)| l)
            .collect();
        let entry = entry.join(" ");
        assert!(
            entry.contains(&format!("[official: {shown}]")),
            "{flag}: {entry}"
        );
    }
}

#[test]
fn train_refuses_bad_settings_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let e = fails(&["train", "--data", "/nonexistent", "--output-dir", s(&out)]);
    assert!(e.contains("/nonexistent"), "{e}");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = fails(&["train", "--data", s(&empty), "--output-dir", s(&out)]);
    assert!(e.contains("no images found"), "{e}");
    let e = fails(&[
        "train",
        "--epochs",
        "2",
        "--warmup-epochs",
        "5",
        "--output-dir",
        s(&out),
    ]);
    assert!(e.contains("warm-up"), "{e}");
    let e = fails(&["train", "--arch", "vit_huge", "--output-dir", s(&out)]);
    assert!(e.contains("unknown architecture"), "{e}");
    // run lengths past what can be counted or recorded: clear errors, no allocation (the
    // schedules are functions of the iteration; 1e11 epochs alone would start)
    let e = fails(&[
        "train",
        "--epochs",
        "3000000000000000000",
        "--output-dir",
        s(&out),
    ]);
    assert!(
        e.contains("more iterations than this machine can count"),
        "{e}"
    );
    let e = fails(&[
        "train",
        "--epochs",
        "18446744073709551615",
        "--output-dir",
        s(&out),
    ]);
    assert!(e.contains("numbers go up to 9223372036854775807"), "{e}");
    // a folder with an unreadable image: skipped with a warning, the run goes on
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for f in ["chelsea.png", "coffee.png", "rocket.jpg"] {
        std::fs::copy(fixture(&format!("images/{f}")), data.join(f)).unwrap();
    }
    std::fs::write(data.join("broken.jpg"), b"\xff\xd8\xff garbage").unwrap();
    let mut args = train_args_with(s(&data), s(&out), "2", "0");
    args.extend(["--attention-every", "0"]);
    let r = dino(&args);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(
        err.contains("skipping unreadable image") && err.contains("broken.jpg"),
        "{err}"
    );
    // data parallel: the batch of 2 does not split over 3 devices; zero devices is no run
    let mut three = train_args_with(s(&data), s(&out), "2", "0");
    three.extend(["--devices", "3", "--no-resume"]);
    let e = fails(&three);
    assert!(e.contains("cannot be split over 3 devices"), "{e}");
    three.extend(["--devices", "0"]);
    let e = fails(&three);
    assert!(e.contains("at least 1"), "{e}");
    // gradient accumulation: 2 images as 3 micro-batches do not split; as 2 they train
    three.extend(["--devices", "1", "--accum-steps", "3"]);
    let e = fails(&three);
    assert!(e.contains("1 device(s) x 3 accumulation steps"), "{e}");
    three.extend(["--accum-steps", "2"]);
    let r = dino(&three);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(
        err.contains("gradient accumulation: each batch of 2 runs as 2 micro-batches of 1 images"),
        "{err}"
    );
    three.extend(["--accum-steps", "1", "--no-resume"]);
    if !cfg!(feature = "vulkan") {
        three.extend(["--devices", "2", "--device", "vulkan"]);
        let e = fails(&three);
        assert!(e.contains("built without the `vulkan` backend"), "{e}");
    }
    let text = ok(&["train", "--print-config"]);
    let cfg: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(cfg["arch"].as_str(), Some("vit_tiny"));
    // a flag given twice takes its last value (scripts append overrides to a recipe)
    let text = ok(&["train", "--print-config", "--epochs", "3", "--epochs", "5"]);
    let cfg: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(cfg["epochs"].as_integer(), Some(5));
}

#[test]
fn knn_and_linear_probe_run_on_image_folders() {
    let dir = tempfile::tempdir().unwrap();
    let data = class_folder(dir.path());
    let w = fixture("weights/s16_backbone.pth");
    let json = dir.path().join("knn.json");
    let cache = dir.path().join("cache");
    let out = ok(&[
        "knn",
        "-w",
        s(&w),
        "--train",
        s(&data),
        "--val",
        s(&data),
        "--nb-knn",
        "1",
        "3",
        "--cache",
        s(&cache),
        "--json",
        s(&json),
    ]);
    // each image is its own nearest neighbour: 1-NN on the training set itself is perfect
    assert!(out.contains("| 1 | 100.00 |"), "{out}");
    assert!(cache.join("train_features.npy").exists());
    let v: serde_json::Value = read_json(&json);
    assert_eq!(v["results"][0]["top1"], 100.0);
    // again from the cache, and the baselines
    let again = dino(&[
        "knn",
        "-w",
        s(&w),
        "--train",
        s(&data),
        "--val",
        s(&data),
        "--nb-knn",
        "1",
        "--cache",
        s(&cache),
    ]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("reusing"));
    let px = ok(&[
        "knn",
        "-w",
        s(&w),
        "--train",
        s(&data),
        "--val",
        s(&data),
        "--nb-knn",
        "1",
        "--raw-pixels",
        "--resize",
        "32x32",
    ]);
    assert!(
        px.contains("raw pixels") && px.contains("| 1 | 100.00 |"),
        "{px}"
    );
    ok(&[
        "knn",
        "-w",
        s(&w),
        "--train",
        s(&data),
        "--val",
        s(&data),
        "--nb-knn",
        "1",
        "--random-init",
    ]);
    let lin = ok(&[
        "linear",
        "-w",
        s(&w),
        "--train",
        s(&data),
        "--val",
        s(&data),
        "--n-last-blocks",
        "2",
        "--epochs",
        "30",
        "--lr",
        "50",
        "--batch-size",
        "4",
    ]);
    assert!(lin.contains("top-1"), "{lin}");
    // not an ImageFolder
    let flat = dir.path().join("flat");
    std::fs::create_dir_all(&flat).unwrap();
    std::fs::copy(fixture("images/chelsea.png"), flat.join("a.png")).unwrap();
    let e = fails(&["knn", "-w", s(&w), "--train", s(&flat), "--val", s(&flat)]);
    assert!(e.contains("one subfolder per class"), "{e}");
}

/// The ImageNet recipe's backbone kind: a bottleneck ResNet-50 (narrowed by --width-per-group
/// to stay quick) trains, resumes from its checkpoint, exports and is evaluated.
#[test]
fn paws_trains_a_resnet50_and_snn_evaluates_it() {
    let dir = tempfile::tempdir().unwrap();
    let classes = class_folder(dir.path());
    let out = dir.path().join("paws-resnet");
    let mut args = paws_args(s(&classes), s(&out));
    args.extend(["--model-name", "resnet50", "--width-per-group", "8"]);
    args.extend(["--crop-size", "32", "--multicrop-size", "16"]);
    let log = common::ok_all(&args);
    assert!(
        log.contains("model: ResNet (Bottleneck blocks [3, 4, 6, 3]"),
        "{log}"
    );
    assert!(log.contains("(256 features)"), "{log}");
    let again = common::ok_all(&args);
    assert!(again.contains("resuming"), "{again}");
    let text = ok(&[
        "snn",
        "-w",
        s(&out.join("encoder.safetensors")),
        "--train",
        s(&classes),
        "--val",
        s(&classes),
    ]);
    assert!(text.contains("top-1"), "{text}");
    let mut bad = args.clone();
    bad.extend(["--width-per-group", "4", "--no-resume"]);
    let e = fails(&bad);
    assert!(e.contains("not a ResNet"), "{e}");
}

#[test]
fn paws_trains_resumes_and_snn_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let classes = class_folder(dir.path());
    let out = dir.path().join("paws");
    let log = common::ok_all(&paws_args(s(&classes), s(&out)));
    assert!(log.contains("labelled: 4 images of 2 classes"), "{log}");
    for f in [
        "encoder.safetensors",
        "checkpoint.safetensors",
        "config.toml",
        "log.txt",
        "plots/loss.png",
        "plots/support.png",
        "plots/schedules.png",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4); // 2 epochs x 4 images / 2
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    for k in ["loss", "xent", "me_max", "support_acc", "lr", "img_per_s"] {
        assert!(first[k].is_number(), "{k}: {first}");
    }
    let log_txt = std::fs::read_to_string(out.join("log.txt")).unwrap();
    assert_eq!(log_txt.lines().count(), 2);
    assert!(log_txt.contains("train_me_max"), "{log_txt}");
    // a finished run is not trained again; a recipe change is refused
    let again = common::ok_all(&paws_args(s(&classes), s(&out)));
    assert!(again.contains("resuming"), "{again}");
    let mut changed = paws_args(s(&classes), s(&out));
    changed.extend(["--sharpen", "0.5"]);
    let e = fails(&changed);
    assert!(e.contains("--sharpen 0.5 (the run has 0.25)"), "{e}");
    // the soft nearest-neighbour evaluation of the encoder, and of the checkpoint
    let json = dir.path().join("snn.json");
    for w in ["encoder.safetensors", "checkpoint.safetensors"] {
        let text = ok(&[
            "snn",
            "-w",
            s(&out.join(w)),
            "--train",
            s(&classes),
            "--val",
            s(&classes),
            "--json",
            s(&json),
        ]);
        assert!(
            text.contains("top-1") && text.contains("4 images"),
            "{text}"
        );
    }
    let r = read_json(&json);
    assert!((0.0..=100.0).contains(&r["top1"].as_f64().unwrap()), "{r}");
    // the SuNCEt fine-tuning of the encoder: trains, resumes, and snn evaluates its output
    let ft = dir.path().join("finetuned");
    let encoder = out.join("encoder.safetensors");
    let ft_args = [
        "paws-finetune",
        "-w",
        s(&encoder),
        "--labels",
        s(&classes),
        "--output-dir",
        s(&ft),
        "--classes-per-batch",
        "2",
        "--supervised-imgs-per-class",
        "1",
        "--epochs",
        "2",
    ];
    let log = common::ok_all(&ft_args);
    assert!(log.contains("BatchNorms frozen"), "{log}");
    let metrics = std::fs::read_to_string(ft.join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics.lines().count(),
        4,
        "2 epochs x 2 batches: {metrics}"
    );
    assert!(metrics.contains("support_acc"), "{metrics}");
    let again = common::ok_all(&ft_args);
    assert!(again.contains("resuming"), "{again}");
    let text = ok(&[
        "snn",
        "-w",
        s(&ft.join("encoder.safetensors")),
        "--train",
        s(&classes),
        "--val",
        s(&classes),
    ]);
    assert!(text.contains("top-1"), "{text}");
    let mut changed = ft_args.to_vec();
    changed.extend(["--temperature", "0.5"]);
    let e = fails(&changed);
    assert!(e.contains("--temperature 0.5"), "{e}");
    // a DINO model is not a PAWS encoder
    let e = fails(&[
        "paws-finetune",
        "-w",
        s(&fixture("weights/s16_hf.safetensors")),
        "--labels",
        s(&classes),
        "--output-dir",
        s(&dir.path().join("ft-bad")),
    ]);
    assert!(e.contains("not a dino-rs PAWS file"), "{e}");
    // a drawn labelled subset is written next to the outputs
    let drawn = dir.path().join("drawn");
    let mut args = paws_args("unused", s(&drawn));
    args.drain(1..3);
    args.extend(["--label-fraction", "0.5", "--labels-from", s(&classes)]);
    ok(&args);
    let csv = std::fs::read_to_string(drawn.join("labels.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        3,
        "a header and one image of each class: {csv}"
    );
    // refusals: classes that do not split, a DINO model given to snn, no labels at all
    let mut bad = paws_args(s(&classes), s(&out));
    bad.extend(["--classes-per-batch", "3", "--no-resume"]);
    let e = fails(&bad);
    assert!(e.contains("classes_per_batch must divide"), "{e}");
    let e = fails(&[
        "snn",
        "-w",
        s(&fixture("weights/s16_hf.safetensors")),
        "--train",
        s(&classes),
        "--val",
        s(&classes),
    ]);
    assert!(e.contains("not a dino-rs PAWS file"), "{e}");
    let e = fails(&["paws", "--output-dir", s(&out), "--no-resume"]);
    assert!(e.contains("needs labelled images"), "{e}");
}
