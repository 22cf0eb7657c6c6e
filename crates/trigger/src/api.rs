//! The Cloud Run Admin API v2 calls sluice-trigger makes, over the official
//! `google-cloud-run-v2` clients.
//!
//! Retries are ours, not the client library's: the clients are built with `NeverRetry`, and
//! every *safe* call (GET, and list) goes through [`sluice_runtime::RetryPolicy`] with
//! [`classify_safe`] (connection failures, timeouts, 408/429/5xx; `Retry-After` honoured).
//! Mutating calls are made once; `jobs.run` in particular is never retried here — see
//! [`crate::run`] for how an ambiguous failure is resolved before anything is re-sent.

use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::options::RequestOptionsBuilder;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_lro::Poller;
use google_cloud_run_v2::client::{Executions, Jobs, Tasks};
use google_cloud_run_v2::model;
use sluice_runtime::retry::{RetryError, classify_http_status};
use sluice_runtime::{CancellationToken, RetryDecision, RetryPolicy};
use std::time::Duration;

/// How to reach the API.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// `None`: the production endpoint with Application Default Credentials. A plain `http://`
    /// endpoint (a test server) is always called without credentials, so no token ever
    /// travels unencrypted.
    pub endpoint: Option<String>,
    /// Per-HTTP-attempt timeout.
    pub attempt_timeout: Duration,
    /// Backoff for safe calls.
    pub retry: RetryPolicy,
    /// Polling of `jobs.create` / `jobs.patch` operations.
    pub lro_poll_initial: Duration,
    pub lro_poll_max: Duration,
    /// Give up on a create/patch operation after this long.
    pub lro_timeout: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            endpoint: None,
            attempt_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            lro_poll_initial: Duration::from_secs(1),
            lro_poll_max: Duration::from_secs(10),
            lro_timeout: Duration::from_secs(10 * 60),
        }
    }
}

/// A failed API call, naming what was attempted.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{action}: {source}{}", attempts_note(*attempts))]
    Call {
        action: String,
        #[source]
        source: GaxError,
        attempts: u32,
    },
    #[error("{action}: interrupted")]
    Interrupted { action: String },
    #[error("{action}: {message}")]
    Other { action: String, message: String },
}

/// An API call that failed failed the command (exit 1). An interrupted one also reports 1
/// here; the commands report the stop signal's own code (130/143) for it, as every binary does.
impl sluice_runtime::ExitStatus for ApiError {
    fn exit_code(&self) -> sluice_runtime::ExitCode {
        sluice_runtime::ExitCode::TaskFailed
    }
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (gave up after {attempts} attempts)")
    } else {
        String::new()
    }
}

impl ApiError {
    fn from_retry(action: String, e: RetryError<GaxError>) -> ApiError {
        match e {
            RetryError::Exhausted { source, attempts } => ApiError::Call {
                action,
                source,
                attempts,
            },
            RetryError::Cancelled { .. } => ApiError::Interrupted { action },
        }
    }

    fn once(action: String, source: GaxError) -> ApiError {
        ApiError::Call {
            action,
            source,
            attempts: 1,
        }
    }

    /// The underlying client error, if the call got that far.
    pub fn source_error(&self) -> Option<&GaxError> {
        match self {
            ApiError::Call { source, .. } => Some(source),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.source_error().is_some_and(is_not_found)
    }

    /// Whether retrying later could help (the error was transient but retries ran out).
    pub fn is_transient(&self) -> bool {
        self.source_error()
            .is_some_and(|e| classify_safe(e) != RetryDecision::Stop)
    }

    pub fn is_interrupted(&self) -> bool {
        matches!(self, ApiError::Interrupted { .. })
    }
}

/// HTTP status of a failed call, from the response or mapped from the RPC code.
pub(crate) fn http_status(e: &GaxError) -> Option<u16> {
    if let Some(code) = e.http_status_code() {
        return Some(code);
    }
    e.status().map(|s| match s.code {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::Aborted | Code::AlreadyExists => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        _ => 500,
    })
}

pub(crate) fn is_not_found(e: &GaxError) -> bool {
    e.status().is_some_and(|s| s.code == Code::NotFound) || e.http_status_code() == Some(404)
}

fn retry_after(e: &GaxError) -> Option<String> {
    e.http_headers()?
        .get("retry-after")?
        .to_str()
        .ok()
        .map(str::to_string)
}

/// Retry decision for a call that is safe to repeat (reads).
pub(crate) fn classify_safe(e: &GaxError) -> RetryDecision {
    if e.is_connect() || e.is_timeout() || e.is_io() || e.is_transient_and_before_rpc() {
        return RetryDecision::Retry;
    }
    match http_status(e) {
        Some(status) => classify_http_status(status, retry_after(e).as_deref()),
        None => RetryDecision::Stop,
    }
}

/// How a failed `jobs.run` call must be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunFailure {
    /// The request never left (connection refused, credentials not ready): re-sending is safe.
    NotSent,
    /// The server refused it before doing anything (429): safe to re-send after the wait.
    Throttled(Option<Duration>),
    /// The server rejected it for good (4xx): report.
    Rejected,
    /// It may or may not have created an execution (timeout, 5xx, connection lost after
    /// sending): look before re-sending.
    Ambiguous,
}

pub(crate) fn classify_run_failure(e: &GaxError) -> RunFailure {
    if e.is_connect() || e.is_transient_and_before_rpc() {
        return RunFailure::NotSent;
    }
    if e.is_binding() || e.is_serialization() || e.is_authentication() {
        return RunFailure::Rejected;
    }
    if e.is_timeout() || e.is_io() {
        return RunFailure::Ambiguous;
    }
    match http_status(e) {
        Some(429) => RunFailure::Throttled(
            retry_after(e).and_then(|v| sluice_runtime::retry::parse_retry_after(&v)),
        ),
        // 408: the server gave up reading the request; it may have acted on it anyway.
        Some(408) | Some(500..=599) => RunFailure::Ambiguous,
        Some(_) => RunFailure::Rejected,
        // A transport failure without a status: assume the worst.
        None if e.is_transport() => RunFailure::Ambiguous,
        None => RunFailure::Rejected,
    }
}

/// The three Admin API clients sluice-trigger uses, with its retry policy for safe calls.
#[derive(Clone)]
pub struct CloudRun {
    jobs: Jobs,
    executions: Executions,
    tasks: Tasks,
    retry: RetryPolicy,
    cancel: CancellationToken,
    lro_timeout: Duration,
}

impl std::fmt::Debug for CloudRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudRun").finish_non_exhaustive()
    }
}

macro_rules! build_client {
    ($client:ty, $opts:expr) => {{
        let opts = $opts;
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_delay(opts.lro_poll_initial)
            .with_maximum_delay(opts.lro_poll_max.max(opts.lro_poll_initial))
            .build()
            .map_err(|e| ApiError::Other {
                action: "configure LRO polling".into(),
                message: e.to_string(),
            })?;
        let mut b = <$client>::builder()
            .with_retry_policy(NeverRetry)
            .with_attempt_timeout(opts.attempt_timeout)
            .with_polling_backoff_policy(backoff);
        if let Some(endpoint) = &opts.endpoint {
            b = b.with_endpoint(endpoint.trim_end_matches('/'));
            if endpoint.starts_with("http://") {
                b = b.with_credentials(
                    google_cloud_auth::credentials::anonymous::Builder::new().build(),
                );
            }
        }
        b.build().await.map_err(|e| ApiError::Other {
            action: format!("create the {} client", stringify!($client)),
            message: e.to_string(),
        })?
    }};
}

impl CloudRun {
    /// Builds the clients. Credentials are resolved here (ADC) unless the endpoint is plain
    /// HTTP. `cancel` interrupts retry waits.
    pub async fn connect(
        opts: &ApiOptions,
        cancel: CancellationToken,
    ) -> Result<CloudRun, ApiError> {
        let jobs = build_client!(Jobs, opts);
        let executions = build_client!(Executions, opts);
        let tasks = build_client!(Tasks, opts);
        Ok(CloudRun {
            jobs,
            executions,
            tasks,
            retry: opts.retry.clone(),
            cancel,
            lro_timeout: opts.lro_timeout,
        })
    }

    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    async fn safe<T, Fut>(&self, action: String, op: impl FnMut(u32) -> Fut) -> Result<T, ApiError>
    where
        Fut: std::future::Future<Output = Result<T, GaxError>>,
    {
        self.retry
            .run(&action, &self.cancel, op, classify_safe)
            .await
            .map_err(|e| ApiError::from_retry(action, e))
    }

    /// `jobs.get`; `None` when the job does not exist.
    pub async fn get_job(&self, name: &str) -> Result<Option<model::Job>, ApiError> {
        let r = self
            .safe(format!("get job {name}"), |_| {
                self.jobs.get_job().set_name(name).send()
            })
            .await;
        match r {
            Ok(job) => Ok(Some(job)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `jobs.create`, waiting for its operation.
    pub async fn create_job(
        &self,
        parent: &str,
        job_id: &str,
        job: model::Job,
    ) -> Result<model::Job, ApiError> {
        let action = format!("create job {parent}/jobs/{job_id}");
        let poller = self
            .jobs
            .create_job()
            .set_parent(parent)
            .set_job_id(job_id)
            .set_job(job)
            .poller();
        self.until_done(action, poller).await
    }

    /// `jobs.patch` (the body's `name` says which job), waiting for its operation.
    pub async fn update_job(&self, job: model::Job) -> Result<model::Job, ApiError> {
        let action = format!("update job {}", job.name);
        let poller = self.jobs.update_job().set_job(job).poller();
        self.until_done(action, poller).await
    }

    async fn until_done<P>(&self, action: String, poller: P) -> Result<model::Job, ApiError>
    where
        P: Poller<model::Job, model::Job>,
    {
        tokio::select! {
            r = tokio::time::timeout(self.lro_timeout, poller.until_done()) => match r {
                Ok(Ok(job)) => Ok(job),
                Ok(Err(e)) => Err(ApiError::once(action, e)),
                Err(_) => Err(ApiError::Other {
                    action,
                    message: format!(
                        "the operation did not finish within {}",
                        crate::duration::human(self.lro_timeout)
                    ),
                }),
            },
            _ = self.cancel.cancelled() => Err(ApiError::Interrupted { action }),
        }
    }

    /// One `jobs.run` call, not retried (see [`crate::run`]). Returns the raw operation or the
    /// raw client error for the caller to classify.
    pub async fn run_job_once(
        &self,
        name: &str,
        overrides: model::run_job_request::Overrides,
    ) -> Result<google_cloud_longrunning::model::Operation, GaxError> {
        self.jobs
            .run_job()
            .set_name(name)
            .set_overrides(overrides)
            .send()
            .await
    }

    /// `executions.get`.
    pub async fn get_execution(&self, name: &str) -> Result<model::Execution, ApiError> {
        self.safe(format!("get execution {name}"), |_| {
            self.executions.get_execution().set_name(name).send()
        })
        .await
    }

    /// The job's most recent executions, newest first (at most `limit`).
    pub async fn list_executions(
        &self,
        job_name: &str,
        limit: usize,
    ) -> Result<Vec<model::Execution>, ApiError> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page_token = token.clone();
            let page = self
                .safe(format!("list executions of {job_name}"), |_| {
                    self.executions
                        .list_executions()
                        .set_parent(job_name)
                        .set_page_size(limit.clamp(1, 100) as i32)
                        .set_page_token(page_token.clone())
                        .send()
                })
                .await?;
            out.extend(page.executions);
            if page.next_page_token.is_empty() || out.len() >= limit {
                break;
            }
            token = page.next_page_token;
        }
        // The API documents no order: sort newest first ourselves.
        out.sort_by_key(|e| {
            std::cmp::Reverse(
                e.create_time
                    .map(|t| (t.seconds(), t.nanos()))
                    .unwrap_or_default(),
            )
        });
        out.truncate(limit);
        Ok(out)
    }

    /// `executions.cancel` (not waited for: follow the execution to see it stop).
    pub async fn cancel_execution(&self, name: &str) -> Result<(), ApiError> {
        self.executions
            .cancel_execution()
            .set_name(name)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| ApiError::once(format!("cancel execution {name}"), e))
    }

    /// Every task of an execution, by index.
    pub async fn list_tasks(&self, execution: &str) -> Result<Vec<model::Task>, ApiError> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page_token = token.clone();
            let page = self
                .safe(format!("list tasks of {execution}"), |_| {
                    self.tasks
                        .list_tasks()
                        .set_parent(execution)
                        .set_page_size(1000)
                        .set_page_token(page_token.clone())
                        .with_attempt_timeout(Duration::from_secs(120))
                        .send()
                })
                .await?;
            out.extend(page.tasks);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        out.sort_by_key(|t| t.index);
        Ok(out)
    }
}
