//! Dynamic loss scaling for f16 training, as `torch.cuda.amp.GradScaler` (what the official
//! `--use_fp16` uses): float16 flushes gradients below 6e-8 to zero, so the loss is multiplied
//! by a large power of two before the backward pass and the gradients divided by it after
//! (exact: a power of two). A step whose gradients overflowed (inf or NaN) is skipped and the
//! scale halved; after `GROWTH_INTERVAL` good steps in a row it doubles. The scale is part of
//! the checkpoint, so a resumed run continues exactly.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// GradScaler's defaults.
pub const INIT_SCALE: f64 = 65536.0;
pub const GROWTH_FACTOR: f64 = 2.0;
pub const BACKOFF_FACTOR: f64 = 0.5;
pub const GROWTH_INTERVAL: usize = 2000;

/// The scaler's state (`GradScaler.state_dict()`: `scale` and `_growth_tracker`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    /// What the loss is multiplied by before the backward pass.
    pub scale: f64,
    /// Good steps since the scale last changed.
    pub good_steps: usize,
}

impl Default for LossScale {
    fn default() -> Self {
        Self {
            scale: INIT_SCALE,
            good_steps: 0,
        }
    }
}

impl LossScale {
    /// `GradScaler.update`: halve on overflow, double after `GROWTH_INTERVAL` good steps.
    pub fn update(&mut self, overflowed: bool) {
        if overflowed {
            self.scale *= BACKOFF_FACTOR;
            self.good_steps = 0;
        } else {
            self.good_steps += 1;
            if self.good_steps == GROWTH_INTERVAL {
                self.scale *= GROWTH_FACTOR;
                self.good_steps = 0;
            }
        }
    }
}

/// `GradScaler.unscale_`: every gradient of `module` in `grads` divided by `scale`; returns
/// whether all of them are finite (one readback for the whole set).
pub fn unscale_grads<M: Module>(
    grads: GradientsParams,
    module: &M,
    scale: f64,
) -> Result<(GradientsParams, bool)> {
    struct Unscale {
        grads: GradientsParams,
        inv: f64,
        sums: Vec<Tensor<1>>,
    }
    impl ModuleVisitor for Unscale {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let Some(g) = self.grads.remove::<D>(param.id) else {
                return;
            };
            let g = if self.inv == 1.0 { g } else { g * self.inv };
            // an inf or NaN anywhere makes the sum non-finite
            self.sums.push(g.clone().sum());
            self.grads.register::<D>(param.id, g);
        }
    }
    let mut v = Unscale {
        grads,
        inv: 1.0 / scale,
        sums: Vec::new(),
    };
    module.visit(&mut v);
    let finite = match v.sums.is_empty() {
        true => true,
        false => Tensor::cat(v.sums, 0)
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Input(format!("reading the gradient sums: {e:?}")))?
            .iter()
            .all(|x| x.is_finite()),
    };
    Ok((v.grads, finite))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_halves_on_overflow_and_doubles_after_the_growth_interval() {
        let mut s = LossScale::default();
        s.update(true);
        assert_eq!(s.scale, INIT_SCALE / 2.0);
        for _ in 0..GROWTH_INTERVAL - 1 {
            s.update(false);
        }
        assert_eq!(
            (s.scale, s.good_steps),
            (INIT_SCALE / 2.0, GROWTH_INTERVAL - 1)
        );
        s.update(false);
        assert_eq!((s.scale, s.good_steps), (INIT_SCALE, 0));
        s.update(false);
        s.update(true);
        assert_eq!((s.scale, s.good_steps), (INIT_SCALE / 2.0, 0));
    }
}
