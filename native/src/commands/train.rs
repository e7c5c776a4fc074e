//! `dino train`: the recipe of `main_dino.py` on a folder of images (or the built-in photos),
//! with a progress bar, a JSON-lines metrics log, plots, attention snapshots, atomic
//! checkpoints and exact resume.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use anyhow::{Context, bail};
use dino_core::data::{CropBatch, ImageFolder, ImageSource, MultiCropLoader, Skipped};
use dino_core::train::{OptimizerKind, StepStats, TrainConfig, Trainer};
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::Backend;

/// Every flag overrides one field of the training config (defaults: `main_dino.py`'s, or the
/// small demo run when no `--data` is given; `--print-config` shows the result). A flag given
/// twice takes its last value, so scripts can append overrides to a recipe.
#[derive(clap::Args, Debug)]
#[command(args_override_self = true)]
pub struct Args {
    /// Folder of images, searched recursively (class subfolders are ignored). Without it,
    /// a short demo run on the built-in photos.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Where checkpoints, logs, plots and attention maps go.
    #[arg(long, default_value = "dino_output", value_name = "DIR")]
    output_dir: PathBuf,
    /// A TOML file with any of the config fields (flags override it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Resume from this checkpoint (default: `OUTPUT_DIR/checkpoint.safetensors` if present).
    #[arg(long, value_name = "FILE")]
    resume: Option<PathBuf>,
    /// Start from scratch even if the output folder holds a checkpoint (it is overwritten).
    #[arg(long)]
    no_resume: bool,
    /// Print the effective config as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    device: Backend,
    /// Data parallel over this many devices of `--device` (GPUs 0..N-1): each takes
    /// batch_size / N images of every iteration, on its own thread. On the CPU: the batch runs
    /// as N parts at the same time, which keeps every core busy. [default: 1 on GPUs; 4 on the
    /// CPU, or 2 or 1 when the batch does not split that way, 1 with a BatchNorm head]
    #[arg(long, value_name = "N")]
    devices: Option<usize>,
    /// Gradient accumulation: each device (or CPU part) runs its share of a batch as N
    /// micro-batches one after another and the iteration updates once with their summed
    /// gradients: the batch of --batch-size with the activation memory of
    /// batch_size / (devices x N) images (not in the official code). Give the same value when
    /// resuming.
    #[arg(long, default_value_t = 1, value_name = "N")]
    accum_steps: usize,
    /// Attention maps of a few fixed images every this many epochs (0: never).
    #[arg(long, default_value_t = 1, value_name = "EPOCHS")]
    attention_every: usize,
    /// How many images the attention snapshots show.
    #[arg(long, default_value_t = 4, value_name = "N")]
    attention_images: usize,

    /// Architecture: vit_tiny, vit_small, vit_base. [official: vit_small]
    #[arg(long)]
    arch: Option<String>,
    /// Patch size. [16]
    #[arg(long)]
    patch_size: Option<usize>,
    /// Custom embedding dimension (overrides the preset; MLP 4x). [preset]
    #[arg(long)]
    embed_dim: Option<usize>,
    /// Custom number of blocks. [preset]
    #[arg(long)]
    depth: Option<usize>,
    /// Custom number of heads. [preset, or embed_dim / 64]
    #[arg(long)]
    num_heads: Option<usize>,
    /// Head output dimension K. [65536]
    #[arg(long)]
    out_dim: Option<usize>,
    /// Weight-normalise the head's last layer with a fixed gain. [true]
    #[arg(long)]
    norm_last_layer: Option<bool>,
    /// BatchNorm after the hidden layers of the head (batch statistics in both networks). [false]
    #[arg(long)]
    use_bn_in_head: Option<bool>,
    /// Base teacher EMA momentum, raised to 1 by a cosine. [0.996]
    #[arg(long)]
    momentum_teacher: Option<f64>,
    /// Initial teacher temperature. [0.04]
    #[arg(long)]
    warmup_teacher_temp: Option<f64>,
    /// Teacher temperature after warm-up. [0.04]
    #[arg(long)]
    teacher_temp: Option<f64>,
    /// Epochs of teacher-temperature warm-up. [0]
    #[arg(long)]
    warmup_teacher_temp_epochs: Option<usize>,
    /// Initial weight decay. [0.04]
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Final weight decay (cosine). [0.4]
    #[arg(long)]
    weight_decay_end: Option<f64>,
    /// Per-tensor gradient norm limit (0: off). [3.0]
    #[arg(long)]
    clip_grad: Option<f64>,
    /// Images per iteration, over all devices (official: batch_size_per_gpu x GPUs). [64]
    #[arg(long)]
    batch_size: Option<usize>,
    /// Training epochs. [100]
    #[arg(long)]
    epochs: Option<usize>,
    /// Epochs with the head's last layer frozen. [1]
    #[arg(long)]
    freeze_last_layer: Option<usize>,
    /// Peak learning rate for a batch of 256 (scaled by batch / 256). [0.0005]
    #[arg(long)]
    lr: Option<f64>,
    /// Epochs of linear learning-rate warm-up. [10]
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// Final learning rate (cosine). [1e-6]
    #[arg(long)]
    min_lr: Option<f64>,
    /// Optimiser: adamw, sgd, lars. [adamw]
    #[arg(long)]
    optimizer: Option<OptimizerKind>,
    /// Stochastic depth rate of the student. [0.1]
    #[arg(long)]
    drop_path_rate: Option<f64>,
    /// Area range of the global crops. [0.4 1.0]
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"])]
    global_crops_scale: Option<Vec<f64>>,
    /// Number of local crops. [8]
    #[arg(long)]
    local_crops_number: Option<usize>,
    /// Area range of the local crops. [0.05 0.4]
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"])]
    local_crops_scale: Option<Vec<f64>>,
    /// Side of the global crops in pixels. [224]
    #[arg(long)]
    global_crop_size: Option<u32>,
    /// Side of the local crops in pixels. [96]
    #[arg(long)]
    local_crop_size: Option<u32>,
    /// Range of the Gaussian blur radius in pixels; scale it down for small images. [0.1 2.0]
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"])]
    blur_radius: Option<Vec<f64>>,
    /// Hidden width of the head's MLP. [2048]
    #[arg(long)]
    head_hidden_dim: Option<usize>,
    /// Bottleneck of the head. [256]
    #[arg(long)]
    head_bottleneck_dim: Option<usize>,
    /// Linear layers in the head's MLP. [3]
    #[arg(long)]
    head_layers: Option<usize>,
    /// Seed of initialisation, data order, augmentation and drop path. [0]
    #[arg(long)]
    seed: Option<u64>,
    /// Keep `checkpointNNNN.safetensors` every this many epochs (0: never). [20]
    #[arg(long)]
    saveckp_freq: Option<usize>,
    /// Also write the checkpoint every this many iterations (0: per epoch only). [0]
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Passes over the images per epoch. [1]
    #[arg(long)]
    dataset_repeats: Option<usize>,
    /// Recompute activations during the backward pass: less memory, more time. [false]
    #[arg(long)]
    gradient_checkpointing: Option<bool>,
}

impl Args {
    /// Defaults, then the TOML file, then the flags.
    fn config(&self) -> anyhow::Result<TrainConfig> {
        let mut c = match (&self.config, &self.data) {
            (Some(f), _) => {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?;
                TrainConfig::from_toml(&text)?
            }
            (None, None) => TrainConfig::demo(),
            (None, Some(_)) => TrainConfig::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = &self.$f { c.$f = v.clone(); })* };
        }
        set!(
            arch,
            patch_size,
            out_dim,
            norm_last_layer,
            use_bn_in_head,
            momentum_teacher,
            warmup_teacher_temp,
            teacher_temp,
            warmup_teacher_temp_epochs,
            weight_decay,
            weight_decay_end,
            clip_grad,
            batch_size,
            epochs,
            freeze_last_layer,
            lr,
            warmup_epochs,
            min_lr,
            optimizer,
            drop_path_rate,
            local_crops_number,
            global_crop_size,
            local_crop_size,
            head_hidden_dim,
            head_bottleneck_dim,
            head_layers,
            seed,
            saveckp_freq,
            checkpoint_every,
            dataset_repeats,
            gradient_checkpointing
        );
        for (field, v) in [
            (&mut c.embed_dim, self.embed_dim),
            (&mut c.depth, self.depth),
            (&mut c.num_heads, self.num_heads),
        ] {
            if v.is_some() {
                *field = v;
            }
        }
        if let Some(v) = &self.global_crops_scale {
            c.global_crops_scale = (v[0], v[1]);
        }
        if let Some(v) = &self.local_crops_scale {
            c.local_crops_scale = (v[0], v[1]);
        }
        if let Some(v) = &self.blur_radius {
            c.blur_radius = (v[0], v[1]);
        }
        c.validate()?;
        Ok(c)
    }

    fn overrides_anything(&self) -> bool {
        self.config.is_some()
            || self.epochs.is_some()
            || self.lr.is_some()
            || self.batch_size.is_some()
            || self.arch.is_some()
    }
}

/// What the metrics log holds per iteration.
#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Record {
    epoch: usize,
    iteration: usize,
    loss: f64,
    lr: f64,
    wd: f64,
    momentum: f64,
    teacher_temp: f64,
    img_per_s: f64,
    /// Collapse diagnostics (absent in logs of older versions).
    #[serde(default)]
    teacher_entropy: f64,
    #[serde(default)]
    batch_entropy: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = args.config()?;
    if args.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    let out = args.output_dir.clone();
    std::fs::create_dir_all(out.join("plots"))
        .with_context(|| format!("creating {}", out.display()))?;
    let source: Arc<dyn ImageSource> = match &args.data {
        Some(dir) => {
            let folder = ImageFolder::scan(dir)?;
            eprintln!("data: {} images under {}", folder.len(), dir.display());
            Arc::new(folder)
        }
        None => {
            eprintln!(
                "data: the {} built-in photos (a demo run; give --data DIR to train on your images)",
                crate::builtin::BuiltinPhotos.len()
            );
            Arc::new(crate::builtin::BuiltinPhotos)
        }
    };
    // the first of the data-parallel devices (the only one by default) keeps the run's state
    let mut devices = args.device.devices(args.devices.unwrap_or(1))?;
    let device = devices[0].clone();

    // resume: an explicit file, else the output folder's checkpoint
    let ckpt = out.join("checkpoint.safetensors");
    let resume_from = match (&args.resume, args.no_resume) {
        (Some(f), _) => Some(f.clone()),
        (None, false) if ckpt.exists() => Some(ckpt.clone()),
        _ => None,
    };
    let mut trainer = match &resume_from {
        Some(f) => {
            let t = Trainer::load(f, &device)?;
            if args.overrides_anything() && t.cfg != cfg {
                eprintln!(
                    "note: resuming {} with its own config; config flags are ignored",
                    f.display()
                );
            }
            cfg = t.cfg.clone();
            eprintln!(
                "resuming {} at epoch {}, iteration {}",
                f.display(),
                t.epoch(),
                t.iteration
            );
            t
        }
        None => Trainer::new(cfg.clone(), 1, &device)?,
    };
    let loader = Arc::new(MultiCropLoader::new(
        source.clone(),
        cfg.crops(),
        cfg.batch_size,
        cfg.seed,
        cfg.dataset_repeats,
    )?);
    let niter = loader.niter_per_epoch();
    if resume_from.is_some() && trainer.niter_per_epoch != niter {
        bail!(
            "the checkpoint was trained with {} iterations per epoch, this data gives {niter}: \
             resume with the same data, or start a new run (--no-resume)",
            trainer.niter_per_epoch
        );
    }
    if resume_from.is_none() {
        trainer = Trainer::new(cfg.clone(), niter, &device)?;
    }
    if args.devices.is_none() {
        // on the CPU the batch splits by default (the run's own batch size, when resuming)
        // (of the micro-batch when accumulating)
        let a = args.accum_steps.max(1);
        let per_step = if cfg.batch_size.is_multiple_of(a) {
            cfg.batch_size / a
        } else {
            cfg.batch_size
        };
        let n = args.device.default_parts(per_step, cfg.use_bn_in_head);
        devices = args.device.devices(n)?;
    }
    let n = devices.len();
    if n > 1 {
        trainer.set_devices(devices)?;
        match args.device {
            Backend::Cpu => eprintln!(
                "CPU: each batch runs as {n} parts of {} images at the same time (--devices 1: \
                 one part)",
                cfg.batch_size / n
            ),
            other => eprintln!(
                "data parallel: {} images on each of {n} {other:?} devices",
                cfg.batch_size / n
            ),
        }
    }
    if args.accum_steps != 1 {
        trainer.set_accumulation(args.accum_steps)?;
        eprintln!(
            "gradient accumulation: each batch of {} runs as {} micro-batches of {} images{}, \
             one update per batch",
            cfg.batch_size,
            args.accum_steps,
            cfg.batch_size / (n * args.accum_steps),
            if n > 1 { " per part" } else { "" }
        );
    }
    std::fs::write(out.join("config.toml"), cfg.to_toml()).context("writing config.toml")?;
    let vit = cfg.vit()?;
    eprintln!(
        "model: {} ({:.2} M parameters), head {} -> {}, {} crops of {} px + {} of {} px, batch {}, \
         {} epochs x {niter} iterations",
        vit.name(),
        vit.num_params() as f64 / 1e6,
        cfg.head_hidden_dim,
        cfg.out_dim,
        2,
        cfg.global_crop_size,
        cfg.local_crops_number,
        cfg.local_crop_size,
        cfg.batch_size,
        cfg.epochs,
    );
    if trainer.finished() {
        eprintln!(
            "the run is already finished ({} epochs); exporting the teacher",
            cfg.epochs
        );
        return export_teacher(&trainer, &out);
    }

    let mut records = read_records(&out.join("metrics.jsonl"), trainer.iteration);
    rewrite_records(&out.join("metrics.jsonl"), &records)?;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("metrics.jsonl"))
        .context("opening metrics.jsonl")?;

    // crops are made ahead of the step on worker threads
    let (tx, rx) = sync_channel::<anyhow::Result<(CropBatch, Vec<Skipped>, f64)>>(2);
    let total = trainer.total_iterations();
    let start = trainer.iteration;
    {
        let loader = loader.clone();
        std::thread::spawn(move || {
            let mut order: Option<(usize, Vec<usize>)> = None;
            for git in start..total {
                let (epoch, it) = (git / niter, git % niter);
                if order.as_ref().map(|o| o.0) != Some(epoch) {
                    order = Some((epoch, loader.epoch_order(epoch)));
                }
                let t = Instant::now();
                let r = loader
                    .batch(epoch, it, &order.as_ref().expect("set").1)
                    .map(|(b, s)| (b, s, t.elapsed().as_secs_f64()))
                    .map_err(anyhow::Error::from);
                if tx.send(r).is_err() {
                    return;
                }
            }
        });
    }

    let bar = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg} ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_position(start as u64);
    let mut aug_time = 0.0;
    let mut aug_images = 0usize;
    let mut skipped_total = 0usize;
    while !trainer.finished() {
        let (batch, skipped, t_aug) = rx.recv().context("the data loader stopped")??;
        for s in &skipped {
            bar.suspend(|| {
                eprintln!(
                    "warning: skipping unreadable image {}: {}",
                    s.name, s.reason
                )
            });
        }
        skipped_total += skipped.len();
        aug_time += t_aug;
        aug_images += batch.batch;
        let t = Instant::now();
        let stats = trainer.step(&batch)?;
        let img_s = batch.batch as f64 / t.elapsed().as_secs_f64();
        let rec = record(&stats, img_s);
        writeln!(metrics, "{}", serde_json::to_string(&rec)?)?;
        records.push(rec);
        bar.set_prefix(format!("epoch {}/{}", stats.epoch + 1, cfg.epochs));
        bar.set_message(format!(
            "loss {:.4} H(t) {:.2}/{:.2} lr {:.2e} wd {:.3} m {:.4} τt {:.3} {:.1} img/s (crops {:.0} img/s)",
            stats.loss,
            stats.teacher_entropy,
            stats.batch_entropy,
            stats.lr,
            stats.wd,
            stats.momentum,
            stats.teacher_temp,
            img_s,
            aug_images as f64 / aug_time.max(1e-9)
        ));
        bar.inc(1);
        let epoch_done = trainer.iteration % niter == 0;
        if epoch_done || (cfg.checkpoint_every > 0 && trainer.iteration % cfg.checkpoint_every == 0)
        {
            trainer.save(&ckpt)?;
        }
        if epoch_done {
            let epoch = trainer.epoch() - 1;
            metrics.flush()?;
            if cfg.saveckp_freq > 0 && epoch % cfg.saveckp_freq == 0 {
                std::fs::copy(&ckpt, out.join(format!("checkpoint{epoch:04}.safetensors")))?;
            }
            epoch_log(
                &out,
                epoch,
                &records[records.len() - niter.min(records.len())..],
            )?;
            plot(&out, &records, cfg.out_dim)?;
            let snapshot = out
                .join("attention")
                .join(format!("epoch{:03}.png", epoch + 1));
            if args.attention_every > 0
                && (epoch + 1) % args.attention_every == 0
                && let Err(e) = crate::commands::snapshots::attention_sheet(
                    &trainer,
                    &*source,
                    args.attention_images,
                    &snapshot,
                )
            {
                bar.suspend(|| eprintln!("warning: attention snapshot failed: {e:#}"));
            }
        }
    }
    bar.finish();
    if skipped_total > 0 {
        eprintln!("{skipped_total} unreadable image(s) were skipped");
    }
    eprintln!(
        "data pipeline: {:.1} images/s per worker pool (multi-crop of {} views each)",
        aug_images as f64 / aug_time.max(1e-9),
        cfg.crops().ncrops()
    );
    export_teacher(&trainer, &out)
}

fn record(s: &StepStats, img_per_s: f64) -> Record {
    Record {
        epoch: s.epoch,
        iteration: s.iteration,
        loss: s.loss,
        lr: s.lr,
        wd: s.wd,
        momentum: s.momentum,
        teacher_temp: s.teacher_temp,
        img_per_s,
        teacher_entropy: s.teacher_entropy,
        batch_entropy: s.batch_entropy,
    }
}

/// Records already logged before `iteration` (a resumed run continues its log).
fn read_records(path: &Path, iteration: usize) -> Vec<Record> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<Record>(l).ok())
        .filter(|r| r.iteration < iteration)
        .collect()
}

/// Drops log lines beyond the checkpoint (written after it by an interrupted run).
fn rewrite_records(path: &Path, records: &[Record]) -> anyhow::Result<()> {
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    dino_core::atomic_write(path, text.as_bytes())?;
    Ok(())
}

/// `log.txt` as the official code writes it: one JSON line per epoch with averages.
fn epoch_log(out: &Path, epoch: usize, recs: &[Record]) -> anyhow::Result<()> {
    let n = recs.len().max(1) as f64;
    let avg = |f: fn(&Record) -> f64| recs.iter().map(f).sum::<f64>() / n;
    let line = serde_json::json!({
        "train_loss": avg(|r| r.loss), "train_lr": avg(|r| r.lr), "train_wd": avg(|r| r.wd),
        "train_momentum": avg(|r| r.momentum), "train_teacher_temp": avg(|r| r.teacher_temp),
        "img_per_s": avg(|r| r.img_per_s), "epoch": epoch,
        "teacher_entropy": avg(|r| r.teacher_entropy), "batch_entropy": avg(|r| r.batch_entropy),
    });
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("log.txt"))?;
    writeln!(f, "{line}")?;
    Ok(())
}

fn plot(out: &Path, records: &[Record], out_dim: usize) -> anyhow::Result<()> {
    use crate::plots::{Series, chart_grid, line_chart};
    use plotters::style::full_palette::{BLUE_600, GREEN_700, ORANGE_700, PURPLE_600, RED_600};
    let per_iter = |f: fn(&Record) -> f64| {
        records
            .iter()
            .map(|r| (r.iteration as f64, f(r)))
            .collect::<Vec<_>>()
    };
    let mut epoch_mean: Vec<(f64, f64)> = Vec::new();
    let mut i = 0;
    while i < records.len() {
        let e = records[i].epoch;
        let j = records[i..]
            .iter()
            .position(|r| r.epoch != e)
            .map_or(records.len(), |k| i + k);
        let m = records[i..j].iter().map(|r| r.loss).sum::<f64>() / (j - i) as f64;
        epoch_mean.push((
            (records[i].iteration + records[j - 1].iteration) as f64 / 2.0,
            m,
        ));
        i = j;
    }
    line_chart(
        &out.join("plots").join("loss.png"),
        "DINO loss",
        "iteration",
        &[
            Series {
                label: "per iteration",
                points: per_iter(|r| r.loss),
                color: BLUE_600,
            },
            Series {
                label: "epoch mean",
                points: epoch_mean,
                color: RED_600,
            },
        ],
    )?;
    let n = records.len();
    let log_k = (out_dim as f64).ln();
    line_chart(
        &out.join("plots").join("collapse.png"),
        "teacher target entropy (nats)",
        "iteration",
        &[
            Series {
                label: "per image",
                points: per_iter(|r| r.teacher_entropy),
                color: BLUE_600,
            },
            Series {
                label: "of the batch mean",
                points: per_iter(|r| r.batch_entropy),
                color: GREEN_700,
            },
            Series {
                label: "log K",
                points: vec![(0.0, log_k), (n.saturating_sub(1) as f64, log_k)],
                color: RED_600,
            },
        ],
    )?;
    chart_grid(
        &out.join("plots").join("schedules.png"),
        "iteration",
        &[
            (
                "learning rate",
                Series {
                    label: "lr",
                    points: per_iter(|r| r.lr),
                    color: BLUE_600,
                },
            ),
            (
                "weight decay",
                Series {
                    label: "wd",
                    points: per_iter(|r| r.wd),
                    color: GREEN_700,
                },
            ),
            (
                "teacher momentum",
                Series {
                    label: "m",
                    points: per_iter(|r| r.momentum),
                    color: ORANGE_700,
                },
            ),
            (
                "teacher temperature",
                Series {
                    label: "τ",
                    points: per_iter(|r| r.teacher_temp),
                    color: PURPLE_600,
                },
            ),
        ],
    )
}

/// The teacher backbone as this project's safetensors (what every command loads).
fn export_teacher(trainer: &Trainer, out: &Path) -> anyhow::Result<()> {
    let path = out.join("teacher.safetensors");
    let sd = trainer.teacher().backbone.to_state_dict()?;
    dino_core::weights::save_safetensors(&path, &sd, &trainer.cfg.vit()?, false)?;
    eprintln!(
        "wrote {} (teacher backbone) and {} (full training state)",
        path.display(),
        out.join("checkpoint.safetensors").display()
    );
    Ok(())
}
