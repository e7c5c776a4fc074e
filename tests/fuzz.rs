//! A stable-Rust fuzzing harness for every file a user hands the project: images, PyTorch
//! `.pth` (zip and legacy pickle, backbone and training-checkpoint layouts), safetensors and
//! this project's training checkpoints. Seeds (small valid files: tests/fixtures/hostile/
//! tiny_*, written by tests/reference/make_hostile_fixtures.py, and images and a checkpoint
//! made here) are mutated by a seeded mutator (bit flips, interesting values, chunks cut,
//! repeated or swapped, truncation); every input must give `Ok` or an error, never a panic,
//! and no single allocation may exceed the target's [`BUDGETS`] (the allocator reports the target and
//! iteration, then aborts).
//!
//!   cargo test --release -p dino-tests --test fuzz                  # 2,000 inputs a target
//!   FUZZ_ITERS=1000000 cargo test --release -p dino-tests --test fuzz -- --nocapture
//!   FUZZ_SEED=7 ...                                                 # another sequence
//!
//! The same targets for libFuzzer (coverage-guided, nightly) are in fuzz/.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use dino_core::weights::{LoadOptions, load_bytes, load_file};
use dino_tests::*;

/// The largest single allocation an input may cause, per target: for weights and checkpoints
/// far above what the seeds need (a few MB) and far below what a hostile size field asks for;
/// for images the decoder's own documented limit (`MAX_DECODED_BYTES`: a 16,384-pixel side is
/// a legitimate photo).
const BUDGETS: [usize; 4] = [
    dino_core::imaging::MAX_DECODED_BYTES as usize,
    256 << 20,
    256 << 20,
    256 << 20,
];

/// The target being fuzzed and its iteration. The allocator is global, so the targets take
/// turns ([`ONE_TARGET_AT_A_TIME`]): were two running at once (the test harness runs tests on
/// parallel threads), one target's allocation would be charged to another's budget (once in
/// CI, an image input's 781 MB decode, within the image budget, aborted as the checkpoint
/// target's), and a target ending would switch the check off for one still running.
static TARGET: AtomicUsize = AtomicUsize::new(usize::MAX);
static ITERATION: AtomicUsize = AtomicUsize::new(0);
static ONE_TARGET_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
const TARGETS: [&str; 4] = ["image", "pth", "safetensors", "checkpoint"];

struct Budgeted;

unsafe impl GlobalAlloc for Budgeted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn check(size: usize) {
    let target = TARGET.load(Ordering::Relaxed);
    if target != usize::MAX && size > BUDGETS[target] {
        // no allocation from here on: a fixed message, then abort
        let _ = writeln!(
            std::io::stderr(),
            "fuzz: target '{}' iteration {} asked for {size} bytes (budget {}); \
             rerun with the same FUZZ_SEED to reproduce",
            TARGETS[target],
            ITERATION.load(Ordering::Relaxed),
            BUDGETS[target]
        );
        std::process::abort();
    }
}

#[global_allocator]
static ALLOCATOR: Budgeted = Budgeted;

/// xorshift64*: the mutator's deterministic random source.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four mutations of `seed`.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    const INTERESTING: [u64; 10] = [
        0,
        1,
        0x7f,
        0x80,
        0xff,
        0xffff,
        0x7fff_ffff,
        0xffff_ffff,
        0x7fff_ffff_ffff_ffff,
        u64::MAX,
    ];
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        if v.is_empty() {
            v.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(v.len());
        match rng.below(7) {
            0 => v[at] ^= 1 << rng.below(8),
            1 => v[at] = rng.next() as u8,
            2 => {
                let x = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let n = [1, 2, 4, 8][rng.below(4)].min(v.len() - at);
                v[at..at + n].copy_from_slice(&x[..n]);
            }
            3 => v.truncate(at),
            4 => {
                let n = rng.below(64).min(v.len() - at);
                v.drain(at..at + n);
            }
            5 => {
                let n = rng.below(64).min(v.len() - at);
                let chunk = v[at..at + n].to_vec();
                let to = rng.below(v.len());
                v.splice(to..to, chunk);
            }
            _ => {
                // a decimal number where the text has one (pickle and JSON headers)
                let digits = rng.next().to_string();
                let n = digits.len().min(v.len() - at);
                v[at..at + n].copy_from_slice(&digits.as_bytes()[..n]);
            }
        }
    }
    v
}

fn iterations() -> usize {
    std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Runs `exec` on `iterations()` mutations of the seeds; a panic names the input's file.
fn fuzz(target: usize, seeds: &[Vec<u8>], exec: impl Fn(&[u8])) {
    // a target that panicked poisons the lock; the others still run
    let _turn = ONE_TARGET_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut rng = Rng(seed().wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let n = iterations();
    for s in seeds {
        exec(s);
    }
    let start = std::time::Instant::now();
    for i in 0..n {
        let input = mutate(&seeds[i % seeds.len()], &mut rng);
        ITERATION.store(i, Ordering::Relaxed);
        TARGET.store(target, Ordering::Relaxed);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exec(&input)));
        TARGET.store(usize::MAX, Ordering::Relaxed);
        if outcome.is_err() {
            let path = std::env::temp_dir().join(format!("fuzz-{}-{i}.bin", TARGETS[target]));
            std::fs::write(&path, &input).unwrap();
            panic!(
                "target '{}' panicked on input {i} (seed {}), written to {}",
                TARGETS[target],
                seed(),
                path.display()
            );
        }
    }
    println!(
        "fuzz: {} inputs of '{}' in {:.1} s, no panic, no allocation above {} MiB",
        n,
        TARGETS[target],
        start.elapsed().as_secs_f64(),
        BUDGETS[target] >> 20
    );
}

fn hostile(name: &str) -> Vec<u8> {
    std::fs::read(fixture(&format!("hostile/{name}"))).unwrap()
}

#[test]
fn images() {
    let img = image::RgbImage::from_fn(12, 9, |x, y| image::Rgb([x as u8 * 20, y as u8 * 25, 99]));
    let seeds: Vec<Vec<u8>> = [
        image::ImageFormat::Png,
        image::ImageFormat::Jpeg,
        image::ImageFormat::Gif,
        image::ImageFormat::Bmp,
        image::ImageFormat::WebP,
        image::ImageFormat::Tiff,
    ]
    .into_iter()
    .map(|f| {
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img.clone())
            .write_to(&mut out, f)
            .unwrap();
        out.into_inner()
    })
    .collect();
    fuzz(0, &seeds, |b| {
        let _ = dino_core::imaging::decode_image(b, "fuzz");
    });
}

#[test]
fn pth() {
    let seeds = ["tiny_vit.pth", "tiny_vit_legacy.pth", "tiny_checkpoint.pth"].map(hostile);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.pth");
    fuzz(1, &seeds, |b| {
        std::fs::write(&path, b).unwrap();
        let _ = load_file(&path, &LoadOptions::default());
    });
}

#[test]
fn safetensors() {
    let seeds = [hostile("tiny_vit.safetensors")];
    fuzz(2, &seeds, |b| {
        let _ = load_bytes(b, &LoadOptions::default());
    });
}

#[test]
fn checkpoint() {
    use dino_core::train::{TrainConfig, Trainer};
    let cfg = TrainConfig {
        arch: "vit_tiny".into(),
        embed_dim: Some(16),
        depth: Some(1),
        num_heads: Some(2),
        patch_size: 4,
        out_dim: 8,
        head_hidden_dim: 8,
        head_bottleneck_dim: 4,
        batch_size: 2,
        epochs: 2,
        warmup_epochs: 1,
        global_crop_size: 8,
        local_crop_size: 4,
        ..TrainConfig::default()
    };
    let t = Trainer::new(cfg, 3, &device()).unwrap();
    let seeds = [t.checkpoint_bytes().unwrap()];
    fuzz(3, &seeds, |b| {
        let _ = Trainer::from_checkpoint(b, &device());
    });
}
