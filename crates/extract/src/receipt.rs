//! What extract records about its outputs: per-item receipts and per-task manifests.
//!
//! An item's *receipt* (`_manifests/items/...json`) is written after all of the item's
//! objects are committed. It is how a retried task knows an item is done (same execution),
//! and how `--skip-existing` knows which source version an object came from. The *task
//! manifest* (`_manifests/task-00003.json`) lists every item of the task's share with its
//! objects; `load` consumes it. The JSON shapes are documented in `docs/extract.md`.

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sluice_storage::{ObjectMeta, ObjectStore};

use crate::error::{ExtractError, Result};
use crate::sink::{META_BYTES, META_ROWS, META_SHA256, has_committed_metadata};
use crate::source::http::SourceVersion;

/// Manifest format identifier and version.
pub const TASK_MANIFEST_KIND: &str = "sluice.extract.task-manifest";
pub const RECEIPT_KIND: &str = "sluice.extract.item-receipt";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnRecord {
    pub name: String,
    /// `STRING`, `INT64`, `FLOAT64`, `BOOL`, `DATE`, `TIMESTAMP`.
    #[serde(rename = "type")]
    pub column_type: String,
}

/// The quarantined rows that go with an output object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectsRecord {
    pub name: String,
    pub url: String,
    pub size: u64,
    #[serde(default)]
    pub generation: Option<i64>,
    #[serde(default)]
    pub crc32c: Option<String>,
    pub sha256: String,
    pub rows: u64,
}

/// One committed output object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Object name in the bucket (or path under the local root).
    pub name: String,
    /// `gs://bucket/name` or `file:///...`.
    pub url: String,
    pub dataset: String,
    #[serde(default)]
    pub partition: Option<String>,
    /// `parquet` or `passthrough`.
    pub format: String,
    pub content_type: String,
    pub size: u64,
    /// GCS generation (for `ifGenerationMatch` / deterministic load job ids); `null` locally.
    #[serde(default)]
    pub generation: Option<i64>,
    /// CRC32C as 8 lowercase hex digits (GCS reports it base64 big-endian).
    #[serde(default)]
    pub crc32c: Option<String>,
    pub sha256: String,
    /// Data rows (Parquet); `null` for passthrough.
    #[serde(default)]
    pub rows: Option<u64>,
    #[serde(default)]
    pub rejected_rows: u64,
    /// Zip member path this object came from.
    #[serde(default)]
    pub member: Option<String>,
    /// Socrata page number.
    #[serde(default)]
    pub page: Option<u64>,
    #[serde(default)]
    pub columns: Option<Vec<ColumnRecord>>,
    #[serde(default)]
    pub row_groups: Option<usize>,
    #[serde(default)]
    pub rejects: Option<RejectsRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// `http`, `file` or `socrata`.
    pub kind: String,
    /// Redacted URL or path.
    pub url: String,
    #[serde(default)]
    pub version: SourceVersion,
    /// Bytes received from the source (compressed size for gzip/zip).
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub page: Option<PageRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRecord {
    pub number: u64,
    pub offset: u64,
    pub limit: u64,
    pub dataset_rows: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    /// Downloaded and written by this attempt.
    Extracted,
    /// Already written by an earlier attempt of this execution (task retry).
    Reused,
    /// `--skip-existing`: the source version matches what was written before.
    Skipped,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// The shard key (`dataset/name` or `dataset/name/000012`).
    pub key: String,
    pub name: String,
    pub dataset: String,
    pub source: SourceRecord,
    pub status: ItemStatus,
    #[serde(default)]
    pub error: Option<String>,
    pub objects: Vec<ObjectRecord>,
    /// HTTP resumptions with `Range` and item-level attempts.
    #[serde(default)]
    pub resumes: u32,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub execution: Option<String>,
    pub finished_at: String,
}

/// A receipt: an item record stored on its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    pub kind: String,
    pub version: u32,
    #[serde(flatten)]
    pub item: ItemRecord,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub items: usize,
    pub extracted: usize,
    pub reused: usize,
    pub skipped: usize,
    pub failed: usize,
    pub objects: usize,
    pub rows: u64,
    pub rejected_rows: u64,
    /// Bytes of all objects written or kept.
    pub bytes: u64,
    /// Bytes received from sources by this attempt.
    pub source_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskManifest {
    pub kind: String,
    pub version: u32,
    #[serde(default)]
    pub job: Option<String>,
    #[serde(default)]
    pub execution: Option<String>,
    pub task_index: u32,
    pub task_count: u32,
    pub attempt: u32,
    /// The destination root (`gs://bucket/prefix`).
    pub dest: String,
    #[serde(default)]
    pub partition: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    /// `true` only when every item of the share succeeded. `load` must not consume an
    /// incomplete manifest.
    pub complete: bool,
    pub items: Vec<ItemRecord>,
    pub totals: Totals,
}

impl Totals {
    pub fn from_items(items: &[ItemRecord]) -> Totals {
        let mut t = Totals {
            items: items.len(),
            ..Totals::default()
        };
        for item in items {
            match item.status {
                ItemStatus::Extracted => t.extracted += 1,
                ItemStatus::Reused => t.reused += 1,
                ItemStatus::Skipped => t.skipped += 1,
                ItemStatus::Failed => t.failed += 1,
            }
            if item.status == ItemStatus::Extracted {
                t.source_bytes += item.source.bytes;
            }
            for o in &item.objects {
                t.objects += 1;
                t.rows += o.rows.unwrap_or(0);
                t.rejected_rows += o.rejected_rows;
                t.bytes += o.size;
            }
        }
        t
    }
}

/// Whether every object a receipt records (rejects included) is still there as committed:
/// same size, same generation (GCS), and the commit-time metadata (`sluice-bytes`,
/// `sluice-sha256`, `sluice-rows`) with the recorded values. An object that lacks them -- a
/// GCS resumable upload finalised by a task that died before its metadata was set, or an
/// object written by an older Sluice -- does not count: the item is extracted again.
pub async fn objects_intact(store: &dyn ObjectStore, objects: &[ObjectRecord]) -> Result<bool> {
    for o in objects {
        let mut checks = vec![(o.name.as_str(), o.size, o.generation, &o.sha256, o.rows)];
        if let Some(r) = &o.rejects {
            checks.push((
                r.name.as_str(),
                r.size,
                r.generation,
                &r.sha256,
                Some(r.rows),
            ));
        }
        for (name, size, generation, sha256, rows) in checks {
            match store.head(name).await? {
                Some(meta)
                    if meta.size == size
                        && (generation.is_none() || meta.generation == generation)
                        && has_committed_metadata(&meta.metadata, size, sha256, rows) => {}
                Some(_) => {
                    tracing::info!(object = %store.url_of(name), "{} is not the object the receipt records (size, generation or commit metadata differ)", store.url_of(name));
                    return Ok(false);
                }
                None => return Ok(false),
            }
        }
    }
    Ok(true)
}

/// What a record says one object must be.
struct Expected<'a> {
    item: usize,
    name: &'a str,
    size: u64,
    generation: Option<i64>,
    sha256: &'a str,
    rows: Option<u64>,
}

impl Expected<'_> {
    fn describe(&self) -> String {
        let mut out = format!("size {}", self.size);
        if let Some(g) = self.generation {
            out.push_str(&format!(", generation {g}"));
        }
        out.push_str(&format!(", sha256 {}", self.sha256));
        if let Some(rows) = self.rows {
            out.push_str(&format!(", {rows} rows"));
        }
        out
    }

    fn matches(&self, meta: &ObjectMeta) -> bool {
        meta.size == self.size
            && (self.generation.is_none() || meta.generation == self.generation)
            && has_committed_metadata(&meta.metadata, self.size, self.sha256, self.rows)
    }
}

fn describe_found(meta: &ObjectMeta) -> String {
    let mut out = format!("size {}", meta.size);
    if let Some(g) = meta.generation {
        out.push_str(&format!(", generation {g}"));
    }
    for (key, label) in [
        (META_SHA256, "sha256"),
        (META_BYTES, "sluice-bytes"),
        (META_ROWS, "sluice-rows"),
    ] {
        match meta.metadata.get(key) {
            Some(v) => out.push_str(&format!(", {label} {v}")),
            None if key == META_SHA256 => out.push_str(", no sluice-sha256"),
            None => {}
        }
    }
    out
}

/// Reads back every object (and rejects object) of the items that did not fail, at most
/// `concurrency` metadata requests at once, and returns `(item index, error)` for each one
/// that is missing or not what its record says (size, generation, commit-time metadata). A
/// store error while checking counts as a problem too: an unverified manifest is not
/// complete.
pub async fn verify_objects(
    store: &dyn ObjectStore,
    items: &[ItemRecord],
    concurrency: usize,
) -> Vec<(usize, ExtractError)> {
    let mut expected = Vec::new();
    for (item, record) in items.iter().enumerate() {
        if record.status == ItemStatus::Failed {
            continue;
        }
        for o in &record.objects {
            expected.push(Expected {
                item,
                name: &o.name,
                size: o.size,
                generation: o.generation,
                sha256: &o.sha256,
                rows: o.rows,
            });
            if let Some(r) = &o.rejects {
                expected.push(Expected {
                    item,
                    name: &r.name,
                    size: r.size,
                    generation: r.generation,
                    sha256: &r.sha256,
                    rows: Some(r.rows),
                });
            }
        }
    }
    // Plain async fn futures (no closures returning futures): keeps the task's future `Send`
    // for every lifetime, which `tokio::spawn` of `run` needs.
    let checks: Vec<_> = expected
        .into_iter()
        .map(|want| check(store, want))
        .collect();
    let mut problems: Vec<(usize, ExtractError)> = futures::stream::iter(checks)
        .buffer_unordered(concurrency.max(1))
        .filter_map(std::future::ready)
        .collect()
        .await;
    problems.sort_by_key(|(item, _)| *item);
    problems
}

async fn check(store: &dyn ObjectStore, want: Expected<'_>) -> Option<(usize, ExtractError)> {
    let url = store.url_of(want.name);
    let found = match store.head(want.name).await {
        Ok(Some(meta)) if want.matches(&meta) => return None,
        Ok(Some(meta)) => describe_found(&meta),
        Ok(None) => "no such object".to_string(),
        Err(e) => format!("nothing readable ({e})"),
    };
    Some((
        want.item,
        ExtractError::ObjectChanged {
            url,
            recorded: want.describe(),
            found,
        },
    ))
}

/// CRC32C as recorded in manifests.
pub fn crc_hex(crc: Option<u32>) -> Option<String> {
    crc.map(|c| format!("{c:08x}"))
}
