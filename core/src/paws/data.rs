//! The batches of a PAWS iteration, as suncet's `data_manager.py` makes them for CIFAR-10:
//! `unsupervised_batch_size` images of the unlabelled set in a seeded per-epoch order, each
//! as 2 large views and `multicrop` small crops, and a class-stratified support batch of the
//! labelled set with `supervised_views` views of each image. Every view is a
//! `RandomResizedCrop`, a horizontal flip (p = 0.5) and the colour distortion (colour jitter
//! 0.8s/0.8s/0.8s/0.2s with p = 0.8, solarize at a random threshold with p = 0.2, equalize with
//! p = 0.2), normalised per channel. Unreadable images are skipped and replaced, as DINO's
//! loader does.

use std::sync::Arc;

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::PawsConfig;
use super::support::{ClassStratifiedSampler, labels_matrix};
use crate::augment::{pil_ops, resized_crop, sample_crop};
use crate::data::{ImageSource, Skipped};
use crate::rng::mix;
use crate::train::run::Batches;
use crate::{Error, Result};

const RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// Normalised CHW views of one iteration, on the host.
#[derive(Clone, Debug)]
pub struct PawsBatch {
    /// `[supervised_views * S, 3, L, L]`, view-major (view 0 of every support image, then view
    /// 1, ...), S = classes_per_batch x images per class.
    pub supports: Vec<f32>,
    /// `[supervised_views * S, classes_per_batch]`: the labels matrix once per view.
    pub labels: Vec<f32>,
    /// The class of each column of `labels` (indices into the labelled set's classes).
    pub classes: Vec<usize>,
    /// `[2 * U, 3, L, L]`: view 0 of every unlabelled image, then view 1.
    pub large: Vec<f32>,
    /// `[multicrop * U, 3, s, s]`, crop-major.
    pub small: Vec<f32>,
    /// U.
    pub unlabelled: usize,
}

/// The labelled images: a source and the class of each of its images.
pub struct LabelledSet {
    pub source: Arc<dyn ImageSource>,
    pub labels: Vec<usize>,
    pub classes: Vec<String>,
}

impl LabelledSet {
    /// The class-stratified sampler of support batches over these images.
    pub fn sampler(
        &self,
        classes_per_batch: usize,
        images_per_class: usize,
        seed: u64,
    ) -> Result<ClassStratifiedSampler> {
        if self.labels.len() != self.source.len() {
            return Err(Error::Data("one label per labelled image is needed".into()));
        }
        ClassStratifiedSampler::new(
            &self.labels,
            self.classes.len(),
            classes_per_batch,
            images_per_class,
            seed,
        )
    }

    /// Labelled image `idx`: a labelled image has no stand-in of the same class, so an
    /// unreadable one is an error (not skipped as an unlabelled one is).
    pub fn image(&self, idx: usize) -> Result<RgbImage> {
        self.source.load(idx).map_err(|reason| {
            Error::Data(format!(
                "labelled image {}: {reason} (fix or remove it)",
                self.source.name(idx)
            ))
        })
    }
}

/// The view transform of `data_manager.py` (`_make_cifar10_transforms` / the multi-crop one).
#[derive(Clone, Copy, Debug)]
pub struct ViewTransform {
    pub size: u32,
    pub scale: (f64, f64),
    /// Colour distortion strength s.
    pub strength: f64,
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

impl ViewTransform {
    /// One augmented view, normalised CHW.
    pub fn apply(&self, img: &RgbImage, rng: &mut impl Rng) -> Result<Vec<f32>> {
        let b = sample_crop(rng, img.width(), img.height(), self.scale, RATIO);
        let mut out = resized_crop(img, b, self.size)?;
        if rng.random::<f64>() < 0.5 {
            out = pil_ops::hflip(&out);
        }
        let s = self.strength;
        if rng.random::<f64>() < 0.8 {
            out = pil_ops::color_jitter(&out, [0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s], rng);
        }
        if rng.random::<f64>() < 0.2 {
            out = pil_ops::solarize_at(&out, rng.random::<f64>() * 256.0);
        }
        if rng.random::<f64>() < 0.2 {
            out = pil_ops::equalize(&out);
        }
        Ok(normalize(&out, self.mean, self.std))
    }
}

/// `ToTensor` then `Normalize(mean, std)`: CHW floats.
pub fn normalize(img: &RgbImage, mean: [f64; 3], std: [f64; 3]) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0f32; 3 * w * h];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * w * h + i] = ((p.0[c] as f64 / 255.0 - mean[c]) / std[c]) as f32;
        }
    }
    out
}

/// The batches of a run (owned by the training loop's loader thread).
pub struct PawsBatches {
    unlabelled: Arc<dyn ImageSource>,
    labelled: Arc<LabelledSet>,
    sampler: ClassStratifiedSampler,
    cfg: PawsConfig,
    order: Option<(usize, Vec<usize>)>,
    bad: Vec<usize>,
    /// This process's rank and the number of ranks (0, 1 alone).
    rank: usize,
    world: usize,
}

impl PawsBatches {
    pub fn new(
        unlabelled: Arc<dyn ImageSource>,
        labelled: Arc<LabelledSet>,
        cfg: &PawsConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        let u = cfg.unsupervised_batch_size;
        if unlabelled.len() < u {
            return Err(Error::Data(format!(
                "an unlabelled batch of {u} needs at least that many images; the data has {}",
                unlabelled.len()
            )));
        }
        let sampler = labelled.sampler(
            cfg.classes_per_batch,
            cfg.supervised_imgs_per_class,
            cfg.seed,
        )?;
        Ok(Self {
            unlabelled,
            labelled,
            sampler,
            cfg: cfg.clone(),
            order: None,
            bad: Vec::new(),
            rank: 0,
            world: 1,
        })
    }

    /// The batches of `rank` among `world` processes, as the official DDP run: each rank its
    /// own `unsupervised_batch_size` unlabelled images of every iteration (an epoch is a pass
    /// over the unlabelled set by all ranks together) and its own share of each support class.
    pub fn for_rank(mut self, rank: usize, world: usize) -> Result<Self> {
        if world == 0 || rank >= world {
            return Err(Error::Config(format!("rank {rank} of a world of {world}")));
        }
        let need = self.cfg.unsupervised_batch_size * world;
        if self.unlabelled.len() < need {
            return Err(Error::Data(format!(
                "{world} ranks x {} unlabelled images per iteration need {need} images; the data \
                 has {}",
                self.cfg.unsupervised_batch_size,
                self.unlabelled.len()
            )));
        }
        if self.cfg.unique_classes_per_rank && world > self.sampler.max_unique_ranks() {
            return Err(Error::Config(format!(
                "unique_classes_per_rank: {world} ranks x {} classes per batch need at least {} \
                 classes; the labelled set has {}",
                self.cfg.classes_per_batch,
                world * self.cfg.classes_per_batch,
                self.sampler.classes()
            )));
        }
        self.rank = rank;
        self.world = world;
        Ok(self)
    }

    fn transforms(&self) -> (ViewTransform, ViewTransform) {
        let c = &self.cfg;
        let t = |size, scale| ViewTransform {
            size,
            scale,
            strength: c.color_jitter_strength,
            mean: c.normalize_mean,
            std: c.normalize_std,
        };
        (
            t(c.crop_size, c.crop_scale),
            t(c.multicrop_size, c.multicrop_scale),
        )
    }

    /// Image `idx` of `source`, or the next readable one along a fixed stride of `order`.
    fn load(
        source: &dyn ImageSource,
        order: &[usize],
        pos: usize,
        bad: &mut Vec<usize>,
        skipped: &mut Vec<Skipped>,
    ) -> Result<RgbImage> {
        let n = order.len();
        for attempt in 0..n {
            let idx = order[(pos + attempt * 7919) % n];
            if bad.contains(&idx) {
                continue;
            }
            match source.load(idx) {
                Ok(img) => return Ok(img),
                Err(reason) => {
                    bad.push(idx);
                    skipped.push(Skipped {
                        name: source.name(idx),
                        reason,
                    });
                }
            }
        }
        Err(Error::Data("no readable image left in the data".into()))
    }
}

impl Batches for PawsBatches {
    type Batch = PawsBatch;

    fn niter_per_epoch(&self) -> usize {
        self.unlabelled.len() / (self.cfg.unsupervised_batch_size * self.world)
    }

    fn batch(&mut self, epoch: usize, it: usize) -> Result<(PawsBatch, Vec<Skipped>)> {
        let c = self.cfg.clone();
        let (large_t, small_t) = self.transforms();
        if self.order.as_ref().map(|o| o.0) != Some(epoch) {
            let mut order: Vec<usize> = (0..self.unlabelled.len()).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
                c.seed,
                epoch as u64,
                u64::MAX,
            )));
            self.order = Some((epoch, order));
        }
        let order = self.order.as_ref().expect("set").1.clone();
        let u = c.unsupervised_batch_size;
        let mut skipped = Vec::new();
        let mut views: Vec<Vec<Vec<f32>>> = vec![Vec::new(); 2 + c.multicrop];
        let first = (it * self.world + self.rank) * u;
        for pos in first..first + u {
            let img = Self::load(&*self.unlabelled, &order, pos, &mut self.bad, &mut skipped)?;
            let mut rng = ChaCha8Rng::seed_from_u64(mix(c.seed, epoch as u64, pos as u64));
            for (v, out) in views.iter_mut().enumerate() {
                let t = if v < 2 { &large_t } else { &small_t };
                out.push(t.apply(&img, &mut rng)?);
            }
        }
        // the support batch of this global iteration
        let git = epoch * self.niter_per_epoch() + it;
        let (rows, classes) =
            self.sampler
                .batch_of_rank(git, self.rank, self.world, c.unique_classes_per_rank);
        let mut support_views: Vec<Vec<f32>> = vec![Vec::new(); c.supervised_views];
        for (r, &idx) in rows.iter().enumerate() {
            let img = self.labelled.image(idx)?;
            let mut rng = ChaCha8Rng::seed_from_u64(mix(
                c.seed ^ 0x5055_5050 ^ self.rank as u64,
                git as u64,
                r as u64,
            ));
            for view in support_views.iter_mut() {
                view.extend(large_t.apply(&img, &mut rng)?);
            }
        }
        let matrix = labels_matrix(
            c.classes_per_batch,
            c.supervised_imgs_per_class,
            c.label_smoothing,
        );
        let flat = |vs: &[Vec<f32>]| vs.iter().flatten().copied().collect::<Vec<f32>>();
        Ok((
            PawsBatch {
                supports: support_views.concat(),
                labels: matrix.repeat(c.supervised_views),
                classes,
                large: [flat(&views[0]), flat(&views[1])].concat(),
                small: views[2..].iter().flat_map(|v| flat(v)).collect(),
                unlabelled: u,
            },
            skipped,
        ))
    }

    fn images(batch: &PawsBatch) -> usize {
        batch.unlabelled
    }
}
