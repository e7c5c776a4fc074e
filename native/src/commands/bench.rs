//! `dino bench`: forward-pass timing of a ViT on this machine, printed as a table next to
//! PyTorch and ONNX Runtime on the same model, threads and inputs, measured in the same run
//! (by `tests/reference/bench_reference.py`, when Python with torch is installed).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use burn::tensor::{Distribution, Tensor};
use dino_core::cpu::CpuVit;
use dino_core::{VisionTransformer, VitConfig};

use crate::backend::Backend;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Architecture: vit_tiny, vit_small or vit_base.
    #[arg(long, default_value = "vit_small")]
    arch: String,
    /// Patch size.
    #[arg(long, default_value_t = 16)]
    patch: usize,
    /// Square input size in pixels.
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Batch sizes to time.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,
    /// Timed iterations per batch size (after warm-up).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Untimed warm-up iterations.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Time PyTorch and ONNX Runtime too: `auto` (when python3 can import torch), `on`, `off`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    reference: String,
    /// Python interpreter for the reference.
    #[arg(long, default_value = "python3")]
    python: String,
    /// The reference timing script.
    #[arg(long, default_value = "tests/reference/bench_reference.py")]
    reference_script: PathBuf,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    device: Backend,
    /// Which dino-rs engines to time on the CPU: `all` (the CPU engine and burn-flex) or `cpu`.
    #[arg(long, default_value = "all", value_parser = ["all", "cpu"])]
    engine: String,
    /// Also write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Timing {
    engine: String,
    batch: usize,
    median_ms: f64,
    min_ms: f64,
    mean_ms: f64,
}

pub fn run(args: Args, threads: Option<usize>) -> anyhow::Result<()> {
    anyhow::ensure!(args.iters > 0, "--iters must be positive");
    anyhow::ensure!(
        !args.batch.is_empty() && args.batch.iter().all(|&b| b > 0),
        "--batch needs positive sizes"
    );
    let config = VitConfig::preset(&args.arch, args.patch)?;
    let device = args.device.device()?;
    let model = VisionTransformer::new(&config, &device)?;
    let threads = threads.unwrap_or_else(rayon::current_num_threads);
    eprintln!(
        "timing {} at {}x{}, batches {:?}, {threads} threads...",
        config.name(),
        args.size,
        args.size,
        args.batch,
    );
    let engine = matches!(args.device, Backend::Cpu)
        .then(|| CpuVit::from_model(&model))
        .transpose()?;
    let burn_name = match args.device {
        Backend::Cpu => "dino-rs burn-flex".to_string(),
        other => format!("dino-rs burn {other:?}").to_lowercase(),
    };
    let mut results = Vec::new();
    for &b in &args.batch {
        let x = Tensor::<4>::random([b, 3, args.size, args.size], Distribution::Default, &device);
        if let Some(engine) = &engine {
            let host = x
                .clone()
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let mut times = time(args.warmup, args.iters, || {
                engine.forward(&host, b, args.size, args.size)?;
                Ok(())
            })?;
            results.push(summarise("dino-rs CPU engine".into(), b, &mut times));
        }
        if args.engine != "cpu" || engine.is_none() {
            let mut times = time(args.warmup, args.iters, || {
                // reading back forces the (possibly asynchronous) backend to finish
                let _ = model.forward(x.clone())?.into_data();
                Ok(())
            })?;
            results.push(summarise(burn_name.clone(), b, &mut times));
        }
    }
    let mut reference_note = None;
    if args.reference != "off" {
        match run_reference(&args, threads) {
            Ok(mut r) => results.append(&mut r),
            Err(e) if args.reference == "auto" => reference_note = Some(format!("{e:#}")),
            Err(e) => return Err(e),
        }
    }
    print_table(&args, &config, threads, &results);
    if let Some(note) = reference_note {
        eprintln!("(no PyTorch / ONNX Runtime reference: {note})");
    }
    if let Some(path) = &args.json {
        let v = serde_json::json!({
            "arch": config.name(), "size": args.size, "threads": threads,
            "results": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn time(
    warmup: usize,
    iters: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        let t = Instant::now();
        f()?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(times)
}

fn summarise(engine: String, batch: usize, times: &mut [f64]) -> Timing {
    times.sort_by(f64::total_cmp);
    Timing {
        engine,
        batch,
        median_ms: times[times.len() / 2],
        min_ms: times[0],
        mean_ms: times.iter().sum::<f64>() / times.len() as f64,
    }
}

fn run_reference(args: &Args, threads: usize) -> anyhow::Result<Vec<Timing>> {
    anyhow::ensure!(
        args.reference_script.exists(),
        "{} not found (run from the repository root)",
        args.reference_script.display()
    );
    let batches: Vec<String> = args.batch.iter().map(|b| b.to_string()).collect();
    let out = Command::new(&args.python)
        .arg(&args.reference_script)
        .args(["--arch", &args.arch, "--patch", &args.patch.to_string()])
        .args([
            "--size",
            &args.size.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .args([
            "--iters",
            &args.iters.to_string(),
            "--warmup",
            &args.warmup.to_string(),
        ])
        .arg("--batch")
        .args(&batches)
        .output()
        .with_context(|| format!("running {}", args.python))?;
    anyhow::ensure!(
        out.status.success(),
        "the reference script failed: {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).with_context(|| format!("parsing the reference output {line:?}"))
}

fn print_table(args: &Args, config: &VitConfig, threads: usize, results: &[Timing]) {
    println!(
        "{} forward (CLS output), {}x{} input, {} threads, median of {} runs",
        config.name(),
        args.size,
        args.size,
        threads,
        args.iters
    );
    println!(
        "| {:<28} | {:>5} | {:>10} | {:>10} | {:>9} | {:>12} |",
        "engine", "batch", "median ms", "min ms", "img/s", "vs ours"
    );
    println!(
        "|{:-<30}|{:->7}|{:->12}|{:->12}|{:->11}|{:->14}|",
        "", "", "", "", "", ""
    );
    for r in results {
        let ours = results
            .iter()
            .find(|o| o.engine.starts_with("dino-rs") && o.batch == r.batch)
            .map(|o| o.median_ms);
        let ratio = ours
            .map(|o| format!("{:.2}x", r.median_ms / o))
            .unwrap_or_default();
        println!(
            "| {:<28} | {:>5} | {:>10.1} | {:>10.1} | {:>9.1} | {:>12} |",
            r.engine,
            r.batch,
            r.median_ms,
            r.min_ms,
            r.batch as f64 * 1e3 / r.median_ms,
            ratio
        );
    }
}
