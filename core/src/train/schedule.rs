//! The per-iteration schedules of `main_dino.py` (`utils.cosine_scheduler`), value for value.

/// `np.linspace(start, end, n)`: `n` evenly spaced values, both ends included (`[start]`
/// when `n` is 1).
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    (0..n)
        .map(|i| start + (end - start) * i as f64 / (n - 1) as f64)
        .collect()
}

/// Linear warm-up from `start_warmup` to `base` over `warmup_epochs`, then a cosine from
/// `base` to `final_value`, one value per iteration (`epochs * niter_per_ep` values).
pub fn cosine_scheduler(
    base: f64,
    final_value: f64,
    epochs: usize,
    niter_per_ep: usize,
    warmup_epochs: usize,
    start_warmup: f64,
) -> Vec<f64> {
    let total = epochs * niter_per_ep;
    let warmup_iters = (warmup_epochs * niter_per_ep).min(total);
    let mut out = linspace(start_warmup, base, warmup_iters);
    out.reserve(total - warmup_iters);
    let n = total - warmup_iters;
    for i in 0..n {
        let cos = (std::f64::consts::PI * i as f64 / n as f64).cos();
        out.push(final_value + 0.5 * (base - final_value) * (1.0 + cos));
    }
    out
}

/// `DINOLoss.teacher_temp_schedule`: linear warm-up over `warmup_epochs`, then constant; one
/// value per epoch.
pub fn teacher_temp_schedule(
    warmup: f64,
    temp: f64,
    warmup_epochs: usize,
    epochs: usize,
) -> Vec<f64> {
    let mut out = linspace(warmup, temp, warmup_epochs.min(epochs));
    out.resize(epochs, temp);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy() {
        // values printed by utils.cosine_scheduler(1.0, 0.1, 3, 2, warmup_epochs=1)
        let s = cosine_scheduler(1.0, 0.1, 3, 2, 1, 0.0);
        let want = [
            0.0,
            1.0,
            1.0,
            0.868_198_051_533_946_4,
            0.55,
            0.231_801_948_466_053_65,
        ];
        assert_eq!(s.len(), 6);
        for (a, b) in s.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{s:?}");
        }
        let t = teacher_temp_schedule(0.04, 0.07, 3, 5);
        assert_eq!(t.len(), 5);
        assert!((t[1] - 0.055).abs() < 1e-12 && t[2] == 0.07 && t[4] == 0.07);
    }
}
