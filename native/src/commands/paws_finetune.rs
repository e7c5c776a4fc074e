//! `dino paws-finetune`: the SuNCEt fine-tuning of a PAWS encoder on its labelled images
//! (suncet's `snn_fine_tune.py`, `configs/paws/cifar10_snn.yaml` defaults), on the shared
//! training loop (checkpoints, exact resume, metrics, plots, progress bar). It writes
//! `encoder.safetensors` in the PAWS encoder format, so `dino snn` evaluates it as before.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use dino_core::paws::{FineTuneBatches, FineTuneConfig, FineTuneTrainer, read_encoder_file};
use dino_core::train::run::{Flow, Record, RunDir, StepEvent, TrainObserver, train};
use serde::Serialize;

use super::train::progress::Progress;

#[derive(clap::Args, Debug)]
#[command(args_override_self = true)]
pub struct Args {
    /// The PAWS encoder to fine-tune (`encoder.safetensors` or `checkpoint.safetensors` of
    /// `dino paws`), or an official PAWS checkpoint (`paws_imgnt_*.pth.tar`: its ResNet and
    /// heads, with the ImageNet recipe's data settings).
    #[arg(long, short = 'w', value_name = "FILE")]
    weights: PathBuf,
    /// The labelled images: a folder of class sub-folders, or a CSV of `path,class` (the
    /// `labels.csv` `dino paws --label-fraction` wrote).
    #[arg(long, value_name = "DIR|CSV")]
    labels: PathBuf,
    /// Where checkpoints, logs, plots and the fine-tuned encoder go.
    #[arg(long, default_value = "paws_finetune_output", value_name = "DIR")]
    output_dir: PathBuf,
    #[command(flatten)]
    run: crate::recipe::RunFlags,
    #[command(flatten)]
    recipe: FineTuneFlags,
}

/// One optional flag per field of [`FineTuneConfig`] (names of suncet's config).
#[derive(clap::Args, Serialize, Debug, Default)]
struct FineTuneFlags {
    /// Classes in each batch (must divide the number of classes).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    classes_per_batch: Option<usize>,
    /// Labelled images of each class in a batch (cycled when a class has fewer).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    supervised_imgs_per_class: Option<usize>,
    /// Augmented views of each image (a centre crop and a random flip each).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    supervised_views: Option<usize>,
    /// Temperature of the SuNCEt similarities.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    /// Label smoothing.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    label_smoothing: Option<f64>,
    /// Epochs (each sees every labelled image about once).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    epochs: Option<usize>,
    /// Epochs of linear warm-up from --start-lr to --lr.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    warmup: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    start_lr: Option<f64>,
    /// Learning rate after the warm-up (then a cosine to --final-lr).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    lr: Option<f64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    final_lr: Option<f64>,
    /// Weight decay (not on biases and BatchNorms).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    weight_decay: Option<f64>,
    /// LARS around the SGD (trust 0.001), as the official config.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    use_lars: Option<bool>,
    #[command(flatten)]
    #[serde(flatten)]
    common: crate::recipe::CommonFlags,
}

/// Fields a resumed run may change.
const CHANGEABLE_ON_RESUME: [&str; 2] = ["saveckp_freq", "checkpoint_every"];

impl TrainObserver<FineTuneTrainer> for Progress<'_> {
    fn on_step(&mut self, e: &StepEvent) -> Flow {
        self.step(e)
    }

    fn on_epoch(&mut self, _: usize, _: &FineTuneTrainer, records: &[Record]) {
        self.plots(records);
    }
}

/// `dino paws-finetune --help` with every recipe flag's default.
pub fn with_defaults_in_help(cmd: clap::Command) -> clap::Command {
    crate::recipe::defaults_in_help(cmd, FineTuneConfig::default().to_table(), "official")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let overrides = args
        .run
        .overrides(crate::recipe::flags_table(&args.recipe)?)?;
    let cfg = FineTuneConfig::default().merged(&overrides)?;
    cfg.validate()?;
    if args.run.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    let dir = RunDir(args.output_dir.clone());
    std::fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
    let labelled = dino_core::paws::LabelledFiles::from_path(&args.labels)?;
    eprintln!(
        "labelled: {} images of {} classes",
        labelled.len(),
        labelled.classes.len()
    );
    let labelled = Arc::new(labelled.into_set());
    let device = args.run.device.devices(1)?.remove(0);
    let cli_temp_files = crate::recipe::remove_temp_files(&dir);
    let resumed = args
        .run
        .resume(&dir, |f| FineTuneTrainer::load(f, &device))?;
    let trainer = match resumed {
        Some((mut t, f)) => {
            let apply = crate::recipe::resume_overrides(
                t.cfg.differences(&overrides)?,
                &overrides,
                &CHANGEABLE_ON_RESUME,
            )?;
            t.cfg = t.cfg.merged(&apply)?;
            eprintln!(
                "resuming {} at epoch {}, iteration {}",
                f.display(),
                t.iteration / t.niter_per_epoch,
                t.iteration
            );
            Some(t)
        }
        None => None,
    };
    let what = || format!("{}", args.weights.display());
    let (paws, shape, sd) = match &trainer {
        Some(t) => (t.paws.clone(), t.encoder().config.clone(), None),
        None => {
            let bytes = std::fs::read(&args.weights).with_context(what)?;
            let (p, s, sd) = read_encoder_file(bytes).with_context(what)?;
            (p, s, Some(sd))
        }
    };
    let cfg = trainer.as_ref().map_or(cfg, |t| t.cfg.clone());
    let batches = FineTuneBatches::new(labelled.clone(), &cfg, &paws)?;
    let niter = dino_core::train::run::Batches::niter_per_epoch(&batches);
    let mut trainer = match (trainer, sd) {
        (Some(t), _) => {
            crate::recipe::same_iterations(t.niter_per_epoch, niter)?;
            t
        }
        (None, Some(sd)) => {
            FineTuneTrainer::new(cfg.clone(), paws.clone(), &shape, sd, niter, &device)
                .with_context(what)?
        }
        (None, None) => unreachable!("a new run reads the encoder"),
    };
    eprintln!(
        "model: {} + projection to {}; {} views of {} px per iteration (SuNCEt, BatchNorms \
         frozen); {} epochs x {niter} iterations",
        shape.backbone.describe(),
        shape.output_dim,
        cfg.views(),
        paws.crop_size,
        cfg.epochs,
    );
    let mut progress = Progress::new(
        &trainer,
        cfg.epochs,
        dir.0.clone(),
        labelled.source.as_ref(),
    );
    let summary = train(&mut trainer, batches, &dir, &mut progress)?;
    progress.bar.finish();
    crate::recipe::report_temp_files(cli_temp_files, &summary);
    eprintln!(
        "wrote {} (the fine-tuned encoder, for dino snn) and {} (full training state)",
        dir.0.join("encoder.safetensors").display(),
        dir.checkpoint().display()
    );
    Ok(())
}
