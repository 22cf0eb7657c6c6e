//! Atomic streaming uploads to Cloud Storage over the JSON API.
//!
//! Small objects (everything fits in one chunk buffer when `commit` is called) go as one
//! multipart upload; larger ones as a resumable upload session fed chunk by chunk from a
//! bounded channel by a background task. Either way the object only becomes visible when the
//! request carrying its last byte succeeds, that request carries the full-object crc32c so GCS
//! refuses to finalise corrupted data, and `ifGenerationMatch=0` makes create-if-absent atomic.
//! The crc32c the server reports is checked once more after finalisation (the emulator does not
//! check); on a mismatch the object is deleted (by generation) and the commit fails.
//!
//! Memory: at most three chunk buffers (the one being filled, one queued in the channel, one
//! in flight), whatever the object size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use sluice_runtime::retry::RetryError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::client::{Client, Failure, ObjectResource, failure_to_storage_error};
use crate::crc::{Crc32c, to_base64};
use crate::{ObjectMeta, ObjectWriter, Result, StorageError, WriteOptions};

/// Resumable chunks (all but the last) must be multiples of this (GCS protocol rule).
pub const CHUNK_QUANTUM: usize = 256 * 1024;

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// What an upload needs to know, shared by the writer and its background task.
#[derive(Debug)]
pub(crate) struct UploadCtx {
    pub client: Arc<Client>,
    pub bucket: String,
    pub key: String,
    /// `gs://bucket/key`, for errors.
    pub url: String,
    pub options: WriteOptions,
    pub chunk_size: usize,
}

impl UploadCtx {
    fn content_type(&self) -> &str {
        self.options
            .content_type
            .as_deref()
            .unwrap_or(DEFAULT_CONTENT_TYPE)
    }

    /// The object resource sent when creating the object.
    fn resource_json(&self, crc: Option<u32>) -> serde_json::Value {
        let mut resource = serde_json::json!({
            "name": self.key,
            "contentType": self.content_type(),
        });
        if !self.options.metadata.is_empty() {
            resource["metadata"] = serde_json::json!(self.options.metadata);
        }
        if let Some(crc) = crc {
            resource["crc32c"] = serde_json::json!(to_base64(crc));
        }
        resource
    }

    fn cancelled(&self, operation: &'static str) -> StorageError {
        StorageError::Cancelled {
            url: self.url.clone(),
            operation,
        }
    }

    fn io(&self, operation: &'static str, msg: String) -> StorageError {
        StorageError::Io {
            url: self.url.clone(),
            operation,
            source: msg.into(),
        }
    }
}

enum Msg {
    /// A full chunk (a multiple of [`CHUNK_QUANTUM`]); never the last bytes of the object.
    Chunk(Bytes),
    /// The last bytes (at least one) and the crc32c of the whole object.
    Finish { last: Bytes, crc: u32 },
}

struct Session {
    tx: mpsc::Sender<Msg>,
    task: JoinHandle<Result<ObjectMeta>>,
}

pub(crate) struct GcsWriter {
    ctx: Arc<UploadCtx>,
    buf: BytesMut,
    crc: Crc32c,
    total: u64,
    session: Option<Session>,
    /// Child of the store's cancellation token; also cancelled when the writer is dropped or
    /// aborted. Stops everything up to (not including) the request that finalises.
    abort: CancellationToken,
    /// Cancelled only when the writer is dropped or aborted: the one thing that may still stop
    /// the finalising request (nobody would learn its outcome).
    dropped: CancellationToken,
    finished: bool,
}

impl GcsWriter {
    pub(crate) fn new(ctx: UploadCtx, cancel: &CancellationToken) -> Self {
        GcsWriter {
            buf: BytesMut::new(),
            ctx: Arc::new(ctx),
            crc: Crc32c::new(),
            total: 0,
            session: None,
            abort: cancel.child_token(),
            dropped: CancellationToken::new(),
            finished: false,
        }
    }

    /// Grows the buffer geometrically but never past one chunk: small objects only cost what
    /// they use, large ones exactly `chunk_size` per buffer.
    fn reserve(&mut self, additional: usize) {
        let needed = self.buf.len() + additional;
        if needed <= self.buf.capacity() {
            return;
        }
        // Once a chunk has gone out the object is large: take a whole chunk at once.
        let capacity = if self.session.is_some() {
            self.ctx.chunk_size
        } else {
            needed
                .max(self.buf.capacity() * 2)
                .max(64 * 1024)
                .min(self.ctx.chunk_size)
        };
        let mut grown = BytesMut::with_capacity(capacity);
        grown.extend_from_slice(&self.buf);
        self.buf = grown;
    }

    /// Hands the (full) buffer to the upload task, starting the task on the first chunk.
    async fn flush_full(&mut self) -> Result<()> {
        let chunk = std::mem::take(&mut self.buf).freeze();
        if self.session.is_none() {
            // Capacity 1: one chunk queued while one is in flight; the next `send` waits.
            let (tx, rx) = mpsc::channel(1);
            let task = tokio::spawn(run_session(
                self.ctx.clone(),
                rx,
                self.abort.clone(),
                self.dropped.clone(),
            ));
            self.session = Some(Session { tx, task });
        }
        let session = self.session.as_ref().expect("session started above");
        if session.tx.send(Msg::Chunk(chunk)).await.is_err() {
            // The task has ended, which before `Finish` means it failed: report its error.
            return Err(self.join_failed_session().await);
        }
        Ok(())
    }

    async fn join_failed_session(&mut self) -> StorageError {
        self.finished = true;
        match self.session.take() {
            Some(session) => match session.task.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => self.ctx.io("upload", "upload task ended early".into()),
                Err(e) => self.ctx.io("upload", format!("upload task failed: {e}")),
            },
            None => self.ctx.io("upload", "no upload in progress".into()),
        }
    }

    /// Stops the upload and waits until the session is cancelled on the server.
    async fn shut_down(&mut self) {
        self.finished = true;
        self.abort.cancel();
        self.dropped.cancel();
        if let Some(session) = self.session.take() {
            drop(session.tx);
            let _ = session.task.await;
        }
    }
}

#[async_trait::async_trait]
impl ObjectWriter for GcsWriter {
    async fn write(&mut self, mut chunk: Bytes) -> Result<()> {
        if self.finished {
            return Err(self
                .ctx
                .io("write", "writer already failed or finished".into()));
        }
        if self.abort.is_cancelled() {
            self.shut_down().await;
            return Err(self.ctx.cancelled("write"));
        }
        while !chunk.is_empty() {
            // A full buffer is only sent once more bytes arrive, so the request that finalises
            // always carries data (and small objects can still go as one multipart upload).
            if self.buf.len() == self.ctx.chunk_size
                && let Err(e) = self.flush_full().await
            {
                self.shut_down().await;
                return Err(e);
            }
            let take = (self.ctx.chunk_size - self.buf.len()).min(chunk.len());
            let piece = chunk.split_to(take);
            self.crc.update(&piece);
            self.reserve(piece.len());
            self.buf.extend_from_slice(&piece);
            self.total += take as u64;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<ObjectMeta> {
        if self.finished {
            return Err(self
                .ctx
                .io("commit", "writer already failed or finished".into()));
        }
        if self.abort.is_cancelled() {
            self.shut_down().await;
            return Err(self.ctx.cancelled("commit"));
        }
        self.finished = true;
        let crc = self.crc.value();
        let last = std::mem::take(&mut self.buf).freeze();
        match self.session.take() {
            None => upload_small(&self.ctx, last, crc, &self.abort).await,
            Some(session) => {
                if session.tx.send(Msg::Finish { last, crc }).await.is_err() {
                    self.session = Some(session);
                    return Err(self.join_failed_session().await);
                }
                match session.task.await {
                    Ok(result) => result,
                    Err(e) => Err(self.ctx.io("commit", format!("upload task failed: {e}"))),
                }
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.shut_down().await;
        Ok(())
    }
}

impl Drop for GcsWriter {
    fn drop(&mut self) {
        // The task sees this, cancels the session on the server and exits on its own.
        self.abort.cancel();
        self.dropped.cancel();
    }
}

/// Outcome of sending bytes to a session.
enum Sent {
    /// The server holds bytes `0..n` and waits for more.
    Persisted(u64),
    /// The upload is complete and this is the object.
    Finalized(Box<ObjectResource>),
}

/// The background half of a resumable upload: open the session at the first chunk, send
/// chunks as they come, finalise on `Finish`; cancel the session on any other ending.
async fn run_session(
    ctx: Arc<UploadCtx>,
    mut rx: mpsc::Receiver<Msg>,
    abort: CancellationToken,
    dropped: CancellationToken,
) -> Result<ObjectMeta> {
    // Fail fast instead of uploading gigabytes only to have the precondition refuse them.
    // (Also the only create-if-absent check fake-gcs-server honours for resumable uploads.)
    if ctx.options.if_absent
        && ctx
            .client
            .get_object(&ctx.bucket, &ctx.key, &ctx.url, &abort)
            .await?
            .is_some()
    {
        return Err(StorageError::AlreadyExists {
            url: ctx.url.clone(),
        });
    }
    let session = start_session(&ctx, &abort).await?;
    let result = drive_session(&ctx, &session, &mut rx, &abort, &dropped).await;
    if result.is_err() {
        cancel_session(&ctx, &session).await;
    }
    result
}

async fn drive_session(
    ctx: &UploadCtx,
    session: &str,
    rx: &mut mpsc::Receiver<Msg>,
    abort: &CancellationToken,
    dropped: &CancellationToken,
) -> Result<ObjectMeta> {
    let mut offset = 0u64;
    loop {
        let msg = tokio::select! {
            biased;
            _ = abort.cancelled() => return Err(ctx.cancelled("upload")),
            msg = rx.recv() => msg,
        };
        match msg {
            // The writer went away without committing.
            None => return Err(ctx.cancelled("upload")),
            Some(Msg::Chunk(data)) => {
                let end = offset + data.len() as u64;
                let sent = tokio::select! {
                    biased;
                    _ = abort.cancelled() => return Err(ctx.cancelled("upload")),
                    sent = put_bytes(ctx, session, offset, data, None, abort) => sent,
                };
                match sent
                    .map_err(|e| super::client::to_storage_error(e, &ctx.url, "upload chunk"))?
                {
                    Sent::Persisted(n) if n == end => offset = n,
                    Sent::Persisted(n) => {
                        return Err(ctx.io(
                            "upload chunk",
                            format!("server holds {n} bytes, expected {end}"),
                        ));
                    }
                    Sent::Finalized(_) => {
                        return Err(ctx.io(
                            "upload chunk",
                            "server finalised the object before its last chunk".into(),
                        ));
                    }
                }
            }
            Some(Msg::Finish { last, crc }) => {
                let total = offset + last.len() as u64;
                // Only a dropped writer interrupts the finalising request: on a plain
                // cancellation it runs to its end so the outcome is known and reported.
                let sent = tokio::select! {
                    biased;
                    _ = dropped.cancelled() => return Err(ctx.cancelled("commit")),
                    sent = put_bytes(ctx, session, offset, last, Some((total, crc)), dropped) => sent,
                };
                let object = match sent {
                    Ok(Sent::Finalized(object)) => *object,
                    Ok(Sent::Persisted(n)) => {
                        return Err(ctx.io(
                            "commit",
                            format!(
                                "server did not finalise the upload (holds {n} of {total} bytes)"
                            ),
                        ));
                    }
                    Err(e) => return finalize_failed(ctx, e, crc, total).await,
                };
                return verify(ctx, object, crc, total).await;
            }
        }
    }
}

/// Opens a resumable upload session and returns its URI.
async fn start_session(ctx: &UploadCtx, cancel: &CancellationToken) -> Result<String> {
    let client = &ctx.client;
    let url = client.upload_url(&ctx.bucket);
    let body = ctx.resource_json(None).to_string();
    client
        .retrying("GCS start resumable upload", cancel, |_| async {
            let mut query = vec![("uploadType", "resumable"), ("name", ctx.key.as_str())];
            if ctx.options.if_absent {
                query.push(("ifGenerationMatch", "0"));
            }
            let req = client
                .http
                .request(Method::POST, &url)
                .query(&query)
                .header(CONTENT_TYPE, "application/json; charset=UTF-8")
                .header("X-Upload-Content-Type", ctx.content_type())
                .body(body.clone())
                .timeout(client.json_timeout);
            let response = client.send(req, &[]).await?;
            response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| {
                    Failure::Protocol("no Location header for the upload session".into())
                })
        })
        .await
        .map_err(|e| match e {
            RetryError::Exhausted { source, .. } if source.status() == Some(412) => {
                StorageError::AlreadyExists {
                    url: ctx.url.clone(),
                }
            }
            e => super::client::to_storage_error(e, &ctx.url, "start upload"),
        })
}

/// Best effort: tells the server to discard the session (GCS answers 499 when it did).
/// Unfinalised sessions are invisible anyway and expire after a week.
async fn cancel_session(ctx: &UploadCtx, session: &str) {
    let client = &ctx.client;
    let req = client
        .http
        .request(Method::DELETE, session)
        .header(CONTENT_LENGTH, "0")
        .timeout(std::time::Duration::from_secs(10));
    match client.send(req, &[499, 404, 410]).await {
        Ok(_) => tracing::debug!(url = %ctx.url, "cancelled upload session"),
        Err(e) => tracing::warn!(url = %ctx.url, error = %e, "could not cancel upload session"),
    }
}

/// `Range: bytes=0-N` on a 308 -> `N + 1` bytes persisted; no header -> none.
fn persisted(response: &reqwest::Response) -> std::result::Result<u64, Failure> {
    let Some(value) = response.headers().get(reqwest::header::RANGE) else {
        return Ok(0);
    };
    let text = value.to_str().unwrap_or_default();
    text.strip_prefix("bytes=0-")
        .and_then(|n| n.trim().parse::<u64>().ok())
        .map(|n| n + 1)
        .ok_or_else(|| Failure::Protocol(format!("unparseable Range header {text:?}")))
}

/// Sends `data` (the object's bytes from `offset`) to the session; `last` = `(total, crc32c)`
/// when these are the final bytes, which finalises the object. Transient failures are retried
/// after asking the server how much it holds, resending only the rest.
async fn put_bytes(
    ctx: &UploadCtx,
    session: &str,
    offset: u64,
    data: Bytes,
    last: Option<(u64, u32)>,
    cancel: &CancellationToken,
) -> std::result::Result<Sent, RetryError<Failure>> {
    let client = &ctx.client;
    let end = offset + data.len() as u64;
    // Bytes `0..confirmed` are known to be on the server. An atomic, not a Cell: the future
    // runs on a spawned task and must be Send.
    let confirmed = AtomicU64::new(offset);
    let what = if last.is_some() {
        "GCS finalise upload"
    } else {
        "GCS upload chunk"
    };
    // Each attempt's future borrows these (the closure is called once per attempt).
    let (confirmed, data) = (&confirmed, &data);
    client
        .retrying(what, cancel, |attempt| async move {
            // After any failure some of the bytes may have arrived (or, for the last chunk,
            // the object may be complete): ask the session before sending anything again.
            if attempt > 0 {
                match query_session(ctx, session, last.map(|(total, _)| total)).await? {
                    Sent::Finalized(object) => return Ok(Sent::Finalized(object)),
                    Sent::Persisted(n) if (offset..=end).contains(&n) => {
                        confirmed.store(n, Ordering::SeqCst)
                    }
                    Sent::Persisted(n) => {
                        return Err(Failure::Protocol(format!(
                            "server holds {n} bytes, outside the chunk {offset}..{end} being sent"
                        )));
                    }
                }
            }
            loop {
                let from = confirmed.load(Ordering::SeqCst);
                if from == end && last.is_none() {
                    return Ok(Sent::Persisted(end));
                }
                let range = match last {
                    Some((total, _)) if from == end => format!("bytes */{total}"),
                    Some((total, _)) => format!("bytes {from}-{}/{total}", end - 1),
                    None => format!("bytes {from}-{}/*", end - 1),
                };
                let body = data.slice((from - offset) as usize..);
                let mut req = client
                    .http
                    .request(Method::PUT, session)
                    .header(CONTENT_RANGE, range)
                    .header(CONTENT_TYPE, ctx.content_type())
                    .body(body)
                    .timeout(client.upload_timeout);
                if let Some((_, crc)) = last {
                    // The full-object checksum: GCS refuses to finalise if the bytes differ.
                    req = req.header("X-Goog-Hash", format!("crc32c={}", to_base64(crc)));
                }
                let response = client.send(req, &[308]).await?;
                if response.status().as_u16() == 308 {
                    let n = persisted(&response)?;
                    if n <= from || n > end {
                        return Err(Failure::Protocol(format!(
                            "after sending bytes {from}..{end} the server reports {n} persisted"
                        )));
                    }
                    confirmed.store(n, Ordering::SeqCst);
                    continue;
                }
                if last.is_none() {
                    return Err(Failure::Protocol(
                        "server finalised the upload before its last chunk".into(),
                    ));
                }
                return Client::json(response)
                    .await
                    .map(|o| Sent::Finalized(Box::new(o)));
            }
        })
        .await
}

/// Asks a session how many bytes it holds (`Content-Range: bytes */*`). Note: fake-gcs-server
/// finalises the object on this request, so it is only sent after a failure (see docs).
async fn query_session(
    ctx: &UploadCtx,
    session: &str,
    total: Option<u64>,
) -> std::result::Result<Sent, Failure> {
    let client = &ctx.client;
    let range = match total {
        Some(t) => format!("bytes */{t}"),
        None => "bytes */*".to_string(),
    };
    let req = client
        .http
        .request(Method::PUT, session)
        .header(CONTENT_RANGE, range)
        .header(CONTENT_LENGTH, "0")
        .timeout(client.json_timeout);
    let response = client.send(req, &[308]).await?;
    if response.status().as_u16() == 308 {
        Ok(Sent::Persisted(persisted(&response)?))
    } else {
        Client::json(response)
            .await
            .map(|o| Sent::Finalized(Box::new(o)))
    }
}

/// One multipart upload (metadata + bytes in one request) for objects that fit in one chunk:
/// one round trip, and the emulator honours `ifGenerationMatch` on it.
async fn upload_small(
    ctx: &UploadCtx,
    data: Bytes,
    crc: u32,
    cancel: &CancellationToken,
) -> Result<ObjectMeta> {
    let client = &ctx.client;
    let url = client.upload_url(&ctx.bucket);
    // 128 random bits: colliding with the payload is not a practical concern.
    let boundary = format!("sluice-{:032x}", rand::random::<u128>());
    let head = Bytes::from(format!(
        "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{}\r\n--{boundary}\r\nContent-Type: {}\r\n\r\n",
        ctx.resource_json(Some(crc)),
        ctx.content_type()
    ));
    let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
    let length = head.len() + data.len() + tail.len();
    let total = data.len() as u64;
    let sent = client
        .retrying("GCS multipart upload", cancel, |_| async {
            let mut query = vec![("uploadType", "multipart")];
            if ctx.options.if_absent {
                query.push(("ifGenerationMatch", "0"));
            }
            // A stream of the three parts, so the payload is not copied into one buffer.
            let parts: Vec<std::io::Result<Bytes>> =
                vec![Ok(head.clone()), Ok(data.clone()), Ok(tail.clone())];
            let req = client
                .http
                .request(Method::POST, &url)
                .query(&query)
                .header(
                    CONTENT_TYPE,
                    format!("multipart/related; boundary={boundary}"),
                )
                .header(CONTENT_LENGTH, length)
                .body(reqwest::Body::wrap_stream(futures::stream::iter(parts)))
                .timeout(client.upload_timeout);
            Client::json::<ObjectResource>(client.send(req, &[]).await?).await
        })
        .await;
    match sent {
        Ok(object) => verify(ctx, object, crc, total).await,
        Err(e) => finalize_failed(ctx, e, crc, total).await,
    }
}

/// Maps a failed finalising request: 412 -> `AlreadyExists`, GCS's checksum refusal ->
/// `ChecksumMismatch`, the rest by the generic rules.
async fn finalize_failed(
    ctx: &UploadCtx,
    err: RetryError<Failure>,
    crc: u32,
    total: u64,
) -> Result<ObjectMeta> {
    let (failure, attempts) = match err {
        RetryError::Cancelled { .. } => return Err(ctx.cancelled("commit")),
        RetryError::Exhausted { source, attempts } => (source, attempts),
    };
    match failure.status() {
        Some(412) => {
            // After a retry, the object in the way may be our own, finalised by an attempt
            // whose response was lost. Same name, size, crc32c and metadata: the write happened.
            if attempts > 1
                && let Ok(Some(existing)) = ctx
                    .client
                    .get_object(&ctx.bucket, &ctx.key, &ctx.url, &CancellationToken::new())
                    .await
                && existing.size() == Some(total)
                && existing.crc32c() == Some(crc)
            {
                let meta = existing.into_meta();
                if meta.metadata == ctx.options.metadata {
                    tracing::info!(url = %ctx.url, "precondition failed on a retry, but the object is the one this writer sent");
                    return Ok(meta);
                }
            }
            Err(StorageError::AlreadyExists {
                url: ctx.url.clone(),
            })
        }
        Some(400) if failure.message().to_ascii_lowercase().contains("crc32c") => {
            Err(StorageError::ChecksumMismatch {
                url: ctx.url.clone(),
                local: crc,
                remote: calculated_crc(failure.message()).unwrap_or(0),
            })
        }
        _ => Err(failure_to_storage_error(
            failure, attempts, &ctx.url, "commit",
        )),
    }
}

/// The server's value from `Provided CRC32C "X" doesn't match calculated CRC32C "Y".`
fn calculated_crc(message: &str) -> Option<u32> {
    let after = message.split("calculated CRC32C").nth(1)?;
    let quoted = after.split('"').nth(1)?;
    crate::crc::from_base64(quoted)
}

/// Checks a finalised object against what was sent; deletes it (that generation only) and
/// fails if it differs, so no bad object stays visible.
async fn verify(
    ctx: &UploadCtx,
    object: ObjectResource,
    crc: u32,
    total: u64,
) -> Result<ObjectMeta> {
    let generation = object.generation();
    let remote_crc = object.crc32c();
    let remote_size = object.size();
    if remote_crc == Some(crc) && remote_size == Some(total) {
        let mut meta = object.into_meta();
        // Keys are reported as written (the store root is the bucket).
        meta.key = ctx.key.clone();
        return Ok(meta);
    }
    tracing::error!(
        url = %ctx.url,
        local_crc32c = %format!("{crc:08x}"),
        remote_crc32c = ?remote_crc.map(|c| format!("{c:08x}")),
        local_size = total,
        remote_size = ?remote_size,
        "stored object differs from what was sent: deleting it"
    );
    // Not cancellable: leaving the bad object behind is worse than a late exit.
    if let Err(e) = ctx
        .client
        .delete_object(
            &ctx.bucket,
            &ctx.key,
            generation,
            &ctx.url,
            &CancellationToken::new(),
        )
        .await
    {
        tracing::error!(url = %ctx.url, error = %e, "could not delete the corrupted object");
    }
    match remote_crc {
        Some(remote) if remote != crc => Err(StorageError::ChecksumMismatch {
            url: ctx.url.clone(),
            local: crc,
            remote,
        }),
        None => Err(ctx.io(
            "commit",
            "server reported no crc32c for the finalised object".into(),
        )),
        Some(_) => Err(ctx.io(
            "commit",
            format!("server stored {remote_size:?} bytes, {total} were sent"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gcs_checksum_refusal() {
        let msg = r#"Provided CRC32C "AAAAAA==" doesn't match calculated CRC32C "mnG7TA==". "#;
        assert_eq!(calculated_crc(msg), Some(crc32c::crc32c(b"hello")));
        assert_eq!(calculated_crc("Invalid argument."), None);
    }
}
