//! The PAWS loss of suncet's `src/losses.py` (`init_paws_loss`): a soft nearest-neighbour
//! classifier over a labelled support batch turns embeddings into class probabilities; each
//! view's probabilities are pulled towards the sharpened probabilities of the *other* large
//! view of its image (no gradient), and the me-max regulariser keeps the mean prediction over
//! the batch spread across classes.

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

use crate::model::l2_normalize_rows;

/// The loss's settings (official: tau 0.1, T 0.25, me-max on).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PawsLoss {
    /// Small crops per unlabelled image (their targets are the mean of the two large views').
    pub multicrop: usize,
    /// Temperature of the cosine similarities of the soft nearest-neighbour classifier.
    pub tau: f64,
    /// Sharpening temperature of the targets.
    pub sharpen: f64,
    /// Subtract the entropy of the mean sharpened prediction (me-max regularisation).
    pub me_max: bool,
}

/// The two terms of the loss.
pub struct PawsLossOutput {
    /// Cross-entropy H(targets, predictions), averaged over the views.
    pub xent: Tensor<1>,
    /// Minus the entropy of the batch-mean sharpened prediction (0 without me-max).
    pub me_max: Tensor<1>,
    /// The anchor predictions `[views, classes]` (for diagnostics).
    pub probs: Tensor<2>,
}

impl PawsLoss {
    /// `snn`: `softmax(normalize(query) @ normalize(supports).T / tau) @ labels`.
    pub fn snn(&self, query: Tensor<2>, supports: Tensor<2>, labels: Tensor<2>) -> Tensor<2> {
        let sims =
            l2_normalize_rows(query).matmul(l2_normalize_rows(supports).transpose()) / self.tau;
        softmax(sims, 1).matmul(labels)
    }

    /// `p ** (1 / T)`, each row renormalised.
    pub fn sharpen(&self, p: Tensor<2>) -> Tensor<2> {
        let s = p.powf_scalar(1.0 / self.sharpen);
        let total = s.clone().sum_dim(1);
        s / total
    }

    /// The targets of `target_views` (the projections of the large views, already swapped so
    /// that row i belongs to the other view of its image): sharpened soft-NN predictions, the
    /// mean of the two for every small crop, values below 1e-4 set to 0. No gradient.
    pub fn targets(
        &self,
        target_views: Tensor<2>,
        target_supports: Tensor<2>,
        labels: Tensor<2>,
    ) -> Tensor<2> {
        let t = self.sharpen(self.snn(
            target_views.detach(),
            target_supports.detach(),
            labels.detach(),
        ));
        let rows = t.dims()[0];
        let b = rows / 2;
        let t = if self.multicrop > 0 {
            let mc = (t.clone().narrow(0, 0, b) + t.clone().narrow(0, b, b)) * 0.5;
            let mut parts = vec![t];
            parts.extend(std::iter::repeat_n(mc, self.multicrop));
            Tensor::cat(parts, 0)
        } else {
            t
        };
        // `targets[targets < 1e-4] *= 0`
        let small = t.clone().lower_elem(1e-4);
        t.mask_fill(small, 0.0).detach()
    }

    /// The loss of the anchors (prediction-head outputs: all views of the unlabelled images,
    /// large views first, and the support views) against targets from the projections.
    pub fn forward(
        &self,
        anchor_views: Tensor<2>,
        anchor_supports: Tensor<2>,
        target_views: Tensor<2>,
        target_supports: Tensor<2>,
        labels: Tensor<2>,
    ) -> PawsLossOutput {
        let targets = self.targets(target_views, target_supports, labels.clone());
        self.forward_with_targets(anchor_views, anchor_supports, targets, labels)
    }

    /// The loss of the anchors against given targets (one row per anchor): what the ranks of a
    /// multi-process run compute over every rank's views (see [`crate::paws::PawsTrainer`]).
    pub fn forward_with_targets(
        &self,
        anchor_views: Tensor<2>,
        anchor_supports: Tensor<2>,
        targets: Tensor<2>,
        labels: Tensor<2>,
    ) -> PawsLossOutput {
        let probs = self.snn(anchor_views, anchor_supports, labels);
        // mean over rows of sum_c log(p ** -t) = -t log p
        let xent = (targets * probs.clone().log()).sum_dim(1).mean().neg();
        let me_max = if self.me_max {
            let avg = self.sharpen(probs.clone()).mean_dim(0);
            // -H(avg) = sum avg log avg
            (avg.clone() * avg.log()).sum()
        } else {
            Tensor::zeros([1], &xent.device())
        };
        PawsLossOutput {
            xent,
            me_max,
            probs,
        }
    }
}
