//! The student's optimiser step exactly as `main_dino.py` performs it: per-tensor gradient
//! clipping (`utils.clip_gradients`), cancelled last-layer gradients during
//! `freeze_last_layer` (the parameter is then skipped entirely, as PyTorch skips a `None`
//! grad), and AdamW / SGD / LARS with the scheduled learning rate and a scheduled weight
//! decay on all parameters but biases and 1-D ones (`utils.get_params_groups`).
//!
//! Burn's optimisers fix the weight decay at construction; this one takes both rates per
//! step and keys its state by parameter path, so checkpoints can store it by name.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::model::params::ModulePath;
use crate::weights::{RawTensor, StateDict};
use crate::{Error, Result};

/// Which update rule (`--optimizer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// `torch.optim.AdamW` (betas 0.9/0.999, eps 1e-8): recommended for ViTs.
    #[default]
    #[cfg_attr(feature = "cli", value(name = "adamw"))]
    AdamW,
    /// `torch.optim.SGD(momentum=0.9)` with coupled weight decay.
    Sgd,
    /// `utils.LARS` (momentum 0.9, eta 0.001), for large batches.
    Lars,
    /// PAWS's optimiser (suncet `src/lars.py` around `src/sgd.py`): LARS with trust 0.001 on
    /// all parameters but biases and BatchNorms, which also have no weight decay; SGD with
    /// momentum 0.9 on learning-rate-scaled steps. Not a DINO choice.
    #[serde(rename = "paws_lars")]
    #[cfg_attr(feature = "cli", value(skip))]
    PawsLars,
    /// suncet's `src/sgd.py` alone (fine-tuning with `use_lars: false`): momentum 0.9 on
    /// learning-rate-scaled steps, weight decay on all but biases and BatchNorms.
    #[serde(rename = "paws_sgd")]
    #[cfg_attr(feature = "cli", value(skip))]
    PawsSgd,
}

impl std::str::FromStr for OptimizerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "adamw" => Ok(Self::AdamW),
            "sgd" => Ok(Self::Sgd),
            "lars" => Ok(Self::Lars),
            "paws_lars" => Ok(Self::PawsLars),
            "paws_sgd" => Ok(Self::PawsSgd),
            o => Err(Error::Config(format!(
                "optimizer '{o}': expected adamw, sgd or lars"
            ))),
        }
    }
}

/// Rates and switches of one step.
#[derive(Clone, Copy, Debug)]
pub struct StepSettings {
    pub lr: f64,
    /// Weight decay of the regularised group.
    pub weight_decay: f64,
    /// Per-tensor gradient-norm limit; 0 disables clipping.
    pub clip_grad: f64,
    /// Skip the head's last layer (first `freeze_last_layer` epochs).
    pub freeze_last_layer: bool,
}

/// Per-parameter state: step count and buffers (AdamW: exp_avg, exp_avg_sq; SGD/LARS: momentum).
#[derive(Clone, Debug)]
pub struct ParamState {
    pub step: u64,
    pub buffers: Vec<Tensor<1>>,
}

/// The optimiser and its state, keyed by parameter path (e.g. `backbone.blocks.0.attn.qkv.weight`).
#[derive(Clone, Debug)]
pub struct DinoOptimizer {
    pub kind: OptimizerKind,
    pub states: BTreeMap<String, ParamState>,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;
const MOMENTUM: f64 = 0.9;
const LARS_ETA: f64 = 0.001;
/// suncet's `LARS(trust_coefficient=0.001)` and its eps.
const PAWS_TRUST: f64 = 0.001;
const PAWS_EPS: f64 = 1e-8;

impl DinoOptimizer {
    pub fn new(kind: OptimizerKind) -> Self {
        Self {
            kind,
            states: BTreeMap::new(),
        }
    }

    /// Writes the state into `sd` as `optimizer.{parameter path}.{buffer index}` tensors;
    /// returns each parameter's step count (for the checkpoint's header).
    pub fn save_state(&self, sd: &mut StateDict) -> Result<BTreeMap<String, u64>> {
        let mut steps = BTreeMap::new();
        for (name, state) in &self.states {
            steps.insert(name.clone(), state.step);
            for (i, buf) in state.buffers.iter().enumerate() {
                sd.insert(
                    format!("optimizer.{name}.{i}"),
                    RawTensor::from_tensor(buf.clone())?,
                );
            }
        }
        Ok(steps)
    }

    /// Restores what [`Self::save_state`] wrote: `tensors` are the `optimizer.*` ones, `steps`
    /// the step counts, buffers placed on `device`.
    ///
    /// Every buffer must belong to a parameter of the network being optimised (`sizes`, from
    /// [`parameter_sizes`]), with
    /// one value per element and as many buffers as this optimiser keeps: a checkpoint whose
    /// state disagrees is refused here rather than failing (or broadcasting) in a step.
    pub fn load_state(
        &mut self,
        sizes: &BTreeMap<String, usize>,
        tensors: impl IntoIterator<Item = (String, RawTensor)>,
        steps: &BTreeMap<String, u64>,
        device: &Device,
    ) -> Result<()> {
        let bad = |m: String| Error::Weights(format!("optimiser state: {m}"));
        let per_param = match self.kind {
            OptimizerKind::AdamW => 2,
            OptimizerKind::Sgd
            | OptimizerKind::Lars
            | OptimizerKind::PawsLars
            | OptimizerKind::PawsSgd => 1,
        };
        let mut by_param: BTreeMap<String, Vec<(usize, RawTensor)>> = BTreeMap::new();
        for (key, t) in tensors {
            let (name, i) = key
                .strip_prefix("optimizer.")
                .and_then(|rest| rest.rsplit_once('.'))
                .and_then(|(n, i)| Some((n.to_string(), i.parse::<usize>().ok()?)))
                .ok_or_else(|| bad(format!("unexpected tensor '{key}'")))?;
            by_param.entry(name).or_default().push((i, t));
        }
        for (name, mut bufs) in by_param {
            let size = *sizes
                .get(&name)
                .ok_or_else(|| bad(format!("'{name}' is not a parameter of the network")))?;
            bufs.sort_by_key(|(i, _)| *i);
            let indices: Vec<usize> = bufs.iter().map(|(i, _)| *i).collect();
            if indices != (0..per_param).collect::<Vec<_>>() {
                return Err(bad(format!(
                    "'{name}' has buffers {indices:?}, {:?} keeps {per_param}",
                    self.kind
                )));
            }
            if let Some((i, t)) = bufs.iter().find(|(_, t)| t.shape != [size]) {
                return Err(bad(format!(
                    "buffer {i} of '{name}' has shape {:?}, the parameter has {size} values",
                    t.shape
                )));
            }
            let step = *steps
                .get(&name)
                .ok_or_else(|| bad(format!("no step count for '{name}'")))?;
            let buffers = bufs
                .into_iter()
                .map(|(_, t)| Tensor::from_data(TensorData::new(t.data, t.shape), device))
                .collect();
            self.states.insert(name, ParamState { step, buffers });
        }
        Ok(())
    }

    /// Updates every parameter of `module` that has a gradient in `grads`.
    pub fn step<M: Module>(&mut self, module: M, grads: GradientsParams, s: StepSettings) -> M {
        let mut mapper = Step {
            opt: self,
            grads,
            path: ModulePath::default(),
            s,
        };
        module.map(&mut mapper)
    }

    fn update(
        &mut self,
        name: &str,
        rank: usize,
        p: Tensor<1>,
        g: Tensor<1>,
        s: &StepSettings,
    ) -> Tensor<1> {
        let regularised = !(name.ends_with(".bias") || rank == 1);
        let wd = if regularised { s.weight_decay } else { 0.0 };
        let lr = s.lr;
        let state = self
            .states
            .entry(name.to_string())
            .or_insert_with(|| ParamState {
                step: 0,
                buffers: Vec::new(),
            });
        state.step += 1;
        #[cfg(feature = "flex")]
        if self.kind == OptimizerKind::AdamW {
            let h = super::fused_updates::AdamW {
                lr,
                weight_decay: wd,
                clip_grad: s.clip_grad,
                beta1: BETA1,
                beta2: BETA2,
                eps: EPS,
                step: state.step,
            };
            let moments = match &state.buffers[..] {
                [m, v] => Some((m, v)),
                _ => None,
            };
            if super::fused_updates::adamw_applies(&p, &g, moments) {
                let mut buffers = std::mem::take(&mut state.buffers).into_iter();
                let moments = buffers.next().zip(buffers.next());
                let (p, m, v) = super::fused_updates::adamw_step(p, &g, moments, &h);
                state.buffers = vec![m, v];
                return p;
            }
        }
        let mut g = g;
        if s.clip_grad > 0.0 {
            // clip_coef = clip / (||g|| + 1e-6), applied when < 1 (utils.clip_gradients)
            let norm = g.clone().powf_scalar(2.0).sum().sqrt();
            let coef = (norm + 1e-6).recip().mul_scalar(s.clip_grad).clamp_max(1.0);
            g = g * coef;
        }
        match self.kind {
            OptimizerKind::AdamW => {
                let p = p * (1.0 - lr * wd);
                if state.buffers.is_empty() {
                    state.buffers = vec![g.zeros_like(), g.zeros_like()];
                }
                let m = state.buffers[0].clone() * BETA1 + g.clone() * (1.0 - BETA1);
                let v = state.buffers[1].clone() * BETA2 + g.clone() * g * (1.0 - BETA2);
                let t = state.step as i32;
                let bc1 = 1.0 - BETA1.powi(t);
                let bc2 = 1.0 - BETA2.powi(t);
                let denom = v.clone().sqrt() / bc2.sqrt() + EPS;
                let p = p - m.clone() / denom * (lr / bc1);
                state.buffers = vec![m, v];
                p
            }
            OptimizerKind::Sgd => {
                let d = if wd != 0.0 { g + p.clone() * wd } else { g };
                let buf = match state.buffers.pop() {
                    Some(b) => b * MOMENTUM + d,
                    None => d,
                };
                state.buffers = vec![buf.clone()];
                p - buf * lr
            }
            OptimizerKind::Lars => {
                let mut d = g;
                if rank != 1 {
                    d = d + p.clone() * s.weight_decay;
                    let pn = p.clone().powf_scalar(2.0).sum().sqrt();
                    let un = d.clone().powf_scalar(2.0).sum().sqrt();
                    // q = eta * |p| / |d| where both are positive, else 1
                    let ok = pn
                        .clone()
                        .greater_elem(0.0)
                        .bool_and(un.clone().greater_elem(0.0));
                    let q = (pn * LARS_ETA / un.clamp_min(1e-30)).mask_fill(ok.bool_not(), 1.0);
                    d = d * q;
                }
                let mu = match state.buffers.pop() {
                    Some(b) => b * MOMENTUM + d,
                    None => d,
                };
                state.buffers = vec![mu.clone()];
                p - mu * lr
            }
            OptimizerKind::PawsSgd => {
                // the same param groups: 'bias' or 'bn' in the name have no weight decay
                let excluded = name.contains("bias") || name.contains("bn");
                let d = if excluded || s.weight_decay == 0.0 {
                    g
                } else {
                    g + p.clone() * s.weight_decay
                };
                let step = d * (-lr);
                let buf = match state.buffers.pop() {
                    Some(b) => b * MOMENTUM + step,
                    None => step,
                };
                state.buffers = vec![buf.clone()];
                p + buf
            }
            OptimizerKind::PawsLars => {
                // param groups by name, as `init_opt`: 'bias' or 'bn' in the name
                let excluded = name.contains("bias") || name.contains("bn");
                let d = if excluded {
                    g
                } else {
                    let wd = s.weight_decay;
                    let pn = p.clone().powf_scalar(2.0).sum().sqrt();
                    let gn = g.clone().powf_scalar(2.0).sum().sqrt();
                    // adaptive = trust |p| / (|g| + |p| wd + eps), applied (with the decay)
                    // only where both norms are non-zero
                    let ok = pn
                        .clone()
                        .greater_elem(0.0)
                        .bool_and(gn.clone().greater_elem(0.0))
                        .float();
                    let adaptive = pn.clone() * PAWS_TRUST / (gn + pn * wd + PAWS_EPS);
                    let factor = adaptive * ok.clone() + (ok.clone().neg() + 1.0);
                    (g + p.clone() * wd * ok) * factor
                };
                // suncet's SGD: the momentum buffer accumulates -lr * d
                let step = d * (-lr);
                let buf = match state.buffers.pop() {
                    Some(b) => b * MOMENTUM + step,
                    None => step,
                };
                state.buffers = vec![buf.clone()];
                p + buf
            }
        }
    }
}

/// Each parameter's number of values, under the names [`DinoOptimizer`] keeps its state by.
pub fn parameter_sizes<M: Module>(module: &M) -> BTreeMap<String, usize> {
    struct Sizes {
        path: ModulePath,
        sizes: BTreeMap<String, usize>,
    }
    impl ModuleVisitor for Sizes {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.sizes
                .insert(self.path.key(), param.val().shape().num_elements());
        }
    }
    let mut v = Sizes {
        path: ModulePath::default(),
        sizes: BTreeMap::new(),
    };
    module.visit(&mut v);
    v.sizes
}

struct Step<'a> {
    opt: &'a mut DinoOptimizer,
    grads: GradientsParams,
    path: ModulePath,
    s: StepSettings,
}

impl ModuleMapper for Step<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let name = self.path.key();
        if self.s.freeze_last_layer && name.contains("last_layer") {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let shape = tensor.shape();
        let n = shape.num_elements();
        let g = grad.inner().reshape([n]);
        let require_grad = tensor.is_require_grad();
        let checkpointing = tensor.gradient_checkpointing_strategy();
        let p = tensor.inner().reshape([n]);
        let updated = self.opt.update(&name, D, p, g, &self.s).reshape(shape);
        let mut updated = Tensor::from_inner(updated);
        if let Some(strategy) = checkpointing {
            updated = updated.with_gradient_checkpointing_strategy(strategy);
        }
        if require_grad {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}
