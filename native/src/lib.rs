//! The parts of the `dino` command line that other binaries of the workspace share (the
//! `dino-bench` benchmarks): the compute backends and the process allocator, so that a
//! benchmark measures exactly what `dino` runs.

pub mod allocator;
pub mod ann;
pub mod ann_projection;
pub mod backend;
pub mod gpu_kernels;
#[cfg(feature = "tch")]
pub mod libtorch;
pub mod npy;

/// The command-line name of a choice (`--method kmeans`), for reports and messages.
pub fn choice_name<T: clap::ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}
