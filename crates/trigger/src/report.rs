//! The result of an execution — on Cloud Run or local — as `run --wait`, `wait` and `local`
//! print it: a text summary, or the stable JSON document described in `docs/trigger.md`
//! (`schema: "sluice-trigger/execution/v1"`). Fields are only ever added to v1, never renamed
//! or removed.

use chrono::{DateTime, SecondsFormat, Utc};
use google_cloud_run_v2::model;
use serde::Serialize;
use std::fmt::Write as _;

pub(crate) const EXECUTION_SCHEMA: &str = "sluice-trigger/execution/v1";
pub(crate) const STATUS_SCHEMA: &str = "sluice-trigger/status/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum ExecutionState {
    Succeeded,
    Failed,
    Cancelled,
    /// Not finished (also reported when waiting was interrupted or gave up).
    Running,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum TaskState {
    Succeeded,
    Failed,
    Cancelled,
    Running,
    Pending,
}

impl ExecutionState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ExecutionState::Succeeded => "SUCCEEDED",
            ExecutionState::Failed => "FAILED",
            ExecutionState::Cancelled => "CANCELLED",
            ExecutionState::Running => "RUNNING",
        }
    }
}

impl TaskState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TaskState::Succeeded => "SUCCEEDED",
            TaskState::Failed => "FAILED",
            TaskState::Cancelled => "CANCELLED",
            TaskState::Running => "RUNNING",
            TaskState::Pending => "PENDING",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mode {
    CloudRun,
    Local,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Counts {
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
    pub running: u32,
    pub pending: u32,
    /// Task retries (attempts beyond each task's first), summed over tasks.
    pub retried: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TaskReport {
    pub index: u32,
    pub state: TaskState,
    /// Attempts started (0 if the task never started).
    pub attempts: u32,
    /// Retries: `attempts - 1` for a started task.
    pub retried: u32,
    /// Exit code of the last attempt, when known.
    pub exit_code: Option<i32>,
    /// Signal that ended the last attempt (e.g. 15 after a timeout), when known.
    pub term_signal: Option<i32>,
    pub log_uri: Option<String>,
    pub start_time: Option<String>,
    pub completion_time: Option<String>,
    /// Why the last attempt failed, when known.
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ExecutionReport {
    pub schema: &'static str,
    pub mode: Mode,
    /// Full resource name on Cloud Run; the generated execution id locally.
    pub execution: String,
    /// Short execution id (`JOB-abc12`).
    pub execution_id: String,
    pub job: String,
    pub project: Option<String>,
    pub region: Option<String>,
    pub state: ExecutionState,
    /// The exit code `sluice-trigger` itself returns for this report.
    pub exit_code: i32,
    pub task_count: u32,
    pub parallelism: u32,
    pub counts: Counts,
    pub tasks: Vec<TaskReport>,
    pub log_uri: Option<String>,
    pub create_time: Option<String>,
    pub start_time: Option<String>,
    pub completion_time: Option<String>,
    pub duration_seconds: Option<f64>,
    /// Why the execution failed, was cancelled, or why waiting stopped.
    pub message: Option<String>,
}

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn timestamp(t: &Option<google_cloud_wkt::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds(), t.nanos().max(0) as u32))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// `projects/P/locations/R/jobs/J/executions/E` -> (P, R, J, E).
pub(crate) fn split_execution_name(name: &str) -> Option<(&str, &str, &str, &str)> {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["projects", p, "locations", r, "jobs", j, "executions", e] => Some((p, r, j, e)),
        _ => None,
    }
}

/// The "Completed" condition, Cloud Run's verdict on a finished execution.
fn completed_condition(conditions: &[model::Condition]) -> Option<&model::Condition> {
    conditions.iter().find(|c| c.r#type == "Completed")
}

fn is_cancel_reason(c: &model::Condition) -> bool {
    use model::condition::ExecutionReason;
    matches!(
        c.execution_reason(),
        Some(ExecutionReason::Cancelled) | Some(ExecutionReason::Cancelling)
    )
}

/// State of an execution as the API reports it: running until `completionTime` is set;
/// then the "Completed" condition decides, with the counts as a fallback.
pub(crate) fn execution_state(e: &model::Execution) -> ExecutionState {
    if e.completion_time.is_none() {
        return ExecutionState::Running;
    }
    let cancelled = e.conditions.iter().any(is_cancel_reason);
    match completed_condition(&e.conditions).map(|c| &c.state) {
        _ if cancelled => ExecutionState::Cancelled,
        Some(model::condition::State::ConditionSucceeded) => ExecutionState::Succeeded,
        Some(model::condition::State::ConditionFailed) => ExecutionState::Failed,
        _ if e.cancelled_count > 0 => ExecutionState::Cancelled,
        _ if e.failed_count == 0 && e.succeeded_count >= e.task_count.max(1) => {
            ExecutionState::Succeeded
        }
        _ => ExecutionState::Failed,
    }
}

/// State of one task: finished when `completionTime` is set, judged by its last attempt.
pub(crate) fn task_state(t: &model::Task, execution: ExecutionState) -> TaskState {
    if let Some(c) = completed_condition(&t.conditions) {
        if is_cancel_reason(c) {
            return TaskState::Cancelled;
        }
        match c.state {
            model::condition::State::ConditionSucceeded => return TaskState::Succeeded,
            model::condition::State::ConditionFailed => return TaskState::Failed,
            _ => {}
        }
    }
    if t.completion_time.is_some() {
        let ok = t
            .last_attempt_result
            .as_ref()
            .is_none_or(|r| r.exit_code == 0 && r.status.as_ref().is_none_or(|s| s.code == 0));
        return if ok {
            TaskState::Succeeded
        } else {
            TaskState::Failed
        };
    }
    match execution {
        ExecutionState::Cancelled | ExecutionState::Failed | ExecutionState::Succeeded => {
            TaskState::Cancelled
        }
        ExecutionState::Running if t.start_time.is_some() => TaskState::Running,
        ExecutionState::Running => TaskState::Pending,
    }
}

pub(crate) fn task_report(t: &model::Task, execution: ExecutionState) -> TaskReport {
    let state = task_state(t, execution);
    let started = t.start_time.is_some() || t.last_attempt_result.is_some();
    let attempts = if started {
        t.retried.max(0) as u32 + 1
    } else {
        0
    };
    let last = t.last_attempt_result.as_ref();
    let message = last
        .and_then(|r| r.status.as_ref())
        .filter(|s| s.code != 0)
        .map(|s| s.message.clone())
        .filter(|m| !m.is_empty());
    TaskReport {
        index: t.index.max(0) as u32,
        state,
        attempts,
        retried: attempts.saturating_sub(1),
        exit_code: last.map(|r| r.exit_code),
        term_signal: last.map(|r| r.term_signal).filter(|s| *s != 0),
        log_uri: non_empty(&t.log_uri),
        start_time: timestamp(&t.start_time).map(rfc3339),
        completion_time: timestamp(&t.completion_time).map(rfc3339),
        message,
    }
}

/// The report for an API execution and its tasks (empty `tasks` if they were not listed).
pub(crate) fn from_api(e: &model::Execution, tasks: &[model::Task]) -> ExecutionReport {
    let state = execution_state(e);
    let (project, region, job, id) = match split_execution_name(&e.name) {
        Some((p, r, j, id)) => (
            Some(p.to_string()),
            Some(r.to_string()),
            j.to_string(),
            id.to_string(),
        ),
        None => (None, None, e.job.clone(), e.name.clone()),
    };
    let tasks: Vec<TaskReport> = tasks.iter().map(|t| task_report(t, state)).collect();
    let task_count = e.task_count.max(0) as u32;
    let counts = Counts {
        succeeded: e.succeeded_count.max(0) as u32,
        failed: e.failed_count.max(0) as u32,
        cancelled: e.cancelled_count.max(0) as u32,
        running: e.running_count.max(0) as u32,
        pending: task_count.saturating_sub(
            (e.succeeded_count + e.failed_count + e.cancelled_count + e.running_count).max(0)
                as u32,
        ),
        retried: e.retried_count.max(0) as u32,
    };
    let created = timestamp(&e.create_time);
    let started = timestamp(&e.start_time);
    let completed = timestamp(&e.completion_time);
    let duration = match (started.or(created), completed) {
        (Some(s), Some(c)) => Some((c - s).num_milliseconds() as f64 / 1000.0),
        _ => None,
    };
    let message = match state {
        ExecutionState::Succeeded | ExecutionState::Running => None,
        _ => completed_condition(&e.conditions)
            .or_else(|| e.conditions.iter().find(|c| is_cancel_reason(c)))
            .map(|c| c.message.clone())
            .filter(|m| !m.is_empty()),
    };
    ExecutionReport {
        schema: EXECUTION_SCHEMA,
        mode: Mode::CloudRun,
        execution: e.name.clone(),
        execution_id: id,
        job,
        project,
        region,
        state,
        exit_code: exit_code_for(state),
        task_count,
        parallelism: e.parallelism.max(0) as u32,
        counts,
        tasks,
        log_uri: non_empty(&e.log_uri),
        create_time: created.map(rfc3339),
        start_time: started.map(rfc3339),
        completion_time: completed.map(rfc3339),
        duration_seconds: duration,
        message,
    }
}

/// 0 only for success; a finished failure or cancellation is 1. A still-running execution
/// gets 1 too unless the caller knows better (an interrupt: 130/143).
pub(crate) fn exit_code_for(state: ExecutionState) -> i32 {
    match state {
        ExecutionState::Succeeded => 0,
        _ => 1,
    }
}

/// A person-readable summary: one headline, one line per task that did not simply succeed
/// (every task when there are at most 20), and where the logs are.
pub(crate) fn render_text(r: &ExecutionReport) -> String {
    let mut s = String::new();
    let duration = r
        .duration_seconds
        .map(|d| {
            format!(
                " in {}",
                crate::duration::human(std::time::Duration::from_secs_f64(d.max(0.0)))
            )
        })
        .unwrap_or_default();
    let _ = write!(
        s,
        "execution {} (job {}): {}{} — {}/{} tasks succeeded",
        r.execution_id,
        r.job,
        r.state.as_str(),
        duration,
        r.counts.succeeded,
        r.task_count
    );
    for (n, what) in [
        (r.counts.failed, "failed"),
        (r.counts.cancelled, "cancelled"),
        (r.counts.running, "running"),
        (r.counts.pending, "pending"),
    ] {
        if n > 0 {
            let _ = write!(s, ", {n} {what}");
        }
    }
    if r.counts.retried > 0 {
        let _ = write!(s, ", {} retried", r.counts.retried);
    }
    s.push('\n');
    if let Some(m) = &r.message {
        let _ = writeln!(s, "  {m}");
    }
    let show_all = r.tasks.len() <= 20;
    for t in &r.tasks {
        if !show_all && t.state == TaskState::Succeeded && t.retried == 0 {
            continue;
        }
        let _ = write!(
            s,
            "  task {:<4} {:<9} attempts {}",
            t.index,
            t.state.as_str(),
            t.attempts
        );
        if let Some(code) = t.exit_code {
            let _ = write!(s, "  exit {code}");
        }
        if let Some(sig) = t.term_signal {
            let _ = write!(s, "  signal {sig}");
        }
        if let Some(m) = &t.message {
            let _ = write!(s, "  {m}");
        }
        s.push('\n');
    }
    if let Some(uri) = &r.log_uri {
        let _ = writeln!(s, "  logs: {uri}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Option<google_cloud_wkt::Timestamp> {
        Some(google_cloud_wkt::Timestamp::clamp(secs, 0))
    }

    fn completed(state: model::condition::State) -> model::Condition {
        let mut c = model::Condition::default();
        c.r#type = "Completed".into();
        c.state = state;
        c.message = "m".into();
        c
    }

    #[test]
    fn execution_states() {
        let mut e = model::Execution::default();
        e.task_count = 2;
        assert_eq!(execution_state(&e), ExecutionState::Running);
        e.completion_time = ts(100);
        e.conditions = vec![completed(model::condition::State::ConditionSucceeded)];
        assert_eq!(execution_state(&e), ExecutionState::Succeeded);
        e.conditions = vec![completed(model::condition::State::ConditionFailed)];
        assert_eq!(execution_state(&e), ExecutionState::Failed);
        let mut c = completed(model::condition::State::ConditionFailed);
        c.reasons = Some(model::condition::Reasons::ExecutionReason(
            model::condition::ExecutionReason::Cancelled,
        ));
        e.conditions = vec![c];
        assert_eq!(execution_state(&e), ExecutionState::Cancelled);
        // No condition: the counts decide.
        e.conditions.clear();
        e.succeeded_count = 2;
        assert_eq!(execution_state(&e), ExecutionState::Succeeded);
        e.failed_count = 1;
        assert_eq!(execution_state(&e), ExecutionState::Failed);
    }

    #[test]
    fn task_reports() {
        let mut t = model::Task::default();
        t.index = 3;
        assert_eq!(
            task_report(&t, ExecutionState::Running).state,
            TaskState::Pending
        );
        assert_eq!(
            task_report(&t, ExecutionState::Cancelled).state,
            TaskState::Cancelled
        );
        t.start_time = ts(10);
        assert_eq!(
            task_report(&t, ExecutionState::Running).state,
            TaskState::Running
        );
        t.completion_time = ts(20);
        t.retried = 2;
        let mut last = model::TaskAttemptResult::default();
        last.exit_code = 3;
        let mut status = google_cloud_rpc::model::Status::default();
        status.code = 2;
        status.message = "exit code 3".into();
        last.status = Some(status);
        t.last_attempt_result = Some(last);
        let r = task_report(&t, ExecutionState::Failed);
        assert_eq!(r.state, TaskState::Failed);
        assert_eq!((r.index, r.attempts, r.retried), (3, 3, 2));
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(r.message.as_deref(), Some("exit code 3"));
        assert_eq!(r.start_time.as_deref(), Some("1970-01-01T00:00:10.000Z"));
    }

    #[test]
    fn report_from_api_and_text() {
        let mut e = model::Execution::default();
        e.name = "projects/p/locations/r/jobs/extract/executions/extract-ab12c".into();
        e.task_count = 2;
        e.succeeded_count = 1;
        e.failed_count = 1;
        e.retried_count = 3;
        e.create_time = ts(0);
        e.start_time = ts(5);
        e.completion_time = ts(65);
        e.log_uri = "https://console.cloud.google.com/logs".into();
        e.conditions = vec![completed(model::condition::State::ConditionFailed)];
        let r = from_api(&e, &[]);
        assert_eq!(r.job, "extract");
        assert_eq!(r.execution_id, "extract-ab12c");
        assert_eq!(r.project.as_deref(), Some("p"));
        assert_eq!(r.state, ExecutionState::Failed);
        assert_eq!(r.exit_code, 1);
        assert_eq!(r.duration_seconds, Some(60.0));
        assert_eq!(r.message.as_deref(), Some("m"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["state"], "FAILED");
        assert_eq!(json["mode"], "cloud-run");
        assert_eq!(json["schema"], EXECUTION_SCHEMA);
        let text = render_text(&r);
        assert!(text.starts_with("execution extract-ab12c (job extract): FAILED in 1m00s — 1/2 tasks succeeded, 1 failed, 3 retried"), "{text}");
        assert!(text.contains("logs: https://console.cloud.google.com/logs"));
    }
}
