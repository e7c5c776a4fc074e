//! What training across processes needs from a communication layer, as the official DDP uses
//! `torch.distributed`: a rank in a world, the sum of a buffer over all ranks (gradients,
//! the loss and the center's batch sums), all-gather and broadcast. Core stays free of any
//! transport; the `dino` CLI implements it on MPI (its `mpi` feature), and the tests in
//! threads ([`ThreadWorld`]).

use std::sync::{Arc, Barrier, Mutex};

/// A group of processes training one run. Every call is collective: each rank makes the same
/// calls with buffers of the same length, in the same order.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..world()`.
    fn rank(&self) -> usize;
    /// How many processes train the run.
    fn world(&self) -> usize;
    /// Replaces `data` by its element-wise sum over all ranks (the same on every rank).
    fn all_reduce_sum(&self, data: &mut [f32]);
    /// Every rank's `data`, concatenated in rank order (all of the same length).
    fn all_gather(&self, data: &[f32]) -> Vec<f32>;
    /// Replaces `data` by rank `root`'s.
    fn broadcast(&self, data: &mut [f32], root: usize);
    /// Every rank's `value`, in rank order (checksums, counts).
    fn all_gather_u64(&self, value: u64) -> Vec<u64>;
}

/// Ranks as threads of one process, for tests: the same collective semantics as MPI, the
/// sum taken in rank order (as a two-rank MPI sum: `a + b` on both ranks).
pub struct ThreadWorld {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    world: usize,
    barrier: Barrier,
    slots: Mutex<Vec<Vec<f32>>>,
}

impl ThreadWorld {
    /// `world` handles, one per rank; give each to its own thread.
    pub fn new(world: usize) -> Vec<Self> {
        let shared = Arc::new(Shared {
            world,
            barrier: Barrier::new(world),
            slots: Mutex::new(vec![Vec::new(); world]),
        });
        (0..world)
            .map(|rank| Self {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Every rank's buffer, after all have put theirs.
    fn exchange(&self, data: &[f32]) -> Vec<Vec<f32>> {
        self.shared.slots.lock().expect("no rank panicked")[self.rank] = data.to_vec();
        self.shared.barrier.wait();
        let all = self.shared.slots.lock().expect("no rank panicked").clone();
        self.shared.barrier.wait();
        all
    }
}

impl Collective for ThreadWorld {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.shared.world
    }
    fn all_reduce_sum(&self, data: &mut [f32]) {
        let all = self.exchange(data);
        for (i, v) in data.iter_mut().enumerate() {
            *v = all[1..].iter().fold(all[0][i], |s, r| s + r[i]);
        }
    }
    fn all_gather(&self, data: &[f32]) -> Vec<f32> {
        self.exchange(data).concat()
    }
    fn broadcast(&self, data: &mut [f32], root: usize) {
        let all = self.exchange(data);
        data.copy_from_slice(&all[root]);
    }
    fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        // two f32 halves carry the u64 exactly
        let halves = [(value >> 32) as u32, value as u32].map(f32::from_bits);
        self.exchange(&halves)
            .iter()
            .map(|h| ((h[0].to_bits() as u64) << 32) | h[1].to_bits() as u64)
            .collect()
    }
}
