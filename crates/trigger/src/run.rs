//! Starting an execution (`jobs.run`) exactly once, and following it to the end.
//!
//! `jobs.run` is not idempotent: re-sending it after a timeout or a 5xx can start a second
//! execution of a pipeline step. So every run carries a marker — a random id in the
//! `SLUICE_TRIGGER_RUN_ID` env override, which Cloud Run copies into the execution's template —
//! and after an ambiguous failure we look before re-sending:
//!
//! 1. get the job and its `latestCreatedExecution`; if that was created after the attempt
//!    (less a clock-skew allowance), get it and compare markers;
//! 2. list the job's newest executions and look for our marker among those created since;
//! 3. an execution with our marker is adopted. One created in the window that carries no
//!    marker at all is adopted too (if the API ever stopped echoing overrides, this is the
//!    `createTime` rule); one with another marker belongs to someone else;
//! 4. nothing found: look again over a settle window (a request that timed out on our side
//!    may still be processed), and only then send `jobs.run` again, with the same marker.

use crate::RUN_MARKER_ENV;
use crate::api::{ApiError, CloudRun, RunFailure, classify_run_failure};
use crate::render::{JobTarget, plain_env, wkt_duration};
use crate::report::{self, ExecutionReport, ExecutionState, timestamp};
use chrono::{DateTime, Utc};
use google_cloud_run_v2::model;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What to run, with the overrides `run` accepts.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Replaces the container args (`Some(vec![])` clears them).
    pub args: Option<Vec<String>>,
    /// Added to (or replacing same-named) env of the container.
    pub env: Vec<(String, String)>,
    pub tasks: Option<u32>,
    /// Per-task timeout for this execution.
    pub timeout: Option<Duration>,
}

/// Knobs for the ambiguity protocol (tests shorten them).
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Waits between reconciliation looks after an ambiguous failure.
    pub settle: Vec<Duration>,
    /// `jobs.run` calls at most (only re-sent when certainly nothing was created).
    pub max_attempts: u32,
    /// Executions created up to this long before our attempt still count as candidates
    /// (our clock may be ahead of Google's).
    pub clock_skew: Duration,
    /// Wait before re-sending after a failure that certainly created nothing.
    pub resend_backoff: Duration,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            settle: vec![
                Duration::ZERO,
                Duration::from_secs(2),
                Duration::from_secs(5),
                Duration::from_secs(10),
            ],
            max_attempts: 3,
            clock_skew: Duration::from_secs(120),
            resend_backoff: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "job {job} not found in project {project}, region {region} (deploy it first: sluice-trigger deploy SPEC)"
    )]
    JobNotFound {
        job: String,
        project: String,
        region: String,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("run job {job}: {message}")]
    Failed { job: String, message: String },
}

/// A job that is not deployed is the user's to fix (exit 2); an API failure failed the
/// command (exit 1; an interrupted call is reported with the stop signal's code by the caller).
impl sluice_runtime::ExitStatus for RunError {
    fn exit_code(&self) -> sluice_runtime::ExitCode {
        match self {
            RunError::JobNotFound { .. } => sluice_runtime::ExitCode::Usage,
            RunError::Api(api) => api.exit_code(),
            RunError::Failed { .. } => sluice_runtime::ExitCode::TaskFailed,
        }
    }
}

/// A started execution.
#[derive(Debug, Clone)]
pub struct Started {
    pub execution: model::Execution,
    /// Found after an ambiguous failure rather than returned by `jobs.run`.
    pub adopted: bool,
    /// The job as read before running.
    pub job: model::Job,
    /// The marker in the execution's env.
    pub marker: String,
}

fn new_marker() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..16)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

/// The overrides for `req`, with our marker added to the env.
pub(crate) fn overrides(
    req: &RunRequest,
    job: &model::Job,
    marker: &str,
) -> model::run_job_request::Overrides {
    let mut co = model::run_job_request::overrides::ContainerOverride::default();
    // Name the container when the job does (required with several containers).
    if let Some(c) = job
        .template
        .as_ref()
        .and_then(|t| t.template.as_ref())
        .and_then(|t| t.containers.first())
    {
        co.name = c.name.clone();
    }
    if let Some(args) = &req.args {
        co.args = args.clone();
        co.clear_args = args.is_empty();
    }
    co.env = req.env.iter().map(|(k, v)| plain_env(k, v)).collect();
    co.env.push(plain_env(RUN_MARKER_ENV, marker));
    let mut o = model::run_job_request::Overrides::default();
    o.container_overrides = vec![co];
    if let Some(n) = req.tasks {
        o.task_count = n as i32;
    }
    o.timeout = req.timeout.map(wkt_duration);
    o
}

/// The marker an execution carries: `Some(None)` when its template has env but no marker,
/// `None` when it shows no env at all (nothing to judge by).
fn marker_of(e: &model::Execution) -> Option<Option<String>> {
    let containers = &e.template.as_ref()?.containers;
    let env: Vec<&model::EnvVar> = containers.iter().flat_map(|c| c.env.iter()).collect();
    if env.is_empty() {
        return None;
    }
    Some(
        env.iter()
            .find(|v| v.name == RUN_MARKER_ENV)
            .and_then(|v| v.value().cloned()),
    )
}

enum Match {
    Ours,
    /// Created in the window, no marker information: adopt by the createTime rule.
    Probably,
    No,
}

fn judge(e: &model::Execution, marker: &str, since: DateTime<Utc>) -> Match {
    let created = timestamp(&e.create_time);
    if created.is_none_or(|c| c < since) {
        return Match::No;
    }
    match marker_of(e) {
        Some(Some(m)) if m == marker => Match::Ours,
        Some(_) => Match::No,
        None => Match::Probably,
    }
}

/// Looks once for an execution this run created.
async fn find_ours(
    api: &CloudRun,
    target: &JobTarget,
    marker: &str,
    since: DateTime<Utc>,
) -> Result<Option<model::Execution>, ApiError> {
    let mut probable = None;
    if let Some(job) = api.get_job(&target.name()).await?
        && let Some(latest) = job.latest_created_execution
        && !latest.name.is_empty()
        && timestamp(&latest.create_time).is_some_and(|c| c >= since)
    {
        let e = api.get_execution(&latest.name).await?;
        match judge(&e, marker, since) {
            Match::Ours => return Ok(Some(e)),
            Match::Probably => probable = Some(e),
            Match::No => {}
        }
    }
    // Someone else may have run the job right after us: look further back.
    for e in api.list_executions(&target.name(), 20).await? {
        match judge(&e, marker, since) {
            Match::Ours => return Ok(Some(e)),
            Match::Probably if probable.is_none() => probable = Some(e),
            _ => {}
        }
    }
    if let Some(e) = &probable {
        tracing::warn!(
            execution = %e.name,
            "adopting an execution created after the failed attempt that carries no run marker"
        );
    }
    Ok(probable)
}

/// Looks for our execution over the settle window.
async fn reconcile(
    api: &CloudRun,
    target: &JobTarget,
    marker: &str,
    since: DateTime<Utc>,
    settings: &RunSettings,
    cancel: &CancellationToken,
) -> Result<Option<model::Execution>, RunError> {
    for wait in &settings.settle {
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(*wait) => {}
                _ = cancel.cancelled() => {
                    return Err(ApiError::Interrupted { action: format!("look for the execution of {}", target.name()) }.into());
                }
            }
        }
        if let Some(e) = find_ours(api, target, marker, since).await? {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// Starts one execution of `target` with `req`'s overrides (see the module docs).
pub async fn start(
    api: &CloudRun,
    target: &JobTarget,
    req: &RunRequest,
    settings: &RunSettings,
) -> Result<Started, RunError> {
    let cancel = api.cancel_token().clone();
    let job = api
        .get_job(&target.name())
        .await?
        .ok_or_else(|| RunError::JobNotFound {
            job: target.job.clone(),
            project: target.project.clone(),
            region: target.region.clone(),
        })?;
    let marker = new_marker();
    let ov = overrides(req, &job, &marker);
    let skew = chrono::Duration::from_std(settings.clock_skew).unwrap_or_default();
    let mut last_error = String::new();
    for attempt in 1..=settings.max_attempts.max(1) {
        if cancel.is_cancelled() {
            return Err(ApiError::Interrupted {
                action: format!("run job {}", target.name()),
            }
            .into());
        }
        let since = Utc::now() - skew;
        tracing::debug!(job = %target.name(), attempt, "calling jobs.run");
        let result = api.run_job_once(&target.name(), ov.clone()).await;
        let found = match result {
            Ok(op) => {
                let from_metadata = op
                    .metadata
                    .as_ref()
                    .and_then(|any| any.to_msg::<model::Execution>().ok())
                    .filter(|e| !e.name.is_empty());
                match from_metadata {
                    Some(e) => {
                        return Ok(Started {
                            execution: e,
                            adopted: false,
                            job,
                            marker,
                        });
                    }
                    // Accepted, but the operation did not name the execution: find it.
                    None => reconcile(api, target, &marker, since, settings, &cancel)
                        .await
                        .map_err(|e| unsure(target, "jobs.run returned no execution", e))?,
                }
            }
            Err(e) => {
                last_error = e.to_string();
                match classify_run_failure(&e) {
                    RunFailure::Rejected => {
                        return Err(ApiError::Call {
                            action: format!("run job {}", target.name()),
                            source: e,
                            attempts: attempt,
                        }
                        .into());
                    }
                    RunFailure::NotSent | RunFailure::Throttled(None) => {
                        tracing::warn!(job = %target.name(), error = %e, "jobs.run was not accepted; sending it again");
                        sleep_or_cancel(settings.resend_backoff, &cancel).await;
                        continue;
                    }
                    RunFailure::Throttled(Some(wait)) => {
                        tracing::warn!(job = %target.name(), error = %e, "jobs.run throttled; sending it again after Retry-After");
                        sleep_or_cancel(wait, &cancel).await;
                        continue;
                    }
                    RunFailure::Ambiguous => {
                        tracing::warn!(
                            job = %target.name(), error = %e,
                            "jobs.run failed ambiguously; checking whether it created an execution before retrying"
                        );
                        reconcile(api, target, &marker, since, settings, &cancel)
                            .await
                            .map_err(|err| {
                                unsure(target, &format!("jobs.run failed ambiguously ({e})"), err)
                            })?
                    }
                }
            }
        };
        match found {
            Some(e) => {
                tracing::info!(execution = %e.name, "found the execution the failed jobs.run call created; following it");
                return Ok(Started {
                    execution: e,
                    adopted: true,
                    job,
                    marker,
                });
            }
            None => {
                tracing::warn!(
                    job = %target.name(),
                    "no execution was created by the failed jobs.run call; sending it again"
                );
            }
        }
    }
    Err(RunError::Failed {
        job: target.name(),
        message: format!(
            "no execution started after {} attempt(s); last error: {last_error}",
            settings.max_attempts
        ),
    })
}

/// A reconciliation that could not finish: whether an execution started is unknown, and the
/// message must say so rather than suggest running again.
fn unsure(target: &JobTarget, what: &str, e: RunError) -> RunError {
    match e {
        RunError::Api(a) if a.is_interrupted() => RunError::Api(a),
        other => RunError::Failed {
            job: target.name(),
            message: format!(
                "{what}, and looking for the execution it may have created failed: {other}; \
                 an execution may be running — check `sluice-trigger status {}` before running again",
                target.job
            ),
        },
    }
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = cancel.cancelled() => {}
    }
}

/// Polling of a running execution.
#[derive(Debug, Clone)]
pub struct WaitSettings {
    pub poll_initial: Duration,
    pub poll_max: Duration,
    /// Give up after this long; `None`: the task timeout × (max retries + 1) × waves of
    /// parallel tasks, plus an hour.
    pub max_wait: Option<Duration>,
}

impl Default for WaitSettings {
    fn default() -> Self {
        WaitSettings {
            poll_initial: Duration::from_secs(2),
            poll_max: Duration::from_secs(30),
            max_wait: None,
        }
    }
}

/// How waiting ended.
#[derive(Debug, Clone)]
pub(crate) enum WaitEnd {
    Finished(model::Execution),
    /// The cancel token fired (a signal); the execution as last seen.
    Interrupted(model::Execution),
    /// `max_wait` passed; the execution as last seen.
    GaveUp(model::Execution, Duration),
}

/// The longest an execution can legitimately run: every wave of parallel tasks using every
/// retry up to the timeout.
pub(crate) fn default_max_wait(e: &model::Execution) -> Duration {
    let t = e.template.as_ref();
    let timeout = t
        .and_then(|t| t.timeout)
        .map(|d| Duration::from_secs(d.seconds().max(1) as u64))
        .unwrap_or(crate::spec::DEFAULT_TASK_TIMEOUT);
    let retries = match t.and_then(|t| t.retries.clone()) {
        Some(model::task_template::Retries::MaxRetries(n)) => n.max(0) as u32,
        _ => crate::spec::DEFAULT_MAX_RETRIES,
    };
    let tasks = e.task_count.max(1) as u32;
    // Parallelism 0 means "as many as Cloud Run allows" — which can still be fewer than the
    // tasks, so assume the worst.
    let parallel = if e.parallelism > 0 {
        e.parallelism as u32
    } else {
        1
    };
    let waves = tasks.div_ceil(parallel);
    timeout
        .saturating_mul(retries + 1)
        .saturating_mul(waves)
        .saturating_add(Duration::from_secs(3600))
}

/// Polls `execution` until it finishes, the token fires, or `max_wait` passes. Transient
/// polling errors (after the safe-call retries) are logged and polling goes on; permanent ones
/// (404, 403) end the wait with an error.
pub(crate) async fn wait(
    api: &CloudRun,
    execution: &str,
    settings: &WaitSettings,
    cancel: &CancellationToken,
) -> Result<WaitEnd, ApiError> {
    let started = tokio::time::Instant::now();
    let mut last = api.get_execution(execution).await?;
    let max_wait = settings.max_wait.unwrap_or_else(|| default_max_wait(&last));
    let mut interval = settings.poll_initial;
    let mut last_progress = String::new();
    loop {
        if report::execution_state(&last) != ExecutionState::Running {
            return Ok(WaitEnd::Finished(last));
        }
        let progress = format!(
            "{} running, {} succeeded, {} failed, {} retried of {}",
            last.running_count,
            last.succeeded_count,
            last.failed_count,
            last.retried_count,
            last.task_count
        );
        if progress != last_progress {
            tracing::info!(execution = %last.name, "{progress}");
            last_progress = progress;
        }
        let elapsed = started.elapsed();
        if elapsed >= max_wait {
            return Ok(WaitEnd::GaveUp(last, max_wait));
        }
        let sleep = interval.min(max_wait - elapsed);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = cancel.cancelled() => return Ok(WaitEnd::Interrupted(last)),
        }
        interval = (interval.mul_f64(1.5)).min(settings.poll_max);
        match api.get_execution(execution).await {
            Ok(e) => last = e,
            Err(e) if e.is_interrupted() => return Ok(WaitEnd::Interrupted(last)),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "polling failed; still waiting");
            }
            Err(e) => return Err(e),
        }
    }
}

/// The report for a finished (or abandoned) wait: lists the tasks for per-task results.
/// Listing failures degrade to a report without tasks rather than hiding the outcome.
pub(crate) async fn report_for(
    api: &CloudRun,
    end: &WaitEnd,
    interrupted_exit: Option<i32>,
) -> ExecutionReport {
    let (e, note) = match end {
        WaitEnd::Finished(e) => (e, None),
        WaitEnd::Interrupted(e) => (
            e,
            Some(format!(
                "stopped waiting (interrupted); the execution continues: sluice-trigger wait {}",
                e.name
            )),
        ),
        WaitEnd::GaveUp(e, after) => (
            e,
            Some(format!(
                "gave up waiting after {}; the execution continues: sluice-trigger wait {}",
                crate::duration::human(*after),
                e.name
            )),
        ),
    };
    let tasks = match api.list_tasks(&e.name).await {
        Ok(t) => t,
        Err(err) => {
            tracing::warn!(error = %err, "cannot list the execution's tasks; reporting counts only");
            Vec::new()
        }
    };
    let mut r = report::from_api(e, &tasks);
    if let Some(n) = note {
        r.message = Some(n);
    }
    if let (WaitEnd::Interrupted(_), Some(code)) = (end, interrupted_exit) {
        r.exit_code = code;
    }
    r
}
