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
        from_halves(&self.exchange(&to_halves(&[value])).concat())
    }
}

/// u64 values as pairs of f32 bit patterns (high, low), which gathers copy unchanged.
fn to_halves(values: &[u64]) -> Vec<f32> {
    values
        .iter()
        .flat_map(|v| [(v >> 32) as u32, *v as u32].map(f32::from_bits))
        .collect()
}

/// The u64 values of [`to_halves`]'s pairs.
fn from_halves(halves: &[f32]) -> Vec<u64> {
    halves
        .chunks_exact(2)
        .map(|h| ((h[0].to_bits() as u64) << 32) | h[1].to_bits() as u64)
        .collect()
}

/// The parts of one process's batch (threads, one per device) joined with the other
/// processes, for what must span every part of a batch (synchronised BatchNorm): part `k` of
/// rank `r` is rank `r * parts + k` of the combined world. Sums are taken over the parts in
/// part order, then over the ranks.
pub struct PartsWorld {
    local: ThreadWorld,
    ranks: Option<Arc<dyn Collective>>,
}

impl PartsWorld {
    /// `parts` handles, one per part's thread, joined with `ranks` if given.
    pub fn new(parts: usize, ranks: Option<Arc<dyn Collective>>) -> Vec<Self> {
        ThreadWorld::new(parts)
            .into_iter()
            .map(|local| Self {
                local,
                ranks: ranks.clone(),
            })
            .collect()
    }

    /// Runs `f` on the ranks' layer from the first part, then hands its result to every part.
    fn through_ranks(&self, data: &mut [f32], f: impl FnOnce(&dyn Collective, &mut [f32])) {
        if let Some(r) = &self.ranks {
            if self.local.rank == 0 {
                f(r.as_ref(), data);
            }
            self.local.broadcast(data, 0);
        }
    }
}

impl Collective for PartsWorld {
    fn rank(&self) -> usize {
        let rank = self.ranks.as_ref().map_or(0, |r| r.rank());
        rank * self.local.world() + self.local.rank
    }
    fn world(&self) -> usize {
        self.ranks.as_ref().map_or(1, |r| r.world()) * self.local.world()
    }
    fn all_reduce_sum(&self, data: &mut [f32]) {
        self.local.all_reduce_sum(data);
        self.through_ranks(data, |r, d| r.all_reduce_sum(d));
    }
    fn all_gather(&self, data: &[f32]) -> Vec<f32> {
        let mine = self.local.all_gather(data);
        let Some(ranks) = &self.ranks else {
            return mine;
        };
        // every part learns the length, so the first part's result can be broadcast
        let mut all = vec![0.0; mine.len() * ranks.world()];
        self.through_ranks(&mut all, |r, d| d.copy_from_slice(&r.all_gather(&mine)));
        all
    }
    fn broadcast(&self, data: &mut [f32], root: usize) {
        let parts = self.local.world();
        self.local.broadcast(data, root % parts);
        self.through_ranks(data, |r, d| r.broadcast(d, root / parts));
    }
    fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        from_halves(&self.all_gather(&to_halves(&[value])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a rank saw: its rank and world, a sum, a gather, a broadcast, a u64 gather.
    type Seen = (usize, usize, Vec<f32>, Vec<f32>, Vec<f32>, Vec<u64>);

    #[test]
    fn parts_of_ranks_act_as_one_world_in_rank_major_order() {
        // 2 ranks x 3 parts: part k of rank r is rank 3r + k of six
        let results: Vec<Seen> = std::thread::scope(|scope| {
            let ranks: Vec<_> = ThreadWorld::new(2)
                .into_iter()
                .map(|rank| {
                    scope.spawn(move || {
                        let parts = PartsWorld::new(3, Some(Arc::new(rank)));
                        std::thread::scope(|inner| {
                            let handles: Vec<_> = parts
                                .into_iter()
                                .map(|p| {
                                    inner.spawn(move || {
                                        let me = p.rank() as f32;
                                        let mut sum = [me, 1.0];
                                        p.all_reduce_sum(&mut sum);
                                        let gathered = p.all_gather(&[me, -me]);
                                        let mut b = [me; 2];
                                        p.broadcast(&mut b, 4);
                                        let ids = p.all_gather_u64(u64::MAX - p.rank() as u64);
                                        (
                                            p.rank(),
                                            p.world(),
                                            sum.to_vec(),
                                            gathered,
                                            b.to_vec(),
                                            ids,
                                        )
                                    })
                                })
                                .collect();
                            handles
                                .into_iter()
                                .map(|h| h.join().unwrap())
                                .collect::<Vec<_>>()
                        })
                    })
                })
                .collect();
            ranks.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let order: Vec<f32> = (0..6).flat_map(|r| [r as f32, -(r as f32)]).collect();
        let ids: Vec<u64> = (0..6).map(|r| u64::MAX - r).collect();
        for (i, (rank, world, sum, gathered, b, got_ids)) in results.into_iter().enumerate() {
            assert_eq!((rank, world), (i, 6));
            assert_eq!(sum, [15.0, 6.0], "sum on rank {rank}");
            assert_eq!(gathered, order, "gather on rank {rank}");
            assert_eq!(b, [4.0, 4.0], "broadcast from 4 on rank {rank}");
            assert_eq!(got_ids, ids, "u64 gather on rank {rank}");
        }
    }
}
