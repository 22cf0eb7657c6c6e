//! One load task, end to end: discover -> group into work items -> take this task's share ->
//! read footers and build job specs -> make datasets/tables -> submit jobs concurrently and
//! follow each to its end -> report.
//!
//! Idempotence under Cloud Run's task retries rests on the job ids (job_id.rs): a retried task
//! plans the same items and submits the same ids; BigQuery answers 409 for jobs that exist, and
//! such a job is followed (RUNNING) or counted (DONE) instead of loading again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use google_cloud_bigquery_v2::model;
use sluice_runtime::retry::RetryError;
use sluice_runtime::{CancellationToken, TaskContext, shard};

use crate::client::{ApiError, BigQuery};
use crate::config::{Input, LoadConfig, SourceFormat};
use crate::errors::{BqError, ErrorClass, JobFailure, LoadError, QUOTED_ERRORS};
use crate::inputs::{Stores, discover};
use crate::plan::{self, LoadSpec, SourceObject, WorkItem};
use crate::schema::{self, ParquetSchema};
use crate::template::TableRef;
use crate::{footer, job_id};

/// Suffixes probed per item before giving up (each probe is one insert answered 409 + one get).
pub const MAX_SUFFIX_PROBES: u32 = 50;

/// How a work item ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A job submitted by this run loaded the objects.
    Loaded,
    /// A job with this id had already loaded them (an earlier attempt of this task).
    AlreadyLoaded,
    /// Dry run: the job that would be submitted.
    Planned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Loaded => "loaded",
            Outcome::AlreadyLoaded => "already_loaded",
            Outcome::Planned => "planned",
        }
    }
}

/// What one load job did.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    /// `project.dataset.table[$decorator]`.
    pub table: String,
    /// `project:location.job_id` (the form `bq show -j` and the console take).
    pub job_id: String,
    pub outcome: Outcome,
    pub files: usize,
    /// Bytes of the source objects as listed.
    pub listed_bytes: u64,
    /// Rows in the Parquet footers (Parquet only).
    pub file_rows: Option<u64>,
    /// BigQuery's `statistics.load.outputRows`.
    pub rows: Option<i64>,
    /// BigQuery's `statistics.load.inputFileBytes`.
    pub input_bytes: Option<i64>,
    /// BigQuery's `statistics.load.badRecords` (CSV/JSON rows skipped under `maxBadRecords`).
    pub bad_records: Option<i64>,
    /// BigQuery's end - start time, or the time this run spent on the job.
    pub duration: Duration,
    /// The `_a<N>` suffix the job ran under (0: none).
    pub attempt: u32,
}

/// What one task did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Objects found by every task's shared listing.
    pub objects_total: usize,
    /// Work items (destinations) across all tasks.
    pub items_total: usize,
    /// Jobs of this task, in destination order.
    pub jobs: Vec<JobReport>,
}

/// A work item with its job template.
struct Planned {
    item: WorkItem,
    spec: LoadSpec,
    base_id: String,
    file_rows: Option<u64>,
}

/// Runs this task's share of the load.
pub async fn run(
    config: &LoadConfig,
    task: &TaskContext,
    cancel: &CancellationToken,
) -> Result<LoadReport, LoadError> {
    config.validate()?;
    if !config.dry_run {
        probe_bigquery_credentials(config).await?;
    }
    let mut discovered = discover(&config.input, &config.store).await?;
    let input_url = match &config.input {
        Input::Glob(u) | Input::Manifests(u) => u.clone(),
    };
    if discovered.skipped_hidden > 0 {
        tracing::info!(
            skipped = discovered.skipped_hidden,
            "skipped {} object(s) under `_`/`.` names (bookkeeping, not data) in {input_url}",
            discovered.skipped_hidden
        );
    }
    if discovered.objects.is_empty() {
        if config.allow_empty {
            tracing::info!("no objects to load in {input_url}; nothing to do (--allow-empty)");
            return Ok(LoadReport::default());
        }
        return Err(LoadError::Input(format!(
            "no objects to load in {input_url} (pass --allow-empty if that can be normal)"
        )));
    }
    let objects_total = discovered.objects.len();
    let mut items = plan::group(std::mem::take(&mut discovered.objects), &config.table)?;
    if config.job_per_object {
        items = plan::split_per_object(items);
    }
    let items_total = items.len();
    let mine = shard::take_share(
        items,
        WorkItem::shard_key,
        task.index,
        task.count,
        config.shard_strategy,
    );
    tracing::info!(
        objects = objects_total,
        items = items_total,
        share = mine.len(),
        task = %task,
        "{objects_total} object(s) for {items_total} destination(s); this task loads {}",
        mine.len()
    );
    let mut report = LoadReport {
        objects_total,
        items_total,
        jobs: Vec::new(),
    };
    if mine.is_empty() {
        return Ok(report);
    }

    let mut stores = discovered.stores;
    let mine = if matches!(config.input, Input::Manifests(_)) {
        verify_manifest_objects(config, &mut stores, mine).await?
    } else {
        mine
    };
    let planned = plan_items(config, &mut stores, mine).await?;

    if config.dry_run {
        for p in &planned {
            let project = job_project(config, &p.item.destination);
            let location = config.location.as_deref().unwrap_or("-");
            let job = JobReport {
                table: p.item.destination.to_string(),
                job_id: format!("{project}:{location}.{}", p.base_id),
                outcome: Outcome::Planned,
                files: p.item.objects.len(),
                listed_bytes: p.item.total_bytes(),
                file_rows: p.file_rows,
                rows: None,
                input_bytes: None,
                bad_records: None,
                duration: Duration::ZERO,
                attempt: 0,
            };
            log_job(&job);
            report.jobs.push(job);
        }
        return Ok(report);
    }

    let client = BigQuery::new(&config.bigquery)
        .await
        .map_err(|source| LoadError::Api {
            context: "BigQuery client".into(),
            source: Box::new(source),
        })?;
    let runner = Runner {
        config,
        client,
        cancel: cancel.clone(),
    };
    let mut planned = planned;
    if config.create_dataset {
        runner.ensure_datasets(&planned).await?;
    } else {
        runner.check_datasets(&planned).await?;
    }
    runner.check_table_schemas(&mut planned).await?;
    if plan::wants_table_layout(config) {
        runner.ensure_tables(&planned).await?;
    }

    let total = planned.len();
    let results: Vec<(String, Result<JobReport, LoadError>)> = futures::stream::iter(planned)
        .map(|p| {
            let runner = &runner;
            async move {
                let table = p.item.destination.to_string();
                (table, runner.execute(&p).await)
            }
        })
        .buffer_unordered(config.concurrency)
        .collect()
        .await;
    let mut failures = Vec::new();
    let mut cancelled = false;
    for (_, result) in results {
        match result {
            Ok(job) => report.jobs.push(job),
            Err(LoadError::Cancelled) => cancelled = true,
            Err(e) => failures.push(e),
        }
    }
    report.jobs.sort_by(|a, b| a.table.cmp(&b.table));
    if cancelled && failures.is_empty() {
        return Err(LoadError::Cancelled);
    }
    match failures.len() {
        0 => Ok(report),
        1 if total == 1 => Err(failures.remove(0)),
        _ => Err(LoadError::Failed { failures, total }),
    }
}

/// With Application Default Credentials, makes sure a token can be had before any work, so
/// "no credentials" is a setup error in seconds (see `sluice_storage::preflight`).
async fn probe_bigquery_credentials(config: &LoadConfig) -> Result<(), LoadError> {
    if config.bigquery.credentials != crate::Credentials::Default {
        return Ok(());
    }
    let setup = &config.store.credentials;
    let credentials = sluice_storage::preflight::adc_credentials("BigQuery", setup)?;
    sluice_storage::preflight::probe_credentials(&credentials, "BigQuery", setup).await?;
    Ok(())
}

fn job_project<'a>(config: &'a LoadConfig, destination: &'a TableRef) -> &'a str {
    config
        .job_project
        .as_deref()
        .unwrap_or(&destination.project)
}

/// Manifest entries are claims: check each object still exists with the listed generation
/// (a rewritten object would silently load other data under a stale identity).
async fn verify_manifest_objects(
    config: &LoadConfig,
    stores: &mut Stores,
    items: Vec<WorkItem>,
) -> Result<Vec<WorkItem>, LoadError> {
    let buckets: BTreeSet<String> = items
        .iter()
        .flat_map(|i| i.objects.iter().map(|o| o.bucket.clone()))
        .collect();
    for bucket in &buckets {
        stores.bucket(bucket).await?;
    }
    let stores = &*stores;
    let mut out = Vec::with_capacity(items.len());
    for mut item in items {
        let checked: Vec<Result<SourceObject, LoadError>> =
            futures::stream::iter(item.objects.drain(..))
                .map(|mut object| async move {
                    let store = stores.get(&object.bucket).expect("opened above");
                    let meta = store.head(&object.key).await?;
                    let Some(meta) = meta else {
                        return Err(LoadError::MissingObject {
                            url: object.url(),
                            manifest: object.listed_in.clone(),
                        });
                    };
                    if let (Some(expected), Some(actual)) = (object.generation, meta.generation)
                        && expected != actual
                    {
                        return Err(LoadError::ObjectChanged {
                            url: object.url(),
                            manifest: object.listed_in.clone(),
                            expected,
                            actual,
                        });
                    }
                    object.generation = object.generation.or(meta.generation);
                    object.size = Some(meta.size);
                    Ok(object)
                })
                .buffered(config.read_concurrency)
                .collect()
                .await;
        item.objects = checked.into_iter().collect::<Result<_, _>>()?;
        out.push(item);
    }
    Ok(out)
}

/// Reads every Parquet footer of the share (bounded), merges schemas per item, builds specs.
async fn plan_items(
    config: &LoadConfig,
    stores: &mut Stores,
    items: Vec<WorkItem>,
) -> Result<Vec<Planned>, LoadError> {
    let mut planned = Vec::with_capacity(items.len());
    if config.format != SourceFormat::Parquet {
        for item in items {
            let spec = plan::build_spec(config, &item, None)?;
            let base_id = plan::base_job_id(&item, &spec);
            planned.push(Planned {
                item,
                spec,
                base_id,
                file_rows: None,
            });
        }
        return Ok(planned);
    }
    for bucket in items
        .iter()
        .flat_map(|i| i.objects.iter().map(|o| o.bucket.clone()))
        .collect::<BTreeSet<_>>()
    {
        stores.bucket(&bucket).await?;
    }
    let stores = &*stores;
    // (item index, object index) -> footer schema, read with bounded concurrency across items.
    let jobs: Vec<(usize, usize, &SourceObject)> = items
        .iter()
        .enumerate()
        .flat_map(|(i, item)| item.objects.iter().enumerate().map(move |(j, o)| (i, j, o)))
        .collect();
    let footers: Vec<Result<(usize, usize, ParquetSchema, u64), LoadError>> =
        futures::stream::iter(jobs)
            .map(|(i, j, object)| async move {
                let store = stores.get(&object.bucket).expect("opened above");
                let size = match object.size {
                    Some(s) => s,
                    None => {
                        store
                            .head(&object.key)
                            .await?
                            .ok_or_else(|| {
                                LoadError::Input(format!("{} does not exist", object.url()))
                            })?
                            .size
                    }
                };
                let metadata = footer::read_metadata(store.as_ref(), &object.key, size).await?;
                let rows = metadata.file_metadata().num_rows().max(0) as u64;
                let parsed =
                    schema::from_parquet(metadata.file_metadata().schema()).map_err(|source| {
                        LoadError::Column {
                            url: object.url(),
                            source,
                        }
                    })?;
                Ok((i, j, parsed, rows))
            })
            .buffer_unordered(config.read_concurrency)
            .collect()
            .await;
    let mut by_item: BTreeMap<usize, BTreeMap<usize, (ParquetSchema, u64)>> = BTreeMap::new();
    for footer in footers {
        let (i, j, parsed, rows) = footer?;
        by_item.entry(i).or_default().insert(j, (parsed, rows));
    }
    for (i, item) in items.into_iter().enumerate() {
        let schemas = by_item.remove(&i).unwrap_or_default();
        let mut merged: Option<ParquetSchema> = None;
        let mut rows = 0u64;
        for (j, (parsed, file_rows)) in schemas {
            rows += file_rows;
            match merged.as_mut() {
                None => merged = Some(parsed),
                Some(m) => {
                    schema::merge(&mut m.fields, &parsed.fields, "").map_err(|d| {
                        LoadError::SchemaMismatch {
                            table: item.destination.to_string(),
                            first: item.objects[0].url(),
                            file: item.objects[j].url(),
                            column: d.column,
                            detail: d.detail,
                        }
                    })?;
                    m.decimal_targets.extend(parsed.decimal_targets);
                    m.list_inference |= parsed.list_inference;
                    m.enum_as_string |= parsed.enum_as_string;
                }
            }
        }
        let spec = plan::build_spec(config, &item, merged.as_ref())?;
        let base_id = plan::base_job_id(&item, &spec);
        planned.push(Planned {
            item,
            spec,
            base_id,
            file_rows: Some(rows),
        });
    }
    Ok(planned)
}

struct Runner<'a> {
    config: &'a LoadConfig,
    client: BigQuery,
    cancel: CancellationToken,
}

/// Maps a retried call's failure: cancellation stays cancellation; otherwise the last API error.
fn retry_failure(err: RetryError<ApiError>, context: impl FnOnce() -> String) -> LoadError {
    match err {
        RetryError::Cancelled { .. } => LoadError::Cancelled,
        RetryError::Exhausted { source, .. } => LoadError::Api {
            context: context(),
            source: Box::new(source),
        },
    }
}

fn job_status(job: &model::Job) -> (&str, Option<&model::ErrorProto>, &[model::ErrorProto]) {
    match &job.status {
        Some(s) => (s.state.as_str(), s.error_result.as_ref(), &s.errors),
        None => ("", None, &[]),
    }
}

fn bq_error(e: &model::ErrorProto) -> BqError {
    BqError::new(&e.reason, &e.message, Some(&e.location))
}

impl Runner<'_> {
    async fn call<T, F, Fut>(&self, what: String, op: F) -> Result<T, RetryError<ApiError>>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        self.config
            .retry
            .run(&what, &self.cancel, |_| op(), ApiError::retry_decision)
            .await
    }

    /// Without `--create-dataset`, each dataset of the share must exist: a missing one is a
    /// setup error naming the fix, found before any job is created.
    async fn check_datasets(&self, planned: &[Planned]) -> Result<(), LoadError> {
        let datasets: BTreeSet<(String, String)> = planned
            .iter()
            .map(|p| {
                (
                    p.item.destination.project.clone(),
                    p.item.destination.dataset.clone(),
                )
            })
            .collect();
        for (project, dataset) in datasets {
            let name = format!("{project}:{dataset}");
            let found = self
                .call(format!("datasets.get {name}"), || {
                    self.client.get_dataset(&project, &dataset)
                })
                .await
                .map_err(|e| retry_failure(e, || format!("dataset {name}")))?;
            if found.is_none() {
                let location = self.config.location.as_deref().unwrap_or("LOCATION");
                return Err(LoadError::Config(crate::config::ConfigError(format!(
                    "dataset {name} does not exist; create it with `bq mk --dataset \
                     --location={location} {name}`, or pass --create-dataset --location {location}"
                ))));
            }
        }
        Ok(())
    }

    /// For loads that keep the table's schema (append, WRITE_EMPTY, a `$` partition's
    /// truncate), compares each item's schema with the existing table's (`compat.rs`) and
    /// refuses a mismatch before any job is created; lossless adaptations (a REQUIRED column
    /// sent NULLABLE to match the table) change the spec and so the job id.
    async fn check_table_schemas(&self, planned: &mut [Planned]) -> Result<(), LoadError> {
        let keeps_schema = match self.config.write {
            crate::config::WriteMode::Append | crate::config::WriteMode::Empty => true,
            crate::config::WriteMode::Truncate => self.config.table.has_decorator(),
        };
        if !keeps_schema {
            return Ok(());
        }
        let mut tables: BTreeMap<TableRef, Option<Vec<schema::Field>>> = BTreeMap::new();
        for p in planned.iter_mut() {
            let Some(sent) = p.spec.schema.as_mut() else {
                continue;
            };
            let base = p.item.destination.base();
            if !tables.contains_key(&base) {
                let found = self
                    .call(format!("tables.get {base}"), || {
                        self.client.get_table(&base)
                    })
                    .await
                    .map_err(|e| retry_failure(e, || format!("table {base}")))?;
                let fields = found
                    .and_then(|t| t.schema)
                    .map(|s| {
                        s.fields
                            .iter()
                            .map(crate::compat::table_field)
                            .collect::<Vec<_>>()
                    })
                    .filter(|f: &Vec<schema::Field>| !f.is_empty());
                tables.insert(base.clone(), fields);
            }
            let Some(Some(table_fields)) = tables.get(&base) else {
                continue;
            };
            let changed = crate::compat::check(sent, table_fields, self.config.schema_update)
                .map_err(|e| {
                    let others = p.item.objects.len() - 1;
                    let file = match others {
                        0 => p.item.objects[0].url(),
                        n => format!(
                            "{} (and {n} other file(s) of the job)",
                            p.item.objects[0].url()
                        ),
                    };
                    LoadError::TypeMismatch(Box::new(crate::errors::TypeMismatch {
                        table: base.to_string(),
                        file,
                        column: e.column,
                        file_type: e.file_type,
                        table_type: e.table_type,
                        hint: e.hint,
                    }))
                })?;
            if changed {
                p.base_id = plan::base_job_id(&p.item, &p.spec);
            }
        }
        Ok(())
    }

    /// `--create-dataset`: each distinct dataset of the share exists in `--location`.
    async fn ensure_datasets(&self, planned: &[Planned]) -> Result<(), LoadError> {
        let location = self.config.location.as_deref().expect("validated");
        let datasets: BTreeSet<(String, String)> = planned
            .iter()
            .map(|p| {
                (
                    p.item.destination.project.clone(),
                    p.item.destination.dataset.clone(),
                )
            })
            .collect();
        for (project, dataset) in datasets {
            let name = format!("{project}:{dataset}");
            let context = || format!("dataset {name}");
            let existing = self
                .call(format!("datasets.get {name}"), || {
                    self.client.get_dataset(&project, &dataset)
                })
                .await
                .map_err(|e| retry_failure(e, context))?;
            let existing = match existing {
                Some(d) => d,
                None => {
                    let inserted = self
                        .call(format!("datasets.insert {name}"), || {
                            self.client.insert_dataset(&project, &dataset, location)
                        })
                        .await;
                    match inserted {
                        Ok(d) => {
                            tracing::info!(dataset = %name, location, "created dataset {name} in {location}");
                            d
                        }
                        // Another task created it first.
                        Err(RetryError::Exhausted { source, .. }) if source.is_conflict() => self
                            .call(format!("datasets.get {name}"), || {
                                self.client.get_dataset(&project, &dataset)
                            })
                            .await
                            .map_err(|e| retry_failure(e, context))?
                            .ok_or_else(|| {
                                LoadError::Input(format!(
                                    "dataset {name}: insert said it exists, get says it does not"
                                ))
                            })?,
                        Err(e) => return Err(retry_failure(e, context)),
                    }
                }
            };
            if !existing.location.is_empty() && !existing.location.eq_ignore_ascii_case(location) {
                return Err(LoadError::Input(format!(
                    "dataset {name} is in location {}, not --location {location}",
                    existing.location
                )));
            }
        }
        Ok(())
    }

    /// With `--partition-by`/`--cluster-by`, the base table must exist with that layout before
    /// the load: create it (schema, partitioning, clustering) if missing, and refuse a table
    /// whose layout differs rather than let each job fail on it. Creating it up front also
    /// gives every partition load of one table the same starting point, and it is what makes
    /// partitioned tables work on the emulator, which ignores load-time partitioning.
    async fn ensure_tables(&self, planned: &[Planned]) -> Result<(), LoadError> {
        let mut done: BTreeSet<TableRef> = BTreeSet::new();
        for p in planned {
            let base = p.item.destination.base();
            if !done.insert(base.clone()) {
                continue;
            }
            let context = || format!("table {base}");
            let found = self
                .call(format!("tables.get {base}"), || {
                    self.client.get_table(&base)
                })
                .await
                .map_err(|e| retry_failure(e, context))?;
            let table = match found {
                Some(t) => t,
                None => {
                    let Some(body) = plan::to_table(&p.spec, &p.item) else {
                        // Autodetect: no schema to create it with; the load creates it.
                        continue;
                    };
                    match self
                        .call(format!("tables.insert {base}"), || {
                            self.client.insert_table(&base, body.clone())
                        })
                        .await
                    {
                        Ok(t) => {
                            tracing::info!(table = %base, "created table {base} with partitioning/clustering");
                            t
                        }
                        Err(RetryError::Exhausted { source, .. }) if source.is_conflict() => self
                            .call(format!("tables.get {base}"), || {
                                self.client.get_table(&base)
                            })
                            .await
                            .map_err(|e| retry_failure(e, context))?
                            .ok_or_else(|| LoadError::Table {
                                table: base.to_string(),
                                reason: "insert said it exists, get says it does not".into(),
                            })?,
                        Err(e) => return Err(retry_failure(e, context)),
                    }
                }
            };
            check_layout(&base, &p.spec, &table)?;
        }
        Ok(())
    }

    /// Submits the item's job (or finds it), follows it to its end, retries failed jobs under
    /// the next attempt suffix when that is safe and useful.
    async fn execute(&self, p: &Planned) -> Result<JobReport, LoadError> {
        let started = Instant::now();
        let table = p.item.destination.to_string();
        let project = job_project(self.config, &p.item.destination);
        let mut attempt = 0u32;
        let mut submitted = 0u32;
        loop {
            if attempt >= MAX_SUFFIX_PROBES {
                return Err(LoadError::Input(format!(
                    "table {table}: {MAX_SUFFIX_PROBES} earlier jobs for this load all failed \
                     ({}_a1.._a{}); see them with `bq ls -j`, fix the cause, or pass --job-id-salt",
                    p.base_id,
                    MAX_SUFFIX_PROBES - 1
                )));
            }
            let id = job_id::attempt_id(&p.base_id, attempt);
            let body = plan::to_job(
                &p.spec,
                &p.item,
                project,
                &id,
                self.config.location.as_deref(),
                &self.config.labels,
            );
            let inserted = self
                .call(format!("jobs.insert {project}:{id}"), || {
                    self.client.insert_job(project, body.clone())
                })
                .await;
            let (job, ours) = match inserted {
                Ok(job) => {
                    submitted += 1;
                    tracing::info!(table = %table, job_id = %id, files = p.item.objects.len(), "submitted load job {id} into {table}");
                    (job, true)
                }
                // The id exists: an earlier attempt of this task (or our own insert whose
                // response was lost) submitted it. Follow that job instead of loading again.
                Err(RetryError::Exhausted { source, .. }) if source.is_conflict() => {
                    // jobs.get needs the job's location outside the US/EU multi-regions; without
                    // --location, BigQuery's 409 message names it (`Job proj:europe-west1.id`).
                    let location = self.config.location.clone().or_else(|| {
                        source
                            .bq_error()
                            .and_then(|e| location_from_conflict(&e.message, &id))
                    });
                    let job = self
                        .call(format!("jobs.get {project}:{id}"), || {
                            self.client.get_job(project, &id, location.as_deref())
                        })
                        .await
                        .map_err(|e| retry_failure(e, || format!("table {table}: job {id}")))?;
                    check_same_load(&job, &p.item, &id)?;
                    let state = job_status(&job).0.to_string();
                    tracing::info!(table = %table, job_id = %id, state = %state, "job {id} already exists ({state}); following it");
                    (job, false)
                }
                Err(e) => {
                    return Err(retry_failure(e, || {
                        format!("table {table}: submitting load job {id}")
                    }));
                }
            };
            let job = self.follow(job, project, &id).await?;
            let (_, error, errors) = job_status(&job);
            let Some(error) = error else {
                let outcome = if ours {
                    Outcome::Loaded
                } else {
                    Outcome::AlreadyLoaded
                };
                let report = job_report(&job, p, outcome, attempt, started.elapsed(), project, &id);
                warn_bad_records(&report, errors);
                log_job(&report);
                return Ok(report);
            };
            let error = bq_error(error);
            let class = error.class();
            let failure = LoadError::JobFailed(Box::new(JobFailure {
                table: table.clone(),
                job_id: display_job_id(&job, project, &id),
                error: error.clone(),
                errors: errors
                    .iter()
                    .take(QUOTED_ERRORS + 1)
                    .map(bq_error)
                    .collect(),
                class,
            }));
            // A failed load job wrote nothing, so a new job under the next suffix cannot
            // duplicate data. Resubmit when the failure is transient (bounded by
            // max_job_attempts), or when it belongs to an earlier run: what failed then (a
            // missing dataset, a permission, a schema since fixed) may be fixed now, and an id
            // that failed once must not block the load forever.
            let retry = if !ours {
                true
            } else {
                class == ErrorClass::Transient && submitted < self.config.max_job_attempts
            };
            if !retry {
                return Err(failure);
            }
            tracing::warn!(
                table = %table,
                job_id = %id,
                reason = %error.reason,
                "{failure}; submitting it again as {}",
                job_id::attempt_id(&p.base_id, attempt + 1)
            );
            attempt += 1;
        }
    }

    /// Polls `jobs.get` until the job is DONE, backing off from `poll.initial` to `poll.max`.
    /// On cancellation the job is left running: a retried task finds it by id and follows it.
    async fn follow(
        &self,
        mut job: model::Job,
        project: &str,
        id: &str,
    ) -> Result<model::Job, LoadError> {
        let location = job
            .job_reference
            .as_ref()
            .and_then(|r| r.location.clone())
            .or_else(|| self.config.location.clone());
        let mut delay = self.config.poll.initial;
        while job_status(&job).0 != "DONE" {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(LoadError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(self.config.poll.max);
            job = self
                .call(format!("jobs.get {project}:{id}"), || {
                    self.client.get_job(project, id, location.as_deref())
                })
                .await
                .map_err(|e| retry_failure(e, || format!("following job {project}:{id}")))?;
            tracing::debug!(job_id = %id, state = %job_status(&job).0, "polled");
        }
        Ok(job)
    }
}

/// A job found under our id must be the same load: the id hashes destination, options and
/// objects, so a mismatch means something else chose this id.
fn check_same_load(job: &model::Job, item: &WorkItem, id: &str) -> Result<(), LoadError> {
    let load = job.configuration.as_ref().and_then(|c| c.load.as_ref());
    let Some(load) = load else {
        return Err(LoadError::Input(format!(
            "job {id} exists but is not a load job; job ids starting with {} are reserved for sluice load",
            job_id::PREFIX
        )));
    };
    let destination_matches = load.destination_table.as_ref().is_some_and(|t| {
        t.project_id == item.destination.project
            && t.dataset_id == item.destination.dataset
            && t.table_id == item.destination.table_id()
    });
    let ours: BTreeSet<String> = item.objects.iter().map(SourceObject::url).collect();
    let theirs: BTreeSet<String> = load.source_uris.iter().cloned().collect();
    if !destination_matches || ours != theirs {
        return Err(LoadError::Input(format!(
            "job {id} exists but loads other objects or into another table than {}; refusing to count it",
            item.destination
        )));
    }
    Ok(())
}

fn check_layout(base: &TableRef, spec: &LoadSpec, table: &model::Table) -> Result<(), LoadError> {
    let want = spec.time_partitioning.as_ref();
    let have = table
        .time_partitioning
        .as_ref()
        .map(|tp| (tp.r#type.as_str(), tp.field.as_deref()));
    let describe = |p: Option<(&str, Option<&str>)>| match p {
        None => "not partitioned".to_string(),
        Some((kind, None)) => format!("partitioned by {kind}(_PARTITIONTIME)"),
        Some((kind, Some(f))) => format!("partitioned by {kind}({f})"),
    };
    if let Some((kind, field)) = want {
        let want = Some((*kind, field.as_deref()));
        let same = match (have, want) {
            (Some((hk, hf)), Some((wk, wf))) => {
                hk.eq_ignore_ascii_case(wk)
                    && hf.map(str::to_ascii_lowercase) == wf.map(str::to_ascii_lowercase)
            }
            _ => false,
        };
        if !same {
            return Err(LoadError::Table {
                table: base.to_string(),
                reason: format!(
                    "the table is {}, but --partition-by/--partition-type ask for {}; \
                     BigQuery cannot change a table's partitioning",
                    describe(have),
                    describe(want)
                ),
            });
        }
    }
    if !spec.clustering.is_empty() {
        let have: Vec<String> = table
            .clustering
            .as_ref()
            .map(|c| c.fields.iter().map(|f| f.to_ascii_lowercase()).collect())
            .unwrap_or_default();
        let want: Vec<String> = spec
            .clustering
            .iter()
            .map(|f| f.to_ascii_lowercase())
            .collect();
        if have != want {
            return Err(LoadError::Table {
                table: base.to_string(),
                reason: format!(
                    "the table is clustered by [{}], but --cluster-by asks for [{}]",
                    have.join(", "),
                    want.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// `europe-west1` from `Already Exists: Job proj:europe-west1.sluice_load_x`.
fn location_from_conflict(message: &str, id: &str) -> Option<String> {
    let end = message.find(&format!(".{id}"))?;
    let before = &message[..end];
    let start = before.rfind(':')? + 1;
    let location = &before[start..];
    (!location.is_empty()
        && location
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    .then(|| location.to_string())
}

fn display_job_id(job: &model::Job, project: &str, id: &str) -> String {
    let location = job
        .job_reference
        .as_ref()
        .and_then(|r| r.location.clone())
        .filter(|l| !l.is_empty());
    match location {
        Some(l) => format!("{project}:{l}.{id}"),
        None => format!("{project}:{id}"),
    }
}

fn job_report(
    job: &model::Job,
    p: &Planned,
    outcome: Outcome,
    attempt: u32,
    wall: Duration,
    project: &str,
    id: &str,
) -> JobReport {
    let stats = job.statistics.as_ref();
    let load = stats.and_then(|s| s.load.as_ref());
    let duration = match stats {
        Some(s) if s.end_time > 0 && s.start_time > 0 && s.end_time >= s.start_time => {
            Duration::from_millis((s.end_time - s.start_time) as u64)
        }
        _ => wall,
    };
    JobReport {
        table: p.item.destination.to_string(),
        job_id: display_job_id(job, project, id),
        outcome,
        files: p.item.objects.len(),
        listed_bytes: p.item.total_bytes(),
        file_rows: p.file_rows,
        rows: load.and_then(|l| l.output_rows),
        input_bytes: load.and_then(|l| l.input_file_bytes),
        bad_records: load.and_then(|l| l.bad_records),
        duration,
        attempt,
    }
}

fn warn_bad_records(report: &JobReport, errors: &[model::ErrorProto]) {
    let skipped = report.bad_records.unwrap_or(0);
    if skipped > 0 || !errors.is_empty() {
        let quoted: Vec<String> = errors
            .iter()
            .take(QUOTED_ERRORS)
            .map(|e| bq_error(e).to_string())
            .collect();
        tracing::warn!(
            table = %report.table,
            job_id = %report.job_id,
            bad_records = skipped,
            "{} skipped {skipped} bad record(s) (within --max-bad-records): {}",
            report.table,
            quoted.join("; ")
        );
    }
}

/// The per-job report line.
pub fn log_job(job: &JobReport) {
    let rows = job.rows.map_or("?".to_string(), |r| r.to_string());
    let bytes = job.input_bytes.unwrap_or(job.listed_bytes as i64);
    tracing::info!(
        table = %job.table,
        job_id = %job.job_id,
        outcome = job.outcome.as_str(),
        rows = job.rows,
        file_rows = job.file_rows,
        bytes,
        bad_records = job.bad_records.unwrap_or(0),
        files = job.files,
        duration_ms = job.duration.as_millis() as u64,
        attempt = job.attempt,
        "{}: {} rows, {} bytes from {} file(s), {} bad record(s), {} ms, job {}",
        job.table,
        rows,
        bytes,
        job.files,
        job.bad_records.unwrap_or(0),
        job.duration.as_millis(),
        job.job_id,
    );
    if let (Some(rows), Some(file_rows)) = (job.rows, job.file_rows)
        && job.outcome == Outcome::Loaded
        && rows >= 0
        && rows as u64 != file_rows
    {
        tracing::warn!(
            table = %job.table,
            job_id = %job.job_id,
            "{}: BigQuery reports {rows} output rows but the files' footers hold {file_rows}",
            job.table
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_messages_name_the_location() {
        assert_eq!(
            location_from_conflict(
                "Already Exists: Job proj:europe-west1.sluice_load_x",
                "sluice_load_x"
            ),
            Some("europe-west1".to_string())
        );
        assert_eq!(
            location_from_conflict("Already Exists: Job example.com:proj:US.j", "j"),
            Some("US".to_string())
        );
        assert_eq!(
            location_from_conflict("Already Exists: Job proj.j2", "j"),
            None
        );
        assert_eq!(location_from_conflict("duplicate", "j"), None);
    }
}
