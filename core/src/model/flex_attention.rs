//! The ViT's multi-head attention core, `softmax(q k^T / sqrt(hd)) v` for every head, from
//! the fused `qkv` output `[B, N, 3D]` to the heads' outputs side by side `[B, N, D]`: on
//! burn-flex one custom autodiff operation (forward and backward) on the CPU engine's
//! products and softmax; elsewhere, in half precision and under gradient checkpointing,
//! [`super::SelfAttention`]'s Burn operations.
//!
//! Why: Burn's decomposition under autodiff materialises the head split (a permuted copy of
//! q, k and v), the scores, the softmax as five operations (max, subtract, exp, sum, divide)
//! and their five gradients, each a fresh buffer, and the head merge; the products go
//! through burn-flex's matmul, which zeroes and copies every output before writing it
//! (see [`super::flex_linear`]). Here each (image, head) is one task: the heads are read as
//! strided views of `qkv` and written as columns of the output, the probabilities are kept
//! for the backward pass (as Burn keeps them), and the backward pass is the textbook one
//! (`dv = p^T do`, `ds = p * (dp - rowsum(dp * p))`, `dq = ds k / sqrt(hd)`,
//! `dk = ds^T q / sqrt(hd)`) writing straight into the gradient of `qkv`. Without autodiff
//! (the teacher) it is the CPU engine's blocked attention ([`crate::cpu::attention`]).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, GradientCheckpointingStrategy, Tensor};

use super::attention_sizes::AttentionSizes as Sizes;
use super::flex_conv::{AdTensor, flex_tensor, in_context};
use crate::cpu::kernels::softmax;
use crate::cpu::matmul::gemm_strided;
use crate::cpu::parallel::{SharedMut, for_each_task};

/// The heads' outputs `[B, N, D]` of `qkv` `[B, N, 3D]`, or `None` where this path does not
/// apply (not burn-flex f32, Burn's balanced checkpointing, sizes that do not split).
pub fn attention(qkv: &Tensor<3>, heads: usize) -> Option<Tensor<3>> {
    let checkpointing = qkv.gradient_checkpointing_strategy();
    let s = Sizes::of(qkv.dims(), heads)?;
    if qkv.dtype() != DType::F32 || checkpointing == Some(GradientCheckpointingStrategy::Balanced) {
        return None;
    }
    let Sizes { b, n, d, heads } = s;
    if let Ok(p) = qkv.clone().try_into_primitive::<Autodiff<Flex>>() {
        return Some(in_context(tracked_attention(p, s), checkpointing));
    }
    if let Ok(p) = qkv.clone().try_into_primitive::<Flex>() {
        let x = p.to_contiguous();
        let mut out = vec![0f32; b * n * d];
        crate::cpu::attention::attention(x.storage::<f32>(), &mut out, b, n, d, heads);
        return Some(Tensor::from_primitive::<Flex>(flex_tensor(
            out,
            vec![b, n, d],
        )));
    }
    None
}

/// The output `[B*N, D]` and the probabilities `[B, H, N, N]` of every head.
fn forward(qkv: &[f32], s: Sizes) -> (Vec<f32>, Vec<f32>) {
    let Sizes { b, n, d, heads } = s;
    let hd = s.hd();
    let mut out = vec![0f32; b * n * d];
    let mut probs = vec![0f32; b * heads * n * n];
    let (o, p) = (SharedMut(out.as_mut_ptr()), SharedMut(probs.as_mut_ptr()));
    for_each_task(b * heads, |task| {
        let (bi, h) = (task / heads, task % heads);
        let base = bi * n * 3 * d + h * hd;
        // SAFETY: reads stay inside image `bi` of `qkv`; each task writes its own n x n
        // block of `probs` and its own (image, head columns) block of `out`.
        unsafe {
            let pt = p.ptr().add(task * n * n);
            let q = qkv.as_ptr().add(base);
            let k = qkv.as_ptr().add(base + d);
            let v = qkv.as_ptr().add(base + 2 * d);
            gemm_strided(
                n,
                n,
                hd,
                pt,
                n,
                false,
                q,
                (3 * d, 1),
                k,
                (1, 3 * d),
                s.scale(),
            );
            for r in 0..n {
                softmax(std::slice::from_raw_parts_mut(pt.add(r * n), n));
            }
            let ot = o.ptr().add(bi * n * d + h * hd);
            gemm_strided(n, hd, n, ot, d, false, pt, (n, 1), v, (3 * d, 1), 1.0);
        }
    });
    (out, probs)
}

/// The gradient of `qkv` `[B*N, 3D]` from the output's `dout` `[B*N, D]`.
fn backward(qkv: &[f32], probs: &[f32], dout: &[f32], s: Sizes) -> Vec<f32> {
    let Sizes { b, n, d, heads } = s;
    let hd = s.hd();
    let scale = s.scale();
    let mut dqkv = vec![0f32; b * n * 3 * d];
    let g = SharedMut(dqkv.as_mut_ptr());
    for_each_task(b * heads, |task| {
        let (bi, h) = (task / heads, task % heads);
        let base = bi * n * 3 * d + h * hd;
        let p = &probs[task * n * n..(task + 1) * n * n];
        let mut ds = vec![0f32; n * n];
        // SAFETY: reads stay inside image `bi` of `qkv`, `dout` and this task's block of
        // `probs`; each task writes its head's q, k and v columns of image `bi` in `dqkv`.
        unsafe {
            let (q, k, v) = (
                qkv.as_ptr().add(base),
                qkv.as_ptr().add(base + d),
                qkv.as_ptr().add(base + 2 * d),
            );
            let dout = dout.as_ptr().add(bi * n * d + h * hd);
            let (dq, dk, dv) = (
                g.ptr().add(base),
                g.ptr().add(base + d),
                g.ptr().add(base + 2 * d),
            );
            // dv = p^T do
            gemm_strided(
                n,
                hd,
                n,
                dv,
                3 * d,
                false,
                p.as_ptr(),
                (1, n),
                dout,
                (d, 1),
                1.0,
            );
            // dp = do v^T
            gemm_strided(
                n,
                n,
                hd,
                ds.as_mut_ptr(),
                n,
                false,
                dout,
                (d, 1),
                v,
                (1, 3 * d),
                1.0,
            );
            // ds = p * (dp - rowsum(dp * p))
            for (dp, pr) in ds.chunks_mut(n).zip(p.chunks(n)) {
                let dot: f32 = dp.iter().zip(pr).map(|(a, b)| a * b).sum();
                dp.iter_mut().zip(pr).for_each(|(a, b)| *a = b * (*a - dot));
            }
            // dq = ds k * scale, dk = ds^T q * scale
            gemm_strided(
                n,
                hd,
                n,
                dq,
                3 * d,
                false,
                ds.as_ptr(),
                (n, 1),
                k,
                (3 * d, 1),
                scale,
            );
            gemm_strided(
                n,
                hd,
                n,
                dk,
                3 * d,
                false,
                ds.as_ptr(),
                (1, n),
                q,
                (3 * d, 1),
                scale,
            );
        }
    });
    dqkv
}

#[derive(Debug)]
struct AttentionOp;

impl Backward<Flex, 1> for AttentionOp {
    /// `qkv` (contiguous), the probabilities and the sizes.
    type State = (FlexTensor, FlexTensor, Sizes);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (qkv, probs, s) = ops.state;
        let dout = grads.consume::<Flex>(&ops.node).to_contiguous();
        if let Some(node) = &ops.parents[0] {
            let dqkv = backward(
                qkv.storage::<f32>(),
                probs.storage::<f32>(),
                dout.storage::<f32>(),
                s,
            );
            grads.register::<Flex>(node.id, flex_tensor(dqkv, vec![s.b, s.n, 3 * s.d]));
        }
    }
}

fn tracked_attention(qkv: AdTensor, s: Sizes) -> AdTensor {
    let nodes = [qkv.node()];
    let x = qkv.primitive().to_contiguous();
    let (out, probs) = forward(x.storage::<f32>(), s);
    let y = flex_tensor(out, vec![s.b, s.n, s.d]);
    match AttentionOp
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let probs = flex_tensor(probs, vec![s.b * s.heads * s.n * s.n]);
            prep.finish((x, probs, s), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

#[cfg(test)]
mod tests {
    use super::super::composed_attention;
    use super::super::flex_test_support::{max_abs_diff, vec_of};
    use burn::tensor::{Device, Tensor, TensorData};

    /// Output and the gradient of `qkv` against Burn's decomposition, tracked and not.
    #[test]
    fn matches_burns_attention_and_its_gradient() {
        let (b, n, d, heads) = (3, 29, 24, 4);
        let values: Vec<f32> = (0..b * n * 3 * d)
            .map(|i| (((i * 37) % 41) as f32 - 20.0) * 0.06)
            .collect();
        let up: Vec<f32> = (0..b * n * d)
            .map(|i| (((i * 11) % 17) as f32 - 8.0) * 0.1)
            .collect();
        let device = Device::flex().autodiff();
        let upstream = Tensor::<3>::from_data(TensorData::new(up, [b, n, d]), &device);
        let run = |ours: bool| {
            let x = Tensor::<3>::from_data(TensorData::new(values.clone(), [b, n, 3 * d]), &device)
                .require_grad();
            let y = if ours {
                super::attention(&x, heads).expect("the fast path")
            } else {
                composed_attention(x.clone(), heads)
            };
            let g = (y.clone() * upstream.clone()).sum().backward();
            (vec_of(y), vec_of(x.grad(&g).unwrap()))
        };
        let (y0, g0) = run(true);
        let (y1, g1) = run(false);
        let e = max_abs_diff(&y0, &y1);
        assert!(e < 1e-5, "output {e}");
        let e = max_abs_diff(&g0, &g1);
        assert!(e < 1e-5, "gradient {e}");
        // untracked (the teacher's path)
        let plain = Device::flex();
        let x = Tensor::<3>::from_data(TensorData::new(values.clone(), [b, n, 3 * d]), &plain);
        let y = vec_of(super::attention(&x, heads).expect("the fast path"));
        let e = max_abs_diff(&y, &vec_of(composed_attention(x, heads)));
        assert!(e < 1e-5, "untracked output {e}");
    }
}
