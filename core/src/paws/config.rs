//! Every setting of a PAWS run, with the defaults of suncet's `configs/paws/cifar10_train.yaml`
//! (WRN-28-2 on 32x32 images, 4,000 labels): the same names where the official config has one.
//! Serialised into checkpoints and loadable from TOML (`dino paws --config run.toml`).

use serde::{Deserialize, Serialize};

use super::encoder::{BackboneConfig, EncoderConfig};
use crate::model::resnet::ResNetConfig;
use crate::model::wide_resnet::WideResNetConfig;
use crate::train::config::{differences, merge_table, to_table};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PawsConfig {
    // -- meta
    /// The backbone (`model_name`): a Wide ResNet of `depth` and `widen` (the CIFAR-10
    /// recipe) or a ResNet (resnet50 in the ImageNet recipe).
    pub model_name: PawsModel,
    /// Wide ResNet depth (6n + 4) and width: WRN-28-2 officially for CIFAR-10.
    pub depth: usize,
    pub widen: usize,
    /// ResNets only: suncet's `width_per_group` (64 in every released model; the stem has
    /// `width_per_group x widen` channels and a bottleneck `planes x width_per_group / 64`).
    pub width_per_group: usize,
    /// Output of the projection head.
    pub output_dim: usize,
    /// A 4x-bottleneck prediction head on top of the projection (off for CIFAR-10).
    pub use_pred_head: bool,
    // -- criterion
    /// Classes in each support batch (must divide the number of classes).
    pub classes_per_batch: usize,
    /// Labelled images of each class in a support batch.
    pub supervised_imgs_per_class: usize,
    /// Augmented views of each support image.
    pub supervised_views: usize,
    /// Unlabelled images per iteration (each gives 2 large views and `multicrop` small ones).
    pub unsupervised_batch_size: usize,
    /// Temperature of the soft nearest-neighbour classifier's cosine similarities.
    pub temperature: f64,
    /// Target sharpening temperature.
    pub sharpen: f64,
    /// Mean-entropy maximisation (me-max) regulariser.
    pub me_max: bool,
    // -- data
    /// Label smoothing of the support labels.
    pub label_smoothing: f64,
    /// Across ranks: each rank draws its own `classes_per_batch` classes for the support batch
    /// (all of their images), instead of every rank the same classes and its share of their
    /// images (off, as the CIFAR-10 config; the ImageNet config turns it on). The labels then
    /// span `classes_per_batch x ranks` classes.
    pub unique_classes_per_rank: bool,
    /// Small crops per unlabelled image.
    pub multicrop: usize,
    /// Strength s of the colour distortion (jitter 0.8s, 0.8s, 0.8s, 0.2s with p = 0.8).
    pub color_jitter_strength: f64,
    /// Side of the large views (32 for CIFAR-10) and of the small crops (18).
    pub crop_size: u32,
    pub multicrop_size: u32,
    /// Area ranges of the large views ((0.75, 1) with multi-crop) and of the small crops.
    pub crop_scale: (f64, f64),
    pub multicrop_scale: (f64, f64),
    /// Per-channel mean and std of the input normalisation (CIFAR-10's officially).
    pub normalize_mean: [f64; 3],
    pub normalize_std: [f64; 3],
    // -- optimization
    pub epochs: usize,
    /// Epochs of linear warm-up from `start_lr` to `lr`, then a cosine to `final_lr`.
    pub warmup: usize,
    pub start_lr: f64,
    pub lr: f64,
    pub final_lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
    /// Keep `checkpointNNNN.safetensors` every this many epochs (0: never).
    pub saveckp_freq: usize,
    /// Write the rolling checkpoint every this many iterations too (0: only per epoch).
    pub checkpoint_every: usize,
}

impl Default for PawsConfig {
    fn default() -> Self {
        Self {
            model_name: PawsModel::WideResnet,
            depth: 28,
            widen: 2,
            width_per_group: 64,
            output_dim: 128,
            use_pred_head: false,
            classes_per_batch: 10,
            supervised_imgs_per_class: 64,
            supervised_views: 2,
            unsupervised_batch_size: 256,
            temperature: 0.1,
            sharpen: 0.25,
            me_max: true,
            label_smoothing: 0.1,
            unique_classes_per_rank: false,
            multicrop: 6,
            color_jitter_strength: 0.5,
            crop_size: 32,
            multicrop_size: 18,
            crop_scale: (0.75, 1.0),
            multicrop_scale: (0.3, 0.75),
            normalize_mean: [0.4914, 0.4822, 0.4465],
            normalize_std: [0.2023, 0.1994, 0.2010],
            epochs: 600,
            warmup: 10,
            start_lr: 0.8,
            lr: 3.2,
            final_lr: 0.032,
            weight_decay: 1e-6,
            seed: 0,
            saveckp_freq: 50,
            checkpoint_every: 0,
        }
    }
}

impl PawsConfig {
    /// suncet's ImageNet recipe (`configs/paws/imgnt_train.yaml`, with the crop sizes and
    /// scales `paws_train.py` takes for ImageNet): ResNet-50, output 2048 with a prediction
    /// head, 15 classes x 7 images x 1 view of support, 64 unlabelled images, 224 px crops
    /// (scale 0.14-1) and six 96 px crops (0.05-0.14), colour jitter 1.0, ImageNet
    /// normalisation, 100 epochs of lr 0.3 -> 6.4 -> 0.064. The settings of every released
    /// PAWS model.
    pub fn imagenet() -> Self {
        Self {
            model_name: PawsModel::Resnet50,
            output_dim: 2048,
            use_pred_head: true,
            classes_per_batch: 15,
            supervised_imgs_per_class: 7,
            supervised_views: 1,
            unsupervised_batch_size: 64,
            unique_classes_per_rank: true,
            multicrop: 6,
            color_jitter_strength: 1.0,
            crop_size: 224,
            multicrop_size: 96,
            crop_scale: (0.14, 1.0),
            multicrop_scale: (0.05, 0.14),
            normalize_mean: [0.485, 0.456, 0.406],
            normalize_std: [0.229, 0.224, 0.225],
            epochs: 100,
            warmup: 10,
            start_lr: 0.3,
            lr: 6.4,
            final_lr: 0.064,
            ..Self::default()
        }
    }

    /// The encoder's shape (not yet validated).
    pub fn encoder(&self) -> Result<EncoderConfig> {
        let backbone = match self.model_name.resnet() {
            None => BackboneConfig::WideResNet(WideResNetConfig {
                depth: self.depth,
                widen: self.widen,
            }),
            Some(name) => {
                let mut c = ResNetConfig::named(name)?;
                let widen = c.stem_width / 64;
                c.stem_width = self.width_per_group * widen;
                c.base_width = self.width_per_group;
                BackboneConfig::ResNet(c)
            }
        };
        Ok(EncoderConfig {
            backbone,
            output_dim: self.output_dim,
            use_pred_head: self.use_pred_head,
        })
    }

    /// Support views per iteration (`supervised_views * classes_per_batch * imgs_per_class`).
    pub fn support_views(&self) -> usize {
        self.supervised_views * self.classes_per_batch * self.supervised_imgs_per_class
    }

    /// The loss's settings.
    pub fn loss(&self) -> super::PawsLoss {
        super::PawsLoss {
            multicrop: self.multicrop,
            tau: self.temperature,
            sharpen: self.sharpen,
            me_max: self.me_max,
        }
    }

    /// Reads a TOML file; fields it does not set keep their defaults.
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::default().merged(&crate::train::parse_table(text)?)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }

    /// Every field as a TOML table.
    pub fn to_table(&self) -> toml::Table {
        to_table(self)
    }

    /// This config with the fields of `overrides` replaced (unknown fields are errors).
    pub fn merged(&self, overrides: &toml::Table) -> Result<Self> {
        merge_table(self, overrides, "PAWS config")
    }

    /// The fields of `overrides` that differ from this config's (`field`, this, override).
    pub fn differences(&self, overrides: &toml::Table) -> Result<Vec<(String, String, String)>> {
        differences(self, overrides, "PAWS config")
    }

    /// Checks everything a run relies on before it starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("PAWS config: {m}")));
        self.encoder()?.validate()?;
        if self.epochs == 0 || self.unsupervised_batch_size == 0 {
            return bad("epochs and unsupervised_batch_size must be positive".into());
        }
        if self.classes_per_batch == 0
            || self.supervised_imgs_per_class == 0
            || self.supervised_views == 0
        {
            return bad(
                "a support batch needs classes, images per class and views (all >= 1)".into(),
            );
        }
        if self.warmup > self.epochs {
            return bad(format!(
                "warm-up of {} epochs is longer than the run ({} epochs)",
                self.warmup, self.epochs
            ));
        }
        if self.temperature <= 0.0 || self.sharpen <= 0.0 {
            return bad("temperature and sharpen must be positive".into());
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!(
                "label_smoothing {} is not in [0, 1)",
                self.label_smoothing
            ));
        }
        let scale_ok = |(a, b): (f64, f64)| a > 0.0 && a <= b && b <= 1.0;
        if !scale_ok(self.crop_scale) || !scale_ok(self.multicrop_scale) {
            return bad("crop scales must satisfy 0 < min <= max <= 1".into());
        }
        if self.crop_size < 4 || (self.multicrop > 0 && self.multicrop_size < 4) {
            return bad("crops must be at least 4 px".into());
        }
        if self.lr < 0.0 || self.start_lr < 0.0 || self.final_lr < 0.0 || self.weight_decay < 0.0 {
            return bad("learning rates and weight decay must be non-negative".into());
        }
        if self.normalize_std.iter().any(|s| *s <= 0.0) {
            return bad("normalize_std must be positive".into());
        }
        Ok(())
    }
}

/// suncet's `model_name` choices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum PawsModel {
    /// Wide ResNet of `depth` and `widen` (`wide_resnet28w2` officially, CIFAR-10).
    #[default]
    #[cfg_attr(feature = "cli", value(name = "wide_resnet"))]
    WideResnet,
    Resnet18,
    Resnet34,
    /// The ImageNet recipe's backbone (2048 features).
    Resnet50,
    Resnet50w2,
    Resnet50w4,
    Resnet101,
    Resnet101w2,
    Resnet152,
    Resnet200,
}

impl PawsModel {
    /// The ResNet's official name, `None` for the Wide ResNet.
    pub fn resnet(self) -> Option<&'static str> {
        Some(match self {
            Self::WideResnet => return None,
            Self::Resnet18 => "resnet18",
            Self::Resnet34 => "resnet34",
            Self::Resnet50 => "resnet50",
            Self::Resnet50w2 => "resnet50w2",
            Self::Resnet50w4 => "resnet50w4",
            Self::Resnet101 => "resnet101",
            Self::Resnet101w2 => "resnet101w2",
            Self::Resnet152 => "resnet152",
            Self::Resnet200 => "resnet200",
        })
    }
}
