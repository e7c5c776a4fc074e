//! PyTorch `.pth` (zip and legacy pickle; backbones and training checkpoints). The reader
//! takes a path, so each input goes through a file.
#![no_main]
use std::sync::OnceLock;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = DIR
        .get_or_init(|| tempfile::tempdir().unwrap())
        .path()
        .join("input.pth");
    std::fs::write(&path, data).unwrap();
    let _ = dino_core::weights::load_file(&path, &Default::default());
});
