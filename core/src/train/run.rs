//! The training loop of `main_dino.py` (its `train_dino` around `train_one_epoch`): crops made
//! ahead of the step on a loader thread, one [`Trainer::step`] per batch, the rolling checkpoint
//! after every epoch (and every `checkpoint_every` iterations), numbered copies every
//! `saveckp_freq` epochs, a metrics line per iteration (`metrics.jsonl`), the official per-epoch
//! `log.txt`, and the teacher backbone exported at the end. Everything it writes is atomic, and
//! a resumed run continues its logs from the checkpoint's iteration.
//!
//! Callers watch the run through a [`TrainObserver`] (as Burn's `Learner` takes callbacks): the
//! CLI draws its progress bar, plots and attention snapshots there; tests drive the same loop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{StepStats, Trainer};
use crate::data::{CropBatch, MultiCropLoader, Skipped};
use crate::{Error, Result};

/// One iteration as `metrics.jsonl` holds it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Record {
    pub epoch: usize,
    pub iteration: usize,
    pub loss: f64,
    pub lr: f64,
    pub wd: f64,
    pub momentum: f64,
    pub teacher_temp: f64,
    pub img_per_s: f64,
    /// Collapse diagnostics (absent in logs of older versions).
    #[serde(default)]
    pub teacher_entropy: f64,
    #[serde(default)]
    pub batch_entropy: f64,
}

impl Record {
    fn new(s: &StepStats, img_per_s: f64) -> Self {
        Self {
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
}

/// What the loop tells its observer after each step.
pub struct StepEvent<'a> {
    pub stats: &'a StepStats,
    pub record: &'a Record,
    /// Images found unreadable while this batch was made (replaced by others).
    pub skipped: &'a [Skipped],
    /// Multi-crop throughput of the loader so far (images per second of its worker pool).
    pub crops_per_s: f64,
}

/// Whether the loop goes on after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Write the checkpoint now and return (a later run resumes from it).
    Stop,
}

/// Receives the loop's progress; every method has a default that only watches.
pub trait TrainObserver {
    /// After each step (its metrics line is written).
    fn on_step(&mut self, _event: &StepEvent) -> Flow {
        Flow::Continue
    }
    /// After epoch `epoch` (0-based) is complete: the checkpoint and `log.txt` are written;
    /// `records` holds every iteration of the run so far.
    fn on_epoch(&mut self, _epoch: usize, _trainer: &Trainer, _records: &[Record]) {}
}

/// An observer that watches nothing.
pub struct Quiet;
impl TrainObserver for Quiet {}

/// The files of a run's output folder.
#[derive(Clone, Debug)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    /// The rolling checkpoint a run resumes from.
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint.safetensors")
    }
    /// The copy kept after epoch `epoch` (`saveckp_freq`).
    pub fn numbered_checkpoint(&self, epoch: usize) -> PathBuf {
        self.0.join(format!("checkpoint{epoch:04}.safetensors"))
    }
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.jsonl")
    }
    pub fn log(&self) -> PathBuf {
        self.0.join("log.txt")
    }
    pub fn config(&self) -> PathBuf {
        self.0.join("config.toml")
    }
    /// The teacher backbone, what every other command loads.
    pub fn teacher(&self) -> PathBuf {
        self.0.join("teacher.safetensors")
    }
}

/// What a finished (or already finished) run reports.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    /// Unreadable images skipped over the run.
    pub skipped: usize,
    /// Multi-crop images per second of the loader's worker pool (0 when no step ran).
    pub crops_per_s: f64,
    /// Steps this call ran.
    pub steps: usize,
}

/// Runs `trainer` to its last epoch on `loader`'s batches, writing into `dir` (created if
/// needed), then exports the teacher backbone; or, when the observer says [`Flow::Stop`],
/// saves the checkpoint and returns early. `loader` must give the trainer's iterations per
/// epoch.
pub fn train(
    trainer: &mut Trainer,
    loader: Arc<MultiCropLoader>,
    dir: &RunDir,
    observer: &mut dyn TrainObserver,
) -> Result<RunSummary> {
    let niter = trainer.niter_per_epoch;
    if loader.niter_per_epoch() != niter {
        return Err(Error::Data(format!(
            "the run has {niter} iterations per epoch, the data gives {}",
            loader.niter_per_epoch()
        )));
    }
    std::fs::create_dir_all(&dir.0).map_err(|e| Error::io(&dir.0, e))?;
    crate::atomic_write(&dir.config(), trainer.cfg.to_toml().as_bytes())?;
    let mut summary = RunSummary::default();
    if trainer.finished() {
        export_teacher(trainer, dir)?;
        return Ok(summary);
    }
    let mut records = read_records(&dir.metrics(), trainer.iteration);
    write_records(&dir.metrics(), &records)?;
    let mut metrics = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.metrics())
        .map_err(|e| Error::io(dir.metrics(), e))?;

    let rx = spawn_loader(loader, trainer.iteration, trainer.total_iterations(), niter);
    let (mut aug_time, mut aug_images) = (0.0, 0usize);
    while !trainer.finished() {
        let (batch, skipped, t_aug) = rx
            .recv()
            .map_err(|_| Error::Data("the data loader stopped".into()))??;
        summary.skipped += skipped.len();
        aug_time += t_aug;
        aug_images += batch.batch;
        let t = Instant::now();
        let stats = trainer.step(&batch)?;
        summary.steps += 1;
        let record = Record::new(&stats, batch.batch as f64 / t.elapsed().as_secs_f64());
        let line = serde_json::to_string(&record).expect("a record serialises");
        writeln!(metrics, "{line}").map_err(|e| Error::io(dir.metrics(), e))?;
        records.push(record);
        summary.crops_per_s = aug_images as f64 / aug_time.max(1e-9);
        let flow = observer.on_step(&StepEvent {
            stats: &stats,
            record: records.last().expect("pushed"),
            skipped: &skipped,
            crops_per_s: summary.crops_per_s,
        });
        let epoch_done = trainer.iteration.is_multiple_of(niter);
        let every = trainer.cfg.checkpoint_every;
        let stop = flow == Flow::Stop;
        if epoch_done || stop || (every > 0 && trainer.iteration.is_multiple_of(every)) {
            let bytes = trainer.checkpoint_bytes()?;
            metrics
                .sync_data()
                .map_err(|e| Error::io(dir.metrics(), e))?;
            crate::atomic_write(&dir.checkpoint(), &bytes)?;
            let epoch = trainer.epoch() - 1;
            let freq = trainer.cfg.saveckp_freq;
            if epoch_done && freq > 0 && epoch.is_multiple_of(freq) {
                crate::atomic_write(&dir.numbered_checkpoint(epoch), &bytes)?;
            }
        }
        if epoch_done {
            let epoch = trainer.epoch() - 1;
            write_epoch_log(&dir.log(), &records)?;
            observer.on_epoch(epoch, trainer, &records);
        }
        if stop {
            return Ok(summary);
        }
    }
    export_teacher(trainer, dir)?;
    Ok(summary)
}

type Loaded = Result<(CropBatch, Vec<Skipped>, f64)>;

/// Batches `start..total` made ahead on a thread (two in flight), each with the seconds it took.
fn spawn_loader(
    loader: Arc<MultiCropLoader>,
    start: usize,
    total: usize,
    niter: usize,
) -> std::sync::mpsc::Receiver<Loaded> {
    let (tx, rx) = sync_channel::<Loaded>(2);
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
                .map(|(b, s)| (b, s, t.elapsed().as_secs_f64()));
            if tx.send(r).is_err() {
                return;
            }
        }
    });
    rx
}

/// The records of a log before `iteration` (a resumed run continues its log; lines written
/// after the checkpoint by an interrupted run are dropped).
pub fn read_records(path: &Path, iteration: usize) -> Vec<Record> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<Record>(l).ok())
        .filter(|r| r.iteration < iteration)
        .collect()
}

fn write_records(path: &Path, records: &[Record]) -> Result<()> {
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r).expect("a record serialises"));
        text.push('\n');
    }
    crate::atomic_write(path, text.as_bytes())
}

/// `log.txt` as the official code writes it, one JSON line of averages per epoch of the
/// records (all finished); rewritten from them, so a resumed run's log equals an uninterrupted
/// one's.
fn write_epoch_log(path: &Path, records: &[Record]) -> Result<()> {
    let mut text = String::new();
    for recs in records.chunk_by(|a, b| a.epoch == b.epoch) {
        let n = recs.len() as f64;
        let avg = |f: fn(&Record) -> f64| recs.iter().map(f).sum::<f64>() / n;
        let line = serde_json::json!({
            "train_loss": avg(|r| r.loss), "train_lr": avg(|r| r.lr), "train_wd": avg(|r| r.wd),
            "train_momentum": avg(|r| r.momentum),
            "train_teacher_temp": avg(|r| r.teacher_temp),
            "img_per_s": avg(|r| r.img_per_s), "epoch": recs[0].epoch,
            "teacher_entropy": avg(|r| r.teacher_entropy),
            "batch_entropy": avg(|r| r.batch_entropy),
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    crate::atomic_write(path, text.as_bytes())
}

/// The teacher backbone as this project's safetensors (what every command loads).
pub fn export_teacher(trainer: &Trainer, dir: &RunDir) -> Result<()> {
    let sd = trainer.teacher().backbone.to_state_dict()?;
    crate::weights::save_safetensors(&dir.teacher(), &sd, &trainer.cfg.vit()?, false)
}
