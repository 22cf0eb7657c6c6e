//! BigQuery's error vocabulary (`ErrorProto`: reason, message, location) and which reasons are
//! worth another attempt.

use std::fmt;

/// One BigQuery `ErrorProto`: what a failed job's `status.errorResult` (and each entry of
/// `status.errors`) or an HTTP error's `error.errors[]` carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BqError {
    /// Machine-readable reason (`invalid`, `notFound`, `backendError`, ...).
    pub reason: String,
    pub message: String,
    /// Where: a source URI and line, a column, a field of the request.
    pub location: Option<String>,
}

impl BqError {
    pub fn new(reason: &str, message: &str, location: Option<&str>) -> BqError {
        BqError {
            reason: reason.to_string(),
            message: message.to_string(),
            location: location.filter(|l| !l.is_empty()).map(str::to_string),
        }
    }

    pub fn class(&self) -> ErrorClass {
        classify_reason(&self.reason)
    }
}

impl fmt::Display for BqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = if self.reason.is_empty() {
            "unknown"
        } else {
            &self.reason
        };
        write!(f, "{reason}: {}", self.message)?;
        if let Some(location) = &self.location {
            write!(f, " (location: {location})")?;
        }
        Ok(())
    }
}

/// Whether a failure is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// BigQuery-side trouble that a later attempt usually does not meet.
    Transient,
    /// The request, the data, permissions or quota: the same job would fail the same way.
    Terminal,
}

/// BigQuery error reasons that a new attempt can get past
/// (<https://cloud.google.com/bigquery/docs/error-messages>).
pub const TRANSIENT_REASONS: &[&str] = &[
    "backendError",
    "internalError",
    "jobBackendError",
    "jobInternalError",
    "rateLimitExceeded",
    "tableUnavailable",
    "resourceInUse",
    "timeout",
];

/// Classifies a reason. Everything not listed in [`TRANSIENT_REASONS`] is terminal, including
/// unknown reasons (a loop on an error we do not understand is worse than a clear failure) and
/// `quotaExceeded`: its quotas are daily or per-project (load jobs per table per day, bytes per
/// day), which a retry within the task's lifetime cannot get past; the short-term limits come
/// as `rateLimitExceeded` and are retried. `stopped` (someone cancelled the job) is terminal
/// too: resubmitting would overrule a person.
pub fn classify_reason(reason: &str) -> ErrorClass {
    if TRANSIENT_REASONS.contains(&reason) {
        ErrorClass::Transient
    } else {
        ErrorClass::Terminal
    }
}

/// Why a load task (or one of its jobs) failed. Every variant names what it failed on.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Listing, heading or reading an object.
    #[error(transparent)]
    Storage(#[from] sluice_storage::StorageError),
    /// The input as a whole (nothing matched, duplicate listings, ...).
    #[error("{0}")]
    Input(String),
    #[error("manifest {url}: {reason}")]
    Manifest { url: String, reason: String },
    #[error("{url} is listed in manifest {manifest} but does not exist")]
    MissingObject { url: String, manifest: String },
    #[error(
        "{url} changed since manifest {manifest} listed it (generation {expected} there, {actual} now)"
    )]
    ObjectChanged {
        url: String,
        manifest: String,
        expected: i64,
        actual: i64,
    },
    /// Not a readable Parquet file.
    #[error("{url}: cannot read the Parquet footer: {reason}")]
    Footer { url: String, reason: String },
    /// A column whose type cannot be loaded.
    #[error("{url}: {source}")]
    Column {
        url: String,
        source: crate::schema::ColumnError,
    },
    #[error(
        "table {table}: the files of one load job must have the same schema; {file} differs from {first} at column `{column}`: {detail}"
    )]
    SchemaMismatch {
        table: String,
        first: String,
        file: String,
        column: String,
        detail: String,
    },
    /// The files do not fit the existing table (checked before any job is created).
    #[error("{0}")]
    TypeMismatch(Box<TypeMismatch>),
    #[error("{object}: cannot fill table template {template}: {reason}")]
    Template {
        object: String,
        template: String,
        reason: String,
    },
    #[error("table {table}: {reason}")]
    Table { table: String, reason: String },
    /// An API call that failed for good (after its retries).
    #[error("{context}: {source}")]
    Api {
        context: String,
        source: Box<crate::client::ApiError>,
    },
    /// The load job ran and BigQuery reports it failed.
    #[error("{0}")]
    JobFailed(Box<JobFailure>),
    #[error(
        "stopped by a shutdown signal; jobs already submitted keep running in BigQuery and a retry follows them by id"
    )]
    Cancelled,
    /// Several items failed; each entry names its table.
    #[error("{} of {total} load job(s) failed:\n  {}", .failures.len(), .failures.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("\n  "))]
    Failed {
        failures: Vec<LoadError>,
        total: usize,
    },
}

/// A job's files whose schema does not fit the existing table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "table {table}: column `{column}` is {file_type} in {file} but {table_type} in the table; {hint}. Nothing was loaded"
)]
pub struct TypeMismatch {
    pub table: String,
    /// The first file of the job (all of its files share one schema), with a count of the others.
    pub file: String,
    pub column: String,
    pub file_type: String,
    pub table_type: String,
    pub hint: String,
}

/// A load job that ran and failed, as BigQuery reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    pub table: String,
    /// `project:location.job_id`, the form the console and `bq show -j` take.
    pub job_id: String,
    /// `status.errorResult`.
    pub error: BqError,
    /// `status.errors`: per-file / per-row details (first few).
    pub errors: Vec<BqError>,
    pub class: ErrorClass,
}

impl fmt::Display for JobFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe_job_failure(
            &self.table,
            &self.job_id,
            &self.error,
            &self.errors,
            self.class,
        ))
    }
}

/// How many `status.errors` entries a failure message quotes.
pub const QUOTED_ERRORS: usize = 5;

fn describe_job_failure(
    table: &str,
    job_id: &str,
    error: &BqError,
    errors: &[BqError],
    class: ErrorClass,
) -> String {
    let kind = match class {
        ErrorClass::Transient => "transient",
        ErrorClass::Terminal => "terminal",
    };
    let mut out = format!("load job {job_id} into {table} failed ({kind}): {error}");
    let details: Vec<String> = errors
        .iter()
        .filter(|e| *e != error)
        .take(QUOTED_ERRORS)
        .map(|e| e.to_string())
        .collect();
    if !details.is_empty() {
        out.push_str("; errors: ");
        out.push_str(&details.join("; "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        for r in [
            "backendError",
            "rateLimitExceeded",
            "internalError",
            "jobBackendError",
        ] {
            assert_eq!(classify_reason(r), ErrorClass::Transient, "{r}");
        }
        for r in [
            "invalid",
            "invalidQuery",
            "notFound",
            "duplicate",
            "accessDenied",
            "quotaExceeded",
            "stopped",
            "somethingNew",
            "",
        ] {
            assert_eq!(classify_reason(r), ErrorClass::Terminal, "{r}");
        }
    }

    #[test]
    fn display_carries_reason_message_location() {
        let e = BqError::new("invalid", "Too many errors", Some("gs://b/a.csv"));
        assert_eq!(
            e.to_string(),
            "invalid: Too many errors (location: gs://b/a.csv)"
        );
        let e = BqError::new("", "boom", Some(""));
        assert_eq!(e.to_string(), "unknown: boom");
    }

    #[test]
    fn job_failure_names_table_job_reason_message_location() {
        let top = BqError::new("invalid", "Too many errors", Some("gs://b/a.csv"));
        let row = BqError::new("invalid", "Bad int", Some("gs://b/a.csv:line 3"));
        let e = LoadError::JobFailed(Box::new(JobFailure {
            table: "p.ds.t".into(),
            job_id: "p:US.sluice_load_x".into(),
            error: top.clone(),
            errors: vec![top, row],
            class: ErrorClass::Terminal,
        }));
        assert_eq!(
            e.to_string(),
            "load job p:US.sluice_load_x into p.ds.t failed (terminal): invalid: Too many errors \
             (location: gs://b/a.csv); errors: invalid: Bad int (location: gs://b/a.csv:line 3)"
        );
    }
}
