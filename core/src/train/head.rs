//! `DINOHead` of the official `vision_transformer.py`: an MLP to a bottleneck, L2
//! normalisation, then a weight-normalised linear layer without bias.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::rng::SeededRng;
use crate::weights::{RawTensor, StateDict, transpose};
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
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            out_dim: 65536,
            hidden_dim: 2048,
            bottleneck_dim: 256,
            nlayers: 3,
            norm_last_layer: true,
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
            return Err(Error::Input(format!("invalid head sizes: {self:?}")));
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
}

/// The projection head. `last_layer_v` is the weight-norm direction `[out_dim, bottleneck]`
/// (PyTorch orientation), `last_layer_g` the gain `[out_dim, 1]` (absent when fixed to 1).
#[derive(Module, Debug)]
pub struct DinoHead {
    pub mlp: Vec<Linear>,
    pub last_layer_v: Param<Tensor<2>>,
    pub last_layer_g: Option<Param<Tensor<2>>>,
}

impl DinoHead {
    /// Official initialisation: MLP weights N(0, 0.02) with zero biases; the last layer keeps
    /// PyTorch's default Linear init (uniform +-1/sqrt(in)), because the official code creates
    /// it after applying `_init_weights`; `g` = 1.
    pub fn new(
        in_dim: usize,
        cfg: &HeadConfig,
        device: &Device,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut mlp = Vec::new();
        for (i, o) in cfg.mlp_shapes(in_dim) {
            let w = RawTensor::new(vec![i, o], crate::rng::normal(rng, i * o, 0.0, 0.02))?;
            mlp.push(Linear {
                weight: w.into_param(device),
                bias: Some(Initializer::Zeros.init([o], device)),
            });
        }
        let bound = 1.0 / (cfg.bottleneck_dim as f64).sqrt();
        let (o, k) = (cfg.out_dim, cfg.bottleneck_dim);
        let v = RawTensor::new(vec![o, k], crate::rng::uniform(rng, o * k, -bound, bound))?;
        let last_layer_v = v.into_param(device);
        let last_layer_g =
            (!cfg.norm_last_layer).then(|| Initializer::Ones.init([cfg.out_dim, 1], device));
        Ok(Self {
            mlp,
            last_layer_v,
            last_layer_g,
        })
    }

    /// `[N, in_dim]` features to `[N, out_dim]` logits.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let n = self.mlp.len();
        let mut x = x;
        for (i, layer) in self.mlp.iter().enumerate() {
            x = layer.forward(x);
            if i + 1 < n {
                x = gelu(x);
            }
        }
        // F.normalize(x, dim=-1, p=2): x / max(||x||, 1e-12)
        let norm = x
            .clone()
            .powf_scalar(2.0)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
        let x = x / norm;
        // weight_norm: w = g * v / ||v|| (norm over each output row)
        let v = self.last_layer_v.val();
        let vnorm = v.clone().powf_scalar(2.0).sum_dim(1).sqrt();
        let mut w = v / vnorm;
        if let Some(g) = &self.last_layer_g {
            w = w * g.val();
        }
        x.matmul(w.transpose())
    }
}

impl DinoHead {
    /// Builds the head from official keys (`mlp.{0,2,4}.{weight,bias}`,
    /// `last_layer.weight_g`, `last_layer.weight_v`), every tensor used.
    pub fn from_state_dict(
        in_dim: usize,
        cfg: &HeadConfig,
        sd: &mut StateDict,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut mlp = Vec::new();
        for (i, (fan_in, fan_out)) in cfg.mlp_shapes(in_dim).into_iter().enumerate() {
            let w = sd.take(&format!("mlp.{}.weight", 2 * i), &[fan_out, fan_in])?;
            let b = sd.take(&format!("mlp.{}.bias", 2 * i), &[fan_out])?;
            let w = RawTensor::new(vec![fan_in, fan_out], transpose(&w.data, fan_out, fan_in))?;
            mlp.push(Linear {
                weight: w.into_param(device),
                bias: Some(b.into_param(device)),
            });
        }
        let v = sd.take("last_layer.weight_v", &[cfg.out_dim, cfg.bottleneck_dim])?;
        let g = sd.take("last_layer.weight_g", &[cfg.out_dim, 1])?;
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
            last_layer_v: v.into_param(device),
            last_layer_g,
        })
    }

    /// The head under official keys (weight_g is all ones when fixed).
    pub fn to_state_dict(&self) -> Result<StateDict> {
        let mut sd = StateDict::new();
        for (i, l) in self.mlp.iter().enumerate() {
            let w = RawTensor::from_tensor(l.weight.val())?;
            let (fi, fo) = (w.shape[0], w.shape[1]);
            sd.insert(
                format!("mlp.{}.weight", 2 * i),
                RawTensor::new(vec![fo, fi], transpose(&w.data, fi, fo))?,
            );
            if let Some(b) = &l.bias {
                sd.insert(
                    format!("mlp.{}.bias", 2 * i),
                    RawTensor::from_tensor(b.val())?,
                );
            }
        }
        let v = RawTensor::from_tensor(self.last_layer_v.val())?;
        let out = v.shape[0];
        sd.insert("last_layer.weight_v", v);
        let g = match &self.last_layer_g {
            Some(g) => RawTensor::from_tensor(g.val())?,
            None => RawTensor::new(vec![out, 1], vec![1.0; out])?,
        };
        sd.insert("last_layer.weight_g", g);
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
        let mut nlayers = 0;
        while sd.contains(&format!("mlp.{}.weight", 2 * nlayers)) {
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
        })
    }
}
