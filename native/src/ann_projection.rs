//! A narrower space for the HNSW graph. Building and searching the graph costs one distance
//! per visited node, and a distance costs one operation per dimension: at 1536 dimensions a
//! million descriptors take 20 minutes to insert on two cores. DINO descriptors hold most of
//! their energy in a few hundred principal directions, so the graph is built on the rows
//! projected onto their top principal components (re-normalised, so the graph still ranks
//! by cosine) and only *proposes* candidates; the caller rescores the candidates with the
//! exact cosine of the full rows, so every reported score is exact and only the recall
//! depends on the projection. The projection is fitted once, on an evenly spaced sample of
//! the collection, and saved with the index: rows added later are projected the same way.

use dino_core::features::{l2_normalize, pca::Pca};

/// How many rows the principal components are fitted on (evenly spaced over the
/// collection): enough for 1536-d covariances, a few seconds on two cores.
pub const FIT_SAMPLE: usize = 20_000;

/// Rows of `dim` -> L2-normalised rows of `dims` (the top principal components).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GraphProjection {
    pca: Pca,
}

impl GraphProjection {
    /// Fits the top `dims` principal components of `rows` (rows of `dim`) on at most
    /// `sample` evenly spaced rows.
    pub fn fit(rows: &[f32], dim: usize, dims: usize, sample: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(dim > 0, "rows of no dimension");
        let n = rows.len() / dim;
        anyhow::ensure!(
            dims > 0 && dims < dim,
            "the graph's dimensions must be in 1..{dim}, got {dims}"
        );
        anyhow::ensure!(
            n > dims,
            "{n} rows are too few to fit {dims} principal components"
        );
        let take = n.min(sample.max(dims + 1));
        let picked: Vec<f32> = (0..take)
            .flat_map(|i| {
                let r = i * n / take;
                rows[r * dim..(r + 1) * dim].iter().copied()
            })
            .collect();
        Ok(GraphProjection {
            pca: Pca::fit(&picked, dim, dims)?,
        })
    }

    /// Width of the rows it takes.
    pub fn dim_in(&self) -> usize {
        self.pca.dim_in
    }

    /// Width of the rows it gives (the graph's).
    pub fn dims(&self) -> usize {
        self.pca.dim_out
    }

    /// Share of the variance of the fitted rows the kept components hold.
    pub fn energy(&self) -> f32 {
        self.pca.energy
    }

    /// Whether a deserialised projection is whole (sizes agree); a saved one is checked
    /// before use.
    pub fn is_consistent(&self) -> bool {
        let p = &self.pca;
        p.dim_out > 0
            && p.dim_out < p.dim_in
            && p.mean.len() == p.dim_in
            && p.projection.len() == p.dim_in * p.dim_out
            && p.projection.iter().chain(&p.mean).all(|v| v.is_finite())
    }

    /// Projects rows and L2-normalises the results.
    pub fn project(&self, rows: &[f32]) -> anyhow::Result<Vec<f32>> {
        let mut out = self.pca.apply(rows)?;
        l2_normalize(&mut out, self.dims());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_neighbours_of_low_rank_rows_and_checks_its_sizes() {
        // rows in an 8-d subspace of 64-d with a little noise: 8 components keep the order
        let (n, d, r) = (600, 64, 8);
        let mut rng = dino_core::rng::seeded(3);
        let basis = dino_core::rng::normal(&mut rng, r * d, 0.0, 1.0);
        let z = dino_core::rng::normal(&mut rng, n * r, 0.0, 1.0);
        let eps = dino_core::rng::normal(&mut rng, n * d, 0.0, 0.01);
        let mut rows = vec![0f32; n * d];
        for i in 0..n {
            for j in 0..d {
                rows[i * d + j] =
                    (0..r).map(|c| z[i * r + c] * basis[c * d + j]).sum::<f32>() + eps[i * d + j];
            }
        }
        l2_normalize(&mut rows, d);
        let p = GraphProjection::fit(&rows, d, r, 500).unwrap();
        assert!(p.is_consistent());
        assert!(p.energy() > 0.99, "{}", p.energy());
        let small = p.project(&rows).unwrap();
        assert_eq!(small.len(), n * r);
        let norm: f32 = small[..r].iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-4);
        let full = dino_core::features::search::Index::new(&rows, d).unwrap();
        let reduced = dino_core::features::search::Index::new(&small, r).unwrap();
        let a = full.search(&rows[..50 * d], 1, true).unwrap();
        let b = reduced.search(&small[..50 * r], 1, true).unwrap();
        let same = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x[0].index == y[0].index)
            .count();
        assert!(same >= 45, "{same}/50 nearest neighbours kept");
        // the sizes are checked
        assert!(GraphProjection::fit(&rows, d, d, 500).is_err());
        assert!(GraphProjection::fit(&rows, d, 0, 500).is_err());
        assert!(GraphProjection::fit(&rows[..4 * d], d, r, 500).is_err());
        let mut broken = p.clone();
        broken.pca.projection.pop();
        assert!(!broken.is_consistent());
    }
}
