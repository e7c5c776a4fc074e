//! The linear layers of the ViT, the DINO head and the PAWS heads: on burn-flex (with or
//! without autodiff) [`crate::cpu::matmul`]'s products, forward and both gradients, as one
//! custom autodiff operation; elsewhere (and under gradient checkpointing) Burn's `linear`.
//!
//! Why: a burn-flex product allocates its output through `FlexTensor::empty`, which zeroes a
//! byte buffer and then copies it once more to align it (`Bytes::from_bytes_vec`): a memset
//! and a memcpy of every output, 8% of a ViT-S/16 training step in `perf`, before the
//! product writes it; the bias is one more pass. Here the output is written once, the bias
//! added while a tile is in cache, and the gradients read the input, the weight and the
//! output gradient where they lie (a transposed operand is a swap of strides; the DINO head's
//! `x @ w^T` reads `w` in place). The weight gradient is one product over all rows (the batch
//! reduction inside it), the bias gradient a sum of columns.
//!
//! Under Burn's balanced gradient checkpointing the operation would keep its input alive and
//! undo the memory saving, so that path keeps Burn's `linear`, which checkpoints it.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, GradientCheckpointingStrategy, Tensor};

use super::flex_conv::{AdTensor, flex_tensor, in_context, on};
use crate::cpu::matmul::{column_sums, matmul_strided};

/// `x @ weight (+ bias)` over the last dimension of `x` (`weight`: `[in, out]`), what
/// `burn::tensor::module::linear` computes, on the fast path where it applies.
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let [k, n] = weight.dims();
    let f32s = x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias
            .as_ref()
            .is_none_or(|b| b.dtype() == DType::F32 && b.dims() == [n]);
    let checkpointing = x.gradient_checkpointing_strategy();
    if f32s
        && D >= 1
        && x.dims()[D - 1] == k
        && checkpointing != Some(GradientCheckpointingStrategy::Balanced)
    {
        let dims = x.dims().to_vec();
        let shape = Sizes { k, n, dims };
        if let Some((x, w, b)) = on::<Autodiff<Flex>, D, 2>(&x, &weight, bias.as_ref()) {
            let out = match b {
                Some(b) => tracked_linear([x, w, b], shape),
                None => tracked_linear([x, w], shape),
            };
            return in_context(out, checkpointing);
        }
        if let Some((x, w, b)) = on::<Flex, D, 2>(&x, &weight, bias.as_ref()) {
            let (w, strides) = strided(w);
            let out = forward(&x.to_contiguous(), (&w, strides), b.as_ref(), &shape);
            return Tensor::from_primitive::<Flex>(out);
        }
    }
    burn::tensor::module::linear(x, weight, bias)
}

/// The sizes of one linear layer: `x` of `dims` (last `k`), weight `[k, n]`.
#[derive(Clone, Debug)]
struct Sizes {
    k: usize,
    n: usize,
    dims: Vec<usize>,
}

impl Sizes {
    /// Rows of `x` once its leading dimensions are flattened.
    fn rows(&self) -> usize {
        self.dims[..self.dims.len() - 1].iter().product()
    }
}

/// A `[k, n]` weight as a buffer holding exactly its values and the (row, column) strides to
/// read it with: a contiguous tensor or the transpose of one in place, anything else copied.
fn strided(w: FlexTensor) -> (FlexTensor, (usize, usize)) {
    let (k, n) = (w.layout().shape()[0], w.layout().shape()[1]);
    let exact = w.layout().start_offset() == 0 && w.bytes().len() == k * n * 4;
    let (s0, s1) = (w.layout().strides()[0], w.layout().strides()[1]);
    if exact && k > 1 && n > 1 {
        if (s0, s1) == (n as isize, 1) {
            return (w, (n, 1));
        }
        if (s0, s1) == (1, k as isize) {
            return (w, (1, k));
        }
    }
    (w.to_contiguous(), (n, 1))
}

/// `x @ w + b` for a contiguous `x`.
fn forward(
    x: &FlexTensor,
    (w, strides): (&FlexTensor, (usize, usize)),
    b: Option<&FlexTensor>,
    s: &Sizes,
) -> FlexTensor {
    let b = b.map(|b| b.to_contiguous());
    let rows = s.rows();
    let mut y = vec![0f32; rows * s.n];
    matmul_strided(
        (rows, s.n, s.k),
        (x.storage::<f32>(), (s.k, 1)),
        (w.storage::<f32>(), strides),
        b.as_ref().map(|b| b.storage::<f32>()),
        &mut y,
    );
    let mut dims = s.dims.clone();
    *dims.last_mut().expect("at least one dimension") = s.n;
    flex_tensor(y, dims)
}

/// The layer as one autodiff operation: inputs `[x, weight]` or `[x, weight, bias]`.
#[derive(Debug)]
struct LinearOp;

/// What the gradients need: `x` (contiguous) for the weight's, the weight and its strides for
/// the input's (each kept only when the other is tracked), and the sizes.
type LinearState = (
    Option<FlexTensor>,
    Option<(FlexTensor, (usize, usize))>,
    Sizes,
);

impl<const N: usize> Backward<Flex, N> for LinearOp {
    type State = LinearState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w, s) = ops.state;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let g = dy.storage::<f32>();
        let (rows, k, n) = (s.rows(), s.k, s.n);
        let parents = &ops.parents;
        if let (Some(node), Some((w, (rs, cs)))) = (&parents[0], &w) {
            // dx = dy @ w^T: the weight read with its strides swapped
            let mut dx = vec![0f32; rows * k];
            matmul_strided(
                (rows, k, n),
                (g, (n, 1)),
                (w.storage::<f32>(), (*cs, *rs)),
                None,
                &mut dx,
            );
            grads.register::<Flex>(node.id, flex_tensor(dx, s.dims.clone()));
        }
        if let (Some(node), Some(x)) = (&parents[1], &x) {
            // dw = x^T @ dy, every row of every leading dimension in one product
            let mut dw = vec![0f32; k * n];
            matmul_strided(
                (k, n, rows),
                (x.storage::<f32>(), (1, k)),
                (g, (n, 1)),
                None,
                &mut dw,
            );
            grads.register::<Flex>(node.id, flex_tensor(dw, vec![k, n]));
        }
        if let Some(Some(node)) = parents.get(2) {
            grads.register::<Flex>(node.id, flex_tensor(column_sums(g, rows, n), vec![n]));
        }
    }
}

fn tracked_linear<const N: usize>(inputs: [AdTensor; N], s: Sizes) -> AdTensor {
    let nodes = inputs.each_ref().map(|t| t.node());
    let tracked = [inputs[0].is_tracked(), inputs[1].is_tracked()];
    let x = inputs[0].primitive().to_contiguous();
    let w = strided(inputs[1].primitive().clone());
    let b = (N == 3).then(|| inputs[2].primitive().clone());
    let y = forward(&x, (&w.0, w.1), b.as_ref(), &s);
    match <LinearOp as Backward<Flex, N>>::prepare::<NoCheckpointing>(LinearOp, nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            // x is only needed for the weight's gradient, the weight only for x's
            let state = (tracked[1].then_some(x), tracked[0].then_some(w), s);
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

#[cfg(test)]
mod tests {
    use super::super::flex_test_support::{max_abs_diff, values, vec_of};
    use burn::tensor::{Device, Tensor, TensorData};

    /// Output and the three gradients against Burn's `linear` on the same values: a 3-D
    /// input, with and without a bias, the weight given plainly and as the transpose of a
    /// `[out, in]` tensor (the DINO head's last layer).
    #[test]
    fn matches_burns_linear_and_its_gradients() {
        let device = Device::flex().autodiff();
        let (b, t, k, n) = (3, 17, 40, 70);
        let xv = values(b * t * k, 1, 0.0);
        let wv = values(k * n, 2, 0.0);
        let bv = values(n, 3, 0.0);
        let upstream = Tensor::<3>::from_data(
            TensorData::new(values(b * t * n, 4, 0.0), [b, t, n]),
            &device,
        );
        for (with_bias, transposed) in [(true, false), (false, false), (false, true), (true, true)]
        {
            let run = |ours: bool| {
                let x = Tensor::<3>::from_data(TensorData::new(xv.clone(), [b, t, k]), &device)
                    .require_grad();
                let w = if transposed {
                    // the same [k, n] values, stored [n, k]
                    let wt: Vec<f32> = (0..n * k).map(|i| wv[(i % k) * n + i / k]).collect();
                    Tensor::<2>::from_data(TensorData::new(wt, [n, k]), &device).require_grad()
                } else {
                    Tensor::<2>::from_data(TensorData::new(wv.clone(), [k, n]), &device)
                        .require_grad()
                };
                let bias = Tensor::<1>::from_data(TensorData::new(bv.clone(), [n]), &device)
                    .require_grad();
                let weight = if transposed {
                    w.clone().transpose()
                } else {
                    w.clone()
                };
                let bias_in = with_bias.then(|| bias.clone());
                let y = if ours {
                    super::linear(x.clone(), weight, bias_in)
                } else {
                    burn::tensor::module::linear(x.clone(), weight, bias_in)
                };
                let g = (y.clone() * upstream.clone()).sum().backward();
                let grads = [
                    vec_of(x.grad(&g).unwrap()),
                    vec_of(w.grad(&g).unwrap()),
                    if with_bias {
                        vec_of(bias.grad(&g).unwrap())
                    } else {
                        vec![]
                    },
                ];
                (vec_of(y), grads)
            };
            let (y0, g0) = run(true);
            let (y1, g1) = run(false);
            let e = max_abs_diff(&y0, &y1);
            assert!(
                e < 1e-5,
                "output {e} (bias {with_bias}, transposed {transposed})"
            );
            for (i, (a, b)) in g0.iter().zip(&g1).enumerate() {
                let e = max_abs_diff(a, b);
                assert!(
                    e < 1e-4,
                    "gradient {i}: {e} (bias {with_bias}, transposed {transposed})"
                );
            }
        }
    }

    /// Without autodiff (the teacher's forward pass) the same products.
    #[test]
    fn the_untracked_forward_matches_burns() {
        let device = Device::flex();
        let (r, k, n) = (33, 24, 50);
        let x = Tensor::<2>::from_data(TensorData::new(values(r * k, 5, 0.0), [r, k]), &device);
        let w = Tensor::<2>::from_data(TensorData::new(values(k * n, 6, 0.0), [k, n]), &device);
        let b = Tensor::<1>::from_data(TensorData::new(values(n, 7, 0.0), [n]), &device);
        let ours = vec_of(super::linear(x.clone(), w.clone(), Some(b.clone())));
        let burns = vec_of(burn::tensor::module::linear(x, w, Some(b)));
        assert!(max_abs_diff(&ours, &burns) < 1e-5);
    }
}
