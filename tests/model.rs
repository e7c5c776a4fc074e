//! Model behaviours the reference fixtures do not cover: random init, drop path, presets.

use burn::tensor::{Distribution, Tensor};
use dino_core::model::DropPath;
use dino_core::{VisionTransformer, VitConfig};
use dino_tests::*;

#[test]
fn drop_path_drops_whole_samples_only_when_training() {
    let dp = DropPath { rate: 0.25 };
    let x = Tensor::<3>::ones([512, 3, 4], &device());
    // inference (no autodiff): identity
    assert_eq!(to_vec(dp.forward(x.clone())), to_vec(x));
    // training: each sample is dropped (0) or kept and scaled by 1 / 0.75
    let xt = Tensor::<3>::ones([512, 3, 4], &device().autodiff());
    let y = to_vec(dp.forward(xt));
    let mut dropped = 0;
    for s in y.chunks(12) {
        let v = s[0];
        assert!(s.iter().all(|&e| e == v), "a sample was partly dropped");
        assert!(v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6, "{v}");
        dropped += (v == 0.0) as usize;
    }
    // 25% of 512 = 128 expected; a 5-sigma band
    assert!((78..=178).contains(&dropped), "{dropped} of 512 dropped");
}

#[test]
fn drop_path_rate_follows_the_linear_rule() {
    let mut cfg = VitConfig::new(64, 4, 1, 16);
    cfg.drop_path_rate = 0.3;
    let model = VisionTransformer::new(&cfg, &device()).unwrap();
    let rates: Vec<f64> = model.blocks.iter().map(|b| b.drop_path.rate).collect();
    let want = [0.0, 0.1, 0.2, 0.3];
    for (r, w) in rates.iter().zip(want) {
        assert!((r - w).abs() < 1e-12, "{rates:?}");
    }
}

#[test]
fn random_init_matches_the_official_statistics() {
    let model = VisionTransformer::new(&VitConfig::vit_small(16), &device()).unwrap();
    let w = to_vec(model.blocks[0].attn.qkv.weight.val());
    let mean = w.iter().sum::<f32>() / w.len() as f32;
    let std = (w.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / w.len() as f32).sqrt();
    assert!(
        mean.abs() < 1e-3 && (std - 0.02).abs() < 1e-3,
        "mean {mean} std {std}"
    );
    assert!(
        to_vec(model.blocks[0].attn.qkv.bias.as_ref().unwrap().val())
            .iter()
            .all(|&b| b == 0.0)
    );
    assert!(to_vec(model.norm.gamma.val()).iter().all(|&g| g == 1.0));
    // a forward pass at a non-square size gives finite features of the right shape
    let x = Tensor::<4>::random([2, 3, 96, 160], Distribution::Default, &device());
    let f = model.forward_features(x).unwrap();
    assert_eq!(f.cls.dims(), [2, 384]);
    assert_eq!(f.patches.dims(), [2, 6 * 10, 384]);
    assert!(to_vec(f.cls).iter().all(|v| v.is_finite()));
}

#[test]
fn burn_model_and_cpu_engine_agree_at_any_size() {
    // random weights, an odd size that needs interpolation and cropping-free patching
    let model = VisionTransformer::new(&VitConfig::vit_tiny(16), &device()).unwrap();
    let engine = dino_core::cpu::CpuVit::from_model(&model).unwrap();
    let x = Tensor::<4>::random([2, 3, 112, 208], Distribution::Default, &device());
    let host = to_vec(x.clone());
    let a = to_vec(model.forward(x).unwrap());
    let b = engine.forward(&host, 2, 112, 208).unwrap();
    assert!(rel_err(&b, &a) <= 1e-5, "{}", rel_err(&b, &a));
}
