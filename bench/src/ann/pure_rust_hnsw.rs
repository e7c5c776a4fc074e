//! `hnsw_rs` (pure Rust HNSW, `--features hnsw-rs`) on the full f32 rows, for comparison.

use std::time::Instant;

use rayon::prelude::*;

use crate::{Args, Row, full_time, mb, recall, rss};

#[cfg(feature = "hnsw-rs")]
pub(crate) fn hnsw_rs_row(
    rows: &[f32],
    dim: usize,
    args: &Args,
    sample: &[usize],
    truth: &[Vec<(u64, f32)>],
) -> anyhow::Result<Row> {
    use hnsw_rs::prelude::*;
    let n = rows.len() / dim;
    let before = rss();
    let t = Instant::now();
    let hnsw =
        Hnsw::<f32, DistCosine>::new(args.connectivity, n, 16, args.expansion_add, DistCosine {});
    let data: Vec<(&[f32], usize)> = rows.chunks_exact(dim).zip(0..n).collect();
    hnsw.parallel_insert_slice(&data);
    let build_s = t.elapsed().as_secs_f64();
    let memory = rss().saturating_sub(before);
    let search = |ids: &[usize]| -> Vec<Vec<u64>> {
        ids.par_iter()
            .map(|&i| {
                hnsw.search(
                    &rows[i * dim..(i + 1) * dim],
                    args.k + 1,
                    args.expansion_search.max(args.k + 1),
                )
                .into_iter()
                .filter(|x| x.d_id != i)
                .take(args.k)
                .map(|x| x.d_id as u64)
                .collect()
            })
            .collect()
    };
    let t = Instant::now();
    let found = search(sample);
    let query_ms = t.elapsed().as_secs_f64() * 1e3 / sample.len() as f64;
    let all: Vec<usize> = (0..n).collect();
    let full_s = full_time(args.full, build_s, || {
        let _ = search(&all);
        Ok(())
    })?;
    Ok(Row {
        library: "hnsw_rs 0.3.5 HNSW f32".into(),
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
