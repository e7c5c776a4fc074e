//! One DINO training run's state and its iteration, as `train_one_epoch` of `main_dino.py`:
//! teacher on the global crops, student on all crops, loss, backward, clipping, frozen last
//! layer, optimiser step with the iteration's lr and weight decay, teacher EMA, center update.

use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use super::{
    DinoLoss, DinoNet, DinoOptimizer, StepSettings, TrainConfig, cosine_scheduler, ema_update,
    teacher_temp_schedule,
};
use crate::data::{CropBatch, mix};
use crate::{Error, Result};

/// Values of one iteration, for progress bars and logs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepStats {
    pub epoch: usize,
    pub iteration: usize,
    pub loss: f64,
    pub lr: f64,
    pub wd: f64,
    pub momentum: f64,
    pub teacher_temp: f64,
    /// Mean entropy of the teacher's targets (see [`DinoLoss::teacher_entropies`]).
    pub teacher_entropy: f64,
    /// Entropy of the batch-mean teacher target.
    pub batch_entropy: f64,
}

/// The schedules of a run, one value per iteration (temperature: per epoch).
#[derive(Clone, Debug)]
pub struct Schedules {
    pub lr: Vec<f64>,
    pub wd: Vec<f64>,
    pub momentum: Vec<f64>,
    pub teacher_temp: Vec<f64>,
}

impl Schedules {
    pub fn new(cfg: &TrainConfig, niter_per_epoch: usize) -> Self {
        let (e, n) = (cfg.epochs, niter_per_epoch);
        Self {
            // linear scaling rule: lr * total batch / 256
            lr: cosine_scheduler(
                cfg.lr * cfg.batch_size as f64 / 256.0,
                cfg.min_lr,
                e,
                n,
                cfg.warmup_epochs,
                0.0,
            ),
            wd: cosine_scheduler(cfg.weight_decay, cfg.weight_decay_end, e, n, 0, 0.0),
            momentum: cosine_scheduler(cfg.momentum_teacher, 1.0, e, n, 0, 0.0),
            teacher_temp: teacher_temp_schedule(
                cfg.warmup_teacher_temp,
                cfg.teacher_temp,
                cfg.warmup_teacher_temp_epochs,
                e,
            ),
        }
    }
}

/// A training run in memory.
pub struct Trainer {
    pub cfg: TrainConfig,
    // `Option` only so that a step can move the networks through by-value updates
    student: Option<DinoNet>,
    teacher: Option<DinoNet>,
    pub loss: DinoLoss,
    pub optimizer: DinoOptimizer,
    pub schedules: Schedules,
    pub niter_per_epoch: usize,
    /// Next global iteration (epoch * niter_per_epoch + iteration in epoch).
    pub iteration: usize,
    pub device: Device,
}

impl Trainer {
    /// A fresh run: the student initialised from `cfg.seed`, the teacher a copy of it.
    pub fn new(cfg: TrainConfig, niter_per_epoch: usize, device: &Device) -> Result<Self> {
        cfg.validate()?;
        if niter_per_epoch == 0 {
            return Err(Error::Input("an epoch needs at least one iteration".into()));
        }
        let student = DinoNet::new(
            &cfg.vit()?,
            &cfg.head(),
            &cfg.student_device(device),
            cfg.seed,
        )?;
        Self::from_parts(cfg, student, None, niter_per_epoch, device)
    }

    /// A run from existing networks (resume or fine-tuning): `teacher` defaults to a copy.
    pub fn from_parts(
        cfg: TrainConfig,
        student: DinoNet,
        teacher: Option<DinoNet>,
        niter_per_epoch: usize,
        device: &Device,
    ) -> Result<Self> {
        let teacher = match teacher {
            Some(t) => t,
            None => DinoNet::from_state_dict(
                &cfg.vit()?,
                &cfg.head(),
                student.to_state_dict()?,
                device,
            )?,
        };
        Ok(Self {
            loss: DinoLoss::new(cfg.out_dim, cfg.crops().ncrops(), device),
            optimizer: DinoOptimizer::new(cfg.optimizer),
            schedules: Schedules::new(&cfg, niter_per_epoch),
            niter_per_epoch,
            iteration: 0,
            device: device.clone(),
            cfg,
            student: Some(student),
            teacher: Some(teacher),
        })
    }

    /// The student (on the autodiff device).
    pub fn student(&self) -> &DinoNet {
        self.student
            .as_ref()
            .expect("networks are in place between steps")
    }

    /// The teacher (what DINO evaluates and exports).
    pub fn teacher(&self) -> &DinoNet {
        self.teacher
            .as_ref()
            .expect("networks are in place between steps")
    }

    pub fn epoch(&self) -> usize {
        self.iteration / self.niter_per_epoch
    }

    pub fn total_iterations(&self) -> usize {
        self.cfg.epochs * self.niter_per_epoch
    }

    pub fn finished(&self) -> bool {
        self.iteration >= self.total_iterations()
    }

    /// One iteration on a batch of crops. Fails on a non-finite loss (nothing is updated).
    pub fn step(&mut self, batch: &CropBatch) -> Result<StepStats> {
        let it = self.iteration;
        if self.finished() {
            return Err(Error::Input("the run is already finished".into()));
        }
        let epoch = self.epoch();
        let crops = self.cfg.crops();
        let b = batch.batch;
        let (g, l) = (crops.global_size as usize, crops.local_size as usize);
        let globals: Tensor<4> = Tensor::from_data(
            TensorData::new(batch.globals.clone(), [2 * b, 3, g, g]),
            &self.device,
        );
        // drop-path masks: a stream per iteration, so runs resume exactly
        let ad = self.cfg.student_device(&self.device);
        crate::rng::seed_drop_path(mix(self.cfg.seed, it as u64, 0xD209));
        let g_data = TensorData::new(batch.globals.clone(), [2 * b, 3, g, g]);
        let mut groups = vec![Tensor::<4>::from_data(g_data, &ad)];
        if crops.local_crops > 0 {
            let n = crops.local_crops * b;
            groups.push(Tensor::from_data(
                TensorData::new(batch.locals.clone(), [n, 3, l, l]),
                &ad,
            ));
        }
        let teacher_out = self.teacher().forward(vec![globals])?;
        let student_out = self.student().forward(groups)?;
        let temp = self.schedules.teacher_temp[epoch];
        let targets = self.loss.teacher_targets(teacher_out.clone(), temp);
        let loss = self.loss.forward_targets(student_out, targets.clone());
        // one readback for the loss and the diagnostics (each readback waits for a GPU)
        let entropies = DinoLoss::target_entropies(targets);
        let values = Tensor::cat(vec![loss.clone().inner(), entropies], 0)
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Input(format!("reading the loss: {e:?}")))?;
        let value = values[0] as f64;
        if !value.is_finite() {
            return Err(Error::Input(format!(
                "the loss is {value} at iteration {it} (epoch {epoch}): stopping, as the official \
                 code does. Lower the learning rate or the teacher temperature, or resume from \
                 the last checkpoint"
            )));
        }
        let grads = GradientsParams::from_grads(loss.backward(), self.student());
        let settings = StepSettings {
            lr: self.schedules.lr[it],
            weight_decay: self.schedules.wd[it],
            clip_grad: self.cfg.clip_grad,
            freeze_last_layer: epoch < self.cfg.freeze_last_layer,
        };
        let student = self.student.take().expect("in place");
        let student = self.optimizer.step(student, grads, settings);
        let m = self.schedules.momentum[it];
        let teacher = self.teacher.take().expect("in place");
        self.teacher = Some(ema_update(teacher, &student, m));
        self.student = Some(student);
        self.loss.update_center(teacher_out);
        self.iteration += 1;
        Ok(StepStats {
            epoch,
            iteration: it,
            loss: value,
            lr: settings.lr,
            wd: settings.weight_decay,
            momentum: m,
            teacher_temp: temp,
            teacher_entropy: values[1] as f64,
            batch_entropy: values[2] as f64,
        })
    }
}
