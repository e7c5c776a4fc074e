//! The terminal's progress lines, shared. Every progress bar and spinner of a process is drawn
//! through one indicatif `MultiProgress`, so that a line another thread keeps up to date (the
//! GPU kernel line of [`crate::kernel_progress`], driven by CubeCL's compiler on its own
//! threads) sits under a command's bar instead of both overwriting the same line. Off a
//! terminal (a pipe, a log file, CI) the bars are hidden, as indicatif hides a lone bar, and
//! [`println`] writes plain lines to stderr.

use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar};

/// The process's bars.
pub fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

/// `bar`, drawn with the process's other bars (every bar of `dino` goes through here).
pub fn show(bar: ProgressBar) -> ProgressBar {
    bars().add(bar)
}

/// A line above the bars on a terminal, else on stderr.
pub fn println(line: &str) {
    if bars().is_hidden() || bars().println(line).is_err() {
        eprintln!("{line}");
    }
}
