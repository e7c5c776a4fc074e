//! The run's plots, redrawn after every epoch: the loss (per iteration and epoch mean), the
//! collapse diagnostics (entropy of the teacher's targets per image and of their batch mean,
//! against log K), and the four schedules.

use std::path::Path;

use dino_core::train::run::Record;

/// Writes `plots/loss.png`, `plots/collapse.png` and `plots/schedules.png` under `out`.
pub fn plot(out: &Path, records: &[Record], out_dim: usize) -> anyhow::Result<()> {
    use crate::plots::{Series, chart_grid, line_chart};
    use plotters::style::full_palette::{BLUE_600, GREEN_700, ORANGE_700, PURPLE_600, RED_600};
    let per_iter = |f: fn(&Record) -> f64| {
        records
            .iter()
            .map(|r| (r.iteration as f64, f(r)))
            .collect::<Vec<_>>()
    };
    let epoch_mean: Vec<(f64, f64)> = records
        .chunk_by(|a, b| a.epoch == b.epoch)
        .map(|e| {
            let mid = (e[0].iteration + e[e.len() - 1].iteration) as f64 / 2.0;
            (mid, e.iter().map(|r| r.loss).sum::<f64>() / e.len() as f64)
        })
        .collect();
    std::fs::create_dir_all(out.join("plots"))?;
    line_chart(
        &out.join("plots").join("loss.png"),
        "DINO loss",
        "iteration",
        &[
            Series {
                label: "per iteration",
                points: per_iter(|r| r.loss),
                color: BLUE_600,
            },
            Series {
                label: "epoch mean",
                points: epoch_mean,
                color: RED_600,
            },
        ],
    )?;
    let n = records.len();
    let log_k = (out_dim as f64).ln();
    line_chart(
        &out.join("plots").join("collapse.png"),
        "teacher target entropy (nats)",
        "iteration",
        &[
            Series {
                label: "per image",
                points: per_iter(|r| r.teacher_entropy),
                color: BLUE_600,
            },
            Series {
                label: "of the batch mean",
                points: per_iter(|r| r.batch_entropy),
                color: GREEN_700,
            },
            Series {
                label: "log K",
                points: vec![(0.0, log_k), (n.saturating_sub(1) as f64, log_k)],
                color: RED_600,
            },
        ],
    )?;
    chart_grid(
        &out.join("plots").join("schedules.png"),
        "iteration",
        &[
            (
                "learning rate",
                Series {
                    label: "lr",
                    points: per_iter(|r| r.lr),
                    color: BLUE_600,
                },
            ),
            (
                "weight decay",
                Series {
                    label: "wd",
                    points: per_iter(|r| r.wd),
                    color: GREEN_700,
                },
            ),
            (
                "teacher momentum",
                Series {
                    label: "m",
                    points: per_iter(|r| r.momentum),
                    color: ORANGE_700,
                },
            ),
            (
                "teacher temperature",
                Series {
                    label: "τ",
                    points: per_iter(|r| r.teacher_temp),
                    color: PURPLE_600,
                },
            ),
        ],
    )
}
