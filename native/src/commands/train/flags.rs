//! The recipe flags of `dino train`: one optional flag per field of [`TrainConfig`], with the
//! advice of `main_dino.py`'s help. The flags a user gave become a TOML table (the ones left
//! out are absent), merged over the defaults or a `--config` file exactly as a file's table
//! is, and compared field by field with a checkpoint's config when a run resumes. The defaults
//! shown in `--help` come from `TrainConfig::default()` itself ([`with_defaults_in_help`]).

use dino_core::train::{AttentionKernel, OptimizerKind, Precision, TrainConfig};
use serde::Serialize;

/// Every field of the training config as a flag (names and meaning of `main_dino.py`).
#[derive(clap::Args, Serialize, Debug, Default)]
pub struct RecipeFlags {
    /// Architecture: vit_tiny, vit_small, vit_base (small data: vit_tiny or a custom size).
    #[arg(long)]
    arch: Option<String>,
    /// Patch size in pixels: 8 gives finer attention maps at 4x the compute of 16.
    #[arg(long)]
    patch_size: Option<usize>,
    /// Custom embedding dimension (overrides the preset; MLP 4x). [default: the preset's]
    #[arg(long)]
    embed_dim: Option<usize>,
    /// Custom number of blocks. [default: the preset's]
    #[arg(long)]
    depth: Option<usize>,
    /// Custom number of heads. [default: the preset's, or embed_dim / 64]
    #[arg(long)]
    num_heads: Option<usize>,
    /// Head output dimension K: 65536 for ImageNet-scale data; a few thousand or less for
    /// small data.
    #[arg(long)]
    out_dim: Option<usize>,
    /// Weight-normalise the head's last layer with a fixed gain: more stable; false can give
    /// better features with small ViTs if training is stable.
    #[arg(long)]
    norm_last_layer: Option<bool>,
    /// BatchNorm after the hidden layers of the head (batch statistics in both networks,
    /// synchronised over devices and MPI ranks as the official SyncBatchNorm). Officially
    /// false: it does not help ViTs and costs a collective per BatchNorm when split.
    #[arg(long)]
    use_bn_in_head: Option<bool>,
    /// Base teacher EMA momentum, raised to 1 by a cosine: 0.9995 for batch 256; lower it for
    /// small batches.
    #[arg(long)]
    momentum_teacher: Option<f64>,
    /// Initial teacher temperature: 0.04 works well; lower it if training is unstable.
    #[arg(long)]
    warmup_teacher_temp: Option<f64>,
    /// Teacher temperature after warm-up: 0.04-0.07 (above 0.07 training tends to be unstable).
    #[arg(long)]
    teacher_temp: Option<f64>,
    /// Epochs of linear teacher-temperature warm-up.
    #[arg(long)]
    warmup_teacher_temp_epochs: Option<usize>,
    /// Initial weight decay (a cosine to --weight-decay-end): a smaller decay works better for
    /// ViTs.
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Final weight decay.
    #[arg(long)]
    weight_decay_end: Option<f64>,
    /// Per-tensor gradient norm limit (0: off): helps optimisation of larger ViTs.
    #[arg(long)]
    clip_grad: Option<f64>,
    /// Images per iteration, over all devices (official: batch_size_per_gpu x GPUs).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Training epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Epochs with the head's last layer frozen: 1 usually; more if the loss does not
    /// decrease.
    #[arg(long)]
    freeze_last_layer: Option<usize>,
    /// Peak learning rate for a batch of 256 (scaled by batch / 256), reached after warm-up.
    #[arg(long)]
    lr: Option<f64>,
    /// Epochs of linear learning-rate warm-up.
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// Final learning rate (cosine).
    #[arg(long)]
    min_lr: Option<f64>,
    /// Optimiser: adamw for ViTs; lars for large batches of convnets.
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerKind>,
    /// Stochastic depth rate of the student (last block; linear over blocks).
    #[arg(long)]
    drop_path_rate: Option<f64>,
    /// Area range of the global crops: (0.14, 1) for low-resolution runs, (0.4, 1) officially.
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"])]
    global_crops_scale: Option<Vec<f64>>,
    /// Number of local crops (0: two global views only).
    #[arg(long)]
    local_crops_number: Option<usize>,
    /// Area range of the local crops.
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"])]
    local_crops_scale: Option<Vec<f64>>,
    /// Side of the global crops in pixels.
    #[arg(long)]
    global_crop_size: Option<u32>,
    /// Side of the local crops in pixels.
    #[arg(long)]
    local_crop_size: Option<u32>,
    /// Range of the Gaussian blur radius in pixels; scale it down for small images.
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"])]
    blur_radius: Option<Vec<f64>>,
    /// Hidden width of the head's MLP.
    #[arg(long)]
    head_hidden_dim: Option<usize>,
    /// Bottleneck of the head.
    #[arg(long)]
    head_bottleneck_dim: Option<usize>,
    /// Linear layers in the head's MLP.
    #[arg(long)]
    head_layers: Option<usize>,
    /// Passes over the images per epoch (small data: more views per epoch).
    #[arg(long)]
    dataset_repeats: Option<usize>,
    /// Recompute activations during the backward pass: less memory, more time.
    #[arg(long)]
    gradient_checkpointing: Option<bool>,
    /// Precision of the matrix products (mixed precision; main_dino.py's --use_fp16, on by
    /// default there, is f16): bf16 for GPUs with bf16 tensor cores (A100, H100) and CPUs with
    /// AVX-512 BF16 / AMX; f16 with dynamic loss scaling otherwise (it can overflow with patch
    /// 8, as the official README warns). Weights, optimiser state, LayerNorm, softmax and the
    /// loss stay f32; a run may resume in another precision. dino-rs defaults to f32 because
    /// most CPUs have no fast half-precision products (BENCHMARKS.md, "Mixed precision").
    #[arg(long, value_enum)]
    precision: Option<Precision>,
    /// Which kernels compute the attention core on a GPU: `composed` (Burn's operations; the
    /// scores [B, H, N, N] in memory) or `fused` (dino-rs's CubeCL kernels with their backward
    /// pass, FlashAttention's online softmax: no scores in memory; plain FMA loops, no tensor
    /// cores). Same results; which is faster depends on the GPU: `dino-bench --mode train-step
    /// --attention-kernel composed,fused` says. The CPU keeps its own fused attention.
    #[arg(long, value_enum)]
    attention_kernel: Option<AttentionKernel>,
    #[command(flatten)]
    #[serde(flatten)]
    common: crate::recipe::CommonFlags,
}

/// `dino train --help` with every recipe flag's default from `TrainConfig::default()` (the
/// official recipe; the demo run without `--data` differs, as `--print-config` shows).
pub fn with_defaults_in_help(cmd: clap::Command) -> clap::Command {
    crate::recipe::defaults_in_help(cmd, TrainConfig::default().to_table(), "official")
}
