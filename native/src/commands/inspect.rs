//! `dino inspect`: what a weights file is.

use dino_core::imaging::Resize;
use dino_core::model::resnet::ResNetConfig;
use dino_core::weights::{Architecture, LoadedNetwork};

use crate::model_args::WeightsArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    weights: WeightsArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let net = args.weights.load_network()?;
    if let Architecture::ResNet(c) = &net.architecture {
        return resnet(&args, &net, c);
    }
    let w = net.into_vit("inspect")?;
    let c = &w.config;
    let params: usize = w.state.iter().map(|(_, t)| t.data.len()).sum();
    if args.json {
        let v = serde_json::json!({
            "file": args.weights.weights,
            "format": w.format.to_string(),
            "architecture": c.name(),
            "config": c,
            "tensors": w.state.len(),
            "parameters": params,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("file:          {}", args.weights.weights.display());
    println!("format:        {}", w.format);
    println!("architecture:  {}", c.name());
    println!("embed dim:     {}", c.dim);
    println!("depth:         {}", c.depth);
    println!("heads:         {} (head dim {})", c.heads, c.head_dim());
    println!("patch size:    {}", c.patch);
    println!("mlp hidden:    {}", c.mlp_hidden);
    println!(
        "positions:     {0}x{0} grid (trained at {1}x{1} px; other sizes are interpolated)",
        c.pos_grid,
        c.pos_grid * c.patch
    );
    println!(
        "parameters:    {params} ({:.2} M) in {} tensors",
        params as f64 / 1e6,
        w.state.len()
    );
    println!("default input: {}", Resize::default());
    Ok(())
}

/// What a ResNet checkpoint holds (backbone only: heads and classifiers are not loaded).
fn resnet(args: &Args, w: &LoadedNetwork, c: &ResNetConfig) -> anyhow::Result<()> {
    let params: usize = w.state.iter().map(|(_, t)| t.data.len()).sum();
    if args.json {
        let v = serde_json::json!({
            "file": args.weights.weights,
            "format": w.format.to_string(),
            "architecture": c.describe(),
            "config": c,
            "features": c.features(),
            "tensors": w.state.len(),
            "parameters": params,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("file:          {}", args.weights.weights.display());
    println!("format:        {}", w.format);
    println!("architecture:  {}", c.describe());
    println!("blocks:        {:?} {:?}", c.layers, c.block);
    println!(
        "stem width:    {} (width per group {})",
        c.stem_width, c.base_width
    );
    println!("features:      {} (pooled last stage)", c.features());
    println!(
        "parameters:    {params} ({:.2} M) in {} tensors (backbone; heads are not loaded)",
        params as f64 / 1e6,
        w.state.len()
    );
    println!("default input: {} (any size works)", Resize::default());
    println!("attention:     none (attention, video, propagate and pca need a ViT)");
    Ok(())
}
