//! `dino linear`: a linear probe on frozen features (`eval_linear.py`): the CLS tokens of the
//! last n blocks (and optionally the mean patch token), a linear layer trained by SGD.

use std::path::PathBuf;

use anyhow::Context;
use dino_core::eval::{LabelledFeatures, LinearConfig, train_linear};

use super::knn::SplitArgs;
use crate::engine::Engine;
use crate::model_args::WeightsArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    weights: WeightsArgs,
    /// The splits and the feature transform (features are computed once: see the README).
    #[command(flatten)]
    splits: SplitArgs,
    /// CLS tokens of this many last blocks (official: 4, and 1 for ViT-B).
    #[arg(long, default_value_t = 4)]
    n_last_blocks: usize,
    /// Append the mean patch token of the last block (official: with ViT-B).
    #[arg(long)]
    avgpool_patchtokens: bool,
    /// Training epochs.
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    /// Learning rate for a batch of 256 (scaled by batch / 256).
    #[arg(long, default_value_t = 0.001)]
    lr: f64,
    /// Batch size.
    #[arg(long, default_value_t = 1024)]
    batch_size: usize,
    /// Also write the accuracies as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (train, val) = args.splits.scan()?;
    let (train_labels, val_labels) = (
        train.labels.as_ref().expect("checked"),
        val.labels.as_ref().expect("checked"),
    );
    let engine = args.weights.load_engine()?;
    // a ResNet's probe features are its pooled features (eval_linear.py: `fc` = identity)
    let (n, dim) = match &engine {
        Engine::ResNet(..) => (1, engine.feature_dim()),
        _ => {
            let n = args
                .n_last_blocks
                .clamp(1, engine.vit_config("--n-last-blocks")?.depth);
            (
                n,
                engine.feature_dim() * (n + args.avgpool_patchtokens as usize),
            )
        }
    };
    let extract = |files: &[PathBuf], label: &str| {
        crate::features::features_with(
            &engine,
            files,
            &args.splits.resize,
            64,
            label,
            dim,
            |batch| engine.probe_features(batch, n, args.avgpool_patchtokens),
        )
    };
    let tr = extract(&train.files, "train")?;
    let va = extract(&val.files, "val")?;
    let cfg = LinearConfig {
        epochs: args.epochs,
        lr: args.lr,
        batch_size: args.batch_size,
        ..Default::default()
    };
    let bar = crate::features::bar(cfg.epochs, "probe");
    let split = |features, labels| LabelledFeatures {
        features,
        labels,
        dim,
    };
    let probe = train_linear(
        split(&tr, train_labels),
        train.classes.len(),
        &cfg,
        |_, loss| {
            bar.set_message(format!("loss {loss:.4}"));
            bar.inc(1);
        },
    )?;
    bar.finish_and_clear();
    let acc = probe.evaluate(split(&va, val_labels));
    println!(
        "linear probe ({n} last blocks{}, {dim}-dim, {} epochs): top-1 {:.2} %, top-5 {:.2} %",
        if args.avgpool_patchtokens {
            " + avgpool"
        } else {
            ""
        },
        cfg.epochs,
        acc.top1,
        acc.top5
    );
    if let Some(path) = &args.json {
        let v = serde_json::json!({"weights": args.weights.weights, "n_last_blocks": n,
            "avgpool": args.avgpool_patchtokens, "epochs": cfg.epochs, "top1": acc.top1, "top5": acc.top5});
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
