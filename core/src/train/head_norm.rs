//! `nn.BatchNorm1d` of the head's MLP (`use_bn_in_head`). The official code never switches the
//! teacher to eval mode, so both networks always normalise with the batch's statistics; the
//! running statistics are kept only so that checkpoints carry PyTorch's buffers.

use burn::module::{Module, Param, RunningState};
use burn::nn::Initializer;
use burn::tensor::module::batch_norm_train;
use burn::tensor::{Device, Tensor};

/// PyTorch's defaults.
const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

#[derive(Module, Debug)]
pub struct HeadBatchNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
}

impl HeadBatchNorm {
    pub fn new(features: usize, device: &Device) -> Self {
        Self::from_tensors(
            Initializer::Ones.init([features], device),
            Initializer::Zeros.init([features], device),
            Tensor::zeros([features], device),
            Tensor::ones([features], device),
        )
    }

    pub fn from_tensors(
        weight: Param<Tensor<1>>,
        bias: Param<Tensor<1>>,
        running_mean: Tensor<1>,
        running_var: Tensor<1>,
    ) -> Self {
        Self {
            weight,
            bias,
            running_mean: RunningState::new(running_mean),
            running_var: RunningState::new(running_var),
        }
    }

    /// Training-mode forward of `[N, C]`: normalise with the batch mean and biased variance,
    /// then move the running statistics (unbiased variance, momentum 0.1) as PyTorch does.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let n = x.dims()[0];
        let device = x.device();
        let r = batch_norm_train(x, self.weight.val(), self.bias.val(), EPS);
        let unbiased = r.variance * (n as f64 / n.saturating_sub(1).max(1) as f64);
        let mean = self.running_mean.value_sync().to_device(&device) * (1.0 - MOMENTUM)
            + r.mean * MOMENTUM;
        let var = self.running_var.value_sync().to_device(&device) * (1.0 - MOMENTUM)
            + unbiased * MOMENTUM;
        self.running_mean.update(mean.detach());
        self.running_var.update(var.detach());
        r.output
    }
}
