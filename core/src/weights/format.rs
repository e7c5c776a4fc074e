//! What kind of file a checkpoint is, from its first bytes and its keys.

use std::fmt;

/// The layout a checkpoint was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// Flat state dict with the official key names (timm's for a ViT, torchvision's for a
    /// ResNet).
    OfficialBackbone,
    /// `checkpoint.pth` of `main_dino.py`; which network was taken.
    OfficialCheckpoint(super::CheckpointKey),
    /// A checkpoint of suncet's `paws_train.py` (`encoder` beside the optimiser).
    PawsCheckpoint,
    /// Hugging Face `ViTModel`.
    HuggingFace,
    /// This project's safetensors (official keys + architecture header).
    Dino,
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OfficialBackbone => write!(f, "official backbone (flat state dict)"),
            Self::PawsCheckpoint => write!(f, "official PAWS training checkpoint (encoder)"),
            Self::OfficialCheckpoint(k) => {
                write!(
                    f,
                    "official DINO training checkpoint ({} network)",
                    k.as_str()
                )
            }
            Self::HuggingFace => write!(f, "Hugging Face ViTModel"),
            Self::Dino => write!(f, "dino-rs safetensors"),
        }
    }
}

/// The container, from magic bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Container {
    Safetensors,
    Pytorch,
    Unknown,
}

pub(crate) fn sniff(head: &[u8]) -> Container {
    // safetensors first: its 8-byte header length may start with any byte (0x80 too)
    if head.len() >= 9 {
        let n = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        if n > 1 && n < 100_000_000 && head[8] == b'{' {
            return Container::Safetensors;
        }
    }
    // torch.save zip container, or a legacy pickle (protocol 2+: 0x80 then the version)
    if head.starts_with(b"PK\x03\x04")
        || (head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]))
    {
        return Container::Pytorch;
    }
    Container::Unknown
}

/// A short description of unrecognised content for error messages.
pub(crate) fn describe(head: &[u8]) -> String {
    if head.is_empty() {
        return "the file is empty".into();
    }
    let text = head
        .iter()
        .take(16)
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if text {
        let s: String = head.iter().take(16).map(|&b| b as char).collect();
        format!("it starts with the text {s:?}")
    } else {
        let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("it starts with the bytes {}", hex.join(" "))
    }
}
