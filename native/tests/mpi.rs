//! Training and feature extraction across processes on MPI (the `mpi` feature; needs
//! `mpirun`): N ranks train as one process whose batch runs as N parts, byte for byte; a
//! failing or killed rank ends the job; `dino embed` shares its images out, `dino dedup`,
//! `cluster` and `retrieve` their feature extraction.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{class_folder, ok, ok_all, paws_args, s, train_args_with};
use dino_tests::{fixture, max_abs, read_npy_file};

/// One mpirun job at a time: the ranks of concurrent jobs would share the 2 cores many times
/// over, and their output would interleave.
static ONE_JOB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_job() -> std::sync::MutexGuard<'static, ()> {
    ONE_JOB.lock().unwrap_or_else(|e| e.into_inner())
}

/// `dino train` of the tiny test ViT on the fixture photos into `out`, then `extra`.
fn train(out: &Path, epochs: &str, extra: &[&str]) -> Vec<String> {
    let data = fixture("images");
    let mut a: Vec<String> = train_args_with(s(&data), s(out), epochs, "0")
        .into_iter()
        .map(String::from)
        .collect();
    a.push("--attention-every".into());
    a.push("0".into());
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// `mpirun -np N dino ARGS`, not yet waited for.
fn mpirun(np: usize, args: &[String]) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &np.to_string(),
    ])
    .arg(env!("CARGO_BIN_EXE_dino"))
    .args(args);
    c
}

fn run(mut c: Command) -> Output {
    c.output()
        .expect("mpirun (Debian: openmpi-bin; tests/setup-tools.sh installs it)")
}

/// The training outputs of two runs, byte for byte.
fn assert_same_run(a: &Path, b: &Path, files: &[&str], what: &str) {
    for f in files {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{f}: {what}"
        );
    }
}

const RUN: [&str; 3] = ["checkpoint.safetensors", "teacher.safetensors", "log.txt"];

/// `dino train` of `epochs` with `extra` into `dir`, as one process whose batch runs as `n`
/// parts (`dir/one`) and as `mpirun -np n` ranks of one part each (`dir/ranks`), both
/// successful; the ranks' stderr.
fn parts_and_ranks(dir: &Path, n: usize, epochs: &str, extra: &[&str]) -> String {
    let n_parts = n.to_string();
    let one = train(
        &dir.join("one"),
        epochs,
        &[extra, &["--devices", &n_parts]].concat(),
    );
    ok(&strs(&one));
    let ranks = train(
        &dir.join("ranks"),
        epochs,
        &[extra, &["--devices", "1"]].concat(),
    );
    let r = run(mpirun(n, &ranks));
    let err = String::from_utf8_lossy(&r.stderr).into_owned();
    assert!(r.status.success(), "{err}");
    err
}

#[test]
fn mpi_ranks_train_as_one_process_with_as_many_parts() {
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let (one, ranks) = (dir.path().join("one"), dir.path().join("ranks"));
    let err = parts_and_ranks(dir.path(), 2, "2", &[]);
    assert!(err.contains("MPI: 2 ranks (world_size = 2)"), "{err}");
    let config = std::fs::read_to_string(ranks.join("config.toml")).unwrap();
    assert!(config.contains("# world_size = 2"), "{config}");
    assert_same_run(
        &one,
        &ranks,
        &RUN,
        "two ranks differ from one process with two parts",
    );
}

#[test]
fn three_ranks_train_as_one_process_with_three_parts() {
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let (one, ranks) = (dir.path().join("one"), dir.path().join("ranks"));
    parts_and_ranks(dir.path(), 3, "1", &["--batch-size", "3"]);
    assert_same_run(&one, &ranks, &RUN, "three ranks differ from one process");
}

#[test]
fn a_batchnorm_head_on_two_ranks_trains_as_one_process_with_two_parts() {
    // SyncBatchNorm over MPI: the head's BatchNorms normalise with the whole batch's
    // statistics and sum their gradients over the ranks, as they do over the two parts of one
    // process (the same sums in the same order: the same bytes)
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let (one, ranks) = (dir.path().join("one"), dir.path().join("ranks"));
    parts_and_ranks(dir.path(), 2, "2", &["--use-bn-in-head", "true"]);
    let config = std::fs::read_to_string(ranks.join("config.toml")).unwrap();
    assert!(config.contains("use_bn_in_head = true"), "{config}");
    assert_same_run(
        &one,
        &ranks,
        &RUN,
        "two ranks with a BatchNorm head differ from one process with two parts",
    );
}

#[test]
fn a_checkpoint_of_two_ranks_resumes_in_one_process() {
    // two ranks train 2 epochs keeping a copy after each; a single process (two parts)
    // resumes the copy of epoch 0 into a new folder and ends where the ranks ended: only the
    // per-rank share of each batch depends on the world size
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let (ranks, resumed) = (dir.path().join("ranks"), dir.path().join("resumed"));
    let r = run(mpirun(
        2,
        &train(&ranks, "2", &["--saveckp-freq", "1", "--devices", "1"]),
    ));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let copy = ranks.join("checkpoint0000.safetensors");
    ok(&strs(&train(
        &resumed,
        "2",
        &[
            "--saveckp-freq",
            "1",
            "--devices",
            "2",
            "--resume",
            s(&copy),
        ],
    )));
    assert_same_run(
        &ranks,
        &resumed,
        &RUN[..2],
        "the resumed single process differs from the two ranks",
    );
}

#[test]
fn a_failing_rank_stops_the_whole_job() {
    // three ranks cannot share a batch of 2: each fails, and MPI_Abort ends the job (no rank
    // is left waiting in a collective) with a non-zero status and the reason
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let r = run(mpirun(
        3,
        &train(&dir.path().join("run"), "1", &["--devices", "1"]),
    ));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "{err}");
    assert!(
        err.contains("error on MPI rank") && err.contains("cannot be shared by 3 processes"),
        "{err}"
    );
}

/// The processes running dino whose parent is `parent` (from /proc), in pid order.
fn dino_children(parent: u32) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            // "pid (comm) state ppid ..."
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit_once(") ").is_some_and(|(head, tail)| {
                head.ends_with("(dino") && tail.split(' ').nth(1) == Some(&parent.to_string())
            })
        })
        .collect();
    pids.sort();
    pids
}

#[test]
fn a_killed_rank_ends_the_job_and_the_next_launch_resumes() {
    // SIGKILL one rank after the first checkpoint: mpirun ends the whole job non-zero within a
    // bounded time; launched again, the ranks resume and end as an uninterrupted process does
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let (one, ranks) = (dir.path().join("one"), dir.path().join("ranks"));
    let every = ["--checkpoint-every", "1"];
    ok(&strs(&train(
        &one,
        "3",
        &[&every[..], &["--devices", "2"]].concat(),
    )));
    let args = train(&ranks, "3", &[&every[..], &["--devices", "1"]].concat());
    let mut launch = mpirun(2, &args);
    let mut job = launch.stderr(Stdio::piped()).spawn().expect("mpirun");
    let ckpt = ranks.join("checkpoint.safetensors");
    let t = std::time::Instant::now();
    while !ckpt.exists() && t.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let victim = *dino_children(job.id()).last().expect("a rank");
    Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = job.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed().as_secs() < 60,
            "the job did not end after a rank was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        !status.success(),
        "the job ended successfully without a rank"
    );
    // the next launch resumes from the last checkpoint and ends as the uninterrupted run
    let out = run(mpirun(2, &args));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resuming"), "{err}");
    assert_same_run(
        &one,
        &ranks,
        &RUN,
        "after the kill and the relaunch: not the uninterrupted run",
    );
}

#[test]
fn sharded_embed_equals_one_process() {
    // three ranks share five images unevenly (2, 2, 1); rank 0 writes every row in order
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let w = fixture("weights/s16_backbone.pth");
    let images: Vec<String> = [
        "camera.png",
        "chelsea.png",
        "coffee.png",
        "rocket.jpg",
        "camera.png",
    ]
    .iter()
    .map(|f| fixture(&format!("images/{f}")).display().to_string())
    .collect();
    let embed = |out: &Path| -> Vec<String> {
        let mut a: Vec<String> = ["embed", "-w", s(&w), "-o", s(out)]
            .map(String::from)
            .to_vec();
        a.extend(images.iter().cloned());
        a
    };
    let (one, ranks) = (dir.path().join("one.npy"), dir.path().join("ranks.npy"));
    ok(&strs(&embed(&one)));
    let r = run(mpirun(3, &embed(&ranks)));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(
        err.contains("MPI: 3 ranks share the 5 images (1 or 2 each"),
        "{err}"
    );
    // the same rows in the same order; a rank's forward passes batch other images together
    // (here the last rank runs one image alone), which moves the last bits of f32 sums
    let (a, b) = (read_npy_file(&one), read_npy_file(&ranks));
    assert_eq!(a.0, b.0);
    let err = max_abs(&a.1, &b.1);
    assert!(
        err < 2e-5,
        "the ranks' rows differ from one process's by {err}"
    );
}

/// PAWS on two MPI ranks: each rank its own unlabelled images and support share, supports
/// gathered across ranks (the numerics are checked against PyTorch's emulated DDP run in
/// tests/paws_vs_pytorch.rs); rank 0 writes the encoder, which `dino snn` reads.
#[test]
fn paws_trains_on_two_ranks() {
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let classes = class_folder(dir.path());
    let out = dir.path().join("paws");
    // one unlabelled image per rank and iteration
    let mut args: Vec<String> = paws_args(s(&classes), s(&out))
        .into_iter()
        .map(String::from)
        .collect();
    args.extend(["--unsupervised-batch-size".into(), "1".into()]);
    let r = run(mpirun(2, &args));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("MPI: 2 ranks"), "{err}");
    // 4 unlabelled images, 2 ranks x 1 per iteration: 2 iterations per epoch
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4, "{metrics}");
    let text = ok(&[
        "snn",
        "-w",
        s(&out.join("encoder.safetensors")),
        "--train",
        s(&classes),
        "--val",
        s(&classes),
    ]);
    assert!(text.contains("top-1"), "{text}");
}

/// `pairs.csv` of a dedup output as (a, b, similarity), by file name.
fn dedup_pairs(out: &Path) -> Vec<(String, String, f32)> {
    let text = std::fs::read_to_string(out.join("pairs.csv")).unwrap();
    let name = |p: &str| {
        let p = p.trim_matches('"');
        Path::new(p)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let mut v: Vec<_> = text
        .lines()
        .skip(1)
        .map(|l| {
            let mut f = l.splitn(3, ',');
            let score: f32 = f.next().unwrap().parse().unwrap();
            let (a, b) = (name(f.next().unwrap()), name(f.next().unwrap()));
            if a < b { (a, b, score) } else { (b, a, score) }
        })
        .collect();
    v.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    v
}

#[test]
fn sharded_dedup_equals_one_process() {
    // three ranks share six files (2 each); the unreadable one falls to the last rank, whose
    // reason must reach rank 0's report like a one-process run's
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("photos");
    std::fs::create_dir(&data).unwrap();
    for (from, to) in [
        ("camera.png", "camera.png"),
        ("chelsea.png", "chelsea.png"),
        ("chelsea.png", "chelsea_copy.png"),
        ("coffee.png", "coffee.png"),
        ("rocket.jpg", "rocket.jpg"),
    ] {
        std::fs::copy(fixture(&format!("images/{from}")), data.join(to)).unwrap();
    }
    std::fs::write(data.join("zz_broken.jpg"), b"\xff\xd8\xff not a jpeg").unwrap();
    let w = fixture("weights/s16_backbone.pth");
    let dedup = |out: &Path, index: &Path| -> Vec<String> {
        [
            "dedup",
            "-w",
            s(&w),
            s(&data),
            "--out",
            s(out),
            "--resize",
            "224x224",
            "--threshold",
            "0.9",
            "--index-file",
            s(index),
        ]
        .map(String::from)
        .to_vec()
    };
    let (one, ranks) = (dir.path().join("one"), dir.path().join("ranks"));
    let (one_index, ranks_index) = (dir.path().join("one.idx"), dir.path().join("ranks.idx"));
    ok(&strs(&dedup(&one, &one_index)));
    let r = run(mpirun(3, &dedup(&ranks, &ranks_index)));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("MPI: 3 ranks share the extraction"), "{err}");
    assert!(
        err.contains("zz_broken.jpg"),
        "rank 2's unreadable file: {err}"
    );
    let (a, b) = (dedup_pairs(&one), dedup_pairs(&ranks));
    assert!(
        a.iter()
            .any(|(x, y, _)| x == "chelsea.png" && y == "chelsea_copy.png"),
        "{a:?}"
    );
    assert_eq!(a.len(), b.len(), "{a:?} / {b:?}");
    for (p, q) in a.iter().zip(&b) {
        assert_eq!((&p.0, &p.1), (&q.0, &q.1));
        assert!((p.2 - q.2).abs() < 1e-4, "{p:?} / {q:?}");
    }
    let report = |o: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(o.join("report.json")).unwrap()).unwrap()
    };
    let (ra, rb) = (report(&one), report(&ranks));
    assert_eq!(ra["images"], rb["images"]);
    assert_eq!(ra["skipped"], rb["skipped"]);
    assert_eq!(
        std::fs::read_to_string(one.join("groups.csv")).unwrap(),
        std::fs::read_to_string(ranks.join("groups.csv")).unwrap()
    );
    // the index rank 0 wrote holds every readable file: one process reuses all of it
    let again = ok_all(&strs(&dedup(&dir.path().join("again"), &ranks_index)));
    assert!(again.contains("5 reused, 0 computed"), "{again}");
}

#[test]
fn sharded_cluster_and_retrieve_equal_one_process() {
    // two ranks share the four photos of the class folder; rank 0 clusters, maps, searches
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let data = class_folder(dir.path());
    let w = fixture("weights/s16_backbone.pth");
    let cluster = |out: &Path| -> Vec<String> {
        let a = [
            "cluster",
            "-w",
            s(&w),
            s(&data),
            "--out",
            s(out),
            "--map",
            "pca",
        ];
        a.map(String::from).to_vec()
    };
    let (one, ranks) = (dir.path().join("one"), dir.path().join("ranks"));
    ok(&strs(&cluster(&one)));
    let r = run(mpirun(2, &cluster(&ranks)));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        std::fs::read_to_string(one.join("clusters.csv")).unwrap(),
        std::fs::read_to_string(ranks.join("clusters.csv")).unwrap()
    );
    // retrieve: each index built by its own launch (two ranks, then one process), the same
    // query, the same ranking
    let retrieve = |index: &Path| -> Vec<String> {
        let q = fixture("images/chelsea.png");
        let a = [
            "retrieve",
            "-w",
            s(&w),
            "--index",
            s(&data),
            "--index-file",
            s(index),
            "--query",
            s(&q),
        ];
        a.map(String::from).to_vec()
    };
    let ranked = |stdout: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(stdout)
            .lines()
            .filter(|l| l.starts_with("  "))
            .map(|l| l.rsplit('/').next().unwrap().to_string())
            .collect()
    };
    let r = run(mpirun(2, &retrieve(&dir.path().join("ranks.idx"))));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("4 images (0 reused, 4 computed"), "{err}");
    let b = ranked(&r.stdout);
    let a = ranked(ok(&strs(&retrieve(&dir.path().join("one.idx")))).as_bytes());
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(a, b);
    assert_eq!(a[0], "chelsea.png");
}

#[test]
fn paws_ranks_draw_their_own_support_classes() {
    // two classes, one per support batch: with unique classes each of two ranks takes one
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let classes = class_folder(dir.path());
    let args = |out: &Path| -> Vec<String> {
        let mut a: Vec<String> = paws_args(s(&classes), s(out))
            .into_iter()
            .map(String::from)
            .collect();
        a.extend(
            [
                "--unsupervised-batch-size",
                "1",
                "--classes-per-batch",
                "1",
                "--unique-classes-per-rank",
                "true",
            ]
            .map(String::from),
        );
        a
    };
    let out = dir.path().join("paws");
    let r = run(mpirun(2, &args(&out)));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        config.contains("unique_classes_per_rank = true"),
        "{config}"
    );
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4, "{metrics}");
    // three ranks cannot each take their own of two classes: a clear error, the job stops
    let r = run(mpirun(3, &args(&dir.path().join("three"))));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        err.contains("3 ranks x 1 classes per batch need at least 3 classes"),
        "{err}"
    );
}
