//! Feature extraction shared over the ranks of an MPI launch (`mpirun -np N dino dedup|retrieve|
//! cluster ...`): rank 0 keeps the feature store and everything it writes, as one process
//! would; for each part of the files that need computing it sends the part's file list to every
//! rank, each rank extracts its share (in rank order), and the rows and the unreadable files come
//! back to rank 0 in file order. Without the `mpi` feature, or without a launcher, this is the
//! one-process extraction.

use std::path::PathBuf;

use indicatif::ProgressBar;

use crate::engine::Engine;
use crate::feature_store::Recipe;
use crate::features::{Extracted, extract_counted};

/// Who computes the rows of an extraction.
pub struct Ranks {
    #[cfg(feature = "mpi")]
    world: Option<crate::mpi_world::MpiWorld>,
}

impl Ranks {
    /// The MPI ranks when an MPI launcher started this process (`mpi` feature), else this
    /// process alone.
    pub fn from_launcher() -> anyhow::Result<Self> {
        Ok(Self {
            #[cfg(feature = "mpi")]
            world: crate::mpi_world::MpiWorld::from_launcher()?,
        })
    }

    /// Rank 0, or the only process: the one that keeps the store and writes the outputs.
    pub fn is_root(&self) -> bool {
        #[cfg(feature = "mpi")]
        if let Some(w) = &self.world {
            return dino_core::train::collective::Collective::rank(w) == 0;
        }
        true
    }

    /// Number of processes sharing the work.
    pub fn count(&self) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(w) = &self.world {
            return dino_core::train::collective::Collective::world(w);
        }
        1
    }

    /// The command's outcome: under MPI an error on any rank ends the whole job (the others
    /// may be waiting for it in a collective).
    pub fn finish<T>(&self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        #[cfg(feature = "mpi")]
        if let Some(w) = &self.world {
            return w.or_abort(result);
        }
        result
    }

    /// Rank 0's extraction of `todo` (one part of a store update): shared out when there are
    /// ranks, with `progress` counting every rank's files.
    pub fn extract_part(
        &self,
        engine: &Engine,
        todo: &[PathBuf],
        recipe: &Recipe,
        progress: &ProgressBar,
        f: &dyn Fn(&[image::RgbImage]) -> anyhow::Result<Vec<f32>>,
    ) -> anyhow::Result<Extracted> {
        #[cfg(feature = "mpi")]
        if let Some(w) = &self.world {
            return mpi_part::root(w, engine, todo, recipe, progress, f);
        }
        let r = recipe;
        extract_counted(
            engine,
            todo,
            r.resize,
            r.batch_size,
            progress,
            r.dim,
            true,
            f,
        )
    }

    /// Rank 0: no more parts in this extraction (the other ranks return from [`Self::serve`]).
    pub fn done(&self) {
        #[cfg(feature = "mpi")]
        if let Some(w) = &self.world {
            mpi_part::done(w);
        }
    }

    /// The other ranks: extract their share of every part rank 0 sends until it says
    /// [`Self::done`].
    pub fn serve(
        &self,
        engine: &Engine,
        recipe: &Recipe,
        f: &dyn Fn(&[image::RgbImage]) -> anyhow::Result<Vec<f32>>,
    ) -> anyhow::Result<()> {
        #[cfg(feature = "mpi")]
        if let Some(w) = &self.world {
            return mpi_part::serve(w, engine, recipe, f);
        }
        let _ = (engine, recipe, f);
        Ok(())
    }
}

#[cfg(feature = "mpi")]
mod mpi_part {
    use std::path::{Path, PathBuf};

    use anyhow::Context;
    use indicatif::ProgressBar;

    use crate::engine::Engine;
    use crate::feature_store::Recipe;
    use crate::features::{Extracted, extract_counted};
    use crate::mpi_world::MpiWorld;

    type Describe<'a> = &'a dyn Fn(&[image::RgbImage]) -> anyhow::Result<Vec<f32>>;

    pub fn root(
        w: &MpiWorld,
        engine: &Engine,
        todo: &[PathBuf],
        recipe: &Recipe,
        progress: &ProgressBar,
        f: Describe,
    ) -> anyhow::Result<Extracted> {
        w.broadcast_bytes(&mut encode_names(todo), 0);
        let all = exchange(w, engine, todo, recipe, progress, f)?;
        let dim = recipe.dim;
        let mut out = Extracted {
            files: Vec::with_capacity(todo.len()),
            rows: Vec::with_capacity(todo.len() * dim),
            dim,
            skipped: Vec::new(),
        };
        for (rank, bytes) in all.iter().enumerate() {
            let names = &todo[w.share_of(rank, todo.len())];
            let part = decode_part(bytes, names, dim)
                .with_context(|| format!("the rows rank {rank} sent"))?;
            if rank != dino_core::train::collective::Collective::rank(w) {
                progress.inc((part.files.len() + part.skipped.len()) as u64);
            }
            out.files.extend(part.files);
            out.rows.extend(part.rows);
            out.skipped.extend(part.skipped);
        }
        Ok(out)
    }

    pub fn done(w: &MpiWorld) {
        w.broadcast_bytes(&mut Vec::new(), 0);
    }

    pub fn serve(
        w: &MpiWorld,
        engine: &Engine,
        recipe: &Recipe,
        f: Describe,
    ) -> anyhow::Result<()> {
        let hidden = ProgressBar::hidden();
        loop {
            let mut list = Vec::new();
            w.broadcast_bytes(&mut list, 0);
            if list.is_empty() {
                return Ok(());
            }
            exchange(w, engine, &decode_names(&list), recipe, &hidden, f)?;
        }
    }

    /// Every rank's part of one exchange: this rank extracts its share of `names` and sends it;
    /// the encoded shares of all ranks come back, in rank order.
    fn exchange(
        w: &MpiWorld,
        engine: &Engine,
        names: &[PathBuf],
        recipe: &Recipe,
        progress: &ProgressBar,
        f: Describe,
    ) -> anyhow::Result<Vec<Vec<u8>>> {
        let share = &names[w.share(names.len())];
        let r = recipe;
        let mine = extract_counted(
            engine,
            share,
            r.resize,
            r.batch_size,
            progress,
            r.dim,
            true,
            f,
        )?;
        Ok(w.all_gather_bytes(&encode_part(&mine, share)?))
    }

    /// File names joined by NUL bytes (no path holds one).
    fn encode_names(files: &[PathBuf]) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        let mut out = Vec::new();
        for f in files {
            out.extend_from_slice(f.as_os_str().as_bytes());
            out.push(0);
        }
        out
    }

    fn decode_names(bytes: &[u8]) -> Vec<PathBuf> {
        use std::os::unix::ffi::OsStrExt;
        bytes
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| PathBuf::from(std::ffi::OsStr::from_bytes(s)))
            .collect()
    }

    fn index_in(names: &[PathBuf], f: &Path) -> anyhow::Result<u32> {
        names
            .iter()
            .position(|n| n == f)
            .map(|i| i as u32)
            .context("the extraction returned a file it was not given")
    }

    /// A rank's share as bytes: counts, then the indices (in its share) of the files with
    /// rows, the rows (f32, little-endian), and for each unreadable file its index and why.
    fn encode_part(got: &Extracted, names: &[PathBuf]) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(16 + got.files.len() * 4 + got.rows.len() * 4);
        out.extend_from_slice(&(got.files.len() as u64).to_le_bytes());
        out.extend_from_slice(&(got.skipped.len() as u64).to_le_bytes());
        for f in &got.files {
            out.extend_from_slice(&index_in(names, f)?.to_le_bytes());
        }
        for v in &got.rows {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for (f, why) in &got.skipped {
            out.extend_from_slice(&index_in(names, f)?.to_le_bytes());
            out.extend_from_slice(&(why.len() as u64).to_le_bytes());
            out.extend_from_slice(why.as_bytes());
        }
        Ok(out)
    }

    fn decode_part(bytes: &[u8], names: &[PathBuf], dim: usize) -> anyhow::Result<Extracted> {
        let mut at = 0usize;
        let mut take = |n: usize| -> anyhow::Result<&[u8]> {
            let s = bytes.get(at..at + n).context("truncated")?;
            at += n;
            Ok(s)
        };
        let u64_at = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap()) as usize;
        let name = |i: u32| -> anyhow::Result<PathBuf> {
            names
                .get(i as usize)
                .cloned()
                .context("a file index outside the share")
        };
        let ok = u64_at(take(8)?);
        let bad = u64_at(take(8)?);
        anyhow::ensure!(ok + bad <= names.len(), "more files than the share");
        let mut files = Vec::with_capacity(ok);
        for _ in 0..ok {
            files.push(name(u32::from_le_bytes(take(4)?.try_into().unwrap()))?);
        }
        let rows = take(ok * dim * 4)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let mut skipped = Vec::with_capacity(bad);
        for _ in 0..bad {
            let f = name(u32::from_le_bytes(take(4)?.try_into().unwrap()))?;
            let len = u64_at(take(8)?);
            let why = String::from_utf8_lossy(take(len)?).into_owned();
            skipped.push((f, why));
        }
        Ok(Extracted {
            files,
            rows,
            dim,
            skipped,
        })
    }
}
