//! The training loop of `main_dino.py` (its `train_dino` around `train_one_epoch`), shared by
//! every method (DINO's [`Trainer`], PAWS): batches made ahead of the step on a loader thread,
//! one step per batch, the rolling checkpoint after every epoch (and every `checkpoint_every`
//! iterations), numbered copies every `saveckp_freq` epochs, a metrics line per iteration
//! (`metrics.jsonl`), the official per-epoch `log.txt`, and the trained model exported at the
//! end. Everything it writes is atomic, and a resumed run continues its logs from the
//! checkpoint's iteration.
//!
//! A method plugs in through [`TrainRun`] (one step, its checkpoint, its export) and
//! [`Batches`] (where its batches come from); callers watch the run through a
//! [`TrainObserver`] (as Burn's `Learner` takes callbacks): the CLI draws its progress bar,
//! plots and snapshots there; tests drive the same loop.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::Skipped;
use crate::{Error, Result};

/// One iteration's numbers (`loss` first), in the order a progress bar shows them.
pub type Metrics = Vec<(&'static str, f64)>;

/// A training run in memory that the loop can drive.
pub trait TrainRun {
    type Batch: Send + 'static;
    /// Next global iteration (epoch * iterations per epoch + iteration in the epoch).
    fn iteration(&self) -> usize;
    fn niter_per_epoch(&self) -> usize;
    fn total_iterations(&self) -> usize;
    /// One optimisation step on `batch`; its metrics (not the throughput, which the loop adds).
    fn step(&mut self, batch: &Self::Batch) -> Result<Metrics>;
    /// The whole run's state as a checkpoint file's bytes (what resuming reads).
    fn checkpoint_bytes(&self) -> Result<Vec<u8>>;
    /// The run's settings as TOML (`config.toml`).
    fn config_toml(&self) -> String;
    /// Checkpoint every this many iterations too (0: per epoch only).
    fn checkpoint_every(&self) -> usize;
    /// Keep a numbered copy every this many epochs (0: never).
    fn saveckp_freq(&self) -> usize;
    /// Writes the model every other command loads (DINO: the teacher backbone).
    fn export(&self, dir: &RunDir) -> Result<()>;
    /// Images one step trains on over all processes, given the `loaded` images of this
    /// process's batch (the throughput counts the whole run, not a rank's share).
    fn images_per_step(&self, loaded: usize) -> usize {
        loaded
    }
    /// The name of a metric in the official `log.txt` (`loss` -> `train_loss`).
    fn log_key(key: &str) -> String {
        format!("train_{key}")
    }

    fn finished(&self) -> bool {
        self.iteration() >= self.total_iterations()
    }
    fn epoch(&self) -> usize {
        self.iteration() / self.niter_per_epoch()
    }
}

/// Where a method's batches come from; owned by the loader thread.
pub trait Batches: Send + 'static {
    type Batch: Send + 'static;
    fn niter_per_epoch(&self) -> usize;
    /// Batch `it` of `epoch` (deterministic given the seed), with the images found unreadable
    /// while making it (replaced by others).
    fn batch(&mut self, epoch: usize, it: usize) -> Result<(Self::Batch, Vec<Skipped>)>;
    /// Images in a batch (for the throughput).
    fn images(batch: &Self::Batch) -> usize;
}

/// One iteration as `metrics.jsonl` holds it: its position and its metrics by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Record {
    pub epoch: usize,
    pub iteration: usize,
    #[serde(flatten)]
    pub values: BTreeMap<String, f64>,
}

impl Record {
    /// A metric's value (NaN when the record does not have it).
    pub fn get(&self, key: &str) -> f64 {
        self.values.get(key).copied().unwrap_or(f64::NAN)
    }
}

/// What the loop tells its observer after each step.
pub struct StepEvent<'a> {
    pub record: &'a Record,
    /// The metrics of the step in the method's order (`record` has them by name).
    pub metrics: &'a Metrics,
    /// Images found unreadable while this batch was made (replaced by others).
    pub skipped: &'a [Skipped],
    /// Throughput of the batch making so far (images per second of its worker pool).
    pub batches_per_s: f64,
}

/// Whether the loop goes on after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Write the checkpoint now and return (a later run resumes from it).
    Stop,
}

/// Receives the loop's progress; every method has a default that only watches.
pub trait TrainObserver<R: ?Sized> {
    /// After each step (its metrics line is written).
    fn on_step(&mut self, _event: &StepEvent) -> Flow {
        Flow::Continue
    }
    /// After epoch `epoch` (0-based) is complete: the checkpoint and `log.txt` are written;
    /// `records` holds every iteration of the run so far.
    fn on_epoch(&mut self, _epoch: usize, _run: &R, _records: &[Record]) {}
}

/// An observer that watches nothing.
pub struct Quiet;
impl<R: ?Sized> TrainObserver<R> for Quiet {}

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
    /// Where the CLI draws the run's plots (loss, schedules, diagnostics).
    pub fn plots(&self) -> PathBuf {
        self.0.join("plots")
    }
    /// Where `dino train --attention-every` writes its attention sheets.
    pub fn attention_snapshots(&self) -> PathBuf {
        self.0.join("attention")
    }
    /// The folders below the run folder that the CLI writes into: a killed run's temporary
    /// files are swept from these as from the run folder itself.
    pub fn subfolders(&self) -> [PathBuf; 2] {
        [self.plots(), self.attention_snapshots()]
    }

    /// The numbered checkpoints present, newest first, with their epoch.
    pub fn numbered_checkpoints(&self) -> Vec<(usize, PathBuf)> {
        let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(&self.0)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let digits = name
                    .strip_prefix("checkpoint")?
                    .strip_suffix(".safetensors")?;
                let epoch = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| digits.parse().ok())??;
                Some((epoch, e.path()))
            })
            .collect();
        found.sort_by_key(|(epoch, _)| std::cmp::Reverse(*epoch));
        found
    }
}

/// What a finished (or already finished) run reports.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    /// Unreadable images skipped over the run.
    pub skipped: usize,
    /// Images per second of the batch making (0 when no step ran).
    pub batches_per_s: f64,
    /// Steps this call ran.
    pub steps: usize,
    /// Half-written temporary files of an interrupted run removed from the folder.
    pub temp_files_removed: usize,
}

/// Runs `run` to its last epoch on `batches`, writing into `dir` (created if needed), then
/// exports the trained model; or, when the observer says [`Flow::Stop`], saves the checkpoint
/// and returns early. `batches` must give the run's iterations per epoch.
pub fn train<R, B>(
    run: &mut R,
    batches: B,
    dir: &RunDir,
    observer: &mut dyn TrainObserver<R>,
) -> Result<RunSummary>
where
    R: TrainRun,
    B: Batches<Batch = R::Batch>,
{
    let niter = run.niter_per_epoch();
    if batches.niter_per_epoch() != niter {
        return Err(Error::Data(format!(
            "the run has {niter} iterations per epoch, the data gives {}",
            batches.niter_per_epoch()
        )));
    }
    std::fs::create_dir_all(&dir.0).map_err(|e| Error::io(&dir.0, e))?;
    // what a killed run left half-written (the finished files are whole: atomic writes)
    let mut summary = RunSummary {
        temp_files_removed: crate::remove_temp_files(&dir.0),
        ..RunSummary::default()
    };
    crate::atomic_write(&dir.config(), run.config_toml().as_bytes())?;
    let mut records = read_records(&dir.metrics(), run.iteration());
    if run.finished() {
        // a run killed after its last checkpoint: the log and the export may be missing
        write_epoch_log::<R>(&dir.log(), &records)?;
        run.export(dir)?;
        return Ok(summary);
    }
    write_records(&dir.metrics(), &records)?;
    let mut metrics_file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.metrics())
        .map_err(|e| Error::io(dir.metrics(), e))?;

    let rx = spawn_loader(batches, run.iteration(), run.total_iterations(), niter);
    let (mut load_time, mut loaded) = (0.0, 0usize);
    while !run.finished() {
        let (epoch, iteration) = (run.epoch(), run.iteration());
        let (batch, skipped, t_load) = rx
            .recv()
            .map_err(|_| Error::Data("the data loader stopped".into()))??;
        let images = B::images(&batch);
        summary.skipped += skipped.len();
        load_time += t_load;
        loaded += images;
        let t = Instant::now();
        let mut metrics = run.step(&batch)?;
        summary.steps += 1;
        let step_images = run.images_per_step(images);
        metrics.push(("img_per_s", step_images as f64 / t.elapsed().as_secs_f64()));
        let record = Record {
            epoch,
            iteration,
            values: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        };
        let line = serde_json::to_string(&record).expect("a record serialises");
        writeln!(metrics_file, "{line}").map_err(|e| Error::io(dir.metrics(), e))?;
        records.push(record);
        summary.batches_per_s = loaded as f64 / load_time.max(1e-9);
        let flow = observer.on_step(&StepEvent {
            record: records.last().expect("pushed"),
            metrics: &metrics,
            skipped: &skipped,
            batches_per_s: summary.batches_per_s,
        });
        let epoch_done = run.iteration().is_multiple_of(niter);
        let every = run.checkpoint_every();
        let stop = flow == Flow::Stop;
        if epoch_done || stop || (every > 0 && run.iteration().is_multiple_of(every)) {
            let bytes = run.checkpoint_bytes()?;
            metrics_file
                .sync_data()
                .map_err(|e| Error::io(dir.metrics(), e))?;
            crate::atomic_write(&dir.checkpoint(), &bytes)?;
            let freq = run.saveckp_freq();
            if epoch_done && freq > 0 && epoch.is_multiple_of(freq) {
                crate::atomic_write(&dir.numbered_checkpoint(epoch), &bytes)?;
            }
        }
        if epoch_done {
            write_epoch_log::<R>(&dir.log(), &records)?;
            observer.on_epoch(epoch, run, &records);
        }
        if stop {
            return Ok(summary);
        }
    }
    run.export(dir)?;
    Ok(summary)
}

type Loaded<T> = Result<(T, Vec<Skipped>, f64)>;

/// Batches `start..total` made ahead on a thread (two in flight), each with the seconds it took.
fn spawn_loader<B: Batches>(
    mut batches: B,
    start: usize,
    total: usize,
    niter: usize,
) -> Receiver<Loaded<B::Batch>> {
    let (tx, rx) = sync_channel::<Loaded<B::Batch>>(2);
    std::thread::spawn(move || {
        for git in start..total {
            let t = Instant::now();
            let r = batches
                .batch(git / niter, git % niter)
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

/// Metrics that measure time, not the run: in `metrics.jsonl`, never in `log.txt`.
const WALL_CLOCK: [&str; 2] = ["img_per_s", "comm_s"];

/// `log.txt` as the official code writes it, one JSON line of averages per epoch of the
/// records (all finished); rewritten from them, so a resumed run's log equals an uninterrupted
/// one's byte for byte. The wall-clock measures ([`WALL_CLOCK`]) stay in `metrics.jsonl`, as
/// the official log has none.
fn write_epoch_log<R: TrainRun>(path: &Path, records: &[Record]) -> Result<()> {
    let mut text = String::new();
    for recs in records.chunk_by(|a, b| a.epoch == b.epoch) {
        let mut line = serde_json::Map::new();
        for key in recs[0]
            .values
            .keys()
            .filter(|k| !WALL_CLOCK.contains(&k.as_str()))
        {
            let mean = recs.iter().map(|r| r.get(key)).sum::<f64>() / recs.len() as f64;
            line.insert(R::log_key(key), serde_json::json!(mean));
        }
        line.insert("epoch".into(), serde_json::json!(recs[0].epoch));
        text.push_str(&serde_json::Value::Object(line).to_string());
        text.push('\n');
    }
    crate::atomic_write(path, text.as_bytes())
}
