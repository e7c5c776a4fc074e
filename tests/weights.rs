//! Weight import: every layout gives the same model; every malformed file a clear error.

use std::collections::HashMap;

use dino_core::VisionTransformer;
use dino_core::weights::{
    CheckpointKey, LoadOptions, StateDict, WeightFormat, load_bytes, load_file,
    to_safetensors_bytes,
};
use dino_tests::*;

fn load(rel: &str, opts: &LoadOptions) -> dino_core::weights::LoadedWeights {
    load_file(fixture(rel), opts).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// An official-layout safetensors file (no header of ours) from a state dict.
fn plain_safetensors(sd: &StateDict) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = sd
        .iter()
        .map(|(k, t)| {
            let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (k.to_string(), t.shape.clone(), b)
        })
        .collect();
    let views: Vec<_> = bytes
        .iter()
        .map(|(k, s, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
            (k.clone(), v.unwrap())
        })
        .collect();
    safetensors::serialize(views, None::<HashMap<String, String>>).unwrap()
}

fn err_of(bytes: &[u8], opts: &LoadOptions) -> String {
    let w = match load_bytes(bytes, opts) {
        Err(e) => return e.to_string(),
        Ok(w) => w,
    };
    match VisionTransformer::from_state_dict(&w.config, w.state, &device()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("expected an error"),
    }
}

fn official() -> StateDict {
    load("weights/s16_backbone.pth", &LoadOptions::default()).state
}

#[test]
fn all_layouts_give_identical_tensors() {
    let opts = LoadOptions::default();
    let a = load("weights/s16_backbone.pth", &opts);
    let b = load("weights/s16_full_checkpoint.pth", &opts);
    let c = load("weights/s16_hf.safetensors", &opts);
    assert_eq!(a.format, WeightFormat::OfficialBackbone);
    assert_eq!(
        b.format,
        WeightFormat::OfficialCheckpoint(CheckpointKey::Teacher)
    );
    assert_eq!(c.format, WeightFormat::HuggingFace);
    for w in [&b, &c] {
        assert_eq!(w.config, a.config);
        assert_eq!(w.state.len(), a.state.len());
        for (k, t) in a.state.iter() {
            assert_eq!(w.state.get(k), Some(t), "{k} differs in {}", w.format);
        }
    }
    let cfg = &a.config;
    assert_eq!(
        (
            cfg.dim,
            cfg.depth,
            cfg.heads,
            cfg.patch,
            cfg.pos_grid,
            cfg.mlp_hidden
        ),
        (128, 2, 2, 16, 14, 512)
    );
}

#[test]
fn student_of_a_training_checkpoint() {
    let opts = LoadOptions {
        checkpoint_key: CheckpointKey::Student,
        ..Default::default()
    };
    let w = load("weights/s16_full_checkpoint.pth", &opts);
    assert_eq!(
        w.format,
        WeightFormat::OfficialCheckpoint(CheckpointKey::Student)
    );
    let model = VisionTransformer::from_state_dict(&w.config, w.state, &device()).unwrap();
    let img = dino_core::imaging::load_image(&fixture("inputs/s16_chelsea_eval.png")).unwrap();
    let x = dino_core::imaging::batch_tensor(&[img], &device()).unwrap();
    let cls = to_vec(model.forward(x).unwrap());
    let (_, want) = read_npy("outputs/s16_student_chelsea_eval_cls.npy");
    assert!(rel_err(&cls, &want) <= 1e-5);
}

#[test]
fn legacy_pickle_checkpoint_with_explicit_heads() {
    let opts = LoadOptions {
        heads: Some(3),
        ..Default::default()
    };
    let w = load("weights/p8_backbone.pth", &opts);
    assert_eq!(
        (
            w.config.dim,
            w.config.patch,
            w.config.heads,
            w.config.pos_grid
        ),
        (48, 8, 3, 28)
    );
    // without a head count, 48 dims cannot be split by the dim/64 rule (the CLI and the
    // browser package each name their own option for it)
    let e = load_file(fixture("weights/p8_backbone.pth"), &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(e, dino_core::Error::UnknownHeads { dim: 48 }),
        "{e}"
    );
}

#[test]
fn own_format_round_trips_with_its_architecture() {
    let opts = LoadOptions {
        heads: Some(3),
        ..Default::default()
    };
    let w = load("weights/p8_backbone.pth", &opts);
    let model = VisionTransformer::from_state_dict(&w.config, w.state.clone(), &device()).unwrap();
    let sd = model.to_state_dict().unwrap();
    for (k, t) in w.state.iter() {
        assert_eq!(sd.get(k), Some(t), "{k}");
    }
    let bytes = to_safetensors_bytes(&sd, &w.config, false).unwrap();
    // heads come back from the header, no option needed
    let back = load_bytes(&bytes, &LoadOptions::default()).unwrap();
    assert_eq!(back.format, WeightFormat::Dino);
    assert_eq!(back.config, w.config);
    for (k, t) in w.state.iter() {
        assert_eq!(back.state.get(k), Some(t), "{k}");
    }
    // half precision: same model within f16 rounding
    let half = to_safetensors_bytes(&sd, &w.config, true).unwrap();
    assert!(half.len() < bytes.len() * 6 / 10);
    let h = load_bytes(&half, &LoadOptions::default()).unwrap();
    for (k, t) in w.state.iter() {
        let e = rel_err(&h.state.get(k).unwrap().data, &t.data);
        assert!(e < 1e-3, "{k}: {e}");
    }
}

#[test]
fn missing_tensor_is_named() {
    let mut sd = official();
    sd.remove("blocks.1.mlp.fc2.bias");
    let e = err_of(&plain_safetensors(&sd), &LoadOptions::default());
    assert!(e.contains("missing tensor 'blocks.1.mlp.fc2.bias'"), "{e}");
}

#[test]
fn wrong_shape_names_key_and_shapes() {
    let mut sd = official();
    let t = sd.remove("norm.weight").unwrap();
    sd.insert(
        "norm.weight",
        dino_core::weights::RawTensor::new(vec![127], t.data[..127].to_vec()).unwrap(),
    );
    let e = err_of(&plain_safetensors(&sd), &LoadOptions::default());
    assert!(
        e.contains("'norm.weight'") && e.contains("[127]") && e.contains("[128]"),
        "{e}"
    );
}

#[test]
fn unexpected_and_foreign_tensors_are_refused() {
    let mut sd = official();
    sd.insert(
        "head.weight",
        dino_core::weights::RawTensor::new(vec![10, 128], vec![0.0; 1280]).unwrap(),
    );
    let e = err_of(&plain_safetensors(&sd), &LoadOptions::default());
    assert!(e.contains("unexpected") && e.contains("head.weight"), "{e}");

    let mut resnet = StateDict::new();
    resnet.insert(
        "conv1.weight",
        dino_core::weights::RawTensor::new(vec![64, 3, 7, 7], vec![0.0; 9408]).unwrap(),
    );
    let e = err_of(&plain_safetensors(&resnet), &LoadOptions::default());
    assert!(
        e.contains("no ViT or ResNet backbone found") && e.contains("conv1.weight"),
        "{e}"
    );
}

#[test]
fn non_square_position_grid_is_refused() {
    let mut sd = official();
    sd.remove("pos_embed");
    sd.insert(
        "pos_embed",
        dino_core::weights::RawTensor::new(vec![1, 200, 128], vec![0.0; 200 * 128]).unwrap(),
    );
    let e = err_of(&plain_safetensors(&sd), &LoadOptions::default());
    assert!(e.contains("'pos_embed'") && e.contains("square"), "{e}");
}

#[test]
fn wrong_head_count_is_refused() {
    let bytes = std::fs::read(fixture("weights/s16_hf.safetensors")).unwrap();
    let opts = LoadOptions {
        heads: Some(5),
        ..Default::default()
    };
    let e = err_of(&bytes, &opts);
    assert!(e.contains("not divisible by 5 heads"), "{e}");
}

#[test]
fn files_that_are_not_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.pth", vec![], "empty"),
        (
            "notes.txt",
            b"these are not weights\n".to_vec(),
            "not a checkpoint",
        ),
        (
            "image.safetensors",
            std::fs::read(fixture("images/chelsea.png")).unwrap(),
            "not a checkpoint",
        ),
        (
            "zip.pth",
            b"PK\x03\x04garbage that is no zip".to_vec(),
            "not a readable PyTorch checkpoint",
        ),
        (
            "pickle.pth",
            vec![0x80, 0x02, 0xff, 0xff],
            "not a readable PyTorch checkpoint",
        ),
    ];
    for (name, bytes, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = load_file(&p, &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(want) && e.contains(name), "{name}: {e}");
    }
    let e = load_file(dir.path().join("absent.pth"), &LoadOptions::default()).unwrap_err();
    assert!(e.to_string().contains("absent.pth"), "{e}");
}

#[test]
fn truncated_checkpoints_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    for rel in [
        "weights/s16_backbone.pth",
        "weights/p8_backbone.pth",
        "weights/s16_full_checkpoint.pth",
        "weights/s16_hf.safetensors",
    ] {
        let bytes = std::fs::read(fixture(rel)).unwrap();
        for cut in [bytes.len() / 2, bytes.len() - 100, 64] {
            let p = dir.path().join("cut");
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let r = load_file(&p, &LoadOptions::default());
            assert!(r.is_err(), "{rel} cut at {cut} loaded");
        }
    }
}

/// The browser has bytes, not files: every official `.pth` layout read from its bytes gives
/// exactly the state dict and architecture read from the file (teacher and student of a
/// training checkpoint, ResNet and PAWS files), and a cut file is an error either way.
#[test]
fn pth_from_bytes_equals_pth_from_file() {
    use dino_core::weights::{load_network_bytes, load_network_file, load_network_owned};
    for (rel, key, heads) in [
        ("weights/s16_backbone.pth", CheckpointKey::Teacher, None),
        ("weights/p8_backbone.pth", CheckpointKey::Teacher, Some(3)),
        (
            "weights/s16_full_checkpoint.pth",
            CheckpointKey::Teacher,
            None,
        ),
        (
            "weights/s16_full_checkpoint.pth",
            CheckpointKey::Student,
            None,
        ),
        (
            "weights/resnet_dino_checkpoint.pth",
            CheckpointKey::Student,
            None,
        ),
        (
            "weights/resnet_paws_checkpoint.pth.tar",
            CheckpointKey::Teacher,
            None,
        ),
    ] {
        let opts = LoadOptions {
            checkpoint_key: key,
            heads,
        };
        let from_file = load_network_file(fixture(rel), &opts).unwrap();
        let bytes = std::fs::read(fixture(rel)).unwrap();
        for from_bytes in [
            load_network_bytes(&bytes, &opts).unwrap(),
            load_network_owned(bytes.clone(), &opts).unwrap(),
        ] {
            assert_eq!(from_bytes.format, from_file.format, "{rel}");
            assert_eq!(from_bytes.architecture, from_file.architecture, "{rel}");
            assert_eq!(from_bytes.state.len(), from_file.state.len(), "{rel}");
            for (k, t) in from_file.state.iter() {
                let b = from_bytes
                    .state
                    .get(k)
                    .unwrap_or_else(|| panic!("{rel}: {k}"));
                assert_eq!((&b.shape, &b.data), (&t.shape, &t.data), "{rel}: {k}");
            }
        }
        for cut in [bytes.len() / 2, bytes.len() - 7] {
            let e = load_network_bytes(&bytes[..cut], &opts);
            assert!(e.is_err(), "{rel} cut at {cut} loaded from bytes");
        }
    }
}

#[test]
fn hostile_pth_files_are_refused_before_anything_is_allocated() {
    // tests/reference/make_hostile_fixtures.py: tensors that are zero-stride views of a
    // one-element storage declare gigabytes from a few KB; a wrong shape is seen from the
    // metadata. Each must fail with a clear message, without reading (let alone
    // materialising) the tensors: the test would abort on the allocation otherwise.
    for (file, want) in [
        (
            "hostile/zero_stride.pth",
            "tensors declare 25600000000 bytes but the file has",
        ),
        ("hostile/zero_stride_vit.pth", "refused before reading"),
        (
            "hostile/wrong_shape_vit.pth",
            "'blocks.0.attn.proj.weight' has shape [16, 17], the model expects [16, 16] \
             (checked before reading any tensor)",
        ),
    ] {
        let e = load_file(fixture(file), &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{file}: {e}");
        // the same from its bytes (the browser)
        let bytes = std::fs::read(fixture(file)).unwrap();
        let e = load_bytes(&bytes, &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{file} from bytes: {e}");
    }
    // the honest files still load
    load("weights/s16_backbone.pth", &LoadOptions::default());
    load("weights/s16_full_checkpoint.pth", &LoadOptions::default());
}

/// ResNet checkpoints in the official formats (make_resnet_fixtures.py): DINO's ResNet-50
/// backbone file, its training checkpoint (teacher or student), PAWS's checkpoint (encoder with
/// heads beside the optimiser); each gives the network PyTorch evaluates, to float rounding.
#[test]
fn resnet_checkpoints_of_every_official_format_match_pytorch() {
    use dino_core::model::resnet::{ResNet, ResNetConfig, ResidualBlock};
    use dino_core::weights::{Architecture, load_network_file};
    let fx = Fixture::load_file("outputs/resnet_features.safetensors");
    let want_cfg = ResNetConfig {
        block: ResidualBlock::Bottleneck,
        layers: [1, 1, 1, 1],
        stem_width: 8,
        base_width: 8,
        maxpool: true,
    };
    let dev = device();
    let x: burn::Tensor<4> = fx.tensor("input", &dev);
    for (file, key, format, expected) in [
        (
            "weights/resnet_backbone.pth",
            CheckpointKey::Teacher,
            WeightFormat::OfficialBackbone,
            "teacher",
        ),
        (
            "weights/resnet_dino_checkpoint.pth",
            CheckpointKey::Teacher,
            WeightFormat::OfficialCheckpoint(CheckpointKey::Teacher),
            "teacher",
        ),
        (
            "weights/resnet_dino_checkpoint.pth",
            CheckpointKey::Student,
            WeightFormat::OfficialCheckpoint(CheckpointKey::Student),
            "student",
        ),
        (
            "weights/resnet_paws_checkpoint.pth.tar",
            CheckpointKey::Teacher,
            WeightFormat::PawsCheckpoint,
            "paws",
        ),
    ] {
        let opts = LoadOptions {
            checkpoint_key: key,
            ..Default::default()
        };
        let net = load_network_file(fixture(file), &opts).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(net.format, format, "{file}");
        assert_eq!(net.architecture, Architecture::ResNet(want_cfg), "{file}");
        assert!(
            net.state
                .keys()
                .all(|k| !k.starts_with("fc.") && !k.starts_with("pred.")),
            "{file}: heads dropped"
        );
        let model = ResNet::from_state_dict(&want_cfg, net.state, &dev).unwrap();
        assert_eq!(model.features(), fx.u("features"));
        let got = to_vec(model.forward(x.clone()));
        let e = rel_err(&got, &fx.get(expected).data);
        assert!(e < 1e-5, "{file} ({expected}): relative error {e}");
    }
    // the ViT loader names what it found
    let e = load_file(
        fixture("weights/resnet_backbone.pth"),
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("ResNet") && e.contains("Vision Transformer"),
        "{e}"
    );
}

/// An official PAWS checkpoint read as a PAWS encoder keeps its projection and prediction
/// heads: its output is what suncet's `snn_eval.py` classifies (`encoder(imgs)`, evaluation
/// mode), and the settings are the official ImageNet recipe's (the CLI test fine-tunes it and
/// evaluates the result).
#[test]
fn an_official_paws_checkpoint_is_an_encoder_with_its_heads() {
    use dino_core::paws::{BackboneConfig, PawsConfig, load_encoder, read_encoder_file};
    let fx = Fixture::load_file("outputs/resnet_features.safetensors");
    let dev = device();
    let bytes = std::fs::read(fixture("weights/resnet_paws_checkpoint.pth.tar")).unwrap();
    let (cfg, shape, sd) = read_encoder_file(bytes.clone()).unwrap();
    let BackboneConfig::ResNet(resnet) = &shape.backbone else {
        panic!("a ResNet: {shape:?}")
    };
    assert_eq!(
        (resnet.layers, resnet.stem_width, resnet.base_width),
        ([1; 4], 8, 8)
    );
    assert_eq!((shape.output_dim, shape.use_pred_head), (16, true));
    assert!(sd.contains("fc.fc3.weight") && sd.contains("pred.fc2.weight"));
    // the data settings of the recipe every released model was trained with
    let imagenet = PawsConfig::imagenet();
    assert_eq!(
        (cfg.crop_size, cfg.normalize_mean, cfg.normalize_std),
        (224, imagenet.normalize_mean, imagenet.normalize_std)
    );
    assert_eq!((cfg.output_dim, cfg.use_pred_head), (16, true));
    let (encoder, _) = load_encoder(bytes, &dev).unwrap();
    let z = to_vec(encoder.embed(fx.tensor("input", &dev)));
    let want = fx.get("paws_z");
    assert_eq!(want.shape, [2, 16]);
    let e = rel_err(&z, &want.data);
    assert!(e < 1e-5, "relative error {e}");
}

/// Files that are not PAWS checkpoints are refused by the encoder reader with what they are.
#[test]
fn a_dino_checkpoint_is_not_taken_for_a_paws_encoder() {
    use dino_core::paws::read_encoder_file;
    for (file, says) in [
        ("weights/resnet_dino_checkpoint.pth", "no 'encoder' network"),
        ("weights/resnet_backbone.pth", "no 'encoder' network"),
    ] {
        let bytes = std::fs::read(fixture(file)).unwrap();
        let e = read_encoder_file(bytes).unwrap_err().to_string();
        assert!(e.contains(says), "{file}: {e}");
    }
    // a truncated checkpoint: an error, not a panic
    let bytes = std::fs::read(fixture("weights/resnet_paws_checkpoint.pth.tar")).unwrap();
    for cut in [10, bytes.len() / 2, bytes.len() - 10] {
        assert!(
            read_encoder_file(bytes[..cut].to_vec()).is_err(),
            "cut at {cut}"
        );
    }
}

/// A ResNet checkpoint with a tensor of the wrong shape, or one too many, is refused by name.
#[test]
fn a_damaged_resnet_checkpoint_is_refused_by_name() {
    use dino_core::model::resnet::ResNet;
    use dino_core::weights::{Architecture, RawTensor, load_network_bytes};
    let net = dino_core::weights::load_network_file(
        fixture("weights/resnet_backbone.pth"),
        &LoadOptions::default(),
    )
    .unwrap();
    let Architecture::ResNet(cfg) = net.architecture else {
        panic!("a ResNet")
    };
    let mut bad = net.state.clone();
    bad.insert(
        "layer2.0.conv2.weight",
        RawTensor::new(vec![2, 2], vec![0.0; 4]).unwrap(),
    );
    let e = ResNet::from_state_dict(&cfg, bad, &device())
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer2.0.conv2.weight"), "{e}");
    let mut extra = net.state.clone();
    extra.insert(
        "layer9.0.conv1.weight",
        RawTensor::new(vec![1], vec![0.0]).unwrap(),
    );
    let e = ResNet::from_state_dict(&cfg, extra, &device())
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer9.0.conv1.weight"), "{e}");
    // a stem that does not take RGB is no ResNet
    let mut stem = net.state.clone();
    stem.insert(
        "conv1.weight",
        RawTensor::new(vec![8, 1, 7, 7], vec![0.0; 392]).unwrap(),
    );
    let e = load_network_bytes(&plain_safetensors(&stem), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("conv1.weight"), "{e}");
}
