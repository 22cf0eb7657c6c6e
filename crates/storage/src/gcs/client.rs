//! The small JSON-API client behind the GCS backend: auth headers from `google-cloud-auth`,
//! requests over reqwest (the same stack the official crates use), retries by
//! [`sluice_runtime::RetryPolicy`], and error mapping onto [`StorageError`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use google_cloud_auth::credentials::{CacheableResource, Credentials};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use sluice_runtime::retry::{RetryError, classify_http_status};
use sluice_runtime::{RetryDecision, RetryPolicy};
use tokio_util::sync::CancellationToken;

use crate::{ObjectMeta, StorageError};

/// Why one HTTP attempt failed. Kept whole so the retry classifier and the final error message
/// both see the status and what the server said.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server answered with an unexpected status.
    Status {
        status: u16,
        retry_after: Option<String>,
        /// `error.message` from a JSON error body, or the start of the raw body.
        message: String,
    },
    /// No usable answer: connect/reset/timeout/body errors.
    Transport(reqwest::Error),
    /// Getting a token failed.
    Auth(google_cloud_auth::errors::CredentialsError),
    /// The server answered, but not in a way the protocol allows.
    Protocol(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status {
                status, message, ..
            } => write!(f, "HTTP {status}: {message}"),
            Failure::Transport(e) => {
                write!(f, "{e}")?;
                // reqwest's top-level message hides the cause (e.g. "connection refused").
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
            Failure::Auth(e) => write!(f, "getting credentials: {e}"),
            Failure::Protocol(msg) => write!(f, "protocol error: {msg}"),
        }
    }
}

impl std::error::Error for Failure {}

impl Failure {
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            Failure::Status { message, .. } => message,
            _ => "",
        }
    }
}

/// Transient: 408/429/5xx (per the shared classifier), transport failures (resets, timeouts,
/// refused connections) and transient credential errors. Everything else is permanent.
pub(crate) fn classify(failure: &Failure) -> RetryDecision {
    match failure {
        Failure::Status {
            status,
            retry_after,
            ..
        } => classify_http_status(*status, retry_after.as_deref()),
        Failure::Transport(e) if e.is_builder() || e.is_redirect() || e.is_decode() => {
            RetryDecision::Stop
        }
        Failure::Transport(_) => RetryDecision::Retry,
        Failure::Auth(e) if e.is_transient() => RetryDecision::Retry,
        Failure::Auth(_) | Failure::Protocol(_) => RetryDecision::Stop,
    }
}

/// The object resource of the JSON API (the fields Sluice uses).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectResource {
    pub name: String,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub generation: Option<String>,
    #[serde(default)]
    pub metageneration: Option<String>,
    #[serde(default)]
    pub crc32c: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, Option<String>>>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub updated: Option<String>,
}

impl ObjectResource {
    pub(crate) fn generation(&self) -> Option<i64> {
        self.generation.as_deref().and_then(|g| g.parse().ok())
    }

    pub(crate) fn metageneration(&self) -> Option<i64> {
        self.metageneration.as_deref().and_then(|g| g.parse().ok())
    }

    /// Whether the object's custom metadata holds every entry of `wanted` (others may exist).
    pub(crate) fn has_metadata(&self, wanted: &BTreeMap<String, String>) -> bool {
        let have = self.metadata.as_ref();
        wanted.iter().all(|(k, v)| {
            have.and_then(|m| m.get(k))
                .is_some_and(|have| have.as_deref() == Some(v.as_str()))
        })
    }

    pub(crate) fn size(&self) -> Option<u64> {
        self.size.as_deref().and_then(|s| s.parse().ok())
    }

    pub(crate) fn crc32c(&self) -> Option<u32> {
        self.crc32c.as_deref().and_then(crate::crc::from_base64)
    }

    pub(crate) fn into_meta(self) -> ObjectMeta {
        ObjectMeta {
            size: self.size().unwrap_or(0),
            generation: self.generation(),
            crc32c: self.crc32c(),
            metadata: self
                .metadata
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect(),
            content_type: self.content_type,
            updated: self
                .updated
                .as_deref()
                .and_then(|u| chrono::DateTime::parse_from_rfc3339(u).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
            key: self.name,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    #[serde(default)]
    items: Vec<ObjectResource>,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// Percent-encodes an object name for use as one path segment (`/` included).
pub(crate) fn encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) struct Client {
    pub http: reqwest::Client,
    /// `https://storage.googleapis.com` or the emulator's `http://host:port`; no trailing `/`.
    pub endpoint: String,
    pub credentials: Credentials,
    pub retry: RetryPolicy,
    pub cancel: CancellationToken,
    pub json_timeout: Duration,
    pub upload_timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Reads a failed response into a [`Failure::Status`] (bounded: error bodies are small, and
/// only the first KiB is kept for the message).
pub(crate) async fn status_failure(response: Response) -> Failure {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.unwrap_or_default();
    #[derive(Deserialize)]
    struct ErrorBody {
        error: ErrorDetail,
    }
    #[derive(Deserialize)]
    struct ErrorDetail {
        #[serde(default)]
        message: String,
    }
    let message = match serde_json::from_str::<ErrorBody>(&body) {
        Ok(e) if !e.error.message.is_empty() => e.error.message,
        _ => body
            .chars()
            .take(1024)
            .collect::<String>()
            .trim()
            .to_string(),
    };
    let message = if message.is_empty() {
        StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
            .to_string()
    } else {
        message
    };
    Failure::Status {
        status,
        retry_after,
        message,
    }
}

/// Maps the end of a retried operation onto the public error type, naming `url` and `operation`.
pub(crate) fn to_storage_error(
    err: RetryError<Failure>,
    url: &str,
    operation: &'static str,
) -> StorageError {
    match err {
        RetryError::Cancelled { .. } => StorageError::Cancelled {
            url: url.to_string(),
            operation,
        },
        RetryError::Exhausted { source, attempts } => {
            failure_to_storage_error(source, attempts, url, operation)
        }
    }
}

pub(crate) fn failure_to_storage_error(
    failure: Failure,
    attempts: u32,
    url: &str,
    operation: &'static str,
) -> StorageError {
    match failure.status() {
        Some(404) => StorageError::NotFound {
            url: url.to_string(),
        },
        _ => {
            let source: Box<dyn std::error::Error + Send + Sync> = if attempts > 1 {
                format!("{failure} (gave up after {attempts} attempts)").into()
            } else {
                Box::new(failure)
            };
            StorageError::Io {
                url: url.to_string(),
                operation,
                source,
            }
        }
    }
}

impl Client {
    pub(crate) fn object_url(&self, bucket: &str, name: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint,
            encode_segment(bucket),
            encode_segment(name)
        )
    }

    pub(crate) fn upload_url(&self, bucket: &str) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o",
            self.endpoint,
            encode_segment(bucket)
        )
    }

    /// Adds the credentials' headers (none for anonymous credentials).
    pub(crate) async fn authorize(
        &self,
        builder: RequestBuilder,
    ) -> Result<RequestBuilder, Failure> {
        match self
            .credentials
            .headers(http::Extensions::new())
            .await
            .map_err(Failure::Auth)?
        {
            CacheableResource::New { data, .. } => Ok(builder.headers(data)),
            // Only returned when the caller passed an entity tag, which we never do.
            CacheableResource::NotModified => Ok(builder),
        }
    }

    /// One attempt: sends the request, returns the response if its status is 2xx or `accept`s,
    /// else a [`Failure`].
    pub(crate) async fn send(
        &self,
        builder: RequestBuilder,
        accept: &[u16],
    ) -> Result<Response, Failure> {
        let response = self
            .authorize(builder)
            .await?
            .send()
            .await
            .map_err(Failure::Transport)?;
        let status = response.status();
        if status.is_success() || accept.contains(&status.as_u16()) {
            Ok(response)
        } else {
            Err(status_failure(response).await)
        }
    }

    pub(crate) async fn json<T: serde::de::DeserializeOwned>(
        response: Response,
    ) -> Result<T, Failure> {
        let body = response.bytes().await.map_err(Failure::Transport)?;
        serde_json::from_slice(&body).map_err(|e| {
            Failure::Protocol(format!(
                "unparseable JSON response ({e}): {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ))
        })
    }

    /// Runs `attempt` under the retry policy, stopping on `cancel`.
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        cancel: &CancellationToken,
        attempt: F,
    ) -> Result<T, RetryError<Failure>>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        self.retry.run(what, cancel, attempt, classify).await
    }

    /// `GET` of one object's resource; `None` when the object (or bucket) does not exist.
    pub(crate) async fn get_object(
        &self,
        bucket: &str,
        name: &str,
        gs_url: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<ObjectResource>, StorageError> {
        let url = self.object_url(bucket, name);
        self.retrying("GCS get object metadata", cancel, |_| async {
            let req = self
                .http
                .request(Method::GET, &url)
                .timeout(self.json_timeout);
            let response = self.send(req, &[404]).await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            Self::json(response).await.map(Some)
        })
        .await
        .map_err(|e| to_storage_error(e, gs_url, "get metadata"))
    }

    /// `GET` of the bucket resource: 404 is a setup error naming the fix, 401 too (credentials
    /// refused); 403 passes (see [`super::GcsStore::preflight`]); the rest is retried as usual.
    pub(crate) async fn check_bucket(
        &self,
        bucket: &str,
        gs_url: &str,
    ) -> Result<(), StorageError> {
        let url = format!("{}/storage/v1/b/{}", self.endpoint, encode_segment(bucket));
        let status = self
            .retrying("GCS get bucket", &self.cancel, |_| async {
                let req = self
                    .http
                    .request(Method::GET, &url)
                    .query(&[("fields", "name")])
                    .timeout(self.json_timeout);
                self.send(req, &[401, 403, 404]).await.map(|r| r.status())
            })
            .await
            .map_err(|e| to_storage_error(e, gs_url, "check bucket"))?;
        match status.as_u16() {
            404 => Err(StorageError::Setup {
                url: gs_url.to_string(),
                problem: crate::preflight::missing_bucket_problem(bucket),
            }),
            401 => Err(StorageError::Setup {
                url: gs_url.to_string(),
                problem: format!(
                    "Cloud Storage refused the credentials (HTTP 401); {}",
                    crate::preflight::CREDENTIALS_FIX
                ),
            }),
            403 => {
                tracing::debug!(
                    bucket,
                    "no permission to read the bucket's metadata; going on"
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `PATCH` of an object's resource (`objects.patch`: only the fields in `body` change;
    /// `metadata` keys are merged) under `preconditions` (`ifGenerationMatch`, ...). Returns
    /// the retry outcome as is, so the caller can tell a 412 after a lost response.
    pub(crate) async fn patch_object(
        &self,
        bucket: &str,
        name: &str,
        body: &serde_json::Value,
        preconditions: &[(&str, String)],
        cancel: &CancellationToken,
    ) -> Result<ObjectResource, RetryError<Failure>> {
        let url = self.object_url(bucket, name);
        let body = body.to_string();
        self.retrying("GCS patch object metadata", cancel, |_| async {
            let req = self
                .http
                .request(Method::PATCH, &url)
                .query(preconditions)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/json; charset=UTF-8",
                )
                .body(body.clone())
                .timeout(self.json_timeout);
            Self::json(self.send(req, &[]).await?).await
        })
        .await
    }

    /// Every object under `prefix` (recursive, all pages).
    pub(crate) async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        gs_url: &str,
    ) -> Result<Vec<ObjectResource>, StorageError> {
        let url = format!(
            "{}/storage/v1/b/{}/o",
            self.endpoint,
            encode_segment(bucket)
        );
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page: ListPage = self
                .retrying("GCS list objects", &self.cancel, |_| async {
                    let mut query: Vec<(&str, &str)> = vec![("maxResults", "1000")];
                    if !prefix.is_empty() {
                        query.push(("prefix", prefix));
                    }
                    if let Some(t) = token.as_deref() {
                        query.push(("pageToken", t));
                    }
                    let req = self
                        .http
                        .request(Method::GET, &url)
                        .query(&query)
                        .timeout(self.json_timeout);
                    Self::json(self.send(req, &[]).await?).await
                })
                .await
                .map_err(|e| to_storage_error(e, gs_url, "list"))?;
            out.extend(page.items);
            match page.next_page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }

    /// `DELETE` of an object (of one generation when given); absent is not an error.
    pub(crate) async fn delete_object(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
        gs_url: &str,
        cancel: &CancellationToken,
    ) -> Result<(), StorageError> {
        let url = self.object_url(bucket, name);
        self.retrying("GCS delete object", cancel, |_| async {
            let mut req = self
                .http
                .request(Method::DELETE, &url)
                .timeout(self.json_timeout);
            if let Some(g) = generation {
                req = req.query(&[("ifGenerationMatch", g.to_string())]);
            }
            // 404: already gone (possibly by an earlier attempt of this very call).
            self.send(req, &[404]).await.map(drop)
        })
        .await
        .map_err(|e| to_storage_error(e, gs_url, "delete"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_names_as_one_segment() {
        assert_eq!(encode_segment("a/b c.csv"), "a%2Fb%20c.csv");
        assert_eq!(encode_segment("ü?#%"), "%C3%BC%3F%23%25");
        assert_eq!(encode_segment("A-z_0.9~"), "A-z_0.9~");
    }

    #[test]
    fn parses_object_resources() {
        let r: ObjectResource = serde_json::from_str(
            r#"{"name":"a/b","size":"5","generation":"1795842985853527","crc32c":"mnG7TA==",
                "metadata":{"k":"v","n":null},"contentType":"text/plain",
                "updated":"2026-11-28T05:16:25.853525Z","acl":[]}"#,
        )
        .unwrap();
        let m = r.into_meta();
        assert_eq!(m.key, "a/b");
        assert_eq!(m.size, 5);
        assert_eq!(m.generation, Some(1_795_842_985_853_527));
        assert_eq!(m.crc32c, Some(crc32c::crc32c(b"hello")));
        assert_eq!(m.metadata.len(), 1);
        assert_eq!(m.metadata["k"], "v");
        assert_eq!(m.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            m.updated.unwrap().to_rfc3339(),
            "2026-11-28T05:16:25.853525+00:00"
        );
    }

    #[test]
    fn classification() {
        let status = |s: u16| Failure::Status {
            status: s,
            retry_after: None,
            message: String::new(),
        };
        assert_eq!(classify(&status(503)), RetryDecision::Retry);
        assert_eq!(classify(&status(429)), RetryDecision::Retry);
        assert_eq!(classify(&status(412)), RetryDecision::Stop);
        assert_eq!(classify(&status(404)), RetryDecision::Stop);
        assert_eq!(
            classify(&Failure::Protocol("x".into())),
            RetryDecision::Stop
        );
    }
}
