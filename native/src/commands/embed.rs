//! `dino embed`: CLS features of many images, in argument order.

use std::path::PathBuf;

use dino_core::imaging::Resize;

use crate::model_args::WeightsArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    weights: WeightsArgs,
    /// How images are resized: `eval` (short side 256, centre crop 224: the official
    /// evaluation transform), `eval:SHORT/CROP`, `none` (own size, cropped to a multiple
    /// of the patch), a short side like `480`, or `HEIGHTxWIDTH`.
    #[arg(long, default_value = "eval")]
    resize: Resize,
    /// Output .npy file: f32 [N, D], row i is image i.
    #[arg(long, short, value_name = "FEATS.npy")]
    out: PathBuf,
    /// Images per forward pass (images of different sizes never share one).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    batch_size: u16,
    /// L2-normalise each feature (what k-NN and retrieval use).
    #[arg(long)]
    l2: bool,
    /// Image files (PNG, JPEG, WebP, GIF, BMP, TIFF).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // under an MPI launcher each rank embeds its share of the images; rank 0 writes them all
    #[cfg(feature = "mpi")]
    if let Some(world) = crate::mpi_world::MpiWorld::from_launcher()? {
        use dino_core::train::collective::Collective;
        let n = args.images.len();
        let share = world.share(n);
        let (rank, size) = (world.rank(), world.world());
        if rank == 0 {
            crate::recipe::say_whole(&format!(
                "MPI: {size} ranks share the {n} images ({} or {} each, in order; world_size = {size})",
                n / size,
                n.div_ceil(size)
            ));
        }
        let (block, dim) = world.or_abort(embed(&args, &args.images[share]))?;
        let feats = world.gather_rows(&block, n, dim);
        if rank == 0 {
            world.or_abort(write(&args, &feats, n, dim))?;
        }
        return Ok(());
    }
    let (feats, dim) = embed(&args, &args.images)?;
    write(&args, &feats, args.images.len(), dim)
}

/// The (normalised, with `--l2`) CLS features of `images`, `[N, D]`, and `D`.
fn embed(args: &Args, images: &[PathBuf]) -> anyhow::Result<(Vec<f32>, usize)> {
    let engine = args.weights.load_engine()?;
    let dim = engine.feature_dim();
    let mut feats = crate::features::cls_features(
        &engine,
        images,
        &args.resize,
        args.batch_size as usize,
        "embedding",
    )?;
    if args.l2 {
        dino_core::eval::l2_normalize(&mut feats, dim);
    }
    Ok((feats, dim))
}

fn write(args: &Args, feats: &[f32], n: usize, dim: usize) -> anyhow::Result<()> {
    crate::npy::write(&args.out, &[n, dim], feats)?;
    eprintln!("wrote {} ({n} x {dim} f32)", args.out.display());
    Ok(())
}
