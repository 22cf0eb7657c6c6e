//! One `sluice dbt` run: prepare (project, profile, env, deps), pick this task's work, run dbt
//! under supervision, summarise, upload artifacts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sluice_runtime::{CancellationToken, ExitCode, TaskContext, shard::take_share};
use sluice_storage::{ObjectStore, StoreConfig};

use crate::DbtError;
use crate::artifacts;
use crate::config::{DbtConfig, DepsMode, ProfileSource};
use crate::env::{ChildEnv, Paths};
use crate::log_events::{self, DbtEvent};
use crate::profiles;
use crate::project::ProjectInfo;
use crate::shard;
use crate::summary::RunSummary;
use crate::supervise::{self, Finished, Invocation, Termination};
use crate::workdir::{self, RunDir};
use sluice_runtime::redact::Redactor;

/// What a run came to.
#[derive(Debug, Clone)]
pub struct DbtOutcome {
    /// The dbt step that decided the result (`deps`, `ls` or the user's command) and how it
    /// ended; `None` when this task had nothing to do or a stop came before dbt started.
    pub finished: Option<(String, Finished)>,
    /// A stop signal arrived; the binary reports the signal's exit code.
    pub stopped: bool,
    pub summary: Option<RunSummary>,
    /// URLs of the uploaded artifacts.
    pub uploaded: Vec<String>,
    /// One message per artifact that could not be uploaded.
    pub upload_errors: Vec<String>,
}

impl DbtOutcome {
    fn nothing_to_do() -> Self {
        DbtOutcome {
            finished: None,
            stopped: false,
            summary: None,
            uploaded: Vec::new(),
            upload_errors: Vec::new(),
        }
    }

    /// The process exit code: dbt's own (0 ok, 1 run errors, 2 dbt failure), except that a
    /// successful run whose artifacts did not upload failed (the outputs are incomplete). A
    /// stop is reported as a failure here; the binary, which knows the signal, reports 130/143.
    pub fn exit_code(&self) -> ExitCode {
        if self.stopped {
            return ExitCode::TaskFailed;
        }
        match self.finished.as_ref().map(|(_, f)| f.termination) {
            None => ExitCode::Ok,
            Some(Termination::Exited(0)) if self.upload_errors.is_empty() => ExitCode::Ok,
            Some(Termination::Exited(2)) => ExitCode::Usage,
            Some(_) => ExitCode::TaskFailed,
        }
    }
}

/// Runs dbt as `config` says, as task `task`; `cancel` is the process's stop signal.
pub async fn run(
    config: &DbtConfig,
    task: &TaskContext,
    cancel: &CancellationToken,
) -> Result<DbtOutcome, DbtError> {
    let started = chrono::Utc::now();
    let project_dir =
        std::fs::canonicalize(&config.project_dir).map_err(|err| DbtError::Project {
            path: config.project_dir.clone(),
            reason: format!("not a usable project directory: {err}"),
        })?;
    let project = ProjectInfo::read(&project_dir)?;
    let user_args = config.effective_args();
    if let Some(selector) = &config.shard_by {
        shard::check_args(selector, &user_args)?;
    }
    let profile_text = match &config.profiles {
        ProfileSource::Generate(profile) => {
            let name = project.profile_name(profile.profile_name.as_deref())?;
            Some(profiles::render(&name, profile))
        }
        ProfileSource::Dir(dir) => {
            let file = dir.join(profiles::PROFILES_FILE);
            if !file.is_file() {
                return Err(DbtError::Project {
                    path: file,
                    reason: "not found (from --profiles-dir)".into(),
                });
            }
            None
        }
    };
    // Open the destination before running anything: a bad URL should fail in a second, not
    // after a long dbt build.
    let store = match &config.artifacts {
        Some(artifacts) => Some(open_store(&artifacts.url, &artifacts.store).await?),
        None => None,
    };

    // Without --shard-by the command is one unit of work: task 0 runs it, the others would only
    // repeat it (and race it on the same tables).
    if config.shard_by.is_none() && task.index != 0 {
        tracing::info!(
            task_index = task.index,
            task_count = task.count,
            "nothing to do: without --shard-by, task 0 runs the whole dbt command"
        );
        return Ok(DbtOutcome::nothing_to_do());
    }

    let run_dir = RunDir::create(&config.scratch_dir)?;
    let (profiles_dir, generated) = match (&config.profiles, &profile_text) {
        (ProfileSource::Dir(dir), _) => (dir.clone(), false),
        (ProfileSource::Generate(_), Some(text)) => {
            profiles::write_private(&run_dir.profiles_dir(), text)?;
            (run_dir.profiles_dir(), true)
        }
        (ProfileSource::Generate(_), None) => unreachable!("a generated profile was rendered"),
    };

    let needs_deps = match config.deps {
        DepsMode::Never => false,
        DepsMode::Always => project.packages_file.is_some(),
        DepsMode::Auto => project.packages_file.is_some() && !project.packages_installed(),
    };
    let project_dir = if needs_deps && !workdir::is_writable(&project_dir) {
        let copy = run_dir.project_copy_dir();
        tracing::info!(
            project_dir = %project_dir.display(),
            copy = %copy.display(),
            "project directory is read-only and packages must be installed: running from a copy"
        );
        let skip = [
            PathBuf::from("target"),
            PathBuf::from("logs"),
            project.packages_install_path.clone(),
        ];
        workdir::copy_project(&project_dir, &copy, &skip)?;
        copy
    } else {
        project_dir
    };

    let mut env = ChildEnv::new(
        Paths {
            project_dir: &project_dir,
            profiles_dir: &profiles_dir,
            target_dir: &run_dir.target_dir(),
            log_dir: &run_dir.log_dir(),
        },
        generated,
    );
    if let ProfileSource::Generate(profile) = &config.profiles {
        for (name, value) in profiles::secret_env(profile) {
            env.add_secret(name, crate::config::Secret::new(value));
        }
    }
    let redactor = Redactor::new(env.secret_values());
    let invocation = |args: Vec<String>| Invocation {
        program: config.dbt_bin.clone(),
        args,
        env: &env,
        stop_timeout: config.stop_timeout,
        max_line_bytes: config.max_line_bytes,
    };

    let mut outcome = DbtOutcome::nothing_to_do();
    'steps: {
        if needs_deps {
            let file = project.packages_file.as_deref().unwrap_or(Path::new("?"));
            tracing::info!(packages_file = %file.display(), "installing dbt packages (dbt deps)");
            let finished = step(&invocation(vec!["deps".into()]), cancel, &redactor).await?;
            if !record(&mut outcome, "deps", finished) {
                break 'steps;
            }
        }

        let mut args = user_args.clone();
        if let Some(selector) = &config.shard_by {
            let mut nodes = Vec::new();
            let list = invocation(shard::list_args(selector, &user_args));
            if cancel.is_cancelled() {
                outcome.stopped = true;
                break 'steps;
            }
            log_start(&list, &redactor);
            let finished = supervise::run(&list, cancel, |line| {
                let text = redactor.redact(&line.text);
                match DbtEvent::parse(&text) {
                    Some(event) => match shard::listed_node(&event) {
                        Some(node) => nodes.push(node),
                        None => log_events::emit_event(&event, &line),
                    },
                    None => log_events::emit_plain(&text, &line),
                }
            })
            .await?;
            if !record(&mut outcome, "ls", finished) {
                break 'steps;
            }
            let listed = nodes.len();
            let share = take_share(
                nodes,
                |n| n.clone(),
                task.index,
                task.count,
                config.shard_strategy,
            );
            if share.is_empty() {
                tracing::info!(
                    shard_by = %selector,
                    models = listed,
                    task_index = task.index,
                    task_count = task.count,
                    "nothing to do: this task's share of the selected models is empty"
                );
                outcome.finished = None;
                return Ok(outcome);
            }
            tracing::info!(
                shard_by = %selector,
                models = listed,
                share = share.len(),
                task_index = task.index,
                task_count = task.count,
                strategy = %config.shard_strategy,
                "running this task's share of the selected models"
            );
            args = shard::command_for_share(&user_args, &share);
        }

        let command = args.first().cloned().unwrap_or_else(|| "build".into());
        let finished = step(&invocation(args), cancel, &redactor).await?;
        record(&mut outcome, &command, finished);
    }

    outcome.summary = match RunSummary::read(&run_dir.target_dir().join("run_results.json")) {
        Ok(summary) => summary,
        Err(err) => {
            tracing::warn!(error = %err, "cannot summarise the run");
            None
        }
    };
    log_summary(&outcome);

    if let (Some((store, base)), Some(artifacts)) = (&store, &config.artifacts) {
        let budget = if outcome.stopped {
            artifacts.timeout_after_stop
        } else {
            artifacts.timeout
        };
        let prefix = artifacts::run_prefix(base, task, started);
        upload_all(
            store.as_ref(),
            &prefix,
            &run_dir,
            task,
            &outcome,
            &redactor,
            budget,
        )
        .await
        .into_iter()
        .for_each(|result| match result {
            Ok(url) => outcome.uploaded.push(url),
            Err(message) => outcome.upload_errors.push(message),
        });
    }
    Ok(outcome)
}

/// Runs one dbt invocation unless a stop already came, re-emitting its output as log events.
async fn step(
    invocation: &Invocation<'_>,
    cancel: &CancellationToken,
    redactor: &Redactor,
) -> Result<Option<Finished>, DbtError> {
    if cancel.is_cancelled() {
        return Ok(None);
    }
    log_start(invocation, redactor);
    supervise::run(invocation, cancel, |line| log_events::emit(&line, redactor))
        .await
        .map(Some)
}

fn log_start(invocation: &Invocation<'_>, redactor: &Redactor) {
    let args = redactor.redact(&invocation.args.join(" ")).into_owned();
    tracing::info!(
        dbt = %invocation.program.display(),
        dbt_args = %args,
        "running dbt {args}"
    );
}

/// Records a step's end in `outcome`; whether the next step should run.
fn record(outcome: &mut DbtOutcome, name: &str, finished: impl Into<Option<Finished>>) -> bool {
    let Some(finished) = finished.into() else {
        outcome.stopped = true;
        return false;
    };
    outcome.stopped |= finished.stopped;
    let ok = finished.termination == Termination::Exited(0) && !finished.stopped;
    outcome.finished = Some((name.to_string(), finished));
    ok
}

fn log_summary(outcome: &DbtOutcome) {
    let Some((command, finished)) = &outcome.finished else {
        if outcome.stopped {
            tracing::warn!("stopped before dbt started");
        }
        return;
    };
    let counts = outcome
        .summary
        .as_ref()
        .map(|s| format!("; {}", s.counts_line()))
        .unwrap_or_default();
    let (code, signal) = match finished.termination {
        Termination::Exited(code) => (Some(code), None),
        Termination::Signalled(signal) => (None, Some(signal)),
    };
    let s = outcome.summary.as_ref();
    macro_rules! summary {
        ($level:expr, $verdict:expr) => {
            tracing::event!(
                $level,
                dbt_command = command.as_str(),
                dbt_pid = finished.pid,
                dbt_exit_code = code,
                dbt_signal = signal,
                stopped = outcome.stopped,
                killed = finished.killed,
                pass = s.map(|s| s.pass),
                warn = s.map(|s| s.warn),
                error = s.map(|s| s.error),
                skip = s.map(|s| s.skip),
                no_op = s.map(|s| s.no_op),
                total = s.map(|s| s.total),
                elapsed_s = s.map(|s| s.elapsed_s),
                "dbt {command} {}: {}{counts}",
                $verdict,
                finished.termination
            )
        };
    }
    match (finished.termination, outcome.stopped) {
        (Termination::Exited(0), false) => summary!(tracing::Level::INFO, "succeeded"),
        (_, true) => summary!(tracing::Level::ERROR, "stopped"),
        _ => summary!(tracing::Level::ERROR, "failed"),
    }
}

async fn open_store(
    url: &str,
    store: &StoreConfig,
) -> Result<(std::sync::Arc<dyn ObjectStore>, String), DbtError> {
    // A token of its own, not the shutdown token: after a stop signal the artifacts are exactly
    // what we still want to upload (bounded by a timeout instead).
    let config = StoreConfig {
        cancel: CancellationToken::new(),
        ..store.clone()
    };
    sluice_storage::open(url, &config)
        .await
        .map_err(|source| DbtError::ArtifactsDestination {
            url: url.to_string(),
            source,
        })
}

async fn upload_all(
    store: &dyn ObjectStore,
    prefix: &str,
    run_dir: &RunDir,
    task: &TaskContext,
    outcome: &DbtOutcome,
    redactor: &Redactor,
    budget: std::time::Duration,
) -> Vec<Result<String, String>> {
    let files = artifacts::collect(&run_dir.target_dir(), &run_dir.log_dir());
    let mut metadata = BTreeMap::new();
    metadata.insert("sluice-task".to_string(), task.describe());
    if let Some((command, finished)) = &outcome.finished {
        metadata.insert("dbt-command".to_string(), command.clone());
        metadata.insert("dbt-result".to_string(), finished.termination.to_string());
    }
    let deadline = tokio::time::Instant::now() + budget;
    let mut results = Vec::with_capacity(files.len());
    for file in &files {
        let key = format!("{prefix}/{}", file.name);
        let url = store.url_of(&key);
        // Dropping the upload future at the deadline drops its writer, which aborts it.
        let result = tokio::time::timeout_at(
            deadline,
            artifacts::upload_one(store, &key, file, &metadata, redactor),
        )
        .await;
        let result = match result {
            Ok(Ok(url)) => {
                tracing::info!(artifact = file.name, object = %url, "uploaded {} to {url}", file.name);
                Ok(url)
            }
            Ok(Err(err)) => Err(format!("{url}: {err}")),
            Err(_) => Err(format!(
                "{url}: not uploaded within {:.1}s",
                budget.as_secs_f64()
            )),
        };
        if let Err(message) = &result {
            tracing::error!(artifact = file.name, error = %message, "cannot upload dbt artifact");
        }
        results.push(result);
    }
    if files.is_empty() {
        tracing::warn!("dbt left no artifacts to upload");
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(termination: Termination, stopped: bool) -> Finished {
        Finished {
            pid: 1,
            termination,
            stopped,
            timed_out: false,
            killed: false,
        }
    }

    #[test]
    fn exit_codes_follow_dbt() {
        let mut o = DbtOutcome::nothing_to_do();
        assert_eq!(o.exit_code(), ExitCode::Ok);
        for (termination, expected) in [
            (Termination::Exited(0), ExitCode::Ok),
            (Termination::Exited(1), ExitCode::TaskFailed),
            (Termination::Exited(2), ExitCode::Usage),
            (Termination::Exited(7), ExitCode::TaskFailed),
            (Termination::Signalled(9), ExitCode::TaskFailed),
        ] {
            o.finished = Some(("build".into(), finished(termination, false)));
            assert_eq!(o.exit_code(), expected, "{termination}");
        }
        o.finished = Some(("build".into(), finished(Termination::Exited(0), false)));
        o.upload_errors.push("gs://b/x: boom".into());
        assert_eq!(o.exit_code(), ExitCode::TaskFailed);
        o.upload_errors.clear();
        o.stopped = true;
        assert_eq!(o.exit_code(), ExitCode::TaskFailed);
    }

    #[test]
    fn record_stops_the_chain_on_failure_or_stop() {
        let mut o = DbtOutcome::nothing_to_do();
        assert!(record(
            &mut o,
            "deps",
            finished(Termination::Exited(0), false)
        ));
        assert!(!record(
            &mut o,
            "ls",
            finished(Termination::Exited(2), false)
        ));
        assert_eq!(o.finished.as_ref().unwrap().0, "ls");
        assert!(!record(
            &mut o,
            "build",
            finished(Termination::Exited(0), true)
        ));
        assert!(o.stopped);
        let mut o = DbtOutcome::nothing_to_do();
        assert!(!record(&mut o, "build", None));
        assert!(o.stopped && o.finished.is_none());
    }
}
