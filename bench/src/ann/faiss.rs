//! FAISS side by side, through `bench/ann_faiss.py` (skipped when the interpreter has no
//! `faiss`): the rows, sampled queries and ground truth handed over as .npy files, its rows
//! read back as JSON lines.

use std::process::Command;

use anyhow::Context;
use dino_native::npy;

use crate::{Args, Row};

pub(crate) fn faiss_rows(
    rows: &[f32],
    dim: usize,
    args: &Args,
    sample: &[usize],
    truth: &[Vec<(u64, f32)>],
) -> anyhow::Result<Vec<Row>> {
    let n = rows.len() / dim;
    let probe = Command::new(&args.python)
        .args(["-c", "import faiss"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "FAISS: not installed for {} (pip install faiss-cpu)",
            args.python
        );
        return Ok(Vec::new());
    }
    let dir = &args.work;
    npy::write(&dir.join("rows.npy"), &[n, dim], rows)?;
    let ids: Vec<i64> = sample.iter().map(|&i| i as i64).collect();
    npy::write(&dir.join("queries.npy"), &[ids.len()], &ids)?;
    let t: Vec<i64> = truth
        .iter()
        .flat_map(|t| t.iter().map(|(k, _)| *k as i64))
        .collect();
    npy::write(&dir.join("truth.npy"), &[truth.len(), args.k], &t)?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/ann_faiss.py");
    let out = Command::new(&args.python)
        .arg(script)
        .arg(dir)
        .args(["--k", &args.k.to_string()])
        .args(["--m", &args.connectivity.to_string()])
        .args(["--ef-construction", &args.expansion_add.to_string()])
        .args(["--ef-search", &args.expansion_search.to_string()])
        .args(["--full", if args.full { "1" } else { "0" }])
        .args(["--exact-full-max", &args.exact_full_max.to_string()])
        .args(["--threads", &rayon::current_num_threads().to_string()])
        .args([
            "--graph-dims",
            &args
                .graph_dims
                .iter()
                .copied()
                .find(|&g| g > 0)
                .unwrap_or(128)
                .to_string(),
        ])
        .args(["--candidates", &args.candidates.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running bench/ann_faiss.py")?;
    anyhow::ensure!(out.status.success(), "bench/ann_faiss.py failed");
    std::fs::remove_file(dir.join("rows.npy")).ok();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| Ok(serde_json::from_str::<Row>(l)?))
        .collect()
}
