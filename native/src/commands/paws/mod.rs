//! `dino paws`: PAWS (semi-supervised learning from a few labels, DINO's companion method) on a
//! folder of images with a labelled subset: suncet's recipe, on the same training loop as
//! `dino train` (checkpoints, exact resume, metrics, log.txt, plots, progress bar). The trained
//! encoder (`encoder.safetensors`) is what `dino snn` evaluates.

mod flags;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use dino_core::data::{ImageFolder, ImageSource};
use dino_core::paws::{LabelledFiles, PawsBatches, PawsConfig, PawsTrainer};
use dino_core::train::collective::Collective;
use dino_core::train::run::{Flow, Record, RunDir, StepEvent, TrainObserver, train};

use super::train::progress::Progress;
pub use flags::with_defaults_in_help;

/// The labelled subset is one of `--labels` (a folder of class sub-folders, or a CSV of
/// `path,class` lines) or `--label-fraction F --labels-from DIR` (a seeded share of every class
/// of a labelled folder, written to OUTPUT_DIR/labels.csv). The unlabelled images are `--data`
/// (by default the labelled folder's images, all of them, as the official code).
#[derive(clap::Args, Debug)]
#[command(args_override_self = true)]
pub struct Args {
    /// Folder of unlabelled images, searched recursively (class sub-folders are ignored).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// The labelled images: a folder of class sub-folders, or a CSV file of `path,class`.
    #[arg(long, value_name = "DIR|CSV", conflicts_with = "labels_from")]
    labels: Option<PathBuf>,
    /// Draw this share of every class of --labels-from as the labelled subset (e.g. 0.01).
    #[arg(long, value_name = "F", requires = "labels_from")]
    label_fraction: Option<f64>,
    /// A labelled folder (class sub-folders) to draw --label-fraction from.
    #[arg(long, value_name = "DIR", requires = "label_fraction")]
    labels_from: Option<PathBuf>,
    /// Seed of the --label-fraction draw.
    #[arg(long, default_value_t = 0, value_name = "N")]
    label_seed: u64,
    /// Where checkpoints, logs, plots and the encoder go.
    #[arg(long, default_value = "paws_output", value_name = "DIR")]
    output_dir: PathBuf,
    #[command(flatten)]
    run: crate::recipe::RunFlags,
    #[command(flatten)]
    recipe: flags::PawsFlags,
}

/// Fields a resumed run may change.
const CHANGEABLE_ON_RESUME: [&str; 2] = ["saveckp_freq", "checkpoint_every"];

impl Args {
    fn overrides(&self) -> anyhow::Result<toml::Table> {
        self.run
            .overrides(crate::recipe::flags_table(&self.recipe)?)
    }

    fn labelled(&self) -> anyhow::Result<LabelledFiles> {
        Ok(
            match (&self.labels, &self.labels_from, self.label_fraction) {
                (Some(p), _, _) => LabelledFiles::from_path(p)?,
                (None, Some(dir), Some(f)) => LabelledFiles::fraction_of(dir, f, self.label_seed)?,
                _ => bail!(
                    "PAWS needs labelled images: --labels DIR|CSV, or --label-fraction F \
                 --labels-from DIR"
                ),
            },
        )
    }
}

impl TrainObserver<PawsTrainer> for Progress<'_> {
    fn on_step(&mut self, e: &StepEvent) -> Flow {
        self.step(e)
    }

    fn on_epoch(&mut self, _: usize, _: &PawsTrainer, records: &[Record]) {
        self.plots(records);
    }
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
    let cfg = PawsConfig::default().merged(&overrides)?;
    cfg.validate()?;
    if args.run.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    let dir = RunDir(args.output_dir.clone());
    std::fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
    let labelled = args.labelled()?;
    let counts = labelled.counts();
    eprintln!(
        "labelled: {} images of {} classes ({}..{} per class)",
        labelled.len(),
        labelled.classes.len(),
        counts.iter().min().unwrap_or(&0),
        counts.iter().max().unwrap_or(&0)
    );
    let (rank, world) = mpi.as_ref().map_or((0, 1), |w| (w.rank(), w.world()));
    if args.label_fraction.is_some() && rank == 0 {
        let path = dir.0.join("labels.csv");
        dino_core::atomic_write(&path, labelled.to_csv().as_bytes())?;
        eprintln!("the drawn labelled subset: {}", path.display());
    }
    let data_dir = match (&args.data, &args.labels_from, &args.labels) {
        (Some(d), _, _) => d.clone(),
        (None, Some(d), _) => d.clone(),
        (None, None, Some(d)) if d.is_dir() => d.clone(),
        _ => bail!("give the unlabelled images with --data DIR"),
    };
    let unlabelled = ImageFolder::scan(&data_dir)?;
    eprintln!(
        "unlabelled: {} images under {}",
        unlabelled.len(),
        data_dir.display()
    );
    let unlabelled: Arc<dyn ImageSource> = Arc::new(unlabelled);
    // an MPI rank takes the GPU of its local rank
    let device = args
        .run
        .device
        .devices_from(crate::commands::train::local_rank(), 1)?
        .remove(0);

    let cli_temp_files = match rank {
        0 => crate::recipe::remove_temp_files(&dir),
        _ => 0,
    };
    let resumed = args.run.resume(&dir, |f| PawsTrainer::load(f, &device))?;
    let mut trainer = match resumed {
        Some((mut t, f)) => {
            let apply = crate::recipe::resume_overrides(
                t.cfg.differences(&overrides)?,
                &overrides,
                &CHANGEABLE_ON_RESUME,
            )?;
            t.cfg = t.cfg.merged(&apply)?;
            eprintln!(
                "resuming {} at epoch {}, iteration {}",
                f.display(),
                t.iteration / t.niter_per_epoch,
                t.iteration
            );
            Some(t)
        }
        None => None,
    };
    let cfg = trainer.as_ref().map_or(cfg, |t| t.cfg.clone());
    let batches = PawsBatches::new(unlabelled.clone(), Arc::new(labelled.into_set()), &cfg)?
        .for_rank(rank, world)?;
    let niter = dino_core::train::run::Batches::niter_per_epoch(&batches);
    let mut trainer = match trainer.take() {
        Some(t) => {
            crate::recipe::same_iterations(t.niter_per_epoch, niter)?;
            t
        }
        None => PawsTrainer::new(cfg.clone(), niter, &device)?,
    };
    // the other ranks train in step and write into a scratch folder of their own
    let mut _scratch = None;
    let mut dir = dir;
    if let Some(w) = &mpi {
        trainer.set_collective(w.clone())?;
        if rank == 0 {
            crate::recipe::say_whole(&format!(
                "MPI: {world} ranks, each {} unlabelled images and its share of each support \
                 class per iteration (supports gathered across ranks); rank 0 writes {}",
                cfg.unsupervised_batch_size,
                dir.0.display()
            ));
        } else {
            let tmp = tempfile::tempdir()?;
            dir = RunDir(tmp.path().to_path_buf());
            _scratch = Some(tmp);
        }
    }
    let enc = cfg.encoder()?;
    eprintln!(
        "model: {} ({} features) + projection to {}{}; {} unlabelled images x (2 x {} px + \
         {} x {} px) and {} support views per iteration; {} epochs x {niter} iterations",
        enc.backbone.describe(),
        enc.backbone.features(),
        cfg.output_dim,
        if cfg.use_pred_head {
            " + prediction head"
        } else {
            ""
        },
        cfg.unsupervised_batch_size,
        cfg.crop_size,
        cfg.multicrop,
        cfg.multicrop_size,
        cfg.support_views(),
        cfg.epochs,
    );
    let mut progress = Progress::new(&trainer, cfg.epochs, dir.0.clone(), &*unlabelled);
    let summary = train(&mut trainer, batches, &dir, &mut progress)?;
    progress.bar.finish();
    crate::recipe::report_temp_files(cli_temp_files, &summary);
    if summary.skipped > 0 {
        eprintln!("{} unreadable image(s) were skipped", summary.skipped);
    }
    eprintln!(
        "wrote {} (the encoder, for dino snn) and {} (full training state)",
        dir.0.join("encoder.safetensors").display(),
        dir.checkpoint().display()
    );
    Ok(())
}
