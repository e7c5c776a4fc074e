//! Evaluation of frozen features: weighted k-NN (`eval_knn.py`), the linear probe
//! (`eval_linear.py`), and a label-free check of a run (view retrieval).

mod knn;
mod linear;
#[cfg(not(target_family = "wasm"))]
mod view_retrieval;

pub use knn::{
    KnnAccuracy, KnnPrediction, LabelledFeatures, knn_classify, knn_predict, l2_normalize,
};
pub use linear::{LinearConfig, LinearProbe, ProbeAccuracy, train_linear};
#[cfg(not(target_family = "wasm"))]
pub use view_retrieval::{make_views, view_retrieval};
