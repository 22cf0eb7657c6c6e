//! One object-store interface over `gs://bucket/prefix` and local directories.
//!
//! Writers stream and commit atomically: until [`ObjectWriter::commit`] returns, no object is
//! visible at the key; a dropped, aborted or failed writer leaves nothing behind.

#![warn(unreachable_pub)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Range;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

mod crc;
mod gcs;
mod glob;
mod local;
mod local_sync;
mod location;
pub mod preflight;

pub use crc::to_base64 as crc32c_to_base64;
pub use gcs::{ChunkBufferStats, DEFAULT_CHUNK_SIZE, GcsOptions, GcsStore};
pub use glob::glob_base;
pub use local::LocalStore;
pub use location::{Location, join_key};
pub use preflight::CredentialSetup;

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
    /// [`ObjectStore::write_if_generation`]: the object is no longer at the generation the
    /// caller read (another writer got there first; re-read and try again).
    #[error("{url}: changed since it was read (expected generation {expected}; 0 = absent)")]
    PreconditionFailed { url: String, expected: i64 },
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
    /// Something the user has to set up (a bucket, credentials); retrying cannot help, so the
    /// binaries exit 2. `problem` names the fix.
    #[error("{url}: {problem}")]
    Setup { url: String, problem: String },
}

impl StorageError {
    /// A setup mistake (missing bucket, no credentials): a usage error, not a failed task.
    pub fn is_setup(&self) -> bool {
        matches!(self, StorageError::Setup { .. })
    }
}

/// Setup mistakes and locations that cannot name an object are the user's to fix (exit 2);
/// everything else failed the task (exit 1, Cloud Run retries it).
impl sluice_runtime::ExitStatus for StorageError {
    fn exit_code(&self) -> sluice_runtime::ExitCode {
        match self {
            StorageError::Setup { .. } | StorageError::InvalidLocation { .. } => {
                sluice_runtime::ExitCode::Usage
            }
            StorageError::NotFound { .. }
            | StorageError::AlreadyExists { .. }
            | StorageError::PreconditionFailed { .. }
            | StorageError::ChecksumMismatch { .. }
            | StorageError::Cancelled { .. }
            | StorageError::Io { .. } => sluice_runtime::ExitCode::TaskFailed,
        }
    }
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

    /// Writes a small object in one request, only if the object at `key` is still at
    /// `generation` as [`ObjectStore::head`] reported it (`0`: only if there is none): GCS's
    /// `ifGenerationMatch`. Otherwise [`StorageError::PreconditionFailed`] and nothing changes.
    /// For read-modify-write of small shared files (`head`, read, change, write, and on a
    /// precondition failure start over). Local directories do the same under a lock file, and
    /// report a generation for objects written this way (`docs/storage.md`).
    async fn write_if_generation(
        &self,
        key: &str,
        data: Bytes,
        generation: i64,
        options: WriteOptions,
    ) -> Result<ObjectMeta>;

    /// From now on, a commit may leave the fsync of its directory (which makes the rename
    /// durable) to the next [`ObjectStore::sync`]: for writers of many objects that record
    /// them in batches. Local directories only; elsewhere a commit is durable when it returns.
    fn defer_directory_syncs(&self) {}

    /// Makes every commit so far durable (the directory fsyncs
    /// [`ObjectStore::defer_directory_syncs`] put off, each directory once).
    async fn sync(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait::async_trait]
pub trait ObjectWriter: Send {
    /// Appends bytes (buffered in bounded chunks; backpressure when the store is slow).
    async fn write(&mut self, chunk: Bytes) -> Result<()>;

    /// Makes the object visible and checks the store's crc32c against the one computed while
    /// writing. On error no object is visible.
    async fn commit(self: Box<Self>) -> Result<ObjectMeta> {
        self.commit_with_metadata(BTreeMap::new()).await
    }

    /// [`Self::commit`], adding `extra` to the object's custom metadata: for what is only
    /// known once the last byte is written (row counts, content hashes). `extra` entries
    /// replace entries of [`WriteOptions::metadata`] with the same key. The returned
    /// [`ObjectMeta::metadata`] holds both.
    ///
    /// Local directories and GCS objects small enough for one request get all of it
    /// atomically with the data. A GCS resumable upload cannot carry it (GCS takes a session's
    /// object metadata only in the request that opens it), so the object is patched right
    /// after finalisation (`objects.patch` with `ifGenerationMatch` + `ifMetagenerationMatch`):
    /// for that short window the object exists without `extra`. If the patch fails the object
    /// is deleted (that generation only) and the commit fails. See `docs/storage.md`.
    async fn commit_with_metadata(
        self: Box<Self>,
        extra: BTreeMap<String, String>,
    ) -> Result<ObjectMeta>;

    /// Discards everything written; no object becomes visible. Dropping a writer also aborts.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// Keys under `pattern`'s literal prefix that match the glob, with `gcloud storage`'s
/// wildcards: `**` crosses `/` anywhere (`raw/**.parquet`), `*`, `?` and `[...]` match within
/// one `/`-separated segment, `**/` also matches zero directories. Only the literal prefix
/// before the first wildcard is listed, so put wildcards late in the pattern. An empty pattern
/// or one ending in `/` names no object and is refused (`InvalidLocation`).
pub async fn list_glob(store: &dyn ObjectStore, pattern: &str) -> Result<Vec<ObjectMeta>> {
    glob::list_glob(store, pattern).await
}

/// How to reach Cloud Storage; the binary fills it from flags/env.
#[derive(Debug, Clone, Default)]
pub struct StoreConfig {
    /// `STORAGE_EMULATOR_HOST` (`http://127.0.0.1:4443` or `127.0.0.1:4443`): anonymous credentials.
    pub gcs_emulator_host: Option<String>,
    pub cancel: sluice_runtime::CancellationToken,
    /// GCS resumable upload chunk in bytes (a positive multiple of 256 KiB); `None`:
    /// [`DEFAULT_CHUNK_SIZE`]. Each GCS writer holds at most two chunks in memory.
    pub upload_chunk_size: Option<usize>,

    /// Tags this process's local temp files (`[A-Za-z0-9_-]`, e.g. `task-00003`; the binary
    /// uses the Cloud Run task index). A writer that opens a directory for the first time in a
    /// process removes the temp files an earlier, killed process with the same owner left there
    /// (never those of a live writer: each holds a lock on its file). `None`: no cleanup.
    pub temp_owner: Option<String>,
    /// Where Google credentials come from, for [`open`]'s credentials probe.
    pub credentials: CredentialSetup,
}

/// Opens the store for `url` (`gs://bucket[/prefix]`, `file:///dir`, or a local path) and returns
/// it with the prefix inside it (`""` for a bucket root or a local dir).
///
/// For `gs://` it checks the setup first ([`GcsStore::preflight`]): credentials can be had and
/// the bucket exists, else [`StorageError::Setup`] within seconds.
pub async fn open(
    url: &str,
    config: &StoreConfig,
) -> Result<(std::sync::Arc<dyn ObjectStore>, String)> {
    match Location::parse(url)? {
        Location::Local { root } => Ok((
            std::sync::Arc::new(
                LocalStore::new(root, config.cancel.clone())
                    .with_temp_owner(config.temp_owner.as_deref()),
            ),
            String::new(),
        )),
        Location::Gcs { bucket, prefix } => {
            let store = GcsStore::connect(&bucket, GcsOptions::from_config(config)).await?;
            store.preflight(&config.credentials).await?;
            Ok((std::sync::Arc::new(store), prefix))
        }
    }
}

/// Reads a whole object into memory, refusing objects larger than `max_bytes` (for manifests,
/// schemas and other small files; stream anything else).
pub async fn read_to_bytes(store: &dyn ObjectStore, key: &str, max_bytes: u64) -> Result<Bytes> {
    use futures::StreamExt;
    let mut stream = store.read(key, None).await?;
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if (out.len() + chunk.len()) as u64 > max_bytes {
            return Err(StorageError::Io {
                url: store.url_of(key),
                operation: "read into memory",
                source: format!("object is larger than the {max_bytes}-byte limit").into(),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Writes `data` to `key` in one go and commits (small objects; stream anything else).
pub async fn write_bytes(
    store: &dyn ObjectStore,
    key: &str,
    data: Bytes,
    options: WriteOptions,
) -> Result<ObjectMeta> {
    let mut writer = store.writer(key, options).await?;
    writer.write(data).await?;
    writer.commit().await
}

fn bad_range(url: &str, range: &Range<u64>) -> StorageError {
    StorageError::Io {
        url: url.to_string(),
        operation: "read",
        source: format!("invalid range {}..{}", range.start, range.end).into(),
    }
}

/// The rule both backends follow for `read(key, Some(range))` on an object of `size` bytes:
/// a non-empty range must start inside the object and is cut at its end; an empty range may
/// start at the end. Returns `(start, len)`.
fn resolve_range(url: &str, range: Option<Range<u64>>, size: u64) -> Result<(u64, u64)> {
    let Some(range) = range else {
        return Ok((0, size));
    };
    if range.start > range.end {
        return Err(bad_range(url, &range));
    }
    let starts_past_end = if range.start == range.end {
        range.start > size
    } else {
        range.start >= size
    };
    if starts_past_end {
        return Err(StorageError::Io {
            url: url.to_string(),
            operation: "read",
            source: format!(
                "range {}..{} starts past the end of the {size}-byte object",
                range.start, range.end
            )
            .into(),
        });
    }
    Ok((range.start, range.end.min(size) - range.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(resolve_range("u", None, 10).unwrap(), (0, 10));
        assert_eq!(resolve_range("u", Some(2..5), 10).unwrap(), (2, 3));
        assert_eq!(resolve_range("u", Some(8..50), 10).unwrap(), (8, 2));
        assert_eq!(resolve_range("u", Some(10..10), 10).unwrap(), (10, 0));
        assert!(resolve_range("u", Some(10..11), 10).is_err());
        assert!(resolve_range("u", Some(11..11), 10).is_err());
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 5..2;
        assert!(resolve_range("u", Some(reversed), 10).is_err());
    }
}
