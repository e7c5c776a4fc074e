//! The weights flags every model command shares, and loading a model from them.

use std::path::PathBuf;

use anyhow::Context;
use dino_core::VisionTransformer;
use dino_core::cpu::CpuVit;
use dino_core::model::resnet::ResNet;
use dino_core::weights::{
    Architecture, CheckpointKey, LoadOptions, LoadedNetwork, LoadedWeights, load_file,
    load_network_file,
};

use crate::backend::Backend;
use crate::engine::Engine;

#[derive(clap::Args, Debug)]
pub struct WeightsArgs {
    /// Weights file: official DINO .pth (backbone or training checkpoint; ViT or ResNet-50),
    /// an official PAWS checkpoint or torchvision ResNet, Hugging Face ViTModel
    /// .safetensors, or this project's .safetensors. Detected from the content.
    #[arg(long, short = 'w', value_name = "FILE")]
    pub weights: PathBuf,
    /// Network to take from a training checkpoint.
    #[arg(long, value_name = "KEY", value_enum, default_value_t = CheckpointKey::Teacher)]
    pub checkpoint_key: CheckpointKey,
    /// Number of attention heads (default: from the file's header, else dim / 64 as in
    /// every official model).
    #[arg(long, value_name = "N")]
    pub heads: Option<usize>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub device: Backend,
    /// Which implementation runs on the CPU (both match the PyTorch reference).
    #[arg(long, value_enum, default_value_t = CpuEngine::Fast)]
    pub engine: CpuEngine,
}

/// The CPU implementations of the model.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuEngine {
    /// The fused CPU engine (dino_core::cpu): the fastest.
    Fast,
    /// The Burn model on burn-flex: the same code that runs on GPUs.
    Burn,
}

impl WeightsArgs {
    pub fn load_weights(&self) -> anyhow::Result<LoadedWeights> {
        let opts = LoadOptions {
            checkpoint_key: self.checkpoint_key,
            heads: self.heads,
        };
        Ok(load_file(&self.weights, &opts)?)
    }

    /// The weights of either network.
    pub fn load_network(&self) -> anyhow::Result<LoadedNetwork> {
        let opts = LoadOptions {
            checkpoint_key: self.checkpoint_key,
            heads: self.heads,
        };
        Ok(load_network_file(&self.weights, &opts)?)
    }

    /// Loads the weights into the engine the flags ask for: a ViT on the CPU engine or Burn,
    /// a ResNet on Burn (the device flag chooses the backend).
    pub fn load_engine(&self) -> anyhow::Result<Engine> {
        let what = || format!("{}", self.weights.display());
        let net = self.load_network()?;
        if let Architecture::ResNet(cfg) = &net.architecture {
            let device = self.device.device()?;
            let model = ResNet::from_state_dict(cfg, net.state, &device).with_context(what)?;
            return Ok(Engine::ResNet(Box::new(model), cfg.describe(), device));
        }
        let w = net.into_vit("this")?;
        if matches!(self.device, Backend::Cpu) && self.engine == CpuEngine::Fast {
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
