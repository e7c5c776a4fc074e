//! PCA and whitening as the official `utils.PCA` (used by copy detection), and the plain
//! top-k principal components used for visualisation.

use crate::cpu::matmul::{Epilogue, matmul};
use crate::{Error, Result};
use nalgebra::{DMatrix, SymmetricEigen};

/// A learned projection `y = diag(1 / lambda^whit) V^T (x - mean)`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Pca {
    pub dim_in: usize,
    pub dim_out: usize,
    pub mean: Vec<f32>,
    /// `[dim_out, dim_in]` rows: the components, already scaled by the whitening.
    pub projection: Vec<f32>,
    /// Eigenvalues, largest first (before whitening).
    pub eigenvalues: Vec<f32>,
    /// Share of the total energy the kept components hold.
    pub energy: f32,
}

/// The mean row of `[N, d]` rows.
pub fn mean_row(rows: &[f32], d: usize) -> Vec<f32> {
    let n = (rows.len() / d.max(1)).max(1);
    let mut m = vec![0f64; d];
    for r in rows.chunks_exact(d) {
        m.iter_mut().zip(r).for_each(|(a, &v)| *a += v as f64);
    }
    m.iter().map(|v| (v / n as f64) as f32).collect()
}

/// `X^T X / n` of `[N, d]` rows, centred first when `mean` is given.
pub fn second_moment(rows: &[f32], d: usize, mean: Option<&[f32]>) -> Vec<f32> {
    let n = rows.len() / d;
    // the (centred) rows and their transpose, filled in one pass
    let mut x = vec![0f32; n * d];
    let mut xt = vec![0f32; d * n];
    for (i, r) in rows.chunks_exact(d).enumerate() {
        for j in 0..d {
            let v = r[j] - mean.map_or(0.0, |m| m[j]);
            x[i * d + j] = v;
            xt[j * n + i] = v;
        }
    }
    let mut cov = vec![0f32; d * d];
    matmul(&xt, d, n, &x, d, &mut cov, Epilogue::Bias(&vec![0f32; d]));
    cov.iter_mut().for_each(|v| *v /= n.max(1) as f32);
    cov
}

/// Symmetric eigen-decomposition, largest eigenvalue first: (values, `[k, d]` vectors as rows).
pub fn eigh_desc(sym: &[f32], d: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
    let m = DMatrix::<f64>::from_fn(d, d, |i, j| sym[i * d + j] as f64);
    let eig = SymmetricEigen::new(m);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let values = order[..k]
        .iter()
        .map(|&i| eig.eigenvalues[i] as f32)
        .collect();
    let mut vectors = Vec::with_capacity(k * d);
    for &i in &order[..k] {
        vectors.extend(eig.eigenvectors.column(i).iter().map(|&v| v as f32));
    }
    (values, vectors)
}

impl Pca {
    /// The official copy-detection whitening: the mean of `rows` is subtracted from what is
    /// projected, but the eigenvectors come from the *uncentred* second moment `X^T X / n`
    /// (as `eval_copy_detection.py` computes `cov`); eigenvalues below `1e-5 * max` are
    /// raised to it; `whit` 0.5 whitens fully, 0 only rotates.
    pub fn fit_whitening(rows: &[f32], d: usize, dim_out: usize, whit: f32) -> Result<Self> {
        let n = rows.len() / d.max(1);
        if d == 0 || n < 2 || rows.len() != n * d {
            return Err(Error::Input(format!(
                "PCA needs at least 2 feature rows, got {n}"
            )));
        }
        if dim_out == 0 || dim_out > d {
            return Err(Error::Input(format!(
                "PCA output dimension must be in 1..={d}, got {dim_out}"
            )));
        }
        let mean = mean_row(rows, d);
        let cov = second_moment(rows, d, None);
        // one decomposition: every eigenvalue for the energy, the top dim_out vectors kept
        let (all, mut vectors) = eigh_desc(&cov, d, d);
        vectors.truncate(dim_out * d);
        let mut values = all[..dim_out].to_vec();
        let eps = all[0].max(0.0) * 1e-5;
        let clamp = |v: f32| if v < eps { eps } else { v };
        let total: f32 = all.iter().map(|&v| clamp(v)).sum();
        values.iter_mut().for_each(|v| *v = clamp(*v));
        let energy = values.iter().sum::<f32>() / total.max(f32::MIN_POSITIVE);
        let mut projection = vectors;
        for (k, row) in projection.chunks_exact_mut(d).enumerate() {
            let s = 1.0 / values[k].max(f32::MIN_POSITIVE).powf(whit);
            row.iter_mut().for_each(|v| *v *= s);
        }
        Ok(Pca {
            dim_in: d,
            dim_out,
            mean,
            projection,
            eigenvalues: values,
            energy,
        })
    }

    /// Plain PCA (centred covariance), no whitening: the top `k` components.
    pub fn fit(rows: &[f32], d: usize, k: usize) -> Result<Self> {
        let n = rows.len() / d.max(1);
        if d == 0 || n < 2 || k == 0 || k > d {
            return Err(Error::Input(format!(
                "PCA of {k} components needs at least 2 rows of width >= {k}, got {n} rows of {d}"
            )));
        }
        let mean = mean_row(rows, d);
        let cov = second_moment(rows, d, Some(&mean));
        let (values, vectors) = eigh_desc(&cov, d, k);
        let total: f32 = (0..d).map(|i| cov[i * d + i]).sum();
        Ok(Pca {
            dim_in: d,
            dim_out: k,
            mean,
            energy: values.iter().sum::<f32>() / total.max(f32::MIN_POSITIVE),
            projection: vectors,
            eigenvalues: values,
        })
    }

    /// Projects `[N, dim_in]` rows to `[N, dim_out]`: blocks of centred rows times the
    /// transposed components (a threaded matrix product: a million 1536-d rows to 256-d in
    /// under a minute on two cores), memory beyond the output bounded by one block.
    pub fn apply(&self, rows: &[f32]) -> Result<Vec<f32>> {
        let (d, k) = (self.dim_in, self.dim_out);
        if d == 0 || !rows.len().is_multiple_of(d) {
            return Err(Error::Input(format!(
                "PCA expects rows of {d} values, got {} values",
                rows.len()
            )));
        }
        let n = rows.len() / d;
        // [dim_in, dim_out]: the components as columns
        let mut components = vec![0f32; d * k];
        for (c, p) in self.projection.chunks_exact(d).enumerate() {
            for (j, &v) in p.iter().enumerate() {
                components[j * k + c] = v;
            }
        }
        let zero = vec![0f32; k];
        let mut out = vec![0f32; n * k];
        const BLOCK: usize = 4096;
        let mut centred = vec![0f32; BLOCK.min(n) * d];
        for (block, dst) in rows.chunks(BLOCK * d).zip(out.chunks_mut(BLOCK * k)) {
            let m = block.len() / d;
            let c = &mut centred[..m * d];
            for (cr, r) in c.chunks_exact_mut(d).zip(block.chunks_exact(d)) {
                cr.iter_mut()
                    .zip(r.iter().zip(&self.mean))
                    .for_each(|(o, (&x, &mu))| *o = x - mu);
            }
            matmul(c, m, d, &components, k, dst, Epilogue::Bias(&zero));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_main_axis_and_whitens() {
        // points along (1, 1) with a little spread along (1, -1)
        let mut rows = Vec::new();
        for i in -10..=10 {
            let t = i as f32;
            let s = if i % 2 == 0 { 0.1 } else { -0.1 };
            rows.extend([t + s, t - s]);
        }
        let pca = Pca::fit(&rows, 2, 2).unwrap();
        let axis = &pca.projection[..2];
        assert!((axis[0].abs() - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-4);
        assert!((axis[0] - axis[1]).abs() < 1e-4);
        assert!(pca.eigenvalues[0] > 100.0 * pca.eigenvalues[1]);
        // whitened outputs have unit second moment along each kept axis
        let w = Pca::fit_whitening(&rows, 2, 2, 0.5).unwrap();
        let y = w.apply(&rows).unwrap();
        let m0: f32 = y.chunks(2).map(|r| r[0] * r[0]).sum::<f32>() / 21.0;
        assert!((m0 - 1.0).abs() < 0.05, "{m0}");
        assert!(Pca::fit(&rows, 2, 3).is_err());
        assert!(Pca::fit(&rows[..2], 2, 1).is_err());
    }

    #[test]
    fn projects_blocks_of_rows_as_row_by_row() {
        // more rows than one block of the product
        let (n, d) = (5000, 6);
        let rows: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7919) % 1013) as f32 / 1013.0 + (i % d) as f32)
            .collect();
        let pca = Pca::fit(&rows, d, 3).unwrap();
        let y = pca.apply(&rows).unwrap();
        assert_eq!(y.len(), n * 3);
        for (r, got) in rows.chunks_exact(d).zip(y.chunks_exact(3)) {
            for (c, p) in pca.projection.chunks_exact(d).enumerate() {
                let want: f32 = p
                    .iter()
                    .zip(r.iter().zip(&pca.mean))
                    .map(|(a, (x, m))| a * (x - m))
                    .sum();
                assert!((got[c] - want).abs() < 1e-4, "{} vs {want}", got[c]);
            }
        }
        assert!(pca.apply(&rows[..d + 1]).is_err());
    }
}
