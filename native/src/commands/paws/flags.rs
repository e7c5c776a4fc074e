//! The recipe flags of `dino paws`: one optional flag per field of [`PawsConfig`] (names of
//! suncet's configs), turned into a TOML table and merged over the defaults or a `--config`
//! file as `dino train`'s are; `--help` shows each default from `PawsConfig::default()`.

use dino_core::paws::{PawsConfig, PawsModel};
use serde::Serialize;

#[derive(clap::Args, Serialize, Debug, Default)]
pub struct PawsFlags {
    /// The backbone: wide_resnet (--depth, --widen; the CIFAR-10 recipe, small images) or a
    /// ResNet (resnet50 is the ImageNet recipe's: 224 px crops, 96 px small crops,
    /// --color-jitter-strength 1.0, ImageNet normalisation, lr 0.3 -> 6.4 -> 0.064).
    #[arg(long, value_enum)]
    model_name: Option<PawsModel>,
    /// ResNets only: width per group (64 in every released ResNet; smaller for quick tests).
    #[arg(long)]
    width_per_group: Option<usize>,
    /// Wide ResNet depth, 6n + 4 (28 for CIFAR-10; 10 or 16 for quick runs).
    #[arg(long)]
    depth: Option<usize>,
    /// Wide ResNet width (features: 64 x width).
    #[arg(long)]
    widen: Option<usize>,
    /// Output of the projection head.
    #[arg(long)]
    output_dim: Option<usize>,
    /// A 4x-bottleneck prediction head on the projection (the ImageNet recipe uses one).
    #[arg(long)]
    use_pred_head: Option<bool>,
    /// Classes in each support batch (must divide the number of classes).
    #[arg(long)]
    classes_per_batch: Option<usize>,
    /// Labelled images of each class in a support batch (cycled when a class has fewer).
    #[arg(long)]
    supervised_imgs_per_class: Option<usize>,
    /// Augmented views of each support image.
    #[arg(long)]
    supervised_views: Option<usize>,
    /// Unlabelled images per iteration (each gives 2 large views and --multicrop small ones).
    #[arg(long)]
    unsupervised_batch_size: Option<usize>,
    /// Temperature of the soft nearest-neighbour classifier.
    #[arg(long)]
    temperature: Option<f64>,
    /// Target sharpening temperature (lower: sharper targets).
    #[arg(long)]
    sharpen: Option<f64>,
    /// Mean-entropy maximisation: keeps predictions spread over the classes (prevents
    /// collapse).
    #[arg(long)]
    me_max: Option<bool>,
    /// Label smoothing of the support labels.
    #[arg(long)]
    label_smoothing: Option<f64>,
    /// Under MPI: each rank draws its own support classes (the ImageNet config's setting;
    /// needs classes >= classes-per-batch x ranks) instead of all ranks the same classes.
    #[arg(long)]
    unique_classes_per_rank: Option<bool>,
    /// Small crops per unlabelled image (0: none).
    #[arg(long)]
    multicrop: Option<usize>,
    /// Strength of the colour distortion (0.5 for CIFAR-10, 1.0 for ImageNet).
    #[arg(long)]
    color_jitter_strength: Option<f64>,
    /// Side of the large views in pixels (32 for CIFAR-10; the images' size for small data).
    #[arg(long)]
    crop_size: Option<u32>,
    /// Side of the small crops in pixels.
    #[arg(long)]
    multicrop_size: Option<u32>,
    /// Area range of the large views.
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"])]
    crop_scale: Option<Vec<f64>>,
    /// Area range of the small crops.
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"])]
    multicrop_scale: Option<Vec<f64>>,
    /// Per-channel mean of the input normalisation.
    #[arg(long, num_args = 3, value_names = ["R", "G", "B"])]
    normalize_mean: Option<Vec<f64>>,
    /// Per-channel standard deviation of the input normalisation.
    #[arg(long, num_args = 3, value_names = ["R", "G", "B"])]
    normalize_std: Option<Vec<f64>>,
    /// Training epochs (passes over the unlabelled images).
    #[arg(long)]
    epochs: Option<usize>,
    /// Epochs of linear learning-rate warm-up from --start-lr to --lr.
    #[arg(long)]
    warmup: Option<usize>,
    /// Learning rate at the start of the warm-up.
    #[arg(long)]
    start_lr: Option<f64>,
    /// Peak learning rate (LARS scales each layer's step by its weight / gradient norms).
    #[arg(long)]
    lr: Option<f64>,
    /// Learning rate at the end of the cosine.
    #[arg(long)]
    final_lr: Option<f64>,
    /// Weight decay (not on biases and BatchNorms).
    #[arg(long)]
    weight_decay: Option<f64>,
    #[command(flatten)]
    #[serde(flatten)]
    common: crate::recipe::CommonFlags,
}

/// `dino paws --help` with every recipe flag's default from `PawsConfig::default()` (suncet's
/// CIFAR-10 recipe).
pub fn with_defaults_in_help(cmd: clap::Command) -> clap::Command {
    crate::recipe::defaults_in_help(cmd, PawsConfig::default().to_table(), "official")
}
