//! Training across processes and machines on MPI (Open MPI, MPICH, ... through rsmpi), as the
//! official code trains on `torch.distributed`: `mpirun -np N dino train ...` (or `srun` under
//! Slurm) starts one rank per process, and [`MpiWorld`] gives core's training loop the
//! collectives it needs (sum, gather, broadcast) over `MPI_COMM_WORLD`.

use mpi::collective::SystemOperation;
use mpi::topology::{Communicator, Process, SimpleCommunicator};
use mpi::traits::*;

use dino_core::train::collective::Collective;

/// The ranks of this launch. MPI calls come from the thread that steps the run only
/// (`Threading::Funneled`), which is what makes sharing the handle with the trainer sound.
pub struct MpiWorld {
    world: SimpleCommunicator,
    _universe: mpi::environment::Universe,
}

// SAFETY: the communicator is used by one thread at a time, the one that initialised MPI
// (the training loop's), as `Threading::Funneled` allows; the trainer only holds the handle
// on its data-parallel threads.
unsafe impl Send for MpiWorld {}
unsafe impl Sync for MpiWorld {}

/// Environment variables an MPI launcher sets (Open MPI, PMI / PMIx as MPICH and Slurm use).
const LAUNCHER_VARIABLES: [&str; 4] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"];

/// Largest count of one MPI call (its counts are C ints): bigger buffers go in pieces.
const CHUNK: usize = 1 << 28;

impl MpiWorld {
    /// The MPI world when this process was started by an MPI launcher; `None` otherwise (a
    /// plain `dino train` stays one process without touching MPI).
    pub fn from_launcher() -> anyhow::Result<Option<Self>> {
        if !LAUNCHER_VARIABLES
            .iter()
            .any(|v| std::env::var_os(v).is_some())
        {
            return Ok(None);
        }
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "MPI could not be initialised (was it already, by another library?)"
                )
            })?;
        if threading < mpi::Threading::Funneled {
            anyhow::bail!("the MPI library offers no thread support ({threading:?})");
        }
        let world = universe.world();
        Ok(Some(Self {
            world,
            _universe: universe,
        }))
    }

    /// Stops every rank of the job (`MPI_Abort`) with `code`: a rank that fails must not
    /// leave the others waiting in a collective.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// Runs `job` on this rank; an error stops the whole job (see [`Self::abort`]).
    pub fn or_abort<T>(&self, job: anyhow::Result<T>) -> anyhow::Result<T> {
        if let Err(e) = &job {
            crate::recipe::say_whole(&format!(
                "error on MPI rank {}: {e:#}",
                Collective::rank(self)
            ));
            self.abort(1);
        }
        job
    }

    /// The items of this rank when `n` items are shared out in rank order (the first ranks
    /// take one more when `n` does not divide).
    pub fn share(&self, n: usize) -> std::ops::Range<usize> {
        self.share_of(Collective::rank(self), n)
    }

    /// [`Self::share`] of any rank.
    pub fn share_of(&self, rank: usize, n: usize) -> std::ops::Range<usize> {
        let world = Collective::world(self);
        let (base, extra) = (n / world, n % world);
        let start = rank * base + rank.min(extra);
        start..start + base + usize::from(rank < extra)
    }

    /// `data` of rank `root` on every rank (its length first, so the others' may differ).
    pub fn broadcast_bytes(&self, data: &mut Vec<u8>, root: usize) {
        let mut len = data.len() as u64;
        self.root(root).broadcast_into(&mut len);
        data.resize(len as usize, 0);
        for piece in data.chunks_mut(CHUNK) {
            self.root(root).broadcast_into(piece);
        }
    }

    /// Every rank's `data` (of any length), in rank order, on every rank.
    pub fn all_gather_bytes(&self, data: &[u8]) -> Vec<Vec<u8>> {
        let lens = self.all_gather_u64(data.len() as u64);
        let total: u64 = lens.iter().sum();
        assert!(
            total < i32::MAX as u64,
            "one all-gather of {total} bytes: more than MPI's counts hold"
        );
        let counts: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
        let displs: Vec<i32> = counts
            .iter()
            .scan(0, |at, &c| {
                let d = *at;
                *at += c;
                Some(d)
            })
            .collect();
        let mut all = vec![0u8; total as usize];
        {
            let mut part = mpi::datatype::PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            self.world.all_gather_varcount_into(data, &mut part);
        }
        let mut out = Vec::with_capacity(lens.len());
        let mut at = 0usize;
        for l in lens {
            out.push(all[at..at + l as usize].to_vec());
            at += l as usize;
        }
        out
    }

    /// The `[rows, dim]` blocks of every rank (their shares of `n` rows, see [`Self::share`])
    /// in rank order: all `n` rows, on every rank.
    pub fn gather_rows(&self, block: &[f32], n: usize, dim: usize) -> Vec<f32> {
        let world = Collective::world(self);
        let widest = n.div_ceil(world) * dim;
        let mut padded = block.to_vec();
        padded.resize(widest, 0.0);
        let all = self.all_gather(&padded);
        let mut out = Vec::with_capacity(n * dim);
        for (rank, chunk) in all.chunks_exact(widest).enumerate() {
            let (base, extra) = (n / world, n % world);
            let rows = base + usize::from(rank < extra);
            out.extend_from_slice(&chunk[..rows * dim]);
        }
        out
    }

    fn root(&self, root: usize) -> Process<'_> {
        self.world.process_at_rank(root as i32)
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn world(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_sum(&self, data: &mut [f32]) {
        for piece in data.chunks_mut(CHUNK) {
            let send = piece.to_vec();
            self.world
                .all_reduce_into(&send[..], piece, SystemOperation::sum());
        }
    }

    fn all_gather(&self, data: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; data.len() * Collective::world(self)];
        self.world.all_gather_into(data, &mut out[..]);
        out
    }

    fn broadcast(&self, data: &mut [f32], root: usize) {
        for piece in data.chunks_mut(CHUNK) {
            self.root(root).broadcast_into(piece);
        }
    }

    fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        let mut out = vec![0u64; Collective::world(self)];
        self.world.all_gather_into(&value, &mut out[..]);
        out
    }
}
