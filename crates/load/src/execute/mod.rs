//! Stage 4, execute: the prepared jobs -> BigQuery. Datasets first (created with
//! `--create-dataset`, else checked), then the base tables when a layout is asked for
//! (partitioning/clustering), then every job, `--concurrency` at once (`job.rs`). A dry run
//! submits nothing and reports the jobs it would run.
//!
//! Idempotence under Cloud Run's task retries rests on the job ids (job_id.rs): a retried task
//! prepares the same items and submits the same ids; BigQuery answers 409 for jobs that exist,
//! and such a job is followed (RUNNING) or counted (DONE) instead of loading again.

mod job;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use google_cloud_bigquery_v2::model;

use crate::api::{Api, Resource};
use crate::config::LoadConfig;
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

/// Makes the destinations ready and runs every job. Setup problems (a dataset, a table's
/// layout) fail the whole task before any job; each job's own result is returned per item.
pub(crate) async fn execute(
    config: &LoadConfig,
    api: &Api<'_>,
    prepared: Vec<Prepared>,
) -> Result<Vec<Result<JobReport, LoadError>>, LoadError> {
    ensure_datasets(config, api, &prepared).await?;
    if spec::wants_table_layout(config) {
        ensure_tables(api, &prepared).await?;
    }
    Ok(futures::stream::iter(&prepared)
        .map(|p| job::run_job(config, api, p))
        .buffer_unordered(config.concurrency)
        .collect()
        .await)
}

/// Each distinct dataset of the share must exist: with `--create-dataset` it is created in
/// `--location` (and an existing one elsewhere refused); without, a missing one is a setup
/// error naming the fix.
async fn ensure_datasets(
    config: &LoadConfig,
    api: &Api<'_>,
    prepared: &[Prepared],
) -> Result<(), LoadError> {
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
            if api.get(resource, get).await?.is_none() {
                return Err(LoadError::MissingDataset {
                    dataset: name,
                    location: config.location.as_deref().unwrap_or("LOCATION").to_string(),
                });
            }
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
    }
    Ok(())
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
