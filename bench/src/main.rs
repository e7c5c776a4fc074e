//! `dino-bench`: timings of dino-rs on this machine next to PyTorch / ONNX Runtime /
//! torchvision measured in the same run, as tables (see BENCHMARKS.md). A developer tool: the
//! references run through the repository's Python scripts (`tests/reference/`), found from
//! this crate's own location, so it runs from any directory:
//!
//! ```sh
//! cargo run -p dino-bench --release -- --mode forward --arch vit_small --batch 1,8
//! ```

mod bench;

use clap::Parser;

/// Time the ViT forward pass, a training step or the multi-crop augmentation, with PyTorch /
/// ONNX Runtime / torchvision side by side when installed.
#[derive(Parser)]
#[command(name = "dino-bench", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    args: bench::Args,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    kernels: dino_native::gpu_kernels::KernelFlags,
}

fn main() {
    dino_native::allocator::keep_freed_memory();
    let cli = Cli::parse();
    dino_native::device_panics::install("Lower --batch (or the model size) for this device.");
    if let Err(e) = dino_native::gpu_kernels::configure(&cli.kernels) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    if let Some(n) = cli.threads {
        dino_native::set_threads(n);
    }
    let result = bench::run(cli.args, cli.threads);
    dino_native::kernel_progress::finish();
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
