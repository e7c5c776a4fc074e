//! `dino retrieve`: image retrieval as `eval_image_retrieval.py`: L2-normalised CLS features
//! (optionally averaged over the scales 1, 1/sqrt 2, 1/2), cosine similarity. The index of
//! a folder is built once, kept on disk and updated incrementally on later runs.

use std::path::{Path, PathBuf};

use anyhow::Context;
use dino_core::data::ImageFolder;
use dino_core::features::{descriptor, l2_normalize};
use dino_core::imaging::{Resize, resize_bicubic};
use image::RgbImage;

use crate::engine::Engine;
use crate::extraction_ranks::Ranks;
use crate::feature_store::{FeatureStore, Recipe, weights_identity};
use crate::features::extract;
use crate::gallery;
use crate::model_args::WeightsArgs;
use crate::neighbour_search::{SearchArgs, Searcher, saved_index_path};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    weights: WeightsArgs,
    /// Folder of images to search (recursively).
    #[arg(long, value_name = "DIR")]
    index: PathBuf,
    /// Query images (none: only build or update the index).
    #[arg(long, num_args = 1.., value_name = "IMAGE")]
    query: Vec<PathBuf>,
    /// Results per query.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Average the features of the scales 1, 1/sqrt(2) and 1/2 (`--multiscale` of the
    /// official evaluation).
    #[arg(long)]
    multiscale: bool,
    /// How images are resized (official: long side at most 224, aspect kept).
    #[arg(long, default_value = "max:224")]
    resize: Resize,
    /// Where the index is kept (default: DIR/.dino-index.safetensors; an HNSW index, when
    /// used, beside it as FILE.usearch).
    #[arg(long, value_name = "FILE")]
    index_file: Option<PathBuf>,
    #[command(flatten)]
    search: SearchArgs,
    /// Images per forward pass (only equal-size images share one).
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write an HTML page of the queries and their results here.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

/// Normalised CLS features of same-size prepared images, single- or multi-scale.
fn embed(engine: &Engine, imgs: &[RgbImage], multiscale: bool) -> anyhow::Result<Vec<f32>> {
    let d = engine.feature_dim();
    if !multiscale {
        let mut f = engine.cls(imgs)?;
        l2_normalize(&mut f, d);
        return Ok(f);
    }
    let p = engine.patch() as u32;
    let mut acc = vec![0f32; imgs.len() * d];
    for s in descriptor::MULTI_SCALES {
        let (w, h) = imgs[0].dimensions();
        // the scaled size, cropped to a whole number of patches (at least one)
        let sw = (((w as f32 * s).round() as u32) / p * p).max(p);
        let sh = (((h as f32 * s).round() as u32) / p * p).max(p);
        let scaled: Vec<RgbImage> = if (sw, sh) == (w, h) {
            imgs.to_vec()
        } else {
            imgs.iter()
                .map(|i| resize_bicubic(i, sw, sh))
                .collect::<Result<_, _>>()?
        };
        descriptor::accumulate(&mut acc, &engine.cls(&scaled)?);
    }
    l2_normalize(&mut acc, d);
    Ok(acc)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // under an MPI launcher the ranks share the extraction; rank 0 goes on and writes
    let ranks = Ranks::from_launcher()?;
    let result = run_on(args, &ranks);
    ranks.finish(result)
}

fn run_on(args: Args, ranks: &Ranks) -> anyhow::Result<()> {
    anyhow::ensure!(args.k > 0, "--k must be at least 1");
    let folder = ImageFolder::scan(&args.index)?;
    let engine = args.weights.load_engine()?;
    let d = engine.feature_dim();
    let index_file = args
        .index_file
        .clone()
        .unwrap_or_else(|| args.index.join(".dino-index.safetensors"));
    let signature = format!(
        "retrieve:{}:{}:{}",
        args.multiscale,
        args.resize,
        weights_identity(&args.weights.weights)?
    );
    let recipe = Recipe {
        resize: &args.resize,
        batch_size: args.batch_size,
        label: "indexing",
        dim: d,
    };
    let Some((store, stats)) = FeatureStore::of_files(
        ranks,
        Some(&index_file),
        &signature,
        &engine,
        &folder.files,
        &recipe,
        |imgs| embed(&engine, imgs, args.multiscale),
    )?
    else {
        return Ok(()); // another MPI rank: its share is done
    };
    eprintln!(
        "index {}: {} images ({} reused, {} computed, {} removed, {} unreadable)",
        index_file.display(),
        store.entries.len(),
        stats.reused,
        stats.computed,
        stats.removed,
        stats.skipped.len()
    );
    if store.entries.is_empty() && args.query.is_empty() {
        return Ok(());
    }
    anyhow::ensure!(
        !store.entries.is_empty(),
        "the index holds no readable images"
    );
    // the HNSW index (when used) is brought up to date even without queries
    let saved = saved_index_path(&index_file);
    let (searcher, report) = Searcher::build(
        &args.search,
        &store.rows,
        d,
        &store.entries,
        Some((&saved, store.signature.as_str())),
    )?;
    report.print(Some(&saved));
    if args.query.is_empty() {
        return Ok(());
    }
    let queries = extract(
        &engine,
        &args.query,
        &args.resize,
        args.batch_size,
        "queries",
        d,
        false,
        |imgs| embed(&engine, imgs, args.multiscale),
    )?;
    let hits = searcher.search(&queries.rows, args.k, false, &store.rows)?;
    let paths: Vec<&Path> = store.entries.iter().map(|e| e.path.as_path()).collect();
    let mut json = Vec::new();
    for (q, h) in args.query.iter().zip(&hits) {
        println!("{}:", q.display());
        for (rank, n) in h.iter().enumerate() {
            println!(
                "  {:>3}  {:.4}  {}",
                rank + 1,
                n.score,
                paths[n.index].display()
            );
        }
        json.push(serde_json::json!({
            "query": q,
            "results": h.iter().map(|n| serde_json::json!({
                "file": paths[n.index], "score": n.score
            })).collect::<Vec<_>>(),
        }));
    }
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("{}", p.display()))?;
    }
    if let Some(p) = &args.html {
        let mut body = String::new();
        for (q, h) in args.query.iter().zip(&hits) {
            body += &format!(
                "<div class=\"group\"><figure><img src=\"{}\"><figcaption><b>query</b> {}</figcaption></figure>",
                gallery::data_uri(&gallery::thumbnail(q, 128)),
                gallery::escape(&q.display().to_string())
            );
            for n in h {
                body += &format!(
                    "<figure><img src=\"{}\"><figcaption>{:.3} {}</figcaption></figure>",
                    gallery::data_uri(&gallery::thumbnail(paths[n.index], 128)),
                    n.score,
                    gallery::escape(&paths[n.index].display().to_string())
                );
            }
            body += "</div>";
        }
        std::fs::write(p, gallery::page("Retrieval results", &body))
            .with_context(|| format!("{}", p.display()))?;
    }
    Ok(())
}
