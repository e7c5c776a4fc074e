//! Where a GPU backend keeps its compiled kernels and autotune results, and how much it
//! autotunes. CubeCL (Burn's GPU compiler) compiles every kernel and, for matrix products and
//! reductions, times several variants per shape the first time it meets them: on a fresh
//! machine the first training step spends minutes there (200 s measured on an H200). It keeps
//! both in a database file so that later processes start in seconds: by default
//! `<workspace>/target/environment/` when run inside a Cargo workspace, otherwise the user cache
//! (`~/.cache/cubecl/` on Linux). `--kernel-cache DIR` puts it where a cluster's nodes can share
//! it or a container can ship it; `--autotune minimal` times fewer variants (a faster first run,
//! perhaps slower kernels). Both must be set before the first GPU tensor exists.

use std::path::{Path, PathBuf};

use clap::ValueEnum;

/// `--autotune`: how many kernel variants CubeCL times per new shape on GPU backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Autotune {
    /// Fewest variants: the shortest first run.
    Minimal,
    /// CubeCL's default.
    Balanced,
    /// More variants than the default.
    Extensive,
    /// Every variant: the longest first run.
    Full,
}

/// Sets the kernel cache directory and the autotune level for this process, if given; returns
/// the database file the GPU backends will use (None without GPU backends in this build).
/// Fails if the directory cannot be created or a GPU backend has already started.
pub fn configure(
    cache: Option<&Path>,
    autotune: Option<Autotune>,
) -> anyhow::Result<Option<PathBuf>> {
    if let Some(dir) = cache {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("--kernel-cache {}: cannot create it: {e}", dir.display())
        })?;
    }
    apply(cache, autotune)
}

#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal"))]
fn apply(cache: Option<&Path>, autotune: Option<Autotune>) -> anyhow::Result<Option<PathBuf>> {
    use burn::cubecl::config::autotune::AutotuneLevel;
    use burn::cubecl::config::cache::CacheConfig;
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    if cache.is_some() || autotune.is_some() {
        // what CubeCL would read itself (cubecl.toml, CUBECL_* variables), then the flags
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        if let Some(dir) = cache {
            let dir = std::path::absolute(dir)?;
            config.environment.path = CacheConfig::Directory(dir);
        }
        if let Some(level) = autotune {
            config.autotune.level = match level {
                Autotune::Minimal => AutotuneLevel::Minimal,
                Autotune::Balanced => AutotuneLevel::Balanced,
                Autotune::Extensive => AutotuneLevel::Extensive,
                Autotune::Full => AutotuneLevel::Full,
            };
        }
        if !CubeClRuntimeConfig::try_set(config) {
            anyhow::bail!("--kernel-cache / --autotune: a GPU backend has already started");
        }
    }
    // reading the configuration activates it (and its cache root)
    let _ = CubeClRuntimeConfig::get();
    Ok(Some(burn::cubecl::environment::path()))
}

#[cfg(not(any(feature = "wgpu", feature = "vulkan", feature = "metal")))]
fn apply(cache: Option<&Path>, autotune: Option<Autotune>) -> anyhow::Result<Option<PathBuf>> {
    if cache.is_some() || autotune.is_some() {
        eprintln!(
            "note: --kernel-cache and --autotune apply to GPU backends; this dino has none \
             (cargo features wgpu, vulkan, metal)"
        );
    }
    Ok(None)
}
