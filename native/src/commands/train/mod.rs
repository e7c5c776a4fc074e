//! `dino train`: the recipe of `main_dino.py` on a folder of images (or the built-in photos).
//! This shell turns flags into a config, opens or resumes the run and picks the devices; the
//! loop itself (checkpoints, logs, exact resume) is core's [`dino_core::train::run::train`],
//! watched here by a progress bar, plots and attention snapshots ([`progress::Progress`]).

mod check;
mod flags;
mod plots;
pub(crate) mod progress;
mod snapshots;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use dino_core::data::{ImageFolder, ImageSource, MultiCropBatches, MultiCropLoader};
use dino_core::train::collective::Collective;
use dino_core::train::run::{RunDir, train};
use dino_core::train::{TrainConfig, Trainer};

use crate::backend::Backend;
pub use flags::with_defaults_in_help;

/// Every recipe flag overrides one field of the training config (defaults: `main_dino.py`'s, the
/// small-data recipe for a folder of fewer than 20,000 images (`--recipe`), or the small demo
/// run when no `--data` is given; `--print-config` shows the result). A flag
/// given twice takes its last value, so scripts can append overrides to a recipe. When a run
/// resumes, a flag that differs from the checkpoint's config is refused, except the ones that
/// do not change the results (`--saveckp-freq`, `--checkpoint-every`,
/// `--gradient-checkpointing`, `--attention-kernel`) and `--precision` (checkpoints are f32
/// whatever it is), which apply.
#[derive(clap::Args, Debug)]
#[command(args_override_self = true)]
pub struct Args {
    /// Folder of images, searched recursively (class subfolders are ignored). Without it,
    /// a short demo run on the built-in photos.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Where checkpoints, logs, plots and attention maps go.
    #[arg(long, default_value = "dino_output", value_name = "DIR")]
    output_dir: PathBuf,
    /// Data parallel over this many devices of `--device` (GPUs 0..N-1): each takes
    /// batch_size / N images of every iteration, on its own thread. On the CPU: the batch runs
    /// as N parts at the same time, which keeps every core busy. [default: 1 on GPUs; 4 on the
    /// CPU, or 2 or 1 when the batch does not split that way, 1 with a BatchNorm head]
    #[arg(long, value_name = "N")]
    devices: Option<usize>,
    /// Gradient accumulation: each device (or CPU part) runs its share of a batch as N
    /// micro-batches one after another and the iteration updates once with their summed
    /// gradients: the batch of --batch-size with the activation memory of
    /// batch_size / (devices x N) images (not in the official code). Give the same value when
    /// resuming.
    #[arg(long, default_value_t = 1, value_name = "N")]
    accum_steps: usize,
    /// Attention maps of a few fixed images every this many epochs (0: never).
    #[arg(long, default_value_t = 1, value_name = "EPOCHS")]
    attention_every: usize,
    /// How many images the attention snapshots show.
    #[arg(long, default_value_t = 4, value_name = "N")]
    attention_images: usize,
    /// Which defaults the recipe flags override. `auto`: the small-data recipe for a folder
    /// of fewer than 20,000 images, the official one otherwise (the demo has its own).
    #[arg(long = "recipe", value_enum, default_value_t = Recipe::Auto)]
    defaults: Recipe,

    #[command(flatten)]
    run: crate::recipe::RunFlags,
    #[command(flatten)]
    recipe: flags::RecipeFlags,
}

/// Config fields a resumed run may change: they alter neither the schedules nor the saved
/// state (precision changes the rounding of the products, by design).
const CHANGEABLE_ON_RESUME: [&str; 5] = [
    "saveckp_freq",
    "checkpoint_every",
    "gradient_checkpointing",
    "precision",
    "attention_kernel",
];

/// The defaults a run starts from, before `--config` and the flags.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipe {
    /// Small data for a folder of fewer than 20,000 images, else official.
    Auto,
    /// `main_dino.py`'s defaults, unchanged.
    Official,
    /// For a few thousand images and minutes to an hour of CPU (BENCHMARKS.md, "Small data"):
    /// 256 prototypes kept at their initialisation, a sharper and faster teacher, lr 0.002.
    SmallData,
}

/// Below this many images `--recipe auto` takes the small-data recipe.
const SMALL_DATA_BELOW: usize = 20_000;

impl Args {
    /// The fields the user set: the `--config` file's, then the flags'.
    fn overrides(&self) -> anyhow::Result<toml::Table> {
        self.run
            .overrides(crate::recipe::flags_table(&self.recipe)?)
    }

    /// The defaults of the recipe (the demo's without `--data` and `--config`), then the
    /// overrides; with a line saying which recipe when it is not the official one.
    fn config(
        &self,
        overrides: &toml::Table,
        images: Option<usize>,
    ) -> anyhow::Result<(TrainConfig, Option<String>)> {
        let small = match (self.defaults, images) {
            (Recipe::SmallData, _) => Some("--recipe small-data".to_string()),
            (Recipe::Auto, Some(n)) if n < SMALL_DATA_BELOW => Some(format!(
                "{n} images, fewer than {SMALL_DATA_BELOW}; --recipe official for main_dino.py's"
            )),
            _ => None,
        };
        let (base, note) = match (small, &self.data, &self.run.config, self.defaults) {
            (Some(why), ..) => (
                TrainConfig::small_data(),
                Some(format!(
                    "recipe: small data ({why}): {} (BENCHMARKS.md, \"Small data\")",
                    TrainConfig::small_data_changes()
                )),
            ),
            (None, None, None, Recipe::Auto) => (TrainConfig::demo(), None),
            _ => (TrainConfig::default(), None),
        };
        let mut cfg = base.merged(overrides)?;
        if note.is_some() && !overrides.contains_key("freeze_last_layer") {
            cfg.freeze_last_layer = cfg.epochs;
        }
        cfg.validate()?;
        Ok((cfg, note))
    }
}

/// A resumed run keeps its recipe: overrides that change it are refused (all named), the
/// harmless ones applied.
fn resume_config(ckpt: &TrainConfig, overrides: &toml::Table) -> anyhow::Result<TrainConfig> {
    let diffs = ckpt.differences(overrides)?;
    let apply = crate::recipe::resume_overrides(diffs, overrides, &CHANGEABLE_ON_RESUME)?;
    Ok(ckpt.merged(&apply)?)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // under an MPI launcher: this process is one rank of several (rank 0 writes the outputs)
    #[cfg(feature = "mpi")]
    {
        let mpi = crate::mpi_world::MpiWorld::from_launcher()?.map(Arc::new);
        let result = run_as(args, mpi.clone().map(|w| w as Arc<dyn Collective>));
        if let (Err(e), Some(world)) = (&result, &mpi) {
            // the other ranks wait in a collective: the whole job must stop, non-zero
            crate::recipe::say_whole(&format!("error on MPI rank {}: {e:#}", world.rank()));
            world.abort(1);
        }
        result
    }
    #[cfg(not(feature = "mpi"))]
    run_as(args, None)
}

/// The run, as one process or as one rank of `mpi`.
fn run_as(args: Args, mpi: Option<Arc<dyn Collective>>) -> anyhow::Result<()> {
    let overrides = args.overrides()?;
    // the folder is scanned first when the recipe depends on its size
    let mut folder = match (&args.data, args.defaults) {
        (Some(data), Recipe::Auto) => Some(ImageFolder::scan(data)?),
        _ => None,
    };
    let (mut cfg, recipe_note) = args.config(&overrides, folder.as_ref().map(|f| f.len()))?;
    if args.run.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    let source: Arc<dyn ImageSource> = match (&args.data, folder.take()) {
        (Some(_), Some(f)) => Arc::new(f),
        (Some(data), None) => Arc::new(ImageFolder::scan(data)?),
        (None, _) => Arc::new(crate::builtin::BuiltinPhotos),
    };
    let rank = mpi.as_ref().map_or(0, |w| w.rank());
    let dir = RunDir(args.output_dir.clone());
    std::fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
    match &args.data {
        Some(data) => eprintln!("data: {} images under {}", source.len(), data.display()),
        None => eprintln!(
            "data: the {} built-in photos (a demo run; give --data DIR to train on your images)",
            source.len()
        ),
    }
    // the first of the data-parallel devices (the only one by default) keeps the run's state
    // an MPI rank takes the GPUs of its local rank (its devices from local rank x --devices)
    let first_device = local_rank() * args.devices.unwrap_or(1);
    let device = args.run.device.devices_from(first_device, 1)?.remove(0);

    let cli_temp_files = match rank {
        0 => crate::recipe::remove_temp_files(&dir),
        _ => 0,
    };
    // resume: an explicit file, else the output folder's checkpoint (or its newest intact copy)
    let resumed = args.run.resume(&dir, |f| Trainer::load(f, &device))?;
    let mut resumed = match resumed {
        Some((mut t, f)) => {
            t.cfg = resume_config(&t.cfg, &overrides)?;
            cfg = t.cfg.clone();
            eprintln!(
                "resuming {} at epoch {}, iteration {}",
                f.display(),
                t.epoch(),
                t.iteration
            );
            Some(t)
        }
        None => {
            if let Some(note) = &recipe_note {
                eprintln!("{note}");
            }
            None
        }
    };
    let mut loader = MultiCropLoader::new(
        source.clone(),
        cfg.crops(),
        cfg.batch_size,
        cfg.seed,
        cfg.dataset_repeats,
    )?;
    // each MPI rank prepares only its share of every batch
    if let Some(world) = &mpi {
        loader = loader.with_shard(rank, world.world())?;
    }
    let loader = Arc::new(loader);
    let niter = loader.niter_per_epoch();
    let mut trainer = match resumed.take() {
        Some(t) => {
            crate::recipe::same_iterations(t.niter_per_epoch, niter)?;
            t
        }
        None => Trainer::new(cfg.clone(), niter, &device)?,
    };
    let n = match args.devices {
        Some(n) => n,
        // on the CPU the batch splits by default (of the micro-batch when accumulating)
        None => {
            let a = args.accum_steps.max(1);
            let per_step = if cfg.batch_size.is_multiple_of(a) {
                cfg.batch_size / a
            } else {
                cfg.batch_size
            };
            args.run.device.default_parts(per_step)
        }
    };
    let devices = args.run.device.devices_from(first_device, n)?;
    if n > 1 {
        trainer.set_devices(devices)?;
        match args.run.device {
            Backend::Cpu => eprintln!(
                "CPU: each batch runs as {n} parts of {} images at the same time (--devices 1: \
                 one part)",
                cfg.batch_size / n
            ),
            other => eprintln!(
                "data parallel: {} images on each of {n} {other:?} devices",
                cfg.batch_size / n
            ),
        }
    }
    if args.accum_steps != 1 {
        trainer.set_accumulation(args.accum_steps)?;
        eprintln!(
            "gradient accumulation: each batch of {} runs as {} micro-batches of {} images{}, \
             one update per batch",
            cfg.batch_size,
            args.accum_steps,
            cfg.batch_size / (n * args.accum_steps),
            if n > 1 { " per part" } else { "" }
        );
    }
    // the other ranks train in step and write into a scratch folder of their own
    let mut _scratch = None;
    let mut dir = dir;
    let mut attention_every = args.attention_every;
    if let Some(world) = &mpi {
        let size = world.world();
        trainer.set_collective(world.clone())?;
        if rank == 0 {
            let values: usize = dino_core::train::parameter_sizes(trainer.student())
                .values()
                .sum();
            crate::recipe::say_whole(&format!(
                "MPI: {size} ranks (world_size = {size}); each runs {} images of every batch of \
                 {}; up to {:.1} MB of gradients summed over the ranks per step; rank 0 writes {}",
                cfg.batch_size / size,
                cfg.batch_size,
                values as f64 * 4.0 / 1e6,
                dir.0.display()
            ));
        } else {
            let tmp = tempfile::tempdir()?;
            dir = RunDir(tmp.path().to_path_buf());
            _scratch = Some(tmp);
            attention_every = 0;
        }
    }
    let vit = cfg.vit()?;
    eprintln!(
        "model: {} ({:.2} M parameters), head {} -> {}, {} crops of {} px + {} of {} px, batch {}, \
         {} epochs x {niter} iterations",
        vit.name(),
        vit.num_params() as f64 / 1e6,
        cfg.head_hidden_dim,
        cfg.out_dim,
        2,
        cfg.global_crop_size,
        cfg.local_crops_number,
        cfg.local_crop_size,
        cfg.batch_size,
        cfg.epochs,
    );
    if trainer.finished() {
        eprintln!(
            "the run is already finished ({} epochs); exporting the teacher",
            cfg.epochs
        );
    }
    // the label-free learning check, before the first step and after the last
    let summary_path = dir.0.join("summary.json");
    let check = match rank {
        0 => check::LearningCheck::new(&*source, cfg.global_crop_size, cfg.seed),
        _ => None,
    };
    let mut learning = check::Summary::read(&summary_path);
    if let Some(c) = &check
        && trainer.iteration == 0
    {
        learning = check::Summary {
            view_retrieval_start: Some(c.score(&trainer)?),
            images: c.images,
            views_per_image: 4,
            ..Default::default()
        };
        learning.write(&summary_path)?;
    }
    let mut progress = progress::Progress::new(&trainer, cfg.epochs, dir.0.clone(), &*source);
    progress.out_dim = cfg.out_dim;
    progress.attention_every = attention_every;
    if rank != 0 {
        progress
            .bar
            .set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    progress.attention_images = args.attention_images;
    let summary = train(
        &mut trainer,
        MultiCropBatches::new(loader),
        &dir,
        &mut progress,
    )?;
    progress.bar.finish();
    crate::recipe::report_temp_files(cli_temp_files, &summary);
    if rank != 0 {
        // its scratch folder goes; the loop compared the ranks' states at every checkpoint
        return Ok(());
    }
    if summary.skipped > 0 {
        eprintln!("{} unreadable image(s) were skipped", summary.skipped);
    }
    if summary.steps > 0 {
        eprintln!(
            "data pipeline: {:.1} images/s per worker pool (multi-crop of {} views each)",
            summary.batches_per_s,
            cfg.crops().ncrops()
        );
    }
    eprintln!(
        "wrote {} (teacher backbone) and {} (full training state)",
        dir.teacher().display(),
        dir.checkpoint().display()
    );
    if let Some(c) = &check {
        learning.view_retrieval_end = Some(c.score(&trainer)?);
        learning.write(&summary_path)?;
        eprintln!(
            "{}",
            check::closing_note(&learning, c.chance(), &dir.0, attention_every > 0)
        );
    }
    Ok(())
}

/// This process's rank among the MPI ranks of its machine (Open MPI, MPICH, Slurm); 0
/// outside a launcher.
pub(crate) fn local_rank() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
    .unwrap_or(0)
}
