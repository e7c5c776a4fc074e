//! The SuNCEt fine-tuning of a PAWS encoder (suncet's `src/snn_fine_tune.py` with
//! `configs/paws/cifar10_snn.yaml`): after PAWS, the encoder is trained on the labelled images
//! alone with the supervised contrastive SuNCEt loss (each support view classified by soft
//! nearest neighbours over the *other* support views, itself left out), every BatchNorm in
//! evaluation mode (running statistics used and kept; affine parameters still learn), SGD with
//! momentum inside LARS, a warm-up cosine learning rate, and the basic augmentations (a centre
//! crop and a horizontal flip). The result is evaluated as before, by `snn_eval`.
//!
//! A run of the shared training loop: checkpoints, exact resume, metrics, progress.

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::data::{LabelledSet, normalize};
use super::support::{ClassStratifiedSampler, labels_matrix};
use super::trainer::{encoder_file_bytes, support_accuracy};
use super::{EncoderConfig, PawsConfig, PawsEncoder, run_file};
use crate::augment::{CropBox, pil_ops, resized_crop};
use crate::data::Skipped;
use crate::model::l2_normalize_rows;
use crate::rng::mix;
use crate::train::config::{differences, merge_table, to_table};
use crate::train::run::{Batches, Metrics, RunDir, TrainRun};
use crate::train::{DinoOptimizer, OptimizerKind, StepSettings, WarmupCosine, parameter_sizes};
use crate::weights::{RawTensor, StateDict};
use crate::{Error, Result};

/// The `format` header of fine-tuning checkpoints.
pub const FINE_TUNE_FORMAT: &str = "dino-rs-paws-fine-tune";
const RUN_KEY: &str = "paws.fine_tune";

/// Every setting of a fine-tuning run, with the defaults of `configs/paws/cifar10_snn.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FineTuneConfig {
    /// Classes in each batch (must divide the number of classes).
    pub classes_per_batch: usize,
    /// Labelled images of each class in a batch (`supervised_batch_size`).
    pub supervised_imgs_per_class: usize,
    /// Augmented views of each image.
    pub supervised_views: usize,
    /// Temperature of the SuNCEt similarities.
    pub temperature: f64,
    /// Label smoothing (0 officially for fine-tuning).
    pub label_smoothing: f64,
    pub epochs: usize,
    /// Epochs of linear warm-up from `start_lr` to `lr`, then a cosine to `final_lr`.
    pub warmup: usize,
    pub start_lr: f64,
    pub lr: f64,
    pub final_lr: f64,
    pub weight_decay: f64,
    /// LARS around the SGD (trust 0.001; biases and BatchNorms excluded), as officially.
    pub use_lars: bool,
    pub seed: u64,
    /// Keep `checkpointNNNN.safetensors` every this many epochs (0: never).
    pub saveckp_freq: usize,
    /// Write the rolling checkpoint every this many iterations too (0: only per epoch).
    pub checkpoint_every: usize,
}

impl Default for FineTuneConfig {
    fn default() -> Self {
        Self {
            classes_per_batch: 10,
            supervised_imgs_per_class: 64,
            supervised_views: 2,
            temperature: 0.1,
            label_smoothing: 0.0,
            epochs: 30,
            warmup: 0,
            start_lr: 0.1,
            lr: 0.1,
            final_lr: 0.01,
            weight_decay: 0.0,
            use_lars: true,
            seed: 0,
            saveckp_freq: 0,
            checkpoint_every: 0,
        }
    }
}

impl FineTuneConfig {
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }

    pub fn to_table(&self) -> toml::Table {
        to_table(self)
    }

    /// This config with the fields of `overrides` replaced (unknown fields are errors).
    pub fn merged(&self, overrides: &toml::Table) -> Result<Self> {
        merge_table(self, overrides, "fine-tuning config")
    }

    /// The fields of `overrides` that differ from this config's (`field`, this, override).
    pub fn differences(&self, overrides: &toml::Table) -> Result<Vec<(String, String, String)>> {
        differences(self, overrides, "fine-tuning config")
    }

    /// Support views per iteration.
    pub fn views(&self) -> usize {
        self.supervised_views * self.classes_per_batch * self.supervised_imgs_per_class
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("fine-tuning config: {m}")));
        if self.epochs == 0
            || self.classes_per_batch == 0
            || self.supervised_imgs_per_class == 0
            || self.supervised_views == 0
        {
            return bad(
                "epochs, classes per batch, images per class and views must be at least 1".into(),
            );
        }
        if self.views() < 2 {
            return bad("SuNCEt compares each view with the others: it needs two views".into());
        }
        if self.warmup > self.epochs {
            return bad(format!(
                "warm-up of {} epochs is longer than the run ({} epochs)",
                self.warmup, self.epochs
            ));
        }
        if self.temperature <= 0.0 || !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("temperature must be positive and label_smoothing in [0, 1)".into());
        }
        if self.lr < 0.0 || self.start_lr < 0.0 || self.final_lr < 0.0 || self.weight_decay < 0.0 {
            return bad("learning rates and weight decay must be non-negative".into());
        }
        Ok(())
    }
}

/// suncet's `init_suncet_loss` for one process: `z` normalised, `exp(z z^T / tau)` with each
/// view's similarity to itself removed, rows normalised and multiplied by the labels, then the
/// cross-entropy with the view's own labels, averaged.
pub fn suncet_loss(z: Tensor<2>, labels: Tensor<2>, tau: f64) -> Tensor<1> {
    let [n, _] = z.dims();
    let z = l2_normalize_rows(z);
    let e = (z.clone().matmul(z.transpose()) / tau).exp();
    let keep = Tensor::<2>::eye(n, &e.device()).neg() + 1.0;
    let e = e * keep;
    let probs = (e.clone() / e.sum_dim(1)).matmul(labels.clone());
    // mean over rows of sum_c log(p ** -t) = -t log p
    (labels * probs.log()).sum_dim(1).mean().neg()
}

/// The support views of one iteration, normalised CHW on the host.
#[derive(Clone, Debug)]
pub struct SupportBatch {
    /// `[supervised_views * S, 3, L, L]`, view-major.
    pub views: Vec<f32>,
    /// `[supervised_views * S, classes_per_batch]`.
    pub labels: Vec<f32>,
    /// Side of the views.
    pub size: u32,
}

/// The basic augmentation of the fine-tuning data: the central square resized to `size`
/// (`CenterCrop(32)` on CIFAR-10's 32 px images), a horizontal flip with p = 0.5, and the run's
/// normalisation.
#[derive(Clone, Copy, Debug)]
pub struct BasicView {
    pub size: u32,
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

impl BasicView {
    pub fn apply(&self, img: &RgbImage, rng: &mut impl Rng) -> Result<Vec<f32>> {
        let (w, h) = img.dimensions();
        let side = w.min(h);
        let b = CropBox {
            top: (h - side) / 2,
            left: (w - side) / 2,
            height: side,
            width: side,
        };
        let mut out = resized_crop(img, b, self.size)?;
        if rng.random::<f64>() < 0.5 {
            out = pil_ops::hflip(&out);
        }
        Ok(normalize(&out, self.mean, self.std))
    }
}

/// The batches of a fine-tuning run: class-stratified support batches of the labelled images.
pub struct FineTuneBatches {
    labelled: Arc<LabelledSet>,
    sampler: ClassStratifiedSampler,
    cfg: FineTuneConfig,
    view: BasicView,
    niter: usize,
}

impl FineTuneBatches {
    /// `paws` is the encoder's PAWS run (its view size and normalisation).
    pub fn new(
        labelled: Arc<LabelledSet>,
        cfg: &FineTuneConfig,
        paws: &PawsConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        let sampler = labelled.sampler(
            cfg.classes_per_batch,
            cfg.supervised_imgs_per_class,
            cfg.seed,
        )?;
        // as the official `set_inner_epochs(imgs_per_class // batch_size)`: an epoch sees each
        // labelled image about once
        let per_class = labelled.labels.len() / labelled.classes.len().max(1);
        let passes = (per_class / cfg.supervised_imgs_per_class).max(1);
        let niter = passes * (labelled.classes.len() / cfg.classes_per_batch);
        Ok(Self {
            labelled,
            sampler,
            cfg: cfg.clone(),
            view: BasicView {
                size: paws.crop_size,
                mean: paws.normalize_mean,
                std: paws.normalize_std,
            },
            niter,
        })
    }
}

impl Batches for FineTuneBatches {
    type Batch = SupportBatch;

    fn niter_per_epoch(&self) -> usize {
        self.niter
    }

    fn batch(&mut self, epoch: usize, it: usize) -> Result<(SupportBatch, Vec<Skipped>)> {
        let c = &self.cfg;
        let git = epoch * self.niter + it;
        let (rows, _) = self.sampler.batch(git);
        let mut views: Vec<Vec<f32>> = vec![Vec::new(); c.supervised_views];
        for (r, &idx) in rows.iter().enumerate() {
            let img = self.labelled.image(idx)?;
            let mut rng =
                ChaCha8Rng::seed_from_u64(mix(c.seed ^ 0x534e_4e46, git as u64, r as u64));
            for v in views.iter_mut() {
                v.extend(self.view.apply(&img, &mut rng)?);
            }
        }
        let matrix = labels_matrix(
            c.classes_per_batch,
            c.supervised_imgs_per_class,
            c.label_smoothing,
        );
        Ok((
            SupportBatch {
                views: views.concat(),
                labels: matrix.repeat(c.supervised_views),
                size: self.view.size,
            },
            Vec::new(),
        ))
    }

    fn images(batch: &SupportBatch) -> usize {
        batch.labels.len()
    }
}

/// The position and settings a checkpoint's header holds.
#[derive(Serialize, Deserialize)]
struct RunHeader {
    config: FineTuneConfig,
    /// The PAWS run the encoder came from (view size, normalisation; kept in the export).
    paws: PawsConfig,
    encoder: EncoderConfig,
    iteration: usize,
    niter_per_epoch: usize,
    optimizer_steps: BTreeMap<String, u64>,
}

/// A fine-tuning run in memory.
pub struct FineTuneTrainer {
    pub cfg: FineTuneConfig,
    pub paws: PawsConfig,
    encoder: Option<PawsEncoder>,
    pub optimizer: DinoOptimizer,
    lr_schedule: WarmupCosine,
    pub niter_per_epoch: usize,
    pub iteration: usize,
    device: Device,
}

/// What one iteration reports.
#[derive(Clone, Copy, Debug)]
pub struct FineTuneStepStats {
    pub loss: f64,
    pub lr: f64,
    pub support_acc: f64,
}

impl FineTuneTrainer {
    /// A run from a trained encoder's official keys (`sd`) and shape, its BatchNorms frozen.
    pub fn new(
        cfg: FineTuneConfig,
        paws: PawsConfig,
        shape: &EncoderConfig,
        sd: StateDict,
        niter_per_epoch: usize,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        if niter_per_epoch == 0 {
            return Err(Error::Data("an epoch needs at least one iteration".into()));
        }
        let total = cfg
            .epochs
            .checked_mul(niter_per_epoch)
            .ok_or_else(|| Error::Config("more iterations than this machine can count".into()))?;
        let mut encoder = PawsEncoder::from_state_dict(shape, sd, &device.clone().autodiff())?;
        encoder.freeze_batch_norms();
        Ok(Self {
            lr_schedule: WarmupCosine {
                start: cfg.start_lr,
                reference: cfg.lr,
                final_value: cfg.final_lr,
                warmup_steps: cfg.warmup.saturating_mul(niter_per_epoch),
                total_steps: total,
            },
            optimizer: DinoOptimizer::new(if cfg.use_lars {
                OptimizerKind::PawsLars
            } else {
                OptimizerKind::PawsSgd
            }),
            encoder: Some(encoder),
            niter_per_epoch,
            iteration: 0,
            device: device.clone(),
            cfg,
            paws,
        })
    }

    /// The encoder (on the autodiff device).
    pub fn encoder(&self) -> &PawsEncoder {
        self.encoder.as_ref().expect("in place between steps")
    }

    /// One iteration, showing `inspect` the outputs and raw gradients before the update.
    pub fn step_inspected(
        &mut self,
        batch: &SupportBatch,
        inspect: &mut dyn FnMut(&Tensor<2>, &GradientsParams, &PawsEncoder),
    ) -> Result<FineTuneStepStats> {
        let it = self.iteration;
        if it >= self.cfg.epochs * self.niter_per_epoch {
            return Err(Error::Input("the run is already finished".into()));
        }
        let (n, classes) = (self.cfg.views(), self.cfg.classes_per_batch);
        let l = batch.size as usize;
        if batch.views.len() != n * 3 * l * l || batch.labels.len() != n * classes {
            return Err(Error::Input(format!(
                "fine-tuning batch: {} view and {} label values, expected {} and {}",
                batch.views.len(),
                batch.labels.len(),
                n * 3 * l * l,
                n * classes
            )));
        }
        let ad = self.device.clone().autodiff();
        let x = Tensor::<4>::from_data(TensorData::new(batch.views.clone(), [n, 3, l, l]), &ad);
        let labels =
            Tensor::<2>::from_data(TensorData::new(batch.labels.clone(), [n, classes]), &ad);
        let encoder = self.encoder.take().expect("in place between steps");
        let z = encoder.embed(x);
        let loss = suncet_loss(z.clone(), labels, self.cfg.temperature);
        let value = loss
            .clone()
            .inner()
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Input(format!("reading the loss: {e:?}")))?[0];
        if !value.is_finite() {
            self.encoder = Some(encoder);
            return Err(Error::Diverged {
                loss: value as f64,
                iteration: it,
                epoch: it / self.niter_per_epoch,
            });
        }
        let support_acc = support_accuracy(
            &RawTensor::from_tensor(z.clone().detach())?,
            &batch.labels,
            classes,
        );
        let grads = GradientsParams::from_grads(loss.backward(), &encoder);
        inspect(&z, &grads, &encoder);
        let lr = self.lr_schedule.at(it);
        let settings = StepSettings {
            lr,
            weight_decay: self.cfg.weight_decay,
            clip_grad: 0.0,
            freeze_last_layer: false,
        };
        self.encoder = Some(self.optimizer.step(encoder, grads, settings));
        self.iteration += 1;
        Ok(FineTuneStepStats {
            loss: value as f64,
            lr,
            support_acc,
        })
    }

    /// The checkpoint: the encoder under `encoder.`, the optimiser's buffers, the header.
    pub fn checkpoint_bytes(&self) -> Result<Vec<u8>> {
        let encoder = self.encoder();
        run_file::checkpoint_bytes(
            encoder,
            &self.optimizer,
            FINE_TUNE_FORMAT,
            RUN_KEY,
            |steps| RunHeader {
                config: self.cfg.clone(),
                paws: self.paws.clone(),
                encoder: encoder.config.clone(),
                iteration: self.iteration,
                niter_per_epoch: self.niter_per_epoch,
                optimizer_steps: steps,
            },
        )
    }

    /// Restores a run from checkpoint bytes onto `device`.
    pub fn from_checkpoint(bytes: &[u8], device: &Device) -> Result<Self> {
        let what = "fine-tuning checkpoint";
        let meta = run_file::metadata(
            bytes,
            FINE_TUNE_FORMAT,
            what,
            "not a dino-rs fine-tuning checkpoint",
        )?;
        let header: RunHeader = run_file::header(&meta, RUN_KEY, what, "no training state")?;
        let (enc, optim) = run_file::read_tensors(bytes, "encoder.")?;
        let mut t = Self::new(
            header.config,
            header.paws,
            &header.encoder,
            enc,
            header.niter_per_epoch,
            device,
        )?;
        t.iteration = header.iteration;
        let sizes = parameter_sizes(t.encoder());
        t.optimizer
            .load_state(&sizes, optim, &header.optimizer_steps, device)?;
        Ok(t)
    }

    /// Restores a run from a checkpoint file.
    pub fn load(path: &std::path::Path, device: &Device) -> Result<Self> {
        run_file::load(path, |bytes| Self::from_checkpoint(bytes, device))
    }
}

impl TrainRun for FineTuneTrainer {
    type Batch = SupportBatch;

    fn iteration(&self) -> usize {
        self.iteration
    }

    fn niter_per_epoch(&self) -> usize {
        self.niter_per_epoch
    }

    fn total_iterations(&self) -> usize {
        self.cfg.epochs * self.niter_per_epoch
    }

    fn step(&mut self, batch: &SupportBatch) -> Result<Metrics> {
        let s = self.step_inspected(batch, &mut |_, _, _| {})?;
        Ok(vec![
            ("loss", s.loss),
            ("support_acc", s.support_acc),
            ("lr", s.lr),
        ])
    }

    fn checkpoint_bytes(&self) -> Result<Vec<u8>> {
        FineTuneTrainer::checkpoint_bytes(self)
    }

    fn config_toml(&self) -> String {
        self.cfg.to_toml()
    }

    fn checkpoint_every(&self) -> usize {
        self.cfg.checkpoint_every
    }

    fn saveckp_freq(&self) -> usize {
        self.cfg.saveckp_freq
    }

    /// `encoder.safetensors`: the fine-tuned encoder in the PAWS encoder format (`dino snn`).
    fn export(&self, dir: &RunDir) -> Result<()> {
        crate::atomic_write(
            &dir.0.join("encoder.safetensors"),
            &encoder_file_bytes(self.encoder(), &self.paws)?,
        )
    }

    fn log_key(key: &str) -> String {
        match key {
            "img_per_s" => key.to_string(),
            k => format!("train_{k}"),
        }
    }
}
