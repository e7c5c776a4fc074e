//! Training across processes on MPI (the `mpi` feature; needs `mpirun`): two ranks launched by
//! `mpirun -np 2` train as one process whose batch runs as two parts, byte for byte.
#![cfg(feature = "mpi")]

mod common;

use std::process::Command;

use common::{ok, s, train_args_with};

/// One mpirun job at a time: the ranks of concurrent jobs would share the 2 cores many times
/// over, and their output would interleave.
static ONE_JOB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_job() -> std::sync::MutexGuard<'static, ()> {
    ONE_JOB.lock().unwrap_or_else(|e| e.into_inner())
}
use dino_tests::{fixture, max_abs, read_npy_file};

#[test]
fn mpi_ranks_train_as_one_process_with_as_many_parts() {
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let (one, ranks) = (dir.path().join("one"), dir.path().join("ranks"));
    let data = fixture("images");
    let args = |out: &std::path::Path, devices: &str| -> Vec<String> {
        let mut a: Vec<String> = train_args_with(s(&data), s(out), "2", "0")
            .into_iter()
            .map(String::from)
            .collect();
        a.extend(["--attention-every", "0", "--devices", devices].map(String::from));
        a
    };
    ok(&args(&one, "2")
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let r = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .arg(env!("CARGO_BIN_EXE_dino"))
        .args(args(&ranks, "1"))
        .output()
        .expect("mpirun (Debian: openmpi-bin; tests/setup-tools.sh installs it)");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("MPI: 2 ranks (world_size = 2)"), "{err}");
    let config = std::fs::read_to_string(ranks.join("config.toml")).unwrap();
    assert!(config.contains("# world_size = 2"), "{config}");
    for f in ["checkpoint.safetensors", "teacher.safetensors", "log.txt"] {
        let (a, b) = (
            std::fs::read(one.join(f)).unwrap(),
            std::fs::read(ranks.join(f)).unwrap(),
        );
        assert!(
            a == b,
            "{f} of the two ranks differs from the one process's"
        );
    }
}

#[test]
fn a_failing_rank_stops_the_whole_job() {
    let _job = one_job();
    // three ranks cannot share a batch of 2: each fails, and MPI_Abort ends the job (no rank
    // is left waiting in a collective) with a non-zero status and the reason
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = fixture("images");
    let r = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "3"])
        .arg(env!("CARGO_BIN_EXE_dino"))
        .args(train_args_with(s(&data), s(&out), "1", "0"))
        .args(["--devices", "1"])
        .output()
        .expect("mpirun");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "{err}");
    assert!(
        err.contains("error on MPI rank") && err.contains("cannot be shared by 3 processes"),
        "{err}"
    );
}

#[test]
fn a_checkpoint_of_two_ranks_resumes_in_one_process() {
    let _job = one_job();
    // two ranks train 2 epochs keeping a copy after each; a single process (two parts)
    // resumes the copy of epoch 0 into a new folder and ends where the ranks ended: only the
    // per-rank share of each batch depends on the world size
    let dir = tempfile::tempdir().unwrap();
    let (ranks, resumed) = (dir.path().join("ranks"), dir.path().join("resumed"));
    let data = fixture("images");
    let mut args: Vec<&str> = train_args_with(s(&data), s(&ranks), "2", "0");
    args.extend([
        "--attention-every",
        "0",
        "--saveckp-freq",
        "1",
        "--devices",
        "1",
    ]);
    let r = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .arg(env!("CARGO_BIN_EXE_dino"))
        .args(&args)
        .output()
        .expect("mpirun");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let copy = ranks.join("checkpoint0000.safetensors");
    let mut one: Vec<&str> = train_args_with(s(&data), s(&resumed), "2", "0");
    one.extend([
        "--attention-every",
        "0",
        "--saveckp-freq",
        "1",
        "--devices",
        "2",
    ]);
    one.extend(["--resume", s(&copy)]);
    ok(&one);
    for f in ["checkpoint.safetensors", "teacher.safetensors"] {
        assert!(
            std::fs::read(ranks.join(f)).unwrap() == std::fs::read(resumed.join(f)).unwrap(),
            "{f}: the resumed single process differs from the two ranks"
        );
    }
}

#[test]
fn three_ranks_train_as_one_process_with_three_parts() {
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let (one, ranks) = (dir.path().join("one"), dir.path().join("ranks"));
    let data = fixture("images");
    let args = |out: &std::path::Path, devices: &'static str| -> Vec<String> {
        let mut a: Vec<String> = train_args_with(s(&data), s(out), "1", "0")
            .into_iter()
            .map(String::from)
            .collect();
        a.extend(
            [
                "--attention-every",
                "0",
                "--batch-size",
                "3",
                "--devices",
                devices,
            ]
            .map(String::from),
        );
        a
    };
    ok(&args(&one, "3")
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let r = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "3"])
        .arg(env!("CARGO_BIN_EXE_dino"))
        .args(args(&ranks, "1"))
        .output()
        .expect("mpirun");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for f in ["checkpoint.safetensors", "teacher.safetensors", "log.txt"] {
        assert!(
            std::fs::read(one.join(f)).unwrap() == std::fs::read(ranks.join(f)).unwrap(),
            "{f} of the three ranks differs from the one process's"
        );
    }
}

#[test]
fn sharded_embed_equals_one_process() {
    let _job = one_job();
    // three ranks share five images unevenly (2, 2, 1); rank 0 writes every row in order
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
    let (one, ranks) = (dir.path().join("one.npy"), dir.path().join("ranks.npy"));
    let mut args: Vec<&str> = vec!["embed", "-w", s(&w), "-o", s(&one)];
    args.extend(images.iter().map(String::as_str));
    ok(&args);
    let r = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "3"])
        .arg(env!("CARGO_BIN_EXE_dino"))
        .args(["embed", "-w", s(&w), "-o", s(&ranks)])
        .args(&images)
        .output()
        .expect("mpirun");
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

#[test]
fn a_killed_rank_ends_the_job_and_the_next_launch_resumes() {
    let _job = one_job();
    // SIGKILL one rank after the first checkpoint: mpirun ends the whole job non-zero within a
    // bounded time; launched again, the ranks resume and end as an uninterrupted process does
    let dir = tempfile::tempdir().unwrap();
    let (one, ranks) = (dir.path().join("one"), dir.path().join("ranks"));
    let data = fixture("images");
    let args = |out: &std::path::Path, devices: &'static str| -> Vec<String> {
        let mut a: Vec<String> = train_args_with(s(&data), s(out), "3", "0")
            .into_iter()
            .map(String::from)
            .collect();
        a.extend(
            [
                "--attention-every",
                "0",
                "--checkpoint-every",
                "1",
                "--devices",
                devices,
            ]
            .map(String::from),
        );
        a
    };
    ok(&args(&one, "2")
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let launch = || {
        Command::new("mpirun")
            .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
            .arg(env!("CARGO_BIN_EXE_dino"))
            .args(args(&ranks, "1"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("mpirun")
    };
    let mut job = launch();
    let ckpt = ranks.join("checkpoint.safetensors");
    let t = std::time::Instant::now();
    while !ckpt.exists() && t.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // the ranks are mpirun's children running dino (read from /proc): kill the last one
    let ranks_of = |parent: u32| -> Vec<u32> {
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
    };
    let victim = *ranks_of(job.id()).last().expect("a rank");
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
    let out = launch().wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resuming"), "{err}");
    for f in ["checkpoint.safetensors", "teacher.safetensors", "log.txt"] {
        assert!(
            std::fs::read(one.join(f)).unwrap() == std::fs::read(ranks.join(f)).unwrap(),
            "{f} after the kill and the relaunch differs from the uninterrupted run"
        );
    }
}
