//! The run's plots, redrawn after every epoch from the metrics the method logs: the loss (per
//! iteration and epoch mean, with its parts where the method has them), DINO's collapse
//! diagnostics (entropy of the teacher's targets per image and of their batch mean, against
//! log K), PAWS's support accuracy, and the schedules.

use std::path::Path;

use dino_core::train::run::Record;
use plotters::style::RGBColor;
use plotters::style::full_palette::{
    BLUE_600, BROWN_600, GREEN_700, ORANGE_700, PURPLE_600, RED_600, TEAL_600,
};

use crate::plots::{Series, chart_grid, line_chart};

/// The schedules a run may log, with their chart titles.
const SCHEDULES: [(&str, &str, RGBColor); 4] = [
    ("lr", "learning rate", BLUE_600),
    ("wd", "weight decay", GREEN_700),
    ("momentum", "teacher momentum", ORANGE_700),
    ("teacher_temp", "teacher temperature", PURPLE_600),
];

/// Writes `plots/loss.png`, `plots/schedules.png` and, where the run logs what they show,
/// `plots/collapse.png` (DINO; `out_dim` is its K) and `plots/support.png` (PAWS) under `out`.
pub fn plot(out: &Path, records: &[Record], out_dim: usize) -> anyhow::Result<()> {
    let Some(first) = records.first() else {
        return Ok(());
    };
    let has = |k: &str| first.values.contains_key(k);
    let per_iter = |k: &str| -> Vec<(f64, f64)> {
        records
            .iter()
            .map(|r| (r.iteration as f64, r.get(k)))
            .collect()
    };
    let dir = dino_core::train::run::RunDir(out.to_path_buf()).plots();
    std::fs::create_dir_all(&dir)?;
    let epoch_mean: Vec<(f64, f64)> = records
        .chunk_by(|a, b| a.epoch == b.epoch)
        .map(|e| {
            let mid = (e[0].iteration + e[e.len() - 1].iteration) as f64 / 2.0;
            (
                mid,
                e.iter().map(|r| r.get("loss")).sum::<f64>() / e.len() as f64,
            )
        })
        .collect();
    let mut loss = vec![
        Series {
            label: "per iteration",
            points: per_iter("loss"),
            color: BLUE_600,
        },
        Series {
            label: "epoch mean",
            points: epoch_mean,
            color: RED_600,
        },
    ];
    // PAWS: the cross-entropy and the me-max regulariser the loss sums
    for (k, label, color) in [
        ("xent", "cross-entropy", TEAL_600),
        ("me_max", "me-max", BROWN_600),
    ] {
        if has(k) {
            loss.push(Series {
                label,
                points: per_iter(k),
                color,
            });
        }
    }
    line_chart(&dir.join("loss.png"), "training loss", "iteration", &loss)?;
    if has("teacher_entropy") {
        let log_k = (out_dim.max(1) as f64).ln();
        let last = records.last().map_or(0.0, |r| r.iteration as f64);
        line_chart(
            &dir.join("collapse.png"),
            "teacher target entropy (nats)",
            "iteration",
            &[
                Series {
                    label: "per image",
                    points: per_iter("teacher_entropy"),
                    color: BLUE_600,
                },
                Series {
                    label: "of the batch mean",
                    points: per_iter("batch_entropy"),
                    color: GREEN_700,
                },
                Series {
                    label: "log K",
                    points: vec![(first.iteration as f64, log_k), (last, log_k)],
                    color: RED_600,
                },
            ],
        )?;
    }
    if has("support_acc") {
        line_chart(
            &dir.join("support.png"),
            "accuracy of the support batch's own soft-NN predictions",
            "iteration",
            &[Series {
                label: "support accuracy",
                points: per_iter("support_acc"),
                color: GREEN_700,
            }],
        )?;
    }
    let schedules: Vec<(&str, Series)> = SCHEDULES
        .iter()
        .filter(|(k, _, _)| has(k))
        .map(|&(k, title, color)| {
            (
                title,
                Series {
                    label: k,
                    points: per_iter(k),
                    color,
                },
            )
        })
        .collect();
    chart_grid(&dir.join("schedules.png"), "iteration", &schedules)
}
