//! Approximate nearest-neighbour search for collections too large for the exact search
//! (millions of images): an HNSW graph from USearch (unum-cloud), cosine similarity, vectors
//! stored as f32, f16 or i8. Chosen over `hnsw_rs` and FAISS by measurement (BENCHMARKS.md,
//! "Approximate search"): at equal recall it builds and searches faster, quantises (i8
//! holds 1M x 1536 descriptors in 1.5 GB), saves to one file that can be memory-mapped, and
//! removes and adds entries in place, so an index follows a changing folder incrementally.
//!
//! Keys are the caller's (stable ids of files); scores are cosine similarities (1 - the
//! USearch cosine distance), so thresholds mean the same as with the exact search.

use std::path::Path;

use anyhow::Context;
use rayon::prelude::*;
use usearch::ffi::{IndexOptions, MetricKind, ScalarKind};

/// How the index stores vectors (the search compares them in this form).
#[derive(
    clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize,
)]
pub enum Quantization {
    /// Full precision: 4 bytes a dimension.
    F32,
    /// Half precision: 2 bytes a dimension, recall as f32 on DINO descriptors.
    F16,
    /// 8-bit integers: 1 byte a dimension (each row scaled so its largest component is
    /// ±127); recall within 0.2% of f32's at 100k.
    I8,
}

impl Quantization {
    fn scalar(self) -> ScalarKind {
        match self {
            Quantization::F32 => ScalarKind::F32,
            Quantization::F16 => ScalarKind::F16,
            Quantization::I8 => ScalarKind::I8,
        }
    }

    /// Bytes a dimension.
    pub fn bytes(self) -> usize {
        match self {
            Quantization::F32 => 4,
            Quantization::F16 => 2,
            Quantization::I8 => 1,
        }
    }
}

/// The graph's settings: more connectivity and expansion give a higher recall for more
/// memory and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HnswSettings {
    pub quantization: Quantization,
    /// Neighbours a node keeps (HNSW's M).
    pub connectivity: usize,
    /// Candidates examined while inserting (efConstruction).
    pub expansion_add: usize,
    /// Candidates examined while searching (ef); raised to k when smaller.
    pub expansion_search: usize,
}

impl Default for HnswSettings {
    fn default() -> Self {
        HnswSettings {
            quantization: Quantization::I8,
            connectivity: 16,
            expansion_add: 256,
            expansion_search: 64,
        }
    }
}

/// The settings that shape the graph, as the flags that set them (for the messages that say
/// why a saved graph is rebuilt).
impl std::fmt::Display for HnswSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--quantization {} --connectivity {} --expansion-add {}",
            crate::choice_name(&self.quantization),
            self.connectivity,
            self.expansion_add
        )
    }
}

impl HnswSettings {
    /// Whether a graph built with `self` is the graph `other` would build: the search-time
    /// expansion (ef) is not part of it, so a saved graph serves any ef without a rebuild.
    pub fn builds_same_graph(&self, other: &HnswSettings) -> bool {
        (self.quantization, self.connectivity, self.expansion_add)
            == (other.quantization, other.connectivity, other.expansion_add)
    }

    /// Bytes the index of `n` vectors of `dim` takes in memory (and on disk, within a few
    /// percent): the vectors in their stored form, the base layer's links (2 x connectivity
    /// 4-byte slots), the upper layers (about 1/connectivity of the nodes) and a key and a
    /// level per node.
    pub fn memory_bytes(&self, n: usize, dim: usize) -> u64 {
        let m = self.connectivity.max(2) as u64;
        let n = n as u64;
        let vectors = n * (dim * self.quantization.bytes()) as u64;
        let base = n * (2 * m * 4 + 8);
        let upper = n / m * (m * 4 + 8);
        let nodes = n * 24;
        vectors + base + upper + nodes
    }
}

/// A row as 8-bit integers for the cosine metric, which does not see a vector's scale: the
/// largest component becomes ±127 and the others are rounded in proportion. (USearch's own
/// conversion scales the unit vector by 127 and truncates: at 1536 dimensions most
/// components become -3..3 and recall@10 falls to 0.94 on DINO-like descriptors; this one
/// keeps 0.99.)
fn quantize_i8(row: &[f32], out: &mut [i8]) {
    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    let s = if max > 0.0 && max.is_finite() {
        127.0 / max
    } else {
        0.0
    };
    for (o, v) in out.iter_mut().zip(row) {
        *o = (v * s).round().clamp(-127.0, 127.0) as i8;
    }
}

/// One hit: the caller's key and the cosine similarity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub key: u64,
    pub score: f32,
}

/// `q . r` and `r . r` in one pass over `r`, summed in 16 independent lanes so the compiler
/// vectorises both (a single running sum is a chain of dependent additions). The rescoring
/// of a 1M self-search reads 60 random rows of 6 KB per query, 370 GB in all, so memory
/// bounds it either way (a third of the CPU time of a 1M dedup that reuses its graph, by
/// `perf`, before and after); the lanes gain ~10% when the rows sit in cache.
fn dot_and_square(q: &[f32], r: &[f32]) -> (f32, f32) {
    const LANES: usize = 16;
    let (qc, qt) = q.as_chunks::<LANES>();
    let (rc, rt) = r.as_chunks::<LANES>();
    let (mut qr, mut rr) = ([0f32; LANES], [0f32; LANES]);
    for (a, b) in qc.iter().zip(rc) {
        for j in 0..LANES {
            qr[j] += a[j] * b[j];
            rr[j] += b[j] * b[j];
        }
    }
    let (mut dot, mut square) = (qr.iter().sum::<f32>(), rr.iter().sum::<f32>());
    for (a, b) in qt.iter().zip(rt) {
        dot += a * b;
        square += b * b;
    }
    (dot, square)
}

/// The `k` of `candidates` (indexes of rows of `rows`, `dim` wide) most similar to `query`
/// by their exact cosine similarity, most similar first (ties by index): how the graph's
/// proposals, found on quantised or projected rows, become exact results. Rows need not be
/// normalised; the query's norm is taken once.
pub fn rescore(
    query: &[f32],
    candidates: impl IntoIterator<Item = usize>,
    rows: &[f32],
    dim: usize,
    k: usize,
) -> Vec<dino_core::features::search::Neighbour> {
    let (_, qq) = dot_and_square(query, query);
    let mut found: Vec<_> = candidates
        .into_iter()
        .map(|index| {
            let r = &rows[index * dim..(index + 1) * dim];
            let (qr, rr) = dot_and_square(query, r);
            let norm = (qq * rr).sqrt();
            let score = if norm > 0.0 { qr / norm } else { 0.0 };
            dino_core::features::search::Neighbour { index, score }
        })
        .collect();
    found.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    found.truncate(k);
    found
}

/// The rows `ids` of `rows` (rows of `dim`), one after another: the rows an insertion, a
/// search or a rescoring takes, in the order it takes them.
pub fn rows_at(rows: &[f32], dim: usize, ids: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(ids.len() * dim);
    for &i in ids {
        out.extend_from_slice(&rows[i * dim..(i + 1) * dim]);
    }
    out
}

/// An HNSW index over L2-normalised rows.
pub struct HnswIndex {
    inner: usearch::Index,
    dim: usize,
    settings: HnswSettings,
    /// Memory was added since the last search: the next one first collapses the pages
    /// touched before their huge-page advice ([`crate::huge_pages::collapse`]).
    grown: std::sync::atomic::AtomicBool,
}

fn usearch_error(e: cxx::Exception) -> anyhow::Error {
    anyhow::anyhow!("{}", e.what())
}

impl HnswIndex {
    /// An empty index for rows of `dim`.
    pub fn new(dim: usize, settings: HnswSettings) -> anyhow::Result<Self> {
        anyhow::ensure!(dim > 0, "the index needs rows of at least one dimension");
        anyhow::ensure!(
            settings.connectivity >= 2 && settings.expansion_add >= 1,
            "connectivity must be at least 2 and the expansion at least 1"
        );
        let options = IndexOptions {
            dimensions: dim,
            metric: MetricKind::Cos,
            quantization: settings.quantization.scalar(),
            connectivity: settings.connectivity,
            expansion_add: settings.expansion_add,
            expansion_search: settings.expansion_search.max(1),
            multi: false,
        };
        let inner = usearch::Index::new(&options).map_err(usearch_error)?;
        Ok(HnswIndex {
            inner,
            dim,
            settings,
            grown: true.into(),
        })
    }

    /// Reads an index saved by [`HnswIndex::save`]; its dimension and settings must be those
    /// asked for (else `Ok(None)`: the caller builds a new one).
    pub fn load(path: &Path, dim: usize, settings: HnswSettings) -> anyhow::Result<Option<Self>> {
        let name = path.to_str().context("the index path is not UTF-8")?;
        let meta = usearch::Index::metadata(name)
            .map_err(usearch_error)
            .with_context(|| format!("{}: not a USearch index", path.display()))?;
        if meta.dimensions != dim as u64
            || meta.metric != MetricKind::Cos
            || meta.quantization != settings.quantization.scalar()
        {
            return Ok(None);
        }
        let index = Self::new(dim, settings)?;
        let _huge = crate::huge_pages::HugePages::start();
        index
            .inner
            .load(name)
            .map_err(usearch_error)
            .with_context(|| format!("reading {}", path.display()))?;
        if index.inner.connectivity() != settings.connectivity {
            return Ok(None);
        }
        index.inner.change_expansion_add(settings.expansion_add);
        index
            .inner
            .change_expansion_search(settings.expansion_search.max(1));
        Ok(Some(index))
    }

    /// Writes the index atomically (`dino_core::atomic_replace`: a temporary file beside it,
    /// fsync, rename), so a killed run leaves the previous index or the new one.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        dino_core::atomic_replace(path, |tmp| -> anyhow::Result<()> {
            let name = tmp.to_str().context("the index path is not UTF-8")?;
            self.inner
                .save(name)
                .map_err(usearch_error)
                .with_context(|| format!("writing {}", path.display()))
        })
    }

    /// Changes the candidates examined per query (ef) from now on.
    pub fn set_expansion_search(&mut self, ef: usize) {
        self.settings.expansion_search = ef.max(1);
        self.inner.change_expansion_search(ef.max(1));
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn settings(&self) -> HnswSettings {
        self.settings
    }

    pub fn len(&self) -> usize {
        self.inner.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, key: u64) -> bool {
        self.inner.contains(key)
    }

    /// The SIMD kernels USearch picked on this CPU.
    pub fn hardware_acceleration(&self) -> String {
        self.inner.hardware_acceleration()
    }

    /// Bytes the index holds in memory now.
    pub fn memory_usage(&self) -> usize {
        self.inner.memory_usage()
    }

    /// Adds rows (`keys.len()` rows of `dim`) from all threads; `progress` is called with
    /// the number added after each chunk.
    pub fn add(
        &self,
        keys: &[u64],
        rows: &[f32],
        progress: &(dyn Fn(usize) + Sync),
    ) -> anyhow::Result<()> {
        let d = self.dim;
        anyhow::ensure!(
            rows.len() == keys.len() * d,
            "{} values are not {} rows of {d}",
            rows.len(),
            keys.len()
        );
        let threads = rayon::current_num_threads();
        self.inner
            .reserve_capacity_and_threads(self.len() + keys.len(), threads)
            .map_err(usearch_error)
            .context("reserving memory for the index")?;
        // the arenas USearch maps as the graph grows get huge pages (crate::huge_pages)
        let _huge = crate::huge_pages::HugePages::start();
        self.grown.store(true, std::sync::atomic::Ordering::Relaxed);
        keys.par_chunks(256)
            .zip(rows.par_chunks(256 * d))
            .try_for_each(|(ks, rs)| {
                let mut q = vec![0i8; d];
                for (k, r) in ks.iter().zip(rs.chunks_exact(d)) {
                    match self.settings.quantization {
                        Quantization::I8 => {
                            quantize_i8(r, &mut q);
                            self.inner.add(*k, &q)
                        }
                        _ => self.inner.add(*k, r),
                    }
                    .map_err(usearch_error)?;
                }
                progress(ks.len());
                anyhow::Ok(())
            })
    }

    /// Removes a key; false when it was not there.
    pub fn remove(&self, key: u64) -> anyhow::Result<bool> {
        Ok(self.inner.remove(key).map_err(usearch_error)? > 0)
    }

    /// The `k` most similar entries of every query row, most similar first; with
    /// `own_keys`, query `i`'s own key `own_keys[i]` is left out of its results.
    pub fn search(
        &self,
        queries: &[f32],
        k: usize,
        own_keys: Option<&[u64]>,
        progress: &(dyn Fn(usize) + Sync),
    ) -> anyhow::Result<Vec<Vec<Hit>>> {
        let d = self.dim;
        anyhow::ensure!(
            queries.len().is_multiple_of(d),
            "queries have {} values, not rows of {d}",
            queries.len()
        );
        let m = queries.len() / d;
        if let Some(own) = own_keys {
            anyhow::ensure!(own.len() == m, "one own key per query");
        }
        if self.grown.swap(false, std::sync::atomic::Ordering::Relaxed) {
            crate::huge_pages::collapse();
        }
        let asked = k + own_keys.is_some() as usize;
        if self.settings.expansion_search < asked {
            self.inner.change_expansion_search(asked);
        }
        let rows: Vec<usize> = (0..m).collect();
        let out: Vec<Vec<Hit>> = rows
            .par_chunks(256)
            .map(|chunk| {
                let mut part = Vec::with_capacity(chunk.len());
                let mut q = vec![0i8; d];
                for &i in chunk {
                    let row = &queries[i * d..(i + 1) * d];
                    let found = match self.settings.quantization {
                        Quantization::I8 => {
                            quantize_i8(row, &mut q);
                            self.inner.search(&q, asked)
                        }
                        _ => self.inner.search(row, asked),
                    }
                    .map_err(usearch_error)?;
                    let own = own_keys.map(|o| o[i]);
                    let hits: Vec<Hit> = found
                        .keys
                        .iter()
                        .zip(&found.distances)
                        .filter(|(key, _)| Some(**key) != own)
                        .take(k)
                        .map(|(&key, &dist)| Hit {
                            key,
                            score: 1.0 - dist,
                        })
                        .collect();
                    part.push(hits);
                }
                progress(chunk.len());
                anyhow::Ok(part)
            })
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        self.inner
            .change_expansion_search(self.settings.expansion_search.max(1));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = dino_core::rng::seeded(seed);
        let mut v = dino_core::rng::normal(&mut rng, n * d, 0.0, 1.0);
        dino_core::features::l2_normalize(&mut v, d);
        v
    }

    #[test]
    fn finds_what_the_exact_search_finds_and_follows_removals() {
        let (n, d) = (2000, 32);
        let v = rows(n, d, 7);
        let keys: Vec<u64> = (0..n as u64).map(|i| i * 3 + 1).collect();
        let settings = HnswSettings {
            quantization: Quantization::F32,
            ..HnswSettings::default()
        };
        let index = HnswIndex::new(d, settings).unwrap();
        index.add(&keys, &v, &|_| {}).unwrap();
        assert_eq!(index.len(), n);
        let exact = dino_core::features::search::Index::new(&v, d).unwrap();
        let truth = exact.search(&v[..100 * d], 10, true).unwrap();
        let found = index
            .search(&v[..100 * d], 10, Some(&keys[..100]), &|_| {})
            .unwrap();
        let mut agree = 0;
        for (t, f) in truth.iter().zip(&found) {
            assert!(f.iter().all(|h| h.key != keys[t.len()]));
            for h in f {
                if t.iter().any(|e| keys[e.index] == h.key) {
                    agree += 1;
                }
            }
            // scores are cosine similarities
            let best = t[0];
            if f[0].key == keys[best.index] {
                assert!((f[0].score - best.score).abs() < 1e-4);
            }
        }
        assert!(agree >= 950, "recall@10 {agree}/1000");
        // removed keys are not found again
        for k in &keys[..10] {
            assert!(index.remove(*k).unwrap());
        }
        assert!(!index.remove(keys[0]).unwrap());
        let again = index.search(&v[..10 * d], 10, None, &|_| {}).unwrap();
        assert!(again.iter().flatten().all(|h| !keys[..10].contains(&h.key)));
        // saved and loaded: same results; other settings are not taken for these
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.usearch");
        index.save(&p).unwrap();
        let back = HnswIndex::load(&p, d, settings).unwrap().unwrap();
        assert_eq!(back.len(), n - 10);
        let same = back.search(&v[..10 * d], 10, None, &|_| {}).unwrap();
        assert_eq!(
            same.iter().flatten().map(|h| h.key).collect::<Vec<_>>(),
            again.iter().flatten().map(|h| h.key).collect::<Vec<_>>()
        );
        let other = HnswSettings {
            quantization: Quantization::I8,
            ..settings
        };
        assert!(HnswIndex::load(&p, d, other).unwrap().is_none());
        assert!(HnswIndex::load(&p, d + 1, settings).unwrap().is_none());
        std::fs::write(&p, b"not an index").unwrap();
        assert!(HnswIndex::load(&p, d, settings).is_err());
    }

    #[test]
    fn dot_and_square_sum_every_dimension() {
        // widths below, at and beyond the 16 lanes, with a tail
        for d in [1, 15, 16, 37, 1536] {
            let q: Vec<f32> = (0..d).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
            let r: Vec<f32> = (0..d).map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0).collect();
            let dot: f64 = q.iter().zip(&r).map(|(a, b)| *a as f64 * *b as f64).sum();
            let square: f64 = r.iter().map(|b| *b as f64 * *b as f64).sum();
            let (got_dot, got_square) = dot_and_square(&q, &r);
            assert!(
                (got_dot as f64 - dot).abs() <= 1e-4 * (1.0 + dot.abs()),
                "{d}"
            );
            assert!((got_square as f64 - square).abs() <= 1e-4 * square, "{d}");
        }
    }

    #[test]
    fn rescoring_orders_candidates_by_exact_cosine_of_unnormalised_rows() {
        // rows 0..4 of width 2; row 3 is row 1 scaled (same cosine), row 4 is zero
        let rows = [1.0, 0.0, 0.0, 2.0, 1.0, 1.0, 0.0, 5.0, 0.0, 0.0];
        let q = [0.0, 3.0];
        let got = rescore(&q, [0, 4, 2, 3, 1], &rows, 2, 3);
        let idx: Vec<usize> = got.iter().map(|n| n.index).collect();
        assert_eq!(idx, vec![1, 3, 2], "ties by index, truncated to k");
        assert!((got[0].score - 1.0).abs() < 1e-6);
        assert!((got[2].score - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        // a zero row scores 0, never NaN
        let all = rescore(&q, [4], &rows, 2, 1);
        assert_eq!(all[0].score, 0.0);
    }
}
