//! DINO training: the projection head, the student/teacher network, the loss, the schedules,
//! the optimiser step and the teacher's EMA, each as in the official `main_dino.py`.

#[cfg(not(target_family = "wasm"))]
mod checkpoint;
pub mod collective;
pub mod config;
#[cfg(not(target_family = "wasm"))]
mod dino_run;
mod ema;
#[cfg(feature = "flex")]
mod fused_updates;
mod head;
mod loss;
#[cfg(not(target_family = "wasm"))]
pub mod loss_scale;
mod net;
mod optim;
#[cfg(not(target_family = "wasm"))]
pub mod run;
mod schedule;
mod sync_batch_norm;
#[cfg(not(target_family = "wasm"))]
mod trainer;

pub use crate::model::{AttentionKernel, Precision};
pub use config::{TrainConfig, parse_table};
pub use ema::ema_update;
pub use head::{DinoHead, HeadConfig};
pub use loss::DinoLoss;
pub use net::DinoNet;
pub use optim::{DinoOptimizer, OptimizerKind, ParamState, StepSettings, parameter_sizes};
pub use schedule::{
    CosineSchedule, TeacherTempSchedule, WarmupCosine, linspace, teacher_temp_schedule,
    warmup_cosine,
};
pub use sync_batch_norm::BatchSync;
#[cfg(not(target_family = "wasm"))]
pub(crate) use trainer::all_reduce_grads;
#[cfg(not(target_family = "wasm"))]
pub use trainer::{Schedules, StepStats, Trainer};
