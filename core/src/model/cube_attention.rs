//! The ViT's attention core, `softmax(q k^T / sqrt(hd)) v` for every head, as fused CubeCL
//! kernels with their backward pass (GPUs: wgpu, Vulkan, Metal, CUDA), from the `qkv`
//! projection `[B, N, 3D]` to the heads' outputs side by side `[B, N, D]`.
//!
//! Why: Burn 0.22's fused attention is inference-only; under autodiff it decomposes into the
//! head split (permuted copies of q, k and v), the scores `[B, H, N, N]`, a softmax of several
//! passes over them, the second product, the head merge, and the gradients of each. Here, as
//! in FlashAttention, the scores never reach memory: the forward kernel keeps a running
//! maximum and sum per query row (the online softmax) and stores only the row's
//! log-sum-exp; the backward pass recomputes the probabilities tile by tile from it (`dv =
//! p^T do`, `ds = p * (do v^T - rowsum(do * out))`, `dq = ds k / sqrt(hd)`, `dk = ds^T q /
//! sqrt(hd)`), in two kernels: one per query row (dq, and the row sums), one per key row (dk,
//! dv), so that no two units write the same gradient. q, k and v are read where they are in
//! `qkv`, and the output and the gradient of `qkv` are written in place of the head merge.
//!
//! The inputs may be f32, f16 or bf16 (mixed precision); every product, the softmax and the
//! accumulators are f32 inside the kernels, and the output is rounded once.
//!
//! The kernels are plain FMA loops over tiles staged in shared memory (no tensor cores): a
//! first version, correct on every CubeCL runtime, chosen with `--attention-kernel fused`
//! while the composed path stays the default until a GPU measures the two
//! (`bench/gpu_check.sh`).

use super::attention_sizes::AttentionSizes as Sizes;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, BackendTypes, Cube, TensorMetadata, backend_extension};
use burn::tensor::{DType, GradientCheckpointingStrategy, Shape, Tensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::{CubeCount, CubeDim};
use kernels::{forward_kernel, key_value_gradient_kernel, query_gradient_kernel};

/// Rows (query or key) per cube, one per unit; also the number of rows of the other side
/// staged in shared memory at a time.
const ROWS: usize = 32;

/// The widest head the kernels take (registers per unit grow with it): every official model
/// has 64.
const MAX_HEAD_DIM: usize = 128;

/// The kernels' Burn operations, on CubeCL's backend and (generated) on its fusion wrapper,
/// which queues them in its stream like any other operation.
#[backend_extension(Cube, Fusion)]
pub trait AttentionKernels: Backend {
    /// The heads' outputs `[B, N, D]` and each query row's log-sum-exp `[B, H, N]` (f32).
    #[fusion(meta = forward_meta)]
    fn fused_attention(
        qkv: FloatTensor<Self>,
        heads: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The gradient of `qkv` from the forward pass's output, log-sum-exp and `dout`.
    #[fusion(dtype = qkv, shape = qkv)]
    fn fused_attention_backward(
        qkv: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self>;
}

fn forward_meta(qkv: &TensorSpec, heads: &usize) -> (TensorSpec, TensorSpec) {
    let [b, n, d3] = qkv.shape.dims::<3>();
    (
        TensorSpec::new(Shape::new([b, n, d3 / 3]), qkv.dtype),
        TensorSpec::new(Shape::new([b, *heads, n]), DType::F32),
    )
}

/// The sizes of `qkv` with `heads` heads where the kernels take them: heads that split the
/// width, a head no wider than [`MAX_HEAD_DIM`], and a grid within every runtime's limits
/// (65535 cubes per dimension).
fn supported(qkv: [usize; 3], heads: usize) -> Option<Sizes> {
    Sizes::of(qkv, heads)
        .filter(|s| s.hd() <= MAX_HEAD_DIM && s.b * s.heads <= 65535 && s.n.div_ceil(ROWS) <= 65535)
}

/// The sizes of a call's `qkv`, which [`attention`] checked with [`supported`].
fn sizes(qkv: &CubeTensor, heads: usize) -> Sizes {
    supported(qkv.shape().dims::<3>(), heads).expect("attention() calls only on supported sizes")
}

/// One cube per `ROWS` rows of each (image, head).
fn cube_count(s: &Sizes) -> CubeCount {
    CubeCount::Static(s.n.div_ceil(ROWS) as u32, (s.b * s.heads) as u32, 1)
}

impl AttentionKernels for CubeBackend {
    fn fused_attention(qkv: CubeTensor, heads: usize) -> (CubeTensor, CubeTensor) {
        let qkv = into_contiguous(qkv);
        let s = sizes(&qkv, heads);
        let dtype = qkv.dtype;
        let (client, device) = (qkv.client.clone(), qkv.device.clone());
        let out = empty_device_dtype(
            client.clone(),
            device.clone(),
            Shape::new([s.b, s.n, s.d]),
            dtype,
        );
        let lse = empty_device_dtype(
            client.clone(),
            device,
            Shape::new([s.b, heads, s.n]),
            DType::F32,
        );
        forward_kernel::launch(
            &client,
            cube_count(&s),
            CubeDim::new_1d(ROWS as u32),
            qkv.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            s.n as u32,
            heads as u32,
            s.scale(),
            s.hd(),
            dtype_to_storage_type(dtype),
        );
        (out, lse)
    }

    fn fused_attention_backward(
        qkv: CubeTensor,
        out: CubeTensor,
        lse: CubeTensor,
        dout: CubeTensor,
        heads: usize,
    ) -> CubeTensor {
        let qkv = into_contiguous(qkv);
        let (out, lse) = (into_contiguous(out), into_contiguous(lse));
        // the gradient arrives in the output's dtype from the layers above in f32 or half
        let dout = into_contiguous(if dout.dtype == qkv.dtype {
            dout
        } else {
            burn_cubecl::kernel::cast(dout, qkv.dtype)
        });
        let s = sizes(&qkv, heads);
        let dtype = qkv.dtype;
        let (client, device) = (qkv.client.clone(), qkv.device.clone());
        let dqkv = empty_device_dtype(client.clone(), device.clone(), qkv.shape(), dtype);
        let delta = empty_device_dtype(client.clone(), device, lse.shape(), DType::F32);
        let (cubes, dim) = (cube_count(&s), CubeDim::new_1d(ROWS as u32));
        query_gradient_kernel::launch(
            &client,
            cubes.clone(),
            dim,
            qkv.clone().into_tensor_arg(),
            out.into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            dout.clone().into_tensor_arg(),
            delta.clone().into_tensor_arg(),
            dqkv.clone().into_tensor_arg(),
            s.n as u32,
            heads as u32,
            s.scale(),
            s.hd(),
            dtype_to_storage_type(dtype),
        );
        key_value_gradient_kernel::launch(
            &client,
            cubes,
            dim,
            qkv.into_tensor_arg(),
            lse.into_tensor_arg(),
            dout.into_tensor_arg(),
            delta.into_tensor_arg(),
            dqkv.clone().into_tensor_arg(),
            s.n as u32,
            heads as u32,
            s.scale(),
            s.hd(),
            dtype_to_storage_type(dtype),
        );
        dqkv
    }
}

/// The kernels (CubeCL's `Tensor` is not Burn's).
mod kernels {
    use super::ROWS;
    use cubecl::prelude::*;

    /// Where a unit works: image `b`, head `h` (`bh = b * heads + h`, the cube's second
    /// coordinate), its row (query or key, `row < n` where `valid`) and `base`, the offset of
    /// the head's columns in the first row of image `b` in `qkv`; `d` is the model's width.
    #[derive(CubeType, Clone)]
    pub struct Place {
        pub b: usize,
        pub h: usize,
        pub bh: usize,
        pub d: usize,
        pub row: usize,
        pub valid: bool,
        pub base: usize,
    }

    #[cube]
    impl Place {
        /// The place of this unit: one row per unit, `ROWS` rows per cube, one (image, head)
        /// per cube row of the grid.
        pub fn of_unit(n: usize, heads: usize, #[comptime] hd: usize) -> Place {
            let bh = CUBE_POS_Y as usize;
            let b = bh / heads;
            let d = heads * hd;
            let row = CUBE_POS_X as usize * ROWS + UNIT_POS_X as usize;
            Place {
                b,
                h: bh % heads,
                bh,
                d,
                row,
                valid: row < n,
                base: b * n * 3 * d + (bh % heads) * hd,
            }
        }
    }

    /// How many of the `ROWS` rows staged from `start` exist.
    #[cube]
    pub fn rows_in_tile(n: usize, start: usize) -> usize {
        let mut count = n - start;
        if count > ROWS {
            count = ROWS;
        }
        count
    }

    /// Stages rows `start..start + ROWS` (zeros past `n`) of the part at column `offset` of one
    /// head in `qkv`-like rows of width `row`, into `tile` (`ROWS x hd`, f32).
    #[cube]
    pub fn stage<F: Float>(
        src: &Tensor<F>,
        tile: &mut Shared<[f32]>,
        base: usize,
        row: usize,
        offset: usize,
        start: usize,
        n: usize,
        #[comptime] hd: usize,
    ) {
        let mut e = UNIT_POS_X as usize;
        while e < ROWS * hd {
            let r = start + e / hd;
            let mut value = 0.0f32;
            if r < n {
                value = f32::cast_from(src[base + r * row + offset + e % hd]);
            }
            tile[e] = value;
            e += CUBE_DIM_X as usize;
        }
    }

    /// One unit per query row: the online softmax over tiles of keys, the output row and its
    /// log-sum-exp.
    #[cube(launch)]
    pub fn forward_kernel<F: Float>(
        qkv: &Tensor<F>,
        out: &mut Tensor<F>,
        lse: &mut Tensor<f32>,
        n: u32,
        heads: u32,
        scale: f32,
        #[comptime] hd: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let n = n as usize;
        let at = Place::of_unit(n, heads as usize, hd);
        let (b, h, bh, d, i, valid, base) = (at.b, at.h, at.bh, at.d, at.row, at.valid, at.base);

        let mut q = Array::<f32>::new(hd);
        let mut acc = Array::<f32>::new(hd);
        #[unroll]
        for c in 0..hd {
            let mut value = 0.0f32;
            if valid {
                value = f32::cast_from(qkv[base + i * 3 * d + c]) * scale;
            }
            q[c] = value;
            acc[c] = 0.0f32;
        }
        let mut keys = Shared::<[f32]>::new_slice(ROWS * hd);
        let mut values = Shared::<[f32]>::new_slice(ROWS * hd);
        let mut scores = Array::<f32>::new(ROWS);
        let mut max = f32::new(-1.0e30f32);
        let mut sum = 0.0f32;
        let mut start = 0usize;
        while start < n {
            stage::<F>(qkv, &mut keys, base, 3 * d, d, start, n, hd);
            stage::<F>(qkv, &mut values, base, 3 * d, 2 * d, start, n, hd);
            sync_cube();
            let count = rows_in_tile(n, start);
            let mut tile_max = max;
            for j in 0..count {
                let mut s = 0.0f32;
                #[unroll]
                for c in 0..hd {
                    s += q[c] * keys[j * hd + c];
                }
                scores[j] = s;
                tile_max = f32::max(tile_max, s);
            }
            let correction = f32::exp(max - tile_max);
            sum *= correction;
            #[unroll]
            for c in 0..hd {
                acc[c] *= correction;
            }
            for j in 0..count {
                let p = f32::exp(scores[j] - tile_max);
                sum += p;
                #[unroll]
                for c in 0..hd {
                    acc[c] += p * values[j * hd + c];
                }
            }
            max = tile_max;
            sync_cube();
            start += ROWS;
        }
        if valid {
            let o = b * n * d + i * d + h * hd;
            let inv = 1.0f32 / sum;
            #[unroll]
            for c in 0..hd {
                out[o + c] = F::cast_from(acc[c] * inv);
            }
            lse[bh * n + i] = max + f32::ln(sum);
        }
    }

    /// One unit per query row: `delta = rowsum(do * out)` (stored for the key kernel) and `dq`.
    #[cube(launch)]
    pub fn query_gradient_kernel<F: Float>(
        qkv: &Tensor<F>,
        out: &Tensor<F>,
        lse: &Tensor<f32>,
        dout: &Tensor<F>,
        delta: &mut Tensor<f32>,
        dqkv: &mut Tensor<F>,
        n: u32,
        heads: u32,
        scale: f32,
        #[comptime] hd: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let n = n as usize;
        let at = Place::of_unit(n, heads as usize, hd);
        let (b, h, bh, d, i, valid, base) = (at.b, at.h, at.bh, at.d, at.row, at.valid, at.base);
        let o = b * n * d + i * d + h * hd;

        let mut q = Array::<f32>::new(hd);
        let mut g = Array::<f32>::new(hd);
        let mut dq = Array::<f32>::new(hd);
        let mut row_delta = 0.0f32;
        let mut row_lse = 0.0f32;
        #[unroll]
        for c in 0..hd {
            let mut qc = 0.0f32;
            let mut gc = 0.0f32;
            if valid {
                qc = f32::cast_from(qkv[base + i * 3 * d + c]);
                gc = f32::cast_from(dout[o + c]);
                row_delta += gc * f32::cast_from(out[o + c]);
            }
            q[c] = qc;
            g[c] = gc;
            dq[c] = 0.0f32;
        }
        if valid {
            row_lse = lse[bh * n + i];
            delta[bh * n + i] = row_delta;
        }
        let mut keys = Shared::<[f32]>::new_slice(ROWS * hd);
        let mut values = Shared::<[f32]>::new_slice(ROWS * hd);
        let mut start = 0usize;
        while start < n {
            stage::<F>(qkv, &mut keys, base, 3 * d, d, start, n, hd);
            stage::<F>(qkv, &mut values, base, 3 * d, 2 * d, start, n, hd);
            sync_cube();
            let count = rows_in_tile(n, start);
            for j in 0..count {
                let mut s = 0.0f32;
                let mut dp = 0.0f32;
                #[unroll]
                for c in 0..hd {
                    s += q[c] * keys[j * hd + c];
                    dp += g[c] * values[j * hd + c];
                }
                let p = f32::exp(s * scale - row_lse);
                let ds = p * (dp - row_delta);
                #[unroll]
                for c in 0..hd {
                    dq[c] += ds * keys[j * hd + c];
                }
            }
            sync_cube();
            start += ROWS;
        }
        if valid {
            let at = b * n * 3 * d + i * 3 * d + h * hd;
            #[unroll]
            for c in 0..hd {
                dqkv[at + c] = F::cast_from(dq[c] * scale);
            }
        }
    }

    /// One unit per key row: `dk` and `dv` over tiles of query rows (q, do, their log-sum-exp and
    /// delta staged in shared memory).
    #[cube(launch)]
    pub fn key_value_gradient_kernel<F: Float>(
        qkv: &Tensor<F>,
        lse: &Tensor<f32>,
        dout: &Tensor<F>,
        delta: &Tensor<f32>,
        dqkv: &mut Tensor<F>,
        n: u32,
        heads: u32,
        scale: f32,
        #[comptime] hd: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let n = n as usize;
        let at = Place::of_unit(n, heads as usize, hd);
        let (b, h, bh, d, j, valid, base) = (at.b, at.h, at.bh, at.d, at.row, at.valid, at.base);

        let mut k = Array::<f32>::new(hd);
        let mut v = Array::<f32>::new(hd);
        let mut dk = Array::<f32>::new(hd);
        let mut dv = Array::<f32>::new(hd);
        #[unroll]
        for c in 0..hd {
            let mut kc = 0.0f32;
            let mut vc = 0.0f32;
            if valid {
                kc = f32::cast_from(qkv[base + j * 3 * d + d + c]);
                vc = f32::cast_from(qkv[base + j * 3 * d + 2 * d + c]);
            }
            k[c] = kc;
            v[c] = vc;
            dk[c] = 0.0f32;
            dv[c] = 0.0f32;
        }
        let mut queries = Shared::<[f32]>::new_slice(ROWS * hd);
        let mut grads = Shared::<[f32]>::new_slice(ROWS * hd);
        let mut row_lse = Shared::<[f32]>::new_slice(ROWS);
        let mut row_delta = Shared::<[f32]>::new_slice(ROWS);
        let mut start = 0usize;
        while start < n {
            stage::<F>(qkv, &mut queries, base, 3 * d, 0, start, n, hd);
            stage::<F>(dout, &mut grads, b * n * d + h * hd, d, 0, start, n, hd);
            let r = start + UNIT_POS_X as usize;
            let mut l = 0.0f32;
            let mut dl = 0.0f32;
            if r < n {
                l = lse[bh * n + r];
                dl = delta[bh * n + r];
            }
            row_lse[UNIT_POS_X as usize] = l;
            row_delta[UNIT_POS_X as usize] = dl;
            sync_cube();
            let count = rows_in_tile(n, start);
            for i in 0..count {
                let mut s = 0.0f32;
                let mut dp = 0.0f32;
                #[unroll]
                for c in 0..hd {
                    s += queries[i * hd + c] * k[c];
                    dp += grads[i * hd + c] * v[c];
                }
                let p = f32::exp(s * scale - row_lse[i]);
                let ds = p * (dp - row_delta[i]);
                #[unroll]
                for c in 0..hd {
                    dv[c] += p * grads[i * hd + c];
                    dk[c] += ds * queries[i * hd + c];
                }
            }
            sync_cube();
            start += ROWS;
        }
        if valid {
            let at = b * n * 3 * d + j * 3 * d + h * hd;
            #[unroll]
            for c in 0..hd {
                dqkv[at + d + c] = F::cast_from(dk[c] * scale);
                dqkv[at + 2 * d + c] = F::cast_from(dv[c]);
            }
        }
    }
}

type AdTensor = <Autodiff<Cube> as BackendTypes>::FloatTensorPrimitive;

#[derive(Debug)]
struct AttentionOp;

impl Backward<Cube, 1> for AttentionOp {
    /// `qkv`, the output, its log-sum-exp and the number of heads.
    type State = (
        FloatTensor<Cube>,
        FloatTensor<Cube>,
        FloatTensor<Cube>,
        usize,
    );

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (qkv, out, lse, heads) = ops.state;
        let dout = grads.consume::<Cube>(&ops.node);
        if let Some(node) = &ops.parents[0] {
            let dqkv = Cube::fused_attention_backward(qkv, out, lse, dout, heads);
            grads.register::<Cube>(node.id, dqkv);
        }
    }
}

fn tracked_attention(qkv: AdTensor, heads: usize) -> AdTensor {
    let nodes = [qkv.node()];
    let x = qkv.primitive().clone();
    let (out, lse) = Cube::fused_attention(x.clone(), heads);
    match AttentionOp
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((x, out.clone(), lse, heads), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// The heads' outputs `[B, N, D]` of `qkv` `[B, N, 3D]` through the fused kernels, or `None`
/// where they do not apply (not a CubeCL device, Burn's balanced checkpointing, sizes the
/// kernels do not take).
pub fn attention(qkv: &Tensor<3>, heads: usize) -> Option<Tensor<3>> {
    let checkpointing = qkv.gradient_checkpointing_strategy();
    supported(qkv.dims(), heads)?;
    if checkpointing == Some(GradientCheckpointingStrategy::Balanced) {
        return None;
    }
    if let Ok(p) = qkv.clone().try_into_primitive::<Autodiff<Cube>>() {
        let t = Tensor::from_primitive::<Autodiff<Cube>>(tracked_attention(p, heads));
        return Some(match checkpointing {
            Some(strategy) => t.with_gradient_checkpointing_strategy(strategy),
            None => t,
        });
    }
    if let Ok(p) = qkv.clone().try_into_primitive::<Cube>() {
        return Some(Tensor::from_primitive::<Cube>(
            Cube::fused_attention(p, heads).0,
        ));
    }
    None
}
