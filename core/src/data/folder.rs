//! A folder of images, searched recursively; first-level subfolders name the classes
//! (ImageFolder layout) when every image lies in one.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// File extensions taken as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff", "jfif",
];

/// Image files under a root, sorted by path (so that runs are reproducible).
#[derive(Clone, Debug)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub files: Vec<PathBuf>,
    /// Class index of each file, when the folder has the ImageFolder layout.
    pub labels: Option<Vec<usize>>,
    /// Class names (sorted subfolder names).
    pub classes: Vec<String>,
}

impl ImageFolder {
    pub fn scan(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(Error::Data(format!("{}: not a folder", root.display())));
        }
        let mut files = Vec::new();
        for entry in walkdir::WalkDir::new(root).follow_links(true) {
            let entry = entry.map_err(|e| Error::Data(format!("{}: {e}", root.display())))?;
            if entry.file_type().is_file() && is_image(entry.path()) {
                files.push(entry.into_path());
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(Error::Data(format!(
                "{}: no images found (looked for {} files, recursively)",
                root.display(),
                IMAGE_EXTENSIONS.join(", ")
            )));
        }
        let class_of = |f: &PathBuf| -> Option<String> {
            let rel = f.strip_prefix(root).ok()?;
            let mut comps = rel.components();
            let first = comps.next()?;
            comps.next()?;
            Some(first.as_os_str().to_string_lossy().into_owned())
        };
        let names: Option<Vec<String>> = files.iter().map(class_of).collect();
        let (labels, classes) = match names {
            Some(names) => {
                let mut classes: Vec<String> = names.clone();
                classes.sort();
                classes.dedup();
                let labels = names
                    .iter()
                    .map(|n| classes.binary_search(n).expect("present"))
                    .collect();
                (Some(labels), classes)
            }
            None => (None, Vec::new()),
        };
        Ok(Self {
            root: root.to_path_buf(),
            files,
            labels,
            classes,
        })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Whether a path has an image extension.
pub fn is_image(p: &Path) -> bool {
    p.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}
