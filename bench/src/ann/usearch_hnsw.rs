//! USearch's HNSW as `dino dedup` / `dino retrieve` run it: the graph on the full rows or on their
//! top principal components, rows inserted and searched by cell or in file order, candidates
//! rescored with the f32 rows; one row of the table per storage form and graph width.

use std::time::Instant;

use dino_native::ann::{HnswIndex, HnswSettings, Quantization, rescore, rows_at};
use dino_native::ann_order::similar_together;
use dino_native::ann_projection::{FIT_SAMPLE, GraphProjection};
use rayon::prelude::*;

use crate::{Args, Order, Row, full_time, mb, recall, rss};

/// The HNSW settings of the flags, in storage form `q`.
pub(crate) fn hnsw_settings(args: &Args, q: Quantization) -> HnswSettings {
    HnswSettings {
        quantization: q,
        connectivity: args.connectivity,
        expansion_add: args.expansion_add,
        expansion_search: args.expansion_search,
    }
}

/// The (search expansion, candidates per neighbour) pairs measured on each graph: the flags'
/// own first, then `--also-expansion-search` x `--also-candidates`.
pub(crate) fn search_variants(args: &Args) -> Vec<(usize, usize)> {
    let mut efs = vec![args.expansion_search];
    efs.extend(&args.also_expansion_search);
    let mut counts = vec![args.candidates.max(1)];
    counts.extend(&args.also_candidates);
    efs.iter()
        .flat_map(|&ef| counts.iter().map(move |&c| (ef, c)))
        .collect()
}

/// Prints the recall of one of [`search_variants`] past the first.
#[allow(clippy::too_many_arguments)]
pub(crate) fn print_variant(
    args: &Args,
    q: Quantization,
    graph_dims: usize,
    n: usize,
    (ef, c): (usize, usize),
    recall: f64,
    ms: f64,
) {
    eprintln!(
        "USearch {} graph {graph_dims}-d n {n} ef {}: recall@{} rescored from {}: {recall:.4}, {ms:.3} ms a query",
        dino_native::choice_name(&q),
        ef.max(c * args.k + 1),
        args.k,
        c * args.k,
    );
}

/// The `k` neighbours the graph alone finds for the sampled queries (`queries`, as the graph
/// sees them; each query's own key in `own` left out), and that search's time per query, ms.
pub(crate) fn graph_neighbours(
    index: &HnswIndex,
    queries: &[f32],
    own: &[u64],
    k: usize,
) -> anyhow::Result<(Vec<Vec<u64>>, f64)> {
    let t = Instant::now();
    let hits = index.search(queries, k, Some(own), &|_| {})?;
    let ms = t.elapsed().as_secs_f64() * 1e3 / own.len() as f64;
    let found = hits
        .iter()
        .map(|h| h.iter().map(|x| x.key).collect())
        .collect();
    Ok((found, ms))
}

/// Size of the index saved in `--work` (the file removed again), MB.
pub(crate) fn saved_mb(index: &HnswIndex, args: &Args, n: usize) -> anyhow::Result<f64> {
    let file = args.work.join(format!("usearch-{n}.usearch"));
    index.save(&file)?;
    let size = mb(std::fs::metadata(&file)?.len());
    std::fs::remove_file(&file).ok();
    Ok(size)
}

/// The rows (of `gd`, as the graph sees them) listed as `dino` orders them (similar rows
/// together), the time it took printed.
pub(crate) fn cell_order(what: &str, graph_rows: &[f32], gd: usize) -> anyhow::Result<Vec<usize>> {
    let n = graph_rows.len() / gd;
    let t = Instant::now();
    let order = similar_together(n, gd, |ids| Ok(rows_at(graph_rows, gd, ids)))?
        .unwrap_or_else(|| (0..n).collect());
    eprintln!("{what} order: {:.1} s", t.elapsed().as_secs_f64());
    Ok(order)
}

pub(crate) fn usearch_row(
    rows: &[f32],
    dim: usize,
    args: &Args,
    q: Quantization,
    graph_dims: usize,
    sample: &[usize],
    truth: &[Vec<(u64, f32)>],
) -> anyhow::Result<Row> {
    let n = rows.len() / dim;
    let cands = args.candidates.max(1) * args.k;
    let settings = hnsw_settings(args, q);
    let keys: Vec<u64> = (0..n as u64).collect();
    let before = rss();
    let t = Instant::now();
    // the graph's rows: the full rows, or their top principal components
    let projection = (graph_dims > 0)
        .then(|| GraphProjection::fit(rows, dim, graph_dims, FIT_SAMPLE))
        .transpose()?;
    let projected = projection.as_ref().map(|p| p.project(rows)).transpose()?;
    let (graph_rows, gd) = match &projected {
        Some(p) => (&p[..], graph_dims),
        None => (rows, dim),
    };
    if let Some(p) = &projection {
        eprintln!(
            "PCA {dim} -> {graph_dims}: {:.1}% of the variance, {:.1} s",
            100.0 * p.energy(),
            t.elapsed().as_secs_f64()
        );
    }
    let index = HnswIndex::new(gd, settings)?;
    if args.insert_order == Order::Cells && graph_dims > 0 {
        let order = cell_order("insertion", graph_rows, gd)?;
        let ks: Vec<u64> = order.iter().map(|&i| i as u64).collect();
        index.add(&ks, &rows_at(graph_rows, gd, &order), &|_| {})?;
    } else {
        index.add(&keys, graph_rows, &|_| {})?;
    }
    let build_s = t.elapsed().as_secs_f64();
    eprintln!("USearch SIMD: {}", index.hardware_acceleration());
    let memory = rss()
        .saturating_sub(before)
        .max(index.memory_usage() as u64);
    let qrows: Vec<f32> = rows_at(rows, dim, sample);
    let gq: Vec<f32> = rows_at(graph_rows, gd, sample);
    let own: Vec<u64> = sample.iter().map(|&i| i as u64).collect();
    // as `dino dedup` / `retrieve` search: candidates from the graph, exact cosines from the
    // f32 rows choose the k kept
    let rescored = |queries: &[f32], hits: Vec<Vec<dino_native::ann::Hit>>| -> Vec<Vec<u64>> {
        hits.into_par_iter()
            .enumerate()
            .map(|(qi, h)| {
                let q = &queries[qi * dim..(qi + 1) * dim];
                let ids = h.iter().map(|x| x.key as usize);
                rescore(q, ids, rows, dim, args.k)
                    .into_iter()
                    .map(|x| x.index as u64)
                    .collect()
            })
            .collect()
    };
    let (found, query_ms) = graph_neighbours(&index, &gq, &own, args.k)?;
    let wide = index.search(&gq, cands, Some(&own), &|_| {})?;
    let recall_rescored = recall(&rescored(&qrows, wide), truth);
    // recall as the search expansion grows (the graph unchanged)
    let mut index = index;
    // the first variant is the row itself
    for (ef, c) in search_variants(args).into_iter().skip(1) {
        index.set_expansion_search(ef);
        let t = Instant::now();
        let wide = index.search(&gq, c * args.k, Some(&own), &|_| {})?;
        let ms = t.elapsed().as_secs_f64() * 1e3 / sample.len() as f64;
        let r = recall(&rescored(&qrows, wide), truth);
        print_variant(args, q, gd, n, (ef, c), r, ms);
    }
    index.set_expansion_search(args.expansion_search);
    let full_s = full_time(args.full, build_s, || {
        if args.search_order == Order::Cells && graph_dims > 0 {
            let order = cell_order("search", graph_rows, gd)?;
            let ks: Vec<u64> = order.iter().map(|&i| i as u64).collect();
            for part in order.chunks(32_768).zip(ks.chunks(32_768)) {
                let hits = index.search(
                    &rows_at(graph_rows, gd, part.0),
                    cands,
                    Some(part.1),
                    &|_| {},
                )?;
                let _ = rescored(&rows_at(rows, dim, part.0), hits);
            }
        } else {
            let hits = index.search(graph_rows, cands, Some(&keys), &|_| {})?;
            let _ = rescored(rows, hits);
        }
        Ok(())
    })?;
    let file_mb = saved_mb(&index, args, n)?;
    Ok(Row {
        library: format!(
            "USearch {} HNSW {}{}",
            usearch::version(),
            dino_native::choice_name(&q),
            if graph_dims > 0 {
                let order = |o: Order| match o {
                    Order::Cells => "by cell",
                    Order::File => "in file order",
                };
                format!(
                    " on PCA-{graph_dims}, {cands} rescored, inserted {}{}",
                    order(args.insert_order),
                    if args.full {
                        format!(", searched {}", order(args.search_order))
                    } else {
                        String::new()
                    }
                )
            } else {
                String::new()
            }
        ),
        n,
        recall: recall(&found, truth),
        recall_rescored: Some(recall_rescored),
        build_s,
        query_ms,
        full_s,
        memory_mb: mb(memory),
        file_mb: Some(file_mb),
    })
}
