//! The task's record of finished items, kept in the store in bounded parts instead of memory.
//!
//! Finished items are gathered into a part of at most [`PART_ITEMS`] records (or [`PART_AGE`]
//! of work) and written as one object, `{prefix}_manifests/executions/{execution}/task-00003/
//! a001-00007.json` (attempt 1, part 7). The parts replace the per-item receipts:
//!
//! - a retried task (same execution) reads the parts of every earlier attempt and skips the
//!   items recorded there whose objects are still intact ([`Prior`]); an item finished after
//!   the last part was written is extracted again (same object names, overwritten), so it is
//!   never listed twice;
//! - the end of the task streams every part, its own and the reused records of earlier
//!   attempts, into the task manifest ([`crate::manifest_writer`]), one part in memory at a
//!   time.
//!
//! So a task holds a bounded number of item records however many items it has, and writes one
//! object per [`PART_ITEMS`] items instead of one receipt per item. Before a part is written
//! the store's pending directory syncs are done ([`ObjectStore::sync`]): what a part records
//! is durable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sluice_manifest::JournalPart;
use sluice_runtime::TaskContext;
use sluice_storage::{ObjectStore, WriteOptions};

use crate::error::Result;
use crate::naming::{KeyClaims, Layout, key_hash};
use crate::receipt::{ItemRecord, ItemStatus, objects_intact};

/// Records per batch of the end-of-task check; parts hold `--journal-part-items` records
/// (default 1000: ~1-2 KB each, so a part is about 1-2 MB).
pub(crate) const PART_ITEMS: usize = 1000;
/// Oldest unwritten record: bounds the work a crash makes a retry redo.
pub(crate) const PART_AGE: Duration = Duration::from_secs(30);
/// Largest part read back.
const PART_LIMIT: u64 = 256 * 1024 * 1024;
/// Items whose objects are checked at once when a retry reads earlier parts.
const CHECK_CONCURRENCY: usize = 16;

/// Where the parts of one task of one execution live. Without an execution (a local run,
/// which is never retried) under `local/`, cleared when the task starts.
pub(crate) fn dir(layout: &Layout, task: &TaskContext) -> String {
    let execution = task.execution.as_deref().unwrap_or("local");
    format!(
        "{}_manifests/executions/{execution}/task-{:05}/",
        layout.prefix, task.index
    )
}

/// `a{attempt:03}-{part:05}.json`, so a listing sorts parts by attempt, then part.
fn part_name(attempt: u32, part: u32) -> String {
    format!("a{attempt:03}-{part:05}.json")
}

/// The attempt a part's file name says, `None` for anything else in the directory.
fn attempt_of(file: &str) -> Option<u32> {
    let rest = file.strip_prefix('a')?.strip_suffix(".json")?;
    let (attempt, part) = rest.split_once('-')?;
    part.parse::<u32>().ok()?;
    attempt.parse().ok()
}

/// Reads a part (`url` for messages).
pub(crate) async fn read_part(store: &dyn ObjectStore, key: &str) -> Result<JournalPart> {
    let bytes = sluice_storage::read_to_bytes(store, key, PART_LIMIT).await?;
    JournalPart::parse(&bytes, &store.url_of(key))
        .map_err(|e| crate::error::ExtractError::Internal(format!("task journal: {e}")))
}

/// This attempt's journal: records waiting for the next part, and the parts written.
pub(crate) struct Journal {
    store: Arc<dyn ObjectStore>,
    dir: String,
    task_index: u32,
    attempt: u32,
    pending: Vec<ItemRecord>,
    oldest: Option<Instant>,
    written: Vec<String>,
    part_items: usize,
}

impl Journal {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        dir: String,
        task: &TaskContext,
        part_items: usize,
    ) -> Journal {
        Journal {
            store,
            dir,
            task_index: task.index,
            attempt: task.attempt,
            pending: Vec::new(),
            oldest: None,
            written: Vec::new(),
            part_items: part_items.max(1),
        }
    }

    /// Adds a finished item; writes a part when enough have gathered.
    pub(crate) async fn push(&mut self, record: ItemRecord) -> Result<()> {
        self.oldest.get_or_insert_with(Instant::now);
        self.pending.push(record);
        let old = self.oldest.is_some_and(|t| t.elapsed() >= PART_AGE);
        if self.pending.len() >= self.part_items || old {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes what is pending as the next part (nothing if nothing is).
    pub(crate) async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // The objects a part records must survive a crash once the part does.
        self.store.sync().await?;
        let number = self.written.len() as u32;
        let key = format!("{}{}", self.dir, part_name(self.attempt, number));
        let items = std::mem::take(&mut self.pending);
        let body = JournalPart::new(self.task_index, self.attempt, number, items).to_bytes();
        sluice_storage::write_bytes(
            self.store.as_ref(),
            &key,
            bytes::Bytes::from(body),
            WriteOptions {
                if_absent: false,
                metadata: Default::default(),
                content_type: Some("application/json".into()),
            },
        )
        .await?;
        self.oldest = None;
        self.written.push(key);
        Ok(())
    }

    /// The parts written so far and the records not yet written (the caller decides whether
    /// to write them: the end of a task that cannot be retried streams them straight into the
    /// manifest).
    pub(crate) fn into_parts(self) -> (Vec<String>, Vec<ItemRecord>) {
        (self.written, self.pending)
    }
}

/// What earlier attempts of this task (same execution) finished: for each reusable item key,
/// the part that holds its latest record.
#[derive(Debug, Default)]
pub(crate) struct Prior {
    /// Part keys of earlier attempts with their attempt, in order.
    pub(crate) parts: Vec<(u32, String)>,
    /// Item key digest -> index in `parts` of the record to reuse.
    reusable: HashMap<u128, u32>,
}

impl Prior {
    /// Whether the item with `key` is done and its record is in part `part`.
    pub(crate) fn chosen(&self, key: &str, part: usize) -> bool {
        self.reusable.get(&key_hash(key)) == Some(&(part as u32))
    }

    pub(crate) fn is_done(&self, key: &str) -> bool {
        self.reusable.contains_key(&key_hash(key))
    }

    pub(crate) fn len(&self) -> usize {
        self.reusable.len()
    }

    /// Reads the parts earlier attempts left in `dir`: for every item the latest record wins;
    /// it is reusable if it did not fail and every object it lists is still there as committed
    /// (`objects_intact`, as a receipt was checked). Reused objects are claimed for this task,
    /// so no other item of it may overwrite them. Parts of this or later attempts (a stale
    /// run) are ignored.
    pub(crate) async fn read(
        store: &dyn ObjectStore,
        dir: &str,
        attempt: u32,
        claims: &KeyClaims,
    ) -> Result<Prior> {
        let mut prior = Prior::default();
        for object in store.list(dir).await? {
            let file = object.key.strip_prefix(dir).unwrap_or(&object.key);
            if let Some(a) = attempt_of(file)
                && a < attempt
            {
                prior.parts.push((a, object.key));
            }
        }
        // Pass 1: the latest record of each item (None: failed, redo it).
        let mut latest: HashMap<u128, Option<u32>> = HashMap::new();
        for (index, (_, key)) in prior.parts.iter().enumerate() {
            for item in read_part(store, key).await?.items {
                let ok = item.status != ItemStatus::Failed;
                latest.insert(key_hash(&item.key), ok.then_some(index as u32));
            }
        }
        // Pass 2: of those, the ones whose objects are intact.
        for (index, (_, key)) in prior.parts.iter().enumerate() {
            let part = read_part(store, key).await?;
            let candidates: Vec<ItemRecord> = part
                .items
                .into_iter()
                .filter(|i| latest.get(&key_hash(&i.key)) == Some(&Some(index as u32)))
                .collect();
            let checks: Vec<_> = candidates
                .iter()
                .map(|item| objects_intact(store, &item.objects))
                .collect();
            let intact: Vec<Result<bool>> = futures::stream::iter(checks)
                .buffered(CHECK_CONCURRENCY)
                .collect()
                .await;
            for (item, intact) in candidates.iter().zip(intact) {
                if !intact? {
                    continue;
                }
                claim_kept(claims, item)?;
                prior.reusable.insert(key_hash(&item.key), index as u32);
            }
        }
        Ok(prior)
    }
}

/// Kept objects are this task's outputs too: nothing else may overwrite them.
fn claim_kept(claims: &KeyClaims, item: &ItemRecord) -> Result<()> {
    for o in &item.objects {
        let source = match &o.member {
            Some(member) => format!("{}!{member}", item.source.url),
            None => item.source.url.clone(),
        };
        claims.claim(&o.name, &source)?;
        if let Some(r) = &o.rejects {
            claims.claim(&r.name, &source)?;
        }
    }
    Ok(())
}

/// Deletes the parts in `keys` (best effort: a leftover part is only read by a retry of the
/// same execution, and task 0 removes `_manifests/executions/` entries after 8 days).
pub(crate) async fn remove(store: &dyn ObjectStore, keys: &[String]) {
    for key in keys {
        if let Err(e) = store.delete(key).await {
            tracing::debug!(part = %store.url_of(key), error = %e, "could not remove a journal part");
        }
    }
}

/// Removes what a previous local run (no execution: never retried) left in `dir`.
pub(crate) async fn clear(store: &dyn ObjectStore, dir: &str) -> Result<()> {
    let keys: Vec<String> = store.list(dir).await?.into_iter().map(|o| o.key).collect();
    remove(store, &keys).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_sort_and_parse() {
        assert_eq!(part_name(1, 7), "a001-00007.json");
        assert!(part_name(0, 99_999) < part_name(1, 0));
        assert_eq!(attempt_of("a001-00007.json"), Some(1));
        assert_eq!(attempt_of("a001.json"), None);
        assert_eq!(attempt_of("socrata-1234.json"), None);
    }
}
