//! BigQuery's error vocabulary (`ErrorProto`: reason, message, location) and which reasons are
//! worth another attempt. The lowest layer of the crate: the client speaks it, and so do the
//! load errors.

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
    pub(crate) fn new(reason: &str, message: &str, location: Option<&str>) -> BqError {
        BqError {
            reason: reason.to_string(),
            message: message.to_string(),
            location: location.filter(|l| !l.is_empty()).map(str::to_string),
        }
    }

    pub(crate) fn class(&self) -> ErrorClass {
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
const TRANSIENT_REASONS: &[&str] = &[
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
pub(crate) fn classify_reason(reason: &str) -> ErrorClass {
    if TRANSIENT_REASONS.contains(&reason) {
        ErrorClass::Transient
    } else {
        ErrorClass::Terminal
    }
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
}
