//! `dino snn`: the soft nearest-neighbour evaluation of a PAWS encoder (suncet's
//! `snn_eval.py`): the encoder's outputs of the labelled images are the memory, each
//! validation image is classified by `softmax(z @ z_train.T / 0.1) @ labels`; top-1 / top-5.

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::{Tensor, TensorData};
use dino_core::data::ImageFolder;
use dino_core::imaging::{Resize, load_image, prepare};
use dino_core::paws::data::normalize;
use dino_core::paws::{LabelledFiles, PawsConfig, PawsEncoder, load_encoder, snn_evaluate};
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::Backend;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A PAWS encoder (`encoder.safetensors` of `dino paws`), a PAWS training checkpoint, or an
    /// official PAWS checkpoint (`paws_imgnt_*.pth.tar`: evaluated as `snn_eval.py` does, the
    /// prediction head's output, ImageNet's 256 -> 224 centre crop and normalisation).
    #[arg(long, short = 'w', value_name = "FILE")]
    weights: PathBuf,
    /// The labelled images (the memory): a folder of class sub-folders or a `path,class` CSV
    /// (e.g. the labels.csv a `dino paws --label-fraction` run wrote).
    #[arg(long, value_name = "DIR|CSV")]
    train: PathBuf,
    /// The validation images: a folder of class sub-folders with the same class names.
    #[arg(long, value_name = "DIR")]
    val: PathBuf,
    /// Temperature of the soft nearest-neighbour classifier.
    #[arg(long, default_value_t = 0.1)]
    temperature: f64,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Also write the accuracies as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    device: Backend,
}

/// The evaluation view of an image: `CenterCrop(crop)` when its short side is the crop size
/// (CIFAR-10 in the official code), else `Resize(crop * 256 / 224)` first (ImageNet's),
/// normalised as in training.
fn eval_view(path: &std::path::Path, cfg: &PawsConfig) -> anyhow::Result<Vec<f32>> {
    let img = load_image(path)?;
    let crop = cfg.crop_size;
    let short = if img.width().min(img.height()) == crop {
        crop
    } else {
        (crop as f64 * 256.0 / 224.0).round() as u32
    };
    let view = prepare(&img, &Resize::Eval { short, crop }, 1)?;
    Ok(normalize(&view, cfg.normalize_mean, cfg.normalize_std))
}

fn embed(
    files: &[PathBuf],
    encoder: &PawsEncoder,
    cfg: &PawsConfig,
    device: &burn::tensor::Device,
    batch: usize,
    label: &str,
) -> anyhow::Result<Vec<f32>> {
    let bar = crate::terminal::show(
        ProgressBar::new(files.len() as u64).with_style(
            ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} ETA {eta}")
                .expect("template")
                .progress_chars("=> "),
        ),
    );
    bar.set_prefix(label.to_string());
    let c = cfg.crop_size as usize;
    let mut out = Vec::new();
    for chunk in files.chunks(batch.max(1)) {
        let mut data = Vec::with_capacity(chunk.len() * 3 * c * c);
        for f in chunk {
            data.extend(eval_view(f, cfg).with_context(|| format!("{}", f.display()))?);
        }
        let x = Tensor::<4>::from_data(TensorData::new(data, [chunk.len(), 3, c, c]), device);
        let z = encoder.embed(x);
        out.extend(
            z.into_data()
                .try_to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("reading embeddings: {e:?}"))?,
        );
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = args.device.device()?;
    let bytes =
        std::fs::read(&args.weights).with_context(|| format!("{}", args.weights.display()))?;
    let (encoder, cfg) =
        load_encoder(bytes, &device).with_context(|| format!("{}", args.weights.display()))?;
    let train = LabelledFiles::from_path(&args.train)?;
    let val = ImageFolder::scan(&args.val)?;
    let val_labels = val.labels.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: validation images need class sub-folders",
            args.val.display()
        )
    })?;
    // validation classes by name, in the labelled set's numbering
    let map: Vec<usize> = val
        .classes
        .iter()
        .map(|c| {
            train
                .classes
                .iter()
                .position(|t| t == c)
                .ok_or_else(|| anyhow::anyhow!("validation class '{c}' has no labelled images"))
        })
        .collect::<anyhow::Result<_>>()?;
    let val_labels: Vec<usize> = val_labels.iter().map(|&l| map[l]).collect();
    let t0 = std::time::Instant::now();
    let memory = embed(
        &train.files,
        &encoder,
        &cfg,
        &device,
        args.batch_size,
        "labelled",
    )?;
    let queries = embed(&val.files, &encoder, &cfg, &device, args.batch_size, "val")?;
    let dim = cfg.output_dim;
    let r = snn_evaluate(
        &memory,
        &train.labels,
        train.classes.len(),
        &queries,
        &val_labels,
        dim,
        args.temperature,
    )?;
    println!(
        "soft-NN (tau {}): top-1 {:.2}%, top-5 {:.2}% on {} images, memory of {} labelled \
         images ({:.1} s)",
        args.temperature,
        r.top1,
        r.top5,
        val.len(),
        train.len(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "top1": r.top1, "top5": r.top5, "val_images": val.len(),
            "labelled_images": train.len(), "temperature": args.temperature,
            "weights": args.weights,
        });
        dino_core::atomic_write(path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    Ok(())
}
