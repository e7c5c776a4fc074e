//! Task parallelism of the CPU engine: rayon's pool natively (feature `parallel`), a plain
//! loop elsewhere (wasm32 without threads).

/// Number of worker threads tasks are spread over.
pub fn threads() -> usize {
    #[cfg(feature = "parallel")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "parallel"))]
    {
        1
    }
}

/// Runs `f(0..n)`, in parallel where available.
pub fn for_each_task(n: usize, f: impl Fn(usize) + Sync + Send) {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        (0..n).into_par_iter().for_each(f);
    }
    #[cfg(not(feature = "parallel"))]
    {
        (0..n).for_each(f);
    }
}

/// `[f(0), .., f(n - 1)]`, computed in parallel where available.
pub fn map_tasks<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        (0..n).into_par_iter().map(f).collect()
    }
    #[cfg(not(feature = "parallel"))]
    {
        (0..n).map(f).collect()
    }
}

/// A raw pointer that tasks writing disjoint regions of one buffer may share.
#[derive(Clone, Copy)]
pub struct SharedMut(pub *mut f32);
// SAFETY: every user writes only its own disjoint region, and the buffer outlives the tasks.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    pub fn ptr(self) -> *mut f32 {
        self.0
    }
}
