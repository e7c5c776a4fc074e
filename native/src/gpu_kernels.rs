//! Where a GPU backend keeps its compiled kernels and autotune results, and how much it
//! autotunes. CubeCL (Burn's GPU compiler) compiles every kernel and, for matrix products and
//! reductions, times several variants per shape the first time it meets them: on a fresh
//! machine the first training step spends minutes there (200 s measured on an H200). It keeps
//! both in a database file so that later processes start in seconds: by default
//! `<workspace>/target/environment/` when run inside a Cargo workspace, otherwise the user cache
//! (`~/.cache/cubecl/` on Linux). `--kernel-cache DIR` puts it where a cluster's nodes can share
//! it or a container can ship it; `--autotune minimal` times fewer variants (a faster first run,
//! perhaps slower kernels). Both must be set before the first GPU tensor exists.

use std::path::Path;

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

/// Sets the kernel cache directory and the autotune level for this process, if given (nothing
/// is read or started otherwise). Fails if the directory cannot be created or a GPU backend
/// has already started.
pub fn configure(cache: Option<&Path>, autotune: Option<Autotune>) -> anyhow::Result<()> {
    if cache.is_none() && autotune.is_none() {
        return Ok(());
    }
    if let Some(dir) = cache {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("--kernel-cache {}: cannot create it: {e}", dir.display())
        })?;
    }
    apply(cache, autotune)
}

#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal"))]
fn apply(cache: Option<&Path>, autotune: Option<Autotune>) -> anyhow::Result<()> {
    use burn::cubecl::config::autotune::AutotuneLevel;
    use burn::cubecl::config::cache::CacheConfig;
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    // what CubeCL would read itself (cubecl.toml, CUBECL_* variables), then the flags
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    if let Some(dir) = cache {
        config.environment.path = CacheConfig::Directory(std::path::absolute(dir)?);
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
    Ok(())
}

#[cfg(not(any(feature = "wgpu", feature = "vulkan", feature = "metal")))]
fn apply(_cache: Option<&Path>, _autotune: Option<Autotune>) -> anyhow::Result<()> {
    eprintln!(
        "note: --kernel-cache and --autotune apply to GPU backends; this dino has none \
         (cargo features wgpu, vulkan, metal)"
    );
    Ok(())
}

/// Says once, with the first GPU device, where its kernels are cached and whether the first
/// use will compile and autotune them (a silent minute otherwise).
#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal"))]
pub fn announce() {
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // reading the configuration activates it, and with it the cache's folder
        let _ = CubeClRuntimeConfig::get();
        let db = burn::cubecl::environment::path();
        let state = match database_bytes(&db) {
            0 => "empty: the first use compiles and autotunes every kernel (minutes)".into(),
            b => format!("{:.1} MB cached", b as f64 / 1e6),
        };
        eprintln!(
            "GPU kernels: {} ({state}; --kernel-cache DIR, --autotune minimal)",
            db.display()
        );
    });
}

/// Bytes of the database `db` and its write-ahead log (`default.db`, `default.db-wal`, ...).
#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal"))]
fn database_bytes(db: &Path) -> u64 {
    let (Some(dir), Some(name)) = (db.parent(), db.file_name()) else {
        return 0;
    };
    let name = name.to_string_lossy();
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(name.as_ref()))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}
