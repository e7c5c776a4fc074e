//! Task parallelism of the CPU engine: rayon's pool natively (feature `parallel`), a plain
//! loop elsewhere (wasm32 without threads); for the inference engine's short sections
//! ([`for_each_task_spinning`]) a pool of its own whose workers spin between sections.
//!
//! Why not rayon alone for inference: a ViT forward pass at batch 1 is ~150 short parallel sections (a
//! matrix product of 197 rows is a few hundred microseconds), and rayon's idle workers go to
//! sleep within microseconds of running out of work, so nearly every section starts by
//! waking a thread through the kernel. On a 2-vCPU virtual machine that made the time of a
//! ViT-S/16 forward pass swing from 42 to 60 ms (median 52 ms against ONNX Runtime's steady
//! 42 ms, whose pool spins between sections; BENCHMARKS.md). [`spin_pool`]'s workers spin
//! for a short while ([`SPIN`]) after each section before they sleep, as ONNX Runtime's do.
//! rayon has no setting for this. Sections started while the pool is busy (another thread's
//! section, or a section inside a section) run on rayon as before.

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

/// [`for_each_task`] for the short sections of the inference engine, one after another: on
/// the spinning pool (see the module doc), or rayon's when that pool is busy. Not for
/// training kernels: between two of their sections Burn's own ops run on rayon's threads,
/// which the spinning workers would slow down.
pub fn for_each_task_spinning(n: usize, f: impl Fn(usize) + Sync + Send) {
    #[cfg(feature = "parallel")]
    {
        if n <= 1 {
            (0..n).for_each(f);
        } else if !spin_pool::run(n, &f) {
            use rayon::prelude::*;
            (0..n).into_par_iter().for_each(f);
        }
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

/// `f(range, piece)` over the consecutive pieces of `buf` of `piece` elements (the last one
/// shorter), one task each, in parallel where available: `range` is the piece's place in
/// `buf`, for reading the same range of other buffers.
pub fn for_each_piece_mut<T: Send>(
    buf: &mut [T],
    piece: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [T]) + Sync + Send,
) {
    let (n, piece) = (buf.len(), piece.max(1));
    let dst = SharedMut(buf.as_mut_ptr());
    for_each_task(n.div_ceil(piece), |t| {
        let r = t * piece..((t + 1) * piece).min(n);
        // SAFETY: the pieces are disjoint ranges of `buf`, which outlives the tasks.
        let p = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(r.start), r.len()) };
        f(r, p);
    });
}

/// A raw pointer that tasks writing disjoint regions of one buffer may share.
pub struct SharedMut<T = f32>(pub *mut T);
// SAFETY: every user writes only its own disjoint region, and the buffer outlives the tasks.
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    pub fn ptr(self) -> *mut T {
        self.0
    }
}

/// How long an idle worker of [`spin_pool`] spins before it sleeps, unless the environment
/// variable `DINO_CPU_SPIN_US` (microseconds) says otherwise; `DINO_CPU_SPIN_US=0` turns the
/// pool off (every section on rayon, as before 2026-12-01: for machines shared with other
/// work, where spinning takes time from it).
pub const SPIN: std::time::Duration = std::time::Duration::from_micros(500);

/// The spin the environment sets (`DINO_CPU_SPIN_US`, microseconds), `Ok(None)` when it sets
/// none, or the message for a value that is not a whole number of microseconds (the CLI
/// refuses it at start-up; the library then keeps [`SPIN`]).
pub fn spin_from_environment() -> Result<Option<std::time::Duration>, String> {
    let Some(v) = std::env::var_os("DINO_CPU_SPIN_US") else {
        return Ok(None);
    };
    let text = v.to_string_lossy();
    text.trim()
        .parse::<u64>()
        .map(|us| Some(std::time::Duration::from_micros(us)))
        .map_err(|_| {
            format!(
                "DINO_CPU_SPIN_US={text:?}: expected a whole number of microseconds the CPU \
                 engine's idle workers spin before they sleep (default {}; 0 turns the \
                 spinning pool off)",
                SPIN.as_micros()
            )
        })
}

/// [`SPIN`], or the environment's setting.
#[cfg(feature = "parallel")]
fn spin() -> std::time::Duration {
    spin_from_environment().ok().flatten().unwrap_or(SPIN)
}

/// A pool of `threads() - 1` workers that spin between sections (see the module doc); the
/// calling thread takes tasks too.
#[cfg(feature = "parallel")]
mod spin_pool {
    use std::cell::Cell;
    use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
    use std::sync::{Condvar, Mutex, OnceLock};
    use std::time::{Duration, Instant};

    /// One section: the tasks left to take and those done.
    struct Job<'a> {
        f: &'a (dyn Fn(usize) + Sync),
        n: usize,
        next: AtomicUsize,
        done: AtomicUsize,
        panicked: AtomicBool,
    }

    impl Job<'_> {
        /// Takes tasks until none are left.
        fn work(&self) {
            loop {
                let i = self.next.fetch_add(1, SeqCst);
                if i >= self.n {
                    return;
                }
                if catch_unwind(AssertUnwindSafe(|| (self.f)(i))).is_err() {
                    self.panicked.store(true, SeqCst);
                }
                self.done.fetch_add(1, SeqCst);
            }
        }
    }

    struct Pool {
        /// The section running now (null between sections); a `Job` on its submitter's stack.
        current: AtomicPtr<Job<'static>>,
        /// Bumped at every section, so that a worker sees a new one.
        generation: AtomicUsize,
        /// Workers inside a section's job (the submitter waits for 0 before its job ends).
        busy: AtomicUsize,
        /// Workers asleep, and their bed.
        sleepers: AtomicUsize,
        bed: (Mutex<()>, Condvar),
        /// How long an idle worker spins.
        spin: Duration,
        /// Held by the thread whose section runs.
        submit: Mutex<()>,
    }

    thread_local! {
        /// Whether this thread is inside a pool section (a worker, or a submitter).
        static INSIDE: Cell<bool> = const { Cell::new(false) };
    }

    fn pool() -> Option<&'static Pool> {
        static POOL: OnceLock<Option<&'static Pool>> = OnceLock::new();
        *POOL.get_or_init(|| {
            let workers = super::threads().saturating_sub(1);
            let spin = super::spin();
            if workers == 0 || spin.is_zero() {
                return None;
            }
            let pool: &'static Pool = Box::leak(Box::new(Pool {
                current: AtomicPtr::new(std::ptr::null_mut()),
                generation: AtomicUsize::new(0),
                busy: AtomicUsize::new(0),
                sleepers: AtomicUsize::new(0),
                bed: (Mutex::new(()), Condvar::new()),
                spin,
                submit: Mutex::new(()),
            }));
            for i in 0..workers {
                let spawned = std::thread::Builder::new()
                    .name(format!("dino-cpu-{i}"))
                    .spawn(move || worker(pool));
                if spawned.is_err() {
                    return None;
                }
            }
            Some(pool)
        })
    }

    fn worker(pool: &'static Pool) {
        INSIDE.with(|c| c.set(true));
        let mut seen = pool.generation.load(SeqCst);
        loop {
            // spin for a new section, then sleep
            let start = Instant::now();
            let mut spins = 0u32;
            while pool.generation.load(SeqCst) == seen {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) && start.elapsed() > pool.spin {
                    let guard = pool.bed.0.lock().unwrap_or_else(|e| e.into_inner());
                    pool.sleepers.fetch_add(1, SeqCst);
                    let mut guard = guard;
                    while pool.generation.load(SeqCst) == seen {
                        guard = pool.bed.1.wait(guard).unwrap_or_else(|e| e.into_inner());
                    }
                    pool.sleepers.fetch_sub(1, SeqCst);
                    break;
                }
            }
            seen = pool.generation.load(SeqCst);
            pool.busy.fetch_add(1, SeqCst);
            let job = pool.current.load(SeqCst);
            if !job.is_null() {
                // SAFETY: the submitter keeps the job alive until `busy` is back to 0, and
                // `current` is reset before it waits for that.
                unsafe { (*job).work() };
            }
            pool.busy.fetch_sub(1, SeqCst);
        }
    }

    /// Runs the section on the pool; false (nothing run) when the pool is busy, absent, or
    /// this thread is already inside a section.
    pub fn run(n: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
        if INSIDE.with(|c| c.get()) {
            return false;
        }
        let Some(pool) = pool() else { return false };
        let Ok(_turn) = pool.submit.try_lock() else {
            return false;
        };
        let job = Job {
            f,
            n,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        };
        // SAFETY: only the lifetime is erased; the job outlives every use (see `worker`).
        let ptr = unsafe {
            std::mem::transmute::<*const Job<'_>, *mut Job<'static>>(&job as *const Job<'_>)
        };
        pool.current.store(ptr, SeqCst);
        pool.generation.fetch_add(1, SeqCst);
        if pool.sleepers.load(SeqCst) > 0 {
            let _bed = pool.bed.0.lock().unwrap_or_else(|e| e.into_inner());
            pool.bed.1.notify_all();
        }
        INSIDE.with(|c| c.set(true));
        job.work();
        INSIDE.with(|c| c.set(false));
        while job.done.load(SeqCst) < n {
            std::hint::spin_loop();
        }
        pool.current.store(std::ptr::null_mut(), SeqCst);
        while pool.busy.load(SeqCst) > 0 {
            std::hint::spin_loop();
        }
        if job.panicked.load(SeqCst) {
            resume_unwind(Box::new("a task of the CPU engine panicked"));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use super::*;

    /// Every element lands in exactly one piece, at its own place, the last piece shorter;
    /// an empty buffer has no pieces.
    #[test]
    fn pieces_cover_the_buffer_once_in_place() {
        let mut buf: Vec<usize> = vec![0; 1000];
        for_each_piece_mut(&mut buf, 64, |r, piece| {
            assert_eq!(piece.len(), r.len());
            assert!(r.len() == 64 || r.end == 1000);
            piece.iter_mut().zip(r).for_each(|(v, i)| *v += i + 1);
        });
        assert!(buf.iter().enumerate().all(|(i, &v)| v == i + 1));
        let mut empty: Vec<usize> = Vec::new();
        for_each_piece_mut(&mut empty, 64, |_, _| panic!("no piece of an empty buffer"));
    }

    /// Every task runs once, across many short sections, nested sections, and sections
    /// started from several threads at once (those that find the pool busy run on rayon).
    #[test]
    fn every_task_runs_once_in_sequence_nested_and_concurrent() {
        let counts: Vec<AtomicUsize> = (0..257).map(|_| AtomicUsize::new(0)).collect();
        for round in 0..200 {
            let n = 1 + round % 257;
            for_each_task_spinning(n, |i| {
                counts[i].fetch_add(1, SeqCst);
            });
        }
        let want: Vec<usize> = (0..257)
            .map(|i| (0..200).filter(|r| i < 1 + r % 257).count())
            .collect();
        let got: Vec<usize> = counts.iter().map(|c| c.swap(0, SeqCst)).collect();
        assert_eq!(got, want);

        let nested = AtomicUsize::new(0);
        for_each_task_spinning(8, |_| {
            for_each_task_spinning(8, |_| {
                nested.fetch_add(1, SeqCst);
            });
        });
        assert_eq!(nested.load(SeqCst), 64);

        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        for_each_task_spinning(16, |_| {
                            total.fetch_add(1, SeqCst);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(SeqCst), 4 * 100 * 16);
    }

    /// A panicking task reaches the caller, and the pool keeps working after it.
    #[test]
    fn a_panicking_task_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| {
            for_each_task_spinning(32, |i| {
                if i == 17 {
                    panic!("task 17");
                }
            })
        });
        assert!(caught.is_err());
        let done = AtomicUsize::new(0);
        for_each_task_spinning(32, |_| {
            done.fetch_add(1, SeqCst);
        });
        assert_eq!(done.load(SeqCst), 32);
    }
}
