//! One object-store interface over `gs://bucket/prefix` and local directories.
//!
//! Writers stream and commit atomically: until [`ObjectWriter::commit`] returns, no object is
//! visible at the key; a dropped, aborted or failed writer leaves nothing behind.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Range;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

/// Everything an object store can tell about one object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectMeta {
    /// Key relative to the store root (`dir/name.parquet`), `/`-separated.
    pub key: String,
    pub size: u64,
    /// GCS object generation; `None` for local files.
    pub generation: Option<i64>,
    /// CRC32C (Castagnoli) of the whole object, when known.
    pub crc32c: Option<u32>,
    /// Custom key/value metadata (GCS `metadata`; local: a sidecar).
    pub metadata: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub updated: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Create only if no object exists at the key (GCS `ifGenerationMatch=0`).
    pub if_absent: bool,
    pub metadata: BTreeMap<String, String>,
    pub content_type: Option<String>,
}

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{url}: not found")]
    NotFound { url: String },
    #[error("{url}: already exists (create-only-if-absent)")]
    AlreadyExists { url: String },
    #[error("{url}: crc32c mismatch: wrote {local:08x}, store reports {remote:08x}")]
    ChecksumMismatch {
        url: String,
        local: u32,
        remote: u32,
    },
    #[error("{url}: invalid location: {reason}")]
    InvalidLocation { url: String, reason: String },
    #[error("{url}: {operation} cancelled")]
    Cancelled {
        url: String,
        operation: &'static str,
    },
    #[error("{url}: {operation} failed: {source}")]
    Io {
        url: String,
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + Debug {
    /// `gs://bucket/prefix` or `file:///abs/dir`: the root keys are relative to.
    fn root_url(&self) -> String;

    /// Full URL of `key` (for messages and metadata).
    fn url_of(&self, key: &str) -> String;

    /// Every object whose key starts with `prefix` (recursive), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Metadata of one object, `None` when absent.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;

    /// Streams the object's bytes, or `range` of them.
    async fn read(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream>;

    /// Starts an atomic streaming write.
    async fn writer(&self, key: &str, options: WriteOptions) -> Result<Box<dyn ObjectWriter>>;

    /// Deletes an object; absent is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
}

#[async_trait::async_trait]
pub trait ObjectWriter: Send {
    /// Appends bytes (buffered in bounded chunks; backpressure when the store is slow).
    async fn write(&mut self, chunk: Bytes) -> Result<()>;

    /// Makes the object visible and checks the store's crc32c against the one computed while
    /// writing. On error no object is visible.
    async fn commit(self: Box<Self>) -> Result<ObjectMeta>;

    /// Discards everything written; no object becomes visible. Dropping a writer also aborts.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// Keys under `pattern`'s literal prefix that match the glob (`**` crosses `/`).
pub async fn list_glob(store: &dyn ObjectStore, pattern: &str) -> Result<Vec<ObjectMeta>> {
    let _ = (store, pattern);
    todo!()
}

/// How to reach Cloud Storage; the binary fills it from flags/env.
#[derive(Debug, Clone, Default)]
pub struct StoreConfig {
    /// `STORAGE_EMULATOR_HOST` (`http://127.0.0.1:4443` or `127.0.0.1:4443`): anonymous credentials.
    pub gcs_emulator_host: Option<String>,
    pub cancel: sluice_runtime::CancellationToken,
}

/// Opens the store for `url` (`gs://bucket[/prefix]`, `file:///dir`, or a local path) and returns
/// it with the prefix inside it (`""` for a bucket root or a local dir).
pub async fn open(
    url: &str,
    config: &StoreConfig,
) -> Result<(std::sync::Arc<dyn ObjectStore>, String)> {
    let _ = (url, config);
    todo!()
}
