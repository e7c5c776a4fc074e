//! The exact GELU of the ViT's MLPs and the DINO head: on burn-flex (with or without
//! autodiff) [`crate::cpu::kernels`]'s vectorised GELU and its gradient as one custom
//! autodiff operation; elsewhere Burn's `gelu` ([`super::cube_gelu`] on CubeCL devices).
//!
//! Why: burn-flex computes `erf` with libm's scalar `erff`, and Burn's GELU gradient is a
//! chain of generic element-wise ops, each a fresh buffer: on an AVX-512 Xeon `erff` alone
//! was 4.7% of a ViT-S/16 training step (BENCHMARKS.md, "CPU speed"). The kernels are the CPU
//! engine's (Abramowitz-Stegun erf, |error| < 1.5e-7), checked against PyTorch's fixtures.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor};

use super::flex_conv::{AdTensor, flex_tensor, in_context};
use crate::cpu::kernels::{gelu_backward, gelu_into};
use crate::cpu::parallel::for_each_piece_mut;

/// Elements per task: large enough that a hand-off costs little against it.
const CHUNK: usize = 1 << 15;

/// `gelu(x)` (exact, erf), on the fast path where it applies.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() == DType::F32 {
        let c = x.gradient_checkpointing_strategy();
        let dims = x.dims().to_vec();
        if let Ok(p) = x.clone().try_into_primitive::<Autodiff<Flex>>() {
            return in_context(tracked_gelu(p, dims), c);
        }
        if let Ok(p) = x.clone().try_into_primitive::<Flex>() {
            return Tensor::from_primitive::<Flex>(forward(&p.to_contiguous(), dims));
        }
    }
    super::cube_gelu::gelu(x)
}

/// `f(chunk)` over `CHUNK`-element pieces of `n` outputs, in parallel.
fn chunked(n: usize, f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync + Send) -> Vec<f32> {
    let mut out = vec![0f32; n];
    for_each_piece_mut(&mut out, CHUNK, f);
    out
}

/// GELU of a contiguous f32 tensor.
fn forward(x: &FlexTensor, dims: Vec<usize>) -> FlexTensor {
    let v = x.storage::<f32>();
    let y = chunked(v.len(), |r, o| gelu_into(&v[r], o));
    flex_tensor(y, dims)
}

#[derive(Debug)]
struct GeluOp;

impl Backward<Flex, 1> for GeluOp {
    /// The input (contiguous) and its shape.
    type State = (FlexTensor, Vec<usize>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, dims) = ops.state;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        if let Some(node) = &ops.parents[0] {
            let (xv, g) = (x.storage::<f32>(), dy.storage::<f32>());
            let dx = chunked(xv.len(), |r, o| gelu_backward(&xv[r.clone()], &g[r], o));
            grads.register::<Flex>(node.id, flex_tensor(dx, dims));
        }
    }
}

fn tracked_gelu(x: AdTensor, dims: Vec<usize>) -> AdTensor {
    let nodes = [x.node()];
    let xc = x.primitive().to_contiguous();
    let y = forward(&xc, dims.clone());
    match GeluOp
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((xc, dims), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

#[cfg(test)]
mod tests {
    use super::super::flex_test_support::{max_abs_diff, vec_of};
    use burn::tensor::{Device, Tensor, TensorData};

    /// Forward and gradient against Burn's own GELU on the same values, tracked and not.
    #[test]
    fn matches_burns_gelu_and_its_gradient() {
        let device = Device::flex().autodiff();
        let n = 70_001; // over two chunks, the last one partial
        let values: Vec<f32> = (0..n).map(|i| (i as f32 / n as f32 - 0.5) * 14.0).collect();
        let make =
            || Tensor::<1>::from_data(TensorData::new(values.clone(), [n]), &device).require_grad();
        let weights: Vec<f32> = (0..n).map(|i| ((i * 37) % 11) as f32 * 0.1 - 0.5).collect();
        let w = Tensor::<1>::from_data(TensorData::new(weights, [n]), &device);
        let (x0, x1) = (make(), make());
        let ours = super::gelu(x0.clone());
        let burns = burn::tensor::activation::gelu(x1.clone());
        let e = max_abs_diff(&vec_of(ours.clone()), &vec_of(burns.clone()));
        assert!(e < 1e-6, "forward max abs error {e}");
        let g0 = (ours * w.clone()).sum().backward();
        let g1 = (burns * w).sum().backward();
        let e = max_abs_diff(
            &vec_of(x0.grad(&g0).unwrap()),
            &vec_of(x1.grad(&g1).unwrap()),
        );
        assert!(e < 1e-6, "gradient max abs error {e}");
    }
}
