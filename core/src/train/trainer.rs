//! One DINO training run's state and its iteration, as `train_one_epoch` of `main_dino.py`:
//! teacher on the global crops, student on all crops, loss, backward, clipping, frozen last
//! layer, optimiser step with the iteration's lr and weight decay, teacher EMA, center update.

use std::sync::Arc;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};

use super::collective::{Collective, PartsWorld};
use super::loss_scale::{LossScale, unscale_grads};
use super::{
    BatchSync, CosineSchedule, DinoLoss, DinoNet, DinoOptimizer, StepSettings, TeacherTempSchedule,
    TrainConfig, ema_update,
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
    /// Seconds this step spent summing over the other processes (none without them).
    pub comm_seconds: Option<f64>,
    /// f16: the loss scale of this step's backward pass (see [`LossScale`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// f16: the gradients overflowed, so the optimiser step was skipped (the teacher and the
    /// center moved, as in the official loop) and the scale halved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow: Option<bool>,
}

/// The schedules of a run, functions of the iteration (temperature: of the epoch).
#[derive(Clone, Debug)]
pub struct Schedules {
    pub lr: CosineSchedule,
    pub wd: CosineSchedule,
    pub momentum: CosineSchedule,
    pub teacher_temp: TeacherTempSchedule,
}

impl Schedules {
    pub fn new(cfg: &TrainConfig, niter_per_epoch: usize) -> Result<Self> {
        let (e, n) = (cfg.epochs, niter_per_epoch);
        let cosine = |base, end, warmup| {
            CosineSchedule::new(base, end, e, n, warmup, 0.0).ok_or_else(|| {
                Error::Config(format!(
                    "{e} epochs of {n} iterations is more iterations than this machine can count"
                ))
            })
        };
        Ok(Self {
            // linear scaling rule: lr * total batch / 256
            lr: cosine(
                cfg.lr * cfg.batch_size as f64 / 256.0,
                cfg.min_lr,
                cfg.warmup_epochs,
            )?,
            wd: cosine(cfg.weight_decay, cfg.weight_decay_end, 0)?,
            momentum: cosine(cfg.momentum_teacher, 1.0, 0)?,
            teacher_temp: TeacherTempSchedule {
                warmup: cfg.warmup_teacher_temp,
                temp: cfg.teacher_temp,
                warmup_epochs: cfg.warmup_teacher_temp_epochs,
                epochs: e,
            },
        })
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
    /// Devices the batch is split over; the first is the trainer's own, which holds the
    /// networks, the optimiser state and the center (see [`Trainer::set_devices`]).
    devices: Vec<Device>,
    /// Micro-batches each device runs one after another (see [`Trainer::set_accumulation`]).
    accum_steps: usize,
    /// The other processes training this run, if any (see [`Trainer::set_collective`]).
    collective: Option<Arc<dyn Collective>>,
    /// The dynamic loss scale of an f16 run (kept, unused, when a run resumes in another
    /// precision).
    pub loss_scale: Option<LossScale>,
}

/// One device's share of an iteration, after its backward passes.
struct Part {
    /// Sum of the mean losses of the part's micro-batches.
    loss: Tensor<1>,
    /// [`DinoLoss::target_sums`] of the part's teacher targets.
    target_sums: Tensor<1>,
    /// Sum of the teacher outputs over the part's rows, `[K]`.
    teacher_sum: Tensor<1>,
    /// The gradients of its micro-batch losses, each scaled by 1 / (devices x micro-batches)
    /// so that the parts sum to the gradient of the batch's mean loss; on the trainer's device.
    grads: GradientsParams,
    /// The student the gradients belong to (the trainer's own on the first device).
    student: DinoNet,
}

impl Trainer {
    /// A fresh run: the student initialised from `cfg.seed`, the teacher a copy of it.
    pub fn new(cfg: TrainConfig, niter_per_epoch: usize, device: &Device) -> Result<Self> {
        cfg.validate()?;
        if niter_per_epoch == 0 {
            return Err(Error::Data("an epoch needs at least one iteration".into()));
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
        let mut trainer = Self {
            loss: DinoLoss::new(cfg.out_dim, cfg.crops().ncrops(), device),
            optimizer: DinoOptimizer::new(cfg.optimizer),
            schedules: Schedules::new(&cfg, niter_per_epoch)?,
            niter_per_epoch,
            iteration: 0,
            devices: vec![device.clone()],
            accum_steps: 1,
            collective: None,
            loss_scale: None,
            cfg,
            student: Some(student),
            teacher: Some(teacher),
        };
        trainer.apply_precision()?;
        Ok(trainer)
    }

    /// Sets `cfg.precision` on both networks (the official code runs both under autocast),
    /// and `cfg.attention_kernel`; idempotent, so a config changed on resume takes effect at the next step. A device that
    /// cannot compute in the precision (Burn: garbage, not an error) is refused by name.
    fn apply_precision(&mut self) -> Result<()> {
        let p = self.cfg.precision;
        if let Some(h) = p.half()
            && let Some(d) = self.devices.iter().find(|d| !d.supports_dtype(h))
        {
            // the other half precision is suggested only where this device has it
            let other = if p == crate::model::Precision::Bf16 {
                crate::model::Precision::F16
            } else {
                crate::model::Precision::Bf16
            };
            let instead = match other.half() {
                Some(o) if d.supports_dtype(o) => format!("--precision {other} or f32"),
                _ => "--precision f32".to_string(),
            };
            return Err(Error::Config(format!(
                "the device {d:?} cannot compute in {p} (no general {p} arithmetic: bf16 \
                 on Vulkan needs VK_KHR_shader_bfloat16, f16 needs shaderFloat16); use \
                 {instead}"
            )));
        }
        let kernel = self.cfg.attention_kernel;
        for net in [&mut self.student, &mut self.teacher].into_iter().flatten() {
            if net.precision() != p {
                net.set_precision(p);
            }
            if net.backbone.attention_kernel() != kernel {
                net.backbone.set_attention_kernel(kernel);
            }
        }
        if p.scales_loss() && self.loss_scale.is_none() {
            self.loss_scale = Some(LossScale::default());
        }
        Ok(())
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

    /// One device's part of a batch: for each of its micro-batches (one unless accumulating)
    /// teacher and student forward passes, the loss and the backward pass of `loss * scale`,
    /// the gradients summed as they come so that only one micro-batch's activations live at a
    /// time (`first`: the trainer's own device and networks; otherwise copies moved there).
    /// `micro[j]` draws its drop-path masks from `drop_path_seed(first_micro + j)`. Runs on its
    /// own thread when there are several parts.
    #[allow(clippy::too_many_arguments)]
    fn run_part(
        &self,
        micro: &[CropBatch],
        first_micro: usize,
        drop_path_seed: impl Fn(usize) -> u64,
        device: &Device,
        first: bool,
        temp: f64,
        scale: f64,
        sync: Option<Arc<dyn Collective>>,
    ) -> Result<Part> {
        let crops = self.cfg.crops();
        let (g, l) = (crops.global_size as usize, crops.local_size as usize);
        let ad = self.cfg.student_device(device);
        let (student, teacher, loss) = if first {
            (
                self.student().clone(),
                self.teacher().clone(),
                self.loss.clone(),
            )
        } else {
            let loss = DinoLoss {
                center: self.loss.center.clone().to_device(device),
                ..self.loss.clone()
            };
            (
                self.student().clone().fork(&ad),
                self.teacher().clone().fork(device),
                loss,
            )
        };
        let mut sum = GradientsAccumulator::<DinoNet>::new();
        let mut totals: Option<(Tensor<1>, Tensor<1>, Tensor<1>)> = None;
        for (j, shard) in micro.iter().enumerate() {
            crate::rng::seed_drop_path(drop_path_seed(first_micro + j));
            let b = shard.batch;
            let globals = || TensorData::new(shard.globals.clone(), [2 * b, 3, g, g]);
            let mut groups = vec![Tensor::<4>::from_data(globals(), &ad)];
            if crops.local_crops > 0 {
                let n = crops.local_crops * b;
                groups.push(Tensor::from_data(
                    TensorData::new(shard.locals.clone(), [n, 3, l, l]),
                    &ad,
                ));
            }
            // a BatchNorm head normalises over the whole batch, all parts and ranks
            let batch_sync = sync.clone().map(|c| BatchSync::new(c, first));
            let teacher_out = teacher.forward_synced(
                vec![Tensor::from_data(globals(), device)],
                batch_sync.as_ref(),
            )?;
            let student_out = student.forward_synced(groups, batch_sync.as_ref())?;
            let targets = loss.teacher_targets(teacher_out.clone(), temp);
            let micro_loss = loss.forward_targets(student_out, targets.clone());
            let scaled = if scale == 1.0 {
                micro_loss.clone()
            } else {
                micro_loss.clone() * scale
            };
            match &batch_sync {
                Some(batch_sync) => {
                    for piece in batch_sync.backward(scaled)? {
                        sum.accumulate(&student, GradientsParams::from_grads(piece, &student));
                    }
                }
                None => {
                    let grads = scaled.backward();
                    sum.accumulate(&student, GradientsParams::from_grads(grads, &student));
                }
            }
            let values = (
                micro_loss.inner(),
                DinoLoss::target_sums(targets),
                teacher_out.inner().sum_dim(0).reshape([self.cfg.out_dim]),
            );
            totals = Some(match totals {
                None => values,
                Some((a, b, c)) => (a + values.0, b + values.1, c + values.2),
            });
        }
        let (loss, target_sums, teacher_sum) =
            totals.ok_or_else(|| Error::Input("a part without micro-batches".into()))?;
        let mut grads = sum.grads();
        if !first {
            grads = grads.to_device(self.device(), &student);
        }
        Ok(Part {
            loss,
            target_sums,
            teacher_sum,
            grads,
            student,
        })
    }

    /// Trains together with other processes (ranks of `collective`), as the official DDP:
    /// every rank gets the same batches and runs its share of each (`batch_size / world` images,
    /// split further over its devices and micro-batches); gradients, the loss and the center's
    /// batch sums are summed over the ranks, so every rank makes the same update, the one a
    /// single process makes with `world x devices` parts. A BatchNorm head normalises with the
    /// statistics of the whole batch ([`BatchSync`], the official SyncBatchNorm).
    pub fn set_collective(&mut self, collective: Arc<dyn Collective>) -> Result<()> {
        let (world, n, a) = (collective.world(), self.devices.len(), self.accum_steps);
        if world == 0 || collective.rank() >= world {
            return Err(Error::Config(format!(
                "rank {} of a world of {world}",
                collective.rank()
            )));
        }
        self.check_split(world * n, a)?;
        self.collective = Some(collective);
        Ok(())
    }

    /// With other processes: a checksum of `state` (this rank's checkpoint) compared over the
    /// ranks; a difference (a rank that diverged) is an error naming the checksums.
    pub fn same_on_every_rank(&self, state: &[u8]) -> Result<()> {
        let Some(c) = &self.collective else {
            return Ok(());
        };
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        state.hash(&mut h);
        let sums = c.all_gather_u64(h.finish());
        if sums.iter().any(|&x| x != sums[0]) {
            return Err(Error::Data(format!(
                "the ranks hold different training states at iteration {} (checksums \
                 {sums:x?}): the processes diverged",
                self.iteration
            )));
        }
        Ok(())
    }

    /// The processes this run trains with (1 without a collective).
    pub fn world(&self) -> usize {
        self.collective.as_ref().map_or(1, |c| c.world())
    }

    /// Splits every batch into equal parts, one per device, as DDP over GPUs does: each device
    /// runs a copy of both networks on its part, the gradients are averaged on the first
    /// device (the trainer's, which also keeps the optimiser state and the center), and the
    /// center takes the mean teacher output over all parts (the official all-reduce). The
    /// first device must be the trainer's; `cfg.batch_size` is the whole batch of an
    /// iteration (official: `batch_size_per_gpu` x GPUs), so it must divide by the devices.
    /// The networks are copied to the other devices at every step. A BatchNorm head normalises
    /// over all parts ([`BatchSync`] through a [`PartsWorld`]).
    pub fn set_devices(&mut self, devices: Vec<Device>) -> Result<()> {
        let n = devices.len();
        if devices.first() != Some(self.device()) {
            return Err(Error::Input(
                "data parallel: the first device must be the trainer's own".into(),
            ));
        }
        self.check_split(n, self.accum_steps)?;
        self.devices = devices;
        Ok(())
    }

    /// Gradient accumulation: each device's part of a batch runs as `steps` micro-batches one
    /// after another, their gradients summed before the single update of the iteration, so a
    /// batch needs the activation memory of `batch_size / (devices x steps)` images only. The
    /// update equals the one of the whole batch up to float rounding (as with several devices:
    /// the loss is a mean over images and the center the mean over the whole batch), except
    /// that drop-path masks are drawn per micro-batch: `steps` micro-batches on one device give
    /// the same weights as `steps` devices. Not in the official code, which has no accumulation.
    pub fn set_accumulation(&mut self, steps: usize) -> Result<()> {
        if steps == 0 {
            return Err(Error::Config(
                "gradient accumulation needs at least one micro-batch per step".into(),
            ));
        }
        self.check_split(self.devices.len(), steps)?;
        if steps > 1 && self.cfg.use_bn_in_head {
            return Err(Error::Config(
                "gradient accumulation with BatchNorm in the head would normalise each \
                 micro-batch with its own statistics: use use_bn_in_head = false or no \
                 accumulation"
                    .into(),
            ));
        }
        self.accum_steps = steps;
        Ok(())
    }

    /// Micro-batches per device and iteration (1: no gradient accumulation).
    pub fn accum_steps(&self) -> usize {
        self.accum_steps
    }

    /// The batch must split into `devices x steps` equal micro-batches.
    fn check_split(&self, devices: usize, steps: usize) -> Result<()> {
        let pieces = devices * steps;
        if self.cfg.batch_size.is_multiple_of(pieces) {
            return Ok(());
        }
        let (what, over) = match steps {
            1 => ("data parallel", format!("{devices} devices")),
            _ => (
                "gradient accumulation",
                format!("{devices} device(s) x {steps} accumulation steps"),
            ),
        };
        Err(Error::Config(format!(
            "{what}: a batch of {} images cannot be split over {over}; use a multiple of \
             {pieces}",
            self.cfg.batch_size
        )))
    }

    /// The devices a batch is split over (one: no data parallelism).
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The trainer's own device: networks, optimiser state and center live there.
    pub fn device(&self) -> &Device {
        &self.devices[0]
    }

    /// One iteration on a batch of crops. Fails on a non-finite loss (nothing is updated).
    pub fn step(&mut self, batch: &CropBatch) -> Result<StepStats> {
        let it = self.iteration;
        if self.finished() {
            return Err(Error::Input("the run is already finished".into()));
        }
        self.apply_precision()?;
        let epoch = self.epoch();
        let crops = self.cfg.crops();
        let n = self.devices.len();
        let loss_scale = match self.cfg.precision.scales_loss() {
            true => self.loss_scale,
            false => None,
        };
        let temp = self.schedules.teacher_temp.at(epoch);
        // drop-path masks: a stream per iteration and part, so runs resume exactly
        let drop_path_seed = |k: usize| mix(self.cfg.seed, it as u64, 0xD209 + ((k as u64) << 32));
        let a = self.accum_steps;
        // with other processes, this rank's parts are pieces rank * n .. of world * n parts
        let (rank, world) = self
            .collective
            .as_ref()
            .map_or((0, 1), |c| (c.rank(), c.world()));
        let pieces = world * n * a;
        let mean = 1.0 / pieces as f64;
        // each piece's loss scaled so that the pieces' gradients sum to the mean's (times the
        // f16 loss scale)
        let scale = mean * loss_scale.map_or(1.0, |s| s.scale);
        // the batch is the whole one, or this rank's share of it (a sharded loader)
        let sharded = world > 1 && batch.batch * world == self.cfg.batch_size;
        let (offset, in_batch) = if sharded {
            (0, n * a)
        } else {
            (rank * n * a, pieces)
        };
        // micro-batch j of part k: piece (rank * n + k) * a + j of all the pieces (its own
        // drop-path stream), taken from this batch
        let first_micro = |k: usize| (rank * n + k) * a;
        let micro = |k: usize| -> Result<Vec<CropBatch>> {
            (0..a)
                .map(|j| batch.shard(offset + k * a + j, in_batch, crops.local_crops))
                .collect()
        };
        // a BatchNorm head over several parts or ranks: each part's BatchNorms synchronised
        // over all of them (SyncBatchNorm), through a collective per part
        let mut syncs: Vec<Option<Arc<dyn Collective>>> = vec![None; n];
        if self.cfg.use_bn_in_head && world * n > 1 {
            syncs = match n {
                1 => vec![self.collective.clone()],
                _ => PartsWorld::new(n, self.collective.clone())
                    .into_iter()
                    .map(|p| Some(Arc::new(p) as Arc<dyn Collective>))
                    .collect(),
            };
        }
        let parts: Vec<Part> = if n == 1 {
            let whole;
            let micro = if in_batch == 1 {
                std::slice::from_ref(batch)
            } else {
                whole = micro(0)?;
                &whole[..]
            };
            let first = first_micro(0);
            vec![self.run_part(
                micro,
                first,
                drop_path_seed,
                self.device(),
                true,
                temp,
                scale,
                syncs[0].clone(),
            )?]
        } else {
            // one thread per part: GPUs work at the same time, and on a CPU one part's
            // single-threaded element-wise ops overlap the other's matrix products
            let shards = (0..n).map(micro).collect::<Result<Vec<_>>>()?;
            let this = &*self;
            std::thread::scope(|scope| {
                let handles: Vec<_> = shards
                    .iter()
                    .zip(&this.devices)
                    .zip(syncs)
                    .enumerate()
                    .map(|(k, ((micro, device), sync))| {
                        scope.spawn(move || {
                            let first = first_micro(k);
                            this.run_part(
                                micro,
                                first,
                                drop_path_seed,
                                device,
                                k == 0,
                                temp,
                                scale,
                                sync,
                            )
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect::<Result<Vec<_>>>()
            })?
        };
        // the loss and the diagnostics of all parts, read back at once (a readback waits for
        // the GPUs); nothing is updated before the loss is known to be finite
        let rows = 2 * if sharded {
            self.cfg.batch_size
        } else {
            batch.batch
        };
        let mut loss = parts[0].loss.clone();
        let mut sums = parts[0].target_sums.clone();
        let mut teacher_sum = parts[0].teacher_sum.clone();
        for p in &parts[1..] {
            loss = loss + p.loss.clone().to_device(self.device());
            sums = sums + p.target_sums.clone().to_device(self.device());
            teacher_sum = teacher_sum + p.teacher_sum.clone().to_device(self.device());
        }
        let mut comm_seconds = None;
        if let Some(c) = &self.collective {
            // the whole batch's loss and sums on every rank (as DDP's all-reduce of the center)
            let t = std::time::Instant::now();
            [loss, sums, teacher_sum] = all_reduce_tensors(c.as_ref(), [loss, sums, teacher_sum])?;
            comm_seconds = Some(t.elapsed().as_secs_f64());
        }
        let entropies = DinoLoss::entropies_from_sums(sums, rows);
        let values = Tensor::cat(vec![loss * mean, entropies], 0)
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Input(format!("reading the loss: {e:?}")))?;
        let value = values[0] as f64;
        if !value.is_finite() {
            return Err(Error::Diverged {
                loss: value,
                iteration: it,
                epoch,
            });
        }
        // the mean gradient over the parts, on the first device (and over the ranks)
        let mut grads = if n == 1 {
            parts.into_iter().next().expect("one part").grads
        } else {
            let mut sum = GradientsAccumulator::<DinoNet>::new();
            for p in parts {
                sum.accumulate(&p.student, p.grads);
            }
            sum.grads()
        };
        if let Some(c) = &self.collective {
            let t = std::time::Instant::now();
            grads = all_reduce_grads(c.as_ref(), grads, self.student(), self.device())?;
            comm_seconds = comm_seconds.map(|s| s + t.elapsed().as_secs_f64());
        }
        // f16: the gradients unscaled; an overflow skips the optimiser step (GradScaler)
        let mut overflow = None;
        if let Some(ls) = loss_scale {
            let (unscaled, finite) = unscale_grads(grads, self.student(), ls.scale)?;
            grads = unscaled;
            overflow = Some(!finite);
            if let Some(state) = &mut self.loss_scale {
                state.update(!finite);
            }
        }
        let teacher_out_mean = teacher_sum.reshape([1, self.cfg.out_dim]) / rows as f64;
        let settings = StepSettings {
            lr: self.schedules.lr.at(it),
            weight_decay: self.schedules.wd.at(it),
            clip_grad: self.cfg.clip_grad,
            freeze_last_layer: epoch < self.cfg.freeze_last_layer,
        };
        let student = self.student.take().expect("in place");
        let student = match overflow {
            Some(true) => student,
            _ => self.optimizer.step(student, grads, settings),
        };
        let m = self.schedules.momentum.at(it);
        let teacher = self.teacher.take().expect("in place");
        self.teacher = Some(ema_update(teacher, &student, m));
        self.student = Some(student);
        self.loss.update_center_mean(teacher_out_mean);
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
            comm_seconds,
            loss_scale: loss_scale.map(|s| s.scale),
            overflow,
        })
    }
}

/// Sums 1-D tensors over the ranks (through host memory, as one buffer).
fn all_reduce_tensors<const N: usize>(
    c: &dyn Collective,
    tensors: [Tensor<1>; N],
) -> Result<[Tensor<1>; N]> {
    let device = tensors[0].device();
    let mut lens = [0usize; N];
    let mut host = Vec::new();
    for (len, t) in lens.iter_mut().zip(&tensors) {
        let v = t
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Input(format!("reading a tensor back: {e:?}")))?;
        *len = v.len();
        host.extend(v);
    }
    c.all_reduce_sum(&mut host);
    let mut at = 0;
    Ok(lens.map(|len| {
        let t = Tensor::from_data(TensorData::new(host[at..at + len].to_vec(), [len]), &device);
        at += len;
        t
    }))
}

/// Sums every gradient of `student` over the ranks: one host buffer in the module's order
/// (the same on every rank), all-reduced, put back on `device`.
pub(crate) fn all_reduce_grads<M: Module>(
    c: &dyn Collective,
    mut grads: GradientsParams,
    student: &M,
    device: &Device,
) -> Result<GradientsParams> {
    struct Gather<'a> {
        grads: &'a mut GradientsParams,
        taken: Vec<(ParamId, Vec<usize>)>,
        host: Vec<f32>,
        err: Option<Error>,
    }
    impl ModuleVisitor for Gather<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let Some(g) = self.grads.remove::<D>(param.id) else {
                return;
            };
            let shape = g.dims().to_vec();
            match g.into_data().try_to_vec::<f32>() {
                Ok(v) => self.host.extend(v),
                Err(e) => self.err = Some(Error::Input(format!("reading a gradient: {e:?}"))),
            }
            self.taken.push((param.id, shape));
        }
    }
    let mut gather = Gather {
        grads: &mut grads,
        taken: Vec::new(),
        host: Vec::new(),
        err: None,
    };
    student.visit(&mut gather);
    if let Some(e) = gather.err {
        return Err(e);
    }
    let (taken, mut host) = (gather.taken, gather.host);
    c.all_reduce_sum(&mut host);
    let mut at = 0;
    for (id, shape) in taken {
        let len: usize = shape.iter().product();
        let data = TensorData::new(host[at..at + len].to_vec(), shape.clone());
        at += len;
        match shape.len() {
            1 => grads.register::<1>(id, Tensor::from_data(data, device)),
            2 => grads.register::<2>(id, Tensor::from_data(data, device)),
            3 => grads.register::<3>(id, Tensor::from_data(data, device)),
            4 => grads.register::<4>(id, Tensor::from_data(data, device)),
            r => return Err(Error::Input(format!("a gradient of rank {r}"))),
        }
    }
    Ok(grads)
}
