//! HTTP sources: streaming GETs with retries, and resumption of a dropped body with `Range`.
//!
//! - The first response is retried (connect errors, 408/429/5xx, honouring `Retry-After`) by
//!   the shared [`RetryPolicy`].
//! - When a body breaks off (reset, read-idle timeout, fewer bytes than `Content-Length`), the
//!   transfer resumes with `Range: bytes=N-` and `If-Range: <validator>` if the first response
//!   promised ranges (`Accept-Ranges: bytes`) and gave a validator (strong ETag, else
//!   Last-Modified). A `206` whose `Content-Range` starts at N continues the stream; a `200`
//!   means the source changed, and the item starts over ([`ExtractError::SourceChanged`]).
//!   Without range support the error is transient and the item is redone from byte 0.
//! - Other 4xx fail at once, naming the (redacted) URL and status.
//!
//! - Bodies are held to `--min-rate` over `--min-rate-window` ([`RateMeter`]), resumptions
//!   included. [`HttpClient::get_data`] also refuses what is not data (an HTML page, a JSON
//!   error body; see [`crate::decode::content`]) as a transient error, so it is retried.
//!
//! No decompression happens here: `Accept-Encoding: identity` is sent and reqwest's
//! decoders are off, so byte offsets are offsets in what the server stores.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Response, StatusCode};
use sluice_runtime::{CancellationToken, RetryDecision, RetryPolicy};

use crate::config::HttpOptions;
use crate::decode::content::{Expect, SNIFF_BYTES, not_data};
use crate::error::{ExtractError, Result};
use crate::redact::{redact_url, scrub, url_secrets};
use crate::source::limits::{Deadline, ItemLimits, SharedMeter};
use sluice_runtime::Secret;

/// What identifies the version of a source (part of the manifest format, so defined in
/// `sluice-manifest`).
pub(crate) use sluice_manifest::SourceVersion;

fn version_from_headers(headers: &HeaderMap, size: Option<u64>) -> SourceVersion {
    let text = |name: HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    SourceVersion {
        etag: text(header::ETAG),
        last_modified: text(header::LAST_MODIFIED),
        size,
    }
}

/// One URL plus the headers to send with it. Knows its redacted form and its secrets.
#[derive(Clone)]
pub struct HttpTarget {
    url: reqwest::Url,
    raw: String,
    headers: HeaderMap,
    display: String,
    secrets: Vec<String>,
}

impl std::fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTarget")
            .field("url", &self.display)
            .finish_non_exhaustive()
    }
}

impl HttpTarget {
    pub fn new(url: &str) -> Result<Self> {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            ExtractError::config_source(format!("invalid URL {}", redact_url(url)), e)
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ExtractError::Config(format!(
                "unsupported URL scheme in {} (expected http, https, file or a path)",
                redact_url(url)
            )));
        }
        Ok(HttpTarget {
            url: parsed,
            raw: url.to_string(),
            headers: HeaderMap::new(),
            display: redact_url(url),
            secrets: url_secrets(url),
        })
    }

    /// Adds a header whose value is a secret (never logged, scrubbed from server messages).
    pub fn with_secret_header(mut self, name: &'static str, value: &Secret) -> Result<Self> {
        let mut header_value = HeaderValue::from_str(value.expose())
            .map_err(|_| ExtractError::Config(format!("{name}: invalid header value")))?;
        header_value.set_sensitive(true);
        self.headers
            .insert(HeaderName::from_static(name), header_value);
        self.secrets.push(value.expose().to_string());
        Ok(self)
    }

    /// The URL with secrets redacted: what every message shows.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The full URL including secrets (only for building derived URLs).
    pub fn raw(&self) -> &str {
        &self.raw
    }

    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// The same headers and secrets for another URL of the same service.
    pub fn derive(&self, url: &str) -> Result<Self> {
        let mut next = HttpTarget::new(url)?;
        next.headers = self.headers.clone();
        for s in &self.secrets {
            if !next.secrets.contains(s) {
                next.secrets.push(s.clone());
            }
        }
        Ok(next)
    }
}

/// A shared HTTP client with the task's timeouts, retry policy and cancellation.
#[derive(Clone)]
pub struct HttpClient {
    client: Client,
    policy: RetryPolicy,
    cancel: CancellationToken,
    limits: ItemLimits,
}

/// How many times one body may be resumed before the item is failed.
const MAX_RESUMES: u32 = 20;
/// How much of an error response body is read for the message.
const ERROR_BODY_LIMIT: usize = 2048;

impl HttpClient {
    pub fn new(options: &HttpOptions, cancel: CancellationToken) -> Result<Self> {
        let client = Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .user_agent(options.user_agent.clone())
            // Byte offsets must be offsets in what the server stores: no transparent decoding,
            // even if another crate in the build enables reqwest's decoders.
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd()
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ExtractError::internal_source("cannot build the HTTP client", e))?;
        Ok(HttpClient {
            client,
            policy: options.retry.clone(),
            cancel,
            limits: ItemLimits::new(
                options.item_timeout,
                options.min_rate,
                options.min_rate_window,
            ),
        })
    }

    /// The `--item-timeout` deadline of the item with this key; its clock starts at the
    /// first call (the item's first attempt) and holds for all later ones.
    pub fn item_deadline(&self, item_key: &str) -> Deadline {
        self.limits.deadline(item_key)
    }

    /// One request, no retries. A non-success status becomes [`ExtractError::Http`].
    async fn send(
        &self,
        method: reqwest::Method,
        target: &HttpTarget,
        range: Option<(u64, &str)>,
    ) -> Result<Response> {
        let mut request = self
            .client
            .request(method, target.url.clone())
            .headers(target.headers.clone())
            .header(header::ACCEPT_ENCODING, "identity");
        if let Some((offset, validator)) = range {
            request = request
                .header(header::RANGE, format!("bytes={offset}-"))
                .header(header::IF_RANGE, validator);
        }
        let send = request.send();
        let response = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(ExtractError::Cancelled),
            r = send => r.map_err(|e| transport_error(target, e))?,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        Err(status_error(target, response).await)
    }

    /// GET with retries; the body streams through [`HttpBody::next_chunk`].
    pub async fn get(&self, target: &HttpTarget) -> Result<HttpBody> {
        let what = format!("GET {}", target.display());
        let response = self
            .policy
            .run(
                &what,
                &self.cancel,
                |_| self.send(reqwest::Method::GET, target, None),
                ExtractError::retry_decision,
            )
            .await
            .map_err(retry_error)?;
        Ok(HttpBody::new(self.clone(), target.clone(), response))
    }

    /// GET of an item's data, with retries: a response that is not data for `expect` (by
    /// `Content-Type`, or by its first [`SNIFF_BYTES`]) is a transient error, so a portal's
    /// maintenance page is retried with backoff, and fails the item if it stays.
    ///
    /// `item_key` names the item whose `--min-rate` meter the body shares with the item's
    /// other attempts.
    pub async fn get_data(
        &self,
        target: &HttpTarget,
        item_key: &str,
        expect: Expect,
        data_ext: &str,
    ) -> Result<HttpBody> {
        let meter = self.limits.meter(item_key);
        let what = format!("GET {}", target.display());
        self.policy
            .run(
                &what,
                &self.cancel,
                |_| async {
                    let response = self.send(reqwest::Method::GET, target, None).await?;
                    let mut body = HttpBody::new(self.clone(), target.clone(), response)
                        .with_meter(meter.clone());
                    if expect == Expect::Anything {
                        return Ok(body);
                    }
                    let content_type = body
                        .headers
                        .get(header::CONTENT_TYPE)
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                    let prefix = body.peek(SNIFF_BYTES).await?;
                    match not_data(expect, data_ext, content_type.as_deref(), &prefix) {
                        None => Ok(body),
                        Some(detail) => Err(ExtractError::NotData {
                            source_name: target.display().to_string(),
                            detail: scrub(&detail, target.secrets()),
                            transient: true,
                        }),
                    }
                },
                ExtractError::retry_decision,
            )
            .await
            .map_err(retry_error)
    }

    /// A small response read whole (count queries, manifests), with retries. Refuses bodies
    /// over `limit` bytes.
    pub async fn get_small(&self, target: &HttpTarget, limit: usize) -> Result<(Bytes, HeaderMap)> {
        let what = format!("GET {}", target.display());
        self.policy
            .run(
                &what,
                &self.cancel,
                |_| async {
                    let mut body = HttpBody::new(
                        self.clone(),
                        target.clone(),
                        self.send(reqwest::Method::GET, target, None).await?,
                    );
                    let headers = body.headers.clone();
                    let mut out = bytes::BytesMut::new();
                    while let Some(chunk) = body.next_chunk().await? {
                        if out.len() + chunk.len() > limit {
                            return Err(ExtractError::Transport {
                                url: target.display().to_string(),
                                detail: format!("response larger than {limit} bytes"),
                                transient: false,
                            });
                        }
                        out.extend_from_slice(&chunk);
                    }
                    Ok((out.freeze(), headers))
                },
                ExtractError::retry_decision,
            )
            .await
            .map_err(retry_error)
    }

    /// The source's current version from a HEAD request; `None` when the server cannot say
    /// (HEAD refused, no validators). Used by `--skip-existing`, so failures are not fatal:
    /// the item is then simply downloaded.
    pub async fn head(&self, target: &HttpTarget) -> Result<Option<SourceVersion>> {
        let what = format!("HEAD {}", target.display());
        let result = self
            .policy
            .run(
                &what,
                &self.cancel,
                |_| self.send(reqwest::Method::HEAD, target, None),
                ExtractError::retry_decision,
            )
            .await;
        match result {
            Ok(response) => {
                // The header, not `content_length()`: reqwest reports the (empty) body's length
                // for a HEAD, so the size would never match the stored one.
                let size = response
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let version = version_from_headers(response.headers(), size);
                Ok(version.is_known().then_some(version))
            }
            Err(e) if e.is_cancelled() => Err(ExtractError::Cancelled),
            Err(e) => {
                tracing::debug!(url = target.display(), error = %e, "HEAD failed; will download");
                Ok(None)
            }
        }
    }
}

fn retry_error(err: sluice_runtime::retry::RetryError<ExtractError>) -> ExtractError {
    if err.is_cancelled() {
        return ExtractError::Cancelled;
    }
    let attempts = err.attempts();
    match err.into_last_error() {
        // The request was retried to the policy's limit already: redoing the whole item would
        // multiply the wait (8 x 4 attempts on a dead host) for nothing, so it is final now.
        Some(ExtractError::Transport {
            url,
            detail,
            transient: true,
        }) => ExtractError::Transport {
            url,
            detail: format!("{detail} (gave up after {attempts} attempts)"),
            transient: false,
        },
        Some(ExtractError::NotData {
            source_name,
            detail,
            transient: true,
        }) => ExtractError::NotData {
            source_name,
            detail: format!("{detail} (gave up after {attempts} attempts)"),
            transient: false,
        },
        Some(error) => error,
        None => ExtractError::Internal("retry gave up without an error".into()),
    }
}

/// Maps a reqwest error to ours, without the URL reqwest would print (it has the secrets).
fn transport_error(target: &HttpTarget, err: reqwest::Error) -> ExtractError {
    let transient = !(err.is_builder() || err.is_redirect() || err.is_decode());
    let err = err.without_url();
    let mut detail = err.to_string();
    // reqwest's top-level message hides the cause ("connection refused", "reset by peer").
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    ExtractError::Transport {
        url: target.display().to_string(),
        detail: scrub(&detail, target.secrets()),
        transient,
    }
}

fn body_error(target: &HttpTarget, err: &reqwest::Error) -> String {
    let mut text = String::from("connection broke mid-body");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if err.is_timeout() {
        text.push_str(" (read timeout)");
    }
    scrub(&text, target.secrets())
}

async fn status_error(target: &HttpTarget, response: Response) -> ExtractError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(sluice_runtime::retry::parse_retry_after);
    // A short excerpt of what the server said helps (Socrata explains bad SoQL); it is
    // scrubbed because servers do echo tokens back.
    let mut body = Vec::new();
    let mut response = response;
    while body.len() < ERROR_BODY_LIMIT {
        match tokio::time::timeout(Duration::from_secs(5), response.chunk()).await {
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(ERROR_BODY_LIMIT);
    let text = String::from_utf8_lossy(&body);
    let message = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let message: String = message.chars().take(300).collect();
    ExtractError::Http {
        url: target.display().to_string(),
        status,
        retry_after,
        message: scrub(&message, target.secrets()),
    }
}

/// A response body that resumes itself after a dropped connection when it can.
pub struct HttpBody {
    client: HttpClient,
    target: HttpTarget,
    response: Response,
    headers: HeaderMap,
    received: u64,
    total: Option<u64>,
    /// `If-Range` value: a strong ETag, else Last-Modified; `None` = not resumable.
    validator: Option<String>,
    resumable: bool,
    resumes: u32,
    pub version: SourceVersion,
    /// Bytes read ahead by [`HttpBody::peek`], handed out first.
    head: Option<Bytes>,
    meter: SharedMeter,
}

impl HttpBody {
    fn new(client: HttpClient, target: HttpTarget, response: Response) -> Self {
        let headers = response.headers().clone();
        let total = response.content_length();
        let version = version_from_headers(&headers, total);
        let strong_etag = version.etag.clone().filter(|e| !e.starts_with("W/"));
        let validator = strong_etag.or_else(|| version.last_modified.clone());
        let accepts_ranges = headers
            .get(header::ACCEPT_RANGES)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("bytes"));
        let encoded = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.eq_ignore_ascii_case("identity"));
        let resumable = accepts_ranges
            && validator.is_some()
            && total.is_some()
            && !encoded
            && response.status() == StatusCode::OK;
        HttpBody {
            target,
            response,
            headers,
            received: 0,
            total,
            validator,
            resumable,
            resumes: 0,
            version,
            head: None,
            meter: client.limits.new_meter(),
            client,
        }
    }

    fn with_meter(mut self, meter: SharedMeter) -> Self {
        self.meter = meter;
        self
    }

    /// The first `n` bytes (fewer if the body is shorter), kept to be returned again by
    /// [`HttpBody::next_chunk`].
    pub async fn peek(&mut self, n: usize) -> Result<Bytes> {
        let mut merged = bytes::BytesMut::new();
        if let Some(head) = self.head.take() {
            merged.extend_from_slice(&head);
        }
        while merged.len() < n {
            match self.next_chunk().await? {
                Some(chunk) => merged.extend_from_slice(&chunk),
                None => break,
            }
        }
        let head = merged.freeze();
        self.head = (!head.is_empty()).then(|| head.clone());
        Ok(head)
    }

    /// Size in bytes as served, when the server said.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn target(&self) -> &HttpTarget {
        &self.target
    }

    /// How many times the body was resumed with `Range`.
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// The next bytes, `None` at the end. Resumes transparently when possible.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if let Some(head) = self.head.take() {
            return Ok(Some(head));
        }
        loop {
            // Only this wait counts for `--min-rate`; it is cut at each of the meter's checks.
            let budget = lock(&self.meter).until_check();
            let started = tokio::time::Instant::now();
            let chunk = tokio::select! {
                biased;
                _ = self.client.cancel.cancelled() => return Err(ExtractError::Cancelled),
                c = self.response.chunk() => Some(c),
                _ = tokio::time::sleep(budget) => None,
            };
            let got = match &chunk {
                Some(Ok(Some(bytes))) => bytes.len() as u64,
                _ => 0,
            };
            let checked = lock(&self.meter).record(started.elapsed(), got);
            if let Err(detail) = checked {
                return Err(ExtractError::TooSlow {
                    source_name: self.target.display().to_string(),
                    limit: "--min-rate",
                    detail,
                });
            }
            let Some(chunk) = chunk else { continue };
            let broke = match chunk {
                Ok(Some(bytes)) => {
                    self.received += bytes.len() as u64;
                    if let Some(total) = self.total
                        && self.received > total
                    {
                        return Err(ExtractError::Transport {
                            url: self.target.display().to_string(),
                            detail: format!(
                                "server sent more than its Content-Length of {total} bytes"
                            ),
                            transient: true,
                        });
                    }
                    return Ok(Some(bytes));
                }
                Ok(None) => match self.total {
                    Some(total) if self.received < total => {
                        format!("body ended after {} of {total} bytes", self.received)
                    }
                    _ => return Ok(None),
                },
                Err(e) => body_error(&self.target, &e),
            };
            self.resume(broke).await?;
        }
    }

    /// Replaces the broken response by a ranged one continuing at `received`.
    async fn resume(&mut self, why: String) -> Result<()> {
        let url = self.target.display().to_string();
        let (true, Some(validator)) = (self.resumable, self.validator.clone()) else {
            return Err(ExtractError::Transport {
                url,
                detail: format!(
                    "{why}; the server offers no byte ranges with a validator, so the item restarts"
                ),
                transient: true,
            });
        };
        if self.resumes >= MAX_RESUMES {
            return Err(ExtractError::Transport {
                url,
                detail: format!("{why}; gave up after {MAX_RESUMES} resumptions"),
                transient: false,
            });
        }
        self.resumes += 1;
        let offset = self.received;
        let total = self.total;
        tracing::warn!(
            url = %url,
            offset,
            total,
            resume = self.resumes,
            "{url}: {why}; resuming at byte {offset} with Range/If-Range"
        );
        let what = format!("resume {url} at byte {offset}");
        let client = self.client.clone();
        let target = self.target.clone();
        let response = client
            .policy
            .run(
                &what,
                &client.cancel,
                |_| async {
                    let response = client
                        .send(reqwest::Method::GET, &target, Some((offset, &validator)))
                        .await?;
                    check_resumed(&target, &response, offset, total)?;
                    Ok(response)
                },
                |e: &ExtractError| match e {
                    ExtractError::SourceChanged { .. } => RetryDecision::Stop,
                    other => other.retry_decision(),
                },
            )
            .await
            .map_err(retry_error)?;
        self.response = response;
        Ok(())
    }
}

fn lock(meter: &SharedMeter) -> std::sync::MutexGuard<'_, crate::source::limits::RateMeter> {
    meter.lock().unwrap_or_else(|p| p.into_inner())
}

/// A resumed response must be a 206 whose range starts where we stopped, of the same total.
fn check_resumed(
    target: &HttpTarget,
    response: &Response,
    offset: u64,
    total: Option<u64>,
) -> Result<()> {
    let changed = || ExtractError::SourceChanged {
        url: target.display().to_string(),
        offset,
    };
    if response.status() != StatusCode::PARTIAL_CONTENT {
        // 200: If-Range did not match (the source changed) or ranges are ignored.
        return Err(changed());
    }
    let content_range = response
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match parse_content_range(content_range) {
        Some((start, _, whole)) if start == offset && (total.is_none() || whole == total) => Ok(()),
        _ => Err(changed()),
    }
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`).
fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_match_on_etag_then_last_modified() {
        let v = |etag: Option<&str>, lm: Option<&str>, size: Option<u64>| SourceVersion {
            etag: etag.map(str::to_string),
            last_modified: lm.map(str::to_string),
            size,
        };
        assert!(v(Some("\"a\""), None, None).matches(&v(Some("\"a\""), Some("x"), Some(1))));
        assert!(!v(Some("\"a\""), Some("x"), None).matches(&v(Some("\"b\""), Some("x"), None)));
        assert!(v(None, Some("x"), Some(3)).matches(&v(Some("\"b\""), Some("x"), Some(3))));
        assert!(!v(None, Some("x"), Some(3)).matches(&v(None, Some("x"), Some(4))));
        assert!(!v(None, None, Some(3)).matches(&v(None, None, Some(3))));
    }

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, 99, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 10-99/*"), Some((10, 99, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
