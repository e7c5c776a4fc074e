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
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use dino_native::ann::{HnswSettings, Quantization};
use dino_native::npy;

mod exact;
mod faiss;
#[cfg(feature = "hnsw-rs")]
mod pure_rust_hnsw;
mod streamed;
mod synthetic;
mod usearch_hnsw;

use exact::{exact_row, exact_top_k};
use faiss::faiss_rows;
#[cfg(feature = "hnsw-rs")]
use pure_rust_hnsw::hnsw_rs_row;
use streamed::streamed_row;
use synthetic::{Synthetic, synthetic};
use usearch_hnsw::usearch_row;

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
