//! `--shard-by SELECTOR`: split the models a selector picks across the tasks of an execution.
//!
//! Every task runs `dbt ls --select SELECTOR --resource-type model --output selector`, sorts
//! the result and keeps its own share (`sluice_runtime::shard::take_share`), then runs the
//! user's command with `--select <its share>`. The listing is deterministic, so the tasks agree
//! on the split without talking to each other.
//!
//! `--output selector` rather than `--output name`: it prints each model's fully qualified name
//! (`project.dir.model`), which is unique across packages and selects exactly that model; bare
//! names can collide between packages.
//!
//! Tasks run in parallel, so a model whose parent sits in another task's share may run before
//! that parent is built. Shard only selections whose models are independent of each other (or
//! whose parents were built by an earlier job).

use crate::DbtError;
use crate::log_events::DbtEvent;

/// dbt flags that select nodes; with `--shard-by`, Sluice owns the selection.
const SELECTION_FLAGS: [&str; 5] = ["-s", "--select", "-m", "--models", "--selector"];
/// Flags of the user's command that change what `dbt ls` finds, with one value each.
const LIST_FLAGS_ONE_VALUE: [&str; 5] = ["--vars", "--target", "-t", "--profile", "--state"];
/// Flags that take several space-separated values.
const LIST_FLAGS_MANY_VALUES: [&str; 1] = ["--exclude"];

/// Rejects dbt args that select nodes themselves.
pub(crate) fn check_args(selector: &str, args: &[String]) -> Result<(), DbtError> {
    if selector.trim().is_empty() {
        return Err(DbtError::Usage(
            "--shard-by needs a non-empty dbt selector".into(),
        ));
    }
    for arg in args {
        let flag = arg.split('=').next().unwrap_or(arg);
        if SELECTION_FLAGS.contains(&flag) {
            return Err(DbtError::Usage(format!(
                "the dbt args select nodes ({arg}) and --shard-by {selector:?} selects too; \
                 put the selection in --shard-by only"
            )));
        }
    }
    Ok(())
}

/// The `dbt ls` command listing the models to split, carrying over the user's flags that
/// change what exists (`--vars` can enable models, `--target` changes config, ...).
pub(crate) fn list_args(selector: &str, user_args: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "ls",
        "--select",
        selector,
        "--resource-type",
        "model",
        "--output",
        "selector",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut i = 0;
    while i < user_args.len() {
        let arg = &user_args[i];
        let flag = arg.split('=').next().unwrap_or(arg);
        if arg.contains('=')
            && (LIST_FLAGS_ONE_VALUE.contains(&flag) || LIST_FLAGS_MANY_VALUES.contains(&flag))
        {
            args.push(arg.clone());
        } else if LIST_FLAGS_ONE_VALUE.contains(&flag) {
            args.extend(user_args[i..].iter().take(2).cloned());
            i += 1;
        } else if LIST_FLAGS_MANY_VALUES.contains(&flag) {
            args.push(arg.clone());
            while let Some(value) = user_args.get(i + 1).filter(|v| !v.starts_with('-')) {
                args.push(value.clone());
                i += 1;
            }
        }
        i += 1;
    }
    args
}

/// What `dbt ls` printed, from its JSON log lines (`PrintEvent`s); `None` for other lines.
pub(crate) fn listed_node(event: &DbtEvent) -> Option<String> {
    (event.info.name == "PrintEvent")
        .then(|| {
            event
                .data
                .msg
                .clone()
                .unwrap_or_else(|| event.info.msg.clone())
        })
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The user's command restricted to `share`.
pub(crate) fn command_for_share(user_args: &[String], share: &[String]) -> Vec<String> {
    let mut args = user_args.to_vec();
    args.push("--select".into());
    args.extend(share.iter().cloned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn rejects_competing_selection() {
        assert!(check_args("tag:daily", &s(&["build", "--full-refresh"])).is_ok());
        for bad in [
            &["build", "-s", "x"][..],
            &["run", "--select=x"],
            &["run", "--selector", "y"],
        ] {
            let err = check_args("tag:daily", &s(bad)).unwrap_err();
            assert_eq!(
                sluice_runtime::ExitStatus::exit_code(&err),
                sluice_runtime::ExitCode::Usage
            );
            assert!(err.to_string().contains("--shard-by"), "{err}");
        }
        assert!(check_args(" ", &s(&["build"])).is_err());
    }

    #[test]
    fn list_carries_flags_that_change_the_graph() {
        let user = s(&[
            "build",
            "--vars",
            "{slow: true}",
            "--full-refresh",
            "--exclude",
            "a",
            "b",
            "--target=prod",
            "-t",
            "dev",
            "--threads",
            "4",
        ]);
        assert_eq!(
            list_args("tag:daily", &user),
            s(&[
                "ls",
                "--select",
                "tag:daily",
                "--resource-type",
                "model",
                "--output",
                "selector",
                "--vars",
                "{slow: true}",
                "--exclude",
                "a",
                "b",
                "--target=prod",
                "-t",
                "dev",
            ])
        );
    }

    #[test]
    fn reads_print_events_only() {
        let print = DbtEvent::parse(
            r#"{"data": {"msg": "proj.staging.stg_a"}, "info": {"level": "info", "msg": "proj.staging.stg_a", "name": "PrintEvent"}}"#,
        )
        .unwrap();
        assert_eq!(listed_node(&print).as_deref(), Some("proj.staging.stg_a"));
        let other = DbtEvent::parse(
            r#"{"data": {}, "info": {"level": "info", "msg": "Found 2 models", "name": "FoundStats"}}"#,
        )
        .unwrap();
        assert_eq!(listed_node(&other), None);
    }

    #[test]
    fn share_is_appended_as_one_select() {
        assert_eq!(
            command_for_share(&s(&["build", "--full-refresh"]), &s(&["p.a", "p.c"])),
            s(&["build", "--full-refresh", "--select", "p.a", "p.c"])
        );
    }
}
