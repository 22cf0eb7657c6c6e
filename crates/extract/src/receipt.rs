//! What extract records about its outputs: per-item receipts and per-task manifests.
//!
//! An item's *receipt* (`_manifests/items/...json`) is written after all of the item's
//! objects are committed. It is how a retried task knows an item is done (same execution),
//! and how `--skip-existing` knows which source version an object came from. The *task
//! manifest* (`_manifests/task-00003.json`) lists every item of the task's share with its
//! objects; `load` consumes it. The JSON shapes are documented in `docs/extract.md` and
//! defined in `crates/manifest` (shared with `load`); this module checks objects against them.

use futures::StreamExt;
use sluice_storage::{ObjectMeta, ObjectStore};

use crate::error::{ExtractError, Result};
use crate::sink::{META_BYTES, META_ROWS, META_SHA256, has_committed_metadata};

// The record types, kinds and version are the shared contract with `load`: they live in
// `sluice-manifest`, re-exported here so extract's code keeps one import path.
pub(crate) use sluice_manifest::{
    ColumnRecord, FORMAT_VERSION, ItemRecord, ItemStatus, ObjectRecord, PageRecord, Receipt,
    RejectsRecord, SourceRecord, TASK_MANIFEST_KIND, TaskManifest, Totals,
};

/// Whether every object a receipt records (rejects included) is still there as committed:
/// same size, same generation (GCS), and the commit-time metadata (`sluice-bytes`,
/// `sluice-sha256`, `sluice-rows`) with the recorded values. An object that lacks them -- a
/// GCS resumable upload finalised by a task that died before its metadata was set, or an
/// object written by an older Sluice -- does not count: the item is extracted again.
pub(crate) async fn objects_intact(
    store: &dyn ObjectStore,
    objects: &[ObjectRecord],
) -> Result<bool> {
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
pub(crate) async fn verify_objects(
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
pub(crate) fn crc_hex(crc: Option<u32>) -> Option<String> {
    crc.map(|c| format!("{c:08x}"))
}
