//! `dino-bench-ann`: approximate nearest-neighbour libraries measured on the same synthetic
//! DINO-like descriptors in one run: USearch (the one `dino dedup` / `dino retrieve` use),
//! `hnsw_rs` (pure Rust, with `--features hnsw-rs`), the exact search of dino-core, and FAISS
//! (HNSW and exact flat, through `bench/ann_faiss.py` when Python has `faiss`). Recall@k of
//! each against the exact search, build time, query time, memory, file size and the time of a
//! full self-search (what a dedup does), as a table for BENCHMARKS.md:
//!
//! ```sh
//! cargo run --release -p dino-bench --features hnsw-rs --bin dino-bench-ann -- --sizes 100000
//! ```
//!
//! The descriptors imitate real ones rather than uniform noise: 1536-d (ViT-S copy
//! descriptors), a low-rank signal with a decaying spectrum (256 latent directions, variance
//! 1/i; `--latent` sets how many), grouped around cluster centres (about 50 images a cluster), 2% near-duplicates of
//! other rows, isotropic noise, L2-normalised.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use dino_core::cpu::matmul::{Epilogue, matmul};
use dino_core::features::{l2_normalize, search::Index};
use dino_native::ann::{HnswIndex, HnswSettings, Quantization, rescore, rows_at};
use dino_native::ann_order::similar_together;
use dino_native::ann_projection::{FIT_SAMPLE, GraphProjection};
use dino_native::npy;
use rand::Rng;
use rayon::prelude::*;

#[derive(Parser, Debug)]
#[command(
    name = "dino-bench-ann",
    about = "Approximate nearest-neighbour search side by side"
)]
struct Args {
    /// Collection sizes (descriptors).
    #[arg(long, value_delimiter = ',', default_value = "100000")]
    sizes: Vec<usize>,
    /// Descriptor width (ViT-S/16 copy descriptor: 1536).
    #[arg(long, default_value_t = 1536)]
    dim: usize,
    /// Sampled queries for recall and query time (rows of the collection, themselves left
    /// out of their results).
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Neighbours per query.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// USearch storage forms to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "f32,f16,i8")]
    quantization: Vec<Quantization>,
    /// HNSW neighbours per node (M), the same for every library.
    #[arg(long, default_value_t = HnswSettings::default().connectivity)]
    connectivity: usize,
    /// HNSW efConstruction, the same for every library (`dino`'s default).
    #[arg(long, default_value_t = HnswSettings::default().expansion_add)]
    expansion_add: usize,
    /// HNSW ef at search time, the same for every library.
    #[arg(long, default_value_t = HnswSettings::default().expansion_search)]
    expansion_search: usize,
    /// USearch: the graph on the rows' top principal components, this many (0: the full
    /// rows); candidates are rescored with the full rows. Several values: one row each.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    graph_dims: Vec<usize>,
    /// Candidates proposed by the graph per neighbour kept (rescored exactly).
    #[arg(long, default_value_t = 2)]
    candidates: usize,
    /// USearch: also the recall at these search expansions (ef), on the same graph.
    #[arg(long, value_delimiter = ',')]
    also_expansion_search: Vec<usize>,
    /// USearch: also the recall with these candidates per neighbour (x k rescored), at each
    /// search expansion measured, on the same graph.
    #[arg(long, value_delimiter = ',')]
    also_candidates: Vec<usize>,
    /// Also time a self-search of every row (k neighbours each), as `dino dedup` does.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    full: bool,
    /// Run the exact search of every row too (quadratic: skipped above this size).
    #[arg(long, default_value_t = 200_000)]
    exact_full_max: usize,
    /// Run FAISS through this interpreter (skipped when it has no faiss).
    #[arg(long, default_value = "python3")]
    python: String,
    /// Skip FAISS.
    #[arg(long)]
    no_faiss: bool,
    /// Folder for the descriptors handed to FAISS and the saved indexes.
    #[arg(long, default_value = "/tmp/dino-bench-ann")]
    work: PathBuf,
    /// Latent directions of the synthetic descriptors' signal (variance 1/i each): 256 by
    /// default; the descriptor width gives a full-rank power-law spectrum, a harder case for
    /// a graph on principal components.
    #[arg(long, default_value_t = 256)]
    latent: usize,
    /// Only write the synthetic descriptors of the first size to this .npy file (`[n, dim]`
    /// f32) and stop: `bench/dedup_at_scale.py` hands them to `dino dedup`.
    #[arg(long)]
    write_rows: Option<PathBuf>,
    /// Never hold the f32 rows (10M x 1536 is 61 GB): make them block by block and keep only
    /// the graph's projected rows (USearch rows only; needs --graph-dims above 0). The ground
    /// truth and the rescoring make the rows again; the full self-search, when asked, times
    /// the graph's search alone.
    #[arg(long)]
    streamed: bool,
    /// Seed of the synthetic descriptors.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// USearch on PCA rows: the order rows are inserted in (`cells`: similar rows together,
    /// as `dino` inserts many rows; `file`: as they come).
    #[arg(long, value_enum, default_value_t = Order::Cells)]
    insert_order: Order,
    /// USearch on PCA rows: the order of the full self-search's queries (`cells`: as `dino
    /// dedup` takes them).
    #[arg(long, value_enum, default_value_t = Order::Cells)]
    search_order: Order,
}

/// An order of the rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Order {
    /// As they come.
    File,
    /// Similar rows together (`dino_native::ann_order`).
    Cells,
}

/// The rows (of `gd`, as the graph sees them) listed as `dino` orders them (similar rows
/// together), the time it took printed.
fn cell_order(what: &str, graph_rows: &[f32], gd: usize) -> anyhow::Result<Vec<usize>> {
    let n = graph_rows.len() / gd;
    let t = Instant::now();
    let order = similar_together(n, gd, |ids| Ok(rows_at(graph_rows, gd, ids)))?
        .unwrap_or_else(|| (0..n).collect());
    eprintln!("{what} order: {:.1} s", t.elapsed().as_secs_f64());
    Ok(order)
}

/// Rows generated at a time (each block from its own seed, so any block can be made again
/// alone: the streamed measurement regenerates what it needs).
const BLOCK: usize = 4096;

/// Synthetic DINO-like descriptors, `[n, dim]`, L2-normalised (see the module doc), made
/// block by block.
struct Synthetic {
    n: usize,
    dim: usize,
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
    fn new(n: usize, dim: usize, latent: usize, seed: u64) -> Self {
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

    fn blocks(&self) -> usize {
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
    fn rows(&self, start: usize, end: usize) -> Vec<f32> {
        debug_assert!(start.is_multiple_of(BLOCK) && end <= self.n);
        let mut out = vec![0f32; (end - start) * self.dim];
        out.par_chunks_mut(BLOCK * self.dim)
            .enumerate()
            .for_each(|(i, rows)| self.block_into(start / BLOCK + i, rows));
        out
    }
}

/// All `n` synthetic rows, `[n, dim]`.
fn synthetic(n: usize, dim: usize, latent: usize, seed: u64) -> Vec<f32> {
    Synthetic::new(n, dim, latent, seed).rows(0, n)
}

/// The time of a full self-search (`search`) plus the build's, when `run`.
fn full_time(
    run: bool,
    build_s: f64,
    search: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Option<f64>> {
    if !run {
        return Ok(None);
    }
    let t = Instant::now();
    search()?;
    Ok(Some(t.elapsed().as_secs_f64() + build_s))
}

/// Exact top-k of the sampled query rows (themselves excluded), over blocks of the
/// collection so that memory stays bounded.
fn exact_top_k(rows: &[f32], dim: usize, queries: &[usize], k: usize) -> Vec<Vec<(u64, f32)>> {
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
fn exact_block(
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
fn keep_top_k(best: &mut [Vec<(u64, f32)>], queries: &[usize], k: usize) {
    for (b, &qi) in best.iter_mut().zip(queries) {
        b.retain(|(key, _)| *key != qi as u64);
        b.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        b.truncate(k);
    }
}

/// The HNSW settings of the flags, in storage form `q`.
fn hnsw_settings(args: &Args, q: Quantization) -> HnswSettings {
    HnswSettings {
        quantization: q,
        connectivity: args.connectivity,
        expansion_add: args.expansion_add,
        expansion_search: args.expansion_search,
    }
}

/// The (search expansion, candidates per neighbour) pairs measured on each graph: the flags'
/// own first, then `--also-expansion-search` x `--also-candidates`.
fn search_variants(args: &Args) -> Vec<(usize, usize)> {
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
fn print_variant(
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

/// Size of the index saved in `--work` (the file removed again), MB.
fn saved_mb(index: &HnswIndex, args: &Args, n: usize) -> anyhow::Result<f64> {
    let file = args.work.join(format!("usearch-{n}.usearch"));
    index.save(&file)?;
    let size = mb(std::fs::metadata(&file)?.len());
    std::fs::remove_file(&file).ok();
    Ok(size)
}

fn recall(found: &[Vec<u64>], truth: &[Vec<(u64, f32)>]) -> f64 {
    let mut hit = 0usize;
    let mut all = 0usize;
    for (f, t) in found.iter().zip(truth) {
        all += t.len();
        hit += f
            .iter()
            .filter(|k| t.iter().any(|(tk, _)| tk == *k))
            .count();
    }
    hit as f64 / all.max(1) as f64
}

/// Resident memory of this process, bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Row {
    library: String,
    n: usize,
    recall: f64,
    /// Recall@k of the k best of the candidates by exact cosine (what dino does).
    #[serde(default)]
    recall_rescored: Option<f64>,
    build_s: f64,
    query_ms: f64,
    full_s: Option<f64>,
    memory_mb: f64,
    file_mb: Option<f64>,
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn usearch_row(
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
    let t = Instant::now();
    let hits = index.search(&gq, args.k, Some(&own), &|_| {})?;
    let query_ms = t.elapsed().as_secs_f64() * 1e3 / sample.len() as f64;
    let found: Vec<Vec<u64>> = hits
        .iter()
        .map(|h| h.iter().map(|x| x.key).collect())
        .collect();
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

/// USearch on a collection whose f32 rows are never all in memory (`--streamed`: 10M x 1536
/// is 61 GB): rows are made block by block, projected onto the graph's principal components
/// (fitted on evenly spaced blocks), added, and dropped; only the graph's rows stay. A second
/// pass makes the rows again for the exact ground truth of the sampled queries and for the
/// full rows of their candidates (rescored as `dino dedup` does). The time of making rows is
/// left out of the build time. Rows go in as they are made (file order: `--insert-order` and
/// `--search-order` do not apply). The full self-search, when asked, times the graph's search of
/// every row alone: the rows to rescore with are gone (at 1M rescoring was a few percent of
/// it).
fn streamed_row(
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
    let t = Instant::now();
    let hits = index.search(&gq, args.k, Some(&own), &|_| {})?;
    let query_ms = t.elapsed().as_secs_f64() * 1e3 / sample.len() as f64;
    let found: Vec<Vec<u64>> = hits
        .iter()
        .map(|h| h.iter().map(|x| x.key).collect())
        .collect();
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

#[cfg(feature = "hnsw-rs")]
fn hnsw_rs_row(
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

fn exact_row(
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

fn faiss_rows(
    rows: &[f32],
    dim: usize,
    args: &Args,
    sample: &[usize],
    truth: &[Vec<(u64, f32)>],
) -> anyhow::Result<Vec<Row>> {
    let n = rows.len() / dim;
    let probe = Command::new(&args.python)
        .args(["-c", "import faiss"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "FAISS: not installed for {} (pip install faiss-cpu)",
            args.python
        );
        return Ok(Vec::new());
    }
    let dir = &args.work;
    npy::write(&dir.join("rows.npy"), &[n, dim], rows)?;
    let ids: Vec<i64> = sample.iter().map(|&i| i as i64).collect();
    npy::write(&dir.join("queries.npy"), &[ids.len()], &ids)?;
    let t: Vec<i64> = truth
        .iter()
        .flat_map(|t| t.iter().map(|(k, _)| *k as i64))
        .collect();
    npy::write(&dir.join("truth.npy"), &[truth.len(), args.k], &t)?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/ann_faiss.py");
    let out = Command::new(&args.python)
        .arg(script)
        .arg(dir)
        .args(["--k", &args.k.to_string()])
        .args(["--m", &args.connectivity.to_string()])
        .args(["--ef-construction", &args.expansion_add.to_string()])
        .args(["--ef-search", &args.expansion_search.to_string()])
        .args(["--full", if args.full { "1" } else { "0" }])
        .args(["--exact-full-max", &args.exact_full_max.to_string()])
        .args(["--threads", &rayon::current_num_threads().to_string()])
        .args([
            "--graph-dims",
            &args
                .graph_dims
                .iter()
                .copied()
                .find(|&g| g > 0)
                .unwrap_or(128)
                .to_string(),
        ])
        .args(["--candidates", &args.candidates.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running bench/ann_faiss.py")?;
    anyhow::ensure!(out.status.success(), "bench/ann_faiss.py failed");
    std::fs::remove_file(dir.join("rows.npy")).ok();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| Ok(serde_json::from_str::<Row>(l)?))
        .collect()
}

fn print_table(rows: &[Row]) {
    println!(
        "| library | descriptors | recall@k | recall@k, candidates rescored | build s | query ms | full self-search s | memory MB | file MB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.4} | {} | {:.1} | {:.3} | {} | {:.0} | {} |",
            r.library,
            r.n,
            r.recall,
            r.recall_rescored.map_or("-".into(), |v| format!("{v:.4}")),
            r.build_s,
            r.query_ms,
            r.full_s.map_or("-".into(), |s| format!("{s:.1}")),
            r.memory_mb,
            r.file_mb.map_or("-".into(), |s| format!("{s:.0}")),
        );
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.write_rows {
        let n = *args.sizes.first().context("--sizes")?;
        let rows = synthetic(n, args.dim, args.latent, args.seed);
        npy::write(path, &[n, args.dim], &rows)?;
        eprintln!(
            "{n} x {} descriptors written to {}",
            args.dim,
            path.display()
        );
        return Ok(());
    }
    std::fs::create_dir_all(&args.work)?;
    let mut table = Vec::new();
    for &n in &args.sizes {
        anyhow::ensure!(n > args.k, "--sizes must exceed --k");
        if args.streamed {
            let synth = Synthetic::new(n, args.dim, args.latent, args.seed);
            let q = args.queries.min(n);
            let sample: Vec<usize> = (0..q).map(|i| i * n / q).collect();
            for &gd in &args.graph_dims {
                for &qz in &args.quantization {
                    let r = streamed_row(&synth, &args, qz, gd, &sample)?;
                    eprintln!("{r:?}");
                    table.push(r);
                }
            }
            continue;
        }
        let t = Instant::now();
        let rows = synthetic(n, args.dim, args.latent, args.seed);
        eprintln!(
            "{n} synthetic descriptors of {} in {:.1} s",
            args.dim,
            t.elapsed().as_secs_f64()
        );
        let q = args.queries.min(n);
        let sample: Vec<usize> = (0..q).map(|i| i * n / q).collect();
        let t = Instant::now();
        let truth = exact_top_k(&rows, args.dim, &sample, args.k);
        eprintln!("exact ground truth in {:.1} s", t.elapsed().as_secs_f64());
        let mut push = |r: Row| {
            eprintln!("{r:?}");
            table.push(r);
        };
        for &gd in &args.graph_dims {
            for &qz in &args.quantization {
                push(usearch_row(
                    &rows, args.dim, &args, qz, gd, &sample, &truth,
                )?);
            }
        }
        #[cfg(feature = "hnsw-rs")]
        push(hnsw_rs_row(&rows, args.dim, &args, &sample, &truth)?);
        if n <= args.exact_full_max {
            push(exact_row(&rows, args.dim, &args, &sample, &truth)?);
        }
        if !args.no_faiss {
            for r in faiss_rows(&rows, args.dim, &args, &sample, &truth)? {
                push(r);
            }
        }
    }
    println!(
        "\n{} threads, dim {}, k {}, M {}, efConstruction {}, ef {}; recall against the exact search on {} sampled queries; full = build + every row searched",
        rayon::current_num_threads(),
        args.dim,
        args.k,
        args.connectivity,
        args.expansion_add,
        args.expansion_search,
        args.queries
    );
    print_table(&table);
    Ok(())
}
