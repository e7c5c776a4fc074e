//! `dino`: DINO Vision Transformers from the command line.

mod builtin;
mod commands;
mod engine;
mod extraction_ranks;
mod feature_rows;
mod feature_store;
mod features;
mod frames;
mod gallery;
mod label_png;
mod model_args;
#[cfg(feature = "mpi")]
mod mpi_world;
mod neighbour_search;
mod plots;
mod recipe;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use dino_native::allocator;
pub(crate) use dino_native::{backend, choice_name, npy, terminal};

/// DINO self-supervised Vision Transformers (Caron et al. 2021) in Rust, on Burn.
#[derive(Parser)]
#[command(name = "dino", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// CPU threads for inference (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(flatten)]
    kernels: dino_native::gpu_kernels::KernelFlags,
}

#[derive(Subcommand)]
enum Command {
    /// Write the CLS features of images to a .npy file ([N, D], one row per image).
    Embed(commands::embed::Args),
    /// Last-block CLS self-attention of an image: .npy maps, masks and PNGs.
    Attention(commands::attention::Args),
    /// Print the detected format and architecture of a weights file.
    Inspect(commands::inspect::Args),
    /// Convert any supported weights file to this project's safetensors (what the web page loads).
    Export(commands::export::Args),
    /// Train a ViT with DINO on a folder of images (or, without --data, a demo on built-in photos).
    Train(Box<commands::train::Args>),
    /// PAWS: semi-supervised training from a few labels (a labelled subset + unlabelled images).
    Paws(Box<commands::paws::Args>),
    /// SuNCEt fine-tuning of a PAWS encoder on its labelled images (after `dino paws`).
    PawsFinetune(Box<commands::paws_finetune::Args>),
    /// Soft nearest-neighbour accuracy of a PAWS encoder (labelled images as the memory).
    Snn(Box<commands::snn::Args>),
    /// Weighted k-NN classification of an ImageFolder val split from its train split.
    Knn(Box<commands::knn::Args>),
    /// Linear probe on frozen features (last blocks' CLS tokens), top-1 / top-5 on the val split.
    Linear(Box<commands::linear::Args>),
    /// Near-duplicate (copy) detection over a folder: pairs, groups, CSV/JSON/HTML reports.
    Dedup(Box<commands::dedup::Args>),
    /// Image retrieval: index a folder once (kept on disk, updated incrementally), query it.
    Retrieve(Box<commands::retrieve::Args>),
    /// Per-frame attention of a video or a folder of frames: frames, GIF and MP4.
    Video(Box<commands::video::Args>),
    /// Video object segmentation: propagate the first frame's mask through the frames.
    Propagate(Box<commands::propagate::Args>),
    /// Cluster a collection by its features; a t-SNE map of thumbnails; NMI/purity vs subfolders.
    Cluster(Box<commands::cluster::Args>),
    /// Patch features as colours: PCA of patch tokens, background removed (DINOv2-style).
    Pca(Box<commands::pca::Args>),
}

fn main() {
    // `dino inspect | head`: a closed pipe ends the process quietly, as for other Unix tools,
    // instead of a panic in println!
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    allocator::keep_freed_memory();
    let cmd = Cli::command()
        .mut_subcommand("train", commands::train::with_defaults_in_help)
        .mut_subcommand("paws", commands::paws::with_defaults_in_help)
        .mut_subcommand(
            "paws-finetune",
            commands::paws_finetune::with_defaults_in_help,
        );
    let cli = Cli::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit());
    if let Some(n) = cli.threads {
        dino_native::set_threads(n);
    }
    if let Err(e) = dino_core::cpu::parallel::spin_from_environment() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    // before the first GPU tensor: CubeCL's caught panics stay quiet, an exhausted GPU memory
    // is one error saying what to change (native/src/device_panics.rs)
    dino_native::device_panics::install(
        "Lower --batch-size (or the model's size); when training, also half precision (--precision bf16 or f16), \
         --gradient-checkpointing true or more devices; --device cpu runs in host memory.",
    );
    if let Err(e) = dino_native::gpu_kernels::configure(&cli.kernels) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    let result = match cli.command {
        Command::Embed(a) => commands::embed::run(a),
        Command::Attention(a) => commands::attention::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Export(a) => commands::export::run(a),
        Command::Train(a) => commands::train::run(*a),
        Command::Paws(a) => commands::paws::run(*a),
        Command::PawsFinetune(a) => commands::paws_finetune::run(*a),
        Command::Snn(a) => commands::snn::run(*a),
        Command::Knn(a) => commands::knn::run(*a),
        Command::Linear(a) => commands::linear::run(*a),
        Command::Dedup(a) => commands::dedup::run(*a),
        Command::Retrieve(a) => commands::retrieve::run(*a),
        Command::Video(a) => commands::video::run(*a),
        Command::Propagate(a) => commands::propagate::run(*a),
        Command::Cluster(a) => commands::cluster::run(*a),
        Command::Pca(a) => commands::pca::run(*a),
    };
    dino_native::kernel_progress::finish();
    if let Err(e) = result {
        eprintln!("error: {e:#}{}", hint(&e));
        std::process::exit(1);
    }
}

/// The flag that fixes a core error, where there is one (the core names no flags).
fn hint(e: &anyhow::Error) -> &'static str {
    use dino_core::Error;
    match e.chain().find_map(|c| c.downcast_ref::<Error>()) {
        Some(Error::TooManyTokens { .. }) => " (e.g. --resize 480x480)",
        Some(Error::UnknownHeads { .. }) => " (--heads N)",
        _ => "",
    }
}
