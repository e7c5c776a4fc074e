//! A fast CPU inference engine for the DINO ViT: the same model as
//! [`crate::VisionTransformer`], computed on host memory with fused kernels.
//!
//! Burn's CPU backend (burn-flex) runs the ViT as generic tensor ops: an exact GELU through
//! scalar libm `erf`, copies for every head split and merge, and matrix products split
//! across threads inside `gemm`. This engine keeps weights in the layout the products want,
//! reads Q/K/V as strided views of the fused projection, applies bias, GELU and residual adds
//! inside the tiles of each product, and splits work into independent tiles per thread.
//! It uses the same `gemm` crate as burn-flex and is checked against the same PyTorch
//! fixtures (see `tests/`). Training and GPUs use the Burn model.

pub(crate) mod attention;
pub mod batch_norm;
pub mod conv;
mod features;
pub mod kernels;
pub mod matmul;
pub mod packed;
pub mod parallel;

use crate::model::VitParams;
use crate::model::params::ParamSource;
use crate::model::pos_embed::{bicubic_matrix, official_scale_factor};
use crate::weights::{StateDict, transpose};
use crate::{Error, Result, VitConfig};
use kernels::layer_norm;
use matmul::{Epilogue, matmul};
use parallel::{SharedMut, for_each_task_spinning};

pub use features::{CpuFeatures as CpuKernels, cpu_features};
pub use kernels::{erf_f32, exp_f32, gelu_f32};

/// Weights of one block, linear weights stored `[in, out]` (row-major).
struct BlockWeights {
    ln1: (Vec<f32>, Vec<f32>),
    qkv: (Vec<f32>, Vec<f32>),
    proj: (Vec<f32>, Vec<f32>),
    ln2: (Vec<f32>, Vec<f32>),
    fc1: (Vec<f32>, Vec<f32>),
    fc2: (Vec<f32>, Vec<f32>),
    /// The four linear weights packed for [`packed::matmul_packed`] (qkv, proj, fc1, fc2),
    /// unless the products run on `gemm` ([`LinearProducts`]).
    packed: Option<[packed::PackedWeights; 4]>,
    /// [`LinearProducts::Auto`] on an AVX-512F CPU: the same four packed in f32 on the first
    /// product that takes them (a pass of few rows), kept for the next ones.
    auto_packed: Option<std::sync::OnceLock<[packed::PackedWeights; 4]>>,
}

/// [`LinearProducts::Auto`]: products of at most this many rows run on packed weights (one
/// image of 197 tokens, or two; measured faster there on two AVX-512 machines, slower from
/// 785 rows on).
const AUTO_PACKED_MAX_ROWS: usize = 512;
/// [`LinearProducts::Auto`]: ... and of at most this inner size (the packed kernel has no cache
/// blocking over k; measured up to ViT-S's 1,536).
const AUTO_PACKED_MAX_K: usize = 1536;

/// How the blocks' linear layers (qkv, proj, fc1, fc2: all but ~10% of a ViT-S/16's
/// products at 224 px) multiply; the patch embedding, the attention's own products,
/// LayerNorm, softmax and GELU stay f32 on every setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearProducts {
    /// f32, chosen per product (the default): on an AVX-512F CPU a product of few rows (at
    /// most 512, a pass over one or two 224 px images at patch 16) with an inner size of at
    /// most 1,536 runs on weights packed at the first such product ([`Self::PackedF32`]'s
    /// kernel, 10-15% faster there), every other on `gemm` (faster on long sequences and
    /// batches); elsewhere [`Self::Gemm`]. Both sum in f32: results agree within the
    /// fixtures' 1e-5, not bit for bit.
    Auto,
    /// f32 on the `gemm` crate (weights packed per call): every CPU.
    Gemm,
    /// f32 on weights packed at load time, AVX-512F micro-kernel ([`packed`]); where the CPU
    /// lacks AVX-512F, [`Self::Gemm`].
    PackedF32,
    /// bf16 inputs and weights (rounded to nearest even), f32 sums, on AVX-512 BF16;
    /// elsewhere a portable loop with the same numbers, far slower (for tests).
    Bf16,
}

/// Which block weight a product uses (the index into [`BlockWeights::bf16`]).
#[derive(Clone, Copy)]
enum Layer {
    Qkv,
    Proj,
    Fc1,
    Fc2,
}

impl BlockWeights {
    /// `out = epilogue(a @ W + b)` for `m` rows of `a` through `layer`'s weights, in bf16
    /// where they are packed, else in f32.
    fn product(&self, layer: Layer, a: &[f32], m: usize, out: &mut [f32], ep: Epilogue) {
        let w = match layer {
            Layer::Qkv => &self.qkv.0,
            Layer::Proj => &self.proj.0,
            Layer::Fc1 => &self.fc1.0,
            Layer::Fc2 => &self.fc2.0,
        };
        if let Some(packed) = &self.packed {
            return packed::matmul_packed(a, m, &packed[layer as usize], out, ep);
        }
        let n = self.bias(layer).len();
        let k = w.len() / n;
        if let Some(cell) = &self.auto_packed
            && m <= AUTO_PACKED_MAX_ROWS
            && k <= AUTO_PACKED_MAX_K
        {
            let packed = cell.get_or_init(|| self.pack(packed::Inputs::F32));
            return packed::matmul_packed(a, m, &packed[layer as usize], out, ep);
        }
        matmul(a, m, k, w, n, out, ep)
    }

    /// The four linear weights packed for `inputs` (qkv, proj, fc1, fc2).
    fn pack(&self, inputs: packed::Inputs) -> [packed::PackedWeights; 4] {
        let (d, hid) = (self.proj.1.len(), self.fc1.1.len());
        [
            packed::PackedWeights::pack(&self.qkv.0, d, 3 * d, inputs),
            packed::PackedWeights::pack(&self.proj.0, d, d, inputs),
            packed::PackedWeights::pack(&self.fc1.0, d, hid, inputs),
            packed::PackedWeights::pack(&self.fc2.0, hid, d, inputs),
        ]
    }

    fn bias(&self, layer: Layer) -> &[f32] {
        match layer {
            Layer::Qkv => &self.qkv.1,
            Layer::Proj => &self.proj.1,
            Layer::Fc1 => &self.fc1.1,
            Layer::Fc2 => &self.fc2.1,
        }
    }
}

/// The DINO ViT on the CPU.
pub struct CpuVit {
    pub config: VitConfig,
    /// `[3*p*p, D]`: the patch convolution as a product over flattened (c, ky, kx) patches.
    patch: (Vec<f32>, Vec<f32>),
    cls_token: Vec<f32>,
    pos_embed: Vec<f32>,
    blocks: Vec<BlockWeights>,
    norm: (Vec<f32>, Vec<f32>),
}

/// Host-side outputs of a forward pass.
#[derive(Clone, Debug)]
pub struct CpuFeatures {
    /// `[B, D]` normed CLS features.
    pub cls: Vec<f32>,
    /// `[B, gh*gw, D]` normed patch tokens (empty unless asked for).
    pub patches: Vec<f32>,
    /// `[B, H, gh*gw]` last-block CLS-to-patch attention (empty unless asked for).
    pub attention: Vec<f32>,
    /// `[B, n * D]`: the normed CLS token after each of the last `n` blocks, oldest first
    /// (`get_intermediate_layers(x, n)[i][:, 0]` concatenated; empty unless asked for).
    pub last_blocks_cls: Vec<f32>,
    pub grid: (usize, usize),
}

/// What a forward pass should return beside the CLS features.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outputs {
    pub patches: bool,
    pub attention: bool,
    /// The CLS tokens of the last `n` blocks (the linear probe's features); 0: none.
    pub last_blocks: usize,
}

impl CpuVit {
    /// Builds the engine from official-layout tensors (all used, shapes checked).
    pub fn from_state_dict(config: &VitConfig, sd: StateDict) -> Result<Self> {
        let source = ParamSource::load(sd);
        let params = VitParams::new(config, &source.root())?;
        source.finish()?;
        Ok(Self::from_params(config, params))
    }

    /// The engine of the official-layout tensors `p` (see [`VitParams::new`]).
    pub fn from_params(config: &VitConfig, p: VitParams) -> Self {
        let (d, k) = (config.dim, 3 * config.patch * config.patch);
        let blocks = p
            .blocks
            .into_iter()
            .map(|b| BlockWeights {
                ln1: b.norm1.into_host(),
                qkv: b.qkv.into_host(),
                proj: b.proj.into_host(),
                ln2: b.norm2.into_host(),
                fc1: b.fc1.into_host(),
                fc2: b.fc2.into_host(),
                packed: None,
                auto_packed: None,
            })
            .collect();
        Self {
            config: config.clone(),
            patch: (transpose(&p.patch.0.data, d, k), p.patch.1.data),
            cls_token: p.cls_token.data,
            pos_embed: p.pos_embed.data,
            blocks,
            norm: p.norm.into_host(),
        }
        .with_products(LinearProducts::Auto)
    }

    /// The same engine with its blocks' linear layers on `products` ([`LinearProducts`]).
    pub fn with_products(mut self, products: LinearProducts) -> Self {
        let inputs = match products {
            LinearProducts::Auto | LinearProducts::Gemm => None,
            LinearProducts::PackedF32 => packed::f32_native().then_some(packed::Inputs::F32),
            LinearProducts::Bf16 => Some(packed::Inputs::Bf16),
        };
        let auto = products == LinearProducts::Auto && packed::f32_native();
        for b in &mut self.blocks {
            b.packed = inputs.map(|i| b.pack(i));
            b.auto_packed = auto.then(std::sync::OnceLock::new);
        }
        self
    }

    /// How the blocks' linear layers multiply now ([`LinearProducts::Gemm`] for the settings
    /// this CPU runs on `gemm`).
    pub fn products(&self) -> LinearProducts {
        let Some(first) = self.blocks.first() else {
            return LinearProducts::Gemm;
        };
        match (&first.packed, &first.auto_packed) {
            (Some(p), _) if p[0].inputs() == packed::Inputs::F32 => LinearProducts::PackedF32,
            (Some(_), _) => LinearProducts::Bf16,
            (None, Some(_)) => LinearProducts::Auto,
            (None, None) => LinearProducts::Gemm,
        }
    }

    /// The same model as a Burn one (weights read back from it).
    pub fn from_model(model: &crate::VisionTransformer) -> Result<Self> {
        Self::from_state_dict(&model.config, model.to_state_dict()?)
    }

    /// Checks a `[B, 3, H, W]` input as [`crate::VisionTransformer::check_input`] does.
    pub fn check_input(&self, b: usize, h: usize, w: usize) -> Result<(usize, usize)> {
        self.config.input_grid([b, 3, h, w])
    }

    /// The official `forward`: normed CLS features `[B, D]` of `x` (`[B, 3, H, W]`, normalised).
    pub fn forward(&self, x: &[f32], b: usize, h: usize, w: usize) -> Result<Vec<f32>> {
        Ok(self.run(x, b, h, w, Outputs::default())?.cls)
    }

    /// CLS features plus, on request, patch tokens and the last block's CLS attention.
    pub fn run(
        &self,
        x: &[f32],
        b: usize,
        h: usize,
        w: usize,
        want: Outputs,
    ) -> Result<CpuFeatures> {
        let (gh, gw) = self.check_input(b, h, w)?;
        if x.len() != b * 3 * h * w {
            return Err(Error::Input(format!(
                "{} input values for a [{b}, 3, {h}, {w}] batch",
                x.len()
            )));
        }
        let c = &self.config;
        let (d, t) = (c.dim, gh * gw + 1);
        let mut tokens = self.embed(x, b, h, w, gh, gw);
        let mut s = Scratch::new(b * t, c);
        let (last, rest) = self.blocks.split_last().expect("depth >= 1");
        let depth = self.blocks.len();
        let keep = want.last_blocks.min(depth);
        let mut per_block: Vec<Vec<f32>> = Vec::new();
        for (i, blk) in rest.iter().enumerate() {
            self.attention_input(blk, &tokens, b * t, &mut s);
            self.block_rest(blk, &mut tokens, b, t, &mut s);
            if depth - i <= keep {
                per_block.push(self.normed_cls(&tokens, b, t));
            }
        }
        self.attention_input(last, &tokens, b * t, &mut s);
        let probs = attention::cls_attention(&s.qkv, b, t, d, c.heads);
        let attention = if want.attention {
            // CLS to patches: drop the CLS-to-CLS column
            probs
                .chunks_exact(t)
                .flat_map(|r| r[1..].iter().copied())
                .collect()
        } else {
            Vec::new()
        };
        let (g, be) = (&self.norm.0, &self.norm.1);
        let eps = c.layer_norm_eps as f32;
        let mut cls = vec![0f32; b * d];
        let mut patches = Vec::new();
        if want.patches {
            self.block_rest(last, &mut tokens, b, t, &mut s);
            let mut normed = vec![0f32; b * t * d];
            rows_parallel(&tokens, &mut normed, d, |src, dst| {
                layer_norm(src, g, be, eps, dst)
            });
            patches.reserve(b * (t - 1) * d);
            for bi in 0..b {
                cls[bi * d..(bi + 1) * d].copy_from_slice(&normed[bi * t * d..bi * t * d + d]);
                patches.extend_from_slice(&normed[(bi * t + 1) * d..(bi + 1) * t * d]);
            }
        } else {
            // Only the CLS token leaves the last block: its attention, projection and MLP
            // are computed for that one row per image (K and V still come from every token).
            let mut rows: Vec<f32> = (0..b)
                .flat_map(|bi| tokens[bi * t * d..bi * t * d + d].iter().copied())
                .collect();
            self.cls_block_rest(last, &mut rows, &probs, b, t, &s.qkv);
            for bi in 0..b {
                layer_norm(
                    &rows[bi * d..(bi + 1) * d],
                    g,
                    be,
                    eps,
                    &mut cls[bi * d..(bi + 1) * d],
                );
            }
        }
        let mut last_blocks_cls = Vec::new();
        if keep > 0 {
            per_block.push(cls.clone());
            for bi in 0..b {
                for blk in &per_block {
                    last_blocks_cls.extend_from_slice(&blk[bi * d..(bi + 1) * d]);
                }
            }
        }
        Ok(CpuFeatures {
            cls,
            patches,
            attention,
            last_blocks_cls,
            grid: (gh, gw),
        })
    }

    /// The final norm of each image's CLS row, `[B, D]`.
    fn normed_cls(&self, tokens: &[f32], b: usize, t: usize) -> Vec<f32> {
        let d = self.config.dim;
        let eps = self.config.layer_norm_eps as f32;
        let mut out = vec![0f32; b * d];
        for bi in 0..b {
            let src = &tokens[bi * t * d..bi * t * d + d];
            layer_norm(
                src,
                &self.norm.0,
                &self.norm.1,
                eps,
                &mut out[bi * d..(bi + 1) * d],
            );
        }
        out
    }

    /// Patch embedding, CLS token and (interpolated) position embeddings: `[B*T, D]`.
    fn embed(&self, x: &[f32], b: usize, h: usize, w: usize, gh: usize, gw: usize) -> Vec<f32> {
        let (p, d) = (self.config.patch, self.config.dim);
        let (n, kk) = (gh * gw, 3 * p * p);
        // im2col: one row per patch, (c, ky, kx) order like the conv weight
        let mut cols = vec![0f32; b * n * kk];
        for bi in 0..b {
            for gy in 0..gh {
                for gx in 0..gw {
                    let row = &mut cols[((bi * n) + gy * gw + gx) * kk..][..kk];
                    for ch in 0..3 {
                        for ky in 0..p {
                            let src = ((bi * 3 + ch) * h + gy * p + ky) * w + gx * p;
                            row[(ch * p + ky) * p..][..p].copy_from_slice(&x[src..src + p]);
                        }
                    }
                }
            }
        }
        let mut emb = vec![0f32; b * n * d];
        matmul(
            &cols,
            b * n,
            kk,
            &self.patch.0,
            d,
            &mut emb,
            Epilogue::Bias(&self.patch.1),
        );
        let pos = self.pos_embed_for(gh, gw, h == w);
        let t = n + 1;
        let mut tokens = vec![0f32; b * t * d];
        for bi in 0..b {
            for j in 0..d {
                tokens[bi * t * d + j] = self.cls_token[j] + pos[j];
            }
            for i in 0..n {
                let dst = &mut tokens[(bi * t + 1 + i) * d..][..d];
                let src = &emb[(bi * n + i) * d..][..d];
                let pe = &pos[(1 + i) * d..][..d];
                for j in 0..d {
                    dst[j] = src[j] + pe[j];
                }
            }
        }
        tokens
    }

    /// Position embeddings for a `gh x gw` grid, interpolated as the official code does.
    fn pos_embed_for(&self, gh: usize, gw: usize, square: bool) -> std::borrow::Cow<'_, [f32]> {
        let (side, d) = (self.config.pos_grid, self.config.dim);
        if gh * gw == side * side && square {
            return std::borrow::Cow::Borrowed(&self.pos_embed);
        }
        let grid = &self.pos_embed[d..];
        // rows: [gh, side] @ [side, side*D]
        let wy = bicubic_matrix(side, gh, official_scale_factor(gh, side));
        let mut tmp = vec![0f32; gh * side * d];
        matmul(
            &wy,
            gh,
            side,
            grid,
            side * d,
            &mut tmp,
            Epilogue::Bias(&vec![0.0; side * d]),
        );
        // columns, per output row: [gw, side] @ [side, D]
        let wx = bicubic_matrix(side, gw, official_scale_factor(gw, side));
        let mut out = vec![0f32; (1 + gh * gw) * d];
        out[..d].copy_from_slice(&self.pos_embed[..d]);
        let zero = vec![0f32; d];
        for y in 0..gh {
            let dst = &mut out[(1 + y * gw) * d..(1 + (y + 1) * gw) * d];
            matmul(
                &wx,
                gw,
                side,
                &tmp[y * side * d..(y + 1) * side * d],
                d,
                dst,
                Epilogue::Bias(&zero),
            );
        }
        std::borrow::Cow::Owned(out)
    }

    /// First half of a block's attention: `qkv = norm1(x) @ Wqkv + b` into `s.qkv`.
    fn attention_input(&self, w: &BlockWeights, x: &[f32], m: usize, s: &mut Scratch) {
        let d = self.config.dim;
        let eps = self.config.layer_norm_eps as f32;
        rows_parallel(&x[..m * d], &mut s.y, d, |src, dst| {
            layer_norm(src, &w.ln1.0, &w.ln1.1, eps, dst)
        });
        w.product(Layer::Qkv, &s.y, m, &mut s.qkv, Epilogue::Bias(&w.qkv.1));
    }

    /// The rest of a pre-norm block on `x` (`[B*T, D]`, in place), given `s.qkv`:
    /// `x += proj(attention)`, then `x += mlp(norm2(x))`.
    fn block_rest(&self, w: &BlockWeights, x: &mut [f32], b: usize, t: usize, s: &mut Scratch) {
        let c = &self.config;
        let (d, m) = (c.dim, b * t);
        attention::attention(&s.qkv, &mut s.att, b, t, d, c.heads);
        w.product(
            Layer::Proj,
            &s.att,
            m,
            x,
            Epilogue::AccumulateBias(&w.proj.1),
        );
        self.mlp(w, x, m, &mut s.y, &mut s.hidden);
    }

    /// `x += mlp(norm2(x))` on `m` rows.
    fn mlp(&self, w: &BlockWeights, x: &mut [f32], m: usize, y: &mut [f32], hidden: &mut [f32]) {
        let d = self.config.dim;
        let eps = self.config.layer_norm_eps as f32;
        rows_parallel(&x[..m * d], &mut y[..m * d], d, |src, dst| {
            layer_norm(src, &w.ln2.0, &w.ln2.1, eps, dst)
        });
        w.product(Layer::Fc1, y, m, hidden, Epilogue::BiasGelu(&w.fc1.1));
        w.product(Layer::Fc2, hidden, m, x, Epilogue::AccumulateBias(&w.fc2.1));
    }

    /// [`Self::block_rest`] for the CLS rows only (`rows`: `[B, D]`), given the CLS
    /// attention probabilities `probs` (`[B, H, T]`) and `qkv` of all tokens.
    fn cls_block_rest(
        &self,
        w: &BlockWeights,
        rows: &mut [f32],
        probs: &[f32],
        b: usize,
        t: usize,
        qkv: &[f32],
    ) {
        let c = &self.config;
        let (d, heads) = (c.dim, c.heads);
        let hd = d / heads;
        let mut att = vec![0f32; b * d];
        for bi in 0..b {
            for h in 0..heads {
                let out = &mut att[bi * d + h * hd..][..hd];
                for j in 0..t {
                    let p = probs[(bi * heads + h) * t + j];
                    let v = &qkv[(bi * t + j) * 3 * d + 2 * d + h * hd..][..hd];
                    for (o, v) in out.iter_mut().zip(v) {
                        *o += p * v;
                    }
                }
            }
        }
        w.product(
            Layer::Proj,
            &att,
            b,
            rows,
            Epilogue::AccumulateBias(&w.proj.1),
        );
        let mut y = vec![0f32; b * d];
        let mut hidden = vec![0f32; b * c.mlp_hidden];
        self.mlp(w, rows, b, &mut y, &mut hidden);
    }
}

/// Work buffers reused across blocks.
struct Scratch {
    y: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    hidden: Vec<f32>,
}

impl Scratch {
    fn new(m: usize, c: &VitConfig) -> Self {
        Self {
            y: vec![0.0; m * c.dim],
            qkv: vec![0.0; m * 3 * c.dim],
            att: vec![0.0; m * c.dim],
            hidden: vec![0.0; m * c.mlp_hidden],
        }
    }
}

/// Applies `f(src_row, dst_row)` to rows of width `d`, in parallel chunks.
fn rows_parallel(
    src: &[f32],
    dst: &mut [f32],
    d: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync + Send,
) {
    let rows = src.len() / d;
    // ~256 rows of work per task: smaller tasks cost more in hand-offs than they save
    let chunk = 256;
    let out = SharedMut(dst.as_mut_ptr());
    for_each_task_spinning(rows.div_ceil(chunk), |c| {
        for r in c * chunk..((c + 1) * chunk).min(rows) {
            // SAFETY: each task writes its own rows of `dst`.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(r * d), d) };
            f(&src[r * d..(r + 1) * d], dst);
        }
    });
}
