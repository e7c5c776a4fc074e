//! The weights flags every model command shares, and loading a model from them.

use std::path::PathBuf;

use anyhow::Context;
use dino_core::VisionTransformer;
use dino_core::cpu::CpuVit;
use dino_core::weights::{CheckpointKey, LoadOptions, LoadedWeights, load_file};

use crate::backend::Backend;
use crate::engine::Engine;

#[derive(clap::Args, Debug)]
pub struct WeightsArgs {
    /// Weights file: official DINO .pth (backbone or training checkpoint), Hugging Face
    /// ViTModel .safetensors, or this project's .safetensors. Detected from the content.
    #[arg(long, short = 'w', value_name = "FILE")]
    pub weights: PathBuf,
    /// Network to take from a training checkpoint.
    #[arg(long, value_name = "KEY", default_value = "teacher", value_parser = ["teacher", "student"])]
    pub checkpoint_key: String,
    /// Number of attention heads (default: from the file's header, else dim / 64 as in
    /// every official model).
    #[arg(long, value_name = "N")]
    pub heads: Option<usize>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub device: Backend,
    /// On the CPU: `fast` (fused kernels, the default) or `burn` (the Burn model on burn-flex,
    /// the same code that runs on GPUs). Both match the PyTorch reference.
    #[arg(long, default_value = "fast", value_parser = ["fast", "burn"])]
    pub engine: String,
}

impl WeightsArgs {
    pub fn load_weights(&self) -> anyhow::Result<LoadedWeights> {
        let opts = LoadOptions {
            checkpoint_key: self.checkpoint_key.parse::<CheckpointKey>()?,
            heads: self.heads,
        };
        Ok(load_file(&self.weights, &opts)?)
    }

    /// Loads the weights into the engine the flags ask for.
    pub fn load_engine(&self) -> anyhow::Result<Engine> {
        let w = self.load_weights()?;
        let what = || format!("{}", self.weights.display());
        if matches!(self.device, Backend::Cpu) && self.engine == "fast" {
            return Ok(Engine::Cpu(
                CpuVit::from_state_dict(&w.config, w.state).with_context(what)?,
            ));
        }
        let device = self.device.device()?;
        let model =
            VisionTransformer::from_state_dict(&w.config, w.state, &device).with_context(what)?;
        Ok(Engine::Burn(Box::new(model), device))
    }
}
