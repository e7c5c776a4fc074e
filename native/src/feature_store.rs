//! Features of an image collection kept on disk (a safetensors file: `features` `[N, D]`
//! plus a JSON header of the files and how the features were made), reused across runs and
//! updated incrementally: only new or changed files (size or modification time) are
//! computed, removed ones are dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use dino_core::imaging::Resize;

use crate::engine::Engine;
use crate::features::{Extracted, extract};

/// A file as it was when its features were computed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub path: PathBuf,
    pub size: u64,
    pub modified_ns: u128,
}

impl Entry {
    pub fn of(path: &Path) -> anyhow::Result<Self> {
        let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok(Entry {
            path: path.to_path_buf(),
            size: meta.len(),
            modified_ns,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    signature: String,
    entries: Vec<Entry>,
}

/// Features of a collection, row `i` for `entries[i]`.
pub struct FeatureStore {
    /// What the features depend on besides the images (weights, transform, descriptor).
    pub signature: String,
    pub entries: Vec<Entry>,
    pub dim: usize,
    pub rows: Vec<f32>,
}

/// What an update did.
#[derive(Debug, Default, Serialize)]
pub struct UpdateStats {
    pub reused: usize,
    pub computed: usize,
    pub removed: usize,
    pub skipped: Vec<(PathBuf, String)>,
}

impl FeatureStore {
    /// Reads a store; `Ok(None)` when the file does not exist.
    pub fn load(path: &Path) -> anyhow::Result<Option<Self>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("{}", path.display())),
        };
        let bad =
            |why: String| anyhow::anyhow!("{}: not a dino feature index ({why})", path.display());
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let header: Header = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("dino.index"))
            .ok_or_else(|| bad("no dino.index header".into()))
            .and_then(|h| serde_json::from_str(h).map_err(|e| bad(e.to_string())))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let t = st.tensor("features").map_err(|e| bad(e.to_string()))?;
        let shape = t.shape();
        if t.dtype() != Dtype::F32 || shape.len() != 2 || shape[0] != header.entries.len() {
            return Err(bad(format!(
                "features are {:?} {:?} for {} files",
                t.dtype(),
                shape,
                header.entries.len()
            )));
        }
        let rows = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Some(FeatureStore {
            signature: header.signature,
            entries: header.entries,
            dim: shape[1],
            rows,
        }))
    }

    /// Writes atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let header = serde_json::to_string(&Header {
            signature: self.signature.clone(),
            entries: self.entries.clone(),
        })?;
        let bytes: Vec<u8> = self.rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![self.entries.len(), self.dim], &bytes)?;
        let meta = HashMap::from([("dino.index".to_string(), header)]);
        let out = safetensors::serialize([("features", view)], Some(meta))?;
        dino_core::atomic_write(path, &out).with_context(|| {
            "writing the feature index (choose another place with --index-file)".to_string()
        })?;
        Ok(())
    }

    /// Features for `files` under `signature`: rows of an existing store at `path` are reused
    /// where file and signature are unchanged, the rest come from `compute` (which may skip
    /// unreadable files). The store is saved back when anything changed.
    pub fn update(
        path: Option<&Path>,
        signature: &str,
        files: &[PathBuf],
        compute: impl FnOnce(&[PathBuf]) -> anyhow::Result<Extracted>,
    ) -> anyhow::Result<(Self, UpdateStats)> {
        let old = match path {
            Some(p) => match Self::load(p) {
                Ok(s) => s.filter(|s| s.signature == signature),
                Err(e) => {
                    eprintln!("warning: {e:#}; computing everything again");
                    None
                }
            },
            None => None,
        };
        let mut known: HashMap<&Path, (usize, &Entry)> = HashMap::new();
        if let Some(s) = &old {
            for (i, e) in s.entries.iter().enumerate() {
                known.insert(e.path.as_path(), (i, e));
            }
        }
        let now: Vec<Entry> = files
            .iter()
            .map(|f| Entry::of(f))
            .collect::<anyhow::Result<_>>()?;
        let mut stats = UpdateStats::default();
        let todo: Vec<PathBuf> = now
            .iter()
            .filter(|e| known.get(e.path.as_path()).is_none_or(|(_, k)| *k != *e))
            .map(|e| e.path.clone())
            .collect();
        let fresh = if todo.is_empty() {
            None
        } else {
            Some(compute(&todo)?)
        };
        let dim = fresh
            .as_ref()
            .map(|f| f.dim)
            .or(old.as_ref().map(|s| s.dim))
            .unwrap_or(0);
        let mut fresh_rows: HashMap<&Path, &[f32]> = HashMap::new();
        if let Some(f) = &fresh {
            for (i, p) in f.files.iter().enumerate() {
                fresh_rows.insert(p.as_path(), &f.rows[i * dim..(i + 1) * dim]);
            }
            stats.computed = f.files.len();
            stats.skipped = f.skipped.clone();
        }
        let mut store = FeatureStore {
            signature: signature.to_string(),
            entries: Vec::with_capacity(files.len()),
            dim,
            rows: Vec::with_capacity(files.len() * dim),
        };
        for e in now {
            let row = match fresh_rows.get(e.path.as_path()) {
                Some(r) => *r,
                None => match (known.get(e.path.as_path()), &old) {
                    (Some((i, k)), Some(s)) if *k == &e => {
                        stats.reused += 1;
                        &s.rows[i * dim..(i + 1) * dim]
                    }
                    _ => continue, // unreadable: skipped
                },
            };
            store.rows.extend_from_slice(row);
            store.entries.push(e);
        }
        if let Some(s) = &old {
            let current: std::collections::HashSet<&Path> =
                files.iter().map(|f| f.as_path()).collect();
            stats.removed = s
                .entries
                .iter()
                .filter(|e| !current.contains(e.path.as_path()))
                .count();
        }
        if let Some(p) = path
            && (stats.computed > 0 || stats.removed > 0 || old.is_none())
        {
            store.save(p)?;
        }
        Ok((store, stats))
    }
}

/// How the rows of new or changed files are computed: [`extract`] with these settings.
pub struct Recipe<'a> {
    pub resize: &'a Resize,
    pub batch_size: usize,
    /// Progress bar label.
    pub label: &'a str,
    /// Row width `f` returns per image.
    pub dim: usize,
}

impl FeatureStore {
    /// [`FeatureStore::update`] with the rows of new files from `f` over batches of prepared
    /// images; unreadable files are skipped and reported as warnings (and in the stats).
    pub fn of_files(
        index: Option<&Path>,
        signature: &str,
        engine: &Engine,
        files: &[PathBuf],
        recipe: &Recipe,
        f: impl Fn(&[image::RgbImage]) -> anyhow::Result<Vec<f32>>,
    ) -> anyhow::Result<(Self, UpdateStats)> {
        let (store, stats) = Self::update(index, signature, files, |todo| {
            let r = recipe;
            extract(
                engine,
                todo,
                r.resize,
                r.batch_size,
                r.label,
                r.dim,
                true,
                f,
            )
        })?;
        for (p, why) in &stats.skipped {
            eprintln!("warning: skipped {}: {why}", p.display());
        }
        Ok((store, stats))
    }
}

/// Identity of a weights file for signatures: canonical path, size and modification time.
pub fn weights_identity(path: &Path) -> anyhow::Result<String> {
    let e = Entry::of(path)?;
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(format!("{}:{}:{}", canon.display(), e.size, e.modified_ns))
}
