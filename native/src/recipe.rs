//! What the training commands (`dino train`, `dino paws`) share about recipes: the defaults
//! shown in `--help` come from the config type's own `Default` (never typed into help texts),
//! and a resumed run keeps its recipe (a flag that changes it is refused, naming it; the
//! harmless ones apply).

use std::path::PathBuf;

use anyhow::{Context, bail};
use dino_core::train::run::{RunDir, RunSummary};

use crate::backend::Backend;

/// The flags every training command has beside its recipe.
#[derive(clap::Args, Debug)]
pub struct RunFlags {
    /// A TOML file with any of the config fields over the official defaults (flags override
    /// it; `--print-config` writes one).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Resume from this checkpoint (default: `OUTPUT_DIR/checkpoint.safetensors` if present).
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,
    /// Start from scratch even if the output folder holds a checkpoint (it is overwritten).
    #[arg(long)]
    pub no_resume: bool,
    /// Print the effective config as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// When the output folder's checkpoint is unreadable (a disk fault, a file damaged after
    /// the run), resume from the newest numbered checkpoint that loads instead of stopping.
    #[arg(long)]
    pub resume_intact: bool,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub device: Backend,
}

impl RunFlags {
    /// The fields the user set: the `--config` file's, then `flags` (the recipe flags given).
    pub fn overrides(&self, flags: toml::Table) -> anyhow::Result<toml::Table> {
        let mut table = match &self.config {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?;
                dino_core::train::parse_table(&text)
                    .with_context(|| format!("reading {}", f.display()))?
            }
            None => toml::Table::new(),
        };
        table.extend(flags);
        Ok(table)
    }

    /// The checkpoint to resume: `--resume`, else the output folder's, unless `--no-resume`.
    pub fn resume_from(&self, dir: &RunDir) -> Option<PathBuf> {
        match (&self.resume, self.no_resume) {
            (Some(f), _) => Some(f.clone()),
            (None, false) if dir.checkpoint().exists() => Some(dir.checkpoint()),
            _ => None,
        }
    }

    /// The run to resume, loaded by `load`, with the file it came from. When the output
    /// folder's own checkpoint does not load, the newest numbered copy that does is named,
    /// and taken with `--resume-intact`; an explicit `--resume FILE` is never replaced.
    pub fn resume<T>(
        &self,
        dir: &RunDir,
        load: impl Fn(&std::path::Path) -> dino_core::Result<T>,
    ) -> anyhow::Result<Option<(T, PathBuf)>> {
        let Some(file) = self.resume_from(dir) else {
            return Ok(None);
        };
        let broken = match load(&file) {
            Ok(t) => return Ok(Some((t, file))),
            Err(e) if self.resume.is_some() => return Err(e.into()),
            Err(e) => e,
        };
        let intact = dir
            .numbered_checkpoints()
            .into_iter()
            .find_map(|(_, f)| load(&f).ok().map(|t| (t, f)));
        match intact {
            Some((t, f)) if self.resume_intact => {
                eprintln!(
                    "warning: {broken}\nresuming from the newest intact copy, {} (--resume-intact); \
                     it replaces the damaged checkpoint",
                    f.display()
                );
                let bytes =
                    std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
                dino_core::atomic_write(&dir.checkpoint(), &bytes)?;
                Ok(Some((t, f)))
            }
            Some((_, f)) => bail!(
                "{broken}\nthe newest intact copy is {}: rerun with --resume-intact to continue \
                 from it, or --no-resume to start over",
                f.display()
            ),
            None => bail!(
                "{broken}\nno numbered checkpoint of this run loads either: --no-resume starts \
                 over"
            ),
        }
    }
}

/// Removes what an interrupted run left half-written in the folders the CLI writes itself
/// ([`RunDir::subfolders`]: plots, attention sheets; the loop cleans the run folder,
/// [`RunSummary::temp_files_removed`]), and says how many files went in all once the run is
/// over.
pub fn remove_temp_files(dir: &RunDir) -> usize {
    dir.subfolders()
        .iter()
        .map(|d| dino_core::remove_temp_files(d))
        .sum()
}

/// The line about [`remove_temp_files`] and the loop's own count, when anything was removed.
pub fn report_temp_files(cli: usize, summary: &RunSummary) {
    let removed = cli + summary.temp_files_removed;
    if removed > 0 {
        eprintln!("removed {removed} half-written temporary file(s) of an interrupted run");
    }
}

/// The recipe fields every training method has, as flags.
#[derive(clap::Args, serde::Serialize, Debug, Default)]
pub struct CommonFlags {
    /// Seed of every random draw of the run (initialisation, data order, augmentation).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    /// Keep `checkpointNNNN.safetensors` every this many epochs (0: never).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    saveckp_freq: Option<usize>,
    /// Also write the checkpoint every this many iterations (0: per epoch only).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint_every: Option<usize>,
}

/// A resumed run needs the data it was trained on: the same iterations per epoch.
pub fn same_iterations(checkpoint: usize, data: usize) -> anyhow::Result<()> {
    if checkpoint != data {
        bail!(
            "the checkpoint was trained with {checkpoint} iterations per epoch, this data gives \
             {data}: resume with the same data, or start a new run (--no-resume)"
        );
    }
    Ok(())
}

/// The recipe flags a user gave (a struct of `Option` fields) as a table of config fields:
/// flags left out are absent. A number past TOML's integers (a 64-bit signed range) is an
/// error, not a wrapped value.
pub fn flags_table(flags: &impl serde::Serialize) -> anyhow::Result<toml::Table> {
    toml::Table::try_from(flags).map_err(|e| {
        anyhow::anyhow!(
            "a flag's value cannot be recorded in the run's config.toml ({e}): numbers go up \
             to {}",
            i64::MAX
        )
    })
}

/// `cmd` with every flag named after a field of `defaults` showing that default.
pub fn defaults_in_help(cmd: clap::Command, defaults: toml::Table, label: &str) -> clap::Command {
    defaults.into_iter().fold(cmd, |cmd, (field, value)| {
        let shown = match value {
            toml::Value::String(s) => s,
            v => v.to_string(),
        };
        cmd.mut_arg(field, |a| {
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            a.help(format!("{help} [{label}: {shown}]"))
        })
    })
}

/// The fields a resumed run takes from `overrides` (`changeable` ones that differ), or an
/// error naming every other field that differs (`diffs`: field, the run's value, the new one).
pub fn resume_overrides(
    diffs: Vec<(String, String, String)>,
    overrides: &toml::Table,
    changeable: &[&str],
) -> anyhow::Result<toml::Table> {
    let (apply, refuse): (Vec<_>, Vec<_>) = diffs
        .into_iter()
        .partition(|(k, _, _)| changeable.contains(&k.as_str()));
    if !refuse.is_empty() {
        let list: Vec<String> = refuse
            .iter()
            .map(|(k, was, now)| format!("--{} {now} (the run has {was})", k.replace('_', "-")))
            .collect();
        bail!(
            "the checkpoint's run has a different recipe: {}. A resumed run continues its own \
             recipe; start a new run with --no-resume or another --output-dir, or leave the \
             flag(s) out",
            list.join(", ")
        );
    }
    let mut table = toml::Table::new();
    for (k, was, now) in &apply {
        eprintln!("note: {k} = {now} (was {was}) applies to the resumed run");
        table.insert(k.clone(), overrides[k].clone());
    }
    Ok(table)
}

/// Writes `line` and its newline to stderr in one `write` (whole, under the pipe's 4 KiB
/// atomic size): the ranks of an MPI job share one stderr, and `eprintln!` writes each piece
/// of its format on its own, so another rank's output could land inside the line.
pub fn say_whole(line: &str) {
    use std::io::Write;
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
