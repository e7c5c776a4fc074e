//! The DINO head's weight-normalised last layer ([`super::weight_norm`]) on burn-flex as one
//! custom autodiff operation: `y = (x @ v^T) * s` with `s_o = g_o / ||v_o||` per output column,
//! so `w` is never materialised.
//!
//! Why: the composed version walks the 16.8 M values of `v` half a dozen times a part and step
//! with fresh buffers (15% of a ViT-S/16 training step in `perf`, most of it page zeroing).
//! Here the forward pass reads `v` twice (its row norms, then the product, which reads `v`
//! transposed in place), and the backward pass writes `dW = dy^T @ x` once and turns it into
//! `dv` in place, row by row, as PyTorch's fused `_weight_norm_interface_backward` does:
//! `dg_o = dW_o . v_o / ||v_o||`, `dv_o = s_o (dW_o - v_o dg_o / ||v_o||)`. The row norms are
//! summed in f64; everything else is f32 as in the composed version.
//!
//! Under Burn's balanced gradient checkpointing, or on other backends and dtypes, the head
//! keeps the composed version.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, GradientCheckpointingStrategy, Tensor};

use super::flex_conv::{AdTensor, flex_tensor, in_context, on};
use crate::cpu::matmul::matmul_strided;
use crate::cpu::parallel::{SharedMut, for_each_piece_mut};

/// Rows of `v` per task of the row-wise passes.
const ROWS: usize = 256;

/// `x @ (g * v / ||v||)^T` as one operation, or `None` where the composed version must run
/// (not burn-flex, not f32, unexpected shapes, balanced checkpointing).
pub fn weight_normed_linear(
    x: &Tensor<2>,
    v: &Tensor<2>,
    g: Option<&Tensor<2>>,
) -> Option<Tensor<2>> {
    let ([n, k], [o, kv]) = (x.dims(), v.dims());
    let f32s = x.dtype() == DType::F32
        && v.dtype() == DType::F32
        && g.is_none_or(|g| g.dtype() == DType::F32);
    let checkpointing = x.gradient_checkpointing_strategy();
    if !f32s
        || k != kv
        || g.is_some_and(|g| g.dims() != [o, 1])
        || checkpointing == Some(GradientCheckpointingStrategy::Balanced)
    {
        return None;
    }
    let s = Sizes { n, k, o };
    // `g` as `[o]` (its gradient flows back through the reshape)
    let g = g.map(|g| g.clone().reshape([o]));
    if let Some((x, v, g)) = on::<Autodiff<Flex>, 2, 2>(x, v, g.as_ref()) {
        let out = match g {
            Some(g) => tracked([x, v, g], s),
            None => tracked([x, v], s),
        };
        return Some(in_context(out, checkpointing));
    }
    let (x, v, g) = on::<Flex, 2, 2>(x, v, g.as_ref())?;
    let (v, g) = (v.to_contiguous(), g.map(|g| g.to_contiguous()));
    let (_, scale) = row_scales(&v, g.as_ref(), &s);
    let y = forward(&x.to_contiguous(), &v, &scale, &s);
    Some(Tensor::from_primitive::<Flex>(y))
}

/// `x` `[n, k]`, `v` `[o, k]`, the output `[n, o]`.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    n: usize,
    k: usize,
    o: usize,
}

/// Per row of `v` (contiguous): `1 / ||v_o||` and the output column's scale `g_o / ||v_o||`.
fn row_scales(v: &FlexTensor, g: Option<&FlexTensor>, s: &Sizes) -> (Vec<f32>, Vec<f32>) {
    let (v, k) = (v.storage::<f32>(), s.k);
    let mut inverse = vec![0f32; s.o];
    for_each_piece_mut(&mut inverse, ROWS, |rows, out| {
        for (q, o) in out.iter_mut().zip(rows) {
            let sq: f64 = v[o * k..(o + 1) * k]
                .iter()
                .map(|&a| f64::from(a) * f64::from(a))
                .sum();
            *q = (1.0 / sq.sqrt()) as f32;
        }
    });
    let scale = match g {
        Some(g) => g
            .storage::<f32>()
            .iter()
            .zip(&inverse)
            .map(|(g, q)| g * q)
            .collect(),
        None => inverse.clone(),
    };
    (inverse, scale)
}

/// `(x @ v^T) * scale` for contiguous `x` and `v`, `v` read transposed in place.
fn forward(x: &FlexTensor, v: &FlexTensor, scale: &[f32], s: &Sizes) -> FlexTensor {
    let Sizes { n, k, o } = *s;
    let mut y = vec![0f32; n * o];
    matmul_strided(
        (n, o, k),
        (x.storage::<f32>(), (k, 1)),
        (v.storage::<f32>(), (1, k)),
        None,
        &mut y,
    );
    scale_columns(&mut y, scale);
    flex_tensor(y, vec![n, o])
}

/// Every row of the row-major `m` (of `scale.len()` columns) times `scale`, element-wise.
fn scale_columns(m: &mut [f32], scale: &[f32]) {
    for_each_piece_mut(m, scale.len().max(1), |_, row| {
        row.iter_mut().zip(scale).for_each(|(a, s)| *a *= s);
    });
}

/// The layer as one autodiff operation: inputs `[x, v]` or `[x, v, g]`.
#[derive(Debug)]
struct WeightNormOp;

/// What the gradients need: `x` (contiguous; for those of `v` and `g`), `v` (contiguous), the
/// row scales of the forward pass and the sizes.
#[derive(Clone)]
struct WeightNormState {
    x: Option<FlexTensor>,
    v: FlexTensor,
    inverse: Vec<f32>,
    scale: Vec<f32>,
    sizes: Sizes,
}

impl std::fmt::Debug for WeightNormState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightNormState")
            .field("sizes", &self.sizes)
            .finish_non_exhaustive()
    }
}

impl<const N: usize> Backward<Flex, N> for WeightNormOp {
    type State = WeightNormState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let WeightNormState {
            x,
            v,
            inverse,
            scale,
            sizes,
        } = ops.state;
        let Sizes { n, k, o } = sizes;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let dy = dy.storage::<f32>();
        let v = v.storage::<f32>();
        let parents = &ops.parents;
        if let Some(node) = &parents[0] {
            // dx = (dy * scale) @ v
            let mut scaled = dy.to_vec();
            scale_columns(&mut scaled, &scale);
            let mut dx = vec![0f32; n * k];
            matmul_strided((n, k, o), (&scaled, (o, 1)), (v, (k, 1)), None, &mut dx);
            grads.register::<Flex>(node.id, flex_tensor(dx, vec![n, k]));
        }
        let v_node = &parents[1];
        let g_node = parents.get(2).and_then(|p| p.as_ref());
        let Some(x) = x.filter(|_| v_node.is_some() || g_node.is_some()) else {
            return;
        };
        // dW = dy^T @ x, the gradient of the normalised weight; then, row by row in place,
        // dv = scale * (dW - v * dg / ||v||) with dg = dW . v / ||v||
        let mut dw = vec![0f32; o * k];
        matmul_strided(
            (o, k, n),
            (dy, (1, o)),
            (x.storage::<f32>(), (k, 1)),
            None,
            &mut dw,
        );
        let mut dg = vec![0f32; o];
        let dg_out = SharedMut(dg.as_mut_ptr());
        let into_dv = v_node.is_some();
        for_each_piece_mut(&mut dw, ROWS * k, |range, rows| {
            let first = range.start / k;
            for (i, row) in rows.chunks_exact_mut(k).enumerate() {
                let r = first + i;
                let vr = &v[r * k..(r + 1) * k];
                let d = row.iter().zip(vr).map(|(a, b)| a * b).sum::<f32>() * inverse[r];
                // SAFETY: each task writes the entries of its own rows of `dg`, which
                // outlives the tasks.
                unsafe { *dg_out.ptr().add(r) = d };
                if into_dv {
                    let (sr, c) = (scale[r], d * inverse[r]);
                    row.iter_mut()
                        .zip(vr)
                        .for_each(|(a, b)| *a = sr * (*a - b * c));
                }
            }
        });
        if let Some(node) = v_node {
            grads.register::<Flex>(node.id, flex_tensor(dw, vec![o, k]));
        }
        if let Some(node) = g_node {
            grads.register::<Flex>(node.id, flex_tensor(dg, vec![o]));
        }
    }
}

fn tracked<const N: usize>(inputs: [AdTensor; N], sizes: Sizes) -> AdTensor {
    let nodes = inputs.each_ref().map(|t| t.node());
    let weights_tracked = inputs[1..].iter().any(|t| t.is_tracked());
    let x = inputs[0].primitive().to_contiguous();
    let v = inputs[1].primitive().to_contiguous();
    let g = (N == 3).then(|| inputs[2].primitive().to_contiguous());
    let (inverse, scale) = row_scales(&v, g.as_ref(), &sizes);
    let y = forward(&x, &v, &scale, &sizes);
    match <WeightNormOp as Backward<Flex, N>>::prepare::<NoCheckpointing>(WeightNormOp, nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = WeightNormState {
                x: weights_tracked.then_some(x),
                v,
                inverse,
                scale,
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
    use super::super::weight_norm::composed;
    use burn::tensor::{Device, Tensor, TensorData};

    /// Output and the gradients of `x`, `v` and `g` against the composed Burn version, with
    /// and without `g`, on sizes that leave partial tiles and row blocks.
    #[test]
    fn matches_the_composed_weight_norm_and_its_gradients() {
        let device = Device::flex().autodiff();
        let (n, k, o) = (13, 40, 300);
        let upstream =
            Tensor::<2>::from_data(TensorData::new(values(n * o, 4, 0.01), [n, o]), &device);
        for with_g in [false, true] {
            let run = |ours: bool| {
                let x = Tensor::<2>::from_data(
                    TensorData::new(values(n * k, 1, 0.01), [n, k]),
                    &device,
                )
                .require_grad();
                let v = Tensor::<2>::from_data(
                    TensorData::new(values(o * k, 2, 0.01), [o, k]),
                    &device,
                )
                .require_grad();
                let g =
                    Tensor::<2>::from_data(TensorData::new(values(o, 3, 0.01), [o, 1]), &device)
                        .require_grad();
                let g_in = with_g.then(|| g.clone());
                let y = if ours {
                    super::weight_normed_linear(&x, &v, g_in.as_ref()).expect("burn-flex")
                } else {
                    composed(x.clone(), v.clone(), g_in)
                };
                let grads = (y.clone() * upstream.clone()).sum().backward();
                let mut out = vec![
                    vec_of(y),
                    vec_of(x.grad(&grads).unwrap()),
                    vec_of(v.grad(&grads).unwrap()),
                ];
                if with_g {
                    out.push(vec_of(g.grad(&grads).unwrap()));
                }
                out
            };
            let (ours, burns) = (run(true), run(false));
            for (i, (a, b)) in ours.iter().zip(&burns).enumerate() {
                let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
                let e = max_abs_diff(a, b) / scale;
                assert!(e < 1e-5, "output/gradient {i} (g: {with_g}): relative {e}");
            }
        }
    }

    /// Without autodiff (the teacher) the same output; `x` untracked under autodiff gives
    /// only the weights' gradients.
    #[test]
    fn the_untracked_forward_and_a_frozen_input_match() {
        let (n, k, o) = (5, 24, 70);
        let device = Device::flex();
        let x = Tensor::<2>::from_data(TensorData::new(values(n * k, 5, 0.01), [n, k]), &device);
        let v = Tensor::<2>::from_data(TensorData::new(values(o * k, 6, 0.01), [o, k]), &device);
        let ours = vec_of(super::weight_normed_linear(&x, &v, None).expect("burn-flex"));
        let burns = vec_of(composed(x, v, None));
        assert!(max_abs_diff(&ours, &burns) < 1e-5);

        let device = Device::flex().autodiff();
        let x = Tensor::<2>::from_data(TensorData::new(values(n * k, 5, 0.01), [n, k]), &device);
        let v = Tensor::<2>::from_data(TensorData::new(values(o * k, 6, 0.01), [o, k]), &device)
            .require_grad();
        let y = super::weight_normed_linear(&x, &v, None).expect("burn-flex");
        let ours = vec_of(v.grad(&y.sum().backward()).unwrap());
        let v2 = Tensor::<2>::from_data(TensorData::new(values(o * k, 6, 0.01), [o, k]), &device)
            .require_grad();
        let burns = vec_of(
            v2.grad(&composed(x, v2.clone(), None).sum().backward())
                .unwrap(),
        );
        assert!(max_abs_diff(&ours, &burns) < 1e-5);
    }
}
