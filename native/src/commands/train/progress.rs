//! What a person sees of a run: the progress bar with the step's metrics (for DINO the loss,
//! the collapse diagnostics and the schedules); warnings about unreadable images; after each
//! epoch the plots and, for DINO, the teacher's attention on a few images. A
//! [`TrainObserver`] of the core loop.

use std::path::PathBuf;

use dino_core::data::ImageSource;
use dino_core::train::Trainer;
use dino_core::train::run::{Flow, Record, StepEvent, TrainObserver, TrainRun};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress<'a> {
    pub bar: ProgressBar,
    pub out: PathBuf,
    pub epochs: usize,
    /// Output dimension K of a DINO head (the collapse plot's log K); 0 for other methods.
    pub out_dim: usize,
    /// Images for the attention snapshots, and every how many epochs (0: never) / how many.
    pub source: &'a dyn ImageSource,
    pub attention_every: usize,
    pub attention_images: usize,
}

impl<'a> Progress<'a> {
    pub fn new(
        run: &impl TrainRun,
        epochs: usize,
        out: PathBuf,
        source: &'a dyn ImageSource,
    ) -> Self {
        let bar = crate::terminal::show(
            ProgressBar::new(run.total_iterations() as u64).with_style(
                ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg} ETA {eta}")
                    .expect("template")
                    .progress_chars("=> "),
            ),
        );
        bar.set_position(run.iteration() as u64);
        Self {
            bar,
            out,
            epochs,
            out_dim: 0,
            source,
            attention_every: 0,
            attention_images: 4,
        }
    }

    fn warn(&self, message: String) {
        self.bar.suspend(|| eprintln!("warning: {message}"));
    }
}

/// A metric as the bar shows it: a short label and a format for its size.
fn show(key: &str, v: f64) -> String {
    match key {
        "loss" => format!("loss {v:.4}"),
        "teacher_entropy" => format!("H(t) {v:.2}"),
        "batch_entropy" => format!("/{v:.2}"),
        "lr" => format!("lr {v:.2e}"),
        "wd" => format!("wd {v:.3}"),
        "momentum" => format!("m {v:.4}"),
        "teacher_temp" => format!("τt {v:.3}"),
        "img_per_s" => format!("{v:.1} img/s"),
        "comm_s" => format!("comm {:.0} ms", v * 1e3),
        k => format!("{k} {v:.4}"),
    }
}

impl Progress<'_> {
    /// The bar after a step (any method).
    pub(crate) fn step(&mut self, e: &StepEvent) -> Flow {
        for s in e.skipped {
            self.warn(format!(
                "skipping unreadable image {}: {}",
                s.name, s.reason
            ));
        }
        self.bar
            .set_prefix(format!("epoch {}/{}", e.record.epoch + 1, self.epochs));
        let mut msg = String::new();
        for (k, v) in e.metrics {
            if !msg.is_empty() && *k != "batch_entropy" {
                msg.push(' ');
            }
            msg.push_str(&show(k, *v));
        }
        self.bar
            .set_message(format!("{msg} (crops {:.0} img/s)", e.batches_per_s));
        self.bar.inc(1);
        Flow::Continue
    }

    /// The plots after an epoch (any method).
    pub(crate) fn plots(&self, records: &[Record]) {
        if let Err(e) = super::plots::plot(&self.out, records, self.out_dim) {
            self.warn(format!("plots failed: {e:#}"));
        }
    }
}

impl TrainObserver<Trainer> for Progress<'_> {
    fn on_step(&mut self, e: &StepEvent) -> Flow {
        self.step(e)
    }

    fn on_epoch(&mut self, epoch: usize, trainer: &Trainer, records: &[Record]) {
        self.plots(records);
        if self.attention_every > 0 && (epoch + 1).is_multiple_of(self.attention_every) {
            let path = dino_core::train::run::RunDir(self.out.clone())
                .attention_snapshots()
                .join(format!("epoch{:03}.png", epoch + 1));
            let sheet = super::snapshots::attention_sheet(
                trainer,
                self.source,
                self.attention_images,
                &path,
            );
            if let Err(e) = sheet {
                self.warn(format!("attention snapshot failed: {e:#}"));
            }
        }
    }
}
