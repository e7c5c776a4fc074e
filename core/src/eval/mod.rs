//! Evaluation of frozen features: weighted k-NN (`eval_knn.py`) and the linear probe
//! (`eval_linear.py`).

mod knn;
mod linear;

pub use knn::{KnnAccuracy, LabelledFeatures, knn_classify, l2_normalize};
pub use linear::{LinearConfig, LinearProbe, ProbeAccuracy, train_linear};
