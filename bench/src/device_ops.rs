//! Each tensor op the ViT uses, run on a GPU backend's default adapter and on burn-flex, with
//! the largest difference printed: the first thing to run where a GPU (or a software adapter)
//! gives features that differ from the CPU's, to name the op. Exits 1 when an op differs by
//! more than 1e-5 of its largest value; the half-precision products (`--precision f16|bf16`)
//! where the adapter has them, each within 3x the CPU's distance from the f32 product.
//!
//!     cargo run --release -p dino-bench --features vulkan,wgpu --bin dino-device-ops -- vulkan
//!     cargo run --release -p dino-bench --features wgpu --bin dino-device-ops -- wgpu  # WGSL
//!     SIZES="1,7,5;4,8,4" ONLY_MATMUL=1 ... -- wgpu      # matrix products of chosen m,k,n
//!
//! Found with it on this project's 2-core machines (2026-11-30, 2026-12-01): on Chromium's
//! SwiftShader Vulkan, CubeCL's own SPIR-V (a build with the `vulkan` feature, either
//! argument) multiplies wrongly whenever the inner dimension is not a multiple of 4 (the ViT's
//! attention-times-values product has 197 there), every other op right; its WGSL (a build with
//! `wgpu` alone, translated by naga) is right on every op, so CI tests the GPU path that way.
//! Lavapipe (Mesa 22.3.6 and 25.0.7, 2026-12-02) crashes compiling CubeCL's SPIR-V matmul
//! pipeline but runs its WGSL right, f16 products included (CI's f16 tests run on 25.0.7).
//! It also checks dino-rs's fused attention kernels (`--attention-kernel fused`) against Burn's
//! composed attention on the CPU, forward and gradient.
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Distribution, FloatDType, Tensor};

/// Runs ops on the CPU and on a GPU device and compares them; remembers any that differ.
struct Compare {
    cpu: Device,
    gpu: Device,
    failed: bool,
}

impl Compare {
    /// `op(device)` (inputs moved to `device` inside it) on the CPU and on the GPU: the
    /// largest difference, and whether it exceeds 1e-5 of the largest value.
    fn check<const D: usize>(&mut self, name: &str, op: impl Fn(&Device) -> Tensor<D>) {
        let read = |t: Tensor<D>| {
            let t = t.to_device(&self.cpu);
            t.into_data().try_to_vec::<f32>().expect("f32 values")
        };
        let (a, b) = (read(op(&self.cpu)), read(op(&self.gpu)));
        let d = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        let s = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        let ok = d <= 1e-5 * s.max(1.0) || d <= 1e-6;
        self.failed |= !ok;
        let verdict = if ok { "ok" } else { "WRONG" };
        println!("{name:42} max |diff| {d:.3e}  (max |x| {s:.3e})  {verdict}");
    }
}

impl Compare {
    /// The gradient of `sum(f(x) * r)` with respect to `x` (`r` fixed random weights, so that
    /// every output counts differently) on the CPU and on the GPU.
    fn check_grad<const D: usize, const E: usize>(
        &mut self,
        name: &str,
        x: &Tensor<D>,
        f: impl Fn(Tensor<D>) -> Tensor<E>,
    ) {
        let r = f(x.clone());
        let r = Tensor::<E>::random(r.shape(), Distribution::Normal(0.0, 1.0), &self.cpu);
        self.check(&format!("d/dx {name}"), |d| {
            let xv = x.clone().to_device(d).autodiff().require_grad();
            let y = f(xv.clone()) * r.clone().to_device(d).autodiff();
            let grads = y.sum().backward();
            xv.grad(&grads).expect("a gradient")
        });
    }
}

/// `SIZES="m,k,n;m,k,n"`: the matrix products to check.
fn sizes(text: &str) -> Result<Vec<[usize; 3]>, String> {
    text.split(';')
        .map(|t| {
            let d: Vec<usize> = t
                .split(',')
                .map(|x| x.trim().parse().map_err(|e| format!("SIZES {t:?}: {e}")))
                .collect::<Result<_, _>>()?;
            match d[..] {
                [m, k, n] if m > 0 && k > 0 && n > 0 => Ok([m, k, n]),
                _ => Err(format!("SIZES {t:?}: three positive sizes m,k,n")),
            }
        })
        .collect()
}

fn main() {
    // CubeCL's device threads catch their own panics (its bandwidth probe's, on software
    // adapters) and forward them: without the hook each printed a backtrace here
    dino_native::device_panics::install("These checks need a few MB: is the GPU in use?");
    let gpu = match std::env::args().nth(1).as_deref() {
        Some("wgpu") => Device::wgpu(Default::default()),
        #[cfg(feature = "vulkan")]
        _ => Device::vulkan(Default::default()),
        #[cfg(not(feature = "vulkan"))]
        _ => {
            eprintln!("error: built without the `vulkan` feature: run it with `wgpu`");
            std::process::exit(2);
        }
    };
    let cpu = Device::flex();
    let mut c = Compare {
        cpu: cpu.clone(),
        gpu,
        failed: false,
    };
    let normal =
        |shape: [usize; 2]| Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), &cpu);
    let products = match std::env::var("SIZES") {
        Ok(text) => sizes(&text).unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(2);
        }),
        Err(_) => vec![
            [4, 8, 4],
            [64, 64, 64],
            [197, 384, 1152],
            [3, 384, 128],
            [1, 7, 5],
            [197, 197, 64],
        ],
    };
    for [m, k, n] in products {
        let (a, b) = (normal([m, k]), normal([k, n]));
        c.check(&format!("matmul {m}x{k} @ {k}x{n}"), |d| {
            a.clone().to_device(d).matmul(b.clone().to_device(d))
        });
    }
    if std::env::var("ONLY_MATMUL").is_err() {
        other_ops(&mut c);
        gradients(&mut c);
        half_products(&mut c);
    }
    std::process::exit(c.failed as i32);
}

/// Every other op of the ViT's forward pass.
fn other_ops(c: &mut Compare) {
    let cpu = c.cpu.clone();
    let x = Tensor::<4>::random([2, 6, 197, 64], Distribution::Normal(0.0, 1.0), &cpu);
    let y = Tensor::<4>::random([2, 6, 64, 197], Distribution::Normal(0.0, 1.0), &cpu);
    let on = |t: &Tensor<4>, d: &Device| t.clone().to_device(d);
    c.check("batched matmul [2,6,197,64]@[2,6,64,197]", |d| {
        on(&x, d).matmul(on(&y, d))
    });
    c.check("q @ k^T (swap_dims)", |d| {
        on(&x, d).matmul(on(&x, d).swap_dims(2, 3))
    });
    c.check("softmax", |d| softmax(on(&x, d), 3));
    c.check("gelu", |d| gelu(on(&x, d)));
    c.check("mean_dim", |d| on(&x, d).mean_dim(3));
    c.check("var (layer norm statistic)", |d| on(&x, d).var(3));
    let img = Tensor::<4>::random([2, 3, 224, 224], Distribution::Normal(0.0, 1.0), &cpu);
    let w = Tensor::<4>::random([384, 3, 16, 16], Distribution::Normal(0.0, 0.05), &cpu);
    let bias = Tensor::<1>::random([384], Distribution::Normal(0.0, 0.05), &cpu);
    c.check("conv2d patch embed 16x16/16", |d| {
        let opt = ConvOptions::new([16, 16], [0, 0], [1, 1], 1);
        conv2d(on(&img, d), on(&w, d), Some(bias.clone().to_device(d)), opt)
    });
    let a = Tensor::<2>::random([3, 384], Distribution::Normal(0.0, 1.0), &cpu);
    let b = Tensor::<2>::random([5, 384], Distribution::Normal(0.0, 1.0), &cpu);
    c.check("cat rows", |d| {
        Tensor::cat(vec![a.clone().to_device(d), b.clone().to_device(d)], 0)
    });
    c.check("x * x.sum_dim(1).sqrt()", |d| {
        let g = a.clone().to_device(d);
        g.clone() * g.powf_scalar(2.0).sum_dim(1).sqrt()
    });
}

/// The backward pass of the ops training uses: each gradient on the GPU against the CPU's.
fn gradients(c: &mut Compare) {
    let cpu = c.cpu.clone();
    let normal =
        |shape: [usize; 2]| Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), &cpu);
    let x = normal([64, 384]);
    let w = normal([384, 256]);
    c.check_grad("x @ w", &x, |x| {
        let w = w.clone().to_device(&x.device()).autodiff();
        x.matmul(w)
    });
    let wt = normal([384, 197]);
    c.check_grad("x @ w (inner 197, transposed)", &normal([197, 197]), |x| {
        let w = wt.clone().to_device(&x.device()).autodiff();
        x.matmul(w.transpose())
    });
    // the GELU training uses (Burn's own takes the tanh approximation's gradient on CubeCL
    // devices: dino_core::model's writes it out there)
    c.check_grad("gelu (dino_core::model::gelu)", &x, dino_core::model::gelu);
    c.check_grad("softmax", &x, |x| softmax(x, 1));
    c.check_grad("softmax(x / 0.04) (teacher sharpening)", &x, |x| {
        softmax(x / 0.04, 1)
    });
    c.check_grad("log_softmax(x / 0.1) (student)", &x, |x| {
        burn::tensor::activation::log_softmax(x / 0.1, 1)
    });
    c.check_grad("layer norm (x - mean) / sqrt(var + eps)", &x, |x| {
        let (var, mean) = x.clone().var_mean_bias(1);
        (x - mean) / (var + 1e-6).sqrt()
    });
    c.check_grad(
        "x / |x| (dino_core::model::l2_normalize_rows)",
        &x,
        dino_core::model::l2_normalize_rows,
    );
    c.check_grad("mean_dim(0)", &x, |x| x.mean_dim(0));
    c.check_grad("sum_dim(1)", &x, |x| x.sum_dim(1));
    let img = Tensor::<4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &cpu);
    let k = Tensor::<4>::random([32, 3, 16, 16], Distribution::Normal(0.0, 0.05), &cpu);
    c.check_grad("conv2d patch embed (input)", &img, |x| {
        let opt = ConvOptions::new([16, 16], [0, 0], [1, 1], 1);
        conv2d(
            x.clone(),
            k.clone().to_device(&x.device()).autodiff(),
            None,
            opt,
        )
    });
    c.check_grad("conv2d patch embed (weight)", &k, |k| {
        let opt = ConvOptions::new([16, 16], [0, 0], [1, 1], 1);
        conv2d(img.clone().to_device(&k.device()).autodiff(), k, None, opt)
    });
    // `--attention-kernel fused`: dino-rs's own attention kernels on the GPU against Burn's
    // composed attention on the CPU, forward and gradient, at ViT-S/16's shape (6 heads of 64)
    let qkv = Tensor::<3>::random([2, 197, 3 * 384], Distribution::Normal(0.0, 1.0), &cpu);
    c.check("fused attention (--attention-kernel fused)", |d| {
        attention_core(qkv.clone().to_device(d), 6)
    });
    c.check_grad("fused attention (--attention-kernel fused)", &qkv, |x| {
        attention_core(x, 6)
    });
}

/// The attention core of `qkv` `[B, N, 3D]`: the fused kernels on a CubeCL device, Burn's
/// composed operations elsewhere (the CPU side of the comparison).
fn attention_core(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    dino_core::model::cube_attention::attention(&qkv, heads)
        .unwrap_or_else(|| dino_core::model::composed_attention(qkv, heads))
}

/// The products of `--precision f16|bf16` (inputs rounded to the half type, result in it):
/// no half product equals the f32 one, so each is measured by its distance from the f32
/// product of the unrounded inputs, on the GPU and on the CPU (burn-flex, which computes in
/// both half types), and is wrong when the GPU's is more than 3x the CPU's. An adapter without
/// the type says so (the trainer refuses that precision there).
fn half_products(c: &mut Compare) {
    let cpu = c.cpu.clone();
    for (name, half) in [("f16", FloatDType::F16), ("bf16", FloatDType::BF16)] {
        if !c.gpu.supports_dtype(DType::from(half)) {
            println!(
                "{name} products: no {name} arithmetic on this adapter (--precision {name} refused)"
            );
            continue;
        }
        for [m, k, n] in [[64, 64, 64], [197, 384, 1152], [197, 197, 64], [1, 7, 5]] {
            let normal =
                |s: [usize; 2]| Tensor::<2>::random(s, Distribution::Normal(0.0, 1.0), &cpu);
            let (a, b) = (normal([m, k]), normal([k, n]));
            let exact = a
                .clone()
                .matmul(b.clone())
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let product = |d: &Device| {
                let a = a.clone().to_device(d).cast(half);
                let b = b.clone().to_device(d).cast(half);
                let p = a.matmul(b).cast(FloatDType::F32).to_device(&cpu);
                p.into_data().try_to_vec::<f32>().expect("f32 values")
            };
            let off = |p: &[f32]| {
                exact
                    .iter()
                    .zip(p)
                    .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            };
            let (on_cpu, on_gpu) = (off(&product(&cpu)), off(&product(&c.gpu)));
            let ok = on_gpu <= 3.0 * on_cpu.max(1e-6);
            c.failed |= !ok;
            let verdict = if ok { "ok" } else { "WRONG" };
            println!(
                "{:42} max |diff| from f32 {on_gpu:.3e}  (CPU's {name}: {on_cpu:.3e})  {verdict}",
                format!("{name} matmul {m}x{k} @ {k}x{n}")
            );
        }
    }
}
