//! Nearest neighbours of a collection's descriptors for `dino dedup` and `dino retrieve`: the
//! exact search (dino-core, quadratic, the reference) or an HNSW index (`crate`'s `ann`,
//! USearch) above a size, kept on disk beside the feature index and updated in place when
//! files are added, changed or removed, so a second run over a grown folder only inserts
//! the new images.
//!
//! Above a few hundred dimensions the graph is built on the descriptors' top principal
//! components (`--graph-dims`, `ann_projection`): it proposes `--candidates` x k rows per
//! query and the exact cosine of the full descriptors picks and orders the k kept, so the
//! scores are those of the exact search and only the recall is approximate. Rows need not be
//! L2-normalised: every score is a cosine similarity.
//!
//! The saved index is two files: `FILE.usearch` (the graph and the stored vectors) and
//! `FILE.usearch.json` (which file each key is, the settings, the projection, what the
//! vectors are, and the size and xxh3 hash of the graph file, checked before USearch reads
//! it: a damaged or foreign file is rebuilt, never trusted).

use std::path::{Path, PathBuf};

use anyhow::Context;
use dino_core::features::search::{Index, Neighbour};
use dino_native::ann::{HnswIndex, HnswSettings, Quantization, rescore, rows_at};
use dino_native::ann_order::similar_together;
use dino_native::ann_projection::{FIT_SAMPLE, GraphProjection};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::feature_store::{Entry, beside};
use crate::features::bar;

/// Which search finds the neighbours.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchKind {
    /// Exact up to --hnsw-above descriptors, HNSW beyond.
    Auto,
    /// Every pair compared: exact, time grows with the square of the collection (100k
    /// images: minutes; 1M: hours).
    Exact,
    /// Approximate (HNSW graph): recall@10 against exact 0.998 at 100k and at 1M
    /// descriptors and 0.983 at 3M (rows inserted in file order) with the default settings
    /// (0.90 at 10M with --expansion-add 128; BENCHMARKS.md); far faster than exact at scale.
    Hnsw,
}

/// The search options shared by `dino dedup` and `dino retrieve`.
#[derive(clap::Args, Debug, Clone)]
pub struct SearchArgs {
    /// Exact or approximate nearest-neighbour search.
    #[arg(long, value_enum, default_value_t = SearchKind::Auto)]
    pub search: SearchKind,
    /// With --search auto: collections larger than this use the HNSW index.
    #[arg(long, default_value_t = 100_000)]
    pub hnsw_above: usize,
    /// How the HNSW graph stores its rows: i8 takes 1 byte a dimension (1M descriptors on
    /// 128 dimensions: a 280 MB file, 530 MB while building), as fast as any and within
    /// 0.2% of f32's recall at 100k; f16 and f32 take 2x and 4x the memory and build
    /// slower.
    #[arg(long, value_enum, default_value_t = HnswSettings::default().quantization)]
    pub quantization: Quantization,
    /// HNSW links per node (M): more raise recall and memory.
    #[arg(long, default_value_t = HnswSettings::default().connectivity)]
    pub connectivity: usize,
    /// HNSW candidates examined per insertion (efConstruction): more build a better graph,
    /// slower to build and faster to search (256 against 128 at 1M descriptors: recall@10
    /// 0.997 against 0.990, a third less time per query, 1.1-1.5x the build time). Another value
    /// builds a new graph.
    #[arg(long, default_value_t = HnswSettings::default().expansion_add)]
    pub expansion_add: usize,
    /// HNSW candidates examined per query (ef): more raise recall, slower queries (at least
    /// the candidates asked for are examined). Search-time only: a saved graph is reused
    /// with any value.
    #[arg(long, default_value_t = HnswSettings::default().expansion_search)]
    pub expansion_search: usize,
    /// The HNSW graph is built on the descriptors' top principal components, this many
    /// (fitted on 20k evenly spaced rows, saved with the index); 0 builds it on the full
    /// descriptors. Fewer build and search faster; the exact rescoring of the candidates
    /// keeps the scores exact, only recall depends on it (BENCHMARKS.md).
    #[arg(long, default_value_t = 128)]
    pub graph_dims: usize,
    /// Candidates the graph proposes per neighbour kept (`--k` x this are rescored with the
    /// exact cosine of the full descriptors): more raise recall at a small cost.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub candidates: u16,
}

impl SearchArgs {
    fn settings(&self) -> HnswSettings {
        HnswSettings {
            quantization: self.quantization,
            connectivity: self.connectivity,
            expansion_add: self.expansion_add,
            expansion_search: self.expansion_search,
        }
    }

    /// Dimensions of the graph for `n` rows of `dim`: `None` for the full rows (asked for, or
    /// too few rows or dimensions for the projection to pay).
    fn projected_dims(&self, n: usize, dim: usize) -> Option<usize> {
        (self.graph_dims > 0 && self.graph_dims < dim && n > 2 * self.graph_dims)
            .then_some(self.graph_dims)
    }

    /// Whether a collection of `n` descriptors is searched with the HNSW index.
    pub fn approximate(&self, n: usize) -> bool {
        match self.search {
            SearchKind::Auto => n > self.hnsw_above,
            SearchKind::Exact => false,
            SearchKind::Hnsw => true,
        }
    }
}

/// What building the searcher did (for the reports).
#[derive(Debug, Default, Clone, Serialize)]
pub struct SearchReport {
    pub kind: String,
    /// HNSW: entries inserted, removed and kept from the saved index.
    pub added: usize,
    pub removed: usize,
    pub kept: usize,
    /// HNSW: bytes of the index in memory.
    pub memory_bytes: usize,
    /// HNSW: dimensions of the graph (principal components), and the share of the
    /// variance they hold; the full descriptors' width when not projected.
    pub graph_dims: usize,
    pub graph_energy: Option<f32>,
    /// Why a saved index was not used (absent, other settings, damaged).
    pub rebuilt_because: Option<String>,
    /// HNSW: seconds spent reading and checking the saved graph, fitting the projection,
    /// inserting rows and writing the graph back (where a first run's time goes).
    pub seconds: BuildSeconds,
}

/// Seconds of each part of bringing the HNSW index up to date.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct BuildSeconds {
    pub load: f64,
    pub fit: f64,
    pub insert: f64,
    pub save: f64,
}

impl SearchReport {
    /// One line on what the HNSW index did (nothing for the exact search).
    pub fn print(&self, saved: Option<&Path>) {
        if self.kind == "exact" {
            return;
        }
        let place = saved.map_or("in memory".to_string(), |p| format!("{}", p.display()));
        eprintln!(
            "HNSW index {place}: {} kept, {} inserted, {} removed, {} in memory, graph on {} dimensions{}{}; {}",
            self.kept,
            self.added,
            self.removed,
            indicatif::HumanBytes(self.memory_bytes as u64),
            self.graph_dims,
            self.graph_energy.map_or(String::new(), |e| format!(
                " ({:.0}% of the variance)",
                100.0 * e
            )),
            self.rebuilt_because
                .as_ref()
                .filter(|_| saved.is_some())
                .map_or(String::new(), |w| format!(" (built anew: {w})")),
            self.seconds
        );
    }
}

impl std::fmt::Display for BuildSeconds {
    /// "read 2.1 s, projection fitted 3.0 s, inserted 310.2 s, written 4.0 s", the parts
    /// that took time.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = [
            ("read", self.load),
            ("projection fitted", self.fit),
            ("inserted", self.insert),
            ("written", self.save),
        ];
        let shown: Vec<String> = parts
            .iter()
            .filter(|(_, s)| *s > 0.0)
            .map(|(what, s)| format!("{what} {s:.1} s"))
            .collect();
        if shown.is_empty() {
            f.write_str("nothing to do")
        } else {
            f.write_str(&shown.join(", "))
        }
    }
}

/// The sidecar of a saved HNSW index.
#[derive(Serialize, Deserialize)]
struct Sidecar {
    /// What the stored vectors are (descriptor, weights, whitening): another space means
    /// another index.
    space: String,
    settings: HnswSettings,
    /// Width of the descriptors.
    dim: usize,
    /// What the graph's rows are: the descriptors projected by this, or the descriptors.
    projection: Option<GraphProjection>,
    /// The graph file's length and xxh3-64.
    bytes: u64,
    hash: u64,
    next_key: u64,
    /// Each indexed file as it was, with its key.
    keys: Vec<(Entry, u64)>,
}

/// Where the HNSW index of a feature index file is kept: `FILE.usearch`.
pub fn saved_index_path(feature_index: &Path) -> PathBuf {
    beside(feature_index, ".usearch")
}

fn sidecar_path(index: &Path) -> PathBuf {
    beside(index, ".json")
}

fn file_hash(path: &Path) -> anyhow::Result<(u64, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, h.digest()))
}

/// Neighbours of rows of a collection, by the exact search or the HNSW index.
pub enum Searcher {
    Exact(Index),
    Hnsw {
        index: HnswIndex,
        /// What the graph's rows are made of (None: the rows themselves).
        projection: Option<Box<GraphProjection>>,
        /// Rows of the collection.
        dim: usize,
        /// Key of each row of the collection, and back.
        keys: Vec<u64>,
        rows_of: FxHashMap<u64, usize>,
        /// Candidates per neighbour kept.
        candidates: usize,
    },
}

/// Rows inserted into the graph at once (gathered, projected, added): bounds the memory an
/// insertion of a million rows needs beyond the graph.
const ADD_BLOCK: usize = 32_768;

/// Searches of at least this many queries, and insertions of at least this many rows, take
/// them cell by cell ([`cell_order`]).
const ORDERED_FROM: usize = 20_000;

/// Whether the user left the cell order on (`DINO_CELL_ORDER=0` turns it off, to compare).
fn ordered() -> bool {
    std::env::var("DINO_CELL_ORDER").map_or(true, |v| v != "0")
}

/// The rows `ids` of `rows` (rows of `dim`) listed so that similar rows follow each other,
/// as positions in `ids` ([`similar_together`] on the rows as the graph sees them).
fn cell_order(
    projection: Option<&GraphProjection>,
    rows: &[f32],
    dim: usize,
    ids: &[usize],
) -> anyhow::Result<Option<Vec<usize>>> {
    let pb = crate::features::spinner("ordering the rows by similarity");
    let gd = projection.map_or(dim, |p| p.dims());
    let order = similar_together(ids.len(), gd, |positions| {
        let picked: Vec<usize> = positions.iter().map(|&p| ids[p]).collect();
        let block = rows_at(rows, dim, &picked);
        match projection {
            Some(p) => p.project(&block),
            None => Ok(normalized(&block, dim)),
        }
    });
    pb.finish_and_clear();
    order
}

/// L2-normalised copy of rows (the exact search compares by dot product).
fn normalized(rows: &[f32], dim: usize) -> Vec<f32> {
    let mut v = rows.to_vec();
    dino_core::features::l2_normalize(&mut v, dim);
    v
}

impl Searcher {
    /// The searcher for `rows` (`entries.len()` rows of `dim`). With
    /// `saved = Some((path, space))`, an HNSW index is read from `path` when it holds the
    /// same `space` and settings, brought up to date (stale entries removed, new ones
    /// inserted) and written back; otherwise built and written there.
    pub fn build(
        args: &SearchArgs,
        rows: &[f32],
        dim: usize,
        entries: &[Entry],
        saved: Option<(&Path, &str)>,
    ) -> anyhow::Result<(Self, SearchReport)> {
        let n = entries.len();
        anyhow::ensure!(dim > 0 && rows.len() == n * dim, "one row per file");
        if !args.approximate(n) {
            let report = SearchReport {
                kind: "exact".into(),
                ..SearchReport::default()
            };
            let index = Index::new(&normalized(rows, dim), dim)?;
            return Ok((Searcher::Exact(index), report));
        }
        let settings = args.settings();
        let mut report = SearchReport {
            kind: format!("hnsw-{}", crate::choice_name(&settings.quantization)),
            ..SearchReport::default()
        };
        let want_dims = args.projected_dims(n, dim);
        eprintln!(
            "HNSW index of {n} x {dim} ({}, M {}, graph on {} dimensions): about {} of memory",
            crate::choice_name(&settings.quantization),
            settings.connectivity,
            want_dims.unwrap_or(dim),
            indicatif::HumanBytes(settings.memory_bytes(n, want_dims.unwrap_or(dim)))
        );
        let clock = std::time::Instant::now();
        let found = match saved {
            Some((path, space)) => match Self::load(path, space, dim, want_dims, settings) {
                Ok(found) => Some(found),
                Err(why) => {
                    report.rebuilt_because = Some(format!("{why:#}"));
                    None
                }
            },
            None => None,
        };
        // a first run only looked for the file: no read to report
        if let Some((path, _)) = saved
            && path.exists()
        {
            report.seconds.load = clock.elapsed().as_secs_f64();
        }
        let (index, projection, old) = match found {
            Some((index, side)) => (index, side.projection.clone(), Some(side)),
            None => {
                let clock = std::time::Instant::now();
                let projection = want_dims
                    .map(|k| {
                        let pb = crate::features::spinner("fitting the graph's projection");
                        let p = GraphProjection::fit(rows, dim, k, FIT_SAMPLE);
                        pb.finish_and_clear();
                        p
                    })
                    .transpose()?;
                report.seconds.fit = clock.elapsed().as_secs_f64();
                let gd = projection.as_ref().map_or(dim, |p| p.dims());
                (HnswIndex::new(gd, settings)?, projection, None)
            }
        };
        report.graph_dims = index.dim();
        report.graph_energy = projection.as_ref().map(|p| p.energy());
        // keep the keys of unchanged files, drop the rest, insert new and changed files
        let mut known: FxHashMap<&Path, (&Entry, u64)> = FxHashMap::default();
        let mut next_key = 0;
        if let Some(s) = &old {
            next_key = s.next_key;
            for (e, k) in &s.keys {
                known.insert(e.path.as_path(), (e, *k));
            }
        }
        let mut keys = Vec::with_capacity(n);
        let mut fresh: Vec<(usize, u64)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match known.remove(e.path.as_path()) {
                Some((old, k)) if old == e && index.contains(k) => {
                    keys.push(k);
                    report.kept += 1;
                    continue;
                }
                Some((_, k)) => {
                    index.remove(k)?;
                    report.removed += 1;
                }
                None => {}
            }
            keys.push(next_key);
            fresh.push((i, next_key));
            next_key += 1;
        }
        for (_, k) in known.into_values() {
            index.remove(k)?;
            report.removed += 1;
        }
        let clock = std::time::Instant::now();
        // many new rows go in cell by cell: similar rows follow each other (dino_native::ann_order)
        if fresh.len() >= ORDERED_FROM && ordered() {
            let rows_of_fresh: Vec<usize> = fresh.iter().map(|&(i, _)| i).collect();
            if let Some(order) = cell_order(projection.as_ref(), rows, dim, &rows_of_fresh)? {
                fresh = order.into_iter().map(|j| fresh[j]).collect();
            }
        }
        if !fresh.is_empty() {
            let pb = bar(fresh.len(), "indexing");
            for block in fresh.chunks(ADD_BLOCK) {
                let ks: Vec<u64> = block.iter().map(|&(_, k)| k).collect();
                let ids: Vec<usize> = block.iter().map(|&(i, _)| i).collect();
                let gathered = rows_at(rows, dim, &ids);
                let graph_rows = match &projection {
                    Some(p) => p.project(&gathered)?,
                    None => gathered,
                };
                index.add(&ks, &graph_rows, &|c| pb.inc(c as u64))?;
            }
            pb.finish_and_clear();
            report.seconds.insert = clock.elapsed().as_secs_f64();
        }
        report.added = fresh.len();
        let clock = std::time::Instant::now();
        if let Some((path, space)) = saved
            && (old.is_none() || report.added > 0 || report.removed > 0)
        {
            Self::save(
                &index,
                projection.as_ref(),
                dim,
                path,
                space,
                next_key,
                entries,
                &keys,
            )?;
            report.seconds.save = clock.elapsed().as_secs_f64();
        }
        report.memory_bytes = index.memory_usage();
        let rows_of = keys.iter().enumerate().map(|(i, &k)| (k, i)).collect();
        Ok((
            Searcher::Hnsw {
                index,
                projection: projection.map(Box::new),
                dim,
                keys,
                rows_of,
                candidates: args.candidates as usize,
            },
            report,
        ))
    }

    fn load(
        path: &Path,
        space: &str,
        dim: usize,
        graph_dims: Option<usize>,
        settings: HnswSettings,
    ) -> anyhow::Result<(HnswIndex, Sidecar)> {
        let side = sidecar_path(path);
        let text = match std::fs::read_to_string(&side) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                anyhow::bail!("no saved index at {}", path.display())
            }
            Err(e) => return Err(e).with_context(|| format!("{}", side.display())),
        };
        let s: Sidecar = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an index description", side.display()))?;
        anyhow::ensure!(s.space == space, "the saved index holds other descriptors");
        anyhow::ensure!(
            s.settings.builds_same_graph(&settings),
            "the saved index was built with {}, this run asks for {}",
            s.settings,
            settings
        );
        anyhow::ensure!(
            s.dim == dim,
            "the saved index holds {}-d descriptors, these are {dim}-d",
            s.dim
        );
        let saved_dims = match &s.projection {
            Some(p) => {
                anyhow::ensure!(
                    p.is_consistent() && p.dim_in() == dim,
                    "the saved projection is damaged"
                );
                Some(p.dims())
            }
            None => None,
        };
        anyhow::ensure!(
            saved_dims == graph_dims,
            "the saved graph is on {} dimensions, {} asked for",
            saved_dims.unwrap_or(dim),
            graph_dims.unwrap_or(dim)
        );
        let graph_dim = graph_dims.unwrap_or(dim);
        let (bytes, hash) = file_hash(path)?;
        anyhow::ensure!(
            bytes == s.bytes && hash == s.hash,
            "{} does not match its description (damaged or replaced)",
            path.display()
        );
        let index = HnswIndex::load(path, graph_dim, settings)?
            .context("the saved index has other settings")?;
        Ok((index, s))
    }

    #[allow(clippy::too_many_arguments)]
    fn save(
        index: &HnswIndex,
        projection: Option<&GraphProjection>,
        dim: usize,
        path: &Path,
        space: &str,
        next_key: u64,
        entries: &[Entry],
        keys: &[u64],
    ) -> anyhow::Result<()> {
        index.save(path)?;
        let (bytes, hash) = file_hash(path)?;
        let side = Sidecar {
            space: space.to_string(),
            settings: index.settings(),
            dim,
            projection: projection.cloned(),
            bytes,
            hash,
            next_key,
            keys: entries.iter().cloned().zip(keys.iter().copied()).collect(),
        };
        dino_core::atomic_write(&sidecar_path(path), &serde_json::to_vec(&side)?)
            .context("writing the index description")?;
        Ok(())
    }

    /// The `k` nearest rows of the collection to each query row, most similar first; with
    /// `skip_self`, query `i` is row `i` and is left out of its results. `database` is the
    /// rows the searcher was built on: the HNSW graph proposes `--candidates` x k rows and
    /// their exact cosine similarities from these rows choose and order the k kept, so scores
    /// (and thresholds on them) mean exactly what they mean with the exact search.
    pub fn search(
        &self,
        queries: &[f32],
        k: usize,
        skip_self: bool,
        database: &[f32],
    ) -> anyhow::Result<Vec<Vec<Neighbour>>> {
        // a long search takes its queries cell by cell (dino_native::ann_order)
        let order = match self {
            Searcher::Hnsw {
                projection, dim, ..
            } if queries.len() >= ORDERED_FROM * dim && ordered() => {
                let all: Vec<usize> = (0..queries.len() / dim).collect();
                cell_order(projection.as_deref(), queries, *dim, &all)?
            }
            _ => None,
        };
        self.search_in_order(queries, k, skip_self, database, order.as_deref())
    }

    /// [`Searcher::search`] with the HNSW queries taken in `order` (a permutation of the
    /// query numbers; `None`: as they come). The answers are the same in any order.
    fn search_in_order(
        &self,
        queries: &[f32],
        k: usize,
        skip_self: bool,
        database: &[f32],
        order: Option<&[usize]>,
    ) -> anyhow::Result<Vec<Vec<Neighbour>>> {
        match self {
            Searcher::Exact(index) => {
                Ok(index.search(&normalized(queries, index.dim()), k, skip_self)?)
            }
            Searcher::Hnsw {
                index,
                projection,
                dim,
                keys,
                rows_of,
                candidates,
            } => {
                let d = *dim;
                anyhow::ensure!(database.len() == keys.len() * d, "one row per key");
                anyhow::ensure!(queries.len().is_multiple_of(d), "queries of {d} values");
                let m = queries.len() / d;
                anyhow::ensure!(
                    !skip_self || m == keys.len(),
                    "a self-search takes every row"
                );
                anyhow::ensure!(
                    order.is_none_or(|o| o.len() == m),
                    "an order of every query"
                );
                let pb = bar(m, "searching");
                let mut out = vec![Vec::new(); m];
                // in blocks: the projected queries and the candidates stay small
                for start in (0..m).step_by(ADD_BLOCK) {
                    let end = (start + ADD_BLOCK).min(m);
                    let picked: Option<&[usize]> = order.map(|o| &o[start..end]);
                    let gathered: Vec<f32>;
                    let block = match picked {
                        Some(rows) => {
                            gathered = rows_at(queries, d, rows);
                            &gathered[..]
                        }
                        None => &queries[start * d..end * d],
                    };
                    let projected = projection.as_ref().map(|p| p.project(block)).transpose()?;
                    let graph_queries = projected.as_deref().unwrap_or(block);
                    let own: Option<Vec<u64>> = skip_self.then(|| match picked {
                        Some(rows) => rows.iter().map(|&i| keys[i]).collect(),
                        None => keys[start..end].to_vec(),
                    });
                    let hits =
                        index.search(graph_queries, candidates * k, own.as_deref(), &|c| {
                            pb.inc(c as u64)
                        })?;
                    let kept: Vec<Vec<Neighbour>> = hits
                        .into_par_iter()
                        .enumerate()
                        .map(|(qi, h)| {
                            let rows = h
                                .iter()
                                .map(|x| {
                                    rows_of
                                        .get(&x.key)
                                        .copied()
                                        .context("the index returned an unknown key")
                                })
                                .collect::<anyhow::Result<Vec<_>>>()?;
                            let q = &block[qi * d..(qi + 1) * d];
                            Ok(rescore(q, rows, database, d, k))
                        })
                        .collect::<anyhow::Result<_>>()?;
                    for (qi, found) in kept.into_iter().enumerate() {
                        let i = picked.map_or(start + qi, |rows| rows[qi]);
                        out[i] = found;
                    }
                }
                pb.finish_and_clear();
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` unit rows of `dim` in clusters of about 20 (noisy copies of random centres), in
    /// random order.
    fn clustered(n: usize, dim: usize) -> Vec<f32> {
        let mut rng = dino_core::rng::seeded(11);
        let clusters = n / 20;
        let centres = dino_core::rng::normal(&mut rng, clusters * dim, 0.0, 1.0);
        let noise = dino_core::rng::normal(&mut rng, n * dim, 0.0, 0.15);
        let mut rows: Vec<f32> = (0..n * dim)
            .map(|x| {
                let (i, j) = (x / dim, x % dim);
                centres[(i * 7919 % clusters) * dim + j] + noise[x]
            })
            .collect();
        dino_core::features::l2_normalize(&mut rows, dim);
        rows
    }

    #[test]
    fn rows_inserted_and_searched_cell_by_cell_find_the_exact_neighbours_in_any_order() {
        // above ORDERED_FROM: the graph is built cell by cell and the self-search runs so
        let (n, dim, k) = (ORDERED_FROM + 4_000, 48, 10);
        let rows = clustered(n, dim);
        let entries: Vec<Entry> = (0..n)
            .map(|i| Entry {
                path: PathBuf::from(format!("{i}.jpg")),
                size: 1,
                modified_ns: 0,
            })
            .collect();
        let args = SearchArgs {
            search: SearchKind::Hnsw,
            hnsw_above: 0,
            quantization: Quantization::I8,
            connectivity: 16,
            expansion_add: 64,
            expansion_search: 64,
            graph_dims: 16,
            candidates: 4,
        };
        let (searcher, report) = Searcher::build(&args, &rows, dim, &entries, None).unwrap();
        assert_eq!((report.added, report.graph_dims), (n, 16));
        let all: Vec<usize> = (0..n).collect();
        let order = cell_order(None, &rows, dim, &all).unwrap().unwrap();
        assert_ne!(order, all, "the rows are listed by cell");
        let by_cell = searcher.search(&rows, k, true, &rows).unwrap();
        let as_they_come = searcher
            .search_in_order(&rows, k, true, &rows, None)
            .unwrap();
        let reversed: Vec<usize> = (0..n).rev().collect();
        let backwards = searcher
            .search_in_order(&rows, k, true, &rows, Some(&reversed))
            .unwrap();
        let ids = |found: &[Vec<Neighbour>]| -> Vec<Vec<usize>> {
            found
                .iter()
                .map(|f| f.iter().map(|x| x.index).collect())
                .collect()
        };
        assert_eq!(ids(&by_cell), ids(&as_they_come));
        assert_eq!(ids(&backwards), ids(&as_they_come));
        // and they are the exact search's, nearly always
        let exact = Index::new(&rows, dim).unwrap();
        let sample: Vec<usize> = (0..n).step_by(97).collect();
        let mut hit = 0;
        for &i in &sample {
            let truth = exact
                .search(&rows[i * dim..(i + 1) * dim], k + 1, false)
                .unwrap();
            let truth: Vec<usize> = truth[0]
                .iter()
                .map(|x| x.index)
                .filter(|&j| j != i)
                .take(k)
                .collect();
            hit += truth
                .iter()
                .filter(|j| by_cell[i].iter().any(|x| x.index == **j))
                .count();
        }
        let recall = hit as f64 / (sample.len() * k) as f64;
        assert!(recall > 0.97, "recall@{k} {recall}");
    }
}
