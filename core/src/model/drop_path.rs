//! Stochastic depth ("drop path") of the official code: per sample, the residual branch is
//! dropped with probability `rate` and survivors are scaled by 1/(1 - rate).

use burn::module::Module;
use burn::tensor::{Distribution, Tensor};

/// Active only on an autodiff device (training); the teacher and inference never drop.
#[derive(Module, Debug)]
pub struct DropPath {
    pub rate: f64,
}

impl DropPath {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        if self.rate == 0.0 || !x.device().is_autodiff() {
            return x;
        }
        let keep = 1.0 - self.rate;
        let [b, _, _] = x.dims();
        let mask = Tensor::<3>::random([b, 1, 1], Distribution::Bernoulli(keep), &x.device());
        x * mask / keep
    }
}
