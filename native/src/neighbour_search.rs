//! Nearest neighbours of a collection's descriptors for `dino dedup` and `dino retrieve`: the
//! exact search (dino-core, quadratic, the reference) or an HNSW index (`crate`'s `ann`,
//! USearch) above a size, kept on disk beside the feature index and updated in place when
//! files are added, changed or removed, so a second run over a grown folder only inserts
//! the new images.
//!
//! The saved index is two files: `FILE.usearch` (the graph and the stored vectors) and
//! `FILE.usearch.json` (which file each key is, the settings, what the vectors are, and the
//! size and xxh3 hash of the graph file, checked before USearch reads it: a damaged or
//! foreign file is rebuilt, never trusted).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use dino_core::features::search::{Index, Neighbour};
use dino_native::ann::{HnswIndex, HnswSettings, Quantization};
use rayon::prelude::*;
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
    /// Approximate (HNSW graph): recall@10 against exact 0.999 at 100k descriptors, 0.96 at
    /// 1M with the default settings (BENCHMARKS.md); far faster than exact at scale.
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
    /// How the HNSW index stores descriptors: i8 takes 1 byte a dimension (1M x 1536: a
    /// 1.7 GB index), as fast as any and within 0.2% of f32's recall at 100k; f16 and f32
    /// take 2x and 4x the memory and build 1.5x and 2.4x slower.
    #[arg(long, value_enum, default_value_t = Quantization::I8)]
    pub quantization: Quantization,
    /// HNSW links per node (M): more raise recall and memory.
    #[arg(long, default_value_t = 16)]
    pub connectivity: usize,
    /// HNSW candidates examined per insertion (efConstruction): more build a better graph,
    /// slower.
    #[arg(long, default_value_t = 128)]
    pub expansion_add: usize,
    /// HNSW candidates examined per query (ef): more raise recall, slower queries (at least
    /// 2k + 1 is used). Above a million descriptors, 128-256 keep recall near 0.99.
    #[arg(long, default_value_t = 64)]
    pub expansion_search: usize,
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
    /// Why a saved index was not used (absent, other settings, damaged).
    pub rebuilt_because: Option<String>,
}

impl SearchReport {
    /// One line on what the HNSW index did (nothing for the exact search).
    pub fn print(&self, saved: Option<&Path>) {
        if self.kind == "exact" {
            return;
        }
        let place = saved.map_or("in memory".to_string(), |p| format!("{}", p.display()));
        eprintln!(
            "HNSW index {place}: {} kept, {} inserted, {} removed, {} in memory{}",
            self.kept,
            self.added,
            self.removed,
            indicatif::HumanBytes(self.memory_bytes as u64),
            self.rebuilt_because
                .as_ref()
                .filter(|_| saved.is_some())
                .map_or(String::new(), |w| format!(" (built anew: {w})"))
        );
    }
}

/// The sidecar of a saved HNSW index.
#[derive(Serialize, Deserialize)]
struct Sidecar {
    /// What the stored vectors are (descriptor, weights, whitening): another space means
    /// another index.
    space: String,
    settings: HnswSettings,
    dim: usize,
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
        /// Key of each row of the collection, and back.
        keys: Vec<u64>,
        rows_of: HashMap<u64, usize>,
    },
}

impl Searcher {
    /// The searcher for `rows` (`entries.len()` L2-normalised rows of `dim`). With
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
        anyhow::ensure!(rows.len() == n * dim, "one row per file");
        if !args.approximate(n) {
            let report = SearchReport {
                kind: "exact".into(),
                ..SearchReport::default()
            };
            return Ok((Searcher::Exact(Index::new(rows, dim)?), report));
        }
        let settings = args.settings();
        let mut report = SearchReport {
            kind: format!("hnsw-{}", crate::choice_name(&settings.quantization)),
            ..SearchReport::default()
        };
        eprintln!(
            "HNSW index of {n} x {dim} ({}, M {}): about {} of memory",
            crate::choice_name(&settings.quantization),
            settings.connectivity,
            indicatif::HumanBytes(settings.memory_bytes(n, dim))
        );
        let (index, old) = match saved {
            Some((path, space)) => match Self::load(path, space, dim, settings) {
                Ok(found) => found,
                Err(why) => {
                    report.rebuilt_because = Some(format!("{why:#}"));
                    (HnswIndex::new(dim, settings)?, None)
                }
            },
            None => (HnswIndex::new(dim, settings)?, None),
        };
        // keep the keys of unchanged files, drop the rest, insert new and changed files
        let mut known: HashMap<&Path, (&Entry, u64)> = HashMap::new();
        let mut next_key = 0;
        if let Some(s) = &old {
            next_key = s.next_key;
            for (e, k) in &s.keys {
                known.insert(e.path.as_path(), (e, *k));
            }
        }
        let mut keys = Vec::with_capacity(n);
        let mut fresh_keys = Vec::new();
        let mut fresh_rows = Vec::new();
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
            fresh_keys.push(next_key);
            fresh_rows.extend_from_slice(&rows[i * dim..(i + 1) * dim]);
            next_key += 1;
        }
        for (_, k) in known.into_values() {
            index.remove(k)?;
            report.removed += 1;
        }
        if !fresh_keys.is_empty() {
            let pb = bar(fresh_keys.len(), "indexing");
            index.add(&fresh_keys, &fresh_rows, &|c| pb.inc(c as u64))?;
            pb.finish_and_clear();
        }
        report.added = fresh_keys.len();
        drop(fresh_rows);
        if let Some((path, space)) = saved
            && (old.is_none() || report.added > 0 || report.removed > 0)
        {
            Self::save(&index, path, space, next_key, entries, &keys)?;
        }
        report.memory_bytes = index.memory_usage();
        let rows_of = keys.iter().enumerate().map(|(i, &k)| (k, i)).collect();
        Ok((
            Searcher::Hnsw {
                index,
                keys,
                rows_of,
            },
            report,
        ))
    }

    fn load(
        path: &Path,
        space: &str,
        dim: usize,
        settings: HnswSettings,
    ) -> anyhow::Result<(HnswIndex, Option<Sidecar>)> {
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
            s.settings == settings && s.dim == dim,
            "the saved index has other settings"
        );
        let (bytes, hash) = file_hash(path)?;
        anyhow::ensure!(
            bytes == s.bytes && hash == s.hash,
            "{} does not match its description (damaged or replaced)",
            path.display()
        );
        let index =
            HnswIndex::load(path, dim, settings)?.context("the saved index has other settings")?;
        Ok((index, Some(s)))
    }

    fn save(
        index: &HnswIndex,
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
            dim: index.dim(),
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
    /// rows the searcher was built on: the HNSW index proposes 2k candidates from its stored
    /// (quantised) vectors, and their exact cosine similarities from these rows choose and
    /// order the k kept, so scores (and thresholds on them) mean exactly what they mean
    /// with the exact search.
    pub fn search(
        &self,
        queries: &[f32],
        k: usize,
        skip_self: bool,
        database: &[f32],
    ) -> anyhow::Result<Vec<Vec<Neighbour>>> {
        match self {
            Searcher::Exact(index) => Ok(index.search(queries, k, skip_self)?),
            Searcher::Hnsw {
                index,
                keys,
                rows_of,
            } => {
                let d = index.dim();
                anyhow::ensure!(database.len() == keys.len() * d, "one row per key");
                let m = queries.len() / d;
                anyhow::ensure!(
                    !skip_self || m == keys.len(),
                    "a self-search takes every row"
                );
                let pb = bar(m, "searching");
                let own = skip_self.then_some(&keys[..]);
                let hits = index.search(queries, 2 * k, own, &|c| pb.inc(c as u64))?;
                pb.finish_and_clear();
                hits.into_par_iter()
                    .enumerate()
                    .map(|(qi, h)| {
                        let q = &queries[qi * d..(qi + 1) * d];
                        let mut found = h
                            .into_iter()
                            .map(|x| {
                                let index = *rows_of
                                    .get(&x.key)
                                    .context("the index returned an unknown key")?;
                                let r = &database[index * d..(index + 1) * d];
                                let score = q.iter().zip(r).map(|(a, b)| a * b).sum();
                                Ok(Neighbour { index, score })
                            })
                            .collect::<anyhow::Result<Vec<_>>>()?;
                        found.sort_by(|a, b| {
                            b.score.total_cmp(&a.score).then(a.index.cmp(&b.index))
                        });
                        found.truncate(k);
                        Ok(found)
                    })
                    .collect()
            }
        }
    }
}
