//! One file per subcommand.

pub mod attention;
pub mod cluster;
pub mod dedup;
pub mod embed;
pub mod export;
pub mod inspect;
pub mod knn;
pub mod linear;
pub mod paws;
pub mod paws_finetune;
pub mod pca;
pub mod propagate;
pub mod retrieve;
pub mod snn;
pub mod train;
pub mod video;
