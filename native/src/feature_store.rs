//! Features of an image collection kept on disk (a safetensors file: `features` `[N, D]`
//! plus a JSON header of the files and how the features were made), reused across runs and
//! updated incrementally: only new or changed files (size or modification time) are
//! computed, removed ones are dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use std::sync::Arc;

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use dino_core::imaging::Resize;

use crate::engine::Engine;
use crate::feature_rows::FeatureRows;
use crate::features::{Extracted, bar};

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

/// The store's description in the safetensors header. The files themselves are kept in
/// the `entries` tensor (JSON bytes), not here: safetensors caps its header at 100 MB, which
/// a million paths would pass; stores written before kept them here and still load.
#[derive(Serialize, Deserialize)]
struct Header {
    signature: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    entries: Vec<Entry>,
}

/// Features of a collection, row `i` for `entries[i]`.
pub struct FeatureStore {
    /// What the features depend on besides the images (weights, transform, descriptor).
    pub signature: String,
    pub entries: Vec<Entry>,
    pub dim: usize,
    /// Mapped from the saved file when the store was read or written there.
    pub rows: FeatureRows,
}

/// What an update did.
#[derive(Debug, Default, Serialize)]
pub struct UpdateStats {
    pub reused: usize,
    /// Rows an interrupted run had computed (its saved parts).
    pub resumed: usize,
    pub computed: usize,
    pub removed: usize,
    pub skipped: Vec<(PathBuf, String)>,
}

impl FeatureStore {
    /// Reads a store; `Ok(None)` when the file does not exist. The rows are mapped, not read
    /// (on Unix; elsewhere a mapped file could not be replaced while in use, so they are
    /// copied into memory).
    pub fn load(path: &Path) -> anyhow::Result<Option<Self>> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("{}", path.display())),
        };
        let bad =
            |why: String| anyhow::anyhow!("{}: not a dino feature index ({why})", path.display());
        let len = file
            .metadata()
            .with_context(|| format!("{}", path.display()))?
            .len();
        if len < 8 {
            return Err(bad(format!("{len} bytes")));
        }
        // SAFETY: dino replaces a store only by renaming a new file over it (atomic_replace),
        // never by writing into it, so the mapped bytes stay as they were while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("mapping {}", path.display()))?;
        let map = Arc::new(map);
        let st = SafeTensors::deserialize(&map[..]).map_err(|e| bad(e.to_string()))?;
        let (_, meta) = SafeTensors::read_metadata(&map[..]).map_err(|e| bad(e.to_string()))?;
        let header: Header = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("dino.index"))
            .ok_or_else(|| bad("no dino.index header".into()))
            .and_then(|h| serde_json::from_str(h).map_err(|e| bad(e.to_string())))?;
        let entries: Vec<Entry> = match st.tensor("entries") {
            Ok(t) if t.dtype() == Dtype::U8 && t.shape().len() == 1 => {
                serde_json::from_slice(t.data()).map_err(|e| bad(format!("entries: {e}")))?
            }
            Ok(t) => return Err(bad(format!("entries are {:?} {:?}", t.dtype(), t.shape()))),
            Err(_) => header.entries,
        };
        let t = st.tensor("features").map_err(|e| bad(e.to_string()))?;
        let shape = t.shape();
        if t.dtype() != Dtype::F32 || shape.len() != 2 || shape[0] != entries.len() {
            return Err(bad(format!(
                "features are {:?} {:?} for {} files",
                t.dtype(),
                shape,
                entries.len()
            )));
        }
        let start = t.data().as_ptr() as usize - map.as_ptr() as usize;
        let mut rows = FeatureRows::of_map(map.clone(), start, shape[0] * shape[1]);
        if cfg!(not(unix)) {
            rows = FeatureRows::Owned(rows.to_vec());
        }
        Ok(Some(FeatureStore {
            signature: header.signature,
            entries,
            dim: shape[1],
            rows,
        }))
    }

    /// Writes atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        write_store(
            path,
            &self.signature,
            &self.entries,
            self.dim,
            [&self.rows[..]],
        )
    }

    /// Writes the store to `path` and maps it back from there (the rows in memory are
    /// released).
    fn save_and_map(self, path: &Path) -> anyhow::Result<Self> {
        self.save(path)?;
        Self::load(path)?.context("the feature index vanished after writing it")
    }
    /// Features for `files` under `signature`: rows of an existing store at `path` are reused
    /// where file and signature are unchanged, the rest come from `compute` (which may skip
    /// unreadable files), called on parts of [`PART_FILES`] files with the number of files
    /// to compute in all. Each part is saved beside the store as it is done
    /// (`FILE.part-NNNNN`), so a killed run starts again where it stopped; the store is
    /// saved back when anything changed, and the parts removed.
    pub fn update(
        path: Option<&Path>,
        signature: &str,
        files: &[PathBuf],
        mut compute: impl FnMut(&[PathBuf], usize) -> anyhow::Result<Extracted>,
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
        // rows an interrupted run computed (same signature; a damaged part is computed again)
        let left = match path {
            Some(p) => part_files(p)?,
            None => Vec::new(),
        };
        let parts: Vec<FeatureStore> = left
            .iter()
            .filter_map(|f| match Self::load(f) {
                Ok(s) => s.filter(|s| s.signature == signature),
                Err(e) => {
                    eprintln!("warning: {e:#}; its files are computed again");
                    None
                }
            })
            .collect();
        let mut known: HashMap<&Path, (&FeatureStore, usize)> = HashMap::new();
        for s in old.iter().chain(&parts) {
            for (i, e) in s.entries.iter().enumerate() {
                known.insert(e.path.as_path(), (s, i));
            }
        }
        let now: Vec<Entry> = files
            .iter()
            .map(|f| Entry::of(f))
            .collect::<anyhow::Result<_>>()?;
        let mut stats = UpdateStats::default();
        let unchanged = |e: &Entry| {
            known
                .get(e.path.as_path())
                .is_some_and(|(s, i)| s.entries[*i] == *e)
        };
        let todo: Vec<&Entry> = now.iter().filter(|e| !unchanged(e)).collect();
        let dim0 = old.as_ref().or(parts.first()).map(|s| s.dim).unwrap_or(0);
        let mut fresh: Vec<FeatureStore> = Vec::new();
        // numbered after the last part left (parts of other signatures are not overwritten)
        let mut next_part = left
            .last()
            .and_then(|p| {
                p.to_string_lossy()
                    .rsplit_once(".part-")?
                    .1
                    .parse::<usize>()
                    .ok()
            })
            .map_or(0, |i| i + 1);
        for chunk in todo.chunks(PART_FILES) {
            let names: Vec<PathBuf> = chunk.iter().map(|e| e.path.clone()).collect();
            let got = compute(&names, todo.len())?;
            let by_path: HashMap<&Path, &Entry> =
                chunk.iter().map(|e| (e.path.as_path(), *e)).collect();
            let part = FeatureStore {
                signature: signature.to_string(),
                entries: got
                    .files
                    .iter()
                    .map(|f| {
                        by_path
                            .get(f.as_path())
                            .map(|e| (*e).clone())
                            .context("the extraction returned a file it was not given")
                    })
                    .collect::<anyhow::Result<_>>()?,
                dim: got.dim,
                rows: got.rows.into(),
            };
            anyhow::ensure!(
                dim0 == 0 || part.entries.is_empty() || part.dim == dim0,
                "rows of {} values, the index has {dim0}",
                part.dim
            );
            stats.computed += part.entries.len();
            stats.skipped.extend(got.skipped);
            // saved, then read back mapped: the computed rows leave memory part by part
            let part = match path {
                Some(p) if !part.entries.is_empty() => {
                    next_part += 1;
                    part.save_and_map(&part_path(p, next_part - 1))?
                }
                _ => part,
            };
            fresh.push(part);
        }
        let dim = fresh
            .iter()
            .find(|f| !f.entries.is_empty())
            .map(|f| f.dim)
            .unwrap_or(dim0);
        let mut fresh_rows: HashMap<&Path, &[f32]> = HashMap::new();
        for f in &fresh {
            for (i, e) in f.entries.iter().enumerate() {
                fresh_rows.insert(e.path.as_path(), &f.rows[i * dim..(i + 1) * dim]);
            }
        }
        // the new store's rows, in the order of `files`, from wherever they are
        let mut entries = Vec::with_capacity(files.len());
        let mut blocks: Vec<&[f32]> = Vec::with_capacity(files.len());
        for e in now {
            let row = match fresh_rows.get(e.path.as_path()) {
                Some(r) => *r,
                None => match known.get(e.path.as_path()) {
                    Some((s, i)) if s.entries[*i] == e => {
                        if old.as_ref().is_some_and(|o| std::ptr::eq(o, *s)) {
                            stats.reused += 1;
                        } else {
                            stats.resumed += 1;
                        }
                        &s.rows[i * dim..(i + 1) * dim]
                    }
                    _ => continue, // unreadable: skipped
                },
            };
            blocks.push(row);
            entries.push(e);
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
        let changed = stats.computed > 0 || stats.resumed > 0 || stats.removed > 0;
        let unchanged_old = !changed && old.as_ref().is_some_and(|o| o.entries == entries);
        let written = match path {
            Some(p) if changed || old.is_none() => {
                // streamed to the file, then mapped back
                write_store(p, signature, &entries, dim, blocks.iter().copied())?;
                Some(p)
            }
            _ => None,
        };
        let built = (written.is_none() && !unchanged_old).then(|| FeatureStore {
            signature: signature.to_string(),
            rows: blocks.concat().into(),
            entries,
            dim,
        });
        drop((known, fresh_rows, blocks));
        drop((fresh, parts));
        let store = match (built, written) {
            (Some(s), _) => s,
            (None, Some(p)) => {
                drop(old);
                Self::load(p)?.context("the feature index vanished after writing it")?
            }
            (None, None) => old.context("no feature index to keep")?,
        };
        if let Some(p) = path {
            for f in part_files(p)? {
                std::fs::remove_file(&f).with_context(|| format!("{}", f.display()))?;
            }
        }
        Ok((store, stats))
    }
}

/// Files computed between two saved parts of an update: a killed run loses at most these.
pub const PART_FILES: usize = 2048;

/// Writes a store atomically from its rows in pieces (`blocks`, one after another, in the
/// order of `entries`), streamed to the file: no matrix of all the rows is built.
fn write_store<'a>(
    path: &Path,
    signature: &str,
    entries: &[Entry],
    dim: usize,
    blocks: impl IntoIterator<Item = &'a [f32]>,
) -> anyhow::Result<()> {
    use safetensors::tensor::{Metadata, TensorInfo};
    use std::io::Write;
    let n = entries.len();
    let files = serde_json::to_vec(entries)?;
    let header = serde_json::to_string(&Header {
        signature: signature.to_string(),
        entries: Vec::new(),
    })?;
    let data = n * dim * 4;
    let meta = Metadata::new(
        Some(HashMap::from([("dino.index".to_string(), header)])),
        vec![
            (
                "features".to_string(),
                TensorInfo {
                    dtype: Dtype::F32,
                    shape: vec![n, dim],
                    data_offsets: (0, data),
                },
            ),
            (
                "entries".to_string(),
                TensorInfo {
                    dtype: Dtype::U8,
                    shape: vec![files.len()],
                    data_offsets: (data, data + files.len()),
                },
            ),
        ],
    )?;
    let mut head = serde_json::to_vec(&meta)?;
    // tensors start 8-byte aligned, as safetensors writes them
    head.resize(head.len().next_multiple_of(8), b' ');
    dino_core::atomic_replace(path, |tmp| -> anyhow::Result<()> {
        let f = std::fs::File::create(tmp).with_context(|| format!("{}", tmp.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
        out.write_all(&(head.len() as u64).to_le_bytes())?;
        out.write_all(&head)?;
        let mut written = 0;
        for b in blocks {
            FeatureRows::write_le(b, &mut out)?;
            written += b.len();
        }
        anyhow::ensure!(written == n * dim, "{written} values for {n} rows of {dim}");
        out.write_all(&files)?;
        out.flush()?;
        Ok(())
    })
    .with_context(|| {
        format!(
            "writing the feature index {} (choose another place with --index-file)",
            path.display()
        )
    })
}

/// A file kept beside `path`: its name with `suffix` appended (`F` -> `F.usearch`).
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn part_path(index: &Path, i: usize) -> PathBuf {
    beside(index, &format!(".part-{i:05}"))
}

/// The saved parts of an interrupted update of the store at `index`, in order.
fn part_files(index: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let (Some(name), dir) = (index.file_name(), index.parent()) else {
        return Ok(Vec::new());
    };
    let dir = dir
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!("{}.part-", name.to_string_lossy());
    let mut found = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
            .collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("{}", dir.display())),
    };
    found.sort();
    Ok(found)
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
    ///
    /// Under MPI (`ranks`), rank 0 keeps the store and every rank extracts its share of each
    /// part; the other ranks get `None` once rank 0 is done.
    pub fn of_files(
        ranks: &crate::extraction_ranks::Ranks,
        index: Option<&Path>,
        signature: &str,
        engine: &Engine,
        files: &[PathBuf],
        recipe: &Recipe,
        f: impl Fn(&[image::RgbImage]) -> anyhow::Result<Vec<f32>>,
    ) -> anyhow::Result<Option<(Self, UpdateStats)>> {
        let r = recipe;
        if !ranks.is_root() {
            ranks.serve(engine, r, &f)?;
            return Ok(None);
        }
        let mut progress: Option<indicatif::ProgressBar> = None;
        let updated = Self::update(index, signature, files, |todo, total| {
            let pb = progress.get_or_insert_with(|| bar(total, r.label));
            ranks.extract_part(engine, todo, r, pb, &f)
        });
        // the other ranks wait for parts until told there are no more, error or not
        ranks.done();
        let (store, stats) = updated?;
        if let Some(pb) = progress {
            pb.finish_and_clear();
        }
        if stats.resumed > 0 {
            eprintln!(
                "resumed an interrupted extraction: {} images were already computed",
                stats.resumed
            );
        }
        for (p, why) in &stats.skipped {
            eprintln!("warning: skipped {}: {why}", p.display());
        }
        Ok(Some((store, stats)))
    }
}

/// Identity of a weights file for signatures: canonical path, size and modification time.
pub fn weights_identity(path: &Path) -> anyhow::Result<String> {
    let e = Entry::of(path)?;
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(format!("{}:{}:{}", canon.display(), e.size, e.modified_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two values a file, from its name.
    fn rows_of(files: &[PathBuf]) -> Extracted {
        Extracted {
            files: files.to_vec(),
            rows: files
                .iter()
                .flat_map(|f| {
                    let n = f.to_string_lossy().len() as f32;
                    [n, -n]
                })
                .collect(),
            dim: 2,
            skipped: Vec::new(),
        }
    }

    #[test]
    fn a_killed_extraction_resumes_from_its_saved_parts() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..2 * PART_FILES + 5)
            .map(|i| {
                let p = dir.path().join(format!("{i:05}.jpg"));
                std::fs::write(&p, b"x").unwrap();
                p
            })
            .collect();
        let store = dir.path().join("index.safetensors");
        // the run dies during its second part: the first part is on disk
        let mut calls = 0;
        let failed = FeatureStore::update(Some(&store), "sig", &files, |todo, total| {
            assert_eq!(total, files.len());
            calls += 1;
            anyhow::ensure!(calls < 2, "killed");
            Ok(rows_of(todo))
        });
        assert!(failed.is_err());
        assert!(!store.exists());
        assert_eq!(part_files(&store).unwrap().len(), 1);
        // the next run computes only the rest, then keeps one store and no parts
        let mut computed = 0;
        let (s, stats) = FeatureStore::update(Some(&store), "sig", &files, |todo, total| {
            assert_eq!(total, files.len() - PART_FILES);
            computed += todo.len();
            Ok(rows_of(todo))
        })
        .unwrap();
        assert_eq!(computed, files.len() - PART_FILES);
        assert_eq!((stats.resumed, stats.computed), (PART_FILES, computed));
        assert_eq!(&s.rows[..], &rows_of(&files).rows[..]);
        assert!(part_files(&store).unwrap().is_empty());
        // another signature does not take the parts of this one
        let mut calls = 0;
        let _ = FeatureStore::update(Some(&store), "other", &files, |todo, _| {
            calls += 1;
            anyhow::ensure!(calls < 2, "killed");
            Ok(rows_of(todo))
        });
        let (_, stats) =
            FeatureStore::update(Some(&store), "sig", &files, |_, _| anyhow::bail!("none"))
                .unwrap();
        assert_eq!((stats.reused, stats.computed), (files.len(), 0));
        assert!(
            part_files(&store).unwrap().is_empty(),
            "stale parts removed"
        );
    }

    #[test]
    fn a_store_is_read_in_place_and_older_layouts_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..5)
            .map(|i| {
                let p = dir.path().join(format!("{i}.jpg"));
                std::fs::write(&p, b"x").unwrap();
                p
            })
            .collect();
        let path = dir.path().join("index.safetensors");
        let (s, _) =
            FeatureStore::update(Some(&path), "sig", &files, |todo, _| Ok(rows_of(todo))).unwrap();
        assert_eq!(s.rows.is_mapped(), cfg!(unix), "{:?}", s.rows);
        assert_eq!(&s.rows[..], &rows_of(&files).rows[..]);
        // the files are in a tensor, not in the size-capped header
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("entries").unwrap().dtype(), Dtype::U8);
        let back = FeatureStore::load(&path).unwrap().unwrap();
        assert_eq!((back.entries, back.dim), (s.entries.clone(), 2));
        // a store of the earlier layout (files in the header) loads
        let header = serde_json::to_string(&Header {
            signature: "sig".into(),
            entries: s.entries.clone(),
        })
        .unwrap();
        let data: Vec<u8> = s.rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![5, 2], &data).unwrap();
        let meta = HashMap::from([("dino.index".to_string(), header)]);
        let old = dir.path().join("old.safetensors");
        std::fs::write(
            &old,
            safetensors::serialize([("features", view)], Some(meta)).unwrap(),
        )
        .unwrap();
        let o = FeatureStore::load(&old).unwrap().unwrap();
        assert_eq!((o.entries, &o.rows[..]), (s.entries.clone(), &s.rows[..]));
        // truncated or foreign files are refused with the file's name, never mapped blindly
        for cut in [0, 7, 8, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&old, &bytes[..cut]).unwrap();
            let e = FeatureStore::load(&old).err().expect("refused");
            assert!(
                format!("{e:#}").contains("not a dino feature index"),
                "{e:#}"
            );
        }
        assert!(
            FeatureStore::load(&dir.path().join("absent"))
                .unwrap()
                .is_none()
        );
    }
}
