//! Stochastic depth ("drop path") of the official code: per sample, the residual branch is
//! dropped with probability `rate` and survivors are scaled by 1/(1 - rate). The masks come
//! from the thread's seeded drop-path stream ([`crate::rng`]).

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};

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
        // the survivors' scale folded into the mask: one pass over `x` (and one in the
        // backward pass) instead of a multiplication and a division; `x * (1/keep)` may differ
        // from the official `x / keep` in the last bit
        let scale = (1.0 / keep) as f32;
        let mask: Vec<f32> = crate::rng::drop_path_mask(b, keep)
            .into_iter()
            .map(|m| m * scale)
            .collect();
        let mask = Tensor::<3>::from_data(TensorData::new(mask, [b, 1, 1]), &x.device());
        x * mask
    }
}
