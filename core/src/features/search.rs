//! Exact cosine-similarity search in bounded memory: the database is held once, transposed;
//! queries go through in blocks whose similarity rows fit a fixed budget, and only each
//! query's top k survive. 100k x 100k searches stay within a few hundred MB beyond the
//! features themselves.

use crate::cpu::matmul::{Epilogue, matmul};
use crate::cpu::parallel::map_tasks;
use crate::{Error, Result};

/// One search hit.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Neighbour {
    pub index: usize,
    pub score: f32,
}

/// L2-normalised database rows, transposed for the similarity products.
pub struct Index {
    dim: usize,
    len: usize,
    /// `[dim, len]`
    columns: Vec<f32>,
}

/// Similarity values held at once (`block rows x database size`): 64M floats, 256 MB.
const SIMILARITY_BUDGET: usize = 1 << 26;

impl Index {
    /// Builds from `[N, dim]` rows (normalise them first for cosine similarity).
    pub fn new(rows: &[f32], dim: usize) -> Result<Self> {
        if dim == 0 || !rows.len().is_multiple_of(dim) {
            return Err(Error::Input(format!(
                "{} values are not rows of {dim}",
                rows.len()
            )));
        }
        let len = rows.len() / dim;
        let mut columns = vec![0f32; rows.len()];
        for (i, r) in rows.chunks_exact(dim).enumerate() {
            for (j, &v) in r.iter().enumerate() {
                columns[j * len + i] = v;
            }
        }
        Ok(Index { dim, len, columns })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Width of the rows it holds.
    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `k` most similar database rows of every query row, most similar first. With
    /// `skip_self`, query `i` is database row `i` and is left out of its own results.
    pub fn search(
        &self,
        queries: &[f32],
        k: usize,
        skip_self: bool,
    ) -> Result<Vec<Vec<Neighbour>>> {
        let d = self.dim;
        if !queries.len().is_multiple_of(d) {
            return Err(Error::Input(format!(
                "queries have {} values, not rows of {d}",
                queries.len()
            )));
        }
        let m = queries.len() / d;
        let n = self.len;
        let k = k.min(n.saturating_sub(skip_self as usize));
        let mut out = Vec::with_capacity(m);
        if n == 0 || k == 0 {
            out.resize(m, Vec::new());
            return Ok(out);
        }
        let block = (SIMILARITY_BUDGET / n).clamp(1, 1024);
        let zeros = vec![0f32; n];
        let mut sim = vec![0f32; block.min(m) * n];
        for start in (0..m).step_by(block) {
            let rows = block.min(m - start);
            matmul(
                &queries[start * d..(start + rows) * d],
                rows,
                d,
                &self.columns,
                n,
                &mut sim[..rows * n],
                Epilogue::Bias(&zeros),
            );
            let sim = &sim;
            out.extend(map_tasks(rows, |r| {
                let s = &sim[r * n..(r + 1) * n];
                let own = skip_self.then_some(start + r);
                top_k(s, k, own)
            }));
        }
        Ok(out)
    }
}

/// Indices of the `k` largest values of `s` (skipping `skip`), largest first.
fn top_k(s: &[f32], k: usize, skip: Option<usize>) -> Vec<Neighbour> {
    let mut order: Vec<usize> = (0..s.len()).filter(|&i| Some(i) != skip).collect();
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, |&a, &b| s[b].total_cmp(&s[a]));
        order.truncate(k);
    }
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .map(|index| Neighbour {
            index,
            score: s[index],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nearest_rows_and_skips_self() {
        let rows = [1.0, 0.0, 0.8, 0.6, 0.0, 1.0, -1.0, 0.0];
        let index = Index::new(&rows, 2).unwrap();
        let hits = index.search(&rows, 2, true).unwrap();
        assert_eq!(hits[0][0].index, 1);
        assert!((hits[0][0].score - 0.8).abs() < 1e-6);
        assert_eq!(hits[2][0].index, 1);
        assert!(
            hits.iter()
                .enumerate()
                .all(|(i, h)| h.iter().all(|n| n.index != i))
        );
        let all = index.search(&[1.0, 0.0], 10, false).unwrap();
        assert_eq!(all[0].len(), 4);
        assert_eq!(all[0][0].index, 0);
        assert_eq!(all[0][3].index, 3);
        assert!(index.search(&[1.0, 0.0, 0.0], 1, false).is_err());
    }
}
