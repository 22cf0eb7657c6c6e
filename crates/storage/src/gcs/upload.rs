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
//! Metadata rests on documented GCS behaviour only. What is known when the upload starts (the
//! writer's options) goes into the object resource of the request that creates the object: the
//! multipart request, or the `POST` that opens a resumable session, the only request of a
//! session that takes object metadata. What is known only at the end (`commit_with_metadata`)
//! goes into the multipart request when the object is small; for a resumable upload it is set
//! by one `objects.patch` right after finalisation, under `ifGenerationMatch` +
//! `ifMetagenerationMatch` (so only the object just written, unchanged since, is patched). See
//! `docs/storage.md`.
//!
//! Memory: at most two chunk buffers per writer, whatever the object size: the one being
//! filled and the one on the wire (or handed over and waiting for the wire). Each buffer holds
//! a permit of the writer's two-permit semaphore from its allocation until its last byte is
//! released (by the HTTP client too): a third buffer waits for a permit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use sluice_runtime::retry::RetryError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::client::{Client, Failure, ObjectResource, failure_to_storage_error};
use crate::crc::{Crc32c, to_base64};
use crate::{ObjectMeta, ObjectWriter, Result, StorageError, WriteOptions};

/// Resumable chunks (all but the last) must be multiples of this (GCS protocol rule).
pub(crate) const CHUNK_QUANTUM: usize = 256 * 1024;

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Chunk buffers one writer may hold: the one being filled and the one on the wire.
pub(crate) const BUFFERS_PER_WRITER: usize = 2;

/// Upload chunk buffers allocated by a store's writers (in use or waiting for reuse), now and
/// at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkBufferStats {
    pub live: usize,
    pub peak: usize,
}

/// Counts chunk buffers from allocation to free, across a store's writers.
#[derive(Debug, Default)]
pub(crate) struct BufferCounter {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl BufferCounter {
    fn track(self: &Arc<Self>) -> LiveBuffer {
        let now = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        LiveBuffer(self.clone())
    }

    pub(crate) fn stats(&self) -> ChunkBufferStats {
        ChunkBufferStats {
            live: self.live.load(Ordering::SeqCst),
            peak: self.peak.load(Ordering::SeqCst),
        }
    }
}

struct LiveBuffer(Arc<BufferCounter>);

impl Drop for LiveBuffer {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One chunk-sized allocation, counted from allocation until it is freed.
struct Block {
    data: Vec<u8>,
    _live: LiveBuffer,
}

/// A writer's idle blocks. Reusing them instead of allocating a fresh chunk for every chunk
/// keeps the allocator out of it: freeing and reallocating 16 MiB blocks from different
/// threads left glibc holding twice the live memory (peak RSS 101 MiB instead of 65 MiB for a
/// 320 MiB passthrough upload).
type Pool = Arc<std::sync::Mutex<Vec<Block>>>;

/// One chunk buffer in use and its permit. Frozen into [`Bytes`] with `Bytes::from_owner`, so
/// the block goes back to the pool and the permit is returned exactly when the last reference
/// to the bytes is dropped (by the upload task and by the HTTP client). Blocks in use plus
/// blocks in the pool never exceed the permits: a block is only allocated by a permit holder
/// that found the pool empty.
struct ChunkBuf {
    /// `Some` until dropped.
    block: Option<Block>,
    pool: Pool,
    _permit: OwnedSemaphorePermit,
}

impl ChunkBuf {
    fn data(&self) -> &Vec<u8> {
        &self.block.as_ref().expect("block until drop").data
    }

    fn data_mut(&mut self) -> &mut Vec<u8> {
        &mut self.block.as_mut().expect("block until drop").data
    }

    fn freeze(self) -> Bytes {
        if self.data().is_empty() {
            // Nothing to hold on to: release the block and the permit now.
            Bytes::new()
        } else {
            Bytes::from_owner(self)
        }
    }
}

impl AsRef<[u8]> for ChunkBuf {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

impl Drop for ChunkBuf {
    fn drop(&mut self) {
        // Before the permit (a field) is released, so the next permit holder finds it.
        if let Some(mut block) = self.block.take() {
            block.data.clear();
            if let Ok(mut pool) = self.pool.lock() {
                pool.push(block);
            }
        }
    }
}

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
    pub buffers: Arc<BufferCounter>,
    /// `ifGenerationMatch` for a one-request conditional overwrite
    /// (`ObjectStore::write_if_generation`); `None` for ordinary writers.
    pub if_generation_match: Option<i64>,
}

impl UploadCtx {
    fn content_type(&self) -> &str {
        self.options
            .content_type
            .as_deref()
            .unwrap_or(DEFAULT_CONTENT_TYPE)
    }

    /// The object's custom metadata: the writer's options plus `extra` (which wins).
    fn merged_metadata(&self, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut metadata = self.options.metadata.clone();
        metadata.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        metadata
    }

    /// The object resource sent when creating the object.
    fn resource_json(
        &self,
        crc: Option<u32>,
        metadata: &BTreeMap<String, String>,
    ) -> serde_json::Value {
        let mut resource = serde_json::json!({
            "name": self.key,
            "contentType": self.content_type(),
        });
        if !metadata.is_empty() {
            resource["metadata"] = serde_json::json!(metadata);
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
    /// The last bytes (at least one), the crc32c of the whole object and the metadata to add
    /// at commit.
    Finish {
        last: Bytes,
        crc: u32,
        extra: BTreeMap<String, String>,
    },
}

struct Session {
    tx: mpsc::Sender<Msg>,
    task: JoinHandle<Result<ObjectMeta>>,
}

pub(crate) struct GcsWriter {
    ctx: Arc<UploadCtx>,
    /// The buffer being filled, once the first byte arrived after the previous flush.
    buf: Option<ChunkBuf>,
    /// [`BUFFERS_PER_WRITER`] permits; every chunk buffer holds one until it is released.
    permits: Arc<Semaphore>,
    /// Blocks of released chunk buffers, for the next ones.
    pool: Pool,
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
            buf: None,
            permits: Arc::new(Semaphore::new(BUFFERS_PER_WRITER)),
            pool: Pool::default(),
            ctx: Arc::new(ctx),
            crc: Crc32c::new(),
            total: 0,
            session: None,
            abort: cancel.child_token(),
            dropped: CancellationToken::new(),
            finished: false,
        }
    }

    fn buffered(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.data().len())
    }

    /// A new, empty chunk buffer; waits while this writer's two buffers are both alive (one
    /// on the wire, one handed over and waiting for it).
    async fn new_buffer(&self) -> Result<ChunkBuf> {
        let permit = tokio::select! {
            biased;
            _ = self.abort.cancelled() => return Err(self.ctx.cancelled("write")),
            permit = self.permits.clone().acquire_owned() => permit
                .map_err(|_| self.ctx.io("write", "chunk buffers closed".into()))?,
        };
        let reused = self.pool.lock().ok().and_then(|mut pool| pool.pop());
        let block = reused.unwrap_or_else(|| Block {
            data: Vec::new(),
            _live: self.ctx.buffers.track(),
        });
        Ok(ChunkBuf {
            block: Some(block),
            pool: self.pool.clone(),
            _permit: permit,
        })
    }

    /// Grows the buffer geometrically but never past one chunk: small objects only cost what
    /// they use, large ones exactly `chunk_size` per buffer.
    fn reserve(&mut self, additional: usize) {
        let large = self.session.is_some();
        let chunk_size = self.ctx.chunk_size;
        let Some(buf) = self.buf.as_mut() else {
            return;
        };
        let data = buf.data_mut();
        let needed = data.len() + additional;
        if needed <= data.capacity() {
            return;
        }
        // Once a chunk has gone out the object is large: take a whole chunk at once.
        let capacity = if large {
            chunk_size
        } else {
            needed
                .max(data.capacity() * 2)
                .max(64 * 1024)
                .min(chunk_size)
        };
        data.reserve_exact(capacity - data.len());
    }

    /// Hands the (full) buffer to the upload task, starting the task on the first chunk.
    async fn flush_full(&mut self) -> Result<()> {
        let Some(buf) = self.buf.take() else {
            return Ok(());
        };
        let chunk = buf.freeze();
        if self.session.is_none() {
            // Capacity 1: the chunk handed over waits here while the previous one is on the
            // wire. The permits, not the channel, bound memory: the next buffer waits for one.
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
            if self.buffered() == self.ctx.chunk_size
                && let Err(e) = self.flush_full().await
            {
                self.shut_down().await;
                return Err(e);
            }
            if self.buf.is_none() {
                match self.new_buffer().await {
                    Ok(buf) => self.buf = Some(buf),
                    Err(e) => {
                        self.shut_down().await;
                        return Err(e);
                    }
                }
            }
            let take = (self.ctx.chunk_size - self.buffered()).min(chunk.len());
            let piece = chunk.split_to(take);
            self.crc.update(&piece);
            self.reserve(piece.len());
            if let Some(buf) = self.buf.as_mut() {
                buf.data_mut().extend_from_slice(&piece);
            }
            self.total += take as u64;
        }
        Ok(())
    }

    async fn commit_with_metadata(
        mut self: Box<Self>,
        extra: BTreeMap<String, String>,
    ) -> Result<ObjectMeta> {
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
        let last = self.buf.take().map(ChunkBuf::freeze).unwrap_or_default();
        match self.session.take() {
            None => upload_small(&self.ctx, last, crc, &extra, &self.abort).await,
            Some(session) => {
                let finish = Msg::Finish { last, crc, extra };
                if session.tx.send(finish).await.is_err() {
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
            Some(Msg::Finish { last, crc, extra }) => {
                let total = offset + last.len() as u64;
                let finale = Finale { total, crc };
                // Only a dropped writer interrupts the finalising request: on a plain
                // cancellation it runs to its end so the outcome is known and reported.
                let sent = tokio::select! {
                    biased;
                    _ = dropped.cancelled() => return Err(ctx.cancelled("commit")),
                    sent = put_bytes(ctx, session, offset, last, Some(&finale), dropped) => sent,
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
                    Err(e) => return finalize_failed(ctx, e, crc, total, &extra).await,
                };
                let object = verify(ctx, object, crc, total).await?;
                return complete_metadata(ctx, object, &extra, crc, total, dropped).await;
            }
        }
    }
}

/// Opens a resumable upload session and returns its URI.
async fn start_session(ctx: &UploadCtx, cancel: &CancellationToken) -> Result<String> {
    let client = &ctx.client;
    let url = client.upload_url(&ctx.bucket);
    let body = ctx.resource_json(None, &ctx.options.metadata).to_string();
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

/// What the finalising request carries beyond the last bytes: the object's size and its
/// crc32c. Not metadata: a session's object metadata is fixed by the request that opens it.
struct Finale {
    total: u64,
    crc: u32,
}

/// Sends `data` (the object's bytes from `offset`) to the session; `last` when these are the
/// final bytes, which finalises the object. Transient failures are retried after asking the
/// server how much it holds, resending only the rest.
async fn put_bytes(
    ctx: &UploadCtx,
    session: &str,
    offset: u64,
    data: Bytes,
    last: Option<&Finale>,
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
                match query_session(ctx, session, last.map(|f| f.total)).await? {
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
                    Some(f) if from == end => format!("bytes */{}", f.total),
                    Some(f) => format!("bytes {from}-{}/{}", end - 1, f.total),
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
                if let Some(f) = last {
                    // The full-object checksum: GCS refuses to finalise if the bytes differ.
                    req = req.header("X-Goog-Hash", format!("crc32c={}", to_base64(f.crc)));
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
pub(crate) async fn upload_small(
    ctx: &UploadCtx,
    data: Bytes,
    crc: u32,
    extra: &BTreeMap<String, String>,
    cancel: &CancellationToken,
) -> Result<ObjectMeta> {
    let client = &ctx.client;
    let url = client.upload_url(&ctx.bucket);
    // 128 random bits: colliding with the payload is not a practical concern.
    let boundary = format!("sluice-{:032x}", rand::random::<u128>());
    let head = Bytes::from(format!(
        "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{}\r\n--{boundary}\r\nContent-Type: {}\r\n\r\n",
        ctx.resource_json(Some(crc), &ctx.merged_metadata(extra)),
        ctx.content_type()
    ));
    let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
    let length = head.len() + data.len() + tail.len();
    let total = data.len() as u64;
    let sent = client
        .retrying("GCS multipart upload", cancel, |_| async {
            let mut query = vec![("uploadType", "multipart".to_string())];
            if let Some(generation) = ctx.if_generation_match {
                query.push(("ifGenerationMatch", generation.to_string()));
            } else if ctx.options.if_absent {
                query.push(("ifGenerationMatch", "0".to_string()));
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
        Ok(object) => verify(ctx, object, crc, total)
            .await
            .map(|object| into_meta(ctx, object)),
        Err(e) => finalize_failed(ctx, e, crc, total, extra).await,
    }
}

/// Maps a failed finalising request: 412 -> `AlreadyExists`, GCS's checksum refusal ->
/// `ChecksumMismatch`, the rest by the generic rules.
async fn finalize_failed(
    ctx: &UploadCtx,
    err: RetryError<Failure>,
    crc: u32,
    total: u64,
    extra: &BTreeMap<String, String>,
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
                if meta.metadata == ctx.merged_metadata(extra) {
                    tracing::info!(url = %ctx.url, "precondition failed on a retry, but the object is the one this writer sent");
                    return Ok(meta);
                }
            }
            Err(match ctx.if_generation_match {
                Some(expected) => StorageError::PreconditionFailed {
                    url: ctx.url.clone(),
                    expected,
                },
                None => StorageError::AlreadyExists {
                    url: ctx.url.clone(),
                },
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

fn into_meta(ctx: &UploadCtx, object: ObjectResource) -> ObjectMeta {
    let mut meta = object.into_meta();
    // Keys are reported as written (the store root is the bucket).
    meta.key = ctx.key.clone();
    meta
}

/// Gives the finalised resumable upload all its metadata: the writer's options went into the
/// session's initiating request; what `commit_with_metadata` added is set here with one
/// documented `objects.patch` under `ifGenerationMatch` (only the object just written) and
/// `ifMetagenerationMatch` (nobody changed its metadata since). Nothing to add (no `extra`,
/// or the server already holds every entry): no request. If the patch fails the object is
/// deleted (that generation) and the commit fails: no object stays visible without its
/// metadata unless the process dies between the two requests, which readers of the metadata
/// must allow for (extract treats such an object as uncommitted).
async fn complete_metadata(
    ctx: &UploadCtx,
    object: ObjectResource,
    extra: &BTreeMap<String, String>,
    crc: u32,
    total: u64,
    cancel: &CancellationToken,
) -> Result<ObjectMeta> {
    let wanted = ctx.merged_metadata(extra);
    if object.has_metadata(&wanted) {
        return Ok(into_meta(ctx, object));
    }
    let generation = object.generation();
    tracing::debug!(url = %ctx.url, ?generation, "finalised: setting the metadata known only at commit");
    let mut preconditions = Vec::new();
    if let Some(g) = generation {
        preconditions.push(("ifGenerationMatch", g.to_string()));
    }
    if let Some(m) = object.metageneration() {
        preconditions.push(("ifMetagenerationMatch", m.to_string()));
    }
    let body = serde_json::json!({ "metadata": wanted });
    let patched = ctx
        .client
        .patch_object(&ctx.bucket, &ctx.key, &body, &preconditions, cancel)
        .await;
    let failure = match patched {
        // fake-gcs-server gives the patched object a new generation (GCS keeps it and bumps
        // the metageneration): report what the server reports now.
        Ok(patched)
            if patched.has_metadata(&wanted)
                && patched.size() == Some(total)
                && patched.crc32c() == Some(crc) =>
        {
            return Ok(into_meta(ctx, patched));
        }
        Ok(_) => ctx.io(
            "set metadata",
            "the patched object is not the one written, or lacks the metadata".into(),
        ),
        Err(RetryError::Exhausted { source, attempts }) => {
            // A 412 after a lost response: the first attempt may have done it.
            if source.status() == Some(412)
                && let Ok(Some(current)) = ctx
                    .client
                    .get_object(&ctx.bucket, &ctx.key, &ctx.url, &CancellationToken::new())
                    .await
                && current.generation() == generation
                && current.has_metadata(&wanted)
            {
                return Ok(into_meta(ctx, current));
            }
            failure_to_storage_error(source, attempts, &ctx.url, "set metadata")
        }
        Err(RetryError::Cancelled { .. }) => ctx.cancelled("set metadata"),
    };
    tracing::error!(url = %ctx.url, error = %failure, "could not set the object's final metadata: deleting it");
    delete_if_current(ctx, generation).await;
    Err(failure)
}

/// Best effort, not cancellable: deletes the object if it is still at `generation`. Checked
/// with a `GET` first because fake-gcs-server ignores `ifGenerationMatch` on `DELETE`.
async fn delete_if_current(ctx: &UploadCtx, generation: Option<i64>) {
    let Some(generation) = generation else {
        return;
    };
    let token = CancellationToken::new();
    match ctx
        .client
        .get_object(&ctx.bucket, &ctx.key, &ctx.url, &token)
        .await
    {
        Ok(Some(current)) if current.generation() == Some(generation) => {}
        _ => return,
    }
    if let Err(e) = ctx
        .client
        .delete_object(&ctx.bucket, &ctx.key, Some(generation), &ctx.url, &token)
        .await
    {
        tracing::error!(url = %ctx.url, error = %e, "could not delete the object");
    }
}

/// Checks a finalised object against what was sent; deletes it (that generation only) and
/// fails if it differs, so no bad object stays visible.
async fn verify(
    ctx: &UploadCtx,
    object: ObjectResource,
    crc: u32,
    total: u64,
) -> Result<ObjectResource> {
    let generation = object.generation();
    let remote_crc = object.crc32c();
    let remote_size = object.size();
    if remote_crc == Some(crc) && remote_size == Some(total) {
        return Ok(object);
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
