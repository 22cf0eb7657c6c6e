//! `--write merge`, one work item: stage, check, MERGE, drop.
//!
//! 1. The item's objects are loaded (WRITE_TRUNCATE) into `_sluice_stage_<table>_<hash>` in the
//!    target's dataset, created first with a one-day expiration so a crash's leftovers vanish.
//! 2. Checks on the staged rows: no NULL keys; without an order column, equal keys must carry
//!    identical rows. Then the target is created (from the staged schema, with the layout
//!    flags) or given the new columns / relaxed modes the schema checks allowed.
//! 3. One MERGE query job: the latest staged row per key updates or inserts.
//! 4. The staging table is dropped (404 is fine).
//!
//! Retries: the MERGE's id is looked up first (`query::probe`): DONE without error means the
//! item is done (only the staging table may still need dropping). The staging load's id is
//! looked up too, and counts only when the job finished after the staging table it loaded was
//! created (a staging table that expired and was made again is empty, whatever the job says).

use std::time::Instant;

use google_cloud_bigquery_v2::model;

use crate::api::{Api, Resource, failure};
use crate::compat;
use crate::config::LoadConfig;
use crate::errors::{LoadError, TypeMismatch};
use crate::job_id;
use crate::merge_sql::{self, MergeSpec};
use crate::prepare::Prepared;
use crate::report::{JobReport, Outcome, log_job};
use crate::schema::{Field, Mode};
use crate::spec::{self, LoadSpec};
use crate::template::TableRef;

use super::Finished;
use super::job::{self, display_job_id};
use super::query::{self, Found, JobSite, QueryJob};

/// How long a staging table outlives a crash (BigQuery deletes it then).
const STAGING_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// Runs the item's merge (or finds that an earlier attempt did).
pub(super) async fn run_merge(
    config: &LoadConfig,
    api: &Api<'_>,
    p: &Prepared,
    location: Option<&str>,
) -> Result<Finished, LoadError> {
    let wall = Instant::now();
    let target = p.item.destination.base();
    let table = target.to_string();
    let project = job::job_project(config, &target);
    let site = JobSite { project, location };
    let merge_spec = p
        .spec
        .merge
        .as_ref()
        .expect("a merge item has a merge spec");
    let merge_base = job_id::derived_id(&p.base_id, "merge");
    let staging = TableRef {
        table: job_id::staging_table(&target.table, &p.base_id),
        ..target.clone()
    };

    // A MERGE that already ran: the item is done; only its staging table may be left.
    if let Found::Done(done, attempt) =
        Box::pin(query::probe(config, api, site, &merge_base, &table, |_| {
            true
        }))
        .await?
    {
        Box::pin(drop_staging(api, &staging)).await?;
        let merge_id = display_job_id(&done, project, &job_id::attempt_id(&merge_base, attempt));
        let load = match Box::pin(query::probe(config, api, site, &p.base_id, &table, |_| {
            true
        }))
        .await?
        {
            Found::Done(load, _) => Some(*load),
            Found::Free(_) => None,
        };
        tracing::info!(table = %table, job_id = %merge_id, "merge job {merge_id} into {table} already ran; nothing to do");
        return Ok(finished(
            p,
            &table,
            load.as_ref(),
            &done,
            merge_id,
            Outcome::AlreadyLoaded,
            wall,
        ));
    }

    let (staged_report, staged_job) = Box::pin(stage(config, api, p, &staging, site)).await?;
    let staged_path = merge_sql::table_path(&staging.project, &staging.dataset, &staging.table);
    let fields = match &p.spec.schema {
        Some(fields) => fields.clone(),
        None => Box::pin(staged_fields(api, &staging)).await?,
    };
    let merge_spec = merge_sql::resolve(merge_spec, config.order_by.is_some(), &fields, &table)?;
    Box::pin(check_staged_rows(
        api,
        site,
        &merge_spec,
        &staged_path,
        &table,
    ))
    .await?;
    let target_path = merge_sql::table_path(&target.project, &target.dataset, &target.table);
    Box::pin(prepare_target(
        config,
        api,
        site,
        p,
        &target,
        &target_path,
        &fields,
    ))
    .await?;

    let partition_column = config
        .partitioning
        .as_ref()
        .and_then(|p| p.field.as_deref());
    let statement = QueryJob {
        what: "merge",
        table: &table,
        sql: merge_sql::merge_statement(
            &merge_spec,
            &target_path,
            &staged_path,
            &fields,
            partition_column,
        ),
        parameters: Vec::new(),
    };
    let (done, ours) =
        Box::pin(query::run_once(config, api, site, &merge_base, &statement)).await?;
    Box::pin(drop_staging(api, &staging)).await?;
    let merge_id = done
        .job_reference
        .as_ref()
        .map(|r| display_job_id(&done, project, &r.job_id))
        .unwrap_or_else(|| merge_base.clone());
    let outcome = if ours || staged_report.outcome == Outcome::Loaded {
        Outcome::Loaded
    } else {
        Outcome::AlreadyLoaded
    };
    Ok(finished(
        p,
        &table,
        Some(&staged_job),
        &done,
        merge_id,
        outcome,
        wall,
    ))
}

/// The item's report (the MERGE's id, the staged rows) and what its lineage row records.
fn finished(
    p: &Prepared,
    table: &str,
    load: Option<&model::Job>,
    merge: &model::Job,
    merge_id: String,
    outcome: Outcome,
    wall: Instant,
) -> Finished {
    let load_stats = load.and_then(|j| j.statistics.as_ref());
    let rows = load_stats
        .and_then(|s| s.load.as_ref())
        .and_then(|l| l.output_rows);
    let input_bytes = load_stats
        .and_then(|s| s.load.as_ref())
        .and_then(|l| l.input_file_bytes);
    let merge_stats = merge.statistics.as_ref();
    let merged_rows = merge_stats
        .and_then(|s| s.query.as_ref())
        .and_then(|q| q.num_dml_affected_rows);
    let started_ms = load_stats
        .or(merge_stats)
        .map(|s| s.start_time)
        .filter(|t| *t > 0);
    let finished_ms = merge_stats.map(|s| s.end_time).filter(|t| *t > 0);
    let duration = match (started_ms, finished_ms) {
        (Some(a), Some(b)) if b >= a => std::time::Duration::from_millis((b - a) as u64),
        _ => wall.elapsed(),
    };
    let report = JobReport {
        table: table.to_string(),
        job_id: merge_id.clone(),
        outcome,
        files: p.item.objects.len(),
        listed_bytes: p.item.total_bytes(),
        file_rows: p.file_rows,
        rows,
        input_bytes,
        bad_records: load_stats
            .and_then(|s| s.load.as_ref())
            .and_then(|l| l.bad_records),
        duration,
        attempt: 0,
    };
    log_job(&report);
    if let Some(n) = merged_rows {
        tracing::info!(table, job_id = %merge_id, merged_rows = n, "{table}: the MERGE changed {n} row(s)");
    }
    let load_job = load
        .and_then(|j| j.job_reference.as_ref())
        .map(|r| display_job_id(load.expect("checked"), &r.project_id, &r.job_id));
    Finished {
        report,
        load_job,
        merge_job: Some(merge_id),
        merged_rows,
        started_ms,
        finished_ms,
    }
}

/// The staging load: found (a DONE job that loaded the staging table as it exists now), or
/// run under the first free id after creating the staging table with its expiration.
pub(super) async fn stage(
    config: &LoadConfig,
    api: &Api<'_>,
    p: &Prepared,
    staging: &TableRef,
    site: JobSite<'_>,
) -> Result<(JobReport, model::Job), LoadError> {
    let name = staging.to_string();
    let existing = api
        .get(Resource::Table(&name), || api.client.get_table(staging))
        .await?;
    let created = existing.as_ref().map(|t| t.creation_time);
    let table = p.item.destination.to_string();
    let accept = |job: &model::Job| {
        let end = job.statistics.as_ref().map_or(0, |s| s.end_time);
        created.is_some_and(|c| end >= c)
    };
    let first_free = match Box::pin(query::probe(config, api, site, &p.base_id, &table, accept))
        .await?
    {
        Found::Done(done, attempt) => {
            tracing::info!(table = %table, staging = %name, "staging load of {table} already done (attempt {attempt}); merging it");
            let report = staged_report(p, staging, &done);
            return Ok((report, *done));
        }
        Found::Free(attempt) => attempt,
    };
    let staged = staging_prepared(p, staging);
    if existing.is_none() {
        let body = staging_table(&staged.spec, &staged.item);
        api.get_or_create(
            Resource::Table(&name),
            || api.client.get_table(staging),
            || api.client.insert_table(staging, body.clone()),
        )
        .await?;
    }
    Box::pin(job::run_job_from(config, api, &staged, first_free)).await
}

/// The staging load as a load of its own: the item with the staging table as destination, and
/// a spec without what only the target has (layout, schema updates). The id stays the item's.
fn staging_prepared(p: &Prepared, staging: &TableRef) -> Prepared {
    let mut item = p.item.clone();
    item.destination = staging.clone();
    let spec = LoadSpec {
        destination: staging.to_string(),
        time_partitioning: None,
        clustering: Vec::new(),
        schema_update_options: Vec::new(),
        ..p.spec.clone()
    };
    Prepared {
        item,
        spec,
        base_id: p.base_id.clone(),
        file_rows: p.file_rows,
        widen: None,
    }
}

/// The staging table's `tables.insert` body: the load's schema (when known) and an expiration
/// a day from now.
fn staging_table(spec: &LoadSpec, item: &crate::plan::WorkItem) -> model::Table {
    let expires = now_ms() + STAGING_TTL_MS;
    let table = spec::to_table(spec, item).unwrap_or_else(|| {
        model::Table::new().set_table_reference(
            model::TableReference::new()
                .set_project_id(item.destination.project.clone())
                .set_dataset_id(item.destination.dataset.clone())
                .set_table_id(item.destination.table.clone()),
        )
    });
    table.set_expiration_time(expires)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn staged_report(p: &Prepared, staging: &TableRef, job: &model::Job) -> JobReport {
    let load = job.statistics.as_ref().and_then(|s| s.load.as_ref());
    JobReport {
        table: staging.to_string(),
        job_id: String::new(),
        outcome: Outcome::AlreadyLoaded,
        files: p.item.objects.len(),
        listed_bytes: p.item.total_bytes(),
        file_rows: p.file_rows,
        rows: load.and_then(|l| l.output_rows),
        input_bytes: load.and_then(|l| l.input_file_bytes),
        bad_records: load.and_then(|l| l.bad_records),
        duration: std::time::Duration::ZERO,
        attempt: 0,
    }
}

/// With `--autodetect` the schema is what the staging load made.
async fn staged_fields(api: &Api<'_>, staging: &TableRef) -> Result<Vec<Field>, LoadError> {
    let name = staging.to_string();
    let found = api
        .get(Resource::Table(&name), || api.client.get_table(staging))
        .await?
        .ok_or_else(|| LoadError::Vanished {
            what: format!("staging table {name}"),
        })?;
    let fields: Vec<Field> = found
        .schema
        .map(|s| s.fields.iter().map(compat::table_field).collect())
        .unwrap_or_default();
    Ok(fields)
}

/// Refuses staged rows the MERGE would get wrong: NULL keys (never matched, so inserted again
/// on every run) and, without an order column, one key with differing rows.
async fn check_staged_rows(
    api: &Api<'_>,
    site: JobSite<'_>,
    spec: &MergeSpec,
    staged: &str,
    table: &str,
) -> Result<(), LoadError> {
    let keys = spec.keys.join(", ");
    let rows = Box::pin(query::read_rows(
        api,
        site,
        &merge_sql::null_key_check(spec, staged),
        table,
    ))
    .await?;
    let nulls: i64 = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if nulls > 0 {
        return Err(LoadError::MergeNullKey {
            table: table.to_string(),
            keys,
            count: nulls,
        });
    }
    if spec.order_by.is_none() {
        let rows = Box::pin(query::read_rows(
            api,
            site,
            &merge_sql::duplicate_check(spec, staged),
            table,
        ))
        .await?;
        if let Some(row) = rows.first() {
            return Err(LoadError::MergeDuplicateKey {
                table: table.to_string(),
                keys,
                key: merge_sql::describe_key(&spec.keys, row),
            });
        }
    }
    Ok(())
}

/// Creates a missing target from the staged schema (with `--partition-by`/`--cluster-by`), or
/// adds the staged columns it lacks and relaxes REQUIRED columns the staged rows hold as
/// NULLABLE, each only as `--schema-update` allows (the same rules as an append; prepare
/// already refused type changes when the schema was known).
pub(super) async fn prepare_target(
    config: &LoadConfig,
    api: &Api<'_>,
    site: JobSite<'_>,
    p: &Prepared,
    target: &TableRef,
    target_path: &str,
    fields: &[Field],
) -> Result<(), LoadError> {
    let name = target.to_string();
    let existing = api
        .get(Resource::Table(&name), || api.client.get_table(target))
        .await?;
    let Some(existing) = existing else {
        let spec = LoadSpec {
            schema: Some(fields.to_vec()),
            ..p.spec.clone()
        };
        let body = spec::to_table(&spec, &p.item).expect("a schema was given");
        let (_, created) = api
            .get_or_create(
                Resource::Table(&name),
                || api.client.get_table(target),
                || api.client.insert_table(target, body.clone()),
            )
            .await?;
        if created {
            tracing::info!(table = %name, "created table {name} from the staged schema");
        }
        return Ok(());
    };
    let table_fields: Vec<Field> = existing
        .schema
        .map(|s| s.fields.iter().map(compat::table_field).collect())
        .unwrap_or_default();
    if table_fields.is_empty() {
        return Ok(());
    }
    let mut sent = fields.to_vec();
    compat::check(&mut sent, &table_fields, config.schema_update).map_err(|e| {
        LoadError::TypeMismatch(Box::new(TypeMismatch {
            table: name.clone(),
            file: p.item.objects[0].url(),
            column: e.column,
            file_type: e.file_type,
            table_type: e.table_type,
            hint: e.hint,
        }))
    })?;
    for change in schema_changes(&sent, &table_fields, target_path, &name)? {
        let rows = Box::pin(query::read_rows(api, site, &change, &name)).await;
        rows.map_err(|e| match e {
            LoadError::Api { context, source } => LoadError::Api {
                context: format!("{context} (schema change before the MERGE)"),
                source,
            },
            other => other,
        })?;
        tracing::info!(table = %name, "{change}");
    }
    Ok(())
}

/// The DDL that makes `table` take the staged rows: new top-level columns, relaxed modes.
/// Changes inside a RECORD have no DDL form and are refused.
fn schema_changes(
    staged: &[Field],
    table: &[Field],
    target_path: &str,
    name: &str,
) -> Result<Vec<String>, LoadError> {
    let mut out = Vec::new();
    for field in staged {
        let Some(have) = table
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(&field.name))
        else {
            out.push(merge_sql::add_column(target_path, field));
            continue;
        };
        if have.mode == Mode::Required && field.mode == Mode::Nullable {
            out.push(merge_sql::relax_column(target_path, &have.name));
        }
        if nested_differs(&field.fields, &have.fields) {
            return Err(LoadError::Table {
                table: name.to_string(),
                reason: format!(
                    "the staged RECORD `{}` has fields or modes the table's lacks; --write merge \
                     adds and relaxes top-level columns only (BigQuery DDL cannot change a \
                     RECORD's fields)",
                    field.name
                ),
            });
        }
    }
    Ok(out)
}

fn nested_differs(staged: &[Field], table: &[Field]) -> bool {
    staged.iter().any(
        |s| match table.iter().find(|t| t.name.eq_ignore_ascii_case(&s.name)) {
            None => true,
            Some(t) => {
                (t.mode == Mode::Required && s.mode == Mode::Nullable)
                    || nested_differs(&s.fields, &t.fields)
            }
        },
    )
}

/// Drops the staging table; one that is already gone is fine.
pub(super) async fn drop_staging(api: &Api<'_>, staging: &TableRef) -> Result<(), LoadError> {
    let dropped = api
        .call(format!("tables.delete {staging}"), || {
            api.client.delete_table(staging)
        })
        .await
        .map_err(|e| failure(e, || format!("dropping staging table {staging}")))?;
    if dropped {
        tracing::info!(staging = %staging, "dropped staging table {staging}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_changes_add_and_relax_top_level_columns_only() {
        let table = vec![
            Field::new("id", "INTEGER", Mode::Required),
            Field::new("name", "STRING", Mode::Nullable),
        ];
        let staged = vec![
            Field::new("id", "INTEGER", Mode::Nullable),
            Field::new("name", "STRING", Mode::Nullable),
            Field::new("zip", "STRING", Mode::Nullable),
        ];
        let changes = schema_changes(&staged, &table, "`p.d.t`", "p.d.t").unwrap();
        assert_eq!(
            changes,
            [
                "ALTER TABLE `p.d.t` ALTER COLUMN `id` DROP NOT NULL",
                "ALTER TABLE `p.d.t` ADD COLUMN IF NOT EXISTS `zip` STRING",
            ]
        );
        assert!(
            schema_changes(&table, &table, "`t`", "t")
                .unwrap()
                .is_empty()
        );
        let mut rec_t = Field::new("r", "RECORD", Mode::Nullable);
        rec_t.fields = vec![Field::new("a", "STRING", Mode::Nullable)];
        let mut rec_s = rec_t.clone();
        rec_s.fields.push(Field::new("b", "STRING", Mode::Nullable));
        let err = schema_changes(&[rec_s], &[rec_t], "`t`", "p.d.t").unwrap_err();
        assert!(err.to_string().contains("RECORD `r`"), "{err}");
    }
}
