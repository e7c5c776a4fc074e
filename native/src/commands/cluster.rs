//! `dino cluster`: groups a collection by its DINO features: k-means or agglomerative
//! clustering of L2-normalised CLS features, a 2-D t-SNE map of the collection drawn with
//! thumbnails (PNG and HTML), and, when class subfolders exist, NMI / purity / adjusted
//! Rand index against them.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use dino_core::data::ImageFolder;
use dino_core::features::{kmeans::kmeans, l2_normalize, metrics, pca::Pca};
use dino_core::imaging::Resize;
use image::{Rgb, RgbImage};

use crate::choice_name;
use crate::extraction_ranks::Ranks;
use crate::feature_store::{FeatureStore, Recipe, weights_identity};
use crate::gallery;
use crate::model_args::WeightsArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    weights: WeightsArgs,
    /// Folder of images (recursively; first-level subfolders are taken as classes when
    /// every image lies in one, and the clustering is scored against them).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Number of clusters (default: the number of class subfolders, else 10).
    #[arg(long)]
    k: Option<usize>,
    /// The clustering algorithm.
    #[arg(long, value_enum, default_value_t = Method::Kmeans)]
    method: Method,
    /// Linkage of the agglomerative clustering.
    #[arg(long, value_enum, default_value_t = Linkage::Ward)]
    linkage: Linkage,
    /// k-means restarts (the best is kept).
    #[arg(long, default_value_t = 4)]
    restarts: usize,
    /// How images are resized.
    #[arg(long, default_value = "eval")]
    resize: Resize,
    /// Baseline: cluster raw normalised pixels instead of DINO features.
    #[arg(long)]
    raw_pixels: bool,
    /// The 2-D map of the collection.
    #[arg(long, value_enum, default_value_t = MapKind::Tsne)]
    map: MapKind,
    /// t-SNE perplexity (lowered for small collections).
    #[arg(long, default_value_t = 30.0)]
    perplexity: f32,
    /// Thumbnails drawn on the map (the rest are dots).
    #[arg(long, default_value_t = 1500)]
    map_images: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Keep the features in this file and reuse them next time.
    #[arg(long, value_name = "FILE")]
    index_file: Option<PathBuf>,
    /// Seed of the k-means initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the results go.
    #[arg(long, short, default_value = "clusters")]
    out: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Method {
    /// k-means with k-means++ seeding and restarts.
    Kmeans,
    /// Hierarchical clustering cut at k clusters (up to 20,000 images).
    Agglomerative,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Linkage {
    /// Merges that least increase the within-cluster variance.
    Ward,
    /// Mean distance between the members of two clusters.
    Average,
    /// Largest distance between the members of two clusters.
    Complete,
    /// Smallest distance between the members of two clusters (chains).
    Single,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum MapKind {
    /// t-SNE of the features (neighbourhoods kept; slow above ~10k images).
    Tsne,
    /// The first two principal components (fast, linear).
    Pca,
    /// No map.
    None,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // under an MPI launcher the ranks share the extraction; rank 0 goes on and writes
    let ranks = Ranks::from_launcher()?;
    let result = run_on(args, &ranks);
    ranks.finish(result)
}

fn run_on(args: Args, ranks: &Ranks) -> anyhow::Result<()> {
    let folder = ImageFolder::scan(&args.dir)?;
    let t0 = std::time::Instant::now();
    let (files, mut rows, dim) = if args.raw_pixels {
        let w = args.weights.load_weights()?;
        let (rows, d) = crate::commands::knn::pixels(&folder.files, &args.resize, w.config.patch)?;
        (folder.files.clone(), rows, d)
    } else {
        let engine = args.weights.load_engine()?;
        let d = engine.feature_dim();
        let signature = format!(
            "cls:{}:{}",
            args.resize,
            weights_identity(&args.weights.weights)?
        );
        let recipe = Recipe {
            resize: &args.resize,
            batch_size: args.batch_size,
            label: "features",
            dim: d,
        };
        let Some((store, _)) = FeatureStore::of_files(
            ranks,
            args.index_file.as_deref(),
            &signature,
            &engine,
            &folder.files,
            &recipe,
            |imgs| engine.cls(imgs),
        )?
        else {
            return Ok(()); // another MPI rank: its share is done
        };
        let files = store.entries.iter().map(|e| e.path.clone()).collect();
        (files, store.rows.to_vec(), d)
    };
    let features_s = t0.elapsed().as_secs_f64();
    let n = files.len();
    anyhow::ensure!(n >= 2, "fewer than 2 readable images to cluster");
    l2_normalize(&mut rows, dim);
    // class of each kept file, when the folder has class subfolders
    let classes: Option<Vec<usize>> = folder.labels.as_ref().map(|labels| {
        let by_path: std::collections::HashMap<&Path, usize> = folder
            .files
            .iter()
            .map(|f| f.as_path())
            .zip(labels.iter().copied())
            .collect();
        files.iter().map(|f| by_path[f.as_path()]).collect()
    });
    let k = args
        .k
        .unwrap_or(if folder.classes.len() >= 2 {
            folder.classes.len()
        } else {
            10
        })
        .min(n);
    anyhow::ensure!(k >= 1, "--k must be at least 1");
    let t1 = std::time::Instant::now();
    let labels = match args.method {
        Method::Kmeans => kmeans(&rows, dim, k, args.restarts, 300, args.seed)?.labels,
        Method::Agglomerative => agglomerative(&rows, dim, k, args.linkage)?,
    };
    let cluster_s = t1.elapsed().as_secs_f64();
    let scores = classes.as_ref().map(|c| {
        serde_json::json!({
            "nmi": metrics::nmi(c, &labels),
            "purity": metrics::purity(c, &labels),
            "adjusted_rand": metrics::adjusted_rand(c, &labels),
        })
    });

    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(args.out.join("clusters.csv"))?);
    writeln!(
        f,
        "file,cluster{}",
        if classes.is_some() { ",class" } else { "" }
    )?;
    for (i, p) in files.iter().enumerate() {
        let class = classes
            .as_ref()
            .map(|c| format!(",{}", folder.classes[c[i]]))
            .unwrap_or_default();
        writeln!(f, "\"{}\",{}{class}", p.display(), labels[i])?;
    }
    f.flush()?;
    let mut sizes = vec![0usize; k];
    labels.iter().for_each(|&l| sizes[l] += 1);

    let t2 = std::time::Instant::now();
    let coords = match args.map {
        MapKind::None => None,
        MapKind::Pca => Some(pca_map(&rows, dim)?),
        MapKind::Tsne => Some(tsne_map(&rows, dim, args.perplexity)?),
    };
    let map_s = t2.elapsed().as_secs_f64();
    if let Some(xy) = &coords {
        draw_map(&args.out, &files, &labels, xy, args.map_images)?;
    }
    draw_clusters(&args.out, &files, &labels, k)?;
    let report = serde_json::json!({
        "folder": args.dir,
        "images": n,
        "features": if args.raw_pixels { "raw pixels" } else { "DINO CLS" },
        "method": choice_name(&args.method),
        "k": k,
        "cluster_sizes": sizes,
        "scores_against_subfolders": scores,
        "map": choice_name(&args.map),
        "seconds": {"features": features_s, "clustering": cluster_s, "map": map_s},
    });
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!(
        "{n} images in {k} clusters ({}, {}); sizes {:?}",
        choice_name(&args.method),
        if args.raw_pixels {
            "raw pixels"
        } else {
            "DINO features"
        },
        sizes
    );
    if let Some(s) = scores {
        println!(
            "against the {} subfolders: NMI {:.4}, purity {:.4}, adjusted Rand {:.4}",
            folder.classes.len(),
            s["nmi"].as_f64().unwrap_or(0.0),
            s["purity"].as_f64().unwrap_or(0.0),
            s["adjusted_rand"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "wrote {}/{{clusters.csv,report.json,clusters.png{}}}",
        args.out.display(),
        if coords.is_some() {
            ",map.png,map.html"
        } else {
            ""
        }
    );
    Ok(())
}

/// Agglomerative clustering cut at `k` clusters (Euclidean distances of the rows).
fn agglomerative(rows: &[f32], d: usize, k: usize, linkage: Linkage) -> anyhow::Result<Vec<usize>> {
    let n = rows.len() / d;
    anyhow::ensure!(
        n <= 20_000,
        "agglomerative clustering keeps all {n}^2/2 distances: use --method kmeans above 20,000 images"
    );
    let method = match linkage {
        Linkage::Ward => kodama::Method::Ward,
        Linkage::Average => kodama::Method::Average,
        Linkage::Complete => kodama::Method::Complete,
        Linkage::Single => kodama::Method::Single,
    };
    let mut condensed = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let (a, b) = (&rows[i * d..(i + 1) * d], &rows[j * d..(j + 1) * d]);
            condensed.push(
                a.iter()
                    .zip(b)
                    .map(|(x, y)| ((x - y) * (x - y)) as f64)
                    .sum::<f64>()
                    .sqrt(),
            );
        }
    }
    let dendrogram = kodama::linkage(&mut condensed, n, method);
    // replay the first n - k merges with a union-find
    let mut parent: Vec<usize> = (0..2 * n).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for (s, step) in dendrogram.steps().iter().take(n - k).enumerate() {
        let new = n + s;
        let (a, b) = (
            find(&mut parent, step.cluster1),
            find(&mut parent, step.cluster2),
        );
        parent[a] = new;
        parent[b] = new;
    }
    let mut ids = std::collections::HashMap::new();
    Ok((0..n)
        .map(|i| {
            let r = find(&mut parent, i);
            let next = ids.len();
            *ids.entry(r).or_insert(next)
        })
        .collect())
}

fn pca_map(rows: &[f32], d: usize) -> anyhow::Result<Vec<f32>> {
    Ok(Pca::fit(rows, d, 2)?.apply(rows)?)
}

/// Barnes-Hut t-SNE from a PCA start (deterministic, and what openTSNE recommends).
fn tsne_map(rows: &[f32], d: usize, perplexity: f32) -> anyhow::Result<Vec<f32>> {
    let n = rows.len() / d;
    let perplexity = perplexity.min(((n - 1) / 3) as f32 - 1.0);
    if n < 8 || perplexity < 2.0 {
        eprintln!("too few images for t-SNE: the map uses PCA");
        return pca_map(rows, d);
    }
    let mut init = pca_map(rows, d)?;
    let sd = (init.iter().step_by(2).map(|v| v * v).sum::<f32>() / n as f32)
        .sqrt()
        .max(1e-12);
    init.iter_mut().for_each(|v| *v *= 1e-4 / sd);
    let samples: Vec<&[f32]> = rows.chunks_exact(d).collect();
    let progress = crate::features::bar(1, "t-SNE");
    progress.enable_steady_tick(std::time::Duration::from_millis(200));
    let out = std::panic::catch_unwind(|| {
        bhtsne::tSNE::<f32, &[f32], 2>::new(&samples)
            .perplexity(perplexity)
            .epochs(1000)
            .initial_embedding(init)
            .barnes_hut(0.5, |a, b| {
                a.iter()
                    .zip(b.iter())
                    .map(|(x, y)| (x - y) * (x - y))
                    .sum::<f32>()
                    .sqrt()
            })
            .embedding()
    })
    .map_err(|_| anyhow::anyhow!("t-SNE failed on these features; try --map pca"))?;
    progress.finish_and_clear();
    anyhow::ensure!(
        out.iter().all(|v| v.is_finite()),
        "t-SNE diverged; try --map pca"
    );
    Ok(out)
}

fn cluster_colour(c: usize) -> Rgb<u8> {
    let col = colorous::TABLEAU10[c % 10];
    Rgb([col.r, col.g, col.b])
}

fn draw_map(
    out: &Path,
    files: &[PathBuf],
    labels: &[usize],
    xy: &[f32],
    max_images: usize,
) -> anyhow::Result<()> {
    let n = files.len();
    let (size, thumb, margin) = (2400u32, 48u32, 40f32);
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for p in xy.chunks_exact(2) {
        (x0, x1, y0, y1) = (x0.min(p[0]), x1.max(p[0]), y0.min(p[1]), y1.max(p[1]));
    }
    let span = (x1 - x0).max(y1 - y0).max(1e-12);
    let place = |i: usize| {
        let s = size as f32 - 2.0 * margin - thumb as f32;
        (
            margin + (xy[2 * i] - x0) / span * s,
            margin + (xy[2 * i + 1] - y0) / span * s,
        )
    };
    let mut canvas = RgbImage::from_pixel(size, size, Rgb([255, 255, 255]));
    for (i, &label) in labels.iter().enumerate() {
        let (x, y) = place(i);
        let c = cluster_colour(label);
        for dy in 0..6 {
            for dx in 0..6 {
                let (px, py) = (x as u32 + thumb / 2 + dx, y as u32 + thumb / 2 + dy);
                if px < size && py < size {
                    canvas.put_pixel(px, py, c);
                }
            }
        }
    }
    let step = n.div_ceil(max_images.max(1));
    let mut html = String::from("<div style=\"position:relative;width:2400px;height:2400px\">");
    let shown: Vec<usize> = (0..n).step_by(step.max(1)).collect();
    let tiles: Vec<RgbImage> = {
        use rayon::prelude::*;
        shown
            .par_iter()
            .map(|&i| gallery::thumbnail(&files[i], thumb - 4))
            .collect()
    };
    for (&i, t) in shown.iter().zip(&tiles) {
        let (x, y) = place(i);
        let mut framed = RgbImage::from_pixel(thumb, thumb, cluster_colour(labels[i]));
        image::imageops::replace(&mut framed, t, 2, 2);
        image::imageops::replace(&mut canvas, &framed, x as i64, y as i64);
        html += &format!(
            "<img title=\"{} (cluster {})\" src=\"{}\" style=\"position:absolute;left:{}px;top:{}px;\
             width:{thumb}px\">",
            gallery::escape(&files[i].display().to_string()),
            labels[i],
            gallery::data_uri(&framed),
            x as u32,
            y as u32
        );
    }
    html += "</div>";
    canvas.save(out.join("map.png"))?;
    std::fs::write(
        out.join("map.html"),
        gallery::page("Map of the collection (t-SNE of DINO features)", &html),
    )?;
    Ok(())
}

/// A row of example thumbnails per cluster.
fn draw_clusters(out: &Path, files: &[PathBuf], labels: &[usize], k: usize) -> anyhow::Result<()> {
    let rows: Vec<Vec<RgbImage>> = (0..k)
        .map(|c| {
            files
                .iter()
                .zip(labels)
                .filter(|(_, l)| **l == c)
                .take(12)
                .map(|(f, _)| gallery::thumbnail(f, 96))
                .collect()
        })
        .collect();
    gallery::group_rows(&rows, 12, 96).save(out.join("clusters.png"))?;
    Ok(())
}
