//! `DINOHead` of the official `vision_transformer.py`: an MLP to a bottleneck, L2
//! normalisation, then a weight-normalised linear layer without bias.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::BatchSync;
use crate::model::params::{Init, LinearParams, ParamSource, Params, module_state_dict};
use crate::model::{BN_MOMENTUM, BatchNorm, Precision, gelu, l2_normalize_rows, weight_norm};
use crate::rng::SeededRng;
use crate::weights::{RawTensor, StateDict};
use crate::{Error, Result};

/// Sizes of the projection head (defaults of `main_dino.py`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// Output dimension K (65536 officially; smaller for small data).
    pub out_dim: usize,
    /// Hidden width of the MLP.
    pub hidden_dim: usize,
    /// Width of the bottleneck before the last layer.
    pub bottleneck_dim: usize,
    /// Number of linear layers in the MLP (3 officially).
    pub nlayers: usize,
    /// Keep the weight-norm gain `g` fixed to 1 (`norm_last_layer`, true officially).
    pub norm_last_layer: bool,
    /// BatchNorm after each hidden layer of the MLP (`use_bn_in_head`, false officially).
    #[serde(default)]
    pub use_bn: bool,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            out_dim: 65536,
            hidden_dim: 2048,
            bottleneck_dim: 256,
            nlayers: 3,
            norm_last_layer: true,
            use_bn: false,
        }
    }
}

impl HeadConfig {
    pub fn validate(&self) -> Result<()> {
        if self.out_dim == 0
            || self.hidden_dim == 0
            || self.bottleneck_dim == 0
            || self.nlayers == 0
        {
            return Err(Error::Config(format!("invalid head sizes: {self:?}")));
        }
        Ok(())
    }

    /// `(in, out)` of each MLP layer for an input of `in_dim`.
    pub fn mlp_shapes(&self, in_dim: usize) -> Vec<(usize, usize)> {
        if self.nlayers == 1 {
            return vec![(in_dim, self.bottleneck_dim)];
        }
        let mut shapes = vec![(in_dim, self.hidden_dim)];
        for _ in 0..self.nlayers - 2 {
            shapes.push((self.hidden_dim, self.hidden_dim));
        }
        shapes.push((self.hidden_dim, self.bottleneck_dim));
        shapes
    }

    /// Official: BatchNorm only when the MLP has hidden layers.
    fn has_bn(&self) -> bool {
        self.use_bn && self.nlayers > 1
    }
}

/// Distance between the linear layers of the official `nn.Sequential` MLP: each is followed by
/// a GELU, and with BatchNorm by the norm first.
fn mlp_stride(with_bn: bool) -> usize {
    if with_bn { 3 } else { 2 }
}

/// The projection head. `last_layer_v` is the weight-norm direction `[out_dim, bottleneck]`
/// (PyTorch orientation), `last_layer_g` the gain `[out_dim, 1]` (absent when fixed to 1).
#[derive(Module, Debug)]
pub struct DinoHead {
    pub mlp: Vec<Linear>,
    /// One per hidden layer with `use_bn`, else empty.
    pub norms: Vec<BatchNorm>,
    pub last_layer_v: Param<Tensor<2>>,
    pub last_layer_g: Option<Param<Tensor<2>>>,
    /// Precision of the linear layers' products ([`Precision`]); BatchNorm, GELU, the L2
    /// normalisation and the weight normalisation stay f32, and so do the logits.
    #[module(skip)]
    pub precision: Precision,
}

impl DinoHead {
    /// The head of `cfg` on `in_dim` features with parameters from `vb` under the official
    /// keys (`mlp.{0,2,4}.{weight,bias}`, or `mlp.{0,3,6}` with BatchNorms at `mlp.{1,4}`;
    /// `last_layer.weight_v`, `last_layer.weight_g`). Drawn as the official code does: MLP
    /// weights N(0, 0.02) with zero biases; the last layer keeps PyTorch's default Linear init
    /// (uniform ±1/sqrt(in)), because the official code creates it after applying
    /// `_init_weights`; `g` = 1. A loaded `g` must be all ones when `norm_last_layer` fixes it.
    pub fn new_from(in_dim: usize, cfg: &HeadConfig, vb: &Params, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let shapes = cfg.mlp_shapes(in_dim);
        let stride = mlp_stride(cfg.has_bn());
        let mut mlp = Vec::new();
        let mut norms = Vec::new();
        for (i, &(fan_in, fan_out)) in shapes.iter().enumerate() {
            let layer = vb.pp(format!("mlp.{}", stride * i));
            mlp.push(
                LinearParams::new(fan_in, fan_out, Init::Normal(0.02), &layer)?.into_burn(device),
            );
            if cfg.has_bn() && i + 1 < shapes.len() {
                // batch statistics in both networks, as the official code (never in eval mode)
                let bn = vb.pp(format!("mlp.{}", stride * i + 1));
                norms.push(BatchNorm::new(fan_out, BN_MOMENTUM, true, &bn, device)?);
            }
        }
        let (o, k) = (cfg.out_dim, cfg.bottleneck_dim);
        let last = vb.pp("last_layer");
        let bound = Init::Uniform(1.0 / (k as f64).sqrt());
        let v = last.get("weight_v", &[o, k], bound)?;
        let g = last.get("weight_g", &[o, 1], Init::Ones)?;
        let last_layer_g = if cfg.norm_last_layer {
            if g.data.iter().any(|&x| (x - 1.0).abs() > 1e-6) {
                return Err(Error::Weights(
                    "'last_layer.weight_g' is not all ones but the head is configured with \
                     norm_last_layer = true"
                        .into(),
                ));
            }
            None
        } else {
            Some(g.into_param(device))
        };
        Ok(Self {
            mlp,
            norms,
            last_layer_v: v.into_param(device),
            last_layer_g,
            precision: Precision::F32,
        })
    }

    /// `[N, in_dim]` features to `[N, out_dim]` logits; with `sync`, the BatchNorms normalise
    /// over the rows of every rank of it (the official `SyncBatchNorm`).
    pub fn forward(&self, x: Tensor<2>, sync: Option<&BatchSync>) -> Result<Tensor<2>> {
        let n = self.mlp.len();
        let mut x = x;
        let p = self.precision;
        for (i, layer) in self.mlp.iter().enumerate() {
            x = p.widen(p.linear(layer, x));
            if let Some(norm) = self.norms.get(i) {
                x = match sync {
                    Some(sync) => sync.normalize(norm, x)?,
                    None => norm.forward(x),
                };
            }
            if i + 1 < n {
                x = gelu(x);
            }
        }
        let x = l2_normalize_rows(x);
        // weight_norm: w = g * v / ||v|| (norm over each output row)
        let v = self.last_layer_v.val();
        let g = self.last_layer_g.as_ref().map(|g| g.val());
        Ok(match p.half() {
            None => weight_norm::weight_normed_linear(x, v, g),
            Some(_) => p.widen(p.matmul(x, weight_norm::weight(v, g).transpose())),
        })
    }

    /// A head drawn from `rng` as the official code initialises it.
    pub fn new(
        in_dim: usize,
        cfg: &HeadConfig,
        device: &Device,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        Self::new_from(in_dim, cfg, &ParamSource::init(rng).root(), device)
    }

    /// The head from official keys, every tensor used.
    pub fn from_state_dict(
        in_dim: usize,
        cfg: &HeadConfig,
        sd: StateDict,
        device: &Device,
    ) -> Result<Self> {
        let source = ParamSource::load(sd);
        let head = Self::new_from(in_dim, cfg, &source.root(), device)?;
        source.finish()?;
        Ok(head)
    }

    /// The head under the official keys [`Self::new_from`] reads (`weight_g` all ones when
    /// fixed): Burn's field paths with the MLP's layer indices spread as in the official
    /// `nn.Sequential` (GELUs and BatchNorms between the linear layers).
    pub fn to_state_dict(&self) -> Result<StateDict> {
        let stride = mlp_stride(!self.norms.is_empty());
        // a running statistic updated on this thread is pending until synchronised
        for n in &self.norms {
            n.sync();
        }
        let mut sd = StateDict::new();
        for (k, t) in module_state_dict(self)? {
            let (field, rest) = k.split_once('.').unwrap_or((&k, ""));
            let index = |r: &str| -> (usize, String) {
                let (i, name) = r.split_once('.').unwrap_or((r, ""));
                (i.parse().unwrap_or(0), name.to_string())
            };
            let key = match field {
                "mlp" => {
                    let (i, name) = index(rest);
                    format!("mlp.{}.{name}", stride * i)
                }
                "norms" => {
                    let (i, name) = index(rest);
                    format!("mlp.{}.{name}", stride * i + 1)
                }
                "last_layer_v" => "last_layer.weight_v".into(),
                "last_layer_g" => "last_layer.weight_g".into(),
                _ => k.clone(),
            };
            sd.insert(key, t);
        }
        if self.last_layer_g.is_none() {
            let out = self.last_layer_v.dims()[0];
            sd.insert(
                "last_layer.weight_g",
                RawTensor::new(vec![out, 1], vec![1.0; out])?,
            );
        }
        Ok(sd)
    }

    /// The head's sizes as stored in official keys.
    pub fn detect_config(sd: &StateDict, norm_last_layer: bool) -> Result<HeadConfig> {
        let v = sd.shape("last_layer.weight_v")?;
        let [out_dim, bottleneck_dim] = v[..] else {
            return Err(Error::Weights(format!(
                "'last_layer.weight_v' has shape {v:?}"
            )));
        };
        // with BatchNorm, `mlp.1` is a norm (it has running statistics) and layers are 3 apart
        let use_bn = sd.contains("mlp.1.running_mean");
        let stride = mlp_stride(use_bn);
        let mut nlayers = 0;
        while sd.contains(&format!("mlp.{}.weight", stride * nlayers)) {
            nlayers += 1;
        }
        if nlayers == 0 {
            return Err(Error::Weights("head without 'mlp.0.weight'".into()));
        }
        let hidden_dim = if nlayers > 1 {
            sd.shape("mlp.0.weight")?[0]
        } else {
            bottleneck_dim
        };
        Ok(HeadConfig {
            out_dim,
            hidden_dim,
            bottleneck_dim,
            nlayers,
            norm_last_layer,
            use_bn,
        })
    }
}
