//! The few BigQuery calls a load needs, over the official `google-cloud-bigquery-v2` client:
//! `jobs.insert`, `jobs.get`, `jobs.query`, `jobs.getQueryResults`, `datasets.get/insert`,
//! `tables.get/insert/delete`.
//!
//! Each method makes exactly one HTTP attempt (the client's own retry loop is switched off):
//! whether a failure is worth repeating depends on the call (a `jobs.insert` that timed out may
//! have created the job, and the 409 its retry gets means "follow it"), so retries live in
//! `run.rs`, through the runtime's [`RetryPolicy`](sluice_runtime::RetryPolicy).
//!
//! Errors keep what BigQuery said: the HTTP status and the first `error.errors[]` entry (reason,
//! message, location), recovered from the `ErrorInfo` details the official client turns them into.

use std::fmt;

use google_cloud_bigquery_v2::client::{DatasetService, JobService, TableService};
use google_cloud_bigquery_v2::model;
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::StatusDetails;
use google_cloud_gax::retry_policy::NeverRetry;
use sluice_runtime::RetryDecision;
use sluice_runtime::retry::classify_http_status;

use crate::bq_error::{BqError, ErrorClass, classify_reason};
use crate::template::TableRef;

/// How to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Credentials {
    /// Application Default Credentials (metadata server on Cloud Run).
    #[default]
    Default,
    /// No credentials: for emulators.
    Anonymous,
}

/// Where BigQuery is and how to authenticate to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientConfig {
    /// `None`: `https://bigquery.googleapis.com`.
    pub endpoint: Option<String>,
    pub credentials: Credentials,
}

impl ClientConfig {
    /// Settings for an emulator at `host` (`127.0.0.1:9050` or `http://127.0.0.1:9050`), the
    /// form `BIGQUERY_EMULATOR_HOST` takes: anonymous credentials.
    pub fn emulator(host: &str) -> ClientConfig {
        ClientConfig {
            endpoint: Some(sluice_runtime::endpoint::emulator_url(host)),
            credentials: Credentials::Anonymous,
        }
    }
}

/// What went wrong with one API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiFailure {
    /// BigQuery (or a proxy) answered with an error status.
    Status {
        status: u16,
        error: BqError,
        retry_after: Option<String>,
    },
    /// No usable answer: connect failure, reset, timeout. The call may or may not have happened.
    Transport(String),
    /// Credentials could not be obtained.
    Auth { message: String, transient: bool },
    /// Request could not be built or response not understood: a bug or an incompatible server.
    Other(String),
}

/// A failed API call, naming the call and its target (`jobs.insert p:US.sluice_load_...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ApiError {
    pub call: String,
    pub failure: ApiFailure,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            ApiFailure::Status { status, error, .. } => {
                write!(f, "{}: HTTP {status}: {error}", self.call)
            }
            ApiFailure::Transport(m) => write!(f, "{}: transport error: {m}", self.call),
            ApiFailure::Auth { message, .. } => {
                write!(f, "{}: cannot get credentials: {message}", self.call)
            }
            ApiFailure::Other(m) => write!(f, "{}: {m}", self.call),
        }
    }
}

impl ApiError {
    pub(crate) fn status(&self) -> Option<u16> {
        match &self.failure {
            ApiFailure::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// BigQuery's error, when it sent one.
    pub(crate) fn bq_error(&self) -> Option<&BqError> {
        match &self.failure {
            ApiFailure::Status { error, .. } => Some(error),
            _ => None,
        }
    }

    pub(crate) fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    pub(crate) fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Whether repeating the same call can help. BigQuery's reason wins over the status: it
    /// sends rate limits as 403 `rateLimitExceeded` (retry) and daily quotas as 403
    /// `quotaExceeded` (do not). Without a known reason the status decides (429, 5xx, 408).
    pub(crate) fn retry_decision(&self) -> RetryDecision {
        match &self.failure {
            ApiFailure::Transport(_) => RetryDecision::Retry,
            ApiFailure::Auth { transient, .. } => {
                if *transient {
                    RetryDecision::Retry
                } else {
                    RetryDecision::Stop
                }
            }
            ApiFailure::Other(_) => RetryDecision::Stop,
            ApiFailure::Status {
                status,
                error,
                retry_after,
            } => {
                let by_status = classify_http_status(*status, retry_after.as_deref());
                if *status == 409 || *status == 404 {
                    return RetryDecision::Stop;
                }
                match (error.reason.is_empty(), classify_reason(&error.reason)) {
                    (false, ErrorClass::Transient) => match by_status {
                        RetryDecision::RetryAfter(d) => RetryDecision::RetryAfter(d),
                        _ => RetryDecision::Retry,
                    },
                    // A terminal reason on a 5xx is unusual; trust the status.
                    (false, ErrorClass::Terminal) if *status < 500 => RetryDecision::Stop,
                    _ => by_status,
                }
            }
        }
    }
}

fn convert_error(call: String, err: GaxError) -> ApiError {
    let failure = if let Some(status_code) = err.http_status_code() {
        let retry_after = err
            .http_headers()
            .and_then(|h| h.get("retry-after"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let error = match err.status() {
            Some(status) => {
                // The legacy `error.errors[]` entries arrive as ErrorInfo details whose metadata
                // holds the entry's other keys (message, location).
                let info = status.details.iter().find_map(|d| match d {
                    StatusDetails::ErrorInfo(info) => Some(info),
                    _ => None,
                });
                match info {
                    Some(info) => BqError::new(
                        &info.reason,
                        info.metadata
                            .get("message")
                            .map(String::as_str)
                            .filter(|m| !m.is_empty())
                            .unwrap_or(&status.message),
                        info.metadata.get("location").map(String::as_str),
                    ),
                    None => BqError::new("", &status.message, None),
                }
            }
            None => {
                let body = err
                    .http_payload()
                    .map(|b| {
                        String::from_utf8_lossy(b)
                            .chars()
                            .take(500)
                            .collect::<String>()
                    })
                    .unwrap_or_default();
                BqError::new("", &body, None)
            }
        };
        ApiFailure::Status {
            status: status_code,
            error,
            retry_after,
        }
    } else if err.is_authentication() {
        let transient = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<google_cloud_gax::error::CredentialsError>())
            .is_some_and(|c| c.is_transient());
        ApiFailure::Auth {
            message: format!("{err}"),
            transient,
        }
    } else if err.is_io() || err.is_connect() || err.is_timeout() || err.is_transport() {
        ApiFailure::Transport(sluice_runtime::error_chain(&err))
    } else {
        ApiFailure::Other(sluice_runtime::error_chain(&err))
    };
    ApiError { call, failure }
}

/// The BigQuery client for one run.
#[derive(Clone, Debug)]
pub(crate) struct BigQuery {
    jobs: JobService,
    datasets: DatasetService,
    tables: TableService,
}

macro_rules! build_service {
    ($service:ty, $config:expr) => {{
        let mut builder = <$service>::builder().with_retry_policy(NeverRetry);
        if let Some(endpoint) = &$config.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        if $config.credentials == Credentials::Anonymous {
            builder = builder.with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        }
        builder.build().await.map_err(|e| ApiError {
            call: format!("create {} client", stringify!($service)),
            failure: ApiFailure::Other(sluice_runtime::error_chain(&e)),
        })?
    }};
}

impl BigQuery {
    pub(crate) async fn new(config: &ClientConfig) -> Result<BigQuery, ApiError> {
        Ok(BigQuery {
            jobs: build_service!(JobService, config),
            datasets: build_service!(DatasetService, config),
            tables: build_service!(TableService, config),
        })
    }

    /// `jobs.insert`. A 409 means a job with this id exists already (see [`ApiError::is_conflict`]).
    pub(crate) async fn insert_job(
        &self,
        project: &str,
        job: model::Job,
    ) -> Result<model::Job, ApiError> {
        let id = job
            .job_reference
            .as_ref()
            .map(|r| r.job_id.clone())
            .unwrap_or_default();
        self.jobs
            .insert_job()
            .set_project_id(project)
            .set_job(job)
            .send()
            .await
            .map_err(|e| convert_error(format!("jobs.insert {project}:{id}"), e))
    }

    /// `jobs.get`. `location` is required by BigQuery for jobs outside the US and EU multi-regions.
    pub(crate) async fn get_job(
        &self,
        project: &str,
        job_id: &str,
        location: Option<&str>,
    ) -> Result<model::Job, ApiError> {
        let mut request = self
            .jobs
            .get_job()
            .set_project_id(project)
            .set_job_id(job_id);
        if let Some(location) = location {
            request = request.set_location(location);
        }
        request
            .send()
            .await
            .map_err(|e| convert_error(format!("jobs.get {project}:{job_id}"), e))
    }

    /// `datasets.get`; `None` when it does not exist.
    pub(crate) async fn get_dataset(
        &self,
        project: &str,
        dataset: &str,
    ) -> Result<Option<model::Dataset>, ApiError> {
        match self
            .datasets
            .get_dataset()
            .set_project_id(project)
            .set_dataset_id(dataset)
            .send()
            .await
        {
            Ok(d) => Ok(Some(d)),
            Err(e) => {
                let err = convert_error(format!("datasets.get {project}:{dataset}"), e);
                if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// `datasets.insert` in `location`. A 409 means it exists already.
    pub(crate) async fn insert_dataset(
        &self,
        project: &str,
        dataset: &str,
        location: &str,
    ) -> Result<model::Dataset, ApiError> {
        let body = model::Dataset::new()
            .set_dataset_reference(
                model::DatasetReference::new()
                    .set_project_id(project)
                    .set_dataset_id(dataset),
            )
            .set_location(location);
        self.datasets
            .insert_dataset()
            .set_project_id(project)
            .set_dataset(body)
            .send()
            .await
            .map_err(|e| convert_error(format!("datasets.insert {project}:{dataset}"), e))
    }

    /// `tables.get`; `None` when it does not exist.
    pub(crate) async fn get_table(
        &self,
        table: &TableRef,
    ) -> Result<Option<model::Table>, ApiError> {
        match self
            .tables
            .get_table()
            .set_project_id(&table.project)
            .set_dataset_id(&table.dataset)
            .set_table_id(&table.table)
            .send()
            .await
        {
            Ok(t) => Ok(Some(t)),
            Err(e) => {
                let err = convert_error(format!("tables.get {}", table.base()), e);
                if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// `tables.insert`. A 409 means it exists already.
    pub(crate) async fn insert_table(
        &self,
        table: &TableRef,
        body: model::Table,
    ) -> Result<model::Table, ApiError> {
        self.tables
            .insert_table()
            .set_project_id(&table.project)
            .set_dataset_id(&table.dataset)
            .set_table(body)
            .send()
            .await
            .map_err(|e| convert_error(format!("tables.insert {}", table.base()), e))
    }

    /// `jobs.query`: a read-only query, answered within `timeout_ms` when it finishes by then
    /// (else `jobComplete` is false and [`BigQuery::get_query_results`] follows it).
    pub(crate) async fn query(
        &self,
        project: &str,
        sql: &str,
        location: Option<&str>,
        timeout_ms: u32,
    ) -> Result<model::QueryResponse, ApiError> {
        let mut request = model::QueryRequest::new()
            .set_query(sql)
            .set_use_legacy_sql(false)
            .set_timeout_ms(timeout_ms);
        if let Some(location) = location {
            request = request.set_location(location);
        }
        self.jobs
            .query()
            .set_project_id(project)
            .set_query_request(request)
            .send()
            .await
            .map_err(|e| convert_error(format!("jobs.query {project}"), e))
    }

    /// `jobs.getQueryResults` of a query [`BigQuery::query`] left running.
    pub(crate) async fn get_query_results(
        &self,
        project: &str,
        job_id: &str,
        location: Option<&str>,
        timeout_ms: u32,
    ) -> Result<model::GetQueryResultsResponse, ApiError> {
        let mut request = self
            .jobs
            .get_query_results()
            .set_project_id(project)
            .set_job_id(job_id)
            .set_timeout_ms(timeout_ms);
        if let Some(location) = location {
            request = request.set_location(location);
        }
        request
            .send()
            .await
            .map_err(|e| convert_error(format!("jobs.getQueryResults {project}:{job_id}"), e))
    }

    /// `tables.delete`; `false` when there was no such table (404 is an answer, not an error).
    pub(crate) async fn delete_table(&self, table: &TableRef) -> Result<bool, ApiError> {
        match self
            .tables
            .delete_table()
            .set_project_id(&table.project)
            .set_dataset_id(&table.dataset)
            .set_table_id(&table.table)
            .send()
            .await
        {
            Ok(()) => Ok(true),
            Err(e) => {
                let err = convert_error(format!("tables.delete {}", table.base()), e);
                if err.is_not_found() {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn status(code: u16, reason: &str, retry_after: Option<&str>) -> ApiError {
        ApiError {
            call: "jobs.insert p:j".into(),
            failure: ApiFailure::Status {
                status: code,
                error: BqError::new(reason, "m", None),
                retry_after: retry_after.map(str::to_string),
            },
        }
    }

    #[test]
    fn retry_decisions_follow_reason_then_status() {
        assert_eq!(
            status(403, "rateLimitExceeded", None).retry_decision(),
            RetryDecision::Retry
        );
        assert_eq!(
            status(403, "quotaExceeded", None).retry_decision(),
            RetryDecision::Stop
        );
        assert_eq!(
            status(403, "accessDenied", None).retry_decision(),
            RetryDecision::Stop
        );
        assert_eq!(
            status(400, "invalid", None).retry_decision(),
            RetryDecision::Stop
        );
        assert_eq!(
            status(409, "duplicate", None).retry_decision(),
            RetryDecision::Stop
        );
        assert_eq!(
            status(404, "notFound", None).retry_decision(),
            RetryDecision::Stop
        );
        assert_eq!(
            status(500, "backendError", None).retry_decision(),
            RetryDecision::Retry
        );
        assert_eq!(status(502, "", None).retry_decision(), RetryDecision::Retry);
        assert_eq!(
            status(503, "", Some("7")).retry_decision(),
            RetryDecision::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(
            status(429, "rateLimitExceeded", Some("3")).retry_decision(),
            RetryDecision::RetryAfter(Duration::from_secs(3))
        );
        let transport = ApiError {
            call: "x".into(),
            failure: ApiFailure::Transport("reset".into()),
        };
        assert_eq!(transport.retry_decision(), RetryDecision::Retry);
    }

    #[test]
    fn display_names_call_status_and_bigquery_error() {
        let e = ApiError {
            call: "jobs.insert p:j".into(),
            failure: ApiFailure::Status {
                status: 400,
                error: BqError::new("invalid", "Bad field", Some("configuration.load.schema")),
                retry_after: None,
            },
        };
        assert_eq!(
            e.to_string(),
            "jobs.insert p:j: HTTP 400: invalid: Bad field (location: configuration.load.schema)"
        );
    }

    #[test]
    fn emulator_host_forms() {
        assert_eq!(
            ClientConfig::emulator("127.0.0.1:9050").endpoint.as_deref(),
            Some("http://127.0.0.1:9050")
        );
        assert_eq!(
            ClientConfig::emulator("http://localhost:1/")
                .endpoint
                .as_deref(),
            Some("http://localhost:1")
        );
        assert_eq!(
            ClientConfig::emulator("x:1").credentials,
            Credentials::Anonymous
        );
    }
}
