//! This project's training checkpoints (networks, optimiser state, center, run header).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let device = burn::tensor::Device::flex();
    let _ = dino_core::train::Trainer::from_checkpoint(data, &device);
});
