//! Stage 4, execute: the prepared jobs -> BigQuery. Datasets first (created with
//! `--create-dataset`, else checked), then the base tables when a layout is asked for
//! (partitioning/clustering), then every job, `--concurrency` at once (`job.rs`). A dry run
//! submits nothing and reports the jobs it would run.
//!
//! `--write merge` items go through `merge.rs` (staging load, checks, MERGE, drop) instead,
//! and items whose files' inferred schemas drifted through `widen.rs` (staging loads, one
//! widening INSERT, drop);
//! after either, `lineage.rs` appends the item's row to `{dataset}._sluice_loads`.
//!
//! Idempotence under Cloud Run's task retries rests on the job ids (job_id.rs): a retried task
//! prepares the same items and submits the same ids; BigQuery answers 409 for jobs that exist,
//! and such a job is followed (RUNNING) or counted (DONE) instead of loading again. Query jobs
//! (MERGE, lineage) are looked up before they are submitted (`query.rs`).

mod job;
mod lineage;
mod merge;
mod query;
mod widen;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use google_cloud_bigquery_v2::model;
use sluice_runtime::TaskContext;

use crate::api::{Api, Resource};
use crate::config::{LoadConfig, WriteMode};
use crate::errors::LoadError;
use crate::prepare::Prepared;
use crate::report::{JobReport, Outcome, log_job};
use crate::spec::{self, LoadSpec};
use crate::template::TableRef;

/// The jobs a dry run would submit, with their ids.
pub(crate) fn dry_run(
    config: &LoadConfig,
    prepared: &[Prepared],
) -> Vec<Result<JobReport, LoadError>> {
    let location = config.location.as_deref().unwrap_or("-");
    prepared
        .iter()
        .map(|p| {
            let project = job::job_project(config, &p.item.destination);
            let report = JobReport {
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
            log_job(&report);
            Ok(report)
        })
        .collect()
}

/// One item done: its report and what its lineage row records.
pub(super) struct Finished {
    pub(super) report: JobReport,
    /// `project:location.id` of the load job (a merge's: into its staging table).
    pub(super) load_job: Option<String>,
    pub(super) merge_job: Option<String>,
    /// The MERGE's `numDmlAffectedRows`.
    pub(super) merged_rows: Option<i64>,
    /// BigQuery's start of the first job and end of the last, in ms since the epoch.
    pub(super) started_ms: Option<i64>,
    pub(super) finished_ms: Option<i64>,
}

/// Datasets' locations by `(project, dataset)`.
type Locations = BTreeMap<(String, String), String>;

/// Makes the destinations ready and runs every job. Setup problems (a dataset, a table's
/// layout) fail the whole task before any job; each job's own result is returned per item.
pub(crate) async fn execute(
    config: &LoadConfig,
    api: &Api<'_>,
    prepared: Vec<Prepared>,
    task: &TaskContext,
) -> Result<Vec<Result<JobReport, LoadError>>, LoadError> {
    let locations = ensure_datasets(config, api, &prepared).await?;
    if spec::wants_table_layout(config) {
        ensure_tables(api, &prepared).await?;
    }
    if config.lineage {
        lineage::ensure_tables(api, &prepared).await?;
    }
    Ok(futures::stream::iter(&prepared)
        // Boxed: a merge's future (probes, staging load, checks, MERGE, lineage) is large, and
        // unboxed futures of every in-flight item would sit on the polling thread's stack.
        .map(|p| Box::pin(run_item(config, api, p, task, &locations)))
        .buffer_unordered(config.concurrency)
        .collect()
        .await)
}

/// One item: its load (or merge), then its lineage row.
async fn run_item(
    config: &LoadConfig,
    api: &Api<'_>,
    p: &Prepared,
    task: &TaskContext,
    locations: &Locations,
) -> Result<JobReport, LoadError> {
    let destination = &p.item.destination;
    // Query jobs are looked up by id before they are submitted, and jobs.get needs the
    // location outside the US/EU multi-regions: --location, else the dataset's.
    let location = config.location.as_deref().or_else(|| {
        locations
            .get(&(destination.project.clone(), destination.dataset.clone()))
            .map(String::as_str)
            .filter(|l| !l.is_empty())
    });
    let site = query::JobSite {
        project: job::job_project(config, destination),
        location,
    };
    let drifted = !p.drifted_groups().is_empty();
    if drifted {
        crate::widen::refuse_unsupported(config, &p.item, &p.spec, &p.drifted_groups())?;
    }
    let done = match config.write {
        WriteMode::Append if drifted => {
            Box::pin(widen::run_widened(config, api, p, location)).await?
        }
        WriteMode::Merge => Box::pin(merge::run_merge(config, api, p, location)).await?,
        _ => {
            let (report, job) = Box::pin(job::run_job(config, api, p)).await?;
            let stats = job.statistics.as_ref();
            Finished {
                load_job: Some(report.job_id.clone()),
                merge_job: None,
                merged_rows: None,
                started_ms: stats.map(|s| s.start_time).filter(|t| *t > 0),
                finished_ms: stats.map(|s| s.end_time).filter(|t| *t > 0),
                report,
            }
        }
    };
    if config.lineage {
        Box::pin(lineage::record(config, api, site, p, &done, task)).await?;
    }
    Ok(done.report)
}

/// Each distinct dataset of the share must exist: with `--create-dataset` it is created in
/// `--location` (and an existing one elsewhere refused); without, a missing one is a setup
/// error naming the fix. Returns their locations.
async fn ensure_datasets(
    config: &LoadConfig,
    api: &Api<'_>,
    prepared: &[Prepared],
) -> Result<Locations, LoadError> {
    let mut locations = Locations::new();
    let datasets: BTreeSet<(&str, &str)> = prepared
        .iter()
        .map(|p| {
            (
                p.item.destination.project.as_str(),
                p.item.destination.dataset.as_str(),
            )
        })
        .collect();
    for (project, dataset) in datasets {
        let name = format!("{project}:{dataset}");
        let resource = Resource::Dataset(&name);
        let get = || api.client.get_dataset(project, dataset);
        if !config.create_dataset {
            let Some(found) = api.get(resource, get).await? else {
                return Err(LoadError::MissingDataset {
                    dataset: name,
                    location: config.location.as_deref().unwrap_or("LOCATION").to_string(),
                });
            };
            locations.insert((project.into(), dataset.into()), found.location);
            continue;
        }
        let location = config.location.as_deref().expect("validated");
        let (existing, created) = api
            .get_or_create(resource, get, || {
                api.client.insert_dataset(project, dataset, location)
            })
            .await?;
        if created {
            tracing::info!(dataset = %name, location, "created dataset {name} in {location}");
        }
        if !existing.location.is_empty() && !existing.location.eq_ignore_ascii_case(location) {
            return Err(LoadError::DatasetLocation {
                dataset: name,
                actual: existing.location,
                wanted: location.to_string(),
            });
        }
        locations.insert((project.into(), dataset.into()), existing.location);
    }
    Ok(locations)
}

/// With `--partition-by`/`--cluster-by`, the base table must exist with that layout before
/// the load: create it (schema, partitioning, clustering) if missing, and refuse a table
/// whose layout differs rather than let each job fail on it. Creating it up front also
/// gives every partition load of one table the same starting point, and it is what makes
/// partitioned tables work on the emulator, which ignores load-time partitioning.
async fn ensure_tables(api: &Api<'_>, prepared: &[Prepared]) -> Result<(), LoadError> {
    let mut done: BTreeSet<TableRef> = BTreeSet::new();
    for p in prepared {
        let base = p.item.destination.base();
        if !done.insert(base.clone()) {
            continue;
        }
        let name = base.to_string();
        let resource = Resource::Table(&name);
        let get = || api.client.get_table(&base);
        let table = match spec::to_table(&p.spec, &p.item) {
            Some(body) => {
                let (table, created) = api
                    .get_or_create(resource, get, || {
                        api.client.insert_table(&base, body.clone())
                    })
                    .await?;
                if created {
                    tracing::info!(table = %base, "created table {base} with partitioning/clustering");
                }
                table
            }
            // Autodetect: no schema to create it with; the load creates it.
            None => match api.get(resource, get).await? {
                Some(table) => table,
                None => continue,
            },
        };
        check_layout(&base, &p.spec, &table)?;
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
