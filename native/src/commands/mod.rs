//! One file per subcommand.

pub mod attention;
pub mod bench;
pub mod embed;
pub mod export;
pub mod inspect;
pub mod knn;
pub mod linear;
pub mod snapshots;
pub mod train;
