//! A work item whose objects drifted (`widen.rs`: a column with no value typed STRING in one
//! file, INTEGER in another; an INTEGER file among FLOAT ones): BigQuery cannot load a Parquet
//! column into a column of another type, so
//!
//! 1. each group of objects that share a schema is loaded (WRITE_TRUNCATE) into its own
//!    staging table `_sluice_stage_<table>_<hash>_<n>`, created with a one-day expiration;
//! 2. the target is created with the joined schema (with the layout flags), or given the
//!    columns `--schema-update` allows, as for a merge;
//! 3. one query job inserts every staged row, each column `CAST` to the joined type (the
//!    lattice only joins types whose cast keeps every value);
//! 4. the staging tables are dropped.
//!
//! Only `--write append` into a base table takes this path: an INSERT cannot truncate or
//! write one partition atomically, so truncate, empty, merge and `$` partitions refuse drift
//! (`widen::refuse_unsupported`, as they did before, now naming the fix). Retries: the INSERT's id is looked up first; DONE means the
//! item is done. Staging loads are found as a merge's are (`merge::stage`).

use std::time::Instant;

use crate::api::Api;
use crate::config::LoadConfig;
use crate::errors::LoadError;
use crate::job_id;
use crate::merge_sql::{self, ident};
use crate::prepare::Prepared;
use crate::report::{JobReport, Outcome, log_job};
use crate::schema::Field;
use crate::spec::LoadSpec;
use crate::template::TableRef;
use crate::widen::{Group, refuse_unsupported};

use super::Finished;
use super::job::{self, display_job_id};
use super::merge;
use super::query::{self, Found, JobSite, QueryJob};

/// The staging table of group `n`.
fn staging(target: &TableRef, group_base: &str, n: usize) -> TableRef {
    TableRef {
        table: format!("{}_{n}", job_id::staging_table(&target.table, group_base)),
        decorator: None,
        ..target.clone()
    }
}

/// Group `n` as a load of its own: its objects, its own schema, into its staging table.
fn group_prepared(p: &Prepared, group: &Group, n: usize, staging: &TableRef) -> Prepared {
    let mut item = p.item.clone();
    item.objects = group
        .objects
        .iter()
        .map(|&j| p.item.objects[j].clone())
        .collect();
    item.destination = staging.clone();
    let spec = LoadSpec {
        destination: staging.to_string(),
        write_disposition: "WRITE_TRUNCATE",
        schema: Some(staged_fields(p, group)),
        ..p.spec.clone()
    };
    Prepared {
        item,
        spec,
        base_id: job_id::derived_id(&p.base_id, &format!("stage{n}")),
        file_rows: None,
        widen: None,
    }
}

/// The group's own columns, then (with `--hive-partitioning`) the `key=value` directories'
/// columns the joined schema ends with.
fn staged_fields(p: &Prepared, group: &Group) -> Vec<Field> {
    let mut fields = group.fields.clone();
    if p.spec.hive_prefix.is_some()
        && let Some(target) = &p.spec.schema
    {
        fields.extend(target.iter().skip(group.fields.len()).cloned());
    }
    fields
}

/// `INSERT INTO target (cols) SELECT CAST(..) FROM stage_0 UNION ALL ...`.
pub(crate) fn insert_statement(
    target: &str,
    fields: &[Field],
    stages: &[(String, &[Field])],
) -> String {
    let columns: Vec<String> = fields.iter().map(|f| ident(&f.name)).collect();
    let selects: Vec<String> = stages
        .iter()
        .map(|(path, own)| {
            let exprs: Vec<String> = fields
                .iter()
                .map(|f| {
                    let same = own
                        .iter()
                        .find(|o| o.name == f.name)
                        .is_some_and(|o| o.field_type == f.field_type);
                    if same {
                        ident(&f.name)
                    } else {
                        format!(
                            "CAST({} AS {}) AS {}",
                            ident(&f.name),
                            merge_sql::ddl_type(f),
                            ident(&f.name)
                        )
                    }
                })
                .collect();
            format!("SELECT {} FROM {path}", exprs.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO {target} ({}) {}",
        columns.join(", "),
        selects.join(" UNION ALL ")
    )
}

/// Runs a drifted item (or finds that an earlier attempt did).
pub(super) async fn run_widened(
    config: &LoadConfig,
    api: &Api<'_>,
    p: &Prepared,
    location: Option<&str>,
) -> Result<Finished, LoadError> {
    refuse_unsupported(config, &p.item, &p.spec, &p.drifted_groups())?;
    let wall = Instant::now();
    let target = p.item.destination.base();
    let table = target.to_string();
    let project = job::job_project(config, &target);
    let site = JobSite { project, location };
    let fields = p.spec.schema.clone().expect("a drifted item has a schema");
    let groups: Vec<Group> = p.drifted_groups().into_iter().cloned().collect();
    let insert_base = job_id::derived_id(&p.base_id, "widen");
    let stagings: Vec<(Prepared, TableRef)> = groups
        .iter()
        .enumerate()
        .map(|(n, g)| {
            let group_base = job_id::derived_id(&p.base_id, &format!("stage{n}"));
            let staging = staging(&target, &group_base, n);
            (group_prepared(p, g, n, &staging), staging)
        })
        .collect();

    if let Found::Done(done, attempt) = Box::pin(query::probe(
        config,
        api,
        site,
        &insert_base,
        &table,
        |_| true,
    ))
    .await?
    {
        for (_, staging) in &stagings {
            Box::pin(merge::drop_staging(api, staging)).await?;
        }
        let id = display_job_id(&done, project, &job_id::attempt_id(&insert_base, attempt));
        tracing::info!(table = %table, job_id = %id, "widening insert {id} into {table} already ran; nothing to do");
        return Ok(finished(p, &table, &done, id, Outcome::AlreadyLoaded, wall));
    }

    let mut loaded = false;
    let mut stages: Vec<(String, &[Field])> = Vec::new();
    for (staged, staging) in &stagings {
        let (report, _) = Box::pin(merge::stage(config, api, staged, staging, site)).await?;
        loaded |= report.outcome == Outcome::Loaded;
        stages.push((
            merge_sql::table_path(&staging.project, &staging.dataset, &staging.table),
            staged.spec.schema.as_deref().unwrap_or_default(),
        ));
    }
    let target_path = merge_sql::table_path(&target.project, &target.dataset, &target.table);
    Box::pin(merge::prepare_target(
        config,
        api,
        site,
        p,
        &target,
        &target_path,
        &fields,
    ))
    .await?;
    let statement = QueryJob {
        what: "widening insert",
        table: &table,
        sql: insert_statement(&target_path, &fields, &stages),
        parameters: Vec::new(),
    };
    let (done, ours) =
        Box::pin(query::run_once(config, api, site, &insert_base, &statement)).await?;
    for (_, staging) in &stagings {
        Box::pin(merge::drop_staging(api, staging)).await?;
    }
    let id = done
        .job_reference
        .as_ref()
        .map(|r| display_job_id(&done, project, &r.job_id))
        .unwrap_or_else(|| insert_base.clone());
    let outcome = if ours || loaded {
        Outcome::Loaded
    } else {
        Outcome::AlreadyLoaded
    };
    Ok(finished(p, &table, &done, id, outcome, wall))
}

fn finished(
    p: &Prepared,
    table: &str,
    insert: &google_cloud_bigquery_v2::model::Job,
    id: String,
    outcome: Outcome,
    wall: Instant,
) -> Finished {
    let stats = insert.statistics.as_ref();
    let rows = stats
        .and_then(|s| s.query.as_ref())
        .and_then(|q| q.num_dml_affected_rows);
    let report = JobReport {
        table: table.to_string(),
        job_id: id.clone(),
        outcome,
        files: p.item.objects.len(),
        listed_bytes: p.item.total_bytes(),
        file_rows: p.file_rows,
        rows,
        input_bytes: None,
        bad_records: None,
        duration: wall.elapsed(),
        attempt: 0,
    };
    log_job(&report);
    tracing::info!(table, job_id = %id, groups = p.drifted_groups().len(), "{table}: files with drifted schemas loaded through staging tables and one widening INSERT");
    Finished {
        report,
        load_job: None,
        merge_job: Some(id),
        merged_rows: rows,
        started_ms: stats.map(|s| s.start_time).filter(|t| *t > 0),
        finished_ms: stats.map(|s| s.end_time).filter(|t| *t > 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Mode;

    #[test]
    fn insert_casts_only_the_columns_that_drifted() {
        let target = [
            Field::new("id", "INTEGER", Mode::Nullable),
            Field::new("dep", "FLOAT", Mode::Nullable),
        ];
        let a = [
            Field::new("id", "INTEGER", Mode::Required),
            Field::new("dep", "STRING", Mode::Nullable),
        ];
        let b = [
            Field::new("id", "INTEGER", Mode::Nullable),
            Field::new("dep", "FLOAT", Mode::Nullable),
        ];
        let sql = insert_statement(
            "`p.d.t`",
            &target,
            &[("`p.d.s_0`".into(), &a[..]), ("`p.d.s_1`".into(), &b[..])],
        );
        assert_eq!(
            sql,
            "INSERT INTO `p.d.t` (`id`, `dep`) SELECT `id`, CAST(`dep` AS FLOAT64) AS `dep` FROM \
             `p.d.s_0` UNION ALL SELECT `id`, `dep` FROM `p.d.s_1`"
        );
    }
}
