//! The parts of the `dino` command line that other binaries of the workspace share (the
//! `dino-bench` benchmarks): the compute backends and the process allocator, so that a
//! benchmark measures exactly what `dino` runs.

pub mod allocator;
pub mod ann;
pub mod ann_order;
pub mod ann_projection;
pub mod backend;
pub mod device_panics;
pub mod gpu_kernels;
pub mod huge_pages;
pub mod kernel_progress;
#[cfg(feature = "tch")]
pub mod libtorch;
pub mod npy;
pub mod terminal;

/// `--threads N` of `dino` and `dino-bench`: Rayon's global pool (the CPU engine, burn-flex,
/// everything else parallel) and, in a `tch` build, LibTorch's own pool, which Rayon's does not
/// reach. A pool that cannot be set is a warning: the run goes on with the default.
pub fn set_threads(n: usize) {
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .build_global()
    {
        eprintln!("warning: cannot set {n} threads: {e}");
    }
    #[cfg(feature = "tch")]
    libtorch::set_threads(n);
}

/// The command-line name of a choice (`--method kmeans`), for reports and messages.
pub fn choice_name<T: clap::ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}
