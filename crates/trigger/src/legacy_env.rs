//! Warnings for the deprecated shared env names (`SLUICE_FORMAT`, `SLUICE_SCHEMA`, ...) in a
//! jobs.toml. `sluice extract` and `sluice load` read them differently, so one set in
//! `[defaults].env` leaks into the other command (issue 15); the per-command names
//! (`SLUICE_EXTRACT_FORMAT`, `SLUICE_LOAD_FORMAT`, ...) do not. The table is
//! `sluice_runtime::env_twins`, the one `sluice` itself falls back and warns with.

use sluice_runtime::env_twins::{self, EnvTwin};

/// The warning for env `name` of job `job` running `args`, if `name` is a deprecated shared
/// name. Names the replacement for the job's own command when `args` start with one.
pub(crate) fn warning(
    job: &str,
    command: &[String],
    args: &[String],
    name: &str,
) -> Option<String> {
    let twins: Vec<&EnvTwin> = env_twins::replacing(name).collect();
    if twins.is_empty() {
        return None;
    }
    // The image's entrypoint is `sluice`; an override to another program has no subcommands.
    let runs_sluice = match command {
        [] => true,
        [program] => program.rsplit('/').next() == Some("sluice"),
        _ => false,
    };
    let subcommand = if runs_sluice {
        args.first().map(String::as_str)
    } else {
        None
    };
    let instead = match twins.iter().find(|t| Some(t.command) == subcommand) {
        Some(twin) => format!("use {} (what `sluice {}` reads)", twin.name, twin.command),
        None => {
            let names: Vec<String> = twins
                .iter()
                .map(|t| format!("{} for {}", t.name, t.command))
                .collect();
            format!("use {}", names.join(", "))
        }
    };
    Some(format!(
        "job {job:?}: env {name:?} is deprecated: extract and load read it differently, so a \
         value set for both (in [defaults]) leaks into the other; {instead}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_the_replacement_for_the_jobs_command() {
        let w = warning(
            "load",
            &[],
            &args(&["load", "--table", "t"]),
            "SLUICE_SCHEMA",
        )
        .unwrap();
        assert!(w.contains("use SLUICE_LOAD_SCHEMA"), "{w}");
        assert!(!w.contains("SLUICE_EXTRACT_SCHEMA"), "{w}");
        let w = warning(
            "e",
            &args(&["/usr/bin/sluice"]),
            &args(&["extract"]),
            "SLUICE_FORMAT",
        );
        assert!(w.unwrap().contains("use SLUICE_EXTRACT_FORMAT"));
        let w = warning("x", &args(&["/bin/sh"]), &args(&["load"]), "SLUICE_FORMAT").unwrap();
        assert!(
            w.contains("SLUICE_EXTRACT_FORMAT for extract")
                && w.contains("SLUICE_LOAD_FORMAT for load"),
            "{w}"
        );
        assert_eq!(warning("load", &[], &args(&["load"]), "SLUICE_DEST"), None);
        assert_eq!(
            warning("load", &[], &args(&["load"]), "SLUICE_LOAD_SCHEMA"),
            None
        );
    }
}
