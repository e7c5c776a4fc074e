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

/// `utils.cosine_scheduler` as a function of the iteration: a linear warm-up from
/// `start_warmup` to `base`, then a cosine from `base` to `final_value`. Computed per
/// iteration rather than held as the official array, so that a run's length costs no memory
/// (a crafted `epochs` cannot exhaust it); each value is the array's, bit for bit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineSchedule {
    base: f64,
    final_value: f64,
    start_warmup: f64,
    warmup_iters: usize,
    total: usize,
}

impl CosineSchedule {
    /// The schedule of `epochs * niter_per_ep` iterations, `warmup_epochs` of them warm-up;
    /// `None` when the iteration count does not fit in a `usize`.
    pub fn new(
        base: f64,
        final_value: f64,
        epochs: usize,
        niter_per_ep: usize,
        warmup_epochs: usize,
        start_warmup: f64,
    ) -> Option<Self> {
        let total = epochs.checked_mul(niter_per_ep)?;
        let warmup_iters = warmup_epochs.saturating_mul(niter_per_ep).min(total);
        Some(Self {
            base,
            final_value,
            start_warmup,
            warmup_iters,
            total,
        })
    }

    /// Every value, as the official array (what the fixtures compare).
    pub fn values(&self) -> Vec<f64> {
        (0..self.total).map(|i| self.at(i)).collect()
    }

    /// Number of iterations.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The value at iteration `i` (the last value past the end).
    pub fn at(&self, i: usize) -> f64 {
        let i = i.min(self.total.saturating_sub(1));
        if i < self.warmup_iters {
            return linspace_at(self.start_warmup, self.base, self.warmup_iters, i);
        }
        let n = self.total - self.warmup_iters;
        let cos = (std::f64::consts::PI * (i - self.warmup_iters) as f64 / n as f64).cos();
        self.final_value + 0.5 * (self.base - self.final_value) * (1.0 + cos)
    }
}

/// Value `i` of [`linspace`]`(start, end, n)`.
fn linspace_at(start: f64, end: f64, n: usize, i: usize) -> f64 {
    if n == 1 {
        return start;
    }
    start + (end - start) * i as f64 / (n - 1) as f64
}

/// suncet's `WarmupCosineSchedule` (a `LambdaLR` stepped after every iteration) as a
/// function of the step: linear from `start` to `reference` over `warmup_steps`, then a
/// cosine to `final_value` over the remaining steps, never below `final_value`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupCosine {
    pub start: f64,
    pub reference: f64,
    pub final_value: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl WarmupCosine {
    pub fn at(&self, step: usize) -> f64 {
        let (start, reference, final_value) = (self.start, self.reference, self.final_value);
        if step < self.warmup_steps {
            let progress = step as f64 / self.warmup_steps.max(1) as f64;
            start + progress * (reference - start)
        } else {
            let t_max = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
            let progress = (step - self.warmup_steps) as f64 / t_max;
            let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
            final_value.max(final_value + (reference - final_value) * cos)
        }
    }
}

/// [`WarmupCosine`] as an array of `total_steps` values (the fixtures' form).
pub fn warmup_cosine(
    start: f64,
    reference: f64,
    final_value: f64,
    warmup_steps: usize,
    total_steps: usize,
) -> Vec<f64> {
    let s = WarmupCosine {
        start,
        reference,
        final_value,
        warmup_steps,
        total_steps,
    };
    (0..total_steps).map(|i| s.at(i)).collect()
}

/// `DINOLoss.teacher_temp_schedule` as a function of the epoch: linear warm-up over
/// `warmup_epochs`, then constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TeacherTempSchedule {
    pub warmup: f64,
    pub temp: f64,
    pub warmup_epochs: usize,
    pub epochs: usize,
}

impl TeacherTempSchedule {
    pub fn at(&self, epoch: usize) -> f64 {
        let n = self.warmup_epochs.min(self.epochs);
        if epoch < n {
            linspace_at(self.warmup, self.temp, n, epoch)
        } else {
            self.temp
        }
    }
}

/// [`TeacherTempSchedule`] as the official array (one value per epoch).
pub fn teacher_temp_schedule(
    warmup: f64,
    temp: f64,
    warmup_epochs: usize,
    epochs: usize,
) -> Vec<f64> {
    let s = TeacherTempSchedule {
        warmup,
        temp,
        warmup_epochs,
        epochs,
    };
    (0..epochs).map(|e| s.at(e)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy() {
        // values printed by utils.cosine_scheduler(1.0, 0.1, 3, 2, warmup_epochs=1)
        let s = CosineSchedule::new(1.0, 0.1, 3, 2, 1, 0.0)
            .unwrap()
            .values();
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
        // as functions of the iteration, a run's length costs nothing: 1e11 epochs of the
        // ImageNet recipe's 1251 iterations, and a count past usize refused
        let long = CosineSchedule::new(5e-4, 1e-6, 100_000_000_000, 1251, 10, 0.0).unwrap();
        assert_eq!(long.at(0), 0.0);
        assert!((long.at(long.len() - 1) - 1e-6).abs() < 1e-12);
        assert!(CosineSchedule::new(1.0, 0.0, usize::MAX, 2, 0, 0.0).is_none());
        let t = teacher_temp_schedule(0.04, 0.07, 3, 5);
        assert_eq!(t.len(), 5);
        assert!((t[1] - 0.055).abs() < 1e-12 && t[2] == 0.07 && t[4] == 0.07);
    }
}
