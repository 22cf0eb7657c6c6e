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

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use sluice_runtime::CancellationToken;
use sluice_storage::{ObjectMeta, ObjectStore, WriteOptions};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::{ExtractError, Result};

/// Bytes gathered before a chunk is handed to the upload task.
pub const CHUNK: usize = 1024 * 1024;
/// Chunks in flight between the producer and the upload task.
const CHANNEL_CHUNKS: usize = 4;

/// Opens sinks on one store from blocking threads.
#[derive(Clone)]
pub struct SinkFactory {
    store: Arc<dyn ObjectStore>,
    handle: Handle,
    cancel: CancellationToken,
}

/// What a committed sink wrote.
#[derive(Debug, Clone)]
pub struct Committed {
    pub meta: ObjectMeta,
    /// Lowercase hex SHA-256 of the object's bytes.
    pub sha256: String,
    pub bytes: u64,
}

impl SinkFactory {
    pub fn new(store: Arc<dyn ObjectStore>, handle: Handle, cancel: CancellationToken) -> Self {
        SinkFactory {
            store,
            handle,
            cancel,
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Starts an upload to `key`. Cheap: the store's writer is opened by the upload task, and
    /// an opening error surfaces on the first write or the commit.
    pub fn open(
        &self,
        key: &str,
        metadata: BTreeMap<String, String>,
        content_type: &str,
    ) -> ObjectSink {
        let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
        let (commit_tx, commit_rx) = oneshot::channel::<()>();
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
            // The producer closed the channel: commit only if it said so; a dropped sink
            // (error, panic) aborts.
            match commit_rx.await {
                Ok(()) if !cancel.is_cancelled() => Ok(writer.commit().await?),
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
        }
    }
}

/// See the module docs. Not for use from async code (it blocks).
pub struct ObjectSink {
    key: String,
    handle: Handle,
    tx: Option<mpsc::Sender<Bytes>>,
    commit_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<ObjectMeta>>>,
    buf: BytesMut,
    hasher: Sha256,
    bytes: u64,
}

impl ObjectSink {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn write_all_bytes(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
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
    pub fn write_bytes(&mut self, data: Bytes) -> Result<()> {
        if self.buf.is_empty() && data.len() >= CHUNK / 4 {
            self.hasher.update(&data);
            self.bytes += data.len() as u64;
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
                Err(join) => ExtractError::Internal(format!("{}: upload task: {join}", self.key)),
            },
            None => ExtractError::Internal(format!("{}: upload already finished", self.key)),
        }
    }

    /// Uploads what is buffered, makes the object visible and returns what was written.
    /// Takes `&mut self` so it can be called through writers that own the sink (Parquet's);
    /// the sink is unusable afterwards.
    pub fn commit(&mut self) -> Result<Committed> {
        self.send_buffer()?;
        self.tx = None;
        if let Some(commit) = self.commit_tx.take() {
            let _ = commit.send(());
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
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        Ok(Committed {
            meta,
            sha256,
            bytes: self.bytes,
        })
    }

    /// Discards the upload and waits until the store has cleaned up.
    pub fn abort(mut self) {
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
