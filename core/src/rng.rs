//! Seeded random numbers on the host. Burn's backend RNG is one global stream, shared by every
//! thread of a process; weight init and drop path draw from these instead, so a run depends
//! only on its own seed (and tests running side by side do not disturb each other).

use std::cell::RefCell;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The generator used everywhere a run needs randomness.
pub type SeededRng = ChaCha8Rng;

pub fn seeded(seed: u64) -> SeededRng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` samples of N(mean, std) (Box-Muller).
pub fn normal(rng: &mut impl Rng, n: usize, mean: f64, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
        let u2: f64 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        out.push((mean + std * r * t.cos()) as f32);
        out.push((mean + std * r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// `n` samples of U(lo, hi).
pub fn uniform(rng: &mut impl Rng, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi) as f32).collect()
}

thread_local! {
    static DROP_PATH: RefCell<SeededRng> = RefCell::new(seeded(0));
}

/// Restarts this thread's drop-path stream (the trainer does it every iteration).
pub fn seed_drop_path(seed: u64) {
    DROP_PATH.with(|r| *r.borrow_mut() = seeded(seed));
}

/// `n` keep masks of probability `keep` from this thread's drop-path stream.
pub fn drop_path_mask(n: usize, keep: f64) -> Vec<f32> {
    DROP_PATH.with(|r| {
        let mut r = r.borrow_mut();
        (0..n)
            .map(|_| if r.random::<f64>() < keep { 1.0 } else { 0.0 })
            .collect()
    })
}

/// A 64-bit mix of three numbers (SplitMix64 steps), for independent RNG streams.
pub fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a ^ b.rotate_left(21) ^ c.rotate_left(42);
    for _ in 0..2 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}
