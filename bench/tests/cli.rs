//! The benchmark binary's own checks: it explains itself and refuses what it cannot time.

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dino-bench"))
        .args(args)
        .output()
        .expect("dino-bench runs")
}

#[test]
fn help_and_refusals() {
    let help = String::from_utf8_lossy(&bench(&["--help"]).stdout).into_owned();
    for flag in [
        "--mode",
        "--reference",
        "--torch-device",
        "--devices",
        "--threads",
    ] {
        assert!(help.contains(flag), "{flag} missing: {help}");
    }
    // the training-step benchmark splits its batches as `dino train --devices` does
    let out = bench(&[
        "--mode",
        "train-step",
        "--batch",
        "3",
        "--devices",
        "2",
        "--reference",
        "off",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--batch 3 does not split over --devices 2") && !err.contains("panicked"),
        "{err}"
    );
}
