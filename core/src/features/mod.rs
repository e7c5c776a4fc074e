//! What DINO features are used for beyond classification: copy-detection descriptors,
//! PCA whitening, similarity search, duplicate groups, clustering and its scores, label
//! propagation between video frames and its DAVIS scores. Plain host arrays (`[N, D]`
//! row-major `f32`), so every backend and the browser share them.

pub mod davis;
pub mod descriptor;
pub mod groups;
pub mod kmeans;
pub mod metrics;
pub mod pca;
pub mod propagate;
pub mod search;

pub use crate::eval::l2_normalize;
