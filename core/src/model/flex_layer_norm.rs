//! The ViT's LayerNorms under autodiff on burn-flex as one custom operation: a pass over each
//! row for its mean and variance, one to write `(x - mean) / sqrt(var + eps) * gamma + beta`,
//! and in the backward pass one row pass for `dx` (the textbook formula,
//! `dx = rstd (g - mean(g) - xhat mean(g xhat))` with `g = dy gamma`) that also sums the
//! gradients of `gamma` and `beta`.
//!
//! Why: burn-flex fuses LayerNorm's forward pass, but burn-autodiff does not override it, so
//! under autodiff (the student) a LayerNorm is Burn's composition of eight tracked operations
//! (mean, subtraction, square, mean, square root, division, scale, shift), each a fresh buffer,
//! and its backward pass as many again: 25 LayerNorms over ~2,800 rows a part in a ViT-S/16
//! step. The teacher and inference are untracked and keep burn-flex's fused forward pass.
//!
//! The statistics are summed in f64 (PyTorch sums in f32 with its own order); the gradients of
//! `gamma` and `beta` are summed over fixed blocks of rows and then over the blocks in order,
//! so they do not depend on the number of threads (processes of the multi-process run must
//! agree byte for byte).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::LayerNorm;
use burn::tensor::{DType, GradientCheckpointingStrategy, Tensor};

use super::flex_conv::{AdTensor, flex_tensor, in_context};
use crate::cpu::parallel::{SharedMut, for_each_piece_mut};

/// Rows per task; also the blocks the gradients of `gamma` and `beta` are summed over.
const ROWS: usize = 32;

/// `norm(x)` as one operation when `x` is a tracked-capable burn-flex f32 tensor (the
/// student), `None` otherwise (the caller runs Burn's `LayerNorm::forward`).
pub fn layer_norm<const D: usize>(norm: &LayerNorm, eps: f64, x: &Tensor<D>) -> Option<Tensor<D>> {
    let gamma = norm.gamma.val();
    let beta = norm.beta.as_ref().map(|b| b.val());
    let width = *x.dims().last()?;
    let checkpointing = x.gradient_checkpointing_strategy();
    if x.dtype() != DType::F32
        || gamma.dtype() != DType::F32
        || gamma.dims() != [width]
        || beta
            .as_ref()
            .is_some_and(|b| b.dtype() != DType::F32 || b.dims() != [width])
        || checkpointing == Some(GradientCheckpointingStrategy::Balanced)
    {
        return None;
    }
    let prim = |t: &Tensor<1>| t.clone().try_into_primitive::<Autodiff<Flex>>().ok();
    let xp = x.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let sizes = Sizes {
        dims: x.dims().to_vec(),
        width,
        eps,
    };
    let out = match beta {
        Some(b) => tracked([xp, prim(&gamma)?, prim(&b)?], sizes),
        None => tracked([xp, prim(&gamma)?], sizes),
    };
    Some(in_context(out, checkpointing))
}

#[derive(Clone, Debug)]
struct Sizes {
    dims: Vec<usize>,
    width: usize,
    eps: f64,
}

impl Sizes {
    fn rows(&self) -> usize {
        self.dims.iter().product::<usize>() / self.width.max(1)
    }
}

/// The output and each row's mean and `1 / sqrt(var + eps)`.
fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: Option<&[f32]>,
    s: &Sizes,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (rows, w) = (s.rows(), s.width);
    let mut y = vec![0f32; rows * w];
    let mut stats = vec![0f32; 2 * rows];
    let stats_out = SharedMut(stats.as_mut_ptr());
    for_each_piece_mut(&mut y, ROWS * w, |range, out| {
        let first = range.start / w;
        for (i, yr) in out.chunks_exact_mut(w).enumerate() {
            let r = first + i;
            let xr = &x[r * w..(r + 1) * w];
            let mean = xr.iter().map(|&v| f64::from(v)).sum::<f64>() / w as f64;
            let var = xr
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / w as f64;
            let (mean, rstd) = (mean as f32, (1.0 / (var + s.eps).sqrt()) as f32);
            match beta {
                Some(b) => {
                    for (((o, &v), &g), &b) in yr.iter_mut().zip(xr).zip(gamma).zip(b) {
                        *o = (v - mean) * rstd * g + b;
                    }
                }
                None => {
                    for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(gamma) {
                        *o = (v - mean) * rstd * g;
                    }
                }
            }
            // SAFETY: each task writes the statistics of its own rows; `stats` outlives them.
            unsafe {
                *stats_out.ptr().add(r) = mean;
                *stats_out.ptr().add(rows + r) = rstd;
            }
        }
    });
    let rstd = stats.split_off(rows);
    (y, stats, rstd)
}

/// The operation: inputs `[x, gamma]` or `[x, gamma, beta]`.
#[derive(Debug)]
struct LayerNormOp;

/// The input (contiguous), `gamma`, each row's mean and reciprocal deviation, the sizes.
#[derive(Clone, Debug)]
struct LayerNormState {
    x: FlexTensor,
    gamma: FlexTensor,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    sizes: Sizes,
}

impl<const N: usize> Backward<Flex, N> for LayerNormOp {
    type State = LayerNormState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let LayerNormState {
            x,
            gamma,
            mean,
            rstd,
            sizes,
        } = ops.state;
        let (rows, w) = (sizes.rows(), sizes.width);
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (dy, x, gamma) = (
            dy.storage::<f32>(),
            x.storage::<f32>(),
            gamma.storage::<f32>(),
        );
        let blocks = rows.div_ceil(ROWS);
        // per block of rows: the sums of dy * xhat (gamma's gradient) and of dy (beta's)
        let mut partial = vec![0f32; blocks * 2 * w];
        let partial_out = SharedMut(partial.as_mut_ptr());
        let mut dx = vec![0f32; rows * w];
        for_each_piece_mut(&mut dx, ROWS * w, |range, out| {
            let first = range.start / w;
            // SAFETY: block `first / ROWS` is this task's alone; `partial` outlives the tasks.
            let sums = unsafe {
                std::slice::from_raw_parts_mut(partial_out.ptr().add(first / ROWS * 2 * w), 2 * w)
            };
            let (dgamma, dbeta) = sums.split_at_mut(w);
            for (i, dxr) in out.chunks_exact_mut(w).enumerate() {
                let r = first + i;
                let (xr, dyr) = (&x[r * w..(r + 1) * w], &dy[r * w..(r + 1) * w]);
                let (m, q) = (mean[r], rstd[r]);
                let (mut a, mut b) = (0f32, 0f32);
                for j in 0..w {
                    let xhat = (xr[j] - m) * q;
                    let g = dyr[j] * gamma[j];
                    a += g;
                    b += g * xhat;
                    dgamma[j] += dyr[j] * xhat;
                    dbeta[j] += dyr[j];
                }
                let (a, b) = (a / w as f32, b / w as f32);
                for j in 0..w {
                    let xhat = (xr[j] - m) * q;
                    dxr[j] = q * (dyr[j] * gamma[j] - a - xhat * b);
                }
            }
        });
        let parents = &ops.parents;
        if let Some(node) = &parents[0] {
            grads.register::<Flex>(node.id, flex_tensor(dx, sizes.dims.clone()));
        }
        // the blocks' sums, in block order
        let mut totals = vec![0f32; 2 * w];
        for block in partial.chunks_exact(2 * w) {
            totals.iter_mut().zip(block).for_each(|(t, p)| *t += p);
        }
        let dbeta = totals.split_off(w);
        if let Some(node) = &parents[1] {
            grads.register::<Flex>(node.id, flex_tensor(totals, vec![w]));
        }
        if let Some(Some(node)) = parents.get(2) {
            grads.register::<Flex>(node.id, flex_tensor(dbeta, vec![w]));
        }
    }
}

fn tracked<const N: usize>(inputs: [AdTensor; N], sizes: Sizes) -> AdTensor {
    let nodes = inputs.each_ref().map(|t| t.node());
    let x = inputs[0].primitive().to_contiguous();
    let gamma = inputs[1].primitive().to_contiguous();
    let beta = (N == 3).then(|| inputs[2].primitive().to_contiguous());
    let (y, mean, rstd) = forward(
        x.storage::<f32>(),
        gamma.storage::<f32>(),
        beta.as_ref().map(|b| b.storage::<f32>()),
        &sizes,
    );
    let y = flex_tensor(y, sizes.dims.clone());
    match <LayerNormOp as Backward<Flex, N>>::prepare::<NoCheckpointing>(LayerNormOp, nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = LayerNormState {
                x,
                gamma,
                mean,
                rstd,
                sizes,
            };
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

#[cfg(test)]
mod tests {
    use super::super::flex_test_support::{max_abs_diff, values, vec_of};
    use burn::module::Param;
    use burn::nn::LayerNormConfig;
    use burn::tensor::{Device, Tensor, TensorData};

    /// Output and the gradients of the input, gamma and beta against Burn's LayerNorm, on a
    /// 3-D input with more rows than one block and a row count that leaves a partial block.
    #[test]
    fn matches_burns_layer_norm_and_its_gradients() {
        let device = Device::flex().autodiff();
        let (b, t, w) = (3, 29, 48);
        let eps = 1e-6;
        let upstream = Tensor::<3>::from_data(
            TensorData::new(values(b * t * w, 4, 0.3), [b, t, w]),
            &device,
        );
        let run = |ours: bool| {
            let mut norm = LayerNormConfig::new(w).with_epsilon(eps).init(&device);
            let param = |seed| {
                Param::from_tensor(Tensor::<1>::from_data(
                    TensorData::new(values(w, seed, 0.3), [w]),
                    &device,
                ))
            };
            norm.gamma = param(2);
            norm.beta = Some(param(3));
            let x = Tensor::<3>::from_data(
                TensorData::new(values(b * t * w, 1, 0.3), [b, t, w]),
                &device,
            )
            .require_grad();
            let y = if ours {
                super::layer_norm(&norm, eps, &x).expect("burn-flex under autodiff")
            } else {
                norm.forward(x.clone())
            };
            let g = (y.clone() * upstream.clone()).sum().backward();
            vec![
                vec_of(y),
                vec_of(x.grad(&g).unwrap()),
                vec_of(norm.gamma.val().grad(&g).unwrap()),
                vec_of(norm.beta.as_ref().unwrap().val().grad(&g).unwrap()),
            ]
        };
        let (ours, burns) = (run(true), run(false));
        for (i, (a, b)) in ours.iter().zip(&burns).enumerate() {
            let scale = b.iter().fold(1f32, |m, x| m.max(x.abs()));
            let e = max_abs_diff(a, b) / scale;
            assert!(e < 2e-5, "output/gradient {i}: relative {e}");
        }
    }

    /// Outside autodiff the caller keeps burn-flex's own fused LayerNorm.
    #[test]
    fn untracked_tensors_are_left_to_burn() {
        let device = Device::flex();
        let norm = LayerNormConfig::new(8).init(&device);
        let x = Tensor::<2>::from_data(TensorData::new(values(16, 1, 0.3), [2, 8]), &device);
        assert!(super::layer_norm(&norm, 1e-5, &x).is_none());
    }
}
