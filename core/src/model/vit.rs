//! `VisionTransformer` of the official `vision_transformer.py`.

use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::{Device, Tensor};

use super::params::{Init, NormParams, ParamSource, Params, module_state_dict};
use super::pos_embed::interpolate_pos_embed;
use super::{AttentionKernel, Block, BlockParams, PatchEmbed, Precision};
use crate::rng::SeededRng;
use crate::weights::{RawTensor, StateDict};
use crate::{Error, Result, VitConfig};

/// The DINO ViT backbone (no classification head: `num_classes = 0`).
#[derive(Module, Debug)]
pub struct VisionTransformer {
    pub patch_embed: PatchEmbed,
    pub cls_token: Param<Tensor<3>>,
    pub pos_embed: Param<Tensor<3>>,
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
    #[module(skip)]
    pub config: VitConfig,
}

/// Final-norm outputs of a forward pass.
#[derive(Debug, Clone)]
pub struct Features {
    /// `[B, D]`: the CLS token after the final LayerNorm (the official `forward` output).
    pub cls: Tensor<2>,
    /// `[B, gh*gw, D]`: patch tokens after the final LayerNorm, row-major over the grid.
    pub patches: Tensor<3>,
    /// Patch grid (rows, columns).
    pub grid: (usize, usize),
}

/// The ViT's tensors in the official layout (keys, shapes, initialisers): the one place the
/// architecture is spelled out. The Burn model and the CPU engine are both built from it.
#[derive(Clone, Debug)]
pub struct VitParams {
    /// `patch_embed.proj`: weight `[D, 3, p, p]`, bias `[D]`.
    pub patch: (RawTensor, RawTensor),
    pub cls_token: RawTensor,
    pub pos_embed: RawTensor,
    pub blocks: Vec<BlockParams>,
    pub norm: NormParams,
}

impl VitParams {
    /// The official `VisionTransformer` with `_init_weights`: Linear weights N(0, 0.02), zero
    /// biases, LayerNorm 1/0, `cls_token` and `pos_embed` N(0, 0.02), the patch convolution
    /// with PyTorch's default (uniform ±1/sqrt(fan_in)).
    pub fn new(config: &VitConfig, vb: &Params) -> Result<Self> {
        config.validate()?;
        let (d, p) = (config.dim, config.patch);
        let bound = Init::Uniform(1.0 / ((3 * p * p) as f64).sqrt());
        let proj = vb.pp("patch_embed.proj");
        let patch = (
            proj.get("weight", &[d, 3, p, p], bound)?,
            proj.get("bias", &[d], bound)?,
        );
        let cls_token = vb.get("cls_token", &[1, 1, d], Init::Normal(0.02))?;
        let pos_embed = vb.get(
            "pos_embed",
            &[1, config.num_positions() + 1, d],
            Init::Normal(0.02),
        )?;
        let blocks = (0..config.depth)
            .map(|i| BlockParams::new(config, &vb.pp(format!("blocks.{i}"))))
            .collect::<Result<_>>()?;
        let norm = NormParams::new(d, &vb.pp("norm"))?;
        Ok(Self {
            patch,
            cls_token,
            pos_embed,
            blocks,
            norm,
        })
    }
}

impl VisionTransformer {
    /// The model of `config` with parameters from `vb` (drawn or loaded), stochastic depth
    /// at `config.drop_path_rate`.
    pub fn new_from(config: &VitConfig, vb: &Params, device: &Device) -> Result<Self> {
        let params = VitParams::new(config, vb)?;
        let eps = config.layer_norm_eps;
        let p = config.patch;
        let mut proj = Conv2dConfig::new([3, config.dim], [p, p])
            .with_stride([p, p])
            .init(device);
        let (w, b) = params.patch;
        proj.weight = w.into_param(device);
        proj.bias = Some(b.into_param(device));
        let blocks = params
            .blocks
            .into_iter()
            .enumerate()
            .map(|(i, b)| Block::from_params(b, config, drop_path_rate(config, i), device))
            .collect();
        Ok(Self {
            patch_embed: PatchEmbed {
                proj,
                precision: Precision::F32,
            },
            cls_token: params.cls_token.into_param(device),
            pos_embed: params.pos_embed.into_param(device),
            blocks,
            norm: params.norm.into_burn(eps, device),
            config: config.clone(),
        })
    }

    /// A randomly initialised model as the official `_init_weights` (seed 0).
    pub fn new(config: &VitConfig, device: &Device) -> Result<Self> {
        Self::new_seeded(config, device, &mut crate::rng::seeded(0))
    }

    /// [`Self::new`] drawing from `rng` (host-side, so runs are reproducible).
    pub fn new_seeded(config: &VitConfig, device: &Device, rng: &mut SeededRng) -> Result<Self> {
        Self::new_from(config, &ParamSource::init(rng).root(), device)
    }

    /// Builds the model from official-layout tensors. Every tensor must be present with
    /// the shape `config` implies, and none may be left over.
    pub fn from_state_dict(config: &VitConfig, sd: StateDict, device: &Device) -> Result<Self> {
        let source = ParamSource::load(sd);
        let model = Self::new_from(config, &source.root(), device)?;
        source.finish()?;
        Ok(model)
    }

    /// The weights in the official layout (PyTorch orientation), e.g. for export: the keys
    /// [`VitParams::new`] reads.
    pub fn to_state_dict(&self) -> Result<StateDict> {
        module_state_dict(self)
    }

    /// Sets stochastic depth with the official linear per-block rule.
    pub fn set_drop_path_rate(&mut self, rate: f64) {
        self.config.drop_path_rate = rate;
        let config = self.config.clone();
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.drop_path.rate = drop_path_rate(&config, i);
        }
    }

    /// The precision of every matrix product of the model ([`Precision`]; f32 when built).
    pub fn set_precision(&mut self, precision: Precision) {
        self.patch_embed.precision = precision;
        for b in &mut self.blocks {
            b.set_precision(precision);
        }
    }

    /// The precision of the model's products.
    pub fn precision(&self) -> Precision {
        self.patch_embed.precision
    }

    /// Which kernels every block's attention core runs on ([`AttentionKernel`]; composed when
    /// built).
    pub fn set_attention_kernel(&mut self, kernel: AttentionKernel) {
        for b in &mut self.blocks {
            b.attn.kernel = kernel;
        }
    }

    /// The kernels of the attention cores.
    pub fn attention_kernel(&self) -> AttentionKernel {
        self.blocks
            .first()
            .map_or(AttentionKernel::Composed, |b| b.attn.kernel)
    }

    /// Checks a `[B, C, H, W]` input and returns its patch grid.
    pub fn check_input(&self, dims: [usize; 4]) -> Result<(usize, usize)> {
        self.config.input_grid(dims)
    }

    /// `prepare_tokens`: patch embedding, CLS token, interpolated position embeddings.
    pub fn prepare_tokens(&self, x: Tensor<4>) -> Result<Tensor<3>> {
        let dims = x.dims();
        let (gh, gw) = self.check_input(dims)?;
        let b = dims[0];
        let tokens = self.patch_embed.forward(x);
        let cls = self.cls_token.val().expand([b, 1, self.config.dim]);
        let tokens = Tensor::cat(vec![cls, tokens], 1);
        let pos = interpolate_pos_embed(
            self.pos_embed.val(),
            self.config.pos_grid,
            gh,
            gw,
            dims[2] == dims[3],
        );
        Ok(tokens + pos)
    }

    /// The official `forward`: the CLS token after the final norm, `[B, D]`.
    pub fn forward(&self, x: Tensor<4>) -> Result<Tensor<2>> {
        Ok(self.forward_features(x)?.cls)
    }

    /// CLS and patch tokens after the final norm.
    pub fn forward_features(&self, x: Tensor<4>) -> Result<Features> {
        let [b, _, h, w] = x.dims();
        let p = self.config.patch;
        let mut t = self.prepare_tokens(x)?;
        for blk in &self.blocks {
            t = blk.forward(t);
        }
        Ok(split_tokens(
            super::layer_norm(&self.norm, self.config.layer_norm_eps, t),
            b,
            (h / p, w / p),
        ))
    }

    /// `get_intermediate_layers`: the normed outputs of the last `n` blocks, `[B, 1+N, D]` each.
    pub fn intermediate_layers(&self, x: Tensor<4>, n: usize) -> Result<Vec<Tensor<3>>> {
        let depth = self.blocks.len();
        if n == 0 || n > depth {
            return Err(Error::Input(format!(
                "asked for the last {n} layers of a {depth}-block model"
            )));
        }
        let mut t = self.prepare_tokens(x)?;
        let mut out = Vec::with_capacity(n);
        for (i, blk) in self.blocks.iter().enumerate() {
            t = blk.forward(t);
            if depth - i <= n {
                out.push(super::layer_norm(
                    &self.norm,
                    self.config.layer_norm_eps,
                    t.clone(),
                ));
            }
        }
        Ok(out)
    }

    /// `get_last_selfattention`: softmax probabilities of the last block, `[B, H, 1+N, 1+N]`.
    pub fn last_self_attention(&self, x: Tensor<4>) -> Result<Tensor<4>> {
        let t = self.tokens_before_last_block(x)?;
        let last = self.blocks.last().expect("depth >= 1");
        Ok(last.forward_with_attention(t).1)
    }

    /// CLS-to-patch attention of the last block, `[B, H, gh*gw]` (the official
    /// `attentions[0, :, 0, 1:]`), without materialising the full matrix.
    pub fn cls_attention(&self, x: Tensor<4>) -> Result<Tensor<3>> {
        let t = self.tokens_before_last_block(x)?;
        let last = self.blocks.last().expect("depth >= 1");
        let a = last.cls_attention(t);
        let n = a.dims()[2];
        Ok(a.narrow(2, 1, n - 1))
    }

    /// Everything a viewer wants in one pass: CLS/patch features and the CLS attention.
    pub fn forward_with_cls_attention(&self, x: Tensor<4>) -> Result<(Features, Tensor<3>)> {
        let [b, _, h, w] = x.dims();
        let p = self.config.patch;
        let t = self.tokens_before_last_block(x)?;
        let last = self.blocks.last().expect("depth >= 1");
        let a = last.cls_attention(t.clone());
        let n = a.dims()[2];
        let t = last.forward(t);
        let feats = split_tokens(
            super::layer_norm(&self.norm, self.config.layer_norm_eps, t),
            b,
            (h / p, w / p),
        );
        Ok((feats, a.narrow(2, 1, n - 1)))
    }

    fn tokens_before_last_block(&self, x: Tensor<4>) -> Result<Tensor<3>> {
        let mut t = self.prepare_tokens(x)?;
        let depth = self.blocks.len();
        for blk in &self.blocks[..depth - 1] {
            t = blk.forward(t);
        }
        Ok(t)
    }
}

fn split_tokens(t: Tensor<3>, b: usize, grid: (usize, usize)) -> Features {
    let [_, n1, d] = t.dims();
    Features {
        cls: t.clone().narrow(1, 0, 1).reshape([b, d]),
        patches: t.narrow(1, 1, n1 - 1),
        grid,
    }
}

/// Stochastic depth of block `i`: `linspace(0, rate, depth)[i]`.
pub fn drop_path_rate(config: &VitConfig, i: usize) -> f64 {
    crate::train::linspace(0.0, config.drop_path_rate, config.depth)[i]
}
