//! A synchronous, bounded `Write` in front of an async [`ObjectWriter`].
//!
//! Decoding and Parquet encoding are CPU work and run on blocking threads; uploads are async.
//! [`ObjectSink`] bridges them: bytes are hashed (SHA-256) and gathered into 1 MiB chunks on the
//! calling thread, then handed through a small bounded channel to an upload task that owns the
//! store's writer. A slow store blocks the producer (backpressure), so memory stays bounded,
//! and encoding overlaps with uploading.
//!
//! The object becomes visible only on [`ObjectSink::commit`]. Dropping the sink, an error on
//! either side, or cancellation aborts the upload, and the store guarantees nothing is visible.
//!
//! What is only known once the last byte is written goes on the object at commit
//! ([`sluice_storage::ObjectWriter::commit_with_metadata`]): `sluice-bytes`, `sluice-sha256`
//! and, when the sink counts rows, `sluice-rows`. An object without them (or with other
//! values than its receipt records) is not a committed output; see [`has_committed_metadata`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use sluice_runtime::CancellationToken;
use sluice_storage::{ObjectMeta, ObjectStore, WriteOptions};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::{ExtractError, Result};

/// Bytes gathered before a chunk is handed to the upload task.
pub(crate) const CHUNK: usize = 1024 * 1024;
/// Chunks in flight between the producer and the upload task.
const CHANNEL_CHUNKS: usize = 4;

/// Object metadata set at commit: data rows (Parquet), or lines (rejects JSONL).
pub(crate) const META_ROWS: &str = "sluice-rows";
/// Object metadata set at commit: the object's size in bytes.
pub(crate) const META_BYTES: &str = "sluice-bytes";
/// Object metadata set at commit: lowercase hex SHA-256 of the object's bytes.
pub(crate) const META_SHA256: &str = "sluice-sha256";

/// The metadata an object gets at commit.
pub(crate) fn committed_metadata(
    bytes: u64,
    sha256: &str,
    rows: Option<u64>,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(META_BYTES.to_string(), bytes.to_string());
    m.insert(META_SHA256.to_string(), sha256.to_string());
    if let Some(rows) = rows {
        m.insert(META_ROWS.to_string(), rows.to_string());
    }
    m
}

/// Whether an object's metadata says it is the committed object a receipt describes: the
/// commit-time entries are there, with the recorded values.
pub(crate) fn has_committed_metadata(
    metadata: &BTreeMap<String, String>,
    bytes: u64,
    sha256: &str,
    rows: Option<u64>,
) -> bool {
    committed_metadata(bytes, sha256, rows)
        .iter()
        .all(|(k, v)| metadata.get(k) == Some(v))
}

/// How a sink learns the row count it records as `sluice-rows`.
#[derive(Debug, Clone, Default)]
pub(crate) enum RowCount {
    /// Not counted (passthrough): no `sluice-rows`.
    #[default]
    None,
    /// Counted by the producer: what `counter` grew by between [`ObjectSink::with_rows`] and
    /// the commit. The producer must have counted every row before it commits.
    Counter(Arc<AtomicU64>),
    /// One row per line (JSON Lines): the newlines written.
    Lines,
}

/// A [`RowCount`] in progress.
#[derive(Debug)]
enum Rows {
    None,
    Counter { counter: Arc<AtomicU64>, start: u64 },
    Lines(u64),
}

/// Opens sinks on one store from blocking threads.
#[derive(Clone)]
pub(crate) struct SinkFactory {
    store: Arc<dyn ObjectStore>,
    handle: Handle,
    cancel: CancellationToken,
}

/// What a committed sink wrote.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    pub meta: ObjectMeta,
    /// Lowercase hex SHA-256 of the object's bytes.
    pub sha256: String,
    /// What the object's `sluice-rows` says, if the sink counted rows.
    pub rows: Option<u64>,
}

impl SinkFactory {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        handle: Handle,
        cancel: CancellationToken,
    ) -> Self {
        SinkFactory {
            store,
            handle,
            cancel,
        }
    }

    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Starts an upload to `key`. Cheap: the store's writer is opened by the upload task, and
    /// an opening error surfaces on the first write or the commit.
    pub(crate) fn open(
        &self,
        key: &str,
        metadata: BTreeMap<String, String>,
        content_type: &str,
    ) -> ObjectSink {
        let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
        let (commit_tx, commit_rx) = oneshot::channel::<BTreeMap<String, String>>();
        let store = self.store.clone();
        let cancel = self.cancel.clone();
        let options = WriteOptions {
            if_absent: false,
            metadata,
            content_type: Some(content_type.to_string()),
        };
        let task_key = key.to_string();
        let task = self.handle.spawn(async move {
            let mut writer = store.writer(&task_key, options).await?;
            loop {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => {
                        let _ = writer.abort().await;
                        return Err(ExtractError::Cancelled);
                    }
                    chunk = rx.recv() => match chunk {
                        Some(chunk) => writer.write(chunk).await?,
                        None => break,
                    },
                }
            }
            // The producer closed the channel: commit only if it said so (with the metadata
            // known at the end); a dropped sink (error, panic) aborts.
            match commit_rx.await {
                Ok(extra) if !cancel.is_cancelled() => {
                    Ok(writer.commit_with_metadata(extra).await?)
                }
                _ => {
                    let _ = writer.abort().await;
                    Err(ExtractError::Cancelled)
                }
            }
        });
        ObjectSink {
            key: key.to_string(),
            handle: self.handle.clone(),
            tx: Some(tx),
            commit_tx: Some(commit_tx),
            task: Some(task),
            buf: BytesMut::with_capacity(CHUNK),
            hasher: Sha256::new(),
            bytes: 0,
            rows: Rows::None,
        }
    }
}

/// See the module docs. Not for use from async code (it blocks).
pub(crate) struct ObjectSink {
    key: String,
    handle: Handle,
    tx: Option<mpsc::Sender<Bytes>>,
    commit_tx: Option<oneshot::Sender<BTreeMap<String, String>>>,
    task: Option<JoinHandle<Result<ObjectMeta>>>,
    buf: BytesMut,
    hasher: Sha256,
    bytes: u64,
    rows: Rows,
}

impl ObjectSink {
    /// Records rows as `sluice-rows` at commit: counted by the producer in a counter (from
    /// its value now), or one per line written.
    pub(crate) fn with_rows(mut self, rows: RowCount) -> Self {
        self.rows = match rows {
            RowCount::None => Rows::None,
            RowCount::Counter(counter) => {
                let start = counter.load(Ordering::SeqCst);
                Rows::Counter { counter, start }
            }
            RowCount::Lines => Rows::Lines(0),
        };
        self
    }

    fn count(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        if let Rows::Lines(lines) = &mut self.rows {
            *lines += data.iter().filter(|&&b| b == b'\n').count() as u64;
        }
    }

    fn rows(&self) -> Option<u64> {
        match &self.rows {
            Rows::None => None,
            Rows::Counter { counter, start } => {
                Some(counter.load(Ordering::SeqCst).saturating_sub(*start))
            }
            Rows::Lines(lines) => Some(*lines),
        }
    }

    pub(crate) fn write_all_bytes(&mut self, data: &[u8]) -> Result<()> {
        self.count(data);
        let mut rest = data;
        while !rest.is_empty() {
            let room = CHUNK - self.buf.len();
            let take = room.min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() >= CHUNK {
                self.send_buffer()?;
            }
        }
        Ok(())
    }

    /// Like [`Self::write_all_bytes`] for data already in a `Bytes` (no copy when the buffer
    /// is empty and the chunk is big).
    pub(crate) fn write_bytes(&mut self, data: Bytes) -> Result<()> {
        if self.buf.is_empty() && data.len() >= CHUNK / 4 {
            self.count(&data);
            return self.send(data);
        }
        self.write_all_bytes(&data)
    }

    fn send_buffer(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK);
        self.send(chunk)
    }

    fn send(&mut self, chunk: Bytes) -> Result<()> {
        let Some(tx) = &self.tx else {
            return Err(ExtractError::Internal(format!(
                "{}: write after close",
                self.key
            )));
        };
        if tx.blocking_send(chunk).is_err() {
            // The upload task ended early: its error is the real one.
            return Err(self.task_error());
        }
        Ok(())
    }

    fn task_error(&mut self) -> ExtractError {
        self.tx = None;
        match self.task.take() {
            Some(task) => match self.handle.block_on(task) {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => ExtractError::Internal(format!("{}: upload ended early", self.key)),
                Err(join) => {
                    ExtractError::internal_source(format!("{}: upload task", self.key), join)
                }
            },
            None => ExtractError::Internal(format!("{}: upload already finished", self.key)),
        }
    }

    /// Uploads what is buffered, makes the object visible with its commit-time metadata
    /// (`sluice-bytes`, `sluice-sha256`, `sluice-rows`) and returns what was written.
    /// Takes `&mut self` so it can be called through writers that own the sink (Parquet's);
    /// the sink is unusable afterwards.
    pub(crate) fn commit(&mut self) -> Result<Committed> {
        self.send_buffer()?;
        self.tx = None;
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let rows = self.rows();
        if let Some(commit) = self.commit_tx.take() {
            let _ = commit.send(committed_metadata(self.bytes, &sha256, rows));
        }
        let task = self
            .task
            .take()
            .ok_or_else(|| ExtractError::Internal(format!("{}: committed twice", self.key)))?;
        let meta = match self.handle.block_on(task) {
            Ok(result) => result?,
            Err(join) => {
                return Err(ExtractError::Internal(format!(
                    "{}: upload task: {join}",
                    self.key
                )));
            }
        };
        Ok(Committed { meta, sha256, rows })
    }

    /// Discards the upload and waits until the store has cleaned up.
    pub(crate) fn abort(mut self) {
        self.tx = None;
        self.commit_tx = None;
        if let Some(task) = self.task.take() {
            let _ = self.handle.block_on(task);
        }
    }
}

impl std::io::Write for ObjectSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all_bytes(buf).map_err(ExtractError::into_io)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ObjectSink {
    fn drop(&mut self) {
        // Closing the channel without the commit signal makes the task abort the upload.
        self.tx = None;
        self.commit_tx = None;
    }
}
