//! `dino export`: any supported checkpoint to this project's safetensors file.

use std::path::PathBuf;

use dino_core::weights::save_safetensors;

use crate::model_args::WeightsArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    weights: WeightsArgs,
    /// Output .safetensors file (official key layout + architecture header).
    #[arg(long, short, value_name = "FILE")]
    out: PathBuf,
    /// Store f16 (half the size; what the web page prefers).
    #[arg(long)]
    half: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let w = args.weights.load_weights()?;
    // Build the model once: proves the tensors form a complete, consistent ViT.
    let device = burn::tensor::Device::flex();
    let model = dino_core::VisionTransformer::from_state_dict(&w.config, w.state, &device)?;
    let sd = model.to_state_dict()?;
    save_safetensors(&args.out, &sd, &w.config, args.half)?;
    let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "wrote {} ({}, {}, {:.1} MB)",
        args.out.display(),
        w.config.name(),
        if args.half { "f16" } else { "f32" },
        size as f64 / 1e6
    );
    Ok(())
}
