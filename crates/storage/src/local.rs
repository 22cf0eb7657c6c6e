//! The local-directory backend.
//!
//! Keys are `/`-separated paths under the root directory. A writer streams into a hidden temp
//! file next to the target (`.{name}.sluice-tmp-{random}`), hashing as it goes, then fsyncs
//! and renames it into place on commit, so readers see either nothing or the whole object.
//! Custom metadata, content type and the crc32c live in a hidden sidecar
//! (`.{name}.sluice-meta.json`) that is put in place before the data.

use std::collections::BTreeMap;
use std::io::{ErrorKind, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::sync::CancellationToken;

use crate::crc::Crc32c;
use crate::local_sync::{DeferredSyncs, sync_dir};
use crate::location::{
    LOCAL_META_SUFFIX, LOCAL_TMP_MARKER, is_local_internal_name, validate_local_key,
};
use crate::{
    ByteStream, ObjectMeta, ObjectStore, ObjectWriter, Result, StorageError, WriteOptions,
};

/// Write buffer in front of the temp file: big enough that each write is one syscall-sized
/// block on the blocking pool, small enough to be irrelevant next to a GCS chunk.
const WRITE_BUFFER: usize = 1024 * 1024;
/// Chunk size of streamed reads.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// A store rooted at a local directory (which need not exist until the first write).
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    root_url: String,
    cancel: CancellationToken,
    /// Sanitised [`crate::StoreConfig::temp_owner`]; `None`: temp files are untagged and no
    /// directory is swept.
    temp_owner: Option<String>,
    /// Directory fsyncs put off until [`ObjectStore::sync`] (shared with clones and writers).
    deferred: Arc<DeferredSyncs>,
}

/// What the sidecar records. `size` lets a reader notice a sidecar that does not belong to the
/// data next to it (left over from a crash or a lost create-if-absent race) and ignore it.
#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
    size: u64,
    crc32c: u32,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    content_type: Option<String>,
    /// Set only by [`ObjectStore::write_if_generation`], which needs one to compare against;
    /// objects written by ordinary writers have none (and report none, as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generation: Option<i64>,
}

fn io_err(url: &str, operation: &'static str, source: std::io::Error) -> StorageError {
    StorageError::Io {
        url: url.to_string(),
        operation,
        source: Box::new(source),
    }
}

fn other_err(url: &str, operation: &'static str, msg: String) -> StorageError {
    StorageError::Io {
        url: url.to_string(),
        operation,
        source: msg.into(),
    }
}

fn sidecar_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}{LOCAL_META_SUFFIX}"))
}

/// Owner tag of untagged temp files (never swept).
const NO_OWNER: &str = "_";

/// `.{name}.sluice-tmp-{owner}.{run}.{random}`: the owner (task) and this process's run id let
/// a later process of the same owner recognise what an earlier one left behind.
fn temp_path(path: &Path, owner: Option<&str>) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let random: u32 = rand::random();
    let owner = owner.unwrap_or(NO_OWNER);
    let run = process_run_id();
    path.with_file_name(format!(
        ".{name}{LOCAL_TMP_MARKER}{owner}.{run:08x}.{random:08x}"
    ))
}

/// Random per process: tells this process's temp files from those of an earlier attempt with
/// the same owner.
fn process_run_id() -> u32 {
    static RUN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *RUN.get_or_init(rand::random)
}

/// `(owner, run)` of a temp file name made by [`temp_path`].
fn parse_temp_name(name: &str) -> Option<(&str, u32)> {
    let tail = &name[name.rfind(LOCAL_TMP_MARKER)? + LOCAL_TMP_MARKER.len()..];
    let mut parts = tail.rsplitn(3, '.');
    let _random = parts.next()?;
    let run = u32::from_str_radix(parts.next()?, 16).ok()?;
    Some((parts.next()?, run))
}

/// Keeps `[A-Za-z0-9_-]`, so the tag can neither split the name nor leave the directory.
fn sanitise_owner(owner: &str) -> Option<String> {
    let clean: String = owner
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    (!clean.is_empty() && clean != NO_OWNER).then_some(clean)
}

/// Creates a temp file and takes an exclusive lock on it, held until the file is renamed or
/// removed: a sweeping process can then tell a live writer's file (locked) from a dead one's.
/// The kernel drops the lock when the process dies, SIGKILL included.
fn create_locked(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    if let Err(e) = file.try_lock() {
        // Only a filesystem without locks gets here; the file is fresh, so nobody else holds it.
        tracing::debug!(path = %path.display(), error = %e, "cannot lock temp file");
    }
    Ok(file)
}

/// Directories (with owner) already swept by this process.
fn swept() -> &'static std::sync::Mutex<std::collections::HashSet<(PathBuf, String)>> {
    static SWEPT: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashSet<(PathBuf, String)>>,
    > = std::sync::OnceLock::new();
    SWEPT.get_or_init(Default::default)
}

/// Blocking: removes the temp files in `dir` that an earlier process of `owner` left behind:
/// same owner, another run id, and not locked (so not a live writer's, even one of a second
/// process running under the same owner). Other owners' files are never touched.
fn sweep_stale_temp_files(dir: &Path, owner: &str) -> std::io::Result<usize> {
    let run = process_run_id();
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.starts_with('.') {
            continue;
        }
        let Some((file_owner, file_run)) = parse_temp_name(&name) else {
            continue;
        };
        if file_owner != owner || file_run == run {
            continue;
        }
        let path = entry.path();
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) else {
            continue;
        };
        if file.try_lock().is_err() {
            tracing::debug!(path = %path.display(), "temp file of this owner is in use; keeping it");
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                removed += 1;
                tracing::info!(
                    path = %path.display(),
                    "removed a temp file an earlier attempt of this task left behind"
                );
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        drop(file);
    }
    Ok(removed)
}

fn to_utc(time: std::io::Result<std::time::SystemTime>) -> Option<chrono::DateTime<chrono::Utc>> {
    time.ok().map(chrono::DateTime::<chrono::Utc>::from)
}

/// Blocking: the object's metadata from its file and sidecar, `None` if no regular file.
fn stat_object(key: &str, path: &Path) -> std::io::Result<Option<ObjectMeta>> {
    let file = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mut meta = ObjectMeta {
        key: key.to_string(),
        size: file.len(),
        updated: to_utc(file.modified()),
        ..ObjectMeta::default()
    };
    match std::fs::read(sidecar_path(path)) {
        Ok(raw) => match serde_json::from_slice::<Sidecar>(&raw) {
            Ok(sidecar) if sidecar.size == file.len() => {
                meta.crc32c = Some(sidecar.crc32c);
                meta.generation = sidecar.generation;
                meta.metadata = sidecar.metadata;
                meta.content_type = sidecar.content_type;
            }
            Ok(_) => tracing::debug!(key, "ignoring a sidecar whose size does not match the data"),
            Err(e) => tracing::warn!(key, error = %e, "ignoring an unreadable metadata sidecar"),
        },
        // Files put there by other tools have no sidecar: no metadata, crc32c unknown.
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(Some(meta))
}

impl LocalStore {
    /// Before a write of `key`: its path and URL, refused once the store is cancelled, with
    /// the parent directories created.
    async fn prepare_write(&self, key: &str) -> Result<(PathBuf, String)> {
        let path = self.checked_path(key)?;
        let url = self.url_of(key);
        if self.cancel.is_cancelled() {
            return Err(StorageError::Cancelled {
                url,
                operation: "write",
            });
        }
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_err(&url, "create parent directories", e))?;
        }
        Ok((path, url))
    }

    /// A store rooted at `root` (should be absolute; [`crate::open`] makes it so).
    pub fn new(root: impl Into<PathBuf>, cancel: CancellationToken) -> Self {
        let root = root.into();
        let shown = root.to_string_lossy();
        let root_url = format!("file://{}", shown.trim_end_matches('/'));
        LocalStore {
            root,
            root_url,
            cancel,
            temp_owner: None,
            deferred: Arc::default(),
        }
    }

    /// Tags temp files with `owner` (see [`crate::StoreConfig::temp_owner`]) and sweeps stale
    /// ones of the same owner from each directory this process writes to, once per directory.
    pub fn with_temp_owner(mut self, owner: Option<&str>) -> Self {
        self.temp_owner = owner.and_then(sanitise_owner);
        self
    }

    /// Sweeps `dir` once per process and owner (see [`sweep_stale_temp_files`]). Failures are
    /// logged, not fatal: a stale hidden file is untidy, not wrong.
    async fn sweep_once(&self, dir: &Path) {
        let Some(owner) = self.temp_owner.clone() else {
            return;
        };
        let first = swept()
            .lock()
            .map(|mut set| set.insert((dir.to_path_buf(), owner.clone())))
            .unwrap_or(false);
        if !first {
            return;
        }
        let dir = dir.to_path_buf();
        let shown = dir.display().to_string();
        match tokio::task::spawn_blocking(move || sweep_stale_temp_files(&dir, &owner)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(dir = %shown, error = %e, "could not sweep stale temp files")
            }
            Err(e) => tracing::warn!(dir = %shown, error = %e, "temp file sweep failed"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn checked_path(&self, key: &str) -> Result<PathBuf> {
        validate_local_key(&self.url_of(key), key)?;
        Ok(self.root.join(key))
    }

    /// Blocking walk of the tree under `prefix`'s directory part.
    fn walk(&self, prefix: &str) -> std::io::Result<Vec<ObjectMeta>> {
        // Start at the deepest directory the prefix names in full: `raw/2024/pa` -> `raw/2024`.
        let start_key = match prefix.rfind('/') {
            Some(at) => &prefix[..at],
            None => "",
        };
        let mut out = Vec::new();
        let mut stack = vec![(self.root.join(start_key), start_key.to_string())];
        while let Some((dir, dir_key)) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e)
                    if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    tracing::warn!(path = %entry.path().display(), "skipping a non-UTF-8 file name");
                    continue;
                };
                if is_local_internal_name(&name) {
                    continue;
                }
                let key = if dir_key.is_empty() {
                    name
                } else {
                    format!("{dir_key}/{name}")
                };
                // Do not follow directory symlinks (loops); file symlinks are read through.
                if entry.file_type()?.is_dir() {
                    let as_dir = format!("{key}/");
                    if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                        stack.push((entry.path(), key));
                    }
                } else if key.starts_with(prefix)
                    && let Some(meta) = stat_object(&key, &entry.path())?
                {
                    out.push(meta);
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

async fn blocking<T: Send + 'static>(
    url: &str,
    operation: &'static str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| other_err(url, operation, format!("blocking task failed: {e}")))?
        .map_err(|e| io_err(url, operation, e))
}

/// Ends `stream` with a `Cancelled` error (never a silent, truncated end) once `cancel` fires.
pub(crate) fn cancellable(
    stream: ByteStream,
    cancel: CancellationToken,
    url: String,
) -> ByteStream {
    let state = Some((stream, cancel, url));
    Box::pin(futures::stream::unfold(state, |state| async move {
        let (mut stream, cancel, url) = state?;
        let item = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                return Some((Err(StorageError::Cancelled { url, operation: "read" }), None));
            }
            item = stream.next() => item?,
        };
        let next = if item.is_ok() {
            Some((stream, cancel, url))
        } else {
            None
        };
        Some((item, next))
    }))
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    fn root_url(&self) -> String {
        self.root_url.clone()
    }

    fn url_of(&self, key: &str) -> String {
        if self.root_url.ends_with('/') {
            format!("{}{key}", self.root_url)
        } else {
            format!("{}/{key}", self.root_url)
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let url = self.url_of(prefix);
        // The directory part of the prefix must not climb out of the root.
        if let Some(at) = prefix.rfind('/') {
            validate_local_key(&url, &prefix[..at])?;
        }
        let this = self.clone();
        let prefix = prefix.to_string();
        blocking(&url, "list", move || this.walk(&prefix)).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = self.checked_path(key)?;
        let owned = key.to_string();
        blocking(&self.url_of(key), "head", move || {
            stat_object(&owned, &path)
        })
        .await
    }

    async fn read(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let path = self.checked_path(key)?;
        let url = self.url_of(key);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
                return Err(StorageError::NotFound { url });
            }
            Err(e) => return Err(io_err(&url, "open for read", e)),
        };
        let stat = file
            .metadata()
            .await
            .map_err(|e| io_err(&url, "open for read", e))?;
        if !stat.is_file() {
            return Err(StorageError::NotFound { url });
        }
        let (start, len) = crate::resolve_range(&url, range, stat.len())?;
        if start > 0 {
            file.seek(SeekFrom::Start(start))
                .await
                .map_err(|e| io_err(&url, "seek", e))?;
        }
        use tokio::io::AsyncReadExt;
        let reader = file.take(len);
        let err_url = url.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, READ_CHUNK)
            .map(move |r| r.map_err(|e| io_err(&err_url, "read", e)));
        Ok(cancellable(Box::pin(stream), self.cancel.clone(), url))
    }

    async fn writer(&self, key: &str, options: WriteOptions) -> Result<Box<dyn ObjectWriter>> {
        let (path, url) = self.prepare_write(key).await?;
        if let Some(parent) = path.parent() {
            self.sweep_once(parent).await;
        }
        // Fail before any bytes are produced; the link at commit is what actually enforces it.
        if options.if_absent && tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Err(StorageError::AlreadyExists { url });
        }
        let tmp = temp_path(&path, self.temp_owner.as_deref());
        let locked = {
            let tmp = tmp.clone();
            blocking(&url, "create temp file", move || create_locked(&tmp)).await?
        };
        // The lock lives on the open file description: this clone keeps it until the writer
        // is done, also after the data handle is closed for the rename.
        let lock = locked
            .try_clone()
            .map_err(|e| io_err(&url, "create temp file", e))?;
        let file = tokio::fs::File::from_std(locked);
        Ok(Box::new(LocalWriter {
            key: key.to_string(),
            url,
            path,
            tmp: Some(tmp),
            owner: self.temp_owner.clone(),
            _lock: Some(lock),
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            crc: Crc32c::new(),
            size: 0,
            options,
            cancel: self.cancel.clone(),
            deferred: self.deferred.clone(),
        }))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.checked_path(key)?;
        let url = self.url_of(key);
        blocking(&url, "delete", move || {
            // Data first: a sidecar without data is invisible, data without its sidecar is not.
            for p in [sidecar_path(&path), path.clone()].into_iter().rev() {
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await
    }

    async fn write_if_generation(
        &self,
        key: &str,
        data: Bytes,
        generation: i64,
        options: WriteOptions,
    ) -> Result<ObjectMeta> {
        let (path, url) = self.prepare_write(key).await?;
        let owner = self.temp_owner.clone();
        let (owned_key, error_url) = (key.to_string(), url.clone());
        let outcome = blocking(&url, "conditional write", move || {
            swap_locked(
                &owned_key,
                &path,
                &data,
                generation,
                &options,
                owner.as_deref(),
            )
        })
        .await?;
        outcome.ok_or(StorageError::PreconditionFailed {
            url: error_url,
            expected: generation,
        })
    }

    fn defer_directory_syncs(&self) {
        self.deferred.enable();
    }

    async fn sync(&self) -> Result<()> {
        let deferred = self.deferred.clone();
        let root = self.root_url.clone();
        blocking(&root, "fsync directories", move || deferred.sync()).await
    }
}

/// Blocking: [`ObjectStore::write_if_generation`] for a directory. An exclusive `flock` on
/// the hidden `.{name}.sluice-tmp-lock` serialises writers of this key across processes
/// (the kernel drops it if one dies); under it the current generation is compared and the
/// object replaced by the same temp + sidecar + rename steps as every commit. `None`: the
/// precondition failed, nothing was written.
fn swap_locked(
    key: &str,
    path: &Path,
    data: &[u8],
    expected: i64,
    options: &WriteOptions,
    owner: Option<&str>,
) -> std::io::Result<Option<ObjectMeta>> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let lock_path = path.with_file_name(format!(".{name}{LOCAL_TMP_MARKER}lock"));
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)?;
    lock.lock()?;
    let current = stat_object(key, path)?;
    let matches = match (&current, expected) {
        (None, 0) => true,
        (Some(meta), n) => n != 0 && meta.generation == Some(n),
        (None, _) => false,
    };
    if !matches {
        return Ok(None);
    }
    // Like GCS: a new generation is larger than any before it (microseconds since the epoch).
    let now = chrono::Utc::now().timestamp_micros();
    let generation = current
        .and_then(|m| m.generation)
        .map_or(now, |previous| now.max(previous + 1));
    let mut crc = Crc32c::new();
    crc.update(data);
    let sidecar = Sidecar {
        size: data.len() as u64,
        crc32c: crc.value(),
        metadata: options.metadata.clone(),
        content_type: options.content_type.clone(),
        generation: Some(generation),
    };
    let tmp = temp_path(path, owner);
    let written = (|| {
        let mut file = create_locked(&tmp)?;
        std::io::Write::write_all(&mut file, data)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    commit_files(path, &tmp, &sidecar, false, owner, None)?;
    let updated = std::fs::metadata(path)
        .ok()
        .and_then(|m| to_utc(m.modified()));
    drop(lock);
    Ok(Some(ObjectMeta {
        key: key.to_string(),
        size: sidecar.size,
        generation: Some(generation),
        crc32c: Some(sidecar.crc32c),
        metadata: sidecar.metadata,
        content_type: sidecar.content_type,
        updated,
    }))
}

struct LocalWriter {
    key: String,
    url: String,
    path: PathBuf,
    /// The temp file while it exists; `Drop` removes it if still set.
    tmp: Option<PathBuf>,
    owner: Option<String>,
    /// Holds the temp file's lock until the writer is dropped.
    _lock: Option<std::fs::File>,
    file: Option<BufWriter<tokio::fs::File>>,
    crc: Crc32c,
    size: u64,
    options: WriteOptions,
    cancel: CancellationToken,
    deferred: Arc<DeferredSyncs>,
}

impl LocalWriter {
    fn cancelled(&mut self, operation: &'static str) -> StorageError {
        self.discard();
        StorageError::Cancelled {
            url: self.url.clone(),
            operation,
        }
    }

    fn discard(&mut self) {
        self.file = None;
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }

    async fn finish(&mut self, extra: BTreeMap<String, String>) -> Result<ObjectMeta> {
        let url = self.url.clone();
        let mut file = self
            .file
            .take()
            .ok_or_else(|| other_err(&url, "commit", "writer already failed or finished".into()))?;
        file.flush().await.map_err(|e| io_err(&url, "flush", e))?;
        let file = file.into_inner();
        file.sync_all()
            .await
            .map_err(|e| io_err(&url, "fsync", e))?;
        let on_disk = file
            .metadata()
            .await
            .map_err(|e| io_err(&url, "stat temp file", e))?
            .len();
        drop(file);
        if on_disk != self.size {
            return Err(other_err(
                &url,
                "commit",
                format!(
                    "temp file holds {on_disk} bytes, {} were written",
                    self.size
                ),
            ));
        }
        if self.cancel.is_cancelled() {
            return Err(self.cancelled("commit"));
        }
        let tmp = self.tmp.clone().expect("temp file exists until commit");
        // Metadata known only at commit goes into the sidecar with the rest, before the data
        // is renamed into place: no reader ever sees the object without it.
        let mut metadata = self.options.metadata.clone();
        metadata.extend(extra);
        let sidecar = Sidecar {
            size: self.size,
            crc32c: self.crc.value(),
            metadata: metadata.clone(),
            content_type: self.options.content_type.clone(),
            generation: None,
        };
        let path = self.path.clone();
        let if_absent = self.options.if_absent;
        let owner = self.owner.clone();
        let deferred = self.deferred.clone();
        let outcome = blocking(&url, "commit", move || {
            commit_files(
                &path,
                &tmp,
                &sidecar,
                if_absent,
                owner.as_deref(),
                Some(&deferred),
            )
        })
        .await?;
        // The temp name is gone (renamed, or linked and removed) unless the link lost a race.
        self.tmp = None;
        match outcome {
            Committed::Yes => {}
            Committed::AlreadyExists => return Err(StorageError::AlreadyExists { url }),
        }
        let updated = tokio::fs::metadata(&self.path)
            .await
            .ok()
            .and_then(|m| to_utc(m.modified()));
        Ok(ObjectMeta {
            key: self.key.clone(),
            size: self.size,
            generation: None,
            crc32c: Some(self.crc.value()),
            metadata,
            content_type: self.options.content_type.clone(),
            updated,
        })
    }
}

enum Committed {
    Yes,
    AlreadyExists,
}

/// Blocking: sidecar into place, then the data (atomic rename, or a hard link that refuses to
/// replace an existing file for create-if-absent). Removes the temp files on every path. The
/// directory is fsynced now, or noted in `deferred` when the store defers directory syncs.
fn commit_files(
    path: &Path,
    tmp: &Path,
    sidecar: &Sidecar,
    if_absent: bool,
    owner: Option<&str>,
    deferred: Option<&DeferredSyncs>,
) -> std::io::Result<Committed> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let result = (|| {
        if if_absent && std::fs::symlink_metadata(path).is_ok() {
            return Ok(Committed::AlreadyExists);
        }
        let meta_tmp = temp_path(&sidecar_path(path), owner);
        let json = serde_json::to_vec(sidecar).map_err(std::io::Error::other)?;
        let written = (|| {
            let mut f = create_locked(&meta_tmp)?;
            std::io::Write::write_all(&mut f, &json)?;
            f.sync_all()?;
            std::fs::rename(&meta_tmp, sidecar_path(path))
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&meta_tmp);
            return Err(e);
        }
        if if_absent {
            // link(2) fails with EEXIST instead of replacing: the atomic "create if absent".
            match std::fs::hard_link(tmp, path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    return Ok(Committed::AlreadyExists);
                }
                Err(e) => return Err(e),
            }
        } else {
            std::fs::rename(tmp, path)?;
        }
        Ok(Committed::Yes)
    })();
    match std::fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %tmp.display(), error = %e, "could not remove temp file"),
    }
    match deferred {
        Some(deferred) => deferred.renamed_in(dir),
        None => sync_dir(dir),
    }
    result
}

#[async_trait::async_trait]
impl ObjectWriter for LocalWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(self.cancelled("write"));
        }
        let Some(file) = self.file.as_mut() else {
            return Err(other_err(
                &self.url,
                "write",
                "writer already failed or finished".into(),
            ));
        };
        if let Err(e) = file.write_all(&chunk).await {
            let err = io_err(&self.url, "write", e);
            self.discard();
            return Err(err);
        }
        self.crc.update(&chunk);
        self.size += chunk.len() as u64;
        Ok(())
    }

    async fn commit_with_metadata(
        mut self: Box<Self>,
        extra: BTreeMap<String, String>,
    ) -> Result<ObjectMeta> {
        if self.cancel.is_cancelled() {
            return Err(self.cancelled("commit"));
        }
        let result = self.finish(extra).await;
        if result.is_err() {
            self.discard();
        }
        result
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.discard();
        Ok(())
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        self.discard();
    }
}
