//! USearch on a collection too large to hold as f32 rows (`--streamed`).

use std::time::Instant;

use dino_native::ann::{HnswIndex, Quantization, rescore, rows_at};
use dino_native::ann_projection::{FIT_SAMPLE, GraphProjection};
use rayon::prelude::*;

use crate::exact::{exact_block, keep_top_k};
use crate::synthetic::{BLOCK, Synthetic};
use crate::usearch_hnsw::{
    graph_neighbours, hnsw_settings, print_variant, saved_mb, search_variants,
};
use crate::{Args, Row, full_time, mb, recall, rss};

/// USearch on a collection whose f32 rows are never all in memory (`--streamed`: 10M x 1536
/// is 61 GB): rows are made block by block, projected onto the graph's principal components
/// (fitted on evenly spaced blocks), added, and dropped; only the graph's rows stay. A second
/// pass makes the rows again for the exact ground truth of the sampled queries and for the
/// full rows of their candidates (rescored as `dino dedup` does). The time of making rows is
/// left out of the build time. Rows go in as they are made (file order: `--insert-order` and
/// `--search-order` do not apply). The full self-search, when asked, times the graph's search of
/// every row alone: the rows to rescore with are gone (at 1M rescoring was a few percent of
/// it).
pub(crate) fn streamed_row(
    synth: &Synthetic,
    args: &Args,
    q: Quantization,
    graph_dims: usize,
    sample: &[usize],
) -> anyhow::Result<Row> {
    use std::collections::BTreeMap;
    anyhow::ensure!(graph_dims > 0, "--streamed needs --graph-dims above 0");
    let (n, dim, gd) = (synth.n, synth.dim, graph_dims);
    let cands = args.candidates.max(1) * args.k;
    let settings = hnsw_settings(args, q);
    let group = 16 * BLOCK;
    let before = rss();
    let t = Instant::now();
    let mut making = 0f64;
    // the projection, fitted on evenly spaced blocks
    let fit_blocks = FIT_SAMPLE.div_ceil(BLOCK).min(synth.blocks());
    let mut fit_rows = Vec::with_capacity(fit_blocks * BLOCK * dim);
    for i in 0..fit_blocks {
        let b = i * synth.blocks() / fit_blocks;
        let tm = Instant::now();
        fit_rows.extend(synth.rows(b * BLOCK, ((b + 1) * BLOCK).min(n)));
        making += tm.elapsed().as_secs_f64();
    }
    let projection = GraphProjection::fit(&fit_rows, dim, gd, FIT_SAMPLE)?;
    drop(fit_rows);
    eprintln!(
        "PCA {dim} -> {gd}: {:.1}% of the variance",
        100.0 * projection.energy()
    );
    let index = HnswIndex::new(gd, settings)?;
    let mut graph_rows: Vec<f32> = Vec::with_capacity(n * gd);
    // the sampled queries' own rows, kept as they pass
    let mut qrows = vec![0f32; sample.len() * dim];
    for start in (0..n).step_by(group) {
        let end = (start + group).min(n);
        let tm = Instant::now();
        let rows = synth.rows(start, end);
        for (i, &s) in sample.iter().enumerate() {
            if (start..end).contains(&s) {
                let r = s - start;
                qrows[i * dim..(i + 1) * dim].copy_from_slice(&rows[r * dim..(r + 1) * dim]);
            }
        }
        making += tm.elapsed().as_secs_f64();
        let projected = projection.project(&rows)?;
        drop(rows);
        let keys: Vec<u64> = (start as u64..end as u64).collect();
        index.add(&keys, &projected, &|_| {})?;
        graph_rows.extend_from_slice(&projected);
        if (start / group).is_multiple_of(16) || end == n {
            eprintln!(
                "  {end} added, {:.0} s (of which making rows {making:.0} s)",
                t.elapsed().as_secs_f64()
            );
        }
    }
    let build_s = t.elapsed().as_secs_f64() - making;
    eprintln!("USearch SIMD: {}", index.hardware_acceleration());
    let memory = rss()
        .saturating_sub(before)
        .max(index.memory_usage() as u64);
    // the sampled queries: the graph's search, and the candidates to rescore
    let gq: Vec<f32> = rows_at(&graph_rows, gd, sample);
    let own: Vec<u64> = sample.iter().map(|&i| i as u64).collect();
    let (found, query_ms) = graph_neighbours(&index, &gq, &own, args.k)?;
    let mut index = index;
    // (variant, candidates of each query, ms a query)
    let mut wide = Vec::new();
    for (ef, c) in search_variants(args) {
        index.set_expansion_search(ef);
        let t = Instant::now();
        let hits = index.search(&gq, c * args.k, Some(&own), &|_| {})?;
        let ms = t.elapsed().as_secs_f64() * 1e3 / sample.len() as f64;
        let ids: Vec<Vec<u64>> = hits
            .into_iter()
            .map(|h| h.into_iter().map(|x| x.key).collect())
            .collect();
        wide.push(((ef, c), ids, ms));
    }
    index.set_expansion_search(args.expansion_search);
    // second pass: the exact top-k of the queries and the full rows of every candidate
    let t = Instant::now();
    let wanted: BTreeMap<u64, usize> = wide
        .iter()
        .flat_map(|(_, ids, _)| ids.iter().flatten().copied())
        .collect::<std::collections::BTreeSet<u64>>()
        .into_iter()
        .enumerate()
        .map(|(i, key)| (key, i))
        .collect();
    let mut kept = vec![0f32; wanted.len() * dim];
    let mut truth: Vec<Vec<(u64, f32)>> = vec![Vec::new(); sample.len()];
    for start in (0..n).step_by(group) {
        let end = (start + group).min(n);
        let rows = synth.rows(start, end);
        for (&key, &i) in wanted.range(start as u64..end as u64) {
            let r = key as usize - start;
            kept[i * dim..(i + 1) * dim].copy_from_slice(&rows[r * dim..(r + 1) * dim]);
        }
        exact_block(&mut truth, &qrows, &rows, start, dim, args.k)?;
    }
    keep_top_k(&mut truth, sample, args.k);
    eprintln!(
        "rows made again for the ground truth and the candidates in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let keys_of: Vec<u64> = wanted.keys().copied().collect();
    let rescored = |ids: &[Vec<u64>]| -> Vec<Vec<u64>> {
        ids.par_iter()
            .enumerate()
            .map(|(qi, h)| {
                let q = &qrows[qi * dim..(qi + 1) * dim];
                let local = h.iter().map(|key| wanted[key]);
                rescore(q, local, &kept, dim, args.k)
                    .into_iter()
                    .map(|x| keys_of[x.index])
                    .collect()
            })
            .collect()
    };
    let mut recall_rescored = 0.0;
    for (i, (variant, ids, ms)) in wide.iter().enumerate() {
        let r = recall(&rescored(ids), &truth);
        if i == 0 {
            recall_rescored = r;
        } else {
            print_variant(args, q, gd, n, *variant, r, *ms);
        }
    }
    let full_s = full_time(args.full, build_s, || {
        let keys: Vec<u64> = (0..n as u64).collect();
        let _ = index.search(&graph_rows, cands, Some(&keys), &|_| {})?;
        Ok(())
    })?;
    let file_mb = saved_mb(&index, args, n)?;
    Ok(Row {
        library: format!(
            "USearch {} HNSW {} on PCA-{gd}, {cands} rescored, streamed{}",
            usearch::version(),
            dino_native::choice_name(&q),
            if args.full {
                " (full: graph search only)"
            } else {
                ""
            }
        ),
        n,
        recall: recall(&found, &truth),
        recall_rescored: Some(recall_rescored),
        build_s,
        query_ms,
        full_s,
        memory_mb: mb(memory),
        file_mb: Some(file_mb),
    })
}
