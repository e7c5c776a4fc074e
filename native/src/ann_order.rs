//! The order in which many rows go into the HNSW graph, and many queries search it.
//!
//! A first build inserts every row and a dedup then searches once per row. Each insertion or
//! search reads a few hundred graph nodes (and a search then the full rows of its
//! candidates, 6 KiB each at 1536 dimensions) from all over memory: at a million rows that
//! is hundreds of gigabytes of random reads, and the work waits on memory, not arithmetic.
//! Rows that are close visit nearly the same nodes and candidates, so when they come in an
//! order where neighbours follow each other, most of those reads are already in the cache.
//! [`similar_together`] puts the rows into cells of similar rows ([`Cells`]: spherical
//! k-means on a sample of the graph's rows, a few seconds) and lists them cell by cell
//! ([`by_cell`]). Only the order of the work changes: every query gets the same search and
//! the same answer, in its own place; rows inserted among their own kind even get denser
//! local links (a higher recall, BENCHMARKS.md).

use dino_core::cpu::matmul::{Epilogue, matmul};

/// Rows in a cell on average: its graph nodes and rows should stay in the caches while its
/// rows are inserted or searched (1,000 rows of 6 KiB are 6 MiB).
const ROWS_PER_CELL: usize = 1_000;

/// Rows the cells are fitted on, per cell.
const SAMPLE_PER_CELL: usize = 16;

/// Lloyd iterations of the fit: the order only needs rough cells.
const ITERATIONS: usize = 6;

/// Unit-length centroids of rows of `dims`, kept transposed (`[dims, count]`) for the
/// product that assigns rows to them.
pub struct Cells {
    dims: usize,
    count: usize,
    centroids_t: Vec<f32>,
}

impl Cells {
    /// Cells for about `n` rows of `dims`, fitted on `sample` (L2-normalised rows of `dims`,
    /// spread over the collection). `None` when there are too few rows for more than one
    /// cell.
    pub fn fit(sample: &[f32], dims: usize, n: usize) -> Option<Self> {
        let m = sample.len() / dims.max(1);
        let count = (n / ROWS_PER_CELL).min(m / 2);
        if dims == 0 || count < 2 {
            return None;
        }
        // start from evenly spaced sample rows
        let mut centroids: Vec<f32> = (0..count)
            .flat_map(|c| {
                let r = c * m / count;
                sample[r * dims..(r + 1) * dims].iter().copied()
            })
            .collect();
        for _ in 0..ITERATIONS {
            let cells = Self::from_centroids(&centroids, dims, count).assign(sample);
            let mut sums = vec![0f32; count * dims];
            for (row, &c) in sample.chunks_exact(dims).zip(&cells) {
                let s = &mut sums[c as usize * dims..(c as usize + 1) * dims];
                s.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
            for (c, s) in sums.chunks_exact(dims).enumerate() {
                let norm = s.iter().map(|v| v * v).sum::<f32>().sqrt();
                // an empty cell keeps its centroid
                if norm > 0.0 {
                    let out = &mut centroids[c * dims..(c + 1) * dims];
                    out.iter_mut().zip(s).for_each(|(o, v)| *o = v / norm);
                }
            }
        }
        Some(Self::from_centroids(&centroids, dims, count))
    }

    fn from_centroids(centroids: &[f32], dims: usize, count: usize) -> Self {
        let mut centroids_t = vec![0f32; dims * count];
        for (c, row) in centroids.chunks_exact(dims).enumerate() {
            for (j, v) in row.iter().enumerate() {
                centroids_t[j * count + c] = *v;
            }
        }
        Cells {
            dims,
            count,
            centroids_t,
        }
    }

    /// How many cells there are.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The cell of each row (rows of `dims`): the centroid of the largest dot product.
    pub fn assign(&self, rows: &[f32]) -> Vec<u32> {
        let m = rows.len() / self.dims;
        let mut cells = Vec::with_capacity(m);
        // in blocks: the scores stay small
        let block = ((1 << 22) / self.count).max(1);
        let mut scores = vec![0f32; block * self.count];
        let zero = vec![0f32; self.count];
        for part in rows.chunks(block * self.dims) {
            let r = part.len() / self.dims;
            let s = &mut scores[..r * self.count];
            matmul(
                part,
                r,
                self.dims,
                &self.centroids_t,
                self.count,
                s,
                Epilogue::Bias(&zero),
            );
            cells.extend(s.chunks_exact(self.count).map(|row| {
                row.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                    .map_or(0, |(c, _)| c as u32)
            }));
        }
        cells
    }
}

/// Rows assigned to their cells at a time, in [`similar_together`].
const ASSIGN_BLOCK: usize = 32_768;

/// The positions `0..m` of `m` rows listed so that similar rows follow each other: cells
/// fitted on an evenly spaced sample of the rows, every row assigned (in blocks), listed
/// cell by cell. `graph_rows(positions)` gives those rows as the graph sees them
/// (L2-normalised rows of `dims`). `None` when there are too few rows for two cells.
pub fn similar_together(
    m: usize,
    dims: usize,
    graph_rows: impl Fn(&[usize]) -> anyhow::Result<Vec<f32>>,
) -> anyhow::Result<Option<Vec<usize>>> {
    let take = (m / ROWS_PER_CELL * SAMPLE_PER_CELL).min(m);
    let sample: Vec<usize> = (0..take).map(|i| i * m / take.max(1)).collect();
    let Some(cells) = Cells::fit(&graph_rows(&sample)?, dims, m) else {
        return Ok(None);
    };
    let mut of = Vec::with_capacity(m);
    let all: Vec<usize> = (0..m).collect();
    for block in all.chunks(ASSIGN_BLOCK) {
        of.extend(cells.assign(&graph_rows(block)?));
    }
    Ok(Some(by_cell(&of)))
}

/// Row numbers listed cell by cell (cells in order, rows of a cell in their own order).
pub fn by_cell(cells: &[u32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..cells.len()).collect();
    order.sort_by_key(|&i| cells[i]);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_group_rows_of_the_same_cluster_and_the_order_is_a_permutation() {
        // 40 clusters of 100 noisy unit rows in 16-d, shuffled
        let (k, per, d) = (40, 100, 16);
        let mut rng = dino_core::rng::seeded(5);
        let centres = dino_core::rng::normal(&mut rng, k * d, 0.0, 1.0);
        let noise = dino_core::rng::normal(&mut rng, k * per * d, 0.0, 0.05);
        let mut truth = Vec::new();
        let mut rows = Vec::new();
        for i in 0..k * per {
            let c = (i * 7919) % k;
            truth.push(c);
            rows.extend((0..d).map(|j| centres[c * d + j] + noise[i * d + j]));
        }
        dino_core::features::l2_normalize(&mut rows, d);
        let n = k * per;
        // cells of ~100 rows: about one a cluster
        let cells = Cells::fit(&rows, d, n * ROWS_PER_CELL / per).unwrap();
        assert_eq!(cells.count(), k);
        let of = cells.assign(&rows);
        // rows of one cluster almost always share a cell
        let mut together = 0;
        for c in 0..k {
            let members: Vec<u32> = (0..n).filter(|&i| truth[i] == c).map(|i| of[i]).collect();
            let mut counts = std::collections::HashMap::new();
            members
                .iter()
                .for_each(|m| *counts.entry(*m).or_insert(0) += 1);
            together += counts.values().max().unwrap();
        }
        assert!(
            together * 10 >= n * 9,
            "{together} of {n} with their cluster"
        );
        let order = by_cell(&of);
        let mut seen = order.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        assert!(order.windows(2).all(|w| of[w[0]] <= of[w[1]]));
        // the same through similar_together, which asks for the rows it needs
        let asked = std::cell::Cell::new(0);
        let listed = similar_together(n, d, |ids| {
            asked.set(asked.get() + ids.len());
            Ok(crate::ann::rows_at(&rows, d, ids))
        })
        .unwrap()
        .unwrap();
        let mut seen = listed.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        assert!(asked.get() <= n + 16 * k, "{} rows asked for", asked.get());
        // too few rows for two cells
        assert!(Cells::fit(&rows[..d], d, 10).is_none());
    }
}
