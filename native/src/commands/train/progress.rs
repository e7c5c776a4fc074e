//! What a person sees of a run: the progress bar with the loss, the collapse diagnostics and
//! the schedules; warnings about unreadable images; after each epoch the plots and the
//! teacher's attention on a few images. A [`TrainObserver`] of the core loop.

use std::path::PathBuf;

use dino_core::data::ImageSource;
use dino_core::train::Trainer;
use dino_core::train::run::{Flow, Record, StepEvent, TrainObserver};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress<'a> {
    pub bar: ProgressBar,
    pub out: PathBuf,
    pub epochs: usize,
    pub out_dim: usize,
    /// Images for the attention snapshots, and every how many epochs (0: never) / how many.
    pub source: &'a dyn ImageSource,
    pub attention_every: usize,
    pub attention_images: usize,
}

impl<'a> Progress<'a> {
    pub fn new(trainer: &Trainer, out: PathBuf, source: &'a dyn ImageSource) -> Self {
        let bar = ProgressBar::new(trainer.total_iterations() as u64).with_style(
            ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg} ETA {eta}")
                .expect("template")
                .progress_chars("=> "),
        );
        bar.set_position(trainer.iteration as u64);
        Self {
            bar,
            out,
            epochs: trainer.cfg.epochs,
            out_dim: trainer.cfg.out_dim,
            source,
            attention_every: 1,
            attention_images: 4,
        }
    }

    fn warn(&self, message: String) {
        self.bar.suspend(|| eprintln!("warning: {message}"));
    }
}

impl TrainObserver for Progress<'_> {
    fn on_step(&mut self, e: &StepEvent) -> Flow {
        for s in e.skipped {
            self.warn(format!(
                "skipping unreadable image {}: {}",
                s.name, s.reason
            ));
        }
        let s = e.stats;
        self.bar
            .set_prefix(format!("epoch {}/{}", s.epoch + 1, self.epochs));
        self.bar.set_message(format!(
            "loss {:.4} H(t) {:.2}/{:.2} lr {:.2e} wd {:.3} m {:.4} τt {:.3} {:.1} img/s (crops {:.0} img/s)",
            s.loss,
            s.teacher_entropy,
            s.batch_entropy,
            s.lr,
            s.wd,
            s.momentum,
            s.teacher_temp,
            e.record.img_per_s,
            e.crops_per_s
        ));
        self.bar.inc(1);
        Flow::Continue
    }

    fn on_epoch(&mut self, epoch: usize, trainer: &Trainer, records: &[Record]) {
        if let Err(e) = super::plots::plot(&self.out, records, self.out_dim) {
            self.warn(format!("plots failed: {e:#}"));
        }
        if self.attention_every > 0 && (epoch + 1).is_multiple_of(self.attention_every) {
            let path = self
                .out
                .join("attention")
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
