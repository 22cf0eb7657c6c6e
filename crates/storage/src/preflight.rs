//! Setup checks run when a task starts, before any work: can we get Google credentials, and
//! does the bucket exist? A missing bucket or no credentials at all are the user's to fix, so
//! they surface as [`StorageError::Setup`] (the binaries exit 2, Cloud Run does not retry) within
//! seconds, instead of as minutes of retries ending in exit 1.
//!
//! The hard part is telling "no credentials here" from "the metadata server hiccuped". The
//! `google-cloud-auth` crate marks both a refused connection to the metadata server and a 5xx
//! from it as transient (`CredentialsError::is_transient`), so the classification is ours:
//!
//! | situation | outcome |
//! |---|---|
//! | credentials file (GOOGLE_APPLICATION_CREDENTIALS / gcloud ADC) unreadable or refused (non-transient) | setup error |
//! | no credentials file, metadata server unreachable (DNS fails, connection refused, no answer in time), not on Cloud Run | setup error |
//! | metadata server answered with an error status, or on Cloud Run | transient: `Io` (exit 1, retried) |
//! | credentials file present, token endpoint unreachable | transient |
//!
//! The library reads no environment: the binary says whether it runs on Cloud Run and which ADC
//! file (if any) the credentials come from ([`CredentialSetup`]).

use std::path::PathBuf;
use std::time::Duration;

use google_cloud_auth::credentials::Credentials;

use crate::StorageError;

/// How long a metadata server may take to answer the probe off Cloud Run. Google's own clients
/// give the "am I on GCE" check a few seconds; an absent server fails faster (DNS, refusal).
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// On Cloud Run the metadata server exists; a slow answer is a hiccup, given more time.
pub(crate) const CLOUD_RUN_PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Probe attempts when the answer was a transient error (a server that answered 5xx).
const PROBE_ATTEMPTS: u32 = 3;

/// What the binary knows about where Application Default Credentials come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialSetup {
    /// Running as a Cloud Run task (`CLOUD_RUN_JOB` set): the metadata server is there, so any
    /// failure to reach it is transient.
    pub on_cloud_run: bool,
    /// The ADC file in use: `GOOGLE_APPLICATION_CREDENTIALS`, or gcloud's
    /// `application_default_credentials.json` when it exists. `None`: the metadata server.
    pub adc_file: Option<PathBuf>,
}

/// The fix for "no credentials", named in every such error.
pub(crate) const CREDENTIALS_FIX: &str = "set GOOGLE_APPLICATION_CREDENTIALS to a service account key \
     file, run `gcloud auth application-default login`, or point STORAGE_EMULATOR_HOST / \
     BIGQUERY_EMULATOR_HOST at emulators";

/// Builds Application Default Credentials; a failure (an unreadable or malformed key file) is a
/// setup error naming `target`.
pub fn adc_credentials(target: &str, setup: &CredentialSetup) -> Result<Credentials, StorageError> {
    google_cloud_auth::credentials::Builder::default()
        .build()
        .map_err(|e| StorageError::Setup {
            url: target.to_string(),
            problem: format!(
                "cannot load Google credentials{}: {e}; {CREDENTIALS_FIX}",
                describe_file(setup)
            ),
        })
}

fn describe_file(setup: &CredentialSetup) -> String {
    match &setup.adc_file {
        Some(path) => format!(" from {}", path.display()),
        None => String::new(),
    }
}

/// Gets one token (or header set) from `credentials` and classifies a failure (see the module
/// docs). `target` names what the credentials are for (`gs://bucket`, `BigQuery`).
pub async fn probe_credentials(
    credentials: &Credentials,
    target: &str,
    setup: &CredentialSetup,
) -> Result<(), StorageError> {
    let timeout = if setup.on_cloud_run {
        CLOUD_RUN_PROBE_TIMEOUT
    } else {
        PROBE_TIMEOUT
    };
    let mut attempt = 1;
    loop {
        let outcome =
            tokio::time::timeout(timeout, credentials.headers(http::Extensions::new())).await;
        let failure = match outcome {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => Failure::from_error(e),
            Err(_) => Failure::TimedOut(timeout),
        };
        match classify(&failure, setup) {
            Class::Setup => {
                return Err(StorageError::Setup {
                    url: target.to_string(),
                    problem: setup_message(&failure, setup),
                });
            }
            Class::Transient if attempt < PROBE_ATTEMPTS => {
                tracing::warn!(
                    target,
                    attempt,
                    "getting Google credentials failed, retrying: {failure}"
                );
                tokio::time::sleep(Duration::from_millis(500) * attempt).await;
                attempt += 1;
            }
            Class::Transient => {
                return Err(StorageError::Io {
                    url: target.to_string(),
                    operation: "get credentials",
                    source: format!("{failure} (transient; gave up after {attempt} attempts)")
                        .into(),
                });
            }
        }
    }
}

#[derive(Debug)]
enum Failure {
    /// The credentials source refused for good (bad key file, revoked grant, no service account).
    Permanent(String),
    /// The token endpoint / metadata server could not be reached (DNS or connect failure).
    Unreachable(String),
    /// It answered, with an error worth retrying (5xx, 429), or a transport error mid-answer.
    Answered(String),
    TimedOut(Duration),
}

impl Failure {
    fn from_error(e: google_cloud_auth::errors::CredentialsError) -> Failure {
        if !e.is_transient() {
            return Failure::Permanent(sluice_runtime::error_chain(&e));
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if let Some(r) = s.downcast_ref::<reqwest::Error>()
                && (r.is_connect() || (r.is_timeout() && r.status().is_none()))
            {
                // The auth crate's nested messages repeat themselves; the request's URL and
                // its innermost cause say it all (`metadata.google.internal`: dns error ...).
                let url = r
                    .url()
                    .map(|u| format!("{}: ", u.origin().ascii_serialization()));
                return Failure::Unreachable(format!(
                    "{}{}",
                    url.unwrap_or_default(),
                    root_cause(r)
                ));
            }
            source = s.source();
        }
        Failure::Answered(root_cause(&e))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Permanent(t) | Failure::Unreachable(t) | Failure::Answered(t) => {
                f.write_str(t)
            }
            Failure::TimedOut(d) => write!(f, "no answer within {} s", d.as_secs()),
        }
    }
}

enum Class {
    Setup,
    Transient,
}

fn classify(failure: &Failure, setup: &CredentialSetup) -> Class {
    match failure {
        Failure::Permanent(_) => Class::Setup,
        // Off Cloud Run with no credentials file, the only source left is a metadata server,
        // and there is none: that is missing setup, not a hiccup.
        Failure::Unreachable(_) | Failure::TimedOut(_)
            if !setup.on_cloud_run && setup.adc_file.is_none() =>
        {
            Class::Setup
        }
        _ => Class::Transient,
    }
}

fn setup_message(failure: &Failure, setup: &CredentialSetup) -> String {
    match (failure, &setup.adc_file) {
        (Failure::Permanent(text), Some(path)) => format!(
            "the Google credentials in {} were refused: {text}; {CREDENTIALS_FIX}",
            path.display()
        ),
        (Failure::Permanent(text), None) => {
            format!("no usable Google credentials: {text}; {CREDENTIALS_FIX}")
        }
        (failure, _) => format!(
            "no Google credentials: GOOGLE_APPLICATION_CREDENTIALS is not set, there is no gcloud \
             application-default credentials file, and no metadata server answered ({failure}); \
             {CREDENTIALS_FIX}"
        ),
    }
}

/// The innermost cause's message.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string().replace('\n', " ")
}

/// The one-line fix for a missing bucket.
pub(crate) fn missing_bucket_problem(bucket: &str) -> String {
    format!(
        "bucket gs://{bucket} does not exist; create it with `gcloud storage buckets create \
         gs://{bucket} --location LOCATION` or fix the URL"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_needs_no_file_and_no_cloud_run_for_setup() {
        let local = CredentialSetup::default();
        let cloud_run = CredentialSetup {
            on_cloud_run: true,
            adc_file: None,
        };
        let with_file = CredentialSetup {
            on_cloud_run: false,
            adc_file: Some("/k.json".into()),
        };
        let unreachable = Failure::Unreachable("refused".into());
        let timed_out = Failure::TimedOut(PROBE_TIMEOUT);
        let answered = Failure::Answered("HTTP 500".into());
        let permanent = Failure::Permanent("invalid_grant".into());
        assert!(matches!(classify(&unreachable, &local), Class::Setup));
        assert!(matches!(classify(&timed_out, &local), Class::Setup));
        assert!(matches!(classify(&answered, &local), Class::Transient));
        assert!(matches!(
            classify(&unreachable, &cloud_run),
            Class::Transient
        ));
        assert!(matches!(classify(&timed_out, &cloud_run), Class::Transient));
        assert!(matches!(
            classify(&unreachable, &with_file),
            Class::Transient
        ));
        assert!(matches!(classify(&permanent, &with_file), Class::Setup));
        assert!(matches!(classify(&permanent, &cloud_run), Class::Setup));
        let message = setup_message(&unreachable, &local);
        for needle in [
            "GOOGLE_APPLICATION_CREDENTIALS",
            "gcloud auth application-default login",
            "STORAGE_EMULATOR_HOST",
            "BIGQUERY_EMULATOR_HOST",
        ] {
            assert!(message.contains(needle), "{message}");
        }
    }
}
