//! `dino inspect`: what a weights file is.

use dino_core::imaging::Resize;

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
    let w = args.weights.load_weights()?;
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
