//! Weight import and export for every checkpoint layout DINO users have:
//!
//! | format | where it comes from | keys |
//! |---|---|---|
//! | official backbone `.pth` | `dino_deitsmall16_pretrain.pth` etc. | `cls_token`, `blocks.0.attn.qkv.weight` (timm) |
//! | official training checkpoint `.pth` | `checkpoint.pth` of `main_dino.py` | `teacher.backbone.*`, `student.module.backbone.*` |
//! | Hugging Face `ViTModel` safetensors | `facebook/dino-vits16` etc. | `embeddings.*`, `encoder.layer.N.attention.attention.query.*` |
//! | this project's `.safetensors` | `dino export` | official keys + the architecture in the header |
//! | ResNet backbone `.pth` | `dino_resnet50_pretrain.pth`, torchvision | `conv1.weight`, `layer1.0.conv1.weight` |
//! | ResNet in a training checkpoint | DINO's `checkpoint.pth`, PAWS's `paws-*.pth.tar` | `teacher.backbone.*`, `encoder.module.*` |
//!
//! Everything is normalised to the official key layout ([`StateDict`]), the architecture is
//! read from the tensor shapes ([`detect_config`]) and the model is built from it.

mod detect;
mod format;
mod hf;
mod layout;
mod own;
mod pth;
mod safetensors_file;
mod state_dict;

pub use detect::detect_config;
pub use format::WeightFormat;
pub use hf::hf_to_official;
#[cfg(not(target_family = "wasm"))]
pub use own::save_safetensors;
pub use own::{OWN_FORMAT, safetensors_bytes, to_safetensors_bytes, to_safetensors_bytes_with};
#[cfg(not(target_family = "wasm"))]
pub(crate) use pth::read_pth_bytes;
pub use state_dict::{RawTensor, StateDict, transpose};

/// Whether bytes are a `torch.save` file (zip or legacy pickle), from their first bytes.
#[cfg(not(target_family = "wasm"))]
pub(crate) fn is_pytorch_file(head: &[u8]) -> bool {
    format::sniff(head) == format::Container::Pytorch
}

use crate::model::resnet::ResNetConfig;
use crate::{Error, Result, VitConfig};

/// Which network of a training checkpoint to load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum CheckpointKey {
    /// The EMA teacher: what DINO evaluates and releases.
    #[default]
    Teacher,
    /// The student being trained.
    Student,
}

impl std::str::FromStr for CheckpointKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "teacher" => Ok(Self::Teacher),
            "student" => Ok(Self::Student),
            other => Err(Error::Input(format!(
                "checkpoint key '{other}': expected 'teacher' or 'student'"
            ))),
        }
    }
}

impl CheckpointKey {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Teacher => "teacher",
            Self::Student => "student",
        }
    }
}

/// Choices a user can make when loading weights.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Network of a training checkpoint (ignored for backbone-only files).
    pub checkpoint_key: CheckpointKey,
    /// Number of heads; the tensors do not say it. Default: what the file's header says
    /// (this project's format), else dim / 64 as in every official model.
    pub heads: Option<usize>,
}

/// A checkpoint normalised to the official layout, with its detected architecture.
#[derive(Debug)]
pub struct LoadedWeights {
    pub format: WeightFormat,
    pub config: VitConfig,
    pub state: StateDict,
}

/// The network a checkpoint holds, read from its tensor shapes.
#[derive(Clone, Debug, PartialEq)]
pub enum Architecture {
    Vit(VitConfig),
    ResNet(ResNetConfig),
}

/// A checkpoint of either network, normalised to its official layout.
#[derive(Debug)]
pub struct LoadedNetwork {
    pub format: WeightFormat,
    pub architecture: Architecture,
    pub state: StateDict,
}

impl LoadedNetwork {
    /// The ViT, or an error naming the ResNet and what `needs` a ViT.
    pub fn into_vit(self, needs: &str) -> Result<LoadedWeights> {
        match self.architecture {
            Architecture::Vit(config) => Ok(LoadedWeights {
                format: self.format,
                config,
                state: self.state,
            }),
            Architecture::ResNet(c) => Err(Error::Weights(format!(
                "this is a {} checkpoint ({}); {needs} needs a Vision Transformer",
                c.describe(),
                self.format
            ))),
        }
    }
}

/// Loads any supported weights file of a ViT (format detected from the content, not the name).
#[cfg(not(target_family = "wasm"))]
pub fn load_file(path: impl AsRef<std::path::Path>, opts: &LoadOptions) -> Result<LoadedWeights> {
    let path = path.as_ref();
    load_network_file(path, opts)?
        .into_vit("this")
        .map_err(|e| prefix_err(e, &format!("{}", path.display())))
}

/// Loads any supported weights file, of a ViT or a ResNet.
#[cfg(not(target_family = "wasm"))]
pub fn load_network_file(
    path: impl AsRef<std::path::Path>,
    opts: &LoadOptions,
) -> Result<LoadedNetwork> {
    let path = path.as_ref();
    let mut head = [0u8; 16];
    let n = {
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        read_up_to(&mut f, &mut head).map_err(|e| Error::io(path, e))?
    };
    let what = || format!("{}", path.display());
    match format::sniff(&head[..n]) {
        format::Container::Safetensors => {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            load_network_bytes(&bytes, opts).map_err(|e| prefix_err(e, &what()))
        }
        format::Container::Pytorch => {
            let raw = pth::read_pth(path, opts.checkpoint_key)?;
            finish(raw, None, opts).map_err(|e| prefix_err(e, &what()))
        }
        format::Container::Unknown => Err(Error::Weights(format!(
            "{}: not a checkpoint ({}): expected a PyTorch .pth/.pt file (zip or legacy pickle) \
             or a .safetensors file",
            what(),
            format::describe(&head[..n])
        ))),
    }
}

/// Loads ViT weights from the bytes of any supported file (what the browser has): safetensors
/// in the official, Hugging Face or this project's layout, or an official PyTorch `.pth`.
pub fn load_bytes(bytes: &[u8], opts: &LoadOptions) -> Result<LoadedWeights> {
    load_network_bytes(bytes, opts)?.into_vit("this")
}

/// Loads ViT or ResNet weights from the bytes of any supported file. A `.pth` is read from a
/// copy of them: [`load_network_owned`] takes them without one.
pub fn load_network_bytes(bytes: &[u8], opts: &LoadOptions) -> Result<LoadedNetwork> {
    match format::sniff(bytes) {
        format::Container::Safetensors => {
            let (raw, meta) = safetensors_file::read(bytes)?;
            finish(raw, Some(meta), opts)
        }
        format::Container::Pytorch => load_network_owned(bytes.to_vec(), opts),
        format::Container::Unknown => Err(Error::Weights(format!(
            "not a checkpoint ({}): expected a PyTorch .pth/.pt file (zip or legacy pickle) or \
             a .safetensors file",
            format::describe(bytes)
        ))),
    }
}

/// [`load_network_bytes`] taking the bytes: a `.pth` is parsed in place (a training
/// checkpoint is several times the size of the network it holds, and the browser has 4 GiB).
pub fn load_network_owned(bytes: Vec<u8>, opts: &LoadOptions) -> Result<LoadedNetwork> {
    match format::sniff(&bytes) {
        format::Container::Pytorch => {
            let raw = pth::read_pth_bytes(bytes, opts.checkpoint_key)?;
            finish(raw, None, opts)
        }
        _ => load_network_bytes(&bytes, opts),
    }
}

fn finish(
    raw: StateDict,
    meta: Option<std::collections::HashMap<String, String>>,
    opts: &LoadOptions,
) -> Result<LoadedNetwork> {
    let own = meta.as_ref().and_then(own::read_header).transpose()?;
    let (format, state) = layout::normalise(raw, own.is_some(), opts.checkpoint_key)?;
    if own.is_none()
        && let Some(resnet) = ResNetConfig::detect(&state)
    {
        return Ok(LoadedNetwork {
            format,
            architecture: Architecture::ResNet(resnet?),
            state,
        });
    }
    let heads = opts.heads.or(own.as_ref().map(|c| c.heads));
    let mut config = detect_config(&state, heads)?;
    if let Some(own) = own {
        // The header is authoritative for what the tensors cannot say.
        config.layer_norm_eps = own.layer_norm_eps;
    }
    Ok(LoadedNetwork {
        format,
        architecture: Architecture::Vit(config),
        state,
    })
}

#[cfg_attr(target_family = "wasm", allow(dead_code))]
fn prefix_err(e: Error, what: &str) -> Error {
    match e {
        Error::Weights(m) => Error::Weights(format!("{what}: {m}")),
        other => other,
    }
}

#[cfg(not(target_family = "wasm"))]
fn read_up_to(f: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
