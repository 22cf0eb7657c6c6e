//! The records extract writes: per-item receipts and per-task manifests. Field names, order and
//! serde attributes here ARE the on-the-wire format (`docs/extract.md`): extract serialises
//! these structs, load parses them, and manifests already in buckets must keep loading, so
//! change a field only by adding an `Option` with `#[serde(default)]` (or by bumping
//! [`FORMAT_VERSION`](crate::FORMAT_VERSION)).

use serde::{Deserialize, Serialize};

/// One column of a Parquet object, as extract typed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnRecord {
    pub name: String,
    /// `STRING`, `INT64`, `FLOAT64`, `BOOL`, `DATE`, `TIMESTAMP`.
    #[serde(rename = "type")]
    pub column_type: String,
    /// What the object's footer says about the column's values, so `load` can join the
    /// drifted inferences of one dataset without reading footers (`docs/load.md`, "One schema
    /// per dataset"). Absent in manifests written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<ColumnValues>,
}

/// A column's values in one object: whether it holds any, and an integer column's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnValues {
    /// No row has a value (every row NULL, or no rows): the column's type says nothing.
    pub none: bool,
    /// An integer column's smallest and largest value (FLOAT64 holds them exactly when both
    /// are within +-2^53).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int_range: Option<(i64, i64)>,
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

/// What identifies the version of a source: compared by `--skip-existing`, recorded in object
/// metadata and manifests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceVersion {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// Size in bytes as served (before decompression), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl SourceVersion {
    /// Whether `self` (recorded) and `current` describe the same bytes. An ETag decides when
    /// both have one; otherwise Last-Modified must match (and sizes, when both are known).
    /// Nothing known means "cannot tell", which is never a match.
    pub fn matches(&self, current: &SourceVersion) -> bool {
        if let (Some(a), Some(b)) = (&self.etag, &current.etag) {
            return a == b;
        }
        match (&self.last_modified, &current.last_modified) {
            (Some(a), Some(b)) if a == b => match (self.size, current.size) {
                (Some(x), Some(y)) => x == y,
                _ => true,
            },
            _ => false,
        }
    }

    pub fn is_known(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }
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
    /// The incremental window this item covers (`--since auto` / `--since TS`); absent for a
    /// full pull of a source without a cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<CursorRecord>,
}

/// The window of an incremental pull. Every item of one source carries the same record, and
/// `load` stores `to` (and the source's version, for files) under `state_key` in
/// `{dest}/_state/{dataset}.json` once the data is loaded (`docs/state.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorRecord {
    /// The source's key in the dataset's state file: the item key without a page suffix
    /// (`dataset/name`); the same for every page of one Socrata resource.
    pub state_key: String,
    /// The column in the written data that carries the cursor (`_socrata_updated_at`, or the
    /// `--cursor COL` of a CSV source); `None` for files compared by version only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Exclusive lower bound this pull used (`None`: full pull).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Inclusive upper bound: the high-water mark the pulled data covers. It becomes the
    /// stored mark only after the load that consumes this item succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `--cursor COL` (files): data rows read from the source (after bad rows were set
    /// aside). The rows written are the objects' `rows`; the difference is `filtered_rows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_rows: Option<u64>,
    /// `--cursor COL` (files): rows read but not written because their COL was not after
    /// `from` (already loaded) or was null in an incremental pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filtered_rows: Option<u64>,
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

/// A receipt (`_manifests/items/...json`): an item record stored on its own, written after
/// all of the item's objects are committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

impl Totals {
    pub fn from_items(items: &[ItemRecord]) -> Totals {
        let mut t = Totals::default();
        t.add_counts(items);
        t
    }

    pub(crate) fn add_counts(&mut self, items: &[ItemRecord]) {
        let t = self;
        t.items += items.len();
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
    }
}

/// A task manifest (`_manifests/task-00003.json`): every item of one extract task's share with
/// its objects. `load` consumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Items per dataset in the whole execution's plan (every task computes the same plan), so
    /// `load` can tell a dataset with a missing task manifest from a complete one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_items: Option<std::collections::BTreeMap<String, usize>>,
    pub items: Vec<ItemRecord>,
    pub totals: Totals,
}
