//! What the training commands (`dino train`, `dino paws`) share about recipes: the defaults
//! shown in `--help` come from the config type's own `Default` (never typed into help texts),
//! and a resumed run keeps its recipe (a flag that changes it is refused, naming it; the
//! harmless ones apply).

use anyhow::bail;

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
