//! One task's run: plan, take the share, process items with bounded concurrency (reusing or
//! skipping what is already written), record them in the task journal and stream the task
//! manifest from it (`journal`, `manifest_writer`): memory stays flat in the number of items.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::StreamExt;
use sluice_runtime::shard::take_share;
use sluice_runtime::{CancellationToken, RetryDecision, RetryPolicy, TaskContext};
use sluice_storage::{ObjectStore, StorageError, StoreConfig, WriteOptions};

use crate::config::{ExtractConfig, OutputFormat, PartitionValue};
use crate::convert::cursor::CursorTracker;
use crate::decode::ChannelReader;
use crate::error::{ExtractError, Result};
use crate::execution_date::{execution_date, remove_expired_pins};
use crate::journal::{self, Journal, Prior};
use crate::manifest_writer::{self, Sources};
use crate::naming::{KeyClaims, Layout};
use crate::pipeline::{self, PipelineCtx};
use crate::plan::plan_pinned;
use crate::progress::{ItemProgress, ProgressHub, human_bytes};
use crate::receipt::{
    FORMAT_VERSION, ItemRecord, ItemStatus, ObjectRecord, PageRecord, Receipt, SourceRecord,
    TASK_MANIFEST_KIND, TaskManifest, objects_intact,
};
use crate::sink::SinkFactory;
use crate::source::http::{HttpClient, SourceVersion};
use crate::source::socrata_pin::PinScope;
use crate::source::{self, Origin, WorkItem};
use crate::state::{self, StateReader};

/// Item-level attempts (each attempt's requests are retried on their own as well).
const ITEM_ATTEMPTS: u32 = 4;
/// Upload chunk for Parquet output unless `--upload-chunk-mib` says otherwise.
const PARQUET_UPLOAD_CHUNK: usize = 8 * 1024 * 1024;
/// Largest receipt read back.
const RECEIPT_LIMIT: u64 = 16 * 1024 * 1024;
/// Items started ahead of the oldest unfinished one, per unit of `--concurrency`: results
/// are taken in plan order (so the manifest lists items in key order) without a slow item
/// stalling the others.
const LOOKAHEAD: usize = 16;

pub use crate::manifest_writer::BeforeVerify;

/// Test seams of [`run_with_hooks`]; [`run`] uses none.
#[derive(Clone, Default)]
pub struct TaskHooks {
    /// Lets a test delete or replace an object between its commit and the end-of-task check
    /// (which then runs against the real store as always).
    pub before_verify: Option<BeforeVerify>,
}

/// What a successful task produced.
#[derive(Debug)]
pub struct TaskOutcome {
    /// The task manifest's header and totals. Its `items` are empty: a task may have more
    /// than fit in memory; they are in the stored manifest at `manifest_url`.
    pub manifest: TaskManifest,
    /// Where the task manifest was written.
    pub manifest_url: String,
    /// Items in the whole plan (all tasks).
    pub planned_items: usize,
}

struct Shared {
    config: ExtractConfig,
    client: HttpClient,
    store: Arc<dyn ObjectStore>,
    layout: Layout,
    sinks: SinkFactory,
    hub: Arc<ProgressHub>,
    task: TaskContext,
    cancel: CancellationToken,
    claims: Arc<KeyClaims>,
    /// What earlier attempts of this task finished (a retry).
    prior: Prior,
    /// `--since auto`: the stored state, for files whose version it records.
    states: Option<tokio::sync::Mutex<StateReader>>,
}

/// Runs this task's share of the extraction.
pub async fn run(
    config: ExtractConfig,
    task: &TaskContext,
    store_config: StoreConfig,
    cancel: CancellationToken,
) -> Result<TaskOutcome> {
    run_with_hooks(config, task, store_config, cancel, TaskHooks::default()).await
}

/// [`run`] with test seams.
pub async fn run_with_hooks(
    config: ExtractConfig,
    task: &TaskContext,
    mut store_config: StoreConfig,
    cancel: CancellationToken,
    hooks: TaskHooks,
) -> Result<TaskOutcome> {
    let started_at = chrono::Utc::now();
    let client = HttpClient::new(&config.http, cancel.clone())?;
    if config.format == OutputFormat::Parquet && store_config.upload_chunk_size.is_none() {
        // Parquet output is several times smaller than its CSV, so bigger chunks save few
        // round trips, while the encoder's row group already needs the memory: two 8 MiB
        // buffers keep peak RSS under 100 MB (docs/benchmarks.md).
        store_config.upload_chunk_size = Some(PARQUET_UPLOAD_CHUNK);
    }
    let (store, prefix) = sluice_storage::open(&config.dest, &store_config)
        .await
        .map_err(|e| match e {
            StorageError::InvalidLocation { .. } => ExtractError::Config(format!("--dest: {e}")),
            other => ExtractError::Storage(other),
        })?;
    // Local directories: one directory fsync per journal part instead of one per object.
    store.defer_directory_syncs();
    let dest_prefix = prefix.clone();
    let prefix = Layout::new(&prefix, None).prefix;
    let partition = match &config.partition {
        Some(spec) => {
            let today = match spec.value {
                PartitionValue::Today => {
                    execution_date(store.as_ref(), &prefix, task, started_at).await?
                }
                PartitionValue::Fixed(_) => started_at.date_naive(),
            };
            Some(spec.resolve(today))
        }
        None => None,
    };
    let layout = Layout::new(&prefix, partition.clone());

    // Socrata plans are pinned next to the execution date pin (`source::socrata_pin`).
    let pins = PinScope {
        store: store.as_ref(),
        prefix: &prefix,
        task,
    };
    let all = plan_pinned(&config, &client, &store_config, Some(&pins)).await?;
    let planned_items = all.len();
    let planned_per_dataset = items_per_dataset(&all);
    let share = take_share(
        all,
        WorkItem::shard_key,
        task.index,
        task.count,
        config.shard_strategy,
    );
    tracing::info!(
        task_index = task.index,
        task_count = task.count,
        planned = planned_items,
        share = share.len(),
        dest = %store.url_of(&layout.prefix),
        format = %config.format,
        "task {}/{}: {} of {} items, writing to {}",
        task.index,
        task.count,
        share.len(),
        planned_items,
        store.url_of(layout.prefix.trim_end_matches('/'))
    );

    if task.index == 0 {
        remove_stale_manifests(store.as_ref(), &layout, task.count).await?;
        remove_expired_pins(store.as_ref(), &layout.prefix, started_at).await?;
    }

    // `--since auto`: the state of every dataset with files in the share, read before any
    // work, so a broken state file stops the task (exit 2) instead of failing items.
    let states = match config.since_auto {
        true => {
            let mut reader = StateReader::with_store(store.clone(), &dest_prefix);
            let datasets: std::collections::BTreeSet<&str> = share
                .iter()
                .filter(|i| i.cursor.as_ref().is_some_and(|c| c.column.is_none()))
                .map(|i| i.dataset.as_str())
                .collect();
            for dataset in datasets {
                reader.preload(dataset).await?;
            }
            Some(tokio::sync::Mutex::new(reader))
        }
        false => None,
    };

    // The task journal: a retry (same execution) reads what earlier attempts finished; a
    // local run (no execution, never retried) starts from an empty directory.
    let journal_dir = journal::dir(&layout, task);
    let claims = Arc::new(KeyClaims::default());
    let prior = match (&task.execution, task.attempt) {
        (Some(_), attempt) if attempt > 0 => {
            Prior::read(store.as_ref(), &journal_dir, attempt, &claims).await?
        }
        (Some(_), _) => Prior::default(),
        (None, _) => {
            journal::clear(store.as_ref(), &journal_dir).await?;
            Prior::default()
        }
    };
    if prior.len() > 0 {
        tracing::info!(
            reused = prior.len(),
            "{} items done by an earlier attempt of this execution (objects checked): reused",
            prior.len()
        );
    }

    let hub = ProgressHub::new(config.progress.clone());
    let reporter_stop = CancellationToken::new();
    let reporter = hub.spawn_reporter(reporter_stop.clone());
    let concurrency = config.concurrency.max(1);
    let shared = Arc::new(Shared {
        sinks: SinkFactory::new(
            store.clone(),
            tokio::runtime::Handle::current(),
            cancel.clone(),
        ),
        config,
        client,
        store: store.clone(),
        layout: layout.clone(),
        hub,
        task: task.clone(),
        cancel: cancel.clone(),
        claims,
        prior,
        states,
    });

    let mut journal = Journal::new(
        store.clone(),
        journal_dir,
        task,
        shared.config.journal_part_items,
    );
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut records = futures::stream::iter(share)
        .map(|item| {
            let (shared, slots) = (shared.clone(), slots.clone());
            async move {
                let _slot = slots.acquire_owned().await;
                process(shared, item).await
            }
        })
        .buffered(concurrency * LOOKAHEAD);
    let mut journal_error = None;
    while let Some(record) = records.next().await {
        let Some(record) = record else { continue };
        if journal_error.is_some() {
            continue;
        }
        if let Err(e) = journal.push(record).await {
            // Keep going: the items in flight finish, then the task fails on this.
            tracing::error!(error = %e, "cannot write the task journal: {e}");
            journal_error = Some(e);
        }
    }
    drop(records);
    reporter_stop.cancel();
    let _ = reporter.await;

    if cancel.is_cancelled() {
        // SIGTERM: no time for bookkeeping, and every upload in flight has been aborted.
        return Err(ExtractError::Cancelled);
    }
    if let Some(e) = journal_error {
        return Err(e);
    }

    // A task that Cloud Run may retry (it has an execution) records every item in a part
    // before the manifest: a retry after an incomplete manifest reads the parts. A local run's
    // last records go straight into the manifest (a small task then writes no part at all).
    if task.execution.is_some() {
        journal.flush().await?;
    }
    let (parts, tail) = journal.into_parts();
    // The manifest lists only durable objects.
    store.sync().await?;
    let header = TaskManifest {
        kind: TASK_MANIFEST_KIND.to_string(),
        version: FORMAT_VERSION,
        job: task.job.clone(),
        execution: task.execution.clone(),
        task_index: task.index,
        task_count: task.count,
        attempt: task.attempt,
        dest: store.url_of(layout.prefix.trim_end_matches('/')),
        partition,
        started_at: started_at.to_rfc3339(),
        finished_at: String::new(),
        complete: false,
        planned_items: Some(planned_per_dataset),
        items: Vec::new(),
        totals: Default::default(),
    };
    let manifest_key = layout.task_manifest_key(task.index);
    let manifest_url = store.url_of(&manifest_key);
    let written = manifest_writer::write(
        store.as_ref(),
        &manifest_key,
        &header,
        Sources {
            prior: &shared.prior,
            parts: &parts,
            tail,
        },
        hooks.before_verify.as_ref(),
    )
    .await?;
    // The parts stay even when the manifest is complete: a task that dies after writing it
    // is retried, and Cloud Run may run an attempt again. Task 0 removes them after 8 days
    // with the execution's pins.
    let totals = written.totals;
    let manifest = TaskManifest {
        finished_at: chrono::Utc::now().to_rfc3339(),
        complete: written.complete,
        totals: totals.clone(),
        ..header
    };

    tracing::info!(
        items = totals.items,
        extracted = totals.extracted,
        reused = totals.reused,
        skipped = totals.skipped,
        failed = totals.failed,
        objects = totals.objects,
        rows = totals.rows,
        rejected_rows = totals.rejected_rows,
        bytes = totals.bytes,
        source_bytes = totals.source_bytes,
        manifest = %manifest_url,
        "task done: {} items ({} extracted, {} reused, {} skipped, {} failed), {} objects, {} rows, {} written; manifest {manifest_url}",
        totals.items,
        totals.extracted,
        totals.reused,
        totals.skipped,
        totals.failed,
        totals.objects,
        totals.rows,
        human_bytes(totals.bytes),
    );

    if !written.complete {
        return Err(ExtractError::ItemsFailed {
            failed: totals.failed,
            total: totals.items,
            manifest: manifest_url,
            items: written.failures,
        });
    }
    Ok(TaskOutcome {
        manifest,
        manifest_url,
        planned_items,
    })
}

/// Items per dataset in the whole plan, for the manifest's `planned_items`: with it, `load` can
/// tell which datasets a missing task manifest leaves short, and load the others.
fn items_per_dataset(all: &[WorkItem]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for item in all {
        *counts.entry(item.dataset.clone()).or_insert(0) += 1;
    }
    counts
}

/// Task manifests with an index past this execution's task count are left over from an
/// earlier execution that ran more tasks; `load` would read them as part of this run. Task 0
/// removes them before it starts (the others are overwritten by their own tasks).
async fn remove_stale_manifests(
    store: &dyn ObjectStore,
    layout: &Layout,
    count: u32,
) -> Result<()> {
    let prefix = format!("{}_manifests/task-", layout.prefix);
    for object in store.list(&prefix).await? {
        let index = object
            .key
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".json"))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(index) = index
            && index >= count
        {
            tracing::info!(
                manifest = %store.url_of(&object.key),
                "removing {}: task {index} does not exist in this execution of {count} tasks",
                store.url_of(&object.key)
            );
            store.delete(&object.key).await?;
        }
    }
    Ok(())
}

/// Stores a receipt or manifest in the format's own byte form (`sluice_manifest`).
async fn write_json(store: &dyn ObjectStore, key: &str, body: Vec<u8>) -> Result<()> {
    // Receipts and manifests carry the same commit metadata as data objects.
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
    let metadata = crate::sink::committed_metadata(body.len() as u64, &sha256, None);
    sluice_storage::write_bytes(
        store,
        key,
        bytes::Bytes::from(body),
        WriteOptions {
            if_absent: false,
            metadata,
            content_type: Some("application/json".into()),
        },
    )
    .await?;
    Ok(())
}

fn source_record(item: &WorkItem, version: SourceVersion, bytes: u64) -> SourceRecord {
    SourceRecord {
        kind: match (&item.origin, &item.page) {
            (_, Some(_)) => "socrata",
            (Origin::Http(_), None) => "http",
            (Origin::Local(_), None) => "file",
        }
        .to_string(),
        url: item.display.clone(),
        version,
        bytes,
        page: item.page.as_ref().map(|p| PageRecord {
            number: p.number,
            offset: p.offset,
            limit: p.limit,
            dataset_rows: p.dataset_rows,
        }),
        cursor: item.cursor.clone(),
    }
}

fn label(item: &WorkItem) -> String {
    match &item.page {
        Some(p) => format!("{}/{} page {}", item.dataset, item.name, p.number),
        None => format!("{}/{}", item.dataset, item.name),
    }
}

/// Processes one item; `None` when an earlier attempt of this execution did it (its record
/// is in that attempt's journal, its objects were checked when the journal was read).
async fn process(shared: Arc<Shared>, item: WorkItem) -> Option<ItemRecord> {
    if shared.prior.is_done(&item.shard_key()) {
        return None;
    }
    Some(process_item(shared, item).await)
}

async fn process_item(shared: Arc<Shared>, item: WorkItem) -> ItemRecord {
    let item = Arc::new(item);
    let receipt_key = shared.layout.receipt_key(
        &item.dataset,
        &item.name,
        item.page.as_ref().map(|p| p.number),
    );
    let failed = |error: String, attempts: u32| ItemRecord {
        key: item.shard_key(),
        name: item.name.clone(),
        dataset: item.dataset.clone(),
        source: source_record(&item, SourceVersion::default(), 0),
        status: ItemStatus::Failed,
        error: Some(error),
        objects: Vec::new(),
        resumes: 0,
        attempts,
        execution: shared.task.execution.clone(),
        finished_at: chrono::Utc::now().to_rfc3339(),
    };
    if let Some(cause) = &item.planning_error {
        tracing::error!(item = %item.display, error = %cause, "{}: failed: {cause}", label(&item));
        return failed(cause.clone(), 0);
    }
    if shared.cancel.is_cancelled() {
        return failed("cancelled before it started".into(), 0);
    }
    if let Err(e) = shared.claims.claim(&receipt_key, &item.display) {
        tracing::error!(item = %item.display, error = %e, "{}: failed: {e}", label(&item));
        return failed(e.to_string(), 0);
    }

    if let Some(states) = &shared.states
        && let Some(record) = skip_unchanged(&shared, &item, states).await
    {
        return record;
    }

    match existing(&shared, &item, &receipt_key).await {
        Ok(Some(record)) => {
            // Kept objects are this task's outputs too: nothing else may overwrite them.
            let claimed = record.objects.iter().try_for_each(|o| {
                let source = match &o.member {
                    Some(member) => format!("{}!{member}", item.display),
                    None => item.display.clone(),
                };
                shared.claims.claim(&o.name, &source)?;
                match &o.rejects {
                    Some(r) => shared.claims.claim(&r.name, &source),
                    None => Ok(()),
                }
            });
            if let Err(e) = claimed {
                tracing::error!(item = %item.display, error = %e, "{}: failed: {e}", label(&item));
                return failed(e.to_string(), 0);
            }
            tracing::info!(
                item = %item.display,
                status = ?record.status,
                objects = record.objects.len(),
                "{}: {} ({} objects already written)",
                label(&item),
                match record.status {
                    ItemStatus::Reused => "done by an earlier attempt of this execution",
                    _ => "source unchanged since the last extract, skipped",
                },
                record.objects.len()
            );
            return record;
        }
        Ok(None) => {}
        Err(e) if e.is_cancelled() => return failed(e.to_string(), 0),
        Err(e) => {
            tracing::warn!(item = %item.display, error = %e, "cannot check earlier outputs of {}; extracting again: {e}", item.display);
        }
    }

    let progress = shared.hub.start(&label(&item));
    let attempts = AtomicU32::new(0);
    let policy = RetryPolicy {
        max_attempts: shared.config.http.retry.max_attempts.min(ITEM_ATTEMPTS),
        ..shared.config.http.retry.clone()
    };
    let what = format!("extract {}", item.display);
    let result = policy
        .run(
            &what,
            &shared.cancel,
            |attempt| {
                attempts.store(attempt + 1, Ordering::Relaxed);
                progress.restart();
                extract_once(shared.clone(), item.clone(), progress.clone())
            },
            // Requests were already retried; an item is redone only when its transfer broke
            // and could not be resumed, or the source changed under us.
            |e: &ExtractError| match e {
                ExtractError::Transport {
                    transient: true, ..
                }
                | ExtractError::SourceChanged { .. } => RetryDecision::Retry,
                _ => RetryDecision::Stop,
            },
        )
        .await;
    shared.hub.finish(&progress);
    let attempts = attempts.load(Ordering::Relaxed);
    let extracted = match result {
        Ok(extracted) => extracted,
        Err(e) => {
            let error = if e.is_cancelled() {
                ExtractError::Cancelled
            } else {
                e.into_last_error()
                    .unwrap_or_else(|| ExtractError::Internal("no attempt was made".into()))
            };
            if !error.is_cancelled() {
                tracing::error!(item = %item.display, error = %error, "{}: failed: {error}", label(&item));
            }
            return failed(error.to_string(), attempts);
        }
    };

    let secs = progress.elapsed().as_secs_f64().max(1e-3);
    let mut source = source_record(&item, extracted.version, extracted.source_bytes);
    // `--cursor`: the window and the largest value are known only after the rows were read.
    source.cursor = extracted.cursor.or(source.cursor);
    let record = ItemRecord {
        key: item.shard_key(),
        name: item.name.clone(),
        dataset: item.dataset.clone(),
        source,
        status: ItemStatus::Extracted,
        error: None,
        objects: extracted.objects,
        resumes: extracted.resumes,
        attempts,
        execution: shared.task.execution.clone(),
        finished_at: chrono::Utc::now().to_rfc3339(),
    };
    // The task journal records the item for a retry of this execution. Only
    // `--skip-existing`, which a later execution runs against what this one wrote, still needs
    // a receipt per item at a key derived from the item.
    if shared.config.skip_existing {
        let receipt = Receipt::new(record.clone());
        if let Err(e) = write_json(shared.store.as_ref(), &receipt_key, receipt.to_bytes()).await {
            tracing::error!(item = %item.display, error = %e, "{}: objects written but the receipt failed: {e}", label(&item));
            return failed(format!("writing the receipt: {e}"), attempts);
        }
    }
    let rows: u64 = record.objects.iter().filter_map(|o| o.rows).sum();
    let written: u64 = record.objects.iter().map(|o| o.size).sum();
    let rejected: u64 = record.objects.iter().map(|o| o.rejected_rows).sum();
    tracing::info!(
        item = %item.display,
        objects = record.objects.len(),
        rows,
        rejected_rows = rejected,
        source_bytes = record.source.bytes,
        bytes_written = written,
        seconds = secs,
        rate_bytes_per_sec = (record.source.bytes as f64 / secs) as u64,
        resumes = record.resumes,
        attempts,
        "{}: {} objects, {rows} rows{}, {} in -> {} out in {secs:.1}s ({}/s)",
        label(&item),
        record.objects.len(),
        if rejected > 0 { format!(" ({rejected} quarantined)") } else { String::new() },
        human_bytes(record.source.bytes),
        human_bytes(written),
        human_bytes((record.source.bytes as f64 / secs) as u64),
    );
    record
}

/// `--since auto` for a file: `Skipped` with no objects when the source's current version
/// (HEAD, file metadata) matches the one the state records as loaded. Anything that cannot
/// tell (no entry, no version, HEAD failing) pulls it.
async fn skip_unchanged(
    shared: &Shared,
    item: &WorkItem,
    states: &tokio::sync::Mutex<StateReader>,
) -> Option<ItemRecord> {
    let cursor = item.cursor.as_ref()?;
    // Files only (with or without `--cursor`); Socrata pages have their window.
    if item.page.is_some() {
        return None;
    }
    let stored = match states.lock().await.entry(&item.dataset, &item.name).await {
        Ok(stored) => stored?,
        Err(e) => {
            tracing::warn!(item = %item.display, error = %e, "{}: cannot read the stored state; extracting: {e}", label(item));
            return None;
        }
    };
    let current = match item.current_version(&shared.client).await {
        Ok(current) => current?,
        Err(e) => {
            tracing::warn!(item = %item.display, error = %e, "{}: cannot check the source's version; extracting: {e}", label(item));
            return None;
        }
    };
    if !state::unchanged(Some(&stored), &current) {
        return None;
    }
    tracing::info!(
        item = %item.display,
        state_key = %cursor.state_key,
        "{}: unchanged since the load recorded in the state ({}), skipped",
        label(item),
        stored.advanced_at
    );
    Some(ItemRecord {
        key: item.shard_key(),
        name: item.name.clone(),
        dataset: item.dataset.clone(),
        source: source_record(item, current, 0),
        status: ItemStatus::Skipped,
        error: None,
        objects: Vec::new(),
        resumes: 0,
        attempts: 0,
        execution: shared.task.execution.clone(),
        finished_at: chrono::Utc::now().to_rfc3339(),
    })
}

/// What one successful attempt produced.
struct Extracted {
    objects: Vec<ObjectRecord>,
    version: SourceVersion,
    resumes: u32,
    source_bytes: u64,
    /// `--cursor`: the item's window and the largest value read.
    cursor: Option<sluice_manifest::CursorRecord>,
}

fn object_metadata(
    shared: &Shared,
    item: &WorkItem,
    version: &SourceVersion,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("sluice-source".into(), item.display.clone());
    m.insert("sluice-item".into(), item.shard_key());
    m.insert("sluice-dataset".into(), item.dataset.clone());
    m.insert("sluice-format".into(), item.format.as_str().into());
    m.insert("sluice-task".into(), shared.task.describe());
    if let Some(e) = &version.etag {
        m.insert("sluice-source-etag".into(), e.clone());
    }
    if let Some(lm) = &version.last_modified {
        m.insert("sluice-source-last-modified".into(), lm.clone());
    }
    if let Some(size) = version.size {
        m.insert("sluice-source-size".into(), size.to_string());
    }
    if let Some(p) = &item.page {
        m.insert("sluice-page".into(), p.number.to_string());
    }
    m
}

async fn extract_once(
    shared: Arc<Shared>,
    item: Arc<WorkItem>,
    progress: Arc<ItemProgress>,
) -> Result<Extracted> {
    let opened = source::open(&item, &shared.client).await?;
    // The plan's version (Socrata) identifies the content better than a page's headers.
    let version = item
        .planned_version
        .clone()
        .unwrap_or_else(|| opened.version());
    progress.set_total(opened.total());
    let ctx = PipelineCtx {
        metadata: object_metadata(&shared, &item, &version),
        item: item.clone(),
        layout: shared.layout.clone(),
        sinks: shared.sinks.clone(),
        bad_rows: shared.config.bad_rows,
        max_bad_rows: shared.config.max_bad_rows,
        parquet: shared.config.parquet.clone(),
        rows: progress.rows.clone(),
        claims: shared.claims.clone(),
        cursor: item
            .cursor_spec
            .clone()
            .map(|spec| Arc::new(CursorTracker::new(spec))),
    };
    let tracker = ctx.cursor.clone();
    let (tx, reader) = ChannelReader::channel();
    let pump = tokio::spawn(opened.pump(tx, progress.bytes.clone()));
    let outcome = tokio::task::spawn_blocking(move || pipeline::run(reader, &ctx))
        .await
        .map_err(|e| ExtractError::internal_source("pipeline thread", e))?;
    match outcome {
        Ok(objects) => {
            let resumes = pump.await.unwrap_or(0);
            Ok(Extracted {
                objects,
                version,
                resumes,
                source_bytes: progress.bytes.load(Ordering::Relaxed),
                cursor: tracker
                    .zip(item.cursor.as_ref())
                    .map(|(t, c)| t.record(&c.state_key)),
            })
        }
        Err(e) => {
            pump.abort();
            Err(e)
        }
    }
}

/// `--skip-existing`: the objects an earlier execution wrote from the same source version, if
/// its receipt says so and they are intact. (A retry of this execution reads the task journal
/// instead: `journal::Prior`.)
async fn existing(
    shared: &Shared,
    item: &WorkItem,
    receipt_key: &str,
) -> Result<Option<ItemRecord>> {
    if !shared.config.skip_existing {
        return Ok(None);
    }
    let store = shared.store.as_ref();
    if store.head(receipt_key).await?.is_none() {
        return Ok(None);
    }
    let bytes = sluice_storage::read_to_bytes(store, receipt_key, RECEIPT_LIMIT).await?;
    let receipt = match Receipt::parse(&bytes, &store.url_of(receipt_key)) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(receipt = %store.url_of(receipt_key), error = %e, "unreadable receipt; extracting again");
            return Ok(None);
        }
    };
    let previous = receipt.item;
    let same_shape = previous.status != ItemStatus::Failed
        && previous
            .objects
            .iter()
            .all(|o| o.format == item.format.as_str());
    if !same_shape || !objects_intact(store, &previous.objects).await? {
        return Ok(None);
    }
    if let Some(current) = item.current_version(&shared.client).await?
        && previous.source.version.matches(&current)
    {
        return Ok(Some(ItemRecord {
            status: ItemStatus::Skipped,
            ..previous
        }));
    }
    Ok(None)
}
