//! The closing evidence of a run that needs no labels: how often a random view of one of the
//! images finds another view of the same image as its nearest neighbour under the teacher
//! (`dino_core::eval::view_retrieval`), before training and after. Kept in `summary.json`, so a
//! resumed run still compares with its own start.

use std::path::Path;

use dino_core::cpu::CpuVit;
use dino_core::data::ImageSource;
use dino_core::eval::{make_views, view_retrieval};
use dino_core::train::Trainer;
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Images and views per image the check uses (at most).
const IMAGES: usize = 32;
const VIEWS: usize = 4;

pub struct LearningCheck {
    views: Vec<RgbImage>,
    pub images: usize,
}

/// What `summary.json` holds.
#[derive(Serialize, Deserialize, Default, Debug)]
pub struct Summary {
    /// Views that found a view of their own image as nearest neighbour, at the start / end.
    pub view_retrieval_start: Option<f64>,
    pub view_retrieval_end: Option<f64>,
    pub images: usize,
    pub views_per_image: usize,
}

impl LearningCheck {
    /// Views of up to 32 evenly spaced readable images of `source` at `size` px; `None` with
    /// fewer than two readable images.
    pub fn new(source: &dyn ImageSource, size: u32, seed: u64) -> Option<Self> {
        let n = source.len().min(IMAGES);
        let images: Vec<RgbImage> = (0..n)
            .filter_map(|k| source.load(k * source.len() / n).ok())
            .collect();
        if images.len() < 2 {
            return None;
        }
        let views = make_views(&images, VIEWS, size, (0.25, 1.0), seed).ok()?;
        Some(Self {
            views,
            images: images.len(),
        })
    }

    /// The teacher's score (0..1).
    pub fn score(&self, trainer: &Trainer) -> anyhow::Result<f64> {
        let engine = CpuVit::from_model(&trainer.teacher().backbone)?;
        Ok(view_retrieval(&engine, &self.views, VIEWS)?)
    }

    /// What a random guess scores: 3 of the other 4N - 1 views are right.
    pub fn chance(&self) -> f64 {
        (VIEWS - 1) as f64 / (VIEWS * self.images - 1) as f64
    }
}

impl Summary {
    pub fn read(path: &Path) -> Self {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        dino_core::atomic_write(path, text.as_bytes())?;
        Ok(())
    }
}

/// The closing lines: the check's numbers and the files that show the run.
pub fn closing_note(summary: &Summary, chance: f64, out: &Path, attention: bool) -> String {
    let pct = |v: Option<f64>| v.map_or("?".into(), |v| format!("{:.0}%", 100.0 * v));
    let mut note = format!(
        "learning check: a random view of one of {} images finds another view of the same image \
         as its nearest neighbour {} of the time before training, {} after (chance {:.0}%; \
         summary.json)\n",
        summary.images,
        pct(summary.view_retrieval_start),
        pct(summary.view_retrieval_end),
        100.0 * chance
    );
    note.push_str(&format!(
        "look at: {0}/plots/loss.png (the loss), {0}/plots/collapse.png (target entropies: \
         informative targets keep them apart){1}",
        out.display(),
        if attention {
            format!(
                ", {}/attention/ (the teacher's attention after each epoch)",
                out.display()
            )
        } else {
            String::new()
        }
    ));
    note
}
