//! Sources: where an item's bytes come from, and the async pump that feeds them to the
//! blocking decode/convert pipeline.

pub(crate) mod http;
pub(crate) mod limits;
pub(crate) mod manifest;
pub(crate) mod socrata;
pub(crate) mod socrata_page;
pub(crate) mod socrata_pin;
pub(crate) mod socrata_query;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use globset::GlobSet;
use tokio::io::AsyncReadExt;

use crate::config::{CsvOptions, OutputFormat};
use crate::convert::schema::SchemaOverride;
use crate::decode::content::Expect;
use crate::decode::{ChunkSender, END_OF_STREAM};
use crate::error::{ExtractError, Result};
use http::{HttpBody, HttpClient, HttpTarget, SourceVersion};
use limits::Deadline;

/// Where an item's bytes are.
#[derive(Debug, Clone)]
pub enum Origin {
    Http(Box<HttpTarget>),
    Local(PathBuf),
}

/// A Socrata page's place in its dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageInfo {
    pub number: u64,
    pub offset: u64,
    pub limit: u64,
    /// Rows the whole pull has (from the count query).
    pub dataset_rows: u64,
}

/// One unit of work: one download, producing one object per member.
#[derive(Debug, Clone)]
pub struct WorkItem {
    /// Source name (sanitized): the stem of object names.
    pub name: String,
    /// Dataset (sanitized): the directory and, for `load`, the table.
    pub dataset: String,
    pub origin: Origin,
    /// The URL (redacted) or path, as shown in messages and recorded in metadata.
    pub display: String,
    /// Data extension of the source (`csv`), after any compression extension.
    pub data_ext: String,
    /// Compression extension (`gz`, `zip`) if the name has one.
    pub compression_ext: String,
    pub format: OutputFormat,
    pub page: Option<PageInfo>,
    pub csv: CsvOptions,
    pub schema_override: Option<Arc<SchemaOverride>>,
    /// Socrata's declared column types.
    pub soda_types: Option<Arc<Vec<(String, String)>>>,
    /// Zip members to extract (all files when `None`), with the patterns for messages.
    pub members: Option<(Arc<GlobSet>, Vec<String>)>,
    pub decompress: bool,
    /// The version the plan saw (Socrata: the dataset version from the count query).
    pub planned_version: Option<SourceVersion>,
    /// The incremental window this item covers, recorded in the manifest for `load` to
    /// advance the source's stored mark (`docs/state.md`).
    pub cursor: Option<sluice_manifest::CursorRecord>,
    /// Set when the source could not be planned (a Socrata count query that failed): the item
    /// stands for the whole source and is recorded `failed` with this cause, without a request.
    pub planning_error: Option<String>,
    /// `--cursor COL` (files): the column and the stored mark rows must be after.
    pub cursor_spec: Option<Arc<crate::convert::cursor::CursorSpec>>,
}

impl WorkItem {
    /// The stable key items are sharded and sorted by.
    pub fn shard_key(&self) -> String {
        match &self.page {
            Some(page) => format!("{}/{}/{:06}", self.dataset, self.name, page.number),
            None => format!("{}/{}", self.dataset, self.name),
        }
    }

    /// The chunk number in object names.
    pub fn chunk(&self) -> u64 {
        self.page.as_ref().map_or(0, |p| p.number)
    }

    /// What `--skip-existing` compares with the recorded version, without downloading.
    pub async fn current_version(&self, client: &HttpClient) -> Result<Option<SourceVersion>> {
        if let Some(planned) = &self.planned_version {
            return Ok(planned.is_known().then(|| planned.clone()));
        }
        match &self.origin {
            Origin::Http(target) => client.head(target).await,
            Origin::Local(path) => Ok(local_version(path).await.ok()),
        }
    }
}

async fn local_version(path: &PathBuf) -> std::io::Result<SourceVersion> {
    let meta = tokio::fs::metadata(path).await?;
    let modified = meta
        .modified()
        .ok()
        .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339());
    Ok(SourceVersion {
        etag: None,
        last_modified: modified,
        size: Some(meta.len()),
    })
}

/// An opened source: its bytes to pump, within the item's deadline.
pub(crate) struct Opened {
    source: OpenedSource,
    deadline: Deadline,
    display: String,
}

enum OpenedSource {
    Http(Box<HttpBody>),
    Local {
        file: tokio::fs::File,
        path: PathBuf,
        version: SourceVersion,
    },
}

impl Opened {
    pub(crate) fn version(&self) -> SourceVersion {
        match &self.source {
            OpenedSource::Http(body) => body.version.clone(),
            OpenedSource::Local { version, .. } => version.clone(),
        }
    }

    /// Size as served, when known (progress and ETA).
    pub(crate) fn total(&self) -> Option<u64> {
        match &self.source {
            OpenedSource::Http(body) => body.total(),
            OpenedSource::Local { version, .. } => version.size,
        }
    }

    pub(crate) fn resumes(&self) -> u32 {
        match &self.source {
            OpenedSource::Http(body) => body.resumes(),
            OpenedSource::Local { .. } => 0,
        }
    }

    /// Streams every byte into `tx`, then the end marker; counts into `progress`. An error is
    /// sent down the channel too, so the decoder stops with the real cause. Returns the number
    /// of resumptions.
    ///
    /// The item's deadline bounds both the wait for bytes and the wait for the decoder to
    /// take them; when it passes, the deadline error is what the decoder gets.
    pub(crate) async fn pump(mut self, tx: ChunkSender, progress: Arc<AtomicU64>) -> u32 {
        let at = self.deadline.at;
        let mut received = 0u64;
        loop {
            let read = async {
                match &mut self.source {
                    OpenedSource::Http(body) => body.next_chunk().await,
                    OpenedSource::Local { file, path, .. } => read_local_chunk(file, path).await,
                }
            };
            let next = tokio::time::timeout_at(at, read)
                .await
                .unwrap_or_else(|_| Err(self.deadline.error(&self.display, received)));
            match next {
                Ok(Some(chunk)) => {
                    received += chunk.len() as u64;
                    progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    match tokio::time::timeout_at(at, tx.send(Ok(chunk))).await {
                        Ok(Ok(())) => {}
                        // The decoder stopped reading (finished a zip early, or failed).
                        Ok(Err(_)) => break,
                        Err(_) => {
                            // `send` is cancel-safe: the chunk was not sent, the error is.
                            let error = self.deadline.error(&self.display, received);
                            let _ = tx.send(Err(error)).await;
                            break;
                        }
                    }
                }
                Ok(None) => {
                    let _ = tx.send(Ok(END_OF_STREAM)).await;
                    break;
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
        self.resumes()
    }
}

const LOCAL_CHUNK: usize = 256 * 1024;

async fn read_local_chunk(
    file: &mut tokio::fs::File,
    path: &std::path::Path,
) -> Result<Option<Bytes>> {
    let mut buf = bytes::BytesMut::with_capacity(LOCAL_CHUNK);
    let n = file
        .read_buf(&mut buf)
        .await
        .map_err(|e| ExtractError::LocalIo {
            path: path.display().to_string(),
            source: e,
        })?;
    Ok((n > 0).then(|| buf.freeze()))
}

/// Opens the item's bytes (HTTP GET with retries and the not-data check, or the local
/// file), within the item's `--item-timeout` deadline.
pub(crate) async fn open(item: &WorkItem, client: &HttpClient) -> Result<Opened> {
    let deadline = client.item_deadline(&item.shard_key());
    if deadline.passed() {
        return Err(deadline.error(&item.display, 0));
    }
    let opening = async {
        match &item.origin {
            Origin::Http(target) => {
                let expect = Expect::new(&item.data_ext, item.format, item.csv.accept_any_content);
                let body = client
                    .get_data(target, &item.shard_key(), expect, &item.data_ext)
                    .await?;
                Ok(OpenedSource::Http(Box::new(body)))
            }
            Origin::Local(path) => {
                let io = |source| ExtractError::LocalIo {
                    path: path.display().to_string(),
                    source,
                };
                let file = tokio::fs::File::open(path).await.map_err(io)?;
                let version = local_version(path).await.map_err(io)?;
                Ok(OpenedSource::Local {
                    file,
                    path: path.clone(),
                    version,
                })
            }
        }
    };
    let source = tokio::time::timeout_at(deadline.at, opening)
        .await
        .unwrap_or_else(|_| Err(deadline.error(&item.display, 0)))?;
    Ok(Opened {
        source,
        deadline,
        display: item.display.clone(),
    })
}
