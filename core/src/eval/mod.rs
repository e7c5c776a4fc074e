//! Evaluation of features: weighted k-NN (`eval_knn.py`).

mod knn;

pub use knn::{KnnAccuracy, LabelledFeatures, knn_classify, l2_normalize};
