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
    let engine = args.weights.load_engine()?;
    let dim = engine.config().dim;
    let n = args.images.len();
    let mut feats = crate::features::cls_features(
        &engine,
        &args.images,
        &args.resize,
        args.batch_size as usize,
        "embedding",
    )?;
    if args.l2 {
        dino_core::eval::l2_normalize(&mut feats, dim);
    }
    crate::npy::write(&args.out, &[n, dim], &feats)?;
    eprintln!("wrote {} ({n} x {dim} f32)", args.out.display());
    Ok(())
}
