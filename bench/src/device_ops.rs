//! Each tensor op the ViT uses, run on a GPU backend's default adapter and on burn-flex, with
//! the largest difference printed: the first thing to run where a GPU (or a software adapter)
//! gives features that differ from the CPU's, to name the op. Exits 1 when an op differs by
//! more than 1e-5 of its largest value.
//!
//!     cargo run --release -p dino-bench --features vulkan,wgpu --bin dino-device-ops -- vulkan
//!     SIZES="1,7,5;4,8,4" ONLY_MATMUL=1 ... -- wgpu      # matrix products of chosen m,k,n
//!
//! Found with it on this project's 2-core machines (2026-11-30): Chromium's SwiftShader Vulkan
//! multiplies wrongly whenever the inner dimension is not a multiple of 4 (the ViT's
//! attention-times-values product has 197 there), every other op right; Mesa 22.3's lavapipe
//! crashes compiling CubeCL's matmul pipeline.
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};

static FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn diff<const D: usize>(name: &str, a: Tensor<D>, b: Tensor<D>) {
    let read = |t: Tensor<D>| t.into_data().try_to_vec::<f32>().expect("f32 values");
    let (a, b) = (read(a), read(b));
    let d = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let s = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    let ok = d <= 1e-5 * s.max(1.0) || d <= 1e-6;
    if !ok {
        FAILED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let verdict = if ok { "ok" } else { "WRONG" };
    println!("{name:42} max |diff| {d:.3e}  (max |x| {s:.3e})  {verdict}");
}

fn main() {
    let dev = match std::env::args().nth(1).as_deref() {
        Some("wgpu") => Device::wgpu(Default::default()),
        _ => Device::vulkan(Default::default()),
    };
    let cpu = Device::flex();
    let r = |shape: Vec<usize>| {
        Tensor::<2>::random([shape[0], shape[1]], Distribution::Normal(0.0, 1.0), &cpu)
    };
    let sizes: Vec<(usize, usize, usize)> = match std::env::var("SIZES") {
        Ok(v) => v
            .split(';')
            .map(|t| {
                let d: Vec<usize> = t.split(',').map(|x| x.parse().unwrap()).collect();
                (d[0], d[1], d[2])
            })
            .collect(),
        Err(_) => vec![
            (4, 8, 4),
            (64, 64, 64),
            (197, 384, 1152),
            (3, 384, 128),
            (1, 7, 5),
            (197, 197, 64),
        ],
    };
    for (m, k, n) in sizes {
        let (a, b) = (r(vec![m, k]), r(vec![k, n]));
        let want = a.clone().matmul(b.clone());
        let got = a.to_device(&dev).matmul(b.to_device(&dev)).to_device(&cpu);
        diff(&format!("matmul {m}x{k} @ {k}x{n}"), want, got);
    }
    if std::env::var("ONLY_MATMUL").is_ok() {
        std::process::exit(FAILED.load(std::sync::atomic::Ordering::Relaxed) as i32);
    }
    let x4 = Tensor::<4>::random([2, 6, 197, 64], Distribution::Normal(0.0, 1.0), &cpu);
    let y4 = Tensor::<4>::random([2, 6, 64, 197], Distribution::Normal(0.0, 1.0), &cpu);
    diff(
        "batched matmul [2,6,197,64]@[2,6,64,197]",
        x4.clone().matmul(y4.clone()),
        x4.clone()
            .to_device(&dev)
            .matmul(y4.clone().to_device(&dev))
            .to_device(&cpu),
    );
    diff(
        "q @ k^T (swap_dims)",
        x4.clone().matmul(x4.clone().swap_dims(2, 3)),
        x4.clone()
            .to_device(&dev)
            .matmul(x4.clone().to_device(&dev).swap_dims(2, 3))
            .to_device(&cpu),
    );
    diff(
        "softmax",
        softmax(x4.clone(), 3),
        softmax(x4.clone().to_device(&dev), 3).to_device(&cpu),
    );
    diff(
        "gelu",
        gelu(x4.clone()),
        gelu(x4.clone().to_device(&dev)).to_device(&cpu),
    );
    diff(
        "mean_dim",
        x4.clone().mean_dim(3),
        x4.clone().to_device(&dev).mean_dim(3).to_device(&cpu),
    );
    diff(
        "var (layer norm statistic)",
        x4.clone().var(3),
        x4.clone().to_device(&dev).var(3).to_device(&cpu),
    );
    let img = Tensor::<4>::random([2, 3, 224, 224], Distribution::Normal(0.0, 1.0), &cpu);
    let w = Tensor::<4>::random([384, 3, 16, 16], Distribution::Normal(0.0, 0.05), &cpu);
    let bias = Tensor::<1>::random([384], Distribution::Normal(0.0, 0.05), &cpu);
    let opt = || ConvOptions::new([16, 16], [0, 0], [1, 1], 1);
    diff(
        "conv2d patch embed 16x16/16",
        conv2d(img.clone(), w.clone(), Some(bias.clone()), opt()),
        conv2d(
            img.to_device(&dev),
            w.to_device(&dev),
            Some(bias.to_device(&dev)),
            opt(),
        )
        .to_device(&cpu),
    );
    let a = r(vec![3, 384]);
    let b = r(vec![5, 384]);
    diff(
        "cat rows",
        Tensor::cat(vec![a.clone(), b.clone()], 0),
        Tensor::cat(
            vec![a.clone().to_device(&dev), b.clone().to_device(&dev)],
            0,
        )
        .to_device(&cpu),
    );
    diff(
        "x * x.sum_dim(1).sqrt()",
        a.clone() * a.clone().powf_scalar(2.0).sum_dim(1).sqrt(),
        {
            let g = a.clone().to_device(&dev);
            (g.clone() * g.powf_scalar(2.0).sum_dim(1).sqrt()).to_device(&cpu)
        },
    );
    std::process::exit(FAILED.load(std::sync::atomic::Ordering::Relaxed) as i32);
}
