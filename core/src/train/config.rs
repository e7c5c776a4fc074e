//! Every setting of a training run, with the defaults of `main_dino.py`. Serialised into
//! checkpoints and loadable from TOML (`dino train --config run.toml`).

use serde::{Deserialize, Serialize};

use super::{HeadConfig, OptimizerKind};
use crate::augment::MultiCropConfig;
use crate::model::{AttentionKernel, Precision};
use crate::{Error, Result, VitConfig};

/// `main_dino.py`'s arguments (names kept), plus the head and crop sizes it hard-codes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// vit_tiny, vit_small or vit_base.
    pub arch: String,
    pub patch_size: usize,
    /// Custom sizes overriding the preset (small data: e.g. 128 dims, 6 blocks, 4 heads).
    pub embed_dim: Option<usize>,
    pub depth: Option<usize>,
    pub num_heads: Option<usize>,
    pub out_dim: usize,
    pub norm_last_layer: bool,
    /// BatchNorm in the head's MLP (both networks use batch statistics, as officially;
    /// over the whole batch when it is split over devices or ranks: SyncBatchNorm).
    pub use_bn_in_head: bool,
    pub momentum_teacher: f64,
    pub warmup_teacher_temp: f64,
    pub teacher_temp: f64,
    pub warmup_teacher_temp_epochs: usize,
    pub weight_decay: f64,
    pub weight_decay_end: f64,
    pub clip_grad: f64,
    /// Images per iteration over all devices (official: `batch_size_per_gpu` x GPUs).
    pub batch_size: usize,
    pub epochs: usize,
    pub freeze_last_layer: usize,
    /// Peak learning rate for a batch of 256 (scaled linearly with the batch size).
    pub lr: f64,
    pub warmup_epochs: usize,
    pub min_lr: f64,
    pub optimizer: OptimizerKind,
    pub drop_path_rate: f64,
    pub global_crops_scale: (f64, f64),
    pub local_crops_number: usize,
    pub local_crops_scale: (f64, f64),
    /// Side of the global crops (224 officially).
    pub global_crop_size: u32,
    /// Side of the local crops (96 officially).
    pub local_crop_size: u32,
    /// Gaussian blur radius range in pixels (hard-coded (0.1, 2.0) officially, for 224 px).
    pub blur_radius: (f64, f64),
    /// Hidden width and bottleneck of the head (2048 / 256 officially).
    pub head_hidden_dim: usize,
    pub head_bottleneck_dim: usize,
    pub head_layers: usize,
    pub seed: u64,
    /// Also keep `checkpointNNNN.safetensors` every this many epochs (0: never).
    pub saveckp_freq: usize,
    /// Write the rolling checkpoint every this many iterations too (0: only per epoch).
    pub checkpoint_every: usize,
    /// Passes over the images per epoch.
    pub dataset_repeats: usize,
    /// Recompute activations in the backward pass instead of keeping them (less memory,
    /// more compute: Burn's autodiff checkpointing).
    pub gradient_checkpointing: bool,
    /// Precision of the matrix products (mixed precision, the official `--use_fp16`):
    /// parameters, optimiser state and checkpoints stay f32 whatever it is, so a run may
    /// resume in another precision.
    pub precision: Precision,
    /// Which kernels compute the attention core on a GPU (`--attention-kernel`): the results
    /// are the same either way, so a run may resume with the other.
    pub attention_kernel: AttentionKernel,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            arch: "vit_small".into(),
            patch_size: 16,
            embed_dim: None,
            depth: None,
            num_heads: None,
            out_dim: 65536,
            norm_last_layer: true,
            use_bn_in_head: false,
            momentum_teacher: 0.996,
            warmup_teacher_temp: 0.04,
            teacher_temp: 0.04,
            warmup_teacher_temp_epochs: 0,
            weight_decay: 0.04,
            weight_decay_end: 0.4,
            clip_grad: 3.0,
            batch_size: 64,
            epochs: 100,
            freeze_last_layer: 1,
            lr: 0.0005,
            warmup_epochs: 10,
            min_lr: 1e-6,
            optimizer: OptimizerKind::AdamW,
            drop_path_rate: 0.1,
            global_crops_scale: (0.4, 1.0),
            local_crops_number: 8,
            local_crops_scale: (0.05, 0.4),
            global_crop_size: 224,
            local_crop_size: 96,
            blur_radius: (0.1, 2.0),
            head_hidden_dim: 2048,
            head_bottleneck_dim: 256,
            head_layers: 3,
            seed: 0,
            saveckp_freq: 20,
            checkpoint_every: 0,
            dataset_repeats: 1,
            gradient_checkpointing: false,
            precision: Precision::F32,
            attention_kernel: AttentionKernel::Composed,
        }
    }
}

impl TrainConfig {
    /// The small run `dino train` does on its built-in photos: a few minutes on a laptop CPU.
    /// On 19 images the official recipe's targets go flat once the head's last layer trains
    /// (the loss climbs back towards log K after epoch 5); the demo keeps that layer at its
    /// random initialisation for the whole run, sharpens the teacher more (0.02) and uses
    /// K = 256, so that the loss falls and stays down (4.4 -> 2.0 by epoch 5, 2.6 at the end,
    /// measured on 2 cores; README).
    pub fn demo() -> Self {
        Self {
            arch: "vit_tiny".into(),
            patch_size: 16,
            out_dim: 256,
            freeze_last_layer: 20,
            warmup_teacher_temp: 0.02,
            teacher_temp: 0.02,
            batch_size: 8,
            epochs: 20,
            warmup_epochs: 2,
            // for a batch of 256, as `lr`: 1.6e-4 at this batch of 8
            lr: 0.005,
            min_lr: 1e-5,
            global_crop_size: 96,
            local_crop_size: 48,
            local_crops_number: 4,
            head_hidden_dim: 512,
            head_bottleneck_dim: 128,
            dataset_repeats: 4,
            saveckp_freq: 0,
            momentum_teacher: 0.99,
            ..Self::default()
        }
    }

    /// The small-data recipe: the official one with the changes that let a few thousand
    /// images and minutes to an hour of CPU learn (BENCHMARKS.md, "Small data"): 256
    /// prototypes instead of 65,536, a teacher sharpened at temperature 0.02 from the start
    /// and moving faster (momentum 0.99), lr 0.002 (for a batch of 256), and the last layer
    /// frozen for the whole run (set `freeze_last_layer` to `epochs` after merging: the
    /// prototypes stay at their random initialisation; trained on little data they collapse
    /// the targets to uniform).
    pub fn small_data() -> Self {
        Self {
            out_dim: 256,
            warmup_teacher_temp: 0.02,
            teacher_temp: 0.02,
            momentum_teacher: 0.99,
            lr: 0.002,
            ..Self::default()
        }
    }

    /// The fields in which [`Self::small_data`] differs from the official recipe, as
    /// `name value` pairs (for the message that says a run uses it).
    pub fn small_data_changes() -> String {
        let (s, o) = (Self::small_data(), Self::default());
        let mut out = vec![];
        let (st, ot) = (to_table(&s), to_table(&o));
        for (k, v) in &st {
            if ot.get(k) != Some(v) {
                out.push(format!("{k} {v}"));
            }
        }
        out.push("freeze_last_layer = epochs".into());
        out.join(", ")
    }

    /// Reads a TOML file; fields it does not set keep their defaults.
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::default().merged(&parse_table(text)?)
    }

    /// This config with the fields of `overrides` (a TOML table: a `--config` file, flags)
    /// replaced; an unknown field or a value of the wrong type is an error naming it.
    pub fn merged(&self, overrides: &toml::Table) -> Result<Self> {
        merge_table(self, overrides, "training config")
    }

    /// The fields of `overrides` whose value differs from this config's (see [`differences`]).
    pub fn differences(&self, overrides: &toml::Table) -> Result<Vec<(String, String, String)>> {
        differences(self, overrides, "training config")
    }

    /// Every field as a TOML table (unset optional fields left out).
    pub fn to_table(&self) -> toml::Table {
        to_table(self)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }

    pub fn vit(&self) -> Result<VitConfig> {
        let mut v = VitConfig::preset(&self.arch, self.patch_size)?;
        if let Some(d) = self.embed_dim {
            v.dim = d;
            v.mlp_hidden = 4 * d;
            v.heads = self.num_heads.unwrap_or((d / 64).max(1));
        }
        if let Some(h) = self.num_heads {
            v.heads = h;
        }
        if let Some(n) = self.depth {
            v.depth = n;
        }
        v.drop_path_rate = self.drop_path_rate;
        v.pos_grid = (self.global_crop_size as usize / self.patch_size).max(1);
        Ok(v)
    }

    /// The autodiff device the student trains on.
    pub fn student_device(&self, device: &burn::tensor::Device) -> burn::tensor::Device {
        let ad = device.clone().autodiff();
        if self.gradient_checkpointing {
            ad.gradient_checkpointing()
        } else {
            ad
        }
    }

    pub fn head(&self) -> HeadConfig {
        HeadConfig {
            out_dim: self.out_dim,
            hidden_dim: self.head_hidden_dim,
            bottleneck_dim: self.head_bottleneck_dim,
            nlayers: self.head_layers,
            norm_last_layer: self.norm_last_layer,
            use_bn: self.use_bn_in_head,
        }
    }

    pub fn crops(&self) -> MultiCropConfig {
        MultiCropConfig {
            global_size: self.global_crop_size,
            local_size: self.local_crop_size,
            global_scale: self.global_crops_scale,
            local_scale: self.local_crops_scale,
            local_crops: self.local_crops_number,
            blur_radius: self.blur_radius,
        }
    }

    /// Checks everything a run relies on before it starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("training config: {m}")));
        self.vit()?.validate()?;
        self.head().validate()?;
        self.crops().validate()?;
        if self.epochs == 0 || self.batch_size == 0 {
            return bad("epochs and batch_size must be positive".into());
        }
        if self.warmup_epochs > self.epochs || self.warmup_teacher_temp_epochs > self.epochs {
            return bad(format!(
                "warm-up ({} epochs, teacher temperature {}) longer than the run ({} epochs)",
                self.warmup_epochs, self.warmup_teacher_temp_epochs, self.epochs
            ));
        }
        if !(0.0..=1.0).contains(&self.momentum_teacher) {
            return bad(format!(
                "momentum_teacher {} is not in [0, 1]",
                self.momentum_teacher
            ));
        }
        if self.teacher_temp <= 0.0 || self.warmup_teacher_temp <= 0.0 || self.lr < 0.0 {
            return bad("temperatures must be positive and lr non-negative".into());
        }
        if self.global_crop_size < self.patch_size as u32
            || self.local_crop_size < self.patch_size as u32
        {
            return bad(format!(
                "crops of {} / {} px are smaller than one {}-px patch",
                self.global_crop_size, self.local_crop_size, self.patch_size
            ));
        }
        if matches!(
            self.optimizer,
            OptimizerKind::PawsLars | OptimizerKind::PawsSgd
        ) {
            return bad("the paws_* optimisers are PAWS's; DINO takes adamw, sgd or lars".into());
        }
        if self.dataset_repeats == 0 {
            return bad("dataset_repeats must be at least 1".into());
        }
        Ok(())
    }
}

/// A TOML document as a table (a `--config` file).
pub fn parse_table(text: &str) -> Result<toml::Table> {
    text.parse::<toml::Table>()
        .map_err(|e| Error::Config(format!("training config: {}", e.message())))
}

/// A config (any serialisable struct) as a TOML table.
pub fn to_table(config: &impl Serialize) -> toml::Table {
    match toml::Value::try_from(config).expect("config serialises") {
        toml::Value::Table(t) => t,
        _ => unreachable!("a struct serialises to a table"),
    }
}

/// `config` with the fields of `overrides` replaced, read back through the type (so unknown
/// fields and wrong types are errors naming them, under `what`).
pub fn merge_table<T: Serialize + serde::de::DeserializeOwned>(
    config: &T,
    overrides: &toml::Table,
    what: &str,
) -> Result<T> {
    let mut table = to_table(config);
    for (k, v) in overrides {
        table.insert(k.clone(), v.clone());
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| Error::Config(format!("{what}: {}", e.message())))
}

/// The fields of `overrides` whose value differs from `config`'s, with both values (`field`,
/// the config's value, the override's), in field order; values are compared after reading the
/// overrides through the type (so `lr = 1` equals `lr = 1.0`).
pub fn differences<T: Serialize + serde::de::DeserializeOwned>(
    config: &T,
    overrides: &toml::Table,
    what: &str,
) -> Result<Vec<(String, String, String)>> {
    let mine = to_table(config);
    let theirs = to_table(&merge_table(config, overrides, what)?);
    let show = |v: Option<&toml::Value>| v.map_or("(unset)".to_string(), |v| v.to_string());
    Ok(overrides
        .keys()
        .filter(|k| mine.get(*k) != theirs.get(*k))
        .map(|k| (k.clone(), show(mine.get(k)), show(theirs.get(k))))
        .collect())
}
