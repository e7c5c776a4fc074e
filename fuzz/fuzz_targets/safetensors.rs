//! Weights as safetensors (official, Hugging Face and this project's layouts).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = dino_core::weights::load_bytes(data, &Default::default());
});
