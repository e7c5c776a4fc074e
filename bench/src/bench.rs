//! Forward-pass, training-step and augmentation timings on this machine, printed as a table
//! next to PyTorch and ONNX Runtime (or torchvision) on the same model, threads and inputs,
//! measured in the same run (by `tests/reference/bench_reference.py`, when Python with torch
//! is installed).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use burn::tensor::{Tensor, TensorData};
use dino_core::augment::{MultiCropConfig, multi_crop};
use dino_core::cpu::CpuVit;
use dino_core::data::CropBatch;
use dino_core::train::{AttentionKernel, Precision, TrainConfig, Trainer};
use dino_core::{VisionTransformer, VitConfig};

use dino_native::backend::Backend;
use dino_native::choice_name;

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
    /// Time PyTorch and ONNX Runtime too.
    #[arg(long, value_enum, default_value_t = Reference::Auto)]
    reference: Reference,
    /// Python interpreter for the reference.
    #[arg(long, default_value = "python3")]
    python: String,
    /// The reference timing script.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/reference/bench_reference.py"))]
    reference_script: PathBuf,
    /// Compute backends, each timed in the same rounds (`--device cpu,libtorch`: burn-flex and
    /// LibTorch's CPU kernels beside PyTorch).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "cpu")]
    device: Vec<Backend>,
    /// Which dino-rs engines to time on the CPU.
    #[arg(long, value_enum, default_value_t = Engines::All)]
    engine: Engines,
    /// Forward: how the CPU engine's linear layers multiply, each timed as its own engine
    /// (`auto`: the default, packed weights for products of at most 512 rows where the CPU has
    /// AVX-512F, `gemm` for the rest; `gemm`: f32 on the gemm crate; `f32`: f32 on weights
    /// packed at load time, AVX-512F; `bf16`: bf16 inputs with f32 sums, AVX-512 BF16; see
    /// `CpuVit::with_products`).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "auto")]
    cpu_products: Vec<CpuProducts>,
    /// What to time.
    #[arg(long, value_enum, default_value_t = Mode::Forward)]
    mode: Mode,
    /// Train step / augment: global crop size.
    #[arg(long, default_value_t = 224)]
    global_size: u32,
    /// Train step / augment: local crop size.
    #[arg(long, default_value_t = 96)]
    local_size: u32,
    /// Train step / augment: local crops per image.
    #[arg(long, default_value_t = 8)]
    local_crops: usize,
    /// Train step: head output dimension.
    #[arg(long, default_value_t = 65536)]
    out_dim: usize,
    /// Augment: the photo to crop.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/images/chelsea.png"))]
    image: PathBuf,
    /// Interleaved rounds: each round times every engine in turn.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Train step: split each batch over this many devices of `--device`, as `dino train
    /// --devices` does (on the CPU: that many parts of the batch at the same time). [default:
    /// what `dino train` does for these batch sizes]
    #[arg(long, value_name = "N")]
    devices: Option<usize>,
    /// Train step: precisions of the matrix products to time (`dino train --precision`); the
    /// PyTorch reference times autocast (AMP) in each half precision given, with a GradScaler
    /// for f16, beside its f32 rows.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "f32")]
    precision: Vec<Precision>,
    /// Train step: the attention kernels to time on GPU backends (`dino train
    /// --attention-kernel`): Burn's composed operations and/or dino-rs's fused CubeCL kernels;
    /// burn-flex and LibTorch run their own attention whatever this says (timed once).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "composed")]
    attention_kernel: Vec<AttentionKernel>,
    /// Train step: where the PyTorch reference runs.
    #[arg(long, value_enum, default_value_t = TorchDevice::Cpu)]
    torch_device: TorchDevice,
    /// Also write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Reference {
    /// When python3 can import torch.
    Auto,
    /// Always (an error when the reference cannot run).
    On,
    Off,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Engines {
    /// The CPU engine and burn-flex.
    All,
    /// The CPU engine only.
    Cpu,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum TorchDevice {
    Cpu,
    /// An NVIDIA GPU, timed in fp32 and TF32.
    Cuda,
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
    Ours(Box<dyn FnMut(usize) -> anyhow::Result<()> + 'a>),
    Reference(usize),
}

/// Precision of the CPU engine's linear layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CpuProducts {
    /// f32, packed weights for products of few rows on AVX-512F, `gemm` for the rest (the
    /// default).
    Auto,
    /// f32 on the `gemm` crate.
    Gemm,
    /// f32 on weights packed at load time (AVX-512F micro-kernel).
    F32,
    /// bf16 inputs, f32 sums (AVX-512 BF16).
    Bf16,
}

/// What `--mode` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The ViT forward pass (CLS output) at `--size`.
    Forward,
    /// One DINO training iteration: official head (`--out-dim`), 2 global crops of
    /// `--global-size` and `--local-crops` of `--local-size`, AdamW, clipping, EMA.
    TrainStep,
    /// The multi-crop augmentation of one image (`--image`), on one core.
    Augment,
}

impl Mode {
    /// `--mode` of bench_reference.py.
    fn reference_name(self) -> &'static str {
        match self {
            Mode::Forward => "forward",
            Mode::TrainStep => "train_step",
            Mode::Augment => "augment",
        }
    }
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
    anyhow::ensure!(!args.device.is_empty(), "--device needs a backend");
    let threads = threads.unwrap_or_else(rayon::current_num_threads);
    match args.mode {
        Mode::Forward => {
            // per backend: the model, its inputs (the same values) and the CPU engine on `cpu`
            let host_inputs: Vec<Vec<f32>> = {
                let mut rng = dino_core::rng::seeded(0);
                let n = |b: usize| b * 3 * args.size * args.size;
                let inputs = args.batch.iter();
                inputs
                    .map(|&b| dino_core::rng::normal(&mut rng, n(b), 0.0, 1.0))
                    .collect()
            };
            let mut setups = Vec::new();
            for &backend in &args.device {
                let device = backend.device()?;
                let model = VisionTransformer::new(&config, &device)?;
                let mut engines = Vec::new();
                if matches!(backend, Backend::Cpu) {
                    for &p in &args.cpu_products {
                        let engine = CpuVit::from_model(&model)?;
                        use dino_core::cpu::{LinearProducts, packed};
                        let (name, products) = match p {
                            CpuProducts::Auto => ("auto", LinearProducts::Auto),
                            CpuProducts::Gemm => ("gemm", LinearProducts::Gemm),
                            CpuProducts::F32 => {
                                anyhow::ensure!(
                                    packed::f32_native(),
                                    "--cpu-products f32 needs AVX-512F, which this CPU lacks"
                                );
                                ("packed f32", LinearProducts::PackedF32)
                            }
                            CpuProducts::Bf16 => {
                                anyhow::ensure!(
                                    packed::bf16_native(),
                                    "--cpu-products bf16 needs AVX-512 BF16, which this CPU \
                                     lacks (it would time a portable emulation)"
                                );
                                ("bf16", LinearProducts::Bf16)
                            }
                        };
                        engines.push((
                            format!("dino-rs CPU engine {name}"),
                            engine.with_products(products),
                        ));
                    }
                }
                let inputs: Vec<Tensor<4>> = (args.batch.iter().zip(&host_inputs))
                    .map(|(&b, x)| {
                        let shape = [b, 3, args.size, args.size];
                        Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &device)
                    })
                    .collect();
                setups.push((backend, model, engines, inputs));
            }
            let (size, batches, host_inputs) = (args.size, &args.batch, &host_inputs);
            let mut runners: Vec<(String, Runner)> = Vec::new();
            for (backend, model, engines, inputs) in &setups {
                for (name, engine) in engines {
                    runners.push((
                        name.clone(),
                        Runner::Ours(Box::new(move |i| {
                            engine.forward(&host_inputs[i], batches[i], size, size)?;
                            Ok(())
                        })),
                    ));
                }
                if args.engine != Engines::Cpu || engines.is_empty() {
                    runners.push((
                        burn_name(*backend),
                        Runner::Ours(Box::new(move |i| {
                            // reading back forces the (possibly asynchronous) backend to finish
                            let _ = model.forward(inputs[i].clone())?.into_data();
                            Ok(())
                        })),
                    ));
                }
            }
            let what = format!(
                "{} forward (CLS output), {}x{} input",
                config.name(),
                size,
                size
            );
            measure(&args, threads, runners, &what)
        }
        Mode::TrainStep => {
            let cfg = TrainConfig {
                arch: args.arch.clone(),
                patch_size: args.patch,
                out_dim: args.out_dim,
                global_crop_size: args.global_size,
                local_crop_size: args.local_size,
                local_crops_number: args.local_crops,
                epochs: 1000,
                warmup_epochs: 0,
                batch_size: args.batch[0],
                ..TrainConfig::default()
            };
            // per backend x precision: a trainer, its batch split as `dino train` splits it
            let mut trainers = Vec::new();
            for &backend in &args.device {
                let parts = args.devices.unwrap_or_else(|| {
                    let by_batch = args.batch.iter().map(|&b| backend.default_parts(b));
                    by_batch.min().unwrap_or(1)
                });
                if let Some(b) = args.batch.iter().find(|&&b| b % parts.max(1) != 0) {
                    anyhow::bail!("--batch {b} does not split over --devices {parts}");
                }
                let devices = backend.devices(parts)?;
                // the fused kernels exist on CubeCL devices only
                let kernels: &[AttentionKernel] = if backend.is_cube() {
                    &args.attention_kernel
                } else {
                    &[AttentionKernel::Composed]
                };
                for &precision in &args.precision {
                    for &attention_kernel in kernels {
                        let cfg = TrainConfig {
                            precision,
                            attention_kernel,
                            ..cfg.clone()
                        };
                        let mut trainer = Trainer::new(cfg, 1, &devices[0])?;
                        trainer.set_devices(devices.clone())?;
                        let mut name = format!("{} {precision}", burn_name(backend));
                        if kernels.len() > 1 || attention_kernel != AttentionKernel::Composed {
                            name += &format!(" {attention_kernel} attention");
                        }
                        if parts > 1 {
                            name += &format!(", {parts} parts");
                        }
                        trainers.push((name, std::cell::RefCell::new(trainer)));
                    }
                }
            }
            let mut rng = dino_core::rng::seeded(0);
            let batches: Vec<CropBatch> = args
                .batch
                .iter()
                .map(|&b| {
                    let (g, l) = (cfg.global_crop_size as usize, cfg.local_crop_size as usize);
                    CropBatch {
                        globals: dino_core::rng::normal(&mut rng, 2 * b * 3 * g * g, 0.0, 1.0),
                        locals: dino_core::rng::normal(
                            &mut rng,
                            cfg.local_crops_number * b * 3 * l * l,
                            0.0,
                            1.0,
                        ),
                        batch: b,
                    }
                })
                .collect();
            let batches = &batches;
            let runners = trainers
                .iter()
                .map(|(name, trainer)| {
                    let run = move |i: usize| -> anyhow::Result<()> {
                        trainer.borrow_mut().step(&batches[i])?;
                        Ok(())
                    };
                    (name.clone(), Runner::Ours(Box::new(run)))
                })
                .collect();
            let what = format!(
                "{} DINO training step (head {} -> {}, 2 x {} px + {} x {} px crops per image)",
                config.name(),
                cfg.head_hidden_dim,
                cfg.out_dim,
                cfg.global_crop_size,
                cfg.local_crops_number,
                cfg.local_crop_size
            );
            measure(&args, threads, runners, &what)
        }
        Mode::Augment => {
            let img = dino_core::imaging::load_image(&args.image)?;
            let crops = MultiCropConfig {
                global_size: args.global_size,
                local_size: args.local_size,
                local_crops: args.local_crops,
                ..MultiCropConfig::default()
            };
            let mut rng = dino_core::rng::seeded(0);
            let (img, crops, batches) = (&img, &crops, &args.batch);
            let runners = vec![(
                "dino-rs multi-crop (1 core)".to_string(),
                Runner::Ours(Box::new(move |i| {
                    for _ in 0..batches[i] {
                        multi_crop(img, crops, &mut rng)?;
                    }
                    Ok(())
                })),
            )];
            let what = format!(
                "multi-crop augmentation of {} ({}x{}): 2 x {} px + {} x {} px, per image",
                args.image.display(),
                img.width(),
                img.height(),
                args.global_size,
                args.local_crops,
                args.local_size
            );
            measure(&args, 1, runners, &what)
        }
    }
}

fn burn_name(device: Backend) -> String {
    match device {
        Backend::Cpu => "dino-rs burn-flex".to_string(),
        Backend::Cuda if cfg!(feature = "tch") => "dino-rs LibTorch CUDA".to_string(),
        Backend::Libtorch => "dino-rs LibTorch CPU".to_string(),
        other => format!("dino-rs burn {other:?}").to_lowercase(),
    }
}

/// Times every runner in interleaved rounds (each round times every engine in turn, so a
/// drifting machine speed hits all alike), then prints and saves the table.
fn measure(
    args: &Args,
    threads: usize,
    mut runners: Vec<(String, Runner)>,
    what: &str,
) -> anyhow::Result<()> {
    let mut reference = None;
    let mut reference_note = None;
    if args.reference != Reference::Off {
        match ReferenceServer::start(args, threads) {
            Ok(server) => {
                for (k, name) in server.engines.iter().enumerate() {
                    runners.push((name.clone(), Runner::Reference(k)));
                }
                reference = Some(server);
            }
            Err(e) if args.reference == Reference::Auto => reference_note = Some(format!("{e:#}")),
            Err(e) => return Err(e),
        }
    }
    eprintln!(
        "timing {what}, batches {:?}, {threads} threads, {} rounds of {} engines...",
        args.batch,
        args.rounds,
        runners.len()
    );
    let per_round = args.iters.div_ceil(args.rounds);
    let mut times = vec![vec![Vec::new(); args.batch.len()]; runners.len()];
    for round in 0..args.rounds {
        for (bi, &b) in args.batch.iter().enumerate() {
            for (ri, (_, runner)) in runners.iter_mut().enumerate() {
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
    print_table(args, what, threads, &results);
    if let Some(note) = reference_note {
        eprintln!("(no PyTorch reference: {note})");
    }
    if let Some(path) = &args.json {
        let v = serde_json::json!({
            "what": what, "threads": threads, "rounds": args.rounds, "results": results,
            "cpu": cpu_model(), "cpu_features": dino_core::cpu::cpu_features(),
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
            .args(["--mode", args.mode.reference_name()])
            .args(["--global-size", &args.global_size.to_string()])
            .args(["--local-size", &args.local_size.to_string()])
            .args(["--local-crops", &args.local_crops.to_string()])
            .args(["--out-dim", &args.out_dim.to_string()])
            .args(["--torch-device", &choice_name(&args.torch_device)])
            .arg("--precision")
            .args(args.precision.iter().map(|p| p.name()))
            .arg("--image")
            .arg(&args.image)
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

/// The CPU's model name (Linux `/proc/cpuinfo`), or the architecture elsewhere.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn print_table(args: &Args, what: &str, threads: usize, results: &[Timing]) {
    println!(
        "{what}, {threads} threads, median of {} runs in {} interleaved rounds",
        args.rounds * args.iters.div_ceil(args.rounds),
        args.rounds
    );
    println!("CPU: {} ({})", cpu_model(), dino_core::cpu::cpu_features());
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
