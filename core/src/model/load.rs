//! Building the model from a [`StateDict`] in the official layout, and back.

use burn::nn::conv::Conv2dConfig;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::Device;

use super::{Block, DropPath, Mlp, PatchEmbed, SelfAttention, VisionTransformer};
use crate::weights::{RawTensor, StateDict, transpose};
use crate::{Result, VitConfig};

impl VisionTransformer {
    /// Builds the model from official-layout tensors. Every tensor must be present with
    /// the shape `config` implies, and none may be left over.
    pub fn from_state_dict(config: &VitConfig, mut sd: StateDict, device: &Device) -> Result<Self> {
        config.validate()?;
        let d = config.dim;
        let p = config.patch;
        let mut proj = Conv2dConfig::new([3, d], [p, p])
            .with_stride([p, p])
            .init(device);
        proj.weight = sd
            .take("patch_embed.proj.weight", &[d, 3, p, p])?
            .into_param(device);
        proj.bias = Some(sd.take("patch_embed.proj.bias", &[d])?.into_param(device));
        let cls_token = sd.take("cls_token", &[1, 1, d])?.into_param(device);
        let pos_embed = sd
            .take("pos_embed", &[1, config.num_positions() + 1, d])?
            .into_param(device);
        let mut blocks = Vec::with_capacity(config.depth);
        for i in 0..config.depth {
            let k = |s: &str| format!("blocks.{i}.{s}");
            blocks.push(Block {
                norm1: layer_norm(&mut sd, &k("norm1"), config, device)?,
                attn: SelfAttention {
                    qkv: linear(&mut sd, &k("attn.qkv"), d, 3 * d, device)?,
                    proj: linear(&mut sd, &k("attn.proj"), d, d, device)?,
                    heads: config.heads,
                },
                norm2: layer_norm(&mut sd, &k("norm2"), config, device)?,
                mlp: Mlp {
                    fc1: linear(&mut sd, &k("mlp.fc1"), d, config.mlp_hidden, device)?,
                    fc2: linear(&mut sd, &k("mlp.fc2"), config.mlp_hidden, d, device)?,
                },
                drop_path: DropPath { rate: 0.0 },
            });
        }
        let norm = layer_norm(&mut sd, "norm", config, device)?;
        sd.finish()?;
        let mut model = Self {
            patch_embed: PatchEmbed { proj },
            cls_token,
            pos_embed,
            blocks,
            norm,
            config: config.clone(),
        };
        model.set_drop_path_rate(config.drop_path_rate);
        Ok(model)
    }

    /// Sets stochastic depth with the official linear per-block rule.
    pub fn set_drop_path_rate(&mut self, rate: f64) {
        self.config.drop_path_rate = rate;
        let depth = self.blocks.len();
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.drop_path.rate = if depth > 1 {
                rate * i as f64 / (depth - 1) as f64
            } else {
                0.0
            };
        }
    }

    /// The weights in the official layout (PyTorch orientation), e.g. for export.
    pub fn to_state_dict(&self) -> Result<StateDict> {
        let mut sd = StateDict::new();
        let pe = &self.patch_embed.proj;
        sd.insert(
            "patch_embed.proj.weight",
            RawTensor::from_tensor(pe.weight.val())?,
        );
        if let Some(b) = &pe.bias {
            sd.insert("patch_embed.proj.bias", RawTensor::from_tensor(b.val())?);
        }
        sd.insert("cls_token", RawTensor::from_tensor(self.cls_token.val())?);
        sd.insert("pos_embed", RawTensor::from_tensor(self.pos_embed.val())?);
        for (i, b) in self.blocks.iter().enumerate() {
            let k = |s: &str| format!("blocks.{i}.{s}");
            put_layer_norm(&mut sd, &k("norm1"), &b.norm1)?;
            put_linear(&mut sd, &k("attn.qkv"), &b.attn.qkv)?;
            put_linear(&mut sd, &k("attn.proj"), &b.attn.proj)?;
            put_layer_norm(&mut sd, &k("norm2"), &b.norm2)?;
            put_linear(&mut sd, &k("mlp.fc1"), &b.mlp.fc1)?;
            put_linear(&mut sd, &k("mlp.fc2"), &b.mlp.fc2)?;
        }
        put_layer_norm(&mut sd, "norm", &self.norm)?;
        Ok(sd)
    }
}

/// PyTorch `Linear` (weight `[out, in]`) to Burn's (`[in, out]`).
fn linear(sd: &mut StateDict, key: &str, i: usize, o: usize, device: &Device) -> Result<Linear> {
    let w = sd.take(&format!("{key}.weight"), &[o, i])?;
    let b = sd.take(&format!("{key}.bias"), &[o])?;
    let t = RawTensor {
        shape: vec![i, o],
        data: transpose(&w.data, o, i),
    };
    Ok(Linear {
        weight: t.into_param(device),
        bias: Some(b.into_param(device)),
    })
}

fn layer_norm(
    sd: &mut StateDict,
    key: &str,
    config: &VitConfig,
    device: &Device,
) -> Result<LayerNorm> {
    let d = config.dim;
    let mut ln = LayerNormConfig::new(d)
        .with_epsilon(config.layer_norm_eps)
        .init(device);
    ln.gamma = sd.take(&format!("{key}.weight"), &[d])?.into_param(device);
    ln.beta = Some(sd.take(&format!("{key}.bias"), &[d])?.into_param(device));
    Ok(ln)
}

fn put_linear(sd: &mut StateDict, key: &str, l: &Linear) -> Result<()> {
    let w = RawTensor::from_tensor(l.weight.val())?;
    let (i, o) = (w.shape[0], w.shape[1]);
    sd.insert(
        format!("{key}.weight"),
        RawTensor::new(vec![o, i], transpose(&w.data, i, o))?,
    );
    if let Some(b) = &l.bias {
        sd.insert(format!("{key}.bias"), RawTensor::from_tensor(b.val())?);
    }
    Ok(())
}

fn put_layer_norm(sd: &mut StateDict, key: &str, ln: &LayerNorm) -> Result<()> {
    sd.insert(
        format!("{key}.weight"),
        RawTensor::from_tensor(ln.gamma.val())?,
    );
    if let Some(b) = &ln.beta {
        sd.insert(format!("{key}.bias"), RawTensor::from_tensor(b.val())?);
    }
    Ok(())
}
