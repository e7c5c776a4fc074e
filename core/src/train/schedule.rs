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

/// suncet's `WarmupCosineSchedule` (a `LambdaLR` stepped after every iteration), one value
/// per iteration: linear from `start` to `reference` over `warmup_steps`, then a cosine to
/// `final_value` over the remaining steps, never below `final_value`.
pub fn warmup_cosine(
    start: f64,
    reference: f64,
    final_value: f64,
    warmup_steps: usize,
    total_steps: usize,
) -> Vec<f64> {
    let t_max = total_steps.saturating_sub(warmup_steps).max(1) as f64;
    (0..total_steps)
        .map(|step| {
            if step < warmup_steps {
                let progress = step as f64 / warmup_steps.max(1) as f64;
                start + progress * (reference - start)
            } else {
                let progress = (step - warmup_steps) as f64 / t_max;
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                final_value.max(final_value + (reference - final_value) * cos)
            }
        })
        .collect()
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
        // WarmupCosineSchedule(warmup_steps=2, start_lr=0.8, ref_lr=3.2, final_lr=0.032,
        // T_max=6): the lr of steps 0..6
        let w = warmup_cosine(0.8, 3.2, 0.032, 2, 6);
        let want = [
            0.8,
            2.0,
            3.2,
            2.736_057_141_399_491_4,
            1.616,
            0.495_942_858_600_508_8,
        ];
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{w:?}");
        }
        let t = teacher_temp_schedule(0.04, 0.07, 3, 5);
        assert_eq!(t.len(), 5);
        assert!((t[1] - 0.055).abs() < 1e-12 && t[2] == 0.07 && t[4] == 0.07);
    }
}
