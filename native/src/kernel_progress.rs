//! A live line while the GPU compiles and autotunes kernels, instead of a silent minute.
//!
//! On a fresh machine the first training step on a GPU spends minutes in CubeCL (Burn's GPU
//! compiler): every kernel is compiled, and every new shape of a matrix product or reduction is
//! timed in several variants (200 s measured on an H200). Nothing of it showed: the progress bar
//! sat at 0 until the step ended. CubeCL reports each kernel it compiles and each shape it has
//! autotuned to its loggers; [`sinks`] turns those reports on towards the `log` crate, and the
//! logger [`install`] sets counts them into a spinner under the command's bar
//! ("compiling GPU kernels: 214 compiled, 31 shapes autotuned, 48 s"), cleared when the burst
//! is over and replaced by one line saying what it cost ("GPU kernels: 214 compiled, 31 shapes
//! autotuned in 73.4 s"). Shapes whose autotune result is in the kernel cache are not timed
//! again, and kernels found there (CubeCL's own SPIR-V, `--device vulkan`) not compiled again:
//! a warm run counts neither. WGSL (`--device wgpu`) is compiled anew by every process (the
//! driver's shader cache is what keeps it). Off a terminal the line is printed every
//! [`LOG_EVERY`] and at the end of the burst, so logs show where a cold start went.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// A burst ends after this long without a kernel compiled or a shape autotuned.
const QUIET: Duration = Duration::from_secs(4);
/// Bursts shorter than this show no line, and unless they autotuned no summary either (a few
/// kernels of a new shape mid-run).
const WORTH_A_LINE: Duration = Duration::from_secs(2);
/// The spinner hides this long after the last report, so that a command's own output after
/// its last kernels does not land on it (it comes back with the next report).
const HIDE_AFTER: Duration = Duration::from_secs(1);
/// Off a terminal, a line this often while a burst lasts.
const LOG_EVERY: Duration = Duration::from_secs(20);

/// One burst of compilation: from the first kernel after a quiet spell to the next quiet spell.
struct Burst {
    compiled: u64,
    autotuned: u64,
    started: Instant,
    last: Instant,
    logged: Instant,
    line: Option<ProgressBar>,
}

impl Burst {
    fn counts(&self) -> String {
        let shapes = match self.autotuned {
            1 => "1 shape autotuned".to_string(),
            n => format!("{n} shapes autotuned"),
        };
        format!("{} compiled, {shapes}", self.compiled)
    }

    /// Clears the line and says what the burst cost, if it took a while or autotuned anything
    /// (work a warm kernel cache would have saved).
    fn end(mut self) {
        if let Some(line) = self.line.take() {
            line.finish_and_clear();
        }
        let took = self.last - self.started;
        if took >= WORTH_A_LINE || self.autotuned > 0 {
            crate::terminal::println(&format!(
                "GPU kernels: {} in {:.1} s",
                self.counts(),
                took.as_secs_f64()
            ));
        }
    }
}

/// The burst under way, if any; a ticker thread runs while it is `Some`.
static BURST: Mutex<Option<Burst>> = Mutex::new(None);

/// What CubeCL reported.
#[derive(Clone, Copy)]
enum Event {
    Compiled,
    Autotuned,
}

fn note(event: Event) {
    let mut burst = BURST.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let b = burst.get_or_insert_with(|| {
        std::thread::Builder::new()
            .name("kernel-progress".into())
            .spawn(tick)
            .ok();
        Burst {
            compiled: 0,
            autotuned: 0,
            started: now,
            last: now,
            logged: now,
            line: None,
        }
    });
    match event {
        Event::Compiled => b.compiled += 1,
        Event::Autotuned => b.autotuned += 1,
    }
    b.last = now;
}

/// Keeps the line of the burst under way up to date and ends it after [`QUIET`].
fn tick() {
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let mut burst = BURST.lock().unwrap_or_else(|e| e.into_inner());
        let Some(b) = burst.as_mut() else { return };
        let now = Instant::now();
        let hidden = crate::terminal::bars().is_hidden();
        if now - b.last >= QUIET {
            if let Some(b) = burst.take() {
                b.end();
            }
            return;
        }
        let elapsed = (now - b.started).as_secs_f64();
        if now - b.started < WORTH_A_LINE {
            continue;
        }
        if hidden {
            if now - b.logged >= LOG_EVERY {
                eprintln!(
                    "compiling GPU kernels: {} so far, {elapsed:.0} s",
                    b.counts()
                );
                b.logged = now;
            }
        } else if now - b.last >= HIDE_AFTER {
            if let Some(line) = b.line.take() {
                line.finish_and_clear();
            }
        } else {
            let counts = b.counts();
            let line = b.line.get_or_insert_with(|| {
                let line = crate::terminal::show(ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} {msg}").expect("template"),
                ));
                line.enable_steady_tick(Duration::from_millis(120));
                line
            });
            line.set_message(format!("compiling GPU kernels: {counts}, {elapsed:.0} s"));
        }
    }
}

/// Ends the burst under way, if any (a command's last kernels): its line cleared, its summary
/// printed. Called when a command ends, before the process exits.
pub fn finish() {
    let burst = BURST.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(b) = burst {
        b.end();
    }
}

/// The `log` crate's logger of the process: counts CubeCL's compilation and autotune reports.
struct CubeclReports;

impl log::Log for CubeclReports {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        matches!(
            metadata.target(),
            "cubecl::compilation" | "cubecl::autotune"
        )
    }

    fn log(&self, record: &log::Record) {
        match record.target() {
            "cubecl::compilation" => note(Event::Compiled),
            // one "Fastest result ..." per shape timed, then (at level full) one line per variant
            "cubecl::autotune" if record.args().to_string().starts_with("Fastest result") => {
                note(Event::Autotuned)
            }
            // (CubeCL's warnings stay unprinted, as before a logger existed: on software
            // adapters its memory-bandwidth probe fails before every autotune, harmlessly;
            // device_panics.rs)
            _ => {}
        }
    }

    fn flush(&self) {}
}

/// Sets the process's `log` logger (once; a process that has one already keeps it, and shows no
/// kernel line).
pub fn install() {
    static REPORTS: CubeclReports = CubeclReports;
    if log::set_logger(&REPORTS).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// `logger` (a CubeCL logger's settings: `cubecl.toml`'s `[compilation.logger]` or
/// `[autotune.logger]`) with its reports also sent to the `log` crate at info (the only logger
/// there is [`install`]'s), at `level` where it was disabled; its own sinks (a file, stdout)
/// stay.
pub fn sinks<L>(logger: &L, level: &str) -> anyhow::Result<L>
where
    L: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut table = toml::Table::try_from(logger)?;
    if table.get("level").and_then(|l| l.as_str()) == Some("disabled") {
        table.insert("level".into(), level.into());
    }
    table.insert("log".into(), "info".into());
    Ok(table.try_into()?)
}

#[cfg(test)]
mod tests {
    use super::sinks;

    /// The fields of CubeCL's `LoggerConfig` that matter here, as its serde names them.
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Logger {
        #[serde(default)]
        file: Option<std::path::PathBuf>,
        #[serde(default)]
        stdout: bool,
        #[serde(default)]
        log: Option<String>,
        level: String,
    }

    #[test]
    fn the_reports_reach_the_log_crate_without_losing_the_users_own_sinks() {
        let off = Logger {
            file: None,
            stdout: false,
            log: None,
            level: "disabled".into(),
        };
        let on = sinks(&off, "basic").unwrap();
        assert_eq!(
            (on.level.as_str(), on.log.as_deref()),
            ("basic", Some("info"))
        );
        // a user's file at full detail stays, at full detail; a debug level is raised to info,
        // the level the process's logger takes
        let mine = Logger {
            file: Some("/tmp/kernels.log".into()),
            stdout: true,
            log: Some("debug".into()),
            level: "full".into(),
        };
        let kept = sinks(&mine, "basic").unwrap();
        assert_eq!(
            kept,
            Logger {
                log: Some("info".into()),
                ..mine
            }
        );
    }
}
