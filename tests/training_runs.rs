//! Training runs end to end on real photos: loss stays finite and moves, checkpoints hold the
//! whole run, and a run interrupted and resumed equals an uninterrupted one exactly.

use std::collections::BTreeMap;
use std::sync::Arc;

use dino_core::data::{ImageFolder, MultiCropBatches, MultiCropLoader};
use dino_core::train::collective::ThreadWorld;
use dino_core::train::run::{Flow, Quiet, Record, RunDir, StepEvent, TrainObserver, train};
use dino_core::train::{OptimizerKind, TrainConfig, Trainer};
use dino_core::weights::{
    CheckpointKey, LoadOptions, RawTensor, StateDict, WeightFormat, load_file, safetensors_bytes,
};
use dino_tests::*;

fn tiny_config() -> TrainConfig {
    TrainConfig {
        arch: "vit_tiny".into(),
        patch_size: 16,
        out_dim: 64,
        head_hidden_dim: 32,
        head_bottleneck_dim: 16,
        batch_size: 2,
        epochs: 2,
        warmup_epochs: 1,
        lr: 0.05,
        global_crop_size: 32,
        local_crop_size: 16,
        local_crops_number: 2,
        drop_path_rate: 0.2,
        dataset_repeats: 1,
        seed: 11,
        ..TrainConfig::default()
    }
}

fn loader(cfg: &TrainConfig) -> MultiCropLoader {
    let folder = ImageFolder::scan(&fixture("images")).unwrap();
    MultiCropLoader::new(
        Arc::new(folder),
        cfg.crops(),
        cfg.batch_size,
        cfg.seed,
        cfg.dataset_repeats,
    )
    .unwrap()
}

fn run(trainer: &mut Trainer, loader: &MultiCropLoader, iters: usize) -> Vec<f64> {
    let mut losses = Vec::new();
    for _ in 0..iters {
        let (e, it) = (trainer.epoch(), trainer.iteration % trainer.niter_per_epoch);
        let order = loader.epoch_order(e);
        let (batch, skipped) = loader.batch(e, it, &order).unwrap();
        assert!(skipped.is_empty());
        losses.push(trainer.step(&batch).unwrap().loss);
    }
    losses
}

fn state(t: &Trainer) -> Vec<(String, Vec<f32>)> {
    let mut out: Vec<_> = t.checkpoint_bytes_tensors();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

trait Tensors {
    fn checkpoint_bytes_tensors(&self) -> Vec<(String, Vec<f32>)>;
}

impl Tensors for Trainer {
    fn checkpoint_bytes_tensors(&self) -> Vec<(String, Vec<f32>)> {
        safetensors_f32(&self.checkpoint_bytes().unwrap())
            .into_iter()
            .map(|(k, t)| (k, t.data))
            .collect()
    }
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    assert_resumes_exactly(tiny_config(), 1);
}

#[test]
fn resumed_data_parallel_run_equals_uninterrupted_run() {
    // the parts of a batch run on threads at the same time, drop path included: still one
    // exact run
    assert_resumes_exactly(tiny_config(), 2);
}

#[test]
fn resumed_run_with_batchnorm_head_equals_uninterrupted_run() {
    // the BatchNorm running statistics travel in the checkpoint too
    let mut cfg = tiny_config();
    cfg.use_bn_in_head = true;
    assert_resumes_exactly(cfg, 1);
}

/// The real training loop ([`train`]): a run straight through (`cfg.epochs` epochs of 5
/// iterations), and one stopped after 3 iterations, loaded from its checkpoint and run to the
/// end: the same losses, every tensor of the checkpoint (networks, optimiser state, center)
/// equal bit for bit, the same metrics and log (timings aside). `parts`: the batch split over
/// that many copies of the device.
fn assert_resumes_exactly(cfg: TrainConfig, parts: usize) {
    assert_resumes_exactly_after(cfg, parts, 3)
}

/// [`assert_resumes_exactly`] stopping after `stop` iterations.
fn assert_resumes_exactly_after(cfg: TrainConfig, parts: usize, stop: usize) {
    let ld = Arc::new(loader(&cfg));
    let n = ld.niter_per_epoch();
    assert_eq!(n, 5); // 11 images / batch 2, the last one dropped
    let dev = device();
    let with_parts = |mut t: Trainer| {
        t.set_devices(vec![dev.clone(); parts]).unwrap();
        t
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        RunDir(dir.path().join("straight")),
        RunDir(dir.path().join("stopped")),
    );
    let mut straight = with_parts(Trainer::new(cfg.clone(), n, &dev).unwrap());
    train(&mut straight, batches(&ld), &a, &mut Quiet).unwrap();
    let losses = logged_losses(&a);
    assert_eq!(losses.len(), 5 * cfg.epochs);
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");

    let mut first = with_parts(Trainer::new(cfg.clone(), n, &dev).unwrap());
    let summary = train(&mut first, batches(&ld), &b, &mut StopAt(stop)).unwrap();
    assert_eq!(summary.steps, stop);
    assert_eq!(logged_losses(&b), losses[..stop], "same seed, same run");
    drop(first);
    let mut resumed = with_parts(Trainer::load(&b.checkpoint(), &dev).unwrap());
    assert_eq!((resumed.iteration, resumed.epoch()), (stop, stop / n));
    train(&mut resumed, batches(&ld), &b, &mut Quiet).unwrap();
    assert_eq!(logged_losses(&b), losses, "resumed losses");
    let (sa, sb) = (state(&straight), state(&resumed));
    assert_eq!(sa.len(), sb.len());
    for ((ka, va), (kb, vb)) in sa.iter().zip(&sb) {
        assert_eq!(ka, kb);
        assert!(va == vb, "{ka} differs after resuming");
    }
    // the checkpoint, the export and log.txt (no wall-clock values in it) byte for byte
    for f in [RunDir::checkpoint, RunDir::teacher, RunDir::log] {
        assert!(
            std::fs::read(f(&a)).unwrap() == std::fs::read(f(&b)).unwrap(),
            "{} differs",
            f(&a).display()
        );
    }
    assert_eq!(
        std::fs::read_to_string(a.log()).unwrap().lines().count(),
        cfg.epochs
    );
}

fn batches(ld: &Arc<MultiCropLoader>) -> MultiCropBatches {
    MultiCropBatches::new(ld.clone())
}

/// Stops the loop after this many steps.
struct StopAt(usize);

impl<R> TrainObserver<R> for StopAt {
    fn on_step(&mut self, e: &StepEvent) -> Flow {
        if e.record.iteration + 1 >= self.0 {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }
}

/// The losses of `metrics.jsonl`, in iteration order.
fn logged_losses(d: &RunDir) -> Vec<f64> {
    let text = std::fs::read_to_string(d.metrics()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Record>(l).unwrap().get("loss"))
        .collect()
}

#[test]
fn checkpoints_are_model_files_too() {
    let cfg = tiny_config();
    let ld = loader(&cfg);
    let mut t = Trainer::new(cfg, ld.niter_per_epoch(), &device()).unwrap();
    run(&mut t, &ld, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    t.save(&path).unwrap();
    for key in [CheckpointKey::Teacher, CheckpointKey::Student] {
        let w = load_file(
            &path,
            &LoadOptions {
                checkpoint_key: key,
                heads: None,
            },
        )
        .unwrap();
        assert_eq!(w.format, WeightFormat::Dino);
        assert_eq!(
            (w.config.dim, w.config.heads, w.config.pos_grid),
            (192, 3, 2)
        );
        let model =
            dino_core::VisionTransformer::from_state_dict(&w.config, w.state, &device()).unwrap();
        let want = if key == CheckpointKey::Teacher {
            t.teacher()
        } else {
            t.student()
        };
        assert_eq!(
            model
                .to_state_dict()
                .unwrap()
                .get("blocks.0.attn.qkv.weight"),
            want.backbone
                .to_state_dict()
                .unwrap()
                .get("blocks.0.attn.qkv.weight")
        );
    }
    // a checkpoint that is not a training checkpoint, or a cut one, is refused clearly
    let e = Trainer::load(&fixture("weights/s16_hf.safetensors"), &device())
        .err()
        .unwrap();
    assert!(e.to_string().contains("not a dino-rs checkpoint"), "{e}");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(Trainer::load(&path, &device()).is_err());
}

#[test]
fn student_learns_to_match_the_teacher_on_a_fixed_batch() {
    // The teacher moves slowly (momentum 0.996): repeated on one batch, the student must fit it.
    let mut cfg = tiny_config();
    cfg.epochs = 30;
    cfg.warmup_epochs = 0;
    cfg.freeze_last_layer = 0;
    cfg.drop_path_rate = 0.0;
    cfg.lr = 0.5;
    cfg.momentum_teacher = 0.996;
    let ld = loader(&cfg);
    let (batch, _) = ld.batch(0, 0, &ld.epoch_order(0)).unwrap();
    let mut t = Trainer::new(cfg, 1, &device()).unwrap();
    let losses: Vec<f64> = (0..30).map(|_| t.step(&batch).unwrap().loss).collect();
    let first = losses[..3].iter().sum::<f64>() / 3.0;
    let last = losses[27..].iter().sum::<f64>() / 3.0;
    assert!(last < 0.8 * first, "loss did not fall: {losses:?}");
}

#[test]
fn gradient_checkpointing_changes_memory_not_results() {
    let cfg = tiny_config();
    let ld = loader(&cfg);
    let n = ld.niter_per_epoch();
    let mut plain = Trainer::new(cfg.clone(), n, &device()).unwrap();
    let a = run(&mut plain, &ld, 3);
    let mut ckpt_cfg = cfg;
    ckpt_cfg.gradient_checkpointing = true;
    let mut ckpt = Trainer::new(ckpt_cfg, n, &device()).unwrap();
    let b = run(&mut ckpt, &ld, 3);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "{a:?} vs {b:?}");
    }
    let (sa, sb) = (state(&plain), state(&ckpt));
    let mut failed = Vec::new();
    for ((k, va), (_, vb)) in sa.iter().zip(&sb) {
        if !(k.starts_with("student.") || k.starts_with("teacher.")) {
            continue;
        }
        let (va, vb) = (key_bias_left_out(k, va), key_bias_left_out(k, vb));
        let e = rel_err(&vb, &va);
        if e > 1e-5 {
            failed.push(format!("{k}: {e:e}"));
        }
    }
    assert!(failed.is_empty(), "{failed:?}");
}

/// `values` of parameter `name` without the key bias of a `qkv.bias` (its middle third).
/// Its true gradient is zero (a bias on every key adds the same `q . b` to all of a query's
/// scores, which the softmax ignores), so what it gets is rounding noise, which AdamW divides
/// by its own size into full-sized steps: any change in the order of a sum in the backward
/// pass (the graph's traversal differs with checkpointing, and with custom operations in
/// it) gives it another trajectory. Every other parameter must agree.
fn key_bias_left_out(name: &str, values: &[f32]) -> Vec<f32> {
    if !name.ends_with("attn.qkv.bias") {
        return values.to_vec();
    }
    let d = values.len() / 3;
    values[..d]
        .iter()
        .chain(&values[2 * d..])
        .copied()
        .collect()
}

#[test]
fn a_non_finite_loss_stops_the_run_without_updating() {
    let cfg = tiny_config();
    let ld = loader(&cfg);
    let mut t = Trainer::new(cfg, ld.niter_per_epoch(), &device()).unwrap();
    let (mut batch, _) = ld.batch(0, 0, &ld.epoch_order(0)).unwrap();
    batch.globals[7] = f32::NAN;
    let before = state(&t);
    let e = t.step(&batch).err().unwrap().to_string();
    assert!(
        e.contains("the loss is NaN") && e.contains("iteration 0"),
        "{e}"
    );
    assert_eq!(t.iteration, 0);
    let after = state(&t);
    assert!(
        before.iter().zip(&after).all(|(a, b)| a.1 == b.1),
        "weights changed"
    );
}

/// Two runs of the same batches split differently hold the same state: within 1e-4 of each
/// tensor's scale (at least `floor` for the optimiser's state, 1e-3 for the rest), except for
/// noise the key bias is allowed.
fn assert_same_state(one: &Trainer, two: &Trainer, floor: f32) {
    // The key bias has an exactly zero true gradient (softmax ignores a constant per query),
    // so AdamW moves it by rounding noise of either sign, up to the learning rate per step:
    // its weights agree within the summed learning rates and its optimiser state is noise.
    let moved = 2.0
        * (0..one.iteration)
            .map(|i| one.schedules.lr.at(i))
            .sum::<f64>() as f32;
    let (sa, sb) = (state(one), state(two));
    assert_eq!(sa.len(), sb.len());
    for ((k, va), (kb, vb)) in sa.iter().zip(&sb) {
        assert_eq!(k, kb);
        let worst =
            |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        let floor = if k.starts_with("optimizer.") {
            floor
        } else {
            1e-3
        };
        let scale = va.iter().fold(floor, |m, v| m.max(v.abs()));
        if k.contains("attn.qkv.bias") {
            let d = va.len() / 3;
            let (q, key, v) = (0..d, d..2 * d, 2 * d..3 * d);
            for r in [q, v] {
                let w = worst(&va[r.clone()], &vb[r]);
                assert!(w <= 1e-4 * scale, "{k}: {w} (scale {scale})");
            }
            if !k.starts_with("optimizer.") {
                let w = worst(&va[key.clone()], &vb[key]);
                assert!(w <= moved, "{k} key part: {w} (allowed {moved})");
            }
        } else {
            let w = worst(va, vb);
            assert!(w <= 1e-4 * scale, "{k}: {w} (scale {scale})");
        }
    }
}

#[test]
fn data_parallel_over_two_devices_equals_one_device() {
    // Two parts of a batch, each with its own copy of the networks (here both on the CPU), the
    // gradients averaged and the center all-reduced: the run of one device with the whole
    // batch. Drop-path is off because its masks are drawn per part.
    let mut cfg = tiny_config();
    cfg.batch_size = 4;
    cfg.drop_path_rate = 0.0;
    let ld = loader(&cfg);
    let n = ld.niter_per_epoch();
    assert_eq!(n, 2);
    let mut one = Trainer::new(cfg.clone(), n, &device()).unwrap();
    let mut two = Trainer::new(cfg, n, &device()).unwrap();
    two.set_devices(vec![device(), device()]).unwrap();
    assert_eq!(two.devices().len(), 2);
    // 4 iterations: the last layer is frozen in the first epoch, updated in the second
    let (a, b) = (run(&mut one, &ld, 4), run(&mut two, &ld, 4));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "losses {a:?} vs {b:?}");
    }
    assert_same_state(&one, &two, 1e-3);
}

#[test]
fn accumulated_micro_batches_equal_the_same_split_over_devices() {
    // Gradient accumulation: two micro-batches one after another on one device update as two
    // parts on two devices do, bit for bit, drop path included (the same masks per piece).
    let mut cfg = tiny_config();
    cfg.batch_size = 4;
    let ld = loader(&cfg);
    let n = ld.niter_per_epoch();
    let mut accumulated = Trainer::new(cfg.clone(), n, &device()).unwrap();
    accumulated.set_accumulation(2).unwrap();
    assert_eq!(accumulated.accum_steps(), 2);
    let mut parts = Trainer::new(cfg.clone(), n, &device()).unwrap();
    parts.set_devices(vec![device(), device()]).unwrap();
    let (a, b) = (run(&mut accumulated, &ld, 4), run(&mut parts, &ld, 4));
    assert_eq!(a, b, "losses");
    assert!(state(&accumulated) == state(&parts), "weights differ");
    // without drop path, the losses of the whole batch at once (the weights: as in
    // data_parallel_over_two_devices_equals_one_device)
    cfg.drop_path_rate = 0.0;
    let mut whole = Trainer::new(cfg.clone(), n, &device()).unwrap();
    let mut micro = Trainer::new(cfg, n, &device()).unwrap();
    micro.set_accumulation(4).unwrap();
    let (c, d) = (run(&mut whole, &ld, 4), run(&mut micro, &ld, 4));
    for (x, y) in c.iter().zip(&d) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "losses {c:?} vs {d:?}");
    }
    // 2 devices x 2 micro-batches of one image each
    let mut both = Trainer::new(accumulated.cfg.clone(), n, &device()).unwrap();
    both.set_devices(vec![device(), device()]).unwrap();
    both.set_accumulation(2).unwrap();
    let e = run(&mut both, &ld, 2);
    assert!(e.iter().all(|l| l.is_finite()), "{e:?}");
}

#[test]
fn accumulation_refuses_what_it_cannot_split() {
    let mut cfg = tiny_config();
    cfg.batch_size = 4;
    let mut t = Trainer::new(cfg.clone(), 2, &device()).unwrap();
    let e = t.set_accumulation(0).unwrap_err().to_string();
    assert!(e.contains("at least one micro-batch"), "{e}");
    let e = t.set_accumulation(3).unwrap_err().to_string();
    assert!(
        e.contains("cannot be split over 1 device(s) x 3 accumulation steps"),
        "{e}"
    );
    t.set_accumulation(4).unwrap();
    let e = t.set_devices(vec![device(); 2]).unwrap_err().to_string();
    assert!(e.contains("2 device(s) x 4 accumulation steps"), "{e}");
    assert_eq!((t.devices().len(), t.accum_steps()), (1, 4));
    cfg.use_bn_in_head = true;
    let mut t = Trainer::new(cfg, 2, &device()).unwrap();
    let e = t.set_accumulation(2).unwrap_err().to_string();
    assert!(e.contains("BatchNorm"), "{e}");
    assert!(
        t.set_accumulation(1).is_ok(),
        "no accumulation always works"
    );
}

#[test]
fn data_parallel_refuses_what_it_cannot_split() {
    let mut cfg = tiny_config();
    cfg.batch_size = 4;
    let mut t = Trainer::new(cfg.clone(), 2, &device()).unwrap();
    let e = t.set_devices(vec![device(); 3]).unwrap_err().to_string();
    assert!(e.contains("cannot be split over 3 devices"), "{e}");
    assert!(
        t.set_devices(vec![device()]).is_ok(),
        "one device always works"
    );
}

#[test]
fn a_batchnorm_head_split_over_devices_and_ranks_trains_as_one_part() {
    // SyncBatchNorm: the head's BatchNorms normalise with the statistics of the whole batch
    // whether it runs as one part, two parts (devices), two ranks or two ranks of two parts,
    // and their backward passes sum the gradients of the statistics over all parts, so every
    // split trains the one-part run (per-part statistics fail this). Drop path off (its masks
    // are drawn per part). SGD, not AdamW: a BatchNorm makes the gradients of every shift
    // before it exactly zero (the biases of the layers before, the backbone's last LayerNorm
    // bias), and AdamW would turn their rounding noise into steps of the learning rate.
    let mut cfg = tiny_config();
    cfg.batch_size = 4;
    cfg.drop_path_rate = 0.0;
    cfg.use_bn_in_head = true;
    cfg.optimizer = OptimizerKind::Sgd;
    let ld = loader(&cfg);
    let n = ld.niter_per_epoch();
    let mut one = Trainer::new(cfg.clone(), n, &device()).unwrap();
    let want = run(&mut one, &ld, 4);
    let mut two = Trainer::new(cfg.clone(), n, &device()).unwrap();
    two.set_devices(vec![device(); 2]).unwrap();
    let got = run(&mut two, &ld, 4);
    for (x, y) in want.iter().zip(&got) {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs(),
            "losses {want:?} vs {got:?}"
        );
    }
    // the momentum of the gradients that are exactly zero (the shifts before each BatchNorm)
    // is rounding noise of up to ~2e-6, where the buffers of the other parameters reach 0.5-4:
    // the optimiser's state is compared on the scale of 0.1
    let floor = 0.1;
    assert_same_state(&one, &two, floor);
    // ranks in threads (the MPI layer's semantics), with one or two parts each
    for parts in [1, 2] {
        let ranks: Vec<Trainer> = std::thread::scope(|scope| {
            let handles: Vec<_> = ThreadWorld::new(2)
                .into_iter()
                .map(|c| {
                    let (cfg, ld) = (cfg.clone(), &ld);
                    scope.spawn(move || {
                        let mut t = Trainer::new(cfg, n, &device()).unwrap();
                        t.set_collective(Arc::new(c)).unwrap();
                        if parts > 1 {
                            t.set_devices(vec![device(); parts]).unwrap();
                        }
                        run(&mut t, ld, 4);
                        t
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for t in &ranks {
            if parts == 1 {
                // sums in the same order as two parts of one process: the same bytes
                assert!(
                    t.checkpoint_bytes().unwrap() == two.checkpoint_bytes().unwrap(),
                    "two ranks differ from one process with two parts"
                );
            } else {
                assert_same_state(&one, t, floor);
            }
        }
    }
}

#[test]
fn a_batch_splits_into_the_images_of_each_part() {
    // 4 images, 2 global and 3 local crops; every value names (crop, image)
    let (b, locals) = (4, 3);
    // floats per crop: 3 x 2 x 2 (global), 3 x 1 x 1 (local)
    let (g, l) = (12, 3);
    let tag = |c: usize, i: usize| (10 * c + i) as f32;
    let batch = dino_core::data::CropBatch {
        globals: (0..2 * b)
            .flat_map(|r| vec![tag(r / b, r % b); g])
            .collect(),
        locals: (0..locals * b)
            .flat_map(|r| vec![tag(r / b, r % b); l])
            .collect(),
        batch: b,
    };
    let part = batch.shard(1, 2, locals).unwrap();
    assert_eq!(part.batch, 2);
    let rows = |d: &[f32], n: usize| d.chunks(n).map(|c| c[0]).collect::<Vec<_>>();
    assert_eq!(rows(&part.globals, g), [2.0, 3.0, 12.0, 13.0]);
    assert_eq!(rows(&part.locals, l), [2.0, 3.0, 12.0, 13.0, 22.0, 23.0]);
    assert!(batch.shard(0, 3, locals).is_err(), "4 images in 3 parts");
    assert!(batch.shard(2, 2, locals).is_err(), "no part 2 of 2");
}

#[test]
fn tampered_checkpoints_are_refused_with_a_clear_error() {
    // A checkpoint is a file like any other: a wrong optimiser buffer or a crafted run length
    // in its header must be refused when loading, not fail (or allocate without bound) later.
    let cfg = tiny_config();
    let ld = loader(&cfg);
    let mut t = Trainer::new(cfg, ld.niter_per_epoch(), &device()).unwrap();
    run(&mut t, &ld, 1);
    let bytes = t.checkpoint_bytes().unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta: BTreeMap<String, String> = meta.metadata().clone().unwrap().into_iter().collect();
    let tensors = safetensors_f32(&bytes);
    type Edit<'a> = &'a dyn Fn(&mut StateDict, &mut BTreeMap<String, String>);
    let load = |edit: Edit| {
        let mut sd = StateDict::new();
        for (k, t) in &tensors {
            sd.insert(k.clone(), t.clone());
        }
        let mut m = meta.clone();
        edit(&mut sd, &mut m);
        let format = m.remove("format").unwrap();
        let extra: Vec<(&str, String)> = m.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let b = safetensors_bytes(&sd, false, &format, &extra).unwrap();
        Trainer::from_checkpoint(&b, &device()).map(|_| ())
    };
    load(&|_, _| {}).expect("the untouched checkpoint loads");
    let (key, buf) = tensors
        .iter()
        .find(|(k, _)| k.starts_with("optimizer.") && k.contains("qkv.weight"))
        .unwrap();
    let n = buf.data.len();
    let short = RawTensor::new(vec![n - 1], buf.data[..n - 1].to_vec()).unwrap();
    let e = load(&|sd, _| sd.insert(key.clone(), short.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "has shape [{}], the parameter has {n} values",
            n - 1
        )),
        "{e}"
    );
    let e = load(&|sd, _| sd.insert("optimizer.backbone.nothing.weight.0", short.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'backbone.nothing.weight' is not a parameter"),
        "{e}"
    );
    let e = load(&|sd, _| {
        let third = format!("{}.2", key.rsplit_once('.').unwrap().0);
        sd.insert(third, buf.clone())
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("has buffers [0, 1, 2], AdamW keeps 2"), "{e}");
    // a run length past counting, written into the header's config
    let run_key = meta
        .iter()
        .find(|(_, v)| v.contains("\"epochs\""))
        .map(|(k, _)| k.clone())
        .unwrap();
    let e = load(&|_, m| {
        let mut header: serde_json::Value = serde_json::from_str(&m[&run_key]).unwrap();
        header["config"]["epochs"] = serde_json::json!(u64::MAX);
        m.insert(run_key.clone(), header.to_string());
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("more iterations than this machine can count"),
        "{e}"
    );
}

#[test]
fn ranks_of_a_collective_train_as_one_process_with_as_many_parts() {
    // Two ranks (threads with ThreadWorld: the semantics of the MPI layer), one part each, on
    // the same batches: every rank ends with the checkpoint, byte for byte, of one process
    // whose batch runs as two parts; drop path on (its masks follow the global part index).
    let mut cfg = tiny_config();
    cfg.batch_size = 4;
    let ld = loader(&cfg);
    let n = ld.niter_per_epoch();
    let mut single = Trainer::new(cfg.clone(), n, &device()).unwrap();
    single.set_devices(vec![device(), device()]).unwrap();
    let want_losses = run(&mut single, &ld, 4);
    let want = single.checkpoint_bytes().unwrap();
    // each rank given the whole batches, or a loader that builds only its share of them
    for sharded in [false, true] {
        let ranks: Vec<(Vec<f64>, Vec<u8>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = ThreadWorld::new(2)
                .into_iter()
                .enumerate()
                .map(|(rank, c)| {
                    let cfg = cfg.clone();
                    scope.spawn(move || {
                        let mut ld = loader(&cfg);
                        if sharded {
                            ld = ld.with_shard(rank, 2).unwrap();
                        }
                        let mut t = Trainer::new(cfg, n, &device()).unwrap();
                        t.set_collective(Arc::new(c)).unwrap();
                        assert_eq!(t.world(), 2);
                        // the throughput counts the whole batch, given a share or all of it
                        use dino_core::train::run::TrainRun;
                        assert_eq!([2, 4].map(|n| t.images_per_step(n)), [4, 4]);
                        let losses = run(&mut t, &ld, 4);
                        (losses, t.checkpoint_bytes().unwrap())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (rank, (losses, bytes)) in ranks.iter().enumerate() {
            assert_eq!(
                losses, &want_losses,
                "rank {rank}'s losses (sharded: {sharded})"
            );
            assert!(
                bytes == &want,
                "rank {rank}'s checkpoint differs from one process's (sharded: {sharded})"
            );
        }
    }
    // a batch that does not split over the ranks' parts is refused when joining
    let mut odd = tiny_config();
    odd.batch_size = 3;
    let mut t = Trainer::new(odd, 2, &device()).unwrap();
    let e = t
        .set_collective(Arc::new(ThreadWorld::new(2).remove(0)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot be split"), "{e}");
}

#[test]
fn ranks_that_diverge_are_caught_at_the_checkpoint() {
    // two ranks started from different seeds hold different states: the loop's checkpoint
    // (TrainRun::checkpoint_bytes) compares their checksums and stops both with an error
    use dino_core::train::run::TrainRun;
    let errors: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = ThreadWorld::new(2)
            .into_iter()
            .enumerate()
            .map(|(rank, c)| {
                scope.spawn(move || {
                    let mut cfg = tiny_config();
                    cfg.batch_size = 4;
                    cfg.seed = rank as u64;
                    let mut t = Trainer::new(cfg, 2, &device()).unwrap();
                    t.set_collective(Arc::new(c)).unwrap();
                    TrainRun::checkpoint_bytes(&t).unwrap_err().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for e in errors {
        assert!(
            e.contains("the ranks hold different training states"),
            "{e}"
        );
    }
}

/// f16 (`--precision f16`): the loss is scaled by GradScaler's 65536 and the gradients
/// unscaled; a step whose gradients overflow is skipped (student and optimiser state as they
/// were, the iteration counted, the teacher EMA and center moved as in the official loop) and
/// the scale halved; the scale travels in the checkpoint, so an f16 run resumes exactly.
#[test]
fn an_f16_run_scales_its_loss_skips_overflowing_steps_and_resumes_exactly() {
    use dino_core::train::Precision;
    use dino_core::train::loss_scale::{INIT_SCALE, LossScale};
    let mut cfg = tiny_config();
    cfg.precision = Precision::F16;
    // this tiny head's gradients need a scale of at most 64 (the pre-normalisation features
    // are ~1e-2, so the L2 norm's backward multiplies by ~100): the first 10 steps back off
    // from 65536, the stop falls after the updates began
    cfg.epochs = 4;
    assert_resumes_exactly_after(cfg.clone(), 1, 13);

    let ld = loader(&cfg);
    let mut t = Trainer::new(cfg, ld.niter_per_epoch(), &device()).unwrap();
    assert_eq!(t.student().precision(), Precision::F16);
    let (batch, _) = ld.batch(0, 0, &ld.epoch_order(0)).unwrap();
    let student = |s: &[(String, Vec<f32>)]| -> Vec<Vec<f32>> {
        let kept = s.iter().filter(|(k, _)| k.starts_with("student."));
        kept.map(|(_, v)| v.clone()).collect()
    };
    // as with GradScaler, the first steps may overflow at 65536 (here the logits' gradient,
    // 1 / student_temp per row, times the scale exceeds f16's 65504): each halves the scale
    let mut scale = INIT_SCALE;
    let moved = loop {
        let before = state(&t);
        let stats = t.step(&batch).unwrap();
        assert_eq!(stats.loss_scale, Some(scale));
        let after = state(&t);
        if stats.overflow == Some(false) {
            assert!(student(&before) != student(&after), "a good step updates");
            break after;
        }
        assert_eq!(stats.overflow, Some(true));
        assert!(
            student(&before) == student(&after),
            "a skipped step does not"
        );
        scale /= 2.0;
        assert!(t.iteration < 16, "the scale never settled");
    };
    assert_eq!(t.loss_scale.map(|s| s.scale), Some(scale));
    let iteration = t.iteration;
    // a scale no f16 gradient survives: every gradient overflows to inf
    t.loss_scale = Some(LossScale {
        scale: 1e30,
        good_steps: 7,
    });
    let skipped = t.step(&batch).unwrap();
    assert_eq!(
        (skipped.loss_scale, skipped.overflow),
        (Some(1e30), Some(true))
    );
    assert!(skipped.loss.is_finite(), "the loss itself is not scaled");
    assert_eq!(t.iteration, iteration + 1);
    assert_eq!(
        t.loss_scale,
        Some(LossScale {
            scale: 5e29,
            good_steps: 0
        })
    );
    let after = state(&t);
    for ((k, a), (_, b)) in moved.iter().zip(&after) {
        if k.starts_with("student.") || k.starts_with("optimizer.") {
            assert!(a == b, "{k} changed in a skipped step");
        }
    }
    assert!(
        moved
            .iter()
            .zip(&after)
            .any(|(a, b)| a.0 == "dino_loss.center" && a.1 != b.1),
        "the center moves in a skipped step"
    );
    let resumed = Trainer::from_checkpoint(&t.checkpoint_bytes().unwrap(), &device()).unwrap();
    assert_eq!(resumed.loss_scale, t.loss_scale);
}

/// Checkpoints are f32 whatever the precision: an f32 run resumes in bf16 (and its parts,
/// copies of the networks on other threads, compute in bf16 too), giving losses close to the
/// f32 run's but not equal to them.
#[test]
fn a_run_resumes_in_another_precision_and_its_parts_use_it() {
    use dino_core::train::Precision;
    let cfg = tiny_config();
    let ld = loader(&cfg);
    let dev = device();
    let n = ld.niter_per_epoch();
    let mut t = Trainer::new(cfg, n, &dev).unwrap();
    run(&mut t, &ld, 2);
    let bytes = t.checkpoint_bytes().unwrap();
    let f32_losses = run(&mut t, &ld, 2);
    for parts in [1, 2] {
        let mut r = Trainer::from_checkpoint(&bytes, &dev).unwrap();
        r.set_devices(vec![dev.clone(); parts]).unwrap();
        r.cfg.precision = Precision::Bf16;
        let losses = run(&mut r, &ld, 2);
        assert_eq!(r.student().precision(), Precision::Bf16);
        assert_eq!(r.teacher().precision(), Precision::Bf16);
        for (a, b) in losses.iter().zip(&f32_losses) {
            let rel = ((a - b) / b).abs();
            assert!(
                rel > 1e-6 && rel < 2e-2,
                "{parts} part(s): bf16 {a} vs f32 {b}"
            );
        }
    }
}
