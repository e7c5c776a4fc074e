//! The 2-D convolution of the ResNets (PAWS's Wide ResNet, the DINO and PAWS ResNets; the ViT's
//! patch embedding keeps Burn's, see BENCHMARKS.md "PAWS"): on burn-flex (with or without
//! autodiff) it runs
//! [`crate::cpu::conv`]'s im2col products, forward and backward, as a custom autodiff
//! operation; on every other backend, and for what those kernels do not cover (groups,
//! dilation, uneven padding, other float types), it is Burn's own `conv2d`.
//!
//! Why: burn-flex's convolution backward (Burn's default: the weight gradient as a convolution
//! with the output gradient as its kernel) made a PAWS training step on WRN-10-2 2.3x slower
//! than PyTorch's convolutions (BENCHMARKS.md, "PAWS"). The custom operation goes through
//! Burn's documented extension path (`Tensor::try_into_primitive` /
//! `Tensor::from_primitive`, burn-autodiff's `Backward`), so the rest of the graph, the
//! optimisers and the other backends are untouched. The output keeps the input's gradient
//! checkpointing context (a primitive carries none).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, BackendTypes, Flex};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, GradientCheckpointingStrategy, Tensor, TensorData};

use crate::cpu::conv::{ConvShape, conv2d_backward, conv2d_forward};

/// `layer`'s convolution of `x` (what `Conv2d::forward` computes), on the fast path where it
/// applies.
pub fn conv2d_layer(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let padding = match layer.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Some([top, left])
        }
        PaddingConfig2d::Valid => Some([0, 0]),
        _ => None,
    };
    match padding {
        Some(padding) => conv2d(
            x,
            layer.weight.val(),
            layer.bias.as_ref().map(|b| b.val()),
            ConvOptions::new(layer.stride, padding, layer.dilation, layer.groups),
        ),
        None => layer.forward(x),
    }
}

/// `burn::tensor::module::conv2d`, on the fast path where it applies.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    if let Some(shape) = covered_shape(&x, &weight, bias.as_ref(), &options) {
        let checkpointing = x.gradient_checkpointing_strategy();
        if let Some((x, w, b)) = on::<Autodiff<Flex>, 4, 4>(&x, &weight, bias.as_ref()) {
            let out = match b {
                Some(b) => tracked_conv([x, w, b], shape),
                None => tracked_conv([x, w], shape),
            };
            return in_context(out, checkpointing);
        }
        if let Some((x, w, b)) = on::<Flex, 4, 4>(&x, &weight, bias.as_ref()) {
            return Tensor::from_primitive::<Flex>(forward(&x, &w, b.as_ref(), &shape));
        }
    }
    burn::tensor::module::conv2d(x, weight, bias, options)
}

/// The primitives of `x`, `w` and `b` on backend `B`, if all three live there.
#[allow(clippy::type_complexity)]
pub(super) fn on<B, const D: usize, const E: usize>(
    x: &Tensor<D>,
    w: &Tensor<E>,
    b: Option<&Tensor<1>>,
) -> Option<(
    B::FloatTensorPrimitive,
    B::FloatTensorPrimitive,
    Option<B::FloatTensorPrimitive>,
)>
where
    B: burn::backend::Backend,
    burn::backend::DispatchTensor: burn::backend::DispatchKindConversion<B>,
{
    let x = x.clone().try_into_primitive::<B>().ok()?;
    let w = w.clone().try_into_primitive::<B>().ok()?;
    let b = match b {
        Some(b) => Some(b.clone().try_into_primitive::<B>().ok()?),
        None => None,
    };
    Some((x, w, b))
}

/// The kernels' shape for these tensors, or `None` where Burn's convolution must do it.
fn covered_shape(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    options: &ConvOptions<2>,
) -> Option<ConvShape> {
    let [batch, in_ch, height, width] = x.dims();
    let [out_ch, w_in, kh, kw] = weight.dims();
    let f32s = x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.is_none_or(|b| b.dtype() == DType::F32 && b.dims() == [out_ch]);
    let shape = ConvShape {
        batch,
        in_ch,
        height,
        width,
        out_ch,
        kernel: [kh, kw],
        stride: options.stride,
        padding: options.padding_begin(),
    };
    (f32s
        && w_in == in_ch
        && options.groups == 1
        && options.dilation == [1, 1]
        && !options.is_asymmetric()
        && shape.output().is_some())
    .then_some(shape)
}

/// A tracked primitive of `Autodiff<Flex>`, what the custom operations take and return.
pub(super) type AdTensor = <Autodiff<Flex> as BackendTypes>::FloatTensorPrimitive;

/// `t` as a tensor in the checkpointing context `c` of the operation's input (a primitive
/// carries none).
pub(super) fn in_context<const D: usize>(
    t: AdTensor,
    c: Option<GradientCheckpointingStrategy>,
) -> Tensor<D> {
    let t = Tensor::from_primitive::<Autodiff<Flex>>(t);
    match c {
        Some(strategy) => t.with_gradient_checkpointing_strategy(strategy),
        None => t,
    }
}

/// A burn-flex tensor of `shape` holding `values`.
pub(crate) fn flex_tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn forward(x: &FlexTensor, w: &FlexTensor, b: Option<&FlexTensor>, s: &ConvShape) -> FlexTensor {
    let (x, w, b) = (
        x.to_contiguous(),
        w.to_contiguous(),
        b.map(|b| b.to_contiguous()),
    );
    let y = conv2d_forward(
        x.storage::<f32>(),
        w.storage::<f32>(),
        b.as_ref().map(|b| b.storage::<f32>()),
        s,
    );
    let [oh, ow] = s.output().expect("covered shape");
    flex_tensor(y, vec![s.batch, s.out_ch, oh, ow])
}

/// The convolution as one autodiff operation: inputs `[x, weight]` or `[x, weight, bias]`.
#[derive(Debug)]
struct ConvOp;

impl<const N: usize> Backward<Flex, N> for ConvOp {
    /// The input and the weight (contiguous f32), and the shape.
    type State = (FlexTensor, FlexTensor, ConvShape);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w, s) = ops.state;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let parents = &ops.parents;
        let wanted = |i: usize| parents.get(i).is_some_and(|p| p.is_some());
        let (dx, dw, db) = conv2d_backward(
            x.storage::<f32>(),
            w.storage::<f32>(),
            dy.storage::<f32>(),
            &s,
            (wanted(0), wanted(1), wanted(2)),
        );
        let shapes = [
            vec![s.batch, s.in_ch, s.height, s.width],
            vec![s.out_ch, s.in_ch, s.kernel[0], s.kernel[1]],
            vec![s.out_ch],
        ];
        for (i, (grad, shape)) in [dx, dw, db].into_iter().zip(shapes).enumerate() {
            if let (Some(Some(node)), Some(grad)) = (parents.get(i), grad) {
                grads.register::<Flex>(node.id, flex_tensor(grad, shape));
            }
        }
    }
}

fn tracked_conv<const N: usize>(inputs: [AdTensor; N], s: ConvShape) -> AdTensor {
    let nodes = inputs.each_ref().map(|t| t.node());
    let x = inputs[0].primitive().to_contiguous();
    let w = inputs[1].primitive().to_contiguous();
    let b = (N == 3).then(|| inputs[2].primitive().to_contiguous());
    let y = forward(&x, &w, b.as_ref(), &s);
    match <ConvOp as Backward<Flex, N>>::prepare::<NoCheckpointing>(ConvOp, nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((x, w, s), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}
