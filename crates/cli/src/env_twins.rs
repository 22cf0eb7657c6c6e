//! The old shared env names (`SLUICE_FORMAT`, ...) as a fallback for the per-command ones
//! (`SLUICE_EXTRACT_FORMAT`, `SLUICE_LOAD_FORMAT`, ...; table in `sluice_runtime::env_twins`).
//!
//! clap reads one env name per argument, so the fallback points an argument at its old name
//! when (and only when) its own name is unset and the old one is set. `--help` is rendered
//! from the command without that swap, so it always shows the new names. Each old name in use
//! yields one notice, logged once logging is set up.

use std::ffi::OsString;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use sluice_runtime::env_twins::ENV_TWINS;

/// A deprecation warning for one old env name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub legacy: &'static str,
    pub name: &'static str,
    pub message: String,
}

/// `command` with every per-command env name that is unset but whose old name is set replaced
/// by the old name. Reads the process environment: clap's `Arg::env` takes the value from
/// there when it is called, so a lookup passed in could not supply it.
pub fn with_legacy_names(mut command: Command) -> Command {
    let set = |name: &str| std::env::var_os(name).is_some();
    for twin in ENV_TWINS {
        if !set(twin.name) && set(twin.legacy) {
            command = command.mut_subcommand(twin.command, |sub| {
                sub.mut_arg(twin.arg, |arg| arg.env(twin.legacy))
            });
        }
    }
    command
}

/// Parses the process's arguments with the fallback; help (and any parse error) is produced
/// by `plain`, the command without it, so both show the new names.
pub fn get_matches(plain: fn() -> Command) -> ArgMatches {
    let args: Vec<OsString> = std::env::args_os().collect();
    match with_legacy_names(plain()).try_get_matches_from(&args) {
        Ok(matches) => matches,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            plain().get_matches_from(args)
        }
        Err(err) => err.exit(),
    }
}

/// One notice per old name set in the environment that the running subcommand has a twin
/// for, saying what it did with it.
pub fn notices(matches: &ArgMatches, var: &dyn Fn(&str) -> Option<OsString>) -> Vec<Notice> {
    let Some((command, sub)) = matches.subcommand() else {
        return Vec::new();
    };
    ENV_TWINS
        .iter()
        .filter(|twin| twin.command == command && var(twin.legacy).is_some())
        .map(|twin| {
            let (legacy, name, flag) = (twin.legacy, twin.name, twin.flag);
            let why = format!(
                "{legacy} is deprecated: extract and load read it differently, so one value set \
                 for both (a jobs.toml [defaults].env) leaks into the other"
            );
            let message = if var(name).is_some() {
                format!("{why}; {name} is set too and wins, {legacy} is ignored")
            } else if sub.value_source(twin.arg) == Some(ValueSource::CommandLine) {
                format!("{why}; ignored here because {flag} is given. Use {name}")
            } else {
                format!(
                    "{why}; `sluice {command}` read it as {name} this time. Rename it to {name}: \
                     {legacy} stops working in a later release"
                )
            };
            Notice {
                legacy,
                name,
                message,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    /// The table and the flags' `env = "..."` attributes cannot drift apart: each twin's
    /// argument exists and declares the twin's name.
    #[test]
    fn every_twin_names_a_flag_that_declares_it() {
        let command = crate::command();
        for twin in ENV_TWINS {
            let sub = command
                .find_subcommand(twin.command)
                .unwrap_or_else(|| panic!("no subcommand {}", twin.command));
            let arg = sub
                .get_arguments()
                .find(|a| a.get_id() == twin.arg)
                .unwrap_or_else(|| panic!("{} has no argument {}", twin.command, twin.arg));
            assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new(twin.name)));
            assert_eq!(arg.get_long(), twin.flag.strip_prefix("--"));
        }
    }

    /// The bug class itself: no env name is read by two subcommands (global options are
    /// declared once, on `sluice`). A new flag that reuses another command's name fails here.
    #[test]
    fn no_env_name_is_read_by_two_subcommands() {
        let command = crate::command();
        let mut readers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for sub in command.get_subcommands() {
            for arg in sub.get_arguments() {
                if let Some(name) = arg.get_env() {
                    readers
                        .entry(name.to_string_lossy().into_owned())
                        .or_default()
                        .push(sub.get_name().to_string());
                }
            }
        }
        let shared: Vec<_> = readers.iter().filter(|(_, r)| r.len() > 1).collect();
        assert!(
            shared.is_empty(),
            "env names read by several commands: {shared:?}"
        );
        // The old names are read by nobody directly any more.
        for twin in ENV_TWINS {
            assert!(!readers.contains_key(twin.legacy), "{}", twin.legacy);
        }
    }

    /// Notices from a parse without the fallback (which reads the process env; the values it
    /// yields are checked through the real binary in `tests/env_twins.rs`).
    fn notices_for(args: &[&str], vars: &[(&str, &str)]) -> Vec<Notice> {
        let matches = crate::command().try_get_matches_from(args).unwrap();
        notices(&matches, &env(vars))
    }

    const LOAD: &[&str] = &["sluice", "load", "--source", "gs://b/*", "--table", "p.d.t"];

    #[test]
    fn notices_say_what_became_of_the_old_name() {
        let n = notices_for(LOAD, &[("SLUICE_FORMAT", "csv")]);
        assert_eq!(n.len(), 1);
        assert_eq!(
            (n[0].legacy, n[0].name),
            ("SLUICE_FORMAT", "SLUICE_LOAD_FORMAT")
        );
        assert!(
            n[0].message.contains("read it as SLUICE_LOAD_FORMAT"),
            "{n:?}"
        );

        let n = notices_for(
            LOAD,
            &[("SLUICE_FORMAT", "csv"), ("SLUICE_LOAD_FORMAT", "json")],
        );
        assert!(
            n[0].message
                .contains("SLUICE_LOAD_FORMAT is set too and wins"),
            "{n:?}"
        );

        let mut args = LOAD.to_vec();
        args.extend(["--format", "json"]);
        let n = notices_for(&args, &[("SLUICE_FORMAT", "csv")]);
        assert!(n[0].message.contains("because --format is given"), "{n:?}");

        // The other command's new name is nothing deprecated.
        assert!(notices_for(LOAD, &[("SLUICE_EXTRACT_FORMAT", "csv")]).is_empty());
    }

    #[test]
    fn one_notice_per_old_name_and_only_for_the_running_command() {
        let vars = [
            ("SLUICE_FORMAT", "csv"),
            ("SLUICE_CONCURRENCY", "3"),
            ("SLUICE_DEST", "/tmp/x"),
        ];
        let n = notices_for(LOAD, &vars);
        let names: Vec<_> = n.iter().map(|n| n.legacy).collect();
        assert_eq!(names, ["SLUICE_FORMAT", "SLUICE_CONCURRENCY"]);
        assert!(notices_for(&["sluice", "dbt"], &vars).is_empty());
    }
}
