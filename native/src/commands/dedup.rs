//! `dino dedup`: near-duplicate (copy) detection over a folder, as `eval_copy_detection.py`:
//! the normed CLS token concatenated with GeM-pooled (p = 4) patch tokens, optional PCA
//! whitening, cosine similarity. Exact search in bounded memory (blocks of queries, top k per
//! image), pairs above a threshold, groups = connected components; reports in CSV/JSON, a
//! PNG sheet and an HTML page of the groups.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use dino_core::data::ImageFolder;
use dino_core::features::{descriptor, groups, pca::Pca};
use dino_core::imaging::Resize;

use crate::choice_name;
use crate::engine::Engine;
use crate::extraction_ranks::Ranks;
use crate::feature_rows::FeatureRows;
use crate::feature_store::{FeatureStore, Recipe, UpdateStats, weights_identity};
use crate::gallery;
use crate::model_args::WeightsArgs;
use crate::neighbour_search::{SearchArgs, Searcher, saved_index_path};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    weights: WeightsArgs,
    /// Folder of images, searched recursively.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Where the reports go.
    #[arg(long, short, default_value = "dedup")]
    out: PathBuf,
    /// Pairs at least this similar (cosine of the final descriptors) are duplicates.
    #[arg(long, default_value_t = 0.75)]
    threshold: f32,
    /// Neighbours kept per image (a group can still grow larger, through its members).
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// The image descriptor compared.
    #[arg(long, value_enum, default_value_t = Descriptor::Copy)]
    descriptor: Descriptor,
    /// How images are resized (the official copy detection: 320x320).
    #[arg(long, default_value = "320x320")]
    resize: Resize,
    /// PCA whitening learned on these images (e.g. unrelated distractors, as the paper's
    /// 20k YFCC images) and applied before the cosine similarity.
    #[arg(long, value_name = "DIR", conflicts_with = "whiten_self")]
    whiten_from: Option<PathBuf>,
    /// PCA whitening learned on the folder itself (needs many more images than dimensions).
    #[arg(long)]
    whiten_self: bool,
    /// Dimensions kept by the whitening (default: all).
    #[arg(long)]
    pca_dim: Option<usize>,
    /// Whitening power: 0.5 whitens fully (official), 0 only rotates.
    #[arg(long, default_value_t = 0.5)]
    whitening_power: f32,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Keep the descriptors in this file and reuse them next time (only new or changed
    /// images are computed again); an HNSW index is kept beside it (FILE.usearch) and
    /// updated in place.
    #[arg(long, value_name = "FILE")]
    index_file: Option<PathBuf>,
    #[command(flatten)]
    search: SearchArgs,
    /// Groups drawn in groups.png / groups.html (all are in the CSV and JSON).
    #[arg(long, default_value_t = 100)]
    show: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Descriptor {
    /// CLS + GeM (p = 4) of the patch tokens: the official copy-detection feature.
    Copy,
    /// The CLS token alone (of a ResNet: its pooled features).
    Cls,
}

/// Descriptors of a list of files with the given settings (unreadable files skipped and
/// listed in the stats).
#[allow(clippy::too_many_arguments)]
pub fn descriptors(
    ranks: &Ranks,
    engine: &Engine,
    weights: &Path,
    files: &[PathBuf],
    resize: &Resize,
    kind: Descriptor,
    batch_size: usize,
    index_file: Option<&Path>,
    label: &str,
) -> anyhow::Result<Option<(FeatureStore, UpdateStats)>> {
    if kind == Descriptor::Copy
        && let Engine::ResNet(_, name, _) = engine
    {
        anyhow::bail!(
            "the copy-detection descriptor pools ViT patch tokens; the weights are a {name}: \
             use --descriptor cls (its pooled features)"
        );
    }
    let d = engine.feature_dim();
    let signature = format!(
        "dedup:{}:{resize}:{}",
        choice_name(&kind),
        weights_identity(weights)?
    );
    let recipe = Recipe {
        resize,
        batch_size,
        label,
        dim: if kind == Descriptor::Copy { 2 * d } else { d },
    };
    let Some((store, stats)) = FeatureStore::of_files(
        ranks,
        index_file,
        &signature,
        engine,
        files,
        &recipe,
        |imgs| {
            if kind == Descriptor::Cls {
                return engine.cls(imgs);
            }
            let t = engine.tokens(imgs)?;
            Ok(descriptor::copy_detection(&t.cls, &t.patches, d))
        },
    )?
    else {
        return Ok(None);
    };
    if stats.reused > 0 {
        eprintln!(
            "feature index: {} reused, {} computed, {} removed",
            stats.reused, stats.computed, stats.removed
        );
    }
    Ok(Some((store, stats)))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // under an MPI launcher the ranks share the extraction; rank 0 searches and writes
    let ranks = Ranks::from_launcher()?;
    let result = run_on(&args, &ranks);
    ranks.finish(result)
}

fn run_on(args: &Args, ranks: &Ranks) -> anyhow::Result<()> {
    anyhow::ensure!(args.k > 0, "--k must be at least 1");
    anyhow::ensure!(
        (-1.0..=1.0).contains(&args.threshold),
        "--threshold is a cosine similarity, between -1 and 1"
    );
    let t0 = Instant::now();
    let folder = ImageFolder::scan(&args.dir)?;
    let engine = args.weights.load_engine()?;
    let whiten_from = match &args.whiten_from {
        Some(dir) => Some(ImageFolder::scan(dir)?),
        None => None,
    };
    if ranks.count() > 1 && ranks.is_root() {
        crate::recipe::say_whole(&format!(
            "MPI: {} ranks share the extraction (world_size = {})",
            ranks.count(),
            ranks.count()
        ));
    }
    let first = descriptors(
        ranks,
        &engine,
        &args.weights.weights,
        &folder.files,
        &args.resize,
        args.descriptor,
        args.batch_size,
        args.index_file.as_deref(),
        "describing",
    )?;
    // the distractors' descriptors (not kept in an index), on every rank as the first call
    let whitening_descriptors = |w: &ImageFolder| {
        descriptors(
            ranks,
            &engine,
            &args.weights.weights,
            &w.files,
            &args.resize,
            args.descriptor,
            args.batch_size,
            None,
            "whitening",
        )
    };
    let Some((mut store, stats)) = first else {
        // another rank: its share of the distractors too, then rank 0 goes on alone
        if let Some(w) = &whiten_from {
            whitening_descriptors(w)?;
        }
        return Ok(());
    };
    // files unreadable last time are not in the index, so they were tried (and skipped) again
    let skipped: Vec<PathBuf> = stats.skipped.into_iter().map(|(p, _)| p).collect();
    let features_s = t0.elapsed().as_secs_f64();
    let n = store.entries.len();
    anyhow::ensure!(
        n >= 2,
        "{}: fewer than 2 readable images",
        args.dir.display()
    );
    let dim = store.dim;
    // the stored descriptors, mapped from the index file when there is one
    let rows = std::mem::take(&mut store.rows);

    // whitening (learned on distractors or on the folder), then cosine similarity
    let distractors = match &whiten_from {
        Some(w) => {
            let (s, _) =
                whitening_descriptors(w)?.context("rank 0 keeps the distractors' descriptors")?;
            Some(s.rows)
        }
        None => None,
    };
    let whitening = distractors
        .as_deref()
        .or(args.whiten_self.then_some(&rows[..]));
    let pca = match whitening {
        Some(train) => {
            let k = args.pca_dim.unwrap_or(dim).min(dim);
            Some(
                Pca::fit_whitening(train, dim, k, args.whitening_power)
                    .context("learning the whitening")?,
            )
        }
        None => None,
    };
    let energy = pca.as_ref().map(|p| p.energy);
    // the search compares by cosine: rows need no normalisation
    let (rows, out_dim) = match &pca {
        Some(p) => (FeatureRows::from(p.apply(&rows)?), p.dim_out),
        None => (rows, dim),
    };
    let t1 = Instant::now();
    // what the searched vectors are: the descriptors, and the whitening applied to them
    let space = format!(
        "{}|{}",
        store.signature,
        whitening_identity(pca.as_ref(), args.whitening_power)
    );
    let saved = args.index_file.as_deref().map(saved_index_path);
    let (searcher, search_report) = Searcher::build(
        &args.search,
        &rows,
        out_dim,
        &store.entries,
        saved.as_deref().map(|p| (p, space.as_str())),
    )?;
    search_report.print(saved.as_deref());
    let search_kind = search_report.kind.clone();
    let index_s = t1.elapsed().as_secs_f64();
    let neighbours = searcher.search(&rows, args.k, true, &rows)?;
    let neighbours_s = t1.elapsed().as_secs_f64() - index_s;
    drop(searcher);
    let pairs = groups::pairs_above(&neighbours, args.threshold);
    // what the threshold cuts: the distribution of each image's best match
    let mut best: Vec<f32> = neighbours
        .iter()
        .filter_map(|h| h.first().map(|n| n.score))
        .collect();
    best.sort_by(f32::total_cmp);
    let pct = |q: f64| best[((best.len() - 1) as f64 * q).round() as usize];
    let percentiles: Vec<(u32, f32)> = [0.1, 0.25, 0.5, 0.75, 0.9, 0.99]
        .iter()
        .map(|&q| ((q * 100.0) as u32, pct(q)))
        .collect();
    let found = groups::connected_groups(n, &pairs);
    let search_s = t1.elapsed().as_secs_f64();

    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    let paths: Vec<&Path> = store.entries.iter().map(|e| e.path.as_path()).collect();
    write_csvs(&args.out, &paths, &pairs, &found)?;
    let report = serde_json::json!({
        "folder": args.dir,
        "images": n,
        "skipped": skipped,
        "descriptor": choice_name(&args.descriptor),
        "descriptor_dim": dim,
        "whitening": args.whiten_from.as_ref().map(|p| p.display().to_string())
            .or(args.whiten_self.then(|| "self".to_string())),
        "whitening_energy": energy,
        "threshold": args.threshold,
        "k": args.k,
        "resize": args.resize.to_string(),
        "search": search_report,
        "pairs": pairs.len(),
        "best_match_similarity_percentiles": percentiles
            .iter()
            .map(|(p, v)| (format!("p{p}"), serde_json::json!(v)))
            .collect::<serde_json::Map<_, _>>(),
        "groups": found.iter().map(|g| serde_json::json!({
            "size": g.members.len(),
            "max_score": g.max_score,
            "min_score": g.min_score,
            "files": g.members.iter().map(|&i| paths[i]).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "seconds": {"features": features_s, "search": search_s, "index": index_s,
            "neighbours": neighbours_s},
    });
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    draw(&args.out, &paths, &found, args.show)?;
    let in_groups: usize = found.iter().map(|g| g.members.len()).sum();
    println!(
        "{n} images: {} duplicate pairs (cosine >= {}), {} groups holding {in_groups} images",
        pairs.len(),
        args.threshold,
        found.len()
    );
    for g in found.iter().take(10) {
        println!(
            "  {} images, similarity {:.3}..{:.3}: {}",
            g.members.len(),
            g.min_score,
            g.max_score,
            g.members
                .iter()
                .take(4)
                .map(|&i| paths[i].display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "best-match similarity per image: {} (choose --threshold from these; it depends on the model)",
        percentiles
            .iter()
            .map(|(p, v)| format!("p{p} {v:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !skipped.is_empty() {
        println!(
            "{} unreadable image(s) skipped (listed in report.json)",
            skipped.len()
        );
    }
    println!(
        "features {features_s:.1} s, {} search {search_s:.2} s (index {index_s:.1} s, neighbours {neighbours_s:.1} s); wrote {}/{{report.json,pairs.csv,groups.csv,groups.png,groups.html}}",
        search_kind,
        args.out.display()
    );
    Ok(())
}

/// What a whitening does to the descriptors, for the identity of a saved HNSW index: none, or
/// a hash of its mean and projection (learned again on other images, it is another space).
fn whitening_identity(pca: Option<&Pca>, power: f32) -> String {
    match pca {
        None => "raw".into(),
        Some(p) => {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            for v in p.mean.iter().chain(&p.projection) {
                h.update(&v.to_le_bytes());
            }
            format!("pca:{}:{}:{power}:{:016x}", p.dim_in, p.dim_out, h.digest())
        }
    }
}

fn write_csvs(
    out: &Path,
    paths: &[&Path],
    pairs: &[groups::Pair],
    found: &[groups::Group],
) -> anyhow::Result<()> {
    let csv = |s: &Path| format!("\"{}\"", s.display().to_string().replace('"', "\"\""));
    let mut f = std::io::BufWriter::new(std::fs::File::create(out.join("pairs.csv"))?);
    writeln!(f, "score,a,b")?;
    for p in pairs {
        writeln!(f, "{:.5},{},{}", p.score, csv(paths[p.a]), csv(paths[p.b]))?;
    }
    f.flush()?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(out.join("groups.csv"))?);
    writeln!(f, "group,size,file")?;
    for (gi, g) in found.iter().enumerate() {
        for &i in &g.members {
            writeln!(f, "{gi},{},{}", g.members.len(), csv(paths[i]))?;
        }
    }
    f.flush()?;
    Ok(())
}

fn draw(out: &Path, paths: &[&Path], found: &[groups::Group], show: usize) -> anyhow::Result<()> {
    let side = 128;
    let shown = &found[..found.len().min(show)];
    let tiles: Vec<Vec<image::RgbImage>> = shown
        .iter()
        .map(|g| {
            g.members
                .iter()
                .take(12)
                .map(|&i| gallery::thumbnail(paths[i], side))
                .collect()
        })
        .collect();
    if !tiles.is_empty() {
        gallery::group_rows(&tiles, 12, side).save(out.join("groups.png"))?;
    }
    let mut body = format!(
        "<p>{} groups of near-duplicates{}.</p>",
        found.len(),
        if found.len() > shown.len() {
            format!(" (the largest {} shown)", shown.len())
        } else {
            String::new()
        }
    );
    for (gi, (g, t)) in shown.iter().zip(&tiles).enumerate() {
        body += &format!(
            "<div class=\"group\"><b>group {gi}</b>: {} images, similarity {:.3} to {:.3}<br>",
            g.members.len(),
            g.min_score,
            g.max_score
        );
        for (&i, tile) in g.members.iter().zip(t) {
            body += &format!(
                "<figure><img src=\"{}\"><figcaption>{}</figcaption></figure>",
                gallery::data_uri(tile),
                gallery::escape(&paths[i].display().to_string())
            );
        }
        body += "</div>";
    }
    std::fs::write(
        out.join("groups.html"),
        gallery::page("Near-duplicates", &body),
    )?;
    Ok(())
}
