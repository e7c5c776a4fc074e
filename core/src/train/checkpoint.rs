//! Training checkpoints: one safetensors file holding the student, the teacher (official
//! `MultiCropWrapper` keys, so `dino attention -w checkpoint.safetensors` reads the teacher),
//! the optimiser state, the loss center, and in its header the architecture, the training
//! config and the position in the run. Written atomically; a resumed run continues exactly.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::loss_scale::LossScale;
use super::{DinoNet, OptimizerKind, TrainConfig, Trainer, parameter_sizes};
use crate::weights::{OWN_FORMAT, RawTensor, StateDict, to_safetensors_bytes_with};
use crate::{Error, Result};

/// Header entry with the run's position and config.
const TRAIN_KEY: &str = "dino.train";

#[derive(Serialize, Deserialize)]
struct RunHeader {
    config: TrainConfig,
    iteration: usize,
    niter_per_epoch: usize,
    optimizer: OptimizerKind,
    optimizer_steps: BTreeMap<String, u64>,
    /// The f16 loss scale (absent in runs that never trained in f16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loss_scale: Option<LossScale>,
}

impl Trainer {
    /// The checkpoint as bytes.
    pub fn checkpoint_bytes(&self) -> Result<Vec<u8>> {
        let mut sd = StateDict::new();
        for (who, net) in [("student", self.student()), ("teacher", self.teacher())] {
            for (k, t) in net.to_state_dict()? {
                sd.insert(format!("{who}.{k}"), t);
            }
        }
        let steps = self.optimizer.save_state(&mut sd)?;
        sd.insert(
            "dino_loss.center",
            RawTensor::from_tensor(self.loss.center.clone())?,
        );
        let header = RunHeader {
            config: self.cfg.clone(),
            iteration: self.iteration,
            niter_per_epoch: self.niter_per_epoch,
            optimizer: self.optimizer.kind,
            optimizer_steps: steps,
            loss_scale: self.loss_scale,
        };
        let run = serde_json::to_string(&header).expect("serialises");
        to_safetensors_bytes_with(&sd, &self.cfg.vit()?, false, &[(TRAIN_KEY, run)])
    }

    /// Writes the checkpoint atomically.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        crate::atomic_write(path, &self.checkpoint_bytes()?)
    }

    /// Restores a run from checkpoint bytes onto `device`.
    pub fn from_checkpoint(bytes: &[u8], device: &Device) -> Result<Self> {
        let bad = |m: String| Error::Weights(format!("training checkpoint: {m}"));
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(OWN_FORMAT) {
            return Err(bad("not a dino-rs checkpoint".into()));
        }
        let header: RunHeader = serde_json::from_str(meta.get(TRAIN_KEY).ok_or_else(|| {
            bad("no training state (an exported model, not a checkpoint?)".into())
        })?)
        .map_err(|e| bad(format!("bad header: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let mut nets: HashMap<&str, StateDict> = HashMap::new();
        let mut optim: Vec<(String, RawTensor)> = Vec::new();
        let mut center = None;
        for (name, view) in st.tensors() {
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            let t = RawTensor::new(view.shape().to_vec(), data)?;
            if let Some(rest) = name.strip_prefix("student.") {
                nets.entry("student").or_default().insert(rest, t);
            } else if let Some(rest) = name.strip_prefix("teacher.") {
                nets.entry("teacher").or_default().insert(rest, t);
            } else if name.starts_with("optimizer.") {
                optim.push((name.to_string(), t));
            } else if name == "dino_loss.center" {
                center = Some(t);
            } else {
                return Err(bad(format!("unexpected tensor '{name}'")));
            }
        }
        let cfg = header.config;
        let (vit, head) = (cfg.vit()?, cfg.head());
        let ad = cfg.student_device(device);
        let mut take = |who: &str, dev: &Device| -> Result<DinoNet> {
            let sd = nets
                .remove(who)
                .ok_or_else(|| bad(format!("no {who} network")))?;
            DinoNet::from_state_dict(&vit, &head, sd, dev)
        };
        let student = take("student", &ad)?;
        let teacher = take("teacher", device)?;
        let mut trainer =
            Trainer::from_parts(cfg, student, Some(teacher), header.niter_per_epoch, device)?;
        trainer.iteration = header.iteration;
        // the saved scale, else the fresh one an f16 run starts with
        trainer.loss_scale = header.loss_scale.or(trainer.loss_scale);
        trainer.optimizer.kind = header.optimizer;
        let sizes = parameter_sizes(trainer.student());
        trainer
            .optimizer
            .load_state(&sizes, optim, &header.optimizer_steps, device)?;
        let c = center.ok_or_else(|| bad("no dino_loss.center".into()))?;
        if c.shape != [1, trainer.cfg.out_dim] {
            return Err(bad(format!("center has shape {:?}", c.shape)));
        }
        trainer.loss.center = Tensor::from_data(TensorData::new(c.data, c.shape), device);
        Ok(trainer)
    }

    /// Restores a run from a checkpoint file.
    pub fn load(path: &std::path::Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_checkpoint(&bytes, device)
            .map_err(|e| Error::Weights(format!("{}: {e}", path.display())))
    }
}
