//! `dino knn`: weighted k-NN classification on frozen features (`eval_knn.py`): L2-normalised
//! CLS features of an ImageFolder train and val split, votes `exp(sim / T)`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use dino_core::cpu::CpuVit;
use dino_core::data::ImageFolder;
use dino_core::eval::{LabelledFeatures, knn_classify, l2_normalize};
use dino_core::imaging::{Resize, normalize_chw};
use rayon::prelude::*;

use crate::engine::Engine;
use crate::features::prepare_file;
use crate::model_args::WeightsArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    weights: WeightsArgs,
    #[command(flatten)]
    splits: SplitArgs,
    /// Values of k.
    #[arg(long, num_args = 1.., default_values_t = [10, 20, 100, 200])]
    nb_knn: Vec<usize>,
    /// Temperature of the vote weights.
    #[arg(long, default_value_t = 0.07)]
    temperature: f32,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Keep features here and reuse them when weights, images and transform are unchanged.
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Baseline: the weights file's architecture with fresh random weights (official init).
    #[arg(long)]
    random_init: bool,
    /// Baseline: raw normalised pixels as features (the weights give only the patch crop).
    #[arg(long)]
    raw_pixels: bool,
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
    let mode = if args.raw_pixels {
        "raw pixels"
    } else if args.random_init {
        "random init"
    } else {
        "trained weights"
    };
    let (train_f, val_f, d) = features(&args, &train, &val, mode)?;
    let ks: Vec<usize> = args.nb_knn.iter().map(|&k| k.min(train.len())).collect();
    let t = std::time::Instant::now();
    let split = |features, labels| LabelledFeatures {
        features,
        labels,
        dim: d,
    };
    let res = knn_classify(
        split(&train_f, train_labels),
        split(&val_f, val_labels),
        &ks,
        args.temperature,
        train.classes.len(),
    )?;
    eprintln!(
        "k-NN on {} train / {} val images in {:.1} s",
        train.len(),
        val.len(),
        t.elapsed().as_secs_f64()
    );
    println!("k-NN ({mode}, {d}-dim features, T = {}):", args.temperature);
    println!("| k | top-1 % | top-5 % |\n|---|---|---|");
    for r in &res {
        println!("| {} | {:.2} | {:.2} |", r.k, r.top1, r.top5);
    }
    if let Some(path) = &args.json {
        let v = serde_json::json!({ "mode": mode, "weights": args.weights.weights, "dim": d,
            "train": train.len(), "val": val.len(), "results": res });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

type Features = (Vec<f32>, Vec<f32>, usize);

fn features(
    args: &Args,
    train: &ImageFolder,
    val: &ImageFolder,
    mode: &str,
) -> anyhow::Result<Features> {
    let signature = serde_json::json!({
        "weights": args.weights.weights, "weights_len": std::fs::metadata(&args.weights.weights).map(|m| m.len()).ok(),
        "weights_modified": std::fs::metadata(&args.weights.weights).and_then(|m| m.modified()).ok()
            .map(|t| format!("{t:?}")),
        "key": args.weights.checkpoint_key.as_str(), "mode": mode, "resize": args.splits.resize.to_string(),
        "train": train.files, "val": val.files,
    })
    .to_string();
    if let Some(dir) = &args.cache
        && let Some(f) = read_cache(dir, &signature)
    {
        eprintln!("features: reusing {}", dir.display());
        return Ok(f);
    }
    let engine = args.weights.load_engine()?;
    let engine = if args.random_init {
        let model = dino_core::VisionTransformer::new(
            engine.vit_config("--random-init")?,
            &burn::tensor::Device::flex(),
        )?;
        Engine::Cpu(CpuVit::from_model(&model)?)
    } else {
        engine
    };
    let (mut tr, mut va, d) = if args.raw_pixels {
        let patch = engine.patch();
        let (a, d) = pixels(&train.files, &args.splits.resize, patch)?;
        (a, pixels(&val.files, &args.splits.resize, patch)?.0, d)
    } else {
        let d = engine.feature_dim();
        let a = crate::features::cls_features(
            &engine,
            &train.files,
            &args.splits.resize,
            args.batch_size,
            "train",
        )?;
        let b = crate::features::cls_features(
            &engine,
            &val.files,
            &args.splits.resize,
            args.batch_size,
            "val",
        )?;
        (a, b, d)
    };
    l2_normalize(&mut tr, d);
    l2_normalize(&mut va, d);
    if let Some(dir) = &args.cache {
        write_cache(dir, &signature, &tr, &va, d)?;
    }
    Ok((tr, va, d))
}

pub fn pixels(
    files: &[PathBuf],
    resize: &Resize,
    patch: usize,
) -> anyhow::Result<(Vec<f32>, usize)> {
    let rows: Vec<Vec<f32>> = files
        .par_iter()
        .map(|p| Ok(normalize_chw(&prepare_file(p, resize, patch)?)))
        .collect::<anyhow::Result<_>>()?;
    let d = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|r| r.len() != d) {
        bail!("raw pixels need one image size: use --resize HxW");
    }
    Ok((rows.concat(), d))
}

fn read_cache(dir: &Path, signature: &str) -> Option<Features> {
    if std::fs::read_to_string(dir.join("signature.json")).ok()? != signature {
        return None;
    }
    let read = |name: &str| -> Option<(Vec<u64>, Vec<f32>)> {
        let bytes = std::fs::read(dir.join(name)).ok()?;
        let npy = npyz::NpyFile::new(&bytes[..]).ok()?;
        let shape = npy.shape().to_vec();
        Some((shape, npy.into_vec::<f32>().ok()?))
    };
    let (s, tr) = read("train_features.npy")?;
    let (_, va) = read("val_features.npy")?;
    Some((tr, va, *s.get(1)? as usize))
}

fn write_cache(
    dir: &Path,
    signature: &str,
    tr: &[f32],
    va: &[f32],
    d: usize,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    crate::npy::write(&dir.join("train_features.npy"), &[tr.len() / d, d], tr)?;
    crate::npy::write(&dir.join("val_features.npy"), &[va.len() / d, d], va)?;
    dino_core::atomic_write(&dir.join("signature.json"), signature.as_bytes())?;
    Ok(())
}

/// The train / val ImageFolder splits and the transform of the evaluation commands.
#[derive(clap::Args, Debug)]
pub struct SplitArgs {
    /// Training split: one subfolder per class.
    #[arg(long, value_name = "DIR")]
    pub train: PathBuf,
    /// Validation split: the same class subfolders.
    #[arg(long, value_name = "DIR")]
    pub val: PathBuf,
    /// Evaluation transform (`eval` = resize 256, centre crop 224, as eval_knn.py; small
    /// images: e.g. `none` or `eval:32/28`).
    #[arg(long, default_value = "eval")]
    pub resize: Resize,
}

impl SplitArgs {
    /// Both splits, checked to be labelled ImageFolders with the same classes.
    pub fn scan(&self) -> anyhow::Result<(ImageFolder, ImageFolder)> {
        let train = ImageFolder::scan(&self.train)?;
        let val = ImageFolder::scan(&self.val)?;
        if train.labels.is_none() || val.labels.is_none() {
            bail!(
                "evaluation needs the ImageFolder layout: one subfolder per class in --train and --val"
            );
        }
        if train.classes != val.classes {
            bail!("--train and --val have different class folders");
        }
        Ok((train, val))
    }
}
