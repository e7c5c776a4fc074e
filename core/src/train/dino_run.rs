//! DINO's [`Trainer`] as a run of the shared training loop ([`super::run`]): its step's
//! metrics, checkpoint, settings and export (the teacher backbone).

use super::Trainer;
use super::run::{Metrics, RunDir, TrainRun};
use crate::Result;
use crate::data::CropBatch;

impl TrainRun for Trainer {
    type Batch = CropBatch;

    fn iteration(&self) -> usize {
        self.iteration
    }

    fn niter_per_epoch(&self) -> usize {
        self.niter_per_epoch
    }

    fn total_iterations(&self) -> usize {
        Trainer::total_iterations(self)
    }

    fn step(&mut self, batch: &CropBatch) -> Result<Metrics> {
        let s = Trainer::step(self, batch)?;
        let mut metrics = vec![
            ("loss", s.loss),
            ("teacher_entropy", s.teacher_entropy),
            ("batch_entropy", s.batch_entropy),
            ("lr", s.lr),
            ("wd", s.wd),
            ("momentum", s.momentum),
            ("teacher_temp", s.teacher_temp),
        ];
        if let (Some(scale), Some(overflow)) = (s.loss_scale, s.overflow) {
            // f16: the scale of the step, and 1 for a step skipped for overflowing gradients
            // (its epoch mean in log.txt: the fraction skipped)
            metrics.push(("loss_scale", scale));
            metrics.push(("overflow", if overflow { 1.0 } else { 0.0 }));
        }
        if let Some(c) = s.comm_seconds {
            // wall-clock, like img_per_s: in metrics.jsonl, not in log.txt
            metrics.push(("comm_s", c));
        }
        Ok(metrics)
    }

    fn images_per_step(&self, loaded: usize) -> usize {
        // a rank's share of the batch (a sharded loader), or the whole batch
        match self.world() {
            w if w > 1 && loaded * w == self.cfg.batch_size => self.cfg.batch_size,
            _ => loaded,
        }
    }

    fn checkpoint_bytes(&self) -> Result<Vec<u8>> {
        let bytes = Trainer::checkpoint_bytes(self)?;
        // across processes: every rank must hold the same state at every checkpoint
        self.same_on_every_rank(&bytes)?;
        Ok(bytes)
    }

    fn config_toml(&self) -> String {
        // the processes of the run: a comment, so that the file stays a valid --config
        format!(
            "{}\n# world_size = {} (processes training this run: mpirun -np N; not a recipe field)\n",
            self.cfg.to_toml().trim_end(),
            self.world()
        )
    }

    fn checkpoint_every(&self) -> usize {
        self.cfg.checkpoint_every
    }

    fn saveckp_freq(&self) -> usize {
        self.cfg.saveckp_freq
    }

    /// The teacher backbone as this project's safetensors (what every command loads).
    fn export(&self, dir: &RunDir) -> Result<()> {
        let sd = self.teacher().backbone.to_state_dict()?;
        crate::weights::save_safetensors(&dir.teacher(), &sd, &self.cfg.vit()?, false)
    }

    /// The official names (`train_loss`, `train_lr`, ...); the collapse diagnostics and the
    /// throughput keep theirs.
    fn log_key(key: &str) -> String {
        match key {
            "img_per_s" | "comm_s" | "teacher_entropy" | "batch_entropy" => key.to_string(),
            k => format!("train_{k}"),
        }
    }
}
