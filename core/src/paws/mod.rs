//! PAWS (Assran et al., ICCV 2021, "Semi-Supervised Learning of Visual Features by
//! Non-Parametrically Predicting View Assignments with Support Samples"): DINO's companion
//! method, which learns from a few labelled images (the support set) and many unlabelled ones.
//! The official code (facebookresearch/suncet) is the spec: its loss, label matrix,
//! class-stratified sampler, encoder heads, LARS-wrapped SGD and warm-up cosine schedule, and
//! the SuNCEt fine-tuning that follows PAWS (`snn_fine_tune.py`).

pub mod config;
#[cfg(not(target_family = "wasm"))]
pub mod data;
pub mod encoder;
#[cfg(not(target_family = "wasm"))]
pub mod fine_tune;
#[cfg(not(target_family = "wasm"))]
pub mod labelled;
pub mod loss;
#[cfg(not(target_family = "wasm"))]
pub mod official;
#[cfg(not(target_family = "wasm"))]
mod run_file;
pub mod snn;
pub mod support;
#[cfg(not(target_family = "wasm"))]
pub mod trainer;

pub use config::{PawsConfig, PawsModel};
#[cfg(not(target_family = "wasm"))]
pub use data::{LabelledSet, PawsBatch, PawsBatches};
pub use encoder::{Backbone, BackboneConfig, EncoderConfig, EncoderOutput, PawsEncoder};
#[cfg(not(target_family = "wasm"))]
pub use fine_tune::{
    FineTuneBatches, FineTuneConfig, FineTuneStepStats, FineTuneTrainer, SupportBatch, suncet_loss,
};
#[cfg(not(target_family = "wasm"))]
pub use labelled::LabelledFiles;
pub use loss::{PawsLoss, PawsLossOutput};
#[cfg(not(target_family = "wasm"))]
pub use official::read_official_encoder;
pub use snn::{SnnResult, snn_evaluate, snn_probabilities};
pub use support::{ClassStratifiedSampler, labels_matrix};
#[cfg(not(target_family = "wasm"))]
pub use trainer::{
    PAWS_FORMAT, PawsStepStats, PawsTrainer, StepInternals, load_encoder, read_encoder_file,
};
