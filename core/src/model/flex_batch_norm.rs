//! Training-mode batch normalisation (batch statistics) for every BatchNorm here: on burn-flex
//! [`crate::cpu::batch_norm`]'s kernels as one custom autodiff operation, elsewhere Burn's
//! `batch_norm_train`.
//!
//! Why: Burn's default computes the statistics through an axis swap and a reshape that copy
//! the activation four times per layer and step; on burn-flex that was a fifth of a PAWS
//! training step (see [`crate::cpu::batch_norm`]). The mean and variance come back without
//! gradient: they only move the running statistics, as in PyTorch.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor};

use super::flex_conv::{AdTensor, flex_tensor, in_context};
use crate::cpu::batch_norm::{NormShape, batch_norm_train_backward, batch_norm_train_forward};

/// `(output, mean, biased variance)` of `x [N, C, ...]` normalised with its batch statistics,
/// as `burn::tensor::module::batch_norm_train` returns them.
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    let dims = x.dims();
    let covered = D >= 2
        && [x.dtype(), gamma.dtype(), beta.dtype()]
            .iter()
            .all(|d| *d == DType::F32)
        && gamma.dims() == [dims[1]]
        && beta.dims() == [dims[1]]
        && dims.iter().all(|&d| d > 0);
    if covered {
        let s = NormShape {
            batch: dims[0],
            channels: dims[1],
            spatial: dims[2..].iter().product(),
        };
        let tracked = (
            x.clone().try_into_primitive::<Autodiff<Flex>>(),
            gamma.clone().try_into_primitive::<Autodiff<Flex>>(),
            beta.clone().try_into_primitive::<Autodiff<Flex>>(),
        );
        if let (Ok(xp), Ok(g), Ok(b)) = tracked {
            let (y, mean, var) = tracked_norm([xp, g, b], s, eps, dims.to_vec());
            // the outputs stay in the input's checkpointing context (a primitive has none)
            let c = x.gradient_checkpointing_strategy();
            return (
                in_context(y, c),
                in_context(AdTensor::new(mean), c),
                in_context(AdTensor::new(var), c),
            );
        }
        let plain = (
            x.clone().try_into_primitive::<Flex>(),
            gamma.clone().try_into_primitive::<Flex>(),
            beta.clone().try_into_primitive::<Flex>(),
        );
        if let (Ok(x), Ok(g), Ok(b)) = plain {
            let (y, mean, var) = forward(&x, &g, &b, &s, eps, dims.to_vec());
            return (
                Tensor::from_primitive::<Flex>(y),
                Tensor::from_primitive::<Flex>(mean),
                Tensor::from_primitive::<Flex>(var),
            );
        }
    }
    let r = burn::tensor::module::batch_norm_train(x, gamma, beta, eps);
    (r.output, r.mean, r.variance)
}

fn forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    s: &NormShape,
    eps: f64,
    dims: Vec<usize>,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (x, gamma, beta) = (
        x.to_contiguous(),
        gamma.to_contiguous(),
        beta.to_contiguous(),
    );
    let (y, mean, var) = batch_norm_train_forward(
        x.storage::<f32>(),
        s,
        gamma.storage::<f32>(),
        beta.storage::<f32>(),
        eps,
    );
    let c = vec![s.channels];
    (
        flex_tensor(y, dims),
        flex_tensor(mean, c.clone()),
        flex_tensor(var, c),
    )
}

/// Normalisation as one autodiff operation of `[x, gamma, beta]`.
#[derive(Debug)]
struct NormOp;

/// The input and gamma (contiguous), the statistics, the shape and epsilon.
#[derive(Clone, Debug)]
struct NormState {
    x: FlexTensor,
    gamma: FlexTensor,
    mean: Vec<f32>,
    var: Vec<f32>,
    shape: NormShape,
    dims: Vec<usize>,
    eps: f64,
}

impl Backward<Flex, 3> for NormOp {
    type State = NormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let st = ops.state;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (dx, dgamma, dbeta) = batch_norm_train_backward(
            st.x.storage::<f32>(),
            &st.shape,
            st.gamma.storage::<f32>(),
            &st.mean,
            &st.var,
            st.eps,
            dy.storage::<f32>(),
        );
        let c = vec![st.shape.channels];
        let grads_of = [(dx, st.dims), (dgamma, c.clone()), (dbeta, c)];
        for (parent, (grad, shape)) in ops.parents.iter().zip(grads_of) {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, flex_tensor(grad, shape));
            }
        }
    }
}

fn tracked_norm(
    inputs: [AdTensor; 3],
    s: NormShape,
    eps: f64,
    dims: Vec<usize>,
) -> (AdTensor, FlexTensor, FlexTensor) {
    let nodes = inputs.each_ref().map(|t| t.node());
    let x = inputs[0].primitive().to_contiguous();
    let gamma = inputs[1].primitive().to_contiguous();
    let (y, mean, var) = forward(&x, &gamma, inputs[2].primitive(), &s, eps, dims.clone());
    let out = match NormOp
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = NormState {
                x,
                gamma,
                mean: mean.storage::<f32>().to_vec(),
                var: var.storage::<f32>().to_vec(),
                shape: s,
                dims,
                eps,
            };
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    (out, mean, var)
}
