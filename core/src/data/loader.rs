//! Batches of multi-crop views for training: a seeded shuffle per epoch (as
//! `DistributedSampler(seed, epoch)`), drop-last batches, crops made on worker threads ahead
//! of the training step, unreadable images skipped (with a warning, counted) and replaced.

use std::sync::{Arc, Mutex};

use image::RgbImage;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::Result;
use crate::augment::{MultiCropConfig, multi_crop};
use crate::imaging::normalize_chw;
pub use crate::rng::mix;

/// Where images come from: indexable, decodable on any thread.
pub trait ImageSource: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Decoded RGB image `i`, or a message saying why not.
    fn load(&self, i: usize) -> std::result::Result<RgbImage, String>;
    fn name(&self, i: usize) -> String;
}

impl ImageSource for super::ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn load(&self, i: usize) -> std::result::Result<RgbImage, String> {
        crate::imaging::load_image(&self.files[i]).map_err(|e| e.to_string())
    }
    fn name(&self, i: usize) -> String {
        self.files[i].display().to_string()
    }
}

/// One training batch, crop-major (`torch.cat` of the per-crop batches), normalised CHW.
#[derive(Clone, Debug)]
pub struct CropBatch {
    /// `[2 * B, 3, G, G]`
    pub globals: Vec<f32>,
    /// `[L * B, 3, l, l]` (empty without local crops)
    pub locals: Vec<f32>,
    pub batch: usize,
}

impl CropBatch {
    /// Images `k * B / n .. (k + 1) * B / n` of every crop, in the same layout: the part of the
    /// batch that device `k` of `n` trains on (as `DistributedSampler` gives each rank its own
    /// images). `local_crops`: local crops per image.
    pub fn shard(&self, k: usize, n: usize, local_crops: usize) -> Result<CropBatch> {
        if n == 0 || k >= n || !self.batch.is_multiple_of(n) {
            return Err(crate::Error::Input(format!(
                "a batch of {} images cannot be split into {n} equal parts (part {k})",
                self.batch
            )));
        }
        let s = self.batch / n;
        let rows = |data: &[f32], crops: usize| -> Vec<f32> {
            if crops == 0 || data.is_empty() {
                return Vec::new();
            }
            let row = data.len() / (crops * self.batch);
            (0..crops)
                .flat_map(|c| {
                    let start = (c * self.batch + k * s) * row;
                    data[start..start + s * row].iter().copied()
                })
                .collect()
        };
        Ok(CropBatch {
            globals: rows(&self.globals, 2),
            locals: rows(&self.locals, local_crops),
            batch: s,
        })
    }
}

/// Multi-crop batches over an image source.
pub struct MultiCropLoader {
    source: Arc<dyn ImageSource>,
    cfg: MultiCropConfig,
    batch: usize,
    seed: u64,
    /// Passes over the images per epoch (small data: several views per epoch).
    repeats: usize,
    bad: Arc<Mutex<Vec<usize>>>,
    /// `(rank, world)`: this process builds only its share of every batch.
    shard: (usize, usize),
}

/// A warning about an image that could not be used.
#[derive(Clone, Debug)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

impl MultiCropLoader {
    pub fn new(
        source: Arc<dyn ImageSource>,
        cfg: MultiCropConfig,
        batch: usize,
        seed: u64,
        repeats: usize,
    ) -> Result<Self> {
        cfg.validate()?;
        let n = source.len() * repeats.max(1);
        if batch == 0 || n < batch {
            return Err(crate::Error::Data(format!(
                "a batch of {batch} needs at least that many images per epoch; the data has {} \
                 ({} images x {} repeats)",
                n,
                source.len(),
                repeats.max(1)
            )));
        }
        Ok(Self {
            source,
            cfg,
            batch,
            seed,
            repeats: repeats.max(1),
            bad: Arc::new(Mutex::new(Vec::new())),
            shard: (0, 1),
        })
    }

    /// Builds only the share of rank `rank` of `world` of every batch: positions
    /// `rank * batch / world ..` of each batch, with the crops a single process would draw
    /// for them (the crops depend only on seed, epoch and position), so the ranks' shares
    /// together are the one-process batch.
    pub fn with_shard(mut self, rank: usize, world: usize) -> Result<Self> {
        if world == 0 || rank >= world || !self.batch.is_multiple_of(world) {
            return Err(crate::Error::Config(format!(
                "a batch of {} images cannot be shared by {world} processes (rank {rank})",
                self.batch
            )));
        }
        self.shard = (rank, world);
        Ok(self)
    }

    /// Iterations per epoch (the last incomplete batch is dropped).
    pub fn niter_per_epoch(&self) -> usize {
        self.source.len() * self.repeats / self.batch
    }

    /// The shuffled sample order of an epoch.
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let n = self.source.len();
        let mut order: Vec<usize> = (0..n * self.repeats).map(|i| i % n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
            self.seed,
            epoch as u64,
            u64::MAX,
        )));
        order
    }

    /// Builds batch `it` of `epoch` (deterministic: the crops depend only on seed, epoch and
    /// position). Returns the batch and the images skipped while building it.
    pub fn batch(
        &self,
        epoch: usize,
        it: usize,
        order: &[usize],
    ) -> Result<(CropBatch, Vec<Skipped>)> {
        let (rank, world) = self.shard;
        let b = self.batch / world;
        let first = it * self.batch + rank * b;
        let positions: Vec<usize> = (first..first + b).collect();
        let work = |pos: &usize| -> Result<(Vec<RgbImage>, Vec<Skipped>)> {
            let mut skipped = Vec::new();
            let n = order.len();
            for attempt in 0..n {
                // a replacement for an unreadable image: a fixed stride through the order
                let idx = order[(pos + attempt * 7919) % n];
                if self.bad.lock().expect("lock").contains(&idx) {
                    continue;
                }
                match self.source.load(idx) {
                    Ok(img) => {
                        let mut rng =
                            ChaCha8Rng::seed_from_u64(mix(self.seed, epoch as u64, *pos as u64));
                        return Ok((multi_crop(&img, &self.cfg, &mut rng)?, skipped));
                    }
                    Err(reason) => {
                        self.bad.lock().expect("lock").push(idx);
                        skipped.push(Skipped {
                            name: self.source.name(idx),
                            reason,
                        });
                    }
                }
            }
            Err(crate::Error::Data(
                "no readable image left in the data".into(),
            ))
        };
        #[cfg(feature = "parallel")]
        let per_image: Vec<Result<(Vec<RgbImage>, Vec<Skipped>)>> = {
            use rayon::prelude::*;
            positions.par_iter().map(work).collect()
        };
        #[cfg(not(feature = "parallel"))]
        let per_image: Vec<Result<(Vec<RgbImage>, Vec<Skipped>)>> =
            positions.iter().map(work).collect();
        let mut crops = Vec::with_capacity(b);
        let mut skipped = Vec::new();
        for r in per_image {
            let (c, s) = r?;
            crops.push(c);
            skipped.extend(s);
        }
        let collect = |range: std::ops::Range<usize>| -> Vec<f32> {
            let mut out = Vec::new();
            for c in range {
                for img in &crops {
                    out.extend(normalize_chw(&img[c]));
                }
            }
            out
        };
        let batch = CropBatch {
            globals: collect(0..2),
            locals: collect(2..self.cfg.ncrops()),
            batch: b,
        };
        Ok((batch, skipped))
    }

    pub fn config(&self) -> &MultiCropConfig {
        &self.cfg
    }

    /// Number of images found unreadable so far.
    pub fn skipped_count(&self) -> usize {
        self.bad.lock().expect("lock").len()
    }
}

/// The loader's batches in order for the training loop ([`crate::train::run::train`]),
/// each epoch's shuffled order computed once.
pub struct MultiCropBatches {
    loader: Arc<MultiCropLoader>,
    order: Option<(usize, Vec<usize>)>,
}

impl MultiCropBatches {
    pub fn new(loader: Arc<MultiCropLoader>) -> Self {
        Self {
            loader,
            order: None,
        }
    }
}

impl crate::train::run::Batches for MultiCropBatches {
    type Batch = CropBatch;

    fn niter_per_epoch(&self) -> usize {
        self.loader.niter_per_epoch()
    }

    fn batch(&mut self, epoch: usize, it: usize) -> Result<(CropBatch, Vec<Skipped>)> {
        if self.order.as_ref().map(|o| o.0) != Some(epoch) {
            self.order = Some((epoch, self.loader.epoch_order(epoch)));
        }
        let order = &self.order.as_ref().expect("set").1;
        self.loader.batch(epoch, it, order)
    }

    fn images(batch: &CropBatch) -> usize {
        batch.batch
    }
}
