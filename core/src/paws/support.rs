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
    let c = classes_per_batch;
    let off = smoothing / c as f64;
    let on = 1.0 - smoothing + off;
    let rows = c * images_per_class;
    let mut m = vec![off as f32; rows * c];
    for r in 0..rows {
        m[r * c + r % c] = on as f32;
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

    /// Support batch `k` of the run (any `k`, deterministic): `classes_per_batch *
    /// images_per_class` labelled indices, class-interleaved, and the class of each row's
    /// column in the labels matrix (the classes drawn, in column order).
    ///
    /// As the official sampler, batch `k` belongs to a pass over the classes (`classes /
    /// classes_per_batch` batches, a fresh permutation each), and images of a class are drawn in
    /// a per-pass shuffled order, cycling when a class has fewer images than a pass needs.
    pub fn batch(&self, k: usize) -> (Vec<usize>, Vec<usize>) {
        self.batch_of_rank(k, 0, 1)
    }

    /// Batch `k` of `rank` in a run of `world` processes: every rank draws the same classes
    /// (`unique_classes_per_rank: false`, the official setting) and its own share of each
    /// class's shuffled images (the official sampler's `len // world_size` slices; all of them
    /// when a class has fewer images than ranks).
    pub fn batch_of_rank(&self, k: usize, rank: usize, world: usize) -> (Vec<usize>, Vec<usize>) {
        let per_pass = self.classes() / self.classes_per_batch;
        let (pass, j) = (k / per_pass, k % per_pass);
        let mut classes: Vec<usize> = (0..self.classes()).collect();
        classes.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
            self.seed,
            pass as u64,
            0x5A,
        )));
        let chosen = &classes[j * self.classes_per_batch..(j + 1) * self.classes_per_batch];
        let mut per_class: Vec<Vec<usize>> = Vec::with_capacity(chosen.len());
        for &c in chosen {
            let mut imgs = self.by_class[c].clone();
            imgs.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
                self.seed,
                pass as u64,
                1 + c as u64,
            )));
            let share = imgs.len() / world.max(1);
            if world > 1 && share > 0 {
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
        let (r0, c0) = s.batch_of_rank(3, 0, 2);
        let (r1, c1) = s.batch_of_rank(3, 1, 2);
        assert_eq!(c0, c1);
        assert!(r0.iter().all(|i| !r1.contains(i)), "{r0:?} {r1:?}");
        assert!(ClassStratifiedSampler::new(&labels, 4, 3, 1, 0).is_err());
        assert!(ClassStratifiedSampler::new(&[0, 0, 2], 3, 1, 1, 0).is_err());
    }
}
