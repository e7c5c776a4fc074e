//! Official PAWS checkpoints (suncet's `paws_train.py` saves `{'encoder': ..., 'opt': ...,
//! 'epoch': ...}` as `paws-*.pth.tar`; the released ImageNet models are ResNet-50s) read as
//! PAWS encoders *with* their projection and prediction heads, so that `dino snn` evaluates a
//! released model as suncet's `snn_eval.py` does (`z = encoder(imgs)`: the prediction head's
//! output when there is one) and `dino paws-finetune` fine-tunes it as `snn_fine_tune.py` does.
//! The feature commands read the same files through [`crate::weights`], heads dropped.
//!
//! The checkpoint holds no settings: the backbone and the heads come from the tensors' shapes,
//! the data settings (crop sizes, normalisation, colour jitter) from the official ImageNet
//! recipe ([`PawsConfig::imagenet`]), the one every released PAWS model was trained with.

use super::config::{PawsConfig, PawsModel};
use super::encoder::{BackboneConfig, EncoderConfig};
use crate::model::resnet::ResNetConfig;
use crate::weights::{CheckpointKey, StateDict, read_pth_bytes};
use crate::{Error, Result};

/// The settings, shape and tensors (official keys: the backbone's at the top level, `fc.*`,
/// `pred.*`) of the encoder in an official PAWS checkpoint.
pub fn read_official_encoder(bytes: Vec<u8>) -> Result<(PawsConfig, EncoderConfig, StateDict)> {
    let bad = |m: String| Error::Weights(format!("official PAWS checkpoint: {m}"));
    // only `encoder.*` is read (the optimiser state is as large), its size bounded by the file
    let raw = read_pth_bytes(bytes, CheckpointKey::Teacher)?;
    if !raw.keys().any(|k| k.starts_with("encoder.")) {
        let dino = raw
            .keys()
            .any(|k| k.starts_with("teacher.") || k.starts_with("student."));
        let some: Vec<&str> = raw.keys().take(3).collect();
        return Err(Error::Weights(format!(
            "not a PAWS checkpoint: no 'encoder' network (paws_train.py saves the encoder \
             under 'encoder'); {}",
            if dino {
                "this is a DINO training checkpoint, which the feature commands (embed, knn, \
                 linear, ...) read"
                    .to_string()
            } else {
                format!("found tensors such as {some:?}")
            }
        )));
    }
    let mut sd = StateDict::new();
    for (k, t) in raw {
        if let Some(rest) = k.strip_prefix("encoder.") {
            // DistributedDataParallel's wrapper, as snn_eval.py's load_pretrained removes it
            sd.insert(rest.strip_prefix("module.").unwrap_or(rest), t);
        }
    }
    let resnet = ResNetConfig::detect(&sd).ok_or_else(|| {
        bad(
            "no ResNet backbone ('conv1.weight', 'layer1.0.conv1.weight'): the released \
                 PAWS models are ResNets; a Wide ResNet run of this project's `dino paws` \
                 writes encoder.safetensors"
                .into(),
        )
    })??;
    let features = resnet.features();
    let fc1 = sd
        .shape("fc.fc1.weight")
        .map_err(|_| bad("no projection head ('fc.fc1.weight')".into()))?;
    if fc1 != [features, features] {
        return Err(bad(format!(
            "projection head 'fc.fc1.weight' has shape {fc1:?}; this project builds it \
             [{features}, {features}] (hidden width = the backbone's {features} features, as \
             every released model)"
        )));
    }
    let fc3 = sd
        .shape("fc.fc3.weight")
        .map_err(|_| bad("no projection head output ('fc.fc3.weight')".into()))?;
    let output_dim = fc3[0];
    let use_pred_head = sd.contains("pred.fc1.weight");
    let shape = EncoderConfig {
        backbone: BackboneConfig::ResNet(resnet),
        output_dim,
        use_pred_head,
    };
    shape.validate().map_err(|e| bad(e.to_string()))?;
    let mut cfg = PawsConfig::imagenet();
    cfg.output_dim = output_dim;
    cfg.use_pred_head = use_pred_head;
    // the recipe's model name when the shapes are a named ResNet (settings shown to users)
    cfg.model_name = [
        PawsModel::Resnet18,
        PawsModel::Resnet34,
        PawsModel::Resnet50,
        PawsModel::Resnet50w2,
        PawsModel::Resnet50w4,
        PawsModel::Resnet101,
        PawsModel::Resnet101w2,
        PawsModel::Resnet152,
        PawsModel::Resnet200,
    ]
    .into_iter()
    .find(|m| {
        let mut named = PawsConfig::imagenet();
        named.model_name = *m;
        named.encoder().is_ok_and(|e| e.backbone == shape.backbone)
    })
    .unwrap_or(PawsModel::Resnet50);
    cfg.width_per_group = resnet.base_width;
    Ok((cfg, shape, sd))
}
