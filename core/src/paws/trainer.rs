//! A PAWS run in memory: one iteration of suncet's `paws_train.py` `train_step` (the support
//! views and the large unlabelled views through the encoder as one resolution group, the small
//! crops as another; swapped targets from the projections; the PAWS loss with me-max; backward;
//! LARS-wrapped SGD at the warm-up cosine learning rate), its checkpoint (encoder, optimiser
//! state, position) and its export (the encoder), as a run of the shared training loop.

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::support::labels_across_ranks;
use super::{EncoderConfig, PawsBatch, PawsConfig, PawsEncoder, run_file};
use crate::train::all_reduce_grads;
use crate::train::collective::Collective;
use crate::train::run::{Metrics, RunDir, TrainRun};
use crate::train::{DinoOptimizer, OptimizerKind, StepSettings, WarmupCosine, parameter_sizes};
use crate::weights::{RawTensor, StateDict, safetensors_bytes};
use crate::{Error, Result};

/// The `format` header of PAWS checkpoints and exported encoders.
pub const PAWS_FORMAT: &str = "dino-rs-paws";
const RUN_KEY: &str = "paws.train";
const CONFIG_KEY: &str = "paws.config";
/// The encoder's exact shape (files of earlier versions: from the config).
const ENCODER_KEY: &str = "paws.encoder";

/// The position and settings a checkpoint's header holds.
#[derive(Serialize, Deserialize)]
struct RunHeader {
    config: PawsConfig,
    iteration: usize,
    niter_per_epoch: usize,
    optimizer_steps: BTreeMap<String, u64>,
    /// The encoder's shape (absent in checkpoints of earlier versions: from `config`).
    #[serde(default)]
    encoder: Option<EncoderConfig>,
}

pub struct PawsTrainer {
    pub cfg: PawsConfig,
    /// On the autodiff device; `Option` only so that a step can move it through the update.
    encoder: Option<PawsEncoder>,
    pub optimizer: DinoOptimizer,
    /// The learning rate of every iteration.
    pub lr_schedule: WarmupCosine,
    pub niter_per_epoch: usize,
    /// Next global iteration.
    pub iteration: usize,
    device: Device,
    /// The other processes training this run, if any (see [`PawsTrainer::set_collective`]).
    collective: Option<Arc<dyn Collective>>,
}

impl PawsTrainer {
    /// A fresh run: the encoder drawn from `cfg.seed` as PyTorch initialises the official one.
    pub fn new(cfg: PawsConfig, niter_per_epoch: usize, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let encoder = PawsEncoder::seeded(&cfg.encoder()?, cfg.seed, &device.clone().autodiff())?;
        Self::from_encoder(cfg, encoder, niter_per_epoch, device)
    }

    /// A run from an existing encoder (on the autodiff device of `device`).
    pub fn from_encoder(
        cfg: PawsConfig,
        encoder: PawsEncoder,
        niter_per_epoch: usize,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        if niter_per_epoch == 0 {
            return Err(Error::Data("an epoch needs at least one iteration".into()));
        }
        let total = cfg.epochs.checked_mul(niter_per_epoch).ok_or_else(|| {
            Error::Config(format!(
                "{} epochs of {niter_per_epoch} iterations is more iterations than this machine \
                 can count",
                cfg.epochs
            ))
        })?;
        Ok(Self {
            lr_schedule: WarmupCosine {
                start: cfg.start_lr,
                reference: cfg.lr,
                final_value: cfg.final_lr,
                warmup_steps: cfg.warmup.saturating_mul(niter_per_epoch),
                total_steps: total,
            },
            optimizer: DinoOptimizer::new(OptimizerKind::PawsLars),
            encoder: Some(encoder),
            niter_per_epoch,
            iteration: 0,
            device: device.clone(),
            cfg,
            collective: None,
        })
    }

    /// Trains together with the other ranks of `collective`, as suncet's DDP run: each rank
    /// its own unlabelled images and its own share of each support class's images, the
    /// supports of every rank gathered for the soft nearest-neighbour classifier (AllGather,
    /// gradients summed back to their rank), the me-max mean over every rank's predictions
    /// (AllReduce), the labels matrix `make_labels_matrix(world_size, unique_classes=False)`
    /// (its extra columns hold the smoothing's off value, as the official one), gradients
    /// averaged. Each rank keeps its own BatchNorm statistics (`broadcast_buffers=False`).
    pub fn set_collective(&mut self, collective: Arc<dyn Collective>) -> Result<()> {
        if collective.world() == 0 || collective.rank() >= collective.world() {
            return Err(Error::Config(format!(
                "rank {} of a world of {}",
                collective.rank(),
                collective.world()
            )));
        }
        self.collective = Some(collective);
        Ok(())
    }

    /// (rank, world) of this process (0, 1 alone).
    pub fn rank_and_world(&self) -> (usize, usize) {
        self.collective
            .as_ref()
            .map_or((0, 1), |c| (c.rank(), c.world()))
    }

    /// The encoder (on the autodiff device).
    pub fn encoder(&self) -> &PawsEncoder {
        self.encoder.as_ref().expect("in place between steps")
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// One iteration; the loss, its two terms, the learning rate and the support accuracy.
    pub fn step(&mut self, batch: &PawsBatch) -> Result<PawsStepStats> {
        self.step_inspected(batch, &mut |_| {})
    }

    /// [`Self::step`], showing `inspect` the encoder's outputs and the raw gradients before the
    /// update (the reference tests compare them with PyTorch's).
    pub fn step_inspected(
        &mut self,
        batch: &PawsBatch,
        inspect: &mut dyn FnMut(&StepInternals),
    ) -> Result<PawsStepStats> {
        let it = self.iteration;
        if it >= self.cfg.epochs * self.niter_per_epoch {
            return Err(Error::Input("the run is already finished".into()));
        }
        let c = &self.cfg;
        let ad = self.device.clone().autodiff();
        let (l, s, u) = (
            c.crop_size as usize,
            c.multicrop_size as usize,
            batch.unlabelled,
        );
        let ns = c.support_views();
        let classes = c.classes_per_batch;
        let expect = |what: &str, got: usize, want: usize| {
            if got == want {
                Ok(())
            } else {
                Err(Error::Input(format!(
                    "PAWS batch: {got} {what} values, expected {want}"
                )))
            }
        };
        expect("support", batch.supports.len(), ns * 3 * l * l)?;
        expect("label", batch.labels.len(), ns * classes)?;
        expect("large-view", batch.large.len(), 2 * u * 3 * l * l)?;
        expect("small-crop", batch.small.len(), c.multicrop * u * 3 * s * s)?;
        // supports and large views: one resolution group; the small crops: another
        let large = [batch.supports.as_slice(), batch.large.as_slice()].concat();
        let mut groups = vec![Tensor::<4>::from_data(
            TensorData::new(large, [ns + 2 * u, 3, l, l]),
            &ad,
        )];
        if c.multicrop > 0 {
            groups.push(Tensor::from_data(
                TensorData::new(batch.small.clone(), [c.multicrop * u, 3, s, s]),
                &ad,
            ));
        }
        let labels =
            Tensor::<2>::from_data(TensorData::new(batch.labels.clone(), [ns, classes]), &ad);
        let encoder = self.encoder.take().expect("in place between steps");
        let out = encoder.forward(groups);
        let rows = out.z.dims()[0];
        let anchor_supports = out.z.clone().narrow(0, 0, ns);
        let anchor_views = out.z.clone().narrow(0, ns, rows - ns);
        let target_supports = out.h.clone().narrow(0, 0, ns).detach();
        // the other large view of each image: [view 1, view 0]
        let target_views = Tensor::cat(
            vec![
                out.h.clone().narrow(0, ns + u, u),
                out.h.clone().narrow(0, ns, u),
            ],
            0,
        )
        .detach();
        let terms = match &self.collective {
            Some(col) if col.world() > 1 => across_ranks(
                col.as_ref(),
                c,
                [&anchor_views, &anchor_supports],
                [&target_views, &target_supports],
                labels,
            )?,
            _ => c.loss().forward(
                anchor_views,
                anchor_supports.clone(),
                target_views,
                target_supports,
                labels,
            ),
        };
        let loss = terms.xent.clone() + terms.me_max.clone();
        let values = Tensor::cat(vec![loss.clone(), terms.xent, terms.me_max], 0)
            .inner()
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Input(format!("reading the loss: {e:?}")))?;
        if !values[0].is_finite() {
            self.encoder = Some(encoder);
            return Err(Error::Diverged {
                loss: values[0] as f64,
                iteration: it,
                epoch: it / self.niter_per_epoch,
            });
        }
        let support_acc = support_accuracy(
            &RawTensor::from_tensor(anchor_supports.detach())?,
            &batch.labels,
            classes,
        );
        let mut grads = GradientsParams::from_grads(loss.backward(), &encoder);
        if let Some(col) = &self.collective
            && col.world() > 1
        {
            // each rank's loss is its 1/world share: the sum is DDP's mean gradient
            grads = all_reduce_grads(col.as_ref(), grads, &encoder, &ad)?;
        }
        inspect(&StepInternals {
            h: &out.h,
            z: &out.z,
            grads: &grads,
            encoder: &encoder,
        });
        let settings = StepSettings {
            lr: self.lr_schedule.at(it),
            weight_decay: c.weight_decay,
            clip_grad: 0.0,
            freeze_last_layer: false,
        };
        self.encoder = Some(self.optimizer.step(encoder, grads, settings));
        self.iteration += 1;
        Ok(PawsStepStats {
            loss: values[0] as f64,
            xent: values[1] as f64,
            me_max: values[2] as f64,
            lr: settings.lr,
            support_acc,
        })
    }

    /// The checkpoint as bytes: the encoder under `encoder.` (official keys), the optimiser's
    /// momentum buffers, and the run's position and settings in the header.
    pub fn checkpoint_bytes(&self) -> Result<Vec<u8>> {
        let encoder = self.encoder();
        run_file::checkpoint_bytes(encoder, &self.optimizer, PAWS_FORMAT, RUN_KEY, |steps| {
            RunHeader {
                config: self.cfg.clone(),
                iteration: self.iteration,
                niter_per_epoch: self.niter_per_epoch,
                optimizer_steps: steps,
                encoder: Some(encoder.config.clone()),
            }
        })
    }

    /// Restores a run from checkpoint bytes onto `device`.
    pub fn from_checkpoint(bytes: &[u8], device: &Device) -> Result<Self> {
        let what = "PAWS checkpoint";
        let meta = run_file::metadata(bytes, PAWS_FORMAT, what, "not a dino-rs PAWS checkpoint")?;
        let header: RunHeader = run_file::header(
            &meta,
            RUN_KEY,
            what,
            "no training state (an exported encoder?)",
        )?;
        let (enc, optim) = run_file::read_tensors(bytes, "encoder.")?;
        let ad = device.clone().autodiff();
        let shape = match &header.encoder {
            Some(e) => e.clone(),
            None => header.config.encoder()?,
        };
        let encoder = PawsEncoder::from_state_dict(&shape, enc, &ad)?;
        let mut t = Self::from_encoder(header.config, encoder, header.niter_per_epoch, device)?;
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

    /// The exported encoder: official keys, and in the header the run's settings (the
    /// encoder's sizes and the view size and normalisation an evaluation needs).
    pub fn encoder_bytes(&self) -> Result<Vec<u8>> {
        encoder_file_bytes(self.encoder(), &self.cfg)
    }
}

/// An encoder file: official keys, and in the header the run's settings and the encoder's
/// shape.
pub(crate) fn encoder_file_bytes(encoder: &PawsEncoder, cfg: &PawsConfig) -> Result<Vec<u8>> {
    let cfg = serde_json::to_string(cfg).expect("serialises");
    let shape = serde_json::to_string(&encoder.config).expect("serialises");
    safetensors_bytes(
        &encoder.to_state_dict()?,
        false,
        PAWS_FORMAT,
        &[(CONFIG_KEY, cfg), (ENCODER_KEY, shape)],
    )
}

/// The PAWS loss of one rank over every rank's views, as suncet's DDP run computes it: each
/// rank's anchors and supports gathered (this rank's tracked, the others' as values), targets
/// from each rank's own target views and every rank's target supports, the labels widened to
/// `classes x world` columns as `make_labels_matrix(world_size, unique_classes)` does
/// ([`labels_across_ranks`]).
/// The loss (the mean over every rank's views, me-max over all of them) has, on each rank,
/// 1/world of the gradient suncet's rank gets before DDP averages; summing over the ranks gives
/// DDP's mean.
fn across_ranks(
    col: &dyn Collective,
    c: &PawsConfig,
    [anchor_views, anchor_supports]: [&Tensor<2>; 2],
    [target_views, target_supports]: [&Tensor<2>; 2],
    labels: Tensor<2>,
) -> Result<super::PawsLossOutput> {
    let (rank, world) = (col.rank(), col.world());
    let host = |t: &Tensor<2>| -> Result<Vec<f32>> {
        t.clone()
            .inner()
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Input(format!("reading a tensor back: {e:?}")))
    };
    let parts = [anchor_views, anchor_supports, target_views, target_supports];
    let dims: Vec<[usize; 2]> = parts.iter().map(|t| t.dims()).collect();
    let mut mine = Vec::new();
    for t in parts {
        mine.extend(host(t)?);
    }
    let all = col.all_gather(&mine);
    let per_rank = mine.len();
    if all.len() != per_rank * world {
        return Err(Error::Input(format!(
            "ranks disagree on the batch: {} values gathered, {} expected",
            all.len(),
            per_rank * world
        )));
    }
    let device = anchor_views.device();
    // part `p` of every rank, this rank's own tensor where it is this rank's
    let gathered = |p: usize, own: &Tensor<2>| -> Tensor<2> {
        let offset: usize = dims[..p].iter().map(|[a, b]| a * b).sum();
        let [rows, cols] = dims[p];
        let ts = (0..world)
            .map(|k| {
                if k == rank {
                    own.clone()
                } else {
                    let at = k * per_rank + offset;
                    Tensor::from_data(
                        TensorData::new(all[at..at + rows * cols].to_vec(), [rows, cols]),
                        &device,
                    )
                }
            })
            .collect();
        Tensor::cat(ts, 0)
    };
    let views_all = gathered(0, anchor_views);
    let supports_all = gathered(1, anchor_supports);
    let target_views_all = gathered(2, &target_views.clone().detach()).detach();
    let target_supports_all = gathered(3, &target_supports.clone().detach()).detach();
    // the labels of every rank's supports, classes x world columns
    let [ns, classes] = labels.dims();
    let all_labels = labels_across_ranks(
        classes,
        ns / (c.supervised_views * classes),
        c.supervised_views,
        world,
        c.unique_classes_per_rank,
        c.label_smoothing,
    );
    let labels_all = Tensor::<2>::from_data(
        TensorData::new(all_labels, [ns * world, classes * world]),
        &device,
    )
    .detach();
    let loss = c.loss();
    let rows = dims[2][0];
    let targets: Vec<Tensor<2>> = (0..world)
        .map(|k| {
            loss.targets(
                target_views_all.clone().narrow(0, k * rows, rows),
                target_supports_all.clone(),
                labels_all.clone(),
            )
        })
        .collect();
    Ok(loss.forward_with_targets(views_all, supports_all, Tensor::cat(targets, 0), labels_all))
}

/// Reads an exported PAWS encoder, a training checkpoint's or an official PAWS checkpoint's: the
/// encoder and its run's settings.
pub fn load_encoder(bytes: Vec<u8>, device: &Device) -> Result<(PawsEncoder, PawsConfig)> {
    let (cfg, shape, sd) = read_encoder_file(bytes)?;
    Ok((PawsEncoder::from_state_dict(&shape, sd, device)?, cfg))
}

/// An exported PAWS encoder, a training checkpoint's, or the encoder of an official PAWS
/// checkpoint (suncet's `.pth.tar`, see [`super::official`]), unbuilt: its run's settings, its
/// shape and its tensors (official keys). The bytes are taken, not borrowed: a checkpoint's are
/// moved into the PyTorch reader instead of copied.
pub fn read_encoder_file(bytes: Vec<u8>) -> Result<(PawsConfig, EncoderConfig, StateDict)> {
    if crate::weights::is_pytorch_file(&bytes) {
        return super::official::read_official_encoder(bytes);
    }
    let bytes = bytes.as_slice();
    let what = "PAWS encoder";
    let meta = run_file::metadata(
        bytes,
        PAWS_FORMAT,
        what,
        "not a dino-rs PAWS file (dino paws writes encoder.safetensors)",
    )?;
    let missing = "no settings in the header";
    let (cfg, shape, sd): (PawsConfig, Option<EncoderConfig>, StateDict) =
        if meta.contains_key(CONFIG_KEY) {
            let shape = match meta.contains_key(ENCODER_KEY) {
                true => Some(run_file::header(&meta, ENCODER_KEY, what, missing)?),
                false => None,
            };
            (
                run_file::header(&meta, CONFIG_KEY, what, missing)?,
                shape,
                run_file::read_tensors(bytes, "")?.0,
            )
        } else {
            // a training checkpoint: its encoder
            let h: RunHeader = run_file::header(&meta, RUN_KEY, what, missing)?;
            (
                h.config,
                h.encoder,
                run_file::read_tensors(bytes, "encoder.")?.0,
            )
        };
    // files of earlier versions: the shape from the settings
    let shape = match shape {
        Some(s) => s,
        None => cfg.encoder()?,
    };
    Ok((cfg, shape, sd))
}

/// Each support view classified by soft nearest neighbours over the *other* support views
/// (itself left out): the share whose most probable class is its own, in percent.
pub(crate) fn support_accuracy(z: &RawTensor, labels: &[f32], classes: usize) -> f64 {
    let (n, d) = (z.shape[0], z.shape[1]);
    let norm: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            let r = &z.data[i * d..(i + 1) * d];
            let nn = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            r.iter().map(|v| v / nn).collect()
        })
        .collect();
    let own = |i: usize| argmax(&labels[i * classes..(i + 1) * classes]);
    let mut correct = 0;
    for i in 0..n {
        let mut votes = vec![0f32; classes];
        for j in (0..n).filter(|&j| j != i) {
            let sim: f32 = norm[i].iter().zip(&norm[j]).map(|(a, b)| a * b).sum();
            // softmax weights at tau 0.1; a common scale does not change the argmax
            let w = ((sim - 1.0) / 0.1).exp();
            for (v, l) in votes
                .iter_mut()
                .zip(&labels[j * classes..(j + 1) * classes])
            {
                *v += w * l;
            }
        }
        if argmax(&votes) == own(i) {
            correct += 1;
        }
    }
    100.0 * correct as f64 / n.max(1) as f64
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::MIN),
            |best, (i, &x)| if x > best.1 { (i, x) } else { best },
        )
        .0
}

/// What [`PawsTrainer::step_inspected`] shows before the update.
pub struct StepInternals<'a> {
    /// Projections and predictions of every view, in input order (supports, large, small).
    pub h: &'a Tensor<2>,
    pub z: &'a Tensor<2>,
    /// The gradient of the loss for every parameter.
    pub grads: &'a GradientsParams,
    /// The encoder the gradients belong to.
    pub encoder: &'a PawsEncoder,
}

/// What one iteration reports.
#[derive(Clone, Copy, Debug)]
pub struct PawsStepStats {
    pub loss: f64,
    pub xent: f64,
    pub me_max: f64,
    pub lr: f64,
    pub support_acc: f64,
}

impl TrainRun for PawsTrainer {
    type Batch = PawsBatch;

    fn iteration(&self) -> usize {
        self.iteration
    }

    fn niter_per_epoch(&self) -> usize {
        self.niter_per_epoch
    }

    fn total_iterations(&self) -> usize {
        self.cfg.epochs * self.niter_per_epoch
    }

    fn step(&mut self, batch: &PawsBatch) -> Result<Metrics> {
        let s = PawsTrainer::step(self, batch)?;
        Ok(vec![
            ("loss", s.loss),
            ("xent", s.xent),
            ("me_max", s.me_max),
            ("support_acc", s.support_acc),
            ("lr", s.lr),
        ])
    }

    fn images_per_step(&self, loaded: usize) -> usize {
        // every rank trains on its own unlabelled batch (suncet's per-rank batch size)
        loaded * self.rank_and_world().1
    }

    fn checkpoint_bytes(&self) -> Result<Vec<u8>> {
        PawsTrainer::checkpoint_bytes(self)
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

    /// `encoder.safetensors`: the encoder under the official keys (what `dino snn` loads).
    fn export(&self, dir: &RunDir) -> Result<()> {
        crate::atomic_write(&dir.0.join("encoder.safetensors"), &self.encoder_bytes()?)
    }

    fn log_key(key: &str) -> String {
        match key {
            "img_per_s" => key.to_string(),
            k => format!("train_{k}"),
        }
    }
}
