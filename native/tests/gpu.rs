//! The `dino` command on a GPU backend, end to end. Runs with `DINO_TEST_DEVICE=wgpu` (CI:
//! Chromium's SwiftShader Vulkan, tests/run-all.sh), else passes without a device: the CLI's
//! GPU path gives PyTorch's features, a cold start says what it compiled and autotuned, and a
//! run with the same kernel cache autotunes nothing again.

mod common;

use common::{coffee_and_chelsea_rows_as_pytorch, embed_coffee_and_chelsea, s};
use dino_tests::read_npy_file;

fn on_gpu_path() -> bool {
    std::env::var("DINO_TEST_DEVICE").is_ok_and(|d| d == "wgpu")
}

/// The kernel lines' counts, `(compiled, autotuned)` per line ("GPU kernels: 37 compiled, 4
/// shapes autotuned in 6.2 s").
fn kernel_lines(stderr: &str) -> Vec<(u64, u64)> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("GPU kernels: "))
        .filter(|l| l.contains(" compiled, "))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let number = |i: usize| words[i].parse::<u64>().unwrap_or_else(|_| panic!("{l}"));
            (number(0), number(2))
        })
        .collect()
}

#[test]
fn the_gpu_path_embeds_as_pytorch_and_a_warm_kernel_cache_autotunes_nothing_again() {
    if !on_gpu_path() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cache, out) = (dir.path().join("kernels"), dir.path().join("f.npy"));
    let flags = ["--device", "wgpu", "--kernel-cache", s(&cache)];
    let cold = embed_coffee_and_chelsea(&out, &flags);
    assert!(cold.contains("(empty: the first use compiles"), "{cold}");
    let lines = kernel_lines(&cold);
    let compiled: u64 = lines.iter().map(|l| l.0).sum();
    let autotuned: u64 = lines.iter().map(|l| l.1).sum();
    assert!(compiled > 0 && autotuned > 0, "{cold}");
    // the features of the CLI on the GPU: PyTorch's
    let f = coffee_and_chelsea_rows_as_pytorch(&out);

    // the same command again: every shape's choice comes from the cache (WGSL kernels are
    // compiled by each process: the driver's shader cache keeps those)
    let warm = embed_coffee_and_chelsea(&out, &flags);
    assert!(warm.contains("MB cached"), "{warm}");
    assert!(kernel_lines(&warm).iter().all(|l| l.1 == 0), "{warm}");
    assert_eq!(read_npy_file(&out).1, f);
}
