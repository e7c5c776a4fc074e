//! The labelled subset of a PAWS run, from wherever a user keeps it: a folder of class
//! sub-folders, a CSV of `path,class` lines, or a fraction drawn reproducibly per class from a
//! labelled folder (as the official 1% / 10% ImageNet and 4,000-label CIFAR-10 splits), written
//! back as CSV so that a run can name exactly the images it learned from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::data::LabelledSet;
use crate::data::{ImageFolder, ImageSource};
use crate::rng::mix;
use crate::{Error, Result};

/// Labelled image files: each with the index of its class in `classes` (sorted names).
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledFiles {
    pub files: Vec<PathBuf>,
    pub labels: Vec<usize>,
    pub classes: Vec<String>,
}

impl LabelledFiles {
    /// Every image of a folder in the ImageFolder layout (one sub-folder per class).
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let folder = ImageFolder::scan(dir)?;
        let labels = folder.labels.clone().ok_or_else(|| not_classes(dir))?;
        Ok(Self {
            files: folder.files,
            labels,
            classes: folder.classes,
        })
    }

    /// A folder of class sub-folders ([`Self::from_folder`]) or a CSV ([`Self::from_csv`]).
    pub fn from_path(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Self::from_folder(path)
        } else {
            Self::from_csv(path)
        }
    }

    /// A CSV of `path,class` lines (a header line `path,class` is allowed; relative paths are
    /// taken from the CSV's folder).
    pub fn from_csv(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut rows = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || (n == 0 && line.eq_ignore_ascii_case("path,class")) {
                continue;
            }
            let (file, class) = line.rsplit_once(',').ok_or_else(|| {
                Error::Data(format!(
                    "{} line {}: expected `path,class`, got '{line}'",
                    path.display(),
                    n + 1
                ))
            })?;
            let file = unquote(file);
            let file = if Path::new(file).is_absolute() {
                PathBuf::from(file)
            } else {
                base.join(file)
            };
            rows.push((file, unquote(class).to_string()));
        }
        if rows.is_empty() {
            return Err(Error::Data(format!(
                "{}: no labelled images",
                path.display()
            )));
        }
        let mut classes: Vec<String> = rows.iter().map(|(_, c)| c.clone()).collect();
        classes.sort();
        classes.dedup();
        let labels = rows
            .iter()
            .map(|(_, c)| classes.binary_search(c).expect("present"))
            .collect();
        Ok(Self {
            files: rows.into_iter().map(|(f, _)| f).collect(),
            labels,
            classes,
        })
    }

    /// `fraction` of every class of a labelled folder (rounded, at least one image per class),
    /// drawn with `seed`: the same seed gives the same subset.
    pub fn fraction_of(dir: &Path, fraction: f64, seed: u64) -> Result<Self> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(Error::Config(format!(
                "a label fraction is in (0, 1], got {fraction}"
            )));
        }
        let all = Self::from_folder(dir)?;
        let mut picked = Vec::new();
        for c in 0..all.classes.len() {
            let mut members: Vec<usize> = (0..all.files.len())
                .filter(|&i| all.labels[i] == c)
                .collect();
            members.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(seed, c as u64, 0x1AB)));
            let take = ((members.len() as f64 * fraction).round() as usize).clamp(1, members.len());
            picked.extend_from_slice(&members[..take]);
        }
        picked.sort();
        Ok(Self {
            files: picked.iter().map(|&i| all.files[i].clone()).collect(),
            labels: picked.iter().map(|&i| all.labels[i]).collect(),
            classes: all.classes,
        })
    }

    /// `path,class` lines with a header (what `from_csv` reads back).
    pub fn to_csv(&self) -> String {
        let mut out = String::from("path,class\n");
        for (f, &l) in self.files.iter().zip(&self.labels) {
            out.push_str(&format!("{},{}\n", f.display(), self.classes[l]));
        }
        out
    }

    /// Images per class.
    pub fn counts(&self) -> Vec<usize> {
        let mut n = vec![0; self.classes.len()];
        for &l in &self.labels {
            n[l] += 1;
        }
        n
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The set as the PAWS batches read it.
    pub fn into_set(self) -> LabelledSet {
        LabelledSet {
            labels: self.labels.clone(),
            classes: self.classes.clone(),
            source: Arc::new(self),
        }
    }
}

impl ImageSource for LabelledFiles {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn load(&self, i: usize) -> std::result::Result<image::RgbImage, String> {
        crate::imaging::load_image(&self.files[i]).map_err(|e| e.to_string())
    }
    fn name(&self, i: usize) -> String {
        self.files[i].display().to_string()
    }
}

fn not_classes(dir: &Path) -> Error {
    Error::Data(format!(
        "{}: labelled images need the ImageFolder layout (every image in a sub-folder named \
         after its class)",
        dir.display()
    ))
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let img = image::RgbImage::new(4, 4);
        for (class, n) in [("cat", 10), ("dog", 3)] {
            std::fs::create_dir_all(dir.path().join(class)).unwrap();
            for i in 0..n {
                img.save(dir.path().join(class).join(format!("{i}.png")))
                    .unwrap();
            }
        }
        dir
    }

    #[test]
    fn fractions_are_per_class_reproducible_and_round_trip_through_csv() {
        let dir = folder();
        let a = LabelledFiles::fraction_of(dir.path(), 0.2, 5).unwrap();
        assert_eq!(a.counts(), vec![2, 1], "20% of 10 and of 3 (at least one)");
        assert_eq!(a, LabelledFiles::fraction_of(dir.path(), 0.2, 5).unwrap());
        let csv = dir.path().join("labels.csv");
        std::fs::write(&csv, a.to_csv()).unwrap();
        assert_eq!(LabelledFiles::from_csv(&csv).unwrap(), a);
        assert_eq!(
            LabelledFiles::from_folder(dir.path()).unwrap().counts(),
            vec![10, 3]
        );
        assert!(LabelledFiles::fraction_of(dir.path(), 0.0, 5).is_err());
        std::fs::write(&csv, "no comma here\n").unwrap();
        let e = LabelledFiles::from_csv(&csv).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("path,class"), "{e}");
        // a flat folder has no classes
        let flat = tempfile::tempdir().unwrap();
        image::RgbImage::new(4, 4)
            .save(flat.path().join("x.png"))
            .unwrap();
        let e = LabelledFiles::from_folder(flat.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("ImageFolder layout"), "{e}");
    }
}
