//! PyTorch's `BatchNorm1d` / `BatchNorm2d` for `[N, C, ...]` inputs: normalise with the
//! batch's mean and biased variance while training, move the running statistics with the
//! batch's unbiased variance (PyTorch's rule; Burn's own `BatchNorm` keeps the biased one), and
//! normalise with the running statistics otherwise.
//!
//! "Training" is an autodiff device (as for drop path), unless the layer always uses batch
//! statistics: the official DINO code never switches its teacher to eval mode, so the DINO
//! head's BatchNorms ([`crate::train::DinoHead`]) normalise with the batch in both networks.

use burn::module::{Module, Param, RunningState};
use burn::tensor::module::batch_norm;
use burn::tensor::{Device, Tensor};

use super::params::{Init, Params};
use crate::Result;

/// `(output, mean, biased variance)` of `x` normalised with its batch statistics: on burn-flex
/// through the CPU kernels (feature `flex`, [`super::flex_batch_norm`]), Burn's elsewhere.
pub fn train_statistics<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    #[cfg(feature = "flex")]
    {
        super::flex_batch_norm::batch_norm_train(x, gamma, beta, eps)
    }
    #[cfg(not(feature = "flex"))]
    {
        let r = burn::tensor::module::batch_norm_train(x, gamma, beta, eps);
        (r.output, r.mean, r.variance)
    }
}

/// PyTorch's defaults.
pub const BN_EPS: f64 = 1e-5;
pub const BN_MOMENTUM: f64 = 0.1;

#[derive(Module, Debug)]
pub struct BatchNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    /// PyTorch's momentum: running = (1 - momentum) * running + momentum * batch.
    pub momentum: f64,
    pub eps: f64,
    /// Normalise with the batch's statistics even without autodiff (the DINO head).
    pub always_batch_stats: bool,
    /// Normalise with the running statistics and leave them as they are, even while training
    /// (`module.eval()` inside a trained network: suncet's SuNCEt fine-tuning).
    pub frozen: bool,
}

impl BatchNorm {
    /// A layer of `features` channels under `vb` (`weight`, `bias`, `running_mean`,
    /// `running_var`; PyTorch's `num_batches_tracked` step counter is read and dropped):
    /// drawn as PyTorch initialises it (1, 0, 0, 1) or loaded.
    pub fn new(
        features: usize,
        momentum: f64,
        always_batch_stats: bool,
        vb: &Params,
        device: &Device,
    ) -> Result<Self> {
        let get = |name: &str, init| vb.get(name, &[features], init);
        let (w, b) = (get("weight", Init::Ones)?, get("bias", Init::Zeros)?);
        let (m, v) = (
            get("running_mean", Init::Zeros)?,
            get("running_var", Init::Ones)?,
        );
        vb.ignore("num_batches_tracked");
        Ok(Self {
            weight: w.into_param(device),
            bias: b.into_param(device),
            running_mean: RunningState::new(m.into_param::<1>(device).val()),
            running_var: RunningState::new(v.into_param::<1>(device).val()),
            momentum,
            eps: BN_EPS,
            always_batch_stats,
            frozen: false,
        })
    }

    /// `[N, C, ...]` normalised per channel.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.uses_batch_statistics(&x) {
            self.forward_train(x)
        } else {
            let device = x.device();
            // detached: statistics are not parameters (a frozen layer on an autodiff device
            // would otherwise hand them gradients, and the optimiser would move them)
            batch_norm(
                x,
                self.weight.val(),
                self.bias.val(),
                self.running_mean.value().to_device(&device).detach(),
                self.running_var.value().to_device(&device).detach(),
                self.eps,
            )
        }
    }

    fn forward_train<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        // values per channel: the batch and every spatial position
        let n: usize = dims
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, d)| d)
            .product();
        let (output, mean, variance) =
            train_statistics(x, self.weight.val(), self.bias.val(), self.eps);
        self.track(mean, variance, n);
        output
    }

    /// Moves the running statistics towards a batch's: `mean` and biased `variance` per
    /// channel over `n` values (the variance made unbiased first, as PyTorch does).
    pub fn track(&self, mean: Tensor<1>, variance: Tensor<1>, n: usize) {
        let device = mean.device();
        let unbiased = variance * (n as f64 / n.saturating_sub(1).max(1) as f64);
        let m = self.momentum;
        let mean = self.running_mean.value_sync().to_device(&device) * (1.0 - m) + mean * m;
        let var = self.running_var.value_sync().to_device(&device) * (1.0 - m) + unbiased * m;
        self.running_mean.update(mean.detach());
        self.running_var.update(var.detach());
        // committed now: Burn keeps an update pending per thread until that thread reads the
        // value again, and a part's thread may end before it does
        self.sync();
    }

    /// Whether [`Self::forward`] normalises `x` with batch statistics (rather than the running
    /// ones).
    pub fn uses_batch_statistics<const D: usize>(&self, x: &Tensor<D>) -> bool {
        !self.frozen && (self.always_batch_stats || x.device().is_autodiff())
    }

    /// Synchronises running statistics updated on this thread (before reading them back).
    pub fn sync(&self) {
        self.running_mean.value_sync();
        self.running_var.value_sync();
    }
}
