//! The end of a task: the journal parts (the reused records of each earlier attempt, and this
//! attempt's) are read back, merged in key order (each attempt recorded its items in key
//! order), checked against the store in batches (the end-of-task check), and streamed into the
//! task manifest in compact JSON. One part per attempt, one batch, the totals and the first
//! [`MAX_LISTED_FAILURES`] failures are in memory at once.

use std::collections::VecDeque;

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use sluice_manifest::ManifestStream;
use sluice_storage::{ObjectStore, WriteOptions};

use crate::error::{FailedItem, MAX_LISTED_FAILURES, Result};
use crate::journal::{self, PART_ITEMS, Prior};
use crate::receipt::{ItemRecord, ItemStatus, ObjectRecord, TaskManifest, Totals, verify_objects};

/// Metadata requests in flight during the end-of-task check.
const VERIFY_CONCURRENCY: usize = 16;
/// Manifest bytes gathered before they go to the store's writer.
const FLUSH_BYTES: usize = 1024 * 1024;

/// Called with the objects of each batch of items the manifest will list, before the
/// end-of-task check reads them back.
pub type BeforeVerify =
    Arc<dyn Fn(Vec<ObjectRecord>) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// What the written manifest says, without its items.
pub(crate) struct Written {
    pub(crate) totals: Totals,
    pub(crate) complete: bool,
    /// The first failed items (the manifest has them all).
    pub(crate) failures: Vec<FailedItem>,
}

/// Where the items come from.
pub(crate) struct Sources<'a> {
    pub(crate) prior: &'a Prior,
    /// This attempt's parts, in order.
    pub(crate) parts: &'a [String],
    /// This attempt's records not written to a part.
    pub(crate) tail: Vec<ItemRecord>,
}

/// Streams the task manifest to `key`. `header` gives every field but `items`,
/// `finished_at`, `complete` and `totals`.
pub(crate) async fn write(
    store: &dyn ObjectStore,
    key: &str,
    header: &TaskManifest,
    sources: Sources<'_>,
    before_verify: Option<&BeforeVerify>,
) -> Result<Written> {
    let (mut stream, mut buf) = ManifestStream::begin(header);
    let mut out = Out {
        writer: store
            .writer(
                key,
                WriteOptions {
                    if_absent: false,
                    metadata: Default::default(),
                    content_type: Some("application/json".into()),
                },
            )
            .await?,
        hasher: Sha256::new(),
        size: 0,
    };
    let mut written = Written {
        totals: Totals::default(),
        complete: true,
        failures: Vec::new(),
    };
    let mut cursors = Vec::new();
    let mut attempt_parts: Vec<(u32, Vec<(usize, String)>)> = Vec::new();
    for (index, (attempt, key)) in sources.prior.parts.iter().enumerate() {
        match attempt_parts.last_mut() {
            Some((a, parts)) if a == attempt => parts.push((index, key.clone())),
            _ => attempt_parts.push((*attempt, vec![(index, key.clone())])),
        }
    }
    for (_, parts) in attempt_parts {
        cursors.push(Cursor::new(
            parts.into_iter().map(|(i, k)| (Some(i), k)),
            Vec::new(),
        ));
    }
    cursors.push(Cursor::new(
        sources.parts.iter().map(|k| (None, k.clone())),
        sources.tail,
    ));
    let mut heads = Vec::with_capacity(cursors.len());
    for cursor in &mut cursors {
        heads.push(cursor.next(store, sources.prior).await?);
    }
    let mut pending = Vec::new();
    loop {
        let smallest = heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().map(|r| (i, &r.key)))
            .min_by(|a, b| a.1.cmp(b.1))
            .map(|(i, _)| i);
        let Some(i) = smallest else { break };
        let record = heads[i].take().expect("the smallest head exists");
        heads[i] = cursors[i].next(store, sources.prior).await?;
        pending.push(record);
        if pending.len() >= PART_ITEMS {
            let items = std::mem::take(&mut pending);
            batch(
                store,
                items,
                before_verify,
                &mut stream,
                &mut buf,
                &mut written,
            )
            .await;
            out.send_if_full(&mut buf).await?;
        }
    }
    batch(
        store,
        pending,
        before_verify,
        &mut stream,
        &mut buf,
        &mut written,
    )
    .await;
    let finished_at = chrono::Utc::now().to_rfc3339();
    buf.extend(stream.finish(&finished_at, written.complete, &written.totals));
    out.send(&mut buf).await?;
    out.commit().await?;
    Ok(written)
}

/// Checks one batch, counts it and appends its items to `buf`.
async fn batch(
    store: &dyn ObjectStore,
    mut items: Vec<ItemRecord>,
    before_verify: Option<&BeforeVerify>,
    stream: &mut ManifestStream,
    buf: &mut Vec<u8>,
    written: &mut Written,
) {
    if items.is_empty() {
        return;
    }
    if let Some(hook) = before_verify {
        hook(items.iter().flat_map(|i| i.objects.clone()).collect()).await;
    }
    verify(store, &mut items).await;
    for item in &items {
        written.totals.add(item);
        if item.status == ItemStatus::Failed {
            written.complete = false;
            if written.failures.len() < MAX_LISTED_FAILURES {
                written.failures.push(FailedItem {
                    key: item.key.clone(),
                    url: item.source.url.clone(),
                    cause: item
                        .error
                        .clone()
                        .unwrap_or_else(|| "failed (no cause recorded)".into()),
                });
            }
        }
        stream.item(item, buf);
    }
}

/// The end-of-task check: every object the manifest is about to list (rejects included) must
/// be in the store as committed -- recorded size and generation, and the commit-time
/// `sluice-bytes` / `sluice-sha256` / `sluice-rows`. Another writer may have replaced or
/// deleted one since (a second task or job on the same keys; claims only guard this task).
/// An item with such an object fails, naming the object, the record and the store's view,
/// so the manifest is incomplete and the task exits 1.
async fn verify(store: &dyn ObjectStore, items: &mut [ItemRecord]) {
    let problems = verify_objects(store, items, VERIFY_CONCURRENCY).await;
    for (index, error) in problems {
        let item = &mut items[index];
        if item.status == ItemStatus::Failed {
            continue;
        }
        tracing::error!(item = %item.source.url, error = %error, "{}/{}: end-of-task check failed: {error}", item.dataset, item.name);
        item.status = ItemStatus::Failed;
        item.error = Some(format!("end-of-task check: {error}"));
        item.objects.clear();
    }
}

/// One attempt's records in key order: its parts one at a time, then records not written to
/// a part. Records of earlier attempts are only those [`Prior`] chose, marked reused.
struct Cursor {
    /// Part keys, with their index in [`Prior::parts`] for an earlier attempt.
    parts: VecDeque<(Option<usize>, String)>,
    current: std::vec::IntoIter<ItemRecord>,
    current_index: Option<usize>,
    tail: Option<Vec<ItemRecord>>,
}

impl Cursor {
    fn new(parts: impl Iterator<Item = (Option<usize>, String)>, tail: Vec<ItemRecord>) -> Cursor {
        Cursor {
            parts: parts.collect(),
            current: Vec::new().into_iter(),
            current_index: None,
            tail: Some(tail),
        }
    }

    async fn next(&mut self, store: &dyn ObjectStore, prior: &Prior) -> Result<Option<ItemRecord>> {
        loop {
            if let Some(record) = self.current.next() {
                match self.current_index {
                    None => return Ok(Some(record)),
                    Some(index) if prior.chosen(&record.key, index) => {
                        return Ok(Some(ItemRecord {
                            status: ItemStatus::Reused,
                            ..record
                        }));
                    }
                    Some(_) => continue,
                }
            }
            if let Some((index, key)) = self.parts.pop_front() {
                self.current = journal::read_part(store, &key).await?.items.into_iter();
                self.current_index = index;
            } else if let Some(tail) = self.tail.take() {
                self.current = tail.into_iter();
                self.current_index = None;
            } else {
                return Ok(None);
            }
        }
    }
}

/// The manifest's writer, with its hash (the manifest carries the same commit metadata as a
/// data object).
struct Out {
    writer: Box<dyn sluice_storage::ObjectWriter>,
    hasher: Sha256,
    size: u64,
}

impl Out {
    async fn send_if_full(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        if buf.len() >= FLUSH_BYTES {
            self.send(buf).await?;
        }
        Ok(())
    }

    async fn send(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.hasher.update(&buf[..]);
        self.size += buf.len() as u64;
        self.writer.write(Bytes::from(std::mem::take(buf))).await?;
        Ok(())
    }

    async fn commit(self) -> Result<()> {
        let sha256 = hex::encode(self.hasher.finalize());
        let metadata = crate::sink::committed_metadata(self.size, &sha256, None);
        self.writer.commit_with_metadata(metadata).await?;
        Ok(())
    }
}
