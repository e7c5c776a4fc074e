//! Where a GPU backend keeps its compiled kernels and autotune results, and how much it
//! autotunes. CubeCL (Burn's GPU compiler) compiles every kernel and, for matrix products and
//! reductions, times several variants per shape the first time it meets them: on a fresh
//! machine the first training step spends minutes there (200 s measured on an H200). It keeps
//! both in a database file so that later processes start in seconds: by default
//! `<workspace>/target/environment/` when run inside a Cargo workspace, otherwise the user cache
//! (`~/.cache/cubecl/` on Linux). `--kernel-cache DIR` puts it where a cluster's nodes can share
//! it or a container can ship it; `--autotune minimal` times fewer variants (a faster first run,
//! perhaps slower kernels). `--profile-kernels FILE` has CubeCL time every kernel and write a
//! table per synchronisation (name, count, total time, share): where a training step's time
//! goes on the GPU. All must be set before the first GPU tensor exists.

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

/// The GPU kernel settings of a process (the global flags of `dino` and `dino-bench`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KernelFlags {
    /// GPU backends: the folder for compiled kernels and autotune results, reused by later
    /// runs (default: `target/environment/` inside a Cargo workspace, else `~/.cache/cubecl/`).
    /// Share it between nodes or ship it in a container to skip the first run's compilation.
    #[arg(long, global = true, value_name = "DIR")]
    pub kernel_cache: Option<std::path::PathBuf>,
    /// GPU backends: how many kernel variants to time per new shape (default: balanced;
    /// minimal makes the first run shorter, perhaps with slower kernels).
    #[arg(long, global = true, value_enum)]
    pub autotune: Option<Autotune>,
    /// GPU backends: time every kernel (each waits for the previous one: slower) and write a
    /// table of them per synchronisation (name, launches, total time, share) to this file.
    #[arg(long, global = true, value_name = "FILE")]
    pub profile_kernels: Option<std::path::PathBuf>,
}

/// Applies `flags` to this process, and in a build with a GPU backend has CubeCL report what it
/// compiles and autotunes to the kernel line ([`crate::kernel_progress`]); nothing is started.
/// Fails if the cache directory cannot be created or a GPU backend has already started.
pub fn configure(flags: &KernelFlags) -> anyhow::Result<()> {
    if let Some(dir) = &flags.kernel_cache {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("--kernel-cache {}: cannot create it: {e}", dir.display())
        })?;
    }
    if let Some(file) = &flags.profile_kernels {
        // made (empty) now, so that a path that cannot be written fails before any work
        std::fs::write(file, b"").map_err(|e| {
            anyhow::anyhow!("--profile-kernels {}: cannot write it: {e}", file.display())
        })?;
    }
    apply(flags)
}

#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal"))]
fn apply(flags: &KernelFlags) -> anyhow::Result<()> {
    use burn::cubecl::config::autotune::AutotuneLevel;
    use burn::cubecl::config::cache::CacheConfig;
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    // what CubeCL would read itself (cubecl.toml, CUBECL_* variables), then the flags
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    // compiled kernels kept too, not only autotune results (CubeCL's default keeps none: every
    // process compiled every kernel again); CubeCL stores its own SPIR-V (`--device vulkan`),
    // while WGSL (`--device wgpu`) is compiled by the driver, whose own shader cache applies
    config.compilation.cache = true;
    config.compilation.logger = crate::kernel_progress::sinks(&config.compilation.logger, "basic")?;
    config.autotune.logger = crate::kernel_progress::sinks(&config.autotune.logger, "minimal")?;
    if let Some(dir) = &flags.kernel_cache {
        config.environment.path = CacheConfig::Directory(std::path::absolute(dir)?);
    }
    if let Some(file) = &flags.profile_kernels {
        use burn::cubecl::config::profiling::ProfilingLogLevel;
        config.profiling.logger.level = ProfilingLogLevel::Basic;
        config.profiling.logger.file = Some(std::path::absolute(file)?);
    }
    if let Some(level) = flags.autotune {
        config.autotune.level = match level {
            Autotune::Minimal => AutotuneLevel::Minimal,
            Autotune::Balanced => AutotuneLevel::Balanced,
            Autotune::Extensive => AutotuneLevel::Extensive,
            Autotune::Full => AutotuneLevel::Full,
        };
    }
    crate::kernel_progress::install();
    if !CubeClRuntimeConfig::try_set(config) {
        anyhow::bail!(
            "--kernel-cache / --autotune / --profile-kernels: a GPU backend has already started"
        );
    }
    Ok(())
}

#[cfg(not(any(feature = "wgpu", feature = "vulkan", feature = "metal")))]
fn apply(flags: &KernelFlags) -> anyhow::Result<()> {
    if flags.kernel_cache.is_none() && flags.autotune.is_none() && flags.profile_kernels.is_none() {
        return Ok(());
    }
    eprintln!(
        "note: --kernel-cache, --autotune and --profile-kernels apply to GPU backends; this \
         dino has none (cargo features wgpu, vulkan, metal)"
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
fn database_bytes(db: &std::path::Path) -> u64 {
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
