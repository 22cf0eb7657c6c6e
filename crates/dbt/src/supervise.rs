//! Running one dbt process, on `sluice_runtime::supervise` (process group, bounded lines,
//! stop escalation), with dbt's stop policy.
//!
//! Stopping: dbt handles SIGINT (Python's KeyboardInterrupt) by cancelling the BigQuery jobs it
//! started and writing what it can, then exits 2. SIGTERM gets Python's default: immediate
//! death, leaving queries running (and billing) in BigQuery. So whichever signal we received,
//! dbt's process group gets SIGINT, then `stop_timeout` to finish, then SIGKILL. dbt runs in its
//! own process group: a terminal's Ctrl-C reaches only us (dbt would otherwise see SIGINT twice,
//! and its second-SIGINT path skips the cleanup), and the final SIGKILL reaches anything dbt
//! started.

use std::path::PathBuf;
use std::time::Duration;

use sluice_runtime::supervise::{self, Event, Signal, StopTarget, SuperviseError, Supervision};
use tokio_util::sync::CancellationToken;

pub(crate) use sluice_runtime::supervise::Line;
pub use sluice_runtime::supervise::{Finished, Termination};

use crate::DbtError;
use crate::env::ChildEnv;

/// One dbt command line.
#[derive(Debug, Clone)]
pub(crate) struct Invocation<'a> {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: &'a ChildEnv,
    pub(crate) stop_timeout: Duration,
    pub(crate) max_line_bytes: usize,
}

/// Runs the invocation to its end, handing every output line to `on_line` in arrival order.
/// When `cancel` fires, dbt gets SIGINT and, after `stop_timeout`, SIGKILL.
pub(crate) async fn run(
    invocation: &Invocation<'_>,
    cancel: &CancellationToken,
    mut on_line: impl FnMut(Line),
) -> Result<Finished, DbtError> {
    let mut command = tokio::process::Command::new(&invocation.program);
    command.args(&invocation.args);
    invocation.env.apply(&mut command);
    let supervision = Supervision {
        stop_signal: Signal::Interrupt,
        stop_target: StopTarget::Group,
        grace: invocation.stop_timeout,
        timeout: None,
        max_line_bytes: invocation.max_line_bytes,
        // As before the supervisor was shared: an abrupt exit of ours leaves dbt to finish.
        kill_on_exit: false,
    };
    let stop_timeout_s = invocation.stop_timeout.as_secs_f64();
    supervise::run(command, &supervision, cancel, |event| match event {
        Event::Started { .. } => {}
        Event::Line(line) => on_line(line),
        Event::Stopping { pid, .. } => tracing::warn!(
            pid,
            stop_timeout_s,
            "stop requested: sending SIGINT to dbt so it cancels its BigQuery jobs"
        ),
        Event::Killing { pid } => tracing::error!(
            pid,
            stop_timeout_s,
            "dbt did not stop within the stop timeout; killing it (SIGKILL)"
        ),
    })
    .await
    .map_err(|err| match err {
        SuperviseError::Spawn { source, .. } => DbtError::Spawn {
            program: invocation.program.display().to_string(),
            source,
        },
        SuperviseError::Wait { pid, source, .. } => DbtError::Supervise { pid, source },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_runtime::ExitStatus;

    fn invocation<'a>(env: &'a ChildEnv, script: &str, stop_timeout: Duration) -> Invocation<'a> {
        Invocation {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env,
            stop_timeout,
            max_line_bytes: 1024,
        }
    }

    #[tokio::test]
    async fn missing_program_is_a_usage_error() {
        let env = ChildEnv::default();
        let mut inv = invocation(&env, "", Duration::from_secs(1));
        inv.program = "/definitely/not/dbt".into();
        let err = run(&inv, &CancellationToken::new(), |_| {})
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), sluice_runtime::ExitCode::Usage, "{err}");
        assert!(err.to_string().contains("/definitely/not/dbt"), "{err}");
    }

    #[tokio::test]
    async fn stop_sends_sigint_and_waits_for_cleanup() {
        // Like dbt: on SIGINT, clean up (print), then exit 2.
        let env = ChildEnv::default();
        let script =
            "trap 'echo cleaning up; exit 2' INT; echo ready; while :; do sleep 0.05; done";
        let inv = invocation(&env, script, Duration::from_secs(5));
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let mut seen = Vec::new();
        let finished = run(&inv, &cancel, |l| {
            if l.text == "ready" {
                trigger.cancel();
            }
            seen.push(l.text);
        })
        .await
        .unwrap();
        assert_eq!(finished.termination, Termination::Exited(2));
        assert!(finished.stopped && !finished.killed);
        assert_eq!(seen, ["ready", "cleaning up"]);
    }

    #[tokio::test]
    async fn env_reaches_dbt() {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::env::Paths {
            project_dir: dir.path(),
            profiles_dir: dir.path(),
            target_dir: dir.path(),
            log_dir: dir.path(),
        };
        let env = ChildEnv::new(paths, false);
        let inv = invocation(&env, "echo \"$DBT_LOG_FORMAT\"", Duration::from_secs(5));
        let mut seen = Vec::new();
        let finished = run(&inv, &CancellationToken::new(), |l| seen.push(l.text))
            .await
            .unwrap();
        assert_eq!(finished.termination, Termination::Exited(0));
        assert_eq!(seen, ["json"]);
    }
}
