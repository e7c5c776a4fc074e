//! The synthetic DINO-like descriptors every library is measured on (see the binary's doc):
//! made block by block from per-block seeds, so that the streamed measurement can make any
//! block again without holding the whole collection.

use dino_core::cpu::matmul::{Epilogue, matmul};
use dino_core::features::l2_normalize;
use rand::Rng;
use rayon::prelude::*;

/// Rows generated at a time (each block from its own seed, so any block can be made again
/// alone: the streamed measurement regenerates what it needs).
pub(crate) const BLOCK: usize = 4096;

/// Synthetic DINO-like descriptors, `[n, dim]`, L2-normalised (see the module doc), made
/// block by block.
pub(crate) struct Synthetic {
    pub(crate) n: usize,
    pub(crate) dim: usize,
    latent: usize,
    seed: u64,
    /// `[latent, dim]`
    basis: Vec<f32>,
    /// per latent direction: sqrt(1/i)
    scale: Vec<f32>,
    clusters: usize,
    /// `[clusters, latent]`
    centres: Vec<f32>,
}

impl Synthetic {
    pub(crate) fn new(n: usize, dim: usize, latent: usize, seed: u64) -> Self {
        let mut rng = dino_core::rng::seeded(seed);
        let basis: Vec<f32> = dino_core::rng::normal(&mut rng, latent * dim, 0.0, 1.0)
            .into_iter()
            .map(|v| v / (dim as f32).sqrt())
            .collect();
        let scale: Vec<f32> = (0..latent).map(|i| (1.0 / (i + 1) as f32).sqrt()).collect();
        let clusters = (n / 50).max(10);
        let centres: Vec<f32> = dino_core::rng::normal(&mut rng, clusters * latent, 0.0, 1.0)
            .chunks_exact(latent)
            .flat_map(|c| c.iter().zip(&scale).map(|(v, s)| v * s).collect::<Vec<_>>())
            .collect();
        Synthetic {
            n,
            dim,
            latent,
            seed,
            basis,
            scale,
            clusters,
            centres,
        }
    }

    pub(crate) fn blocks(&self) -> usize {
        self.n.div_ceil(BLOCK)
    }

    /// The rows of block `b` (rows `b * BLOCK ..`) into `rows`.
    fn block_into(&self, b: usize, rows: &mut [f32]) {
        let (dim, latent_dims) = (self.dim, self.latent);
        let noise = 0.033f32;
        let m = rows.len() / dim;
        let mut rng = dino_core::rng::seeded(dino_core::rng::mix(self.seed, b as u64, 1));
        let mut z = vec![0f32; m * latent_dims];
        let mut dup_of = vec![usize::MAX; m];
        for r in 0..m {
            if r > 0 && rng.random::<f32>() < 0.02 {
                // a near-duplicate of an earlier row of this block
                let src = rng.random_range(0..r);
                dup_of[r] = src;
                let (a, b) = z.split_at_mut(r * latent_dims);
                b[..latent_dims].copy_from_slice(&a[src * latent_dims..(src + 1) * latent_dims]);
                continue;
            }
            let c = rng.random_range(0..self.clusters);
            let e = dino_core::rng::normal(&mut rng, latent_dims, 0.0, 0.6);
            for i in 0..latent_dims {
                z[r * latent_dims + i] = self.centres[c * latent_dims + i] + e[i] * self.scale[i];
            }
        }
        matmul(
            &z,
            m,
            latent_dims,
            &self.basis,
            dim,
            rows,
            Epilogue::Bias(&vec![0f32; dim]),
        );
        let eps = dino_core::rng::normal(&mut rng, m * dim, 0.0, 1.0);
        for (r, row) in rows.chunks_exact_mut(dim).enumerate() {
            let s = if dup_of[r] == usize::MAX {
                noise
            } else {
                noise * 0.3
            };
            for (v, e) in row.iter_mut().zip(&eps[r * dim..(r + 1) * dim]) {
                *v += s * e;
            }
        }
        l2_normalize(rows, dim);
    }

    /// Rows `start..end` (whole blocks: `start` a multiple of [`BLOCK`]), blocks made in
    /// parallel.
    pub(crate) fn rows(&self, start: usize, end: usize) -> Vec<f32> {
        debug_assert!(start.is_multiple_of(BLOCK) && end <= self.n);
        let mut out = vec![0f32; (end - start) * self.dim];
        out.par_chunks_mut(BLOCK * self.dim)
            .enumerate()
            .for_each(|(i, rows)| self.block_into(start / BLOCK + i, rows));
        out
    }
}

/// All `n` synthetic rows, `[n, dim]`.
pub(crate) fn synthetic(n: usize, dim: usize, latent: usize, seed: u64) -> Vec<f32> {
    Synthetic::new(n, dim, latent, seed).rows(0, n)
}
