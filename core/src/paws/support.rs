//! The labelled support batch of PAWS: suncet's `ClassStratifiedSampler` (each batch takes
//! `classes_per_batch` classes and `images_per_class` images of each, laid out class-interleaved
//! as `[a, b, c, a, b, c, ...]`, classes walked through a fresh permutation, images of a class
//! drawn without replacement until its list runs out) and `make_labels_matrix` (the one-hot
//! rows of that layout, label-smoothed).
//!
//! Deliberate difference: the permutations come from this project's seeded generator
//! (ChaCha8), not PyTorch's `torch.randperm`, so the same seed picks other classes and images
//! than the official code; the structure of every batch is the official one.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::rng::mix;
use crate::{Error, Result};

/// `make_labels_matrix` for one process: `[classes_per_batch * images_per_class, classes]`,
/// row `r` of class `r % classes_per_batch`, `1 - s + s / C` on it and `s / C` elsewhere.
pub fn labels_matrix(
    classes_per_batch: usize,
    images_per_class: usize,
    smoothing: f64,
) -> Vec<f32> {
    // one rank, one view
    labels_across_ranks(classes_per_batch, images_per_class, 1, 1, false, smoothing)
}

/// The labels of every rank's support rows, in the order the ranks' supports are gathered
/// (rank by rank, each `views` copies of its `classes_per_batch * images_per_class` rows):
/// `[world * views * C * I, C * world]`, `make_labels_matrix(world_size, unique_classes)`.
/// Without `unique` a row's class is its slot `r % C` on every rank (the other `C x (world - 1)`
/// columns hold only the smoothing, `s / C`); with `unique` rank `k`'s rows take columns
/// `k C .. (k + 1) C` and the smoothing is spread over all `C x world` columns.
///
/// Deliberate difference: suncet repeats the whole `[world * C * I]` matrix once per view
/// (`torch.cat([labels_matrix] * supervised_views)`), view-major, while the gathered supports
/// are rank-major; the two orders agree when the class of a row depends only on its slot (not
/// unique) or when there is one view (the ImageNet config, the one with unique classes), and
/// here the rows follow the supports' order in every case.
pub fn labels_across_ranks(
    classes_per_batch: usize,
    images_per_class: usize,
    views: usize,
    world: usize,
    unique: bool,
    smoothing: f64,
) -> Vec<f32> {
    let c = classes_per_batch;
    let cols = c * world;
    let off = if unique {
        smoothing / cols as f64
    } else {
        smoothing / c as f64
    };
    let on = 1.0 - smoothing + off;
    let per_rank = views * c * images_per_class;
    let mut m = vec![off as f32; world * per_rank * cols];
    for k in 0..world {
        for r in 0..per_rank {
            let col = if unique { k * c } else { 0 } + r % c;
            m[(k * per_rank + r) * cols + col] = on as f32;
        }
    }
    m
}

/// Draws support batches from the labelled images of every class.
#[derive(Clone, Debug)]
pub struct ClassStratifiedSampler {
    /// Indices (into the labelled set) of each class's images.
    pub by_class: Vec<Vec<usize>>,
    pub classes_per_batch: usize,
    pub images_per_class: usize,
    seed: u64,
}

impl ClassStratifiedSampler {
    /// `labels[i]` is the class of labelled image `i`, in `0..classes`.
    pub fn new(
        labels: &[usize],
        classes: usize,
        classes_per_batch: usize,
        images_per_class: usize,
        seed: u64,
    ) -> Result<Self> {
        let mut by_class = vec![Vec::new(); classes];
        for (i, &l) in labels.iter().enumerate() {
            by_class
                .get_mut(l)
                .ok_or_else(|| Error::Data(format!("label {l} of a {classes}-class set")))?
                .push(i);
        }
        if classes_per_batch == 0 || images_per_class == 0 {
            return Err(Error::Config(
                "a support batch needs at least one class and one image per class".into(),
            ));
        }
        if !classes.is_multiple_of(classes_per_batch) {
            // as the official sampler asserts: every permutation splits into whole batches
            return Err(Error::Config(format!(
                "{classes} classes do not split into support batches of {classes_per_batch} \
                 classes (classes_per_batch must divide the number of classes)"
            )));
        }
        if let Some((c, _)) = by_class.iter().enumerate().find(|(_, v)| v.is_empty()) {
            return Err(Error::Data(format!(
                "class {c} has no labelled image: every class needs at least one"
            )));
        }
        Ok(Self {
            by_class,
            classes_per_batch,
            images_per_class,
            seed,
        })
    }

    pub fn classes(&self) -> usize {
        self.by_class.len()
    }

    /// The most ranks that can each draw their own classes for a batch.
    pub fn max_unique_ranks(&self) -> usize {
        self.classes() / self.classes_per_batch
    }

    /// Support batch `k` of the run (any `k`, deterministic): `classes_per_batch *
    /// images_per_class` labelled indices, class-interleaved, and the class of each row's
    /// column in the labels matrix (the classes drawn, in column order).
    ///
    /// As the official sampler, batch `k` belongs to a pass over the classes (`classes /
    /// classes_per_batch` batches, a fresh permutation each), and images of a class are drawn in
    /// a per-pass shuffled order, cycling when a class has fewer images than a pass needs.
    pub fn batch(&self, k: usize) -> (Vec<usize>, Vec<usize>) {
        self.batch_of_rank(k, 0, 1, false)
    }

    /// Batch `k` of `rank` in a run of `world` processes. Without `unique` (suncet's
    /// `unique_classes_per_rank: false`, the CIFAR-10 setting) every rank draws the same
    /// classes and its own share of each class's shuffled images (the official sampler's
    /// `len // world_size` slices; all of them when a class has fewer images than ranks).
    /// With `unique` (the ImageNet setting) a pass over the classes gives each rank its own
    /// `classes_per_batch` of them per batch, from all of their images; the classes left over
    /// when `classes_per_batch x world` does not divide the classes wait for the next pass, as
    /// in the official sampler. `world` must not exceed [`Self::max_unique_ranks`] then.
    pub fn batch_of_rank(
        &self,
        k: usize,
        rank: usize,
        world: usize,
        unique: bool,
    ) -> (Vec<usize>, Vec<usize>) {
        let world = world.max(1);
        let group = if unique { world } else { 1 };
        let per_pass = (self.classes() / (self.classes_per_batch * group)).max(1);
        let (pass, j) = (k / per_pass, k % per_pass);
        let mut classes: Vec<usize> = (0..self.classes()).collect();
        classes.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
            self.seed,
            pass as u64,
            0x5A,
        )));
        let first = (j * group + if unique { rank } else { 0 }) * self.classes_per_batch;
        let chosen = &classes[first..first + self.classes_per_batch];
        let mut per_class: Vec<Vec<usize>> = Vec::with_capacity(chosen.len());
        for &c in chosen {
            let mut imgs = self.by_class[c].clone();
            imgs.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
                self.seed,
                pass as u64,
                1 + c as u64,
            )));
            let share = imgs.len() / world;
            if !unique && world > 1 && share > 0 {
                imgs = imgs[rank * share..(rank + 1) * share].to_vec();
            }
            per_class.push(imgs);
        }
        let mut rows = Vec::with_capacity(self.classes_per_batch * self.images_per_class);
        for i in 0..self.images_per_class {
            for imgs in &per_class {
                rows.push(imgs[i % imgs.len()]);
            }
        }
        (rows, chosen.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_matrix_is_official() {
        // make_labels_matrix(3, 2, world_size=1, smoothing=0.1)
        let m = labels_matrix(3, 2, 0.1);
        let (off, on) = (0.1f32 / 3.0, 0.9 + 0.1f32 / 3.0);
        assert_eq!(m.len(), 6 * 3);
        for r in 0..6 {
            for c in 0..3 {
                let want = if c == r % 3 { on } else { off };
                assert!((m[r * 3 + c] - want).abs() < 1e-7);
            }
        }
    }

    /// suncet's `make_labels_matrix`, transcribed, then `torch.cat` over views (view-major).
    fn official(c: usize, i: usize, world: usize, unique: bool, s: f64, views: usize) -> Vec<f32> {
        let (local, cols) = (c * i, c * world);
        let off = if unique {
            s / cols as f64
        } else {
            s / c as f64
        };
        let mut m = vec![off as f32; world * local * cols];
        for r in 0..world * local {
            let col = if unique { (r / local) * c } else { 0 } + r % c;
            m[r * cols + col] = (1.0 - s + off) as f32;
        }
        m.repeat(views)
    }

    #[test]
    fn labels_across_ranks_are_official_where_the_orders_agree() {
        for (world, unique, views) in [
            (1, false, 1),
            (2, false, 2),
            (3, false, 1),
            (2, true, 1),
            (3, true, 1),
        ] {
            let got = labels_across_ranks(3, 2, views, world, unique, 0.1);
            assert_eq!(
                got,
                official(3, 2, world, unique, 0.1, views),
                "{world} ranks, unique {unique}, {views} views"
            );
        }
        // unique with two views: each rank's rows (rank-major, as gathered) on its own columns
        let m = labels_across_ranks(2, 1, 2, 2, true, 0.0);
        let rows: Vec<usize> = m
            .chunks_exact(4)
            .map(|r| r.iter().position(|&v| v == 1.0).unwrap())
            .collect();
        assert_eq!(rows, vec![0, 1, 0, 1, 2, 3, 2, 3]);
    }

    #[test]
    fn batches_are_class_interleaved_and_cover_the_classes() {
        let labels: Vec<usize> = (0..40).map(|i| i % 4).collect();
        let s = ClassStratifiedSampler::new(&labels, 4, 2, 3, 7).unwrap();
        let mut seen = Vec::new();
        for k in 0..2 {
            let (rows, classes) = s.batch(k);
            assert_eq!((rows.len(), classes.len()), (6, 2));
            for (r, &i) in rows.iter().enumerate() {
                assert_eq!(labels[i], classes[r % 2], "row {r}");
            }
            seen.extend(classes);
        }
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3], "one pass uses every class once");
        assert_eq!(s.batch(5), s.batch(5), "deterministic");
        // two ranks: the same classes, disjoint images
        let (r0, c0) = s.batch_of_rank(3, 0, 2, false);
        let (r1, c1) = s.batch_of_rank(3, 1, 2, false);
        assert_eq!(c0, c1);
        assert!(r0.iter().all(|i| !r1.contains(i)), "{r0:?} {r1:?}");
        // unique classes per rank: in each batch the ranks' classes are disjoint, every row
        // is of its column's class, and a pass (here one batch of 2 x 2 classes) covers all
        assert_eq!(s.max_unique_ranks(), 2);
        for k in 0..3 {
            let (r0, c0) = s.batch_of_rank(k, 0, 2, true);
            let (r1, c1) = s.batch_of_rank(k, 1, 2, true);
            assert!(c0.iter().all(|c| !c1.contains(c)), "{c0:?} {c1:?}");
            let mut all: Vec<usize> = c0.iter().chain(&c1).copied().collect();
            all.sort();
            assert_eq!(all, vec![0, 1, 2, 3]);
            for (rows, cl) in [(&r0, &c0), (&r1, &c1)] {
                for (r, &i) in rows.iter().enumerate() {
                    assert_eq!(labels[i], cl[r % 2]);
                }
            }
        }
        assert_ne!(
            s.batch_of_rank(0, 0, 2, true).1,
            s.batch_of_rank(1, 0, 2, true).1,
            "a fresh permutation each pass"
        );
        assert!(ClassStratifiedSampler::new(&labels, 4, 3, 1, 0).is_err());
        assert!(ClassStratifiedSampler::new(&[0, 0, 2], 3, 1, 1, 0).is_err());
    }
}
