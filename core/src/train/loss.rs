//! `DINOLoss` of `main_dino.py`: cross-entropy between the centred, sharpened teacher output on
//! the two global crops and the student output on every other crop.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Tensor};

/// The loss and its running center (a buffer, not learned).
#[derive(Clone, Debug)]
pub struct DinoLoss {
    /// `[1, K]` EMA of the teacher's batch-mean output, on the teacher's (non-autodiff) device.
    pub center: Tensor<2>,
    pub student_temp: f64,
    pub center_momentum: f64,
    /// Total crops per image (2 global + local).
    pub ncrops: usize,
}

impl DinoLoss {
    pub fn new(out_dim: usize, ncrops: usize, device: &Device) -> Self {
        Self {
            center: Tensor::zeros([1, out_dim], device),
            student_temp: 0.1,
            center_momentum: 0.9,
            ncrops,
        }
    }

    /// The loss for `student_out` (`[ncrops * B, K]`, autodiff) against `teacher_out`
    /// (`[2 * B, K]`, no gradient), rows crop-major. Does not update the center: call
    /// [`Self::update_center`] with the same teacher output afterwards, as the official
    /// `forward` does.
    pub fn forward(
        &self,
        student_out: Tensor<2>,
        teacher_out: Tensor<2>,
        teacher_temp: f64,
    ) -> Tensor<1> {
        self.forward_targets(student_out, self.teacher_targets(teacher_out, teacher_temp))
    }

    /// The teacher's targets: `softmax((teacher_out - center) / teacher_temp)`, no gradient.
    pub fn teacher_targets(&self, teacher_out: Tensor<2>, teacher_temp: f64) -> Tensor<2> {
        softmax(
            (teacher_out.inner() - self.center.clone()) / teacher_temp,
            1,
        )
    }

    /// [`Self::forward`] from targets already computed by [`Self::teacher_targets`].
    pub fn forward_targets(&self, student_out: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
        let student = (student_out / self.student_temp).chunk(self.ncrops, 0);
        let teacher = targets.chunk(2, 0);
        let log_probs: Vec<Tensor<2>> = student.into_iter().map(|s| log_softmax(s, 1)).collect();
        let mut total: Option<Tensor<1>> = None;
        let mut terms = 0usize;
        for (iq, q) in teacher.into_iter().enumerate() {
            // a constant on the student's (autodiff) device, in its checkpointing context
            let mut q = q.autodiff();
            if let Some(strategy) = log_probs[0].gradient_checkpointing_strategy() {
                q = q.with_gradient_checkpointing_strategy(strategy);
            }
            for (v, ls) in log_probs.iter().enumerate() {
                if v == iq {
                    continue;
                }
                let term = (q.clone() * ls.clone()).sum_dim(1).mean().neg();
                total = Some(match total {
                    Some(t) => t + term,
                    None => term,
                });
                terms += 1;
            }
        }
        total.expect("at least two crops") / terms as f64
    }

    /// Collapse diagnostics of the teacher targets (the two curves of the paper's Fig. 7):
    /// `[mean per-image entropy, entropy of the batch-mean target]`, in nats. The first near
    /// log K means uniform collapse (centering wins), the second near 0 means one dimension
    /// dominates every image (sharpening wins); a healthy run keeps the first low and the
    /// second high.
    pub fn teacher_entropies(&self, teacher_out: Tensor<2>, teacher_temp: f64) -> Tensor<1> {
        let rows = teacher_out.dims()[0];
        let targets = self.teacher_targets(teacher_out, teacher_temp);
        Self::entropies_from_sums(Self::target_sums(targets), rows)
    }

    /// What the diagnostics need from one part of a batch, so parts on several devices can be
    /// added: `[1 + K]` = (sum of the rows' entropies, sum of the rows).
    pub fn target_sums(p: Tensor<2>) -> Tensor<1> {
        let k = p.dims()[1];
        let per_row = entropy(p.clone()).sum();
        Tensor::cat(vec![per_row, p.sum_dim(0).reshape([k])], 0)
    }

    /// [`Self::teacher_entropies`] from [`Self::target_sums`] added over `rows` rows.
    pub fn entropies_from_sums(sums: Tensor<1>, rows: usize) -> Tensor<1> {
        let k = sums.dims()[0] - 1;
        let per_image = sums.clone().slice(0..1) / rows as f64;
        let mean = (sums.slice(1..k + 1) / rows as f64).reshape([1, k]);
        Tensor::cat(vec![per_image, entropy(mean)], 0)
    }

    /// `center = m * center + (1 - m) * mean(teacher_out)` over the batch.
    pub fn update_center(&mut self, teacher_out: Tensor<2>) {
        let batch_center = teacher_out.inner().mean_dim(0);
        self.update_center_mean(batch_center);
    }

    /// [`Self::update_center`] from the batch mean `[1, K]` (all-reduced over devices).
    pub fn update_center_mean(&mut self, batch_center: Tensor<2>) {
        self.center = self.center.clone() * self.center_momentum
            + batch_center * (1.0 - self.center_momentum);
    }
}

/// Entropy of each row of a distribution `[N, K]` in nats (`p log p -> 0` as `p -> 0`: the
/// clamp only keeps log(0) out).
fn entropy(q: Tensor<2>) -> Tensor<1> {
    let n = q.dims()[0];
    (q.clone() * q.clamp_min(1e-30).log())
        .sum_dim(1)
        .neg()
        .reshape([n])
}
