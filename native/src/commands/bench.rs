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
    /// Interleaved rounds: each round times every engine in turn.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Also write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Clone, Debug, serde::Serialize)]
struct Timing {
    engine: String,
    batch: usize,
    median_ms: f64,
    min_ms: f64,
    mean_ms: f64,
}

/// One engine under test: ours run in-process, the reference ones through the server.
enum Runner<'a> {
    Ours(Box<dyn Fn(usize) -> anyhow::Result<()> + 'a>),
    Reference(usize),
}

pub fn run(args: Args, threads: Option<usize>) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.iters > 0 && args.rounds > 0,
        "--iters and --rounds must be positive"
    );
    anyhow::ensure!(
        !args.batch.is_empty() && args.batch.iter().all(|&b| b > 0),
        "--batch needs positive sizes"
    );
    let config = VitConfig::preset(&args.arch, args.patch)?;
    let device = args.device.device()?;
    let model = VisionTransformer::new(&config, &device)?;
    let threads = threads.unwrap_or_else(rayon::current_num_threads);
    let engine = matches!(args.device, Backend::Cpu)
        .then(|| CpuVit::from_model(&model))
        .transpose()?;
    let inputs: Vec<(Tensor<4>, Vec<f32>)> = args
        .batch
        .iter()
        .map(|&b| {
            let x =
                Tensor::<4>::random([b, 3, args.size, args.size], Distribution::Default, &device);
            let host = x
                .clone()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap_or_default();
            (x, host)
        })
        .collect();
    let size = args.size;
    let mut runners: Vec<(String, Runner)> = Vec::new();
    if let Some(engine) = &engine {
        let inputs = &inputs;
        let batches = &args.batch;
        runners.push((
            "dino-rs CPU engine".into(),
            Runner::Ours(Box::new(move |i| {
                engine.forward(&inputs[i].1, batches[i], size, size)?;
                Ok(())
            })),
        ));
    }
    if args.engine != "cpu" || engine.is_none() {
        let name = match args.device {
            Backend::Cpu => "dino-rs burn-flex".to_string(),
            other => format!("dino-rs burn {other:?}").to_lowercase(),
        };
        let (model, inputs) = (&model, &inputs);
        runners.push((
            name,
            Runner::Ours(Box::new(move |i| {
                // reading back forces the (possibly asynchronous) backend to finish
                let _ = model.forward(inputs[i].0.clone())?.into_data();
                Ok(())
            })),
        ));
    }
    let mut reference = None;
    let mut reference_note = None;
    if args.reference != "off" {
        match ReferenceServer::start(&args, threads) {
            Ok(server) => {
                for (k, name) in server.engines.iter().enumerate() {
                    runners.push((name.clone(), Runner::Reference(k)));
                }
                reference = Some(server);
            }
            Err(e) if args.reference == "auto" => reference_note = Some(format!("{e:#}")),
            Err(e) => return Err(e),
        }
    }
    eprintln!(
        "timing {} at {}x{}, batches {:?}, {threads} threads, {} rounds of {} engines...",
        config.name(),
        args.size,
        args.size,
        args.batch,
        args.rounds,
        runners.len()
    );
    // Rounds interleave the engines, so drifting machine speed hits all of them alike.
    let per_round = args.iters.div_ceil(args.rounds);
    let mut times = vec![vec![Vec::new(); args.batch.len()]; runners.len()];
    for round in 0..args.rounds {
        for (bi, &b) in args.batch.iter().enumerate() {
            for (ri, (_, runner)) in runners.iter().enumerate() {
                let t = match runner {
                    Runner::Ours(f) => {
                        let warmup = if round == 0 { args.warmup } else { 1 };
                        time(warmup, per_round, || f(bi))?
                    }
                    Runner::Reference(k) => {
                        let server = reference.as_mut().expect("server");
                        if round == 0 {
                            server.time(*k, b, args.warmup)?;
                        }
                        server.time(*k, b, per_round)?
                    }
                };
                times[ri][bi].extend(t);
            }
        }
    }
    let mut results = Vec::new();
    for (bi, &b) in args.batch.iter().enumerate() {
        for (ri, (name, _)) in runners.iter().enumerate() {
            results.push(summarise(name.clone(), b, &mut times[ri][bi]));
        }
    }
    print_table(&args, &config, threads, &results);
    if let Some(note) = reference_note {
        eprintln!("(no PyTorch / ONNX Runtime reference: {note})");
    }
    if let Some(path) = &args.json {
        let v = serde_json::json!({
            "arch": config.name(), "size": args.size, "threads": threads,
            "rounds": args.rounds, "results": results,
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

/// `bench_reference.py --serve`: PyTorch and ONNX Runtime kept loaded in one Python process.
struct ReferenceServer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    engines: Vec<String>,
}

impl ReferenceServer {
    fn start(args: &Args, threads: usize) -> anyhow::Result<Self> {
        use std::io::BufRead;
        use std::process::Stdio;
        anyhow::ensure!(
            args.reference_script.exists(),
            "{} not found (run from the repository root)",
            args.reference_script.display()
        );
        let mut child = Command::new(&args.python)
            .arg(&args.reference_script)
            .args([
                "--serve",
                "--arch",
                &args.arch,
                "--patch",
                &args.patch.to_string(),
            ])
            .args([
                "--size",
                &args.size.to_string(),
                "--threads",
                &threads.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", args.python))?;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let ready: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                let _ = child.wait();
                anyhow::bail!(
                    "the reference script failed: {}",
                    err.lines().last().unwrap_or("no output")
                );
            }
        };
        let engines = ready["ready"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            child,
            stdin,
            stdout,
            engines,
        })
    }

    fn time(&mut self, engine: usize, batch: usize, iters: usize) -> anyhow::Result<Vec<f64>> {
        use std::io::{BufRead, Write};
        if iters == 0 {
            return Ok(Vec::new());
        }
        writeln!(self.stdin, "{engine} {batch} {iters}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        serde_json::from_str(&line).with_context(|| format!("reference reply {line:?}"))
    }
}

impl Drop for ReferenceServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn print_table(args: &Args, config: &VitConfig, threads: usize, results: &[Timing]) {
    println!(
        "{} forward (CLS output), {}x{} input, {} threads, median of {} runs in {} interleaved rounds",
        config.name(),
        args.size,
        args.size,
        threads,
        args.rounds * args.iters.div_ceil(args.rounds),
        args.rounds
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
