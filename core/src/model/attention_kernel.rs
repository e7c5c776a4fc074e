//! Which kernels compute the attention core `softmax(q k^T / sqrt(hd)) v` on a GPU
//! (`--attention-kernel`): Burn's composed operations, or dino-rs's fused CubeCL kernels with
//! their backward pass ([`super::cube_attention`]). A choice rather than a fixed path because
//! the fused kernels are plain FMA loops (no tensor cores) against Burn's autotuned matmuls:
//! which one is faster depends on the GPU and is for `dino-bench --attention-kernel
//! composed,fused` to say. The results are the same either way (to f32 rounding; the fused
//! kernels keep the probabilities in f32 in half precision too).

use serde::{Deserialize, Serialize};

/// The attention core's kernels (`--attention-kernel`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum AttentionKernel {
    /// Burn's operations: the head split, the scores [B, H, N, N] in memory, the softmax, the
    /// second product and the head merge, each with its gradient under autodiff (on the CPU,
    /// burn-flex's one fused operation in f32).
    #[default]
    Composed,
    /// dino-rs's fused kernels on CubeCL devices (wgpu, Vulkan, Metal, CUDA), forward and
    /// backward: the scores never reach memory (FlashAttention's online softmax); other
    /// devices, sizes they do not take (a head wider than 128) and balanced gradient
    /// checkpointing keep the composed path.
    Fused,
}

impl AttentionKernel {
    /// As the flag spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Composed => "composed",
            Self::Fused => "fused",
        }
    }
}

impl std::fmt::Display for AttentionKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
