//! The exact search: the ground truth every recall is measured against (blocked, so that memory
//! stays bounded), and its own row of the table.

use std::time::Instant;

use dino_core::features::search::Index;
use dino_native::ann::rows_at;

use crate::{Args, Row, full_time, mb, recall, rss};

/// Exact top-k of the sampled query rows (themselves excluded), over blocks of the
/// collection so that memory stays bounded.
pub(crate) fn exact_top_k(
    rows: &[f32],
    dim: usize,
    queries: &[usize],
    k: usize,
) -> Vec<Vec<(u64, f32)>> {
    let n = rows.len() / dim;
    let q: Vec<f32> = rows_at(rows, dim, queries);
    let mut best: Vec<Vec<(u64, f32)>> = vec![Vec::new(); queries.len()];
    let block = 100_000;
    for start in (0..n).step_by(block) {
        let end = (start + block).min(n);
        exact_block(&mut best, &q, &rows[start * dim..end * dim], start, dim, k).expect("rows");
    }
    keep_top_k(&mut best, queries, k);
    best
}

/// Adds the `k + 1` best of one block of rows (the first of them row `start`) to each
/// query's candidates in `best` (one more, as a query may find itself).
pub(crate) fn exact_block(
    best: &mut [Vec<(u64, f32)>],
    queries: &[f32],
    block: &[f32],
    start: usize,
    dim: usize,
    k: usize,
) -> anyhow::Result<()> {
    let index = Index::new(block, dim)?;
    for (b, h) in best.iter_mut().zip(index.search(queries, k + 1, false)?) {
        b.extend(h.iter().map(|x| ((start + x.index) as u64, x.score)));
    }
    Ok(())
}

/// Each query's candidates from [`exact_block`] cut to its `k` best, itself left out.
pub(crate) fn keep_top_k(best: &mut [Vec<(u64, f32)>], queries: &[usize], k: usize) {
    for (b, &qi) in best.iter_mut().zip(queries) {
        b.retain(|(key, _)| *key != qi as u64);
        b.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        b.truncate(k);
    }
}

pub(crate) fn exact_row(
    rows: &[f32],
    dim: usize,
    args: &Args,
    sample: &[usize],
    truth: &[Vec<(u64, f32)>],
) -> anyhow::Result<Row> {
    let n = rows.len() / dim;
    let before = rss();
    let t = Instant::now();
    let index = Index::new(rows, dim)?;
    let build_s = t.elapsed().as_secs_f64();
    let memory = rss().saturating_sub(before);
    let qrows: Vec<f32> = rows_at(rows, dim, sample);
    let t = Instant::now();
    let hits = index.search(&qrows, args.k + 1, false)?;
    let query_ms = t.elapsed().as_secs_f64() * 1e3 / sample.len() as f64;
    let found: Vec<Vec<u64>> = hits
        .iter()
        .zip(sample)
        .map(|(h, &i)| {
            h.iter()
                .filter(|x| x.index != i)
                .take(args.k)
                .map(|x| x.index as u64)
                .collect()
        })
        .collect();
    let full_s = full_time(args.full && n <= args.exact_full_max, build_s, || {
        let _ = index.search(rows, args.k, true)?;
        Ok(())
    })?;
    Ok(Row {
        library: "dino-core exact (blocked matmul)".into(),
        n,
        recall: recall(&found, truth),
        recall_rescored: None,
        build_s,
        query_ms,
        full_s,
        memory_mb: mb(memory),
        file_mb: None,
    })
}
