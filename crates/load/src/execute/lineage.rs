//! Lineage: one row per load in `{dataset}._sluice_loads`, saying which execution and task
//! loaded which objects (with generations) into which table, how, with which jobs, how many
//! rows and bytes, and when. `--no-lineage` turns it off.
//!
//! The row is an `INSERT` query job under a deterministic id derived from the load's
//! (`sluice_lineage_<dataset>_<table>_<hash>`), looked up before it is submitted
//! (`query::run_once`): a retried task, or a later run that finds the same objects already
//! loaded, writes no second row. The table is created when missing, partitioned by day of
//! `finished_at`.

use std::collections::BTreeSet;

use google_cloud_bigquery_v2::model;
use sluice_runtime::TaskContext;

use crate::api::{Api, Resource};
use crate::config::LoadConfig;
use crate::errors::LoadError;
use crate::job_id;
use crate::merge_sql::{ident, table_path};
use crate::prepare::Prepared;
use crate::template::TableRef;

use super::Finished;
use super::query::{self, JobSite, QueryJob};

/// The lineage table's id in each destination dataset.
pub(crate) const TABLE: &str = "_sluice_loads";

/// The lineage table's columns: (name, type, mode, description). docs/load.md lists them.
const COLUMNS: &[(&str, &str, &str, &str)] = &[
    (
        "execution",
        "STRING",
        "NULLABLE",
        "Cloud Run execution that ran the load",
    ),
    ("job", "STRING", "NULLABLE", "Cloud Run job"),
    ("task_index", "INTEGER", "REQUIRED", "CLOUD_RUN_TASK_INDEX"),
    (
        "task_attempt",
        "INTEGER",
        "REQUIRED",
        "CLOUD_RUN_TASK_ATTEMPT",
    ),
    (
        "target_table",
        "STRING",
        "REQUIRED",
        "project.dataset.table[$partition]",
    ),
    (
        "write_mode",
        "STRING",
        "REQUIRED",
        "append, truncate, empty or merge",
    ),
    (
        "load_job_id",
        "STRING",
        "NULLABLE",
        "project:location.id of the load job (merge: into the staging table)",
    ),
    (
        "merge_job_id",
        "STRING",
        "NULLABLE",
        "project:location.id of the MERGE job (merge only)",
    ),
    (
        "objects",
        "STRING",
        "REQUIRED",
        "JSON array of {url, generation}",
    ),
    ("file_count", "INTEGER", "REQUIRED", "objects loaded"),
    (
        "file_rows",
        "INTEGER",
        "NULLABLE",
        "rows in the Parquet footers",
    ),
    (
        "row_count",
        "INTEGER",
        "NULLABLE",
        "BigQuery's outputRows of the load job",
    ),
    (
        "merged_rows",
        "INTEGER",
        "NULLABLE",
        "rows the MERGE inserted or updated",
    ),
    (
        "byte_count",
        "INTEGER",
        "NULLABLE",
        "bytes of the objects loaded",
    ),
    (
        "started_at",
        "TIMESTAMP",
        "NULLABLE",
        "start of the first job",
    ),
    (
        "finished_at",
        "TIMESTAMP",
        "NULLABLE",
        "end of the last job",
    ),
    (
        "sluice_version",
        "STRING",
        "REQUIRED",
        "version of the sluice binary",
    ),
];

/// Creates `_sluice_loads` in every destination dataset of the share that lacks it.
pub(super) async fn ensure_tables(api: &Api<'_>, prepared: &[Prepared]) -> Result<(), LoadError> {
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
        let table = TableRef {
            project: project.to_string(),
            dataset: dataset.to_string(),
            table: TABLE.to_string(),
            decorator: None,
        };
        let name = table.to_string();
        let body = table_body(&table);
        let (_, created) = api
            .get_or_create(
                Resource::Table(&name),
                || api.client.get_table(&table),
                || api.client.insert_table(&table, body.clone()),
            )
            .await?;
        if created {
            tracing::info!(table = %name, "created lineage table {name}");
        }
    }
    Ok(())
}

fn table_body(table: &TableRef) -> model::Table {
    let fields = COLUMNS.iter().map(|(name, kind, mode, description)| {
        model::TableFieldSchema::new()
            .set_name(*name)
            .set_type(*kind)
            .set_mode(*mode)
            .set_description(*description)
    });
    model::Table::new()
        .set_table_reference(
            model::TableReference::new()
                .set_project_id(table.project.clone())
                .set_dataset_id(table.dataset.clone())
                .set_table_id(table.table.clone()),
        )
        .set_schema(model::TableSchema::new().set_fields(fields))
        .set_time_partitioning(
            model::TimePartitioning::new()
                .set_type("DAY")
                .set_field("finished_at"),
        )
        .set_description("One row per sluice load (docs/load.md, Lineage)")
}

/// One value of the row: a parameter, or NULL of its type.
enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    /// Milliseconds since the epoch, stored as TIMESTAMP.
    Millis(Option<i64>),
}

/// The `INSERT` of one row, with every value a named parameter.
fn insert(
    table: &TableRef,
    values: Vec<(&'static str, Value)>,
) -> (String, Vec<model::QueryParameter>) {
    let mut names = Vec::new();
    let mut exprs = Vec::new();
    let mut parameters = Vec::new();
    for (name, value) in values {
        names.push(ident(name));
        let expr = match value {
            Value::Text(Some(v)) => {
                parameters.push(query::string_parameter(name, &v));
                format!("@{name}")
            }
            Value::Int(Some(v)) => {
                parameters.push(query::int_parameter(name, v));
                format!("@{name}")
            }
            Value::Millis(Some(v)) => {
                parameters.push(query::int_parameter(name, v));
                format!("TIMESTAMP_MILLIS(@{name})")
            }
            Value::Text(None) => "CAST(NULL AS STRING)".to_string(),
            Value::Int(None) => "CAST(NULL AS INT64)".to_string(),
            Value::Millis(None) => "CAST(NULL AS TIMESTAMP)".to_string(),
        };
        exprs.push(expr);
    }
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        table_path(&table.project, &table.dataset, &table.table),
        names.join(", "),
        exprs.join(", ")
    );
    (sql, parameters)
}

/// The item's objects as `[{"url": ..., "generation": ...}]`.
fn objects_json(p: &Prepared) -> String {
    let objects: Vec<serde_json::Value> = p
        .item
        .objects
        .iter()
        .map(|o| serde_json::json!({"url": o.url(), "generation": o.generation}))
        .collect();
    serde_json::Value::Array(objects).to_string()
}

/// Appends the item's lineage row (once per load, whatever the retries).
pub(super) async fn record(
    config: &LoadConfig,
    api: &Api<'_>,
    site: JobSite<'_>,
    p: &Prepared,
    done: &Finished,
    task: &TaskContext,
) -> Result<(), LoadError> {
    let destination = &p.item.destination;
    let lineage = TableRef {
        table: TABLE.to_string(),
        decorator: None,
        ..destination.clone()
    };
    let report = &done.report;
    let bytes = report
        .input_bytes
        .or_else(|| i64::try_from(report.listed_bytes).ok());
    let values = vec![
        ("execution", Value::Text(task.execution.clone())),
        ("job", Value::Text(task.job.clone())),
        ("task_index", Value::Int(Some(i64::from(task.index)))),
        ("task_attempt", Value::Int(Some(i64::from(task.attempt)))),
        ("target_table", Value::Text(Some(destination.to_string()))),
        (
            "write_mode",
            Value::Text(Some(config.write.flag_name().into())),
        ),
        ("load_job_id", Value::Text(done.load_job.clone())),
        ("merge_job_id", Value::Text(done.merge_job.clone())),
        ("objects", Value::Text(Some(objects_json(p)))),
        ("file_count", Value::Int(i64::try_from(report.files).ok())),
        (
            "file_rows",
            Value::Int(report.file_rows.and_then(|r| i64::try_from(r).ok())),
        ),
        ("row_count", Value::Int(report.rows)),
        ("merged_rows", Value::Int(done.merged_rows)),
        ("byte_count", Value::Int(bytes)),
        ("started_at", Value::Millis(done.started_ms)),
        ("finished_at", Value::Millis(done.finished_ms)),
        (
            "sluice_version",
            Value::Text(Some(env!("CARGO_PKG_VERSION").into())),
        ),
    ];
    let (sql, parameters) = insert(&lineage, values);
    let table = destination.to_string();
    let job = QueryJob {
        what: "lineage",
        table: &table,
        sql,
        parameters,
    };
    let base = job_id::derived_id(&p.base_id, "lineage");
    let (_, ours) = query::run_once(config, api, site, &base, &job).await?;
    if ours {
        tracing::info!(table = %table, lineage = %lineage, "recorded the load of {table} in {lineage}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_names_every_column_and_binds_values_as_parameters() {
        let table = TableRef {
            project: "p".into(),
            dataset: "d".into(),
            table: TABLE.into(),
            decorator: None,
        };
        let (sql, parameters) = insert(
            &table,
            vec![
                ("execution", Value::Text(Some("e'1".into()))),
                ("job", Value::Text(None)),
                ("row_count", Value::Int(Some(3))),
                ("started_at", Value::Millis(Some(1000))),
                ("finished_at", Value::Millis(None)),
            ],
        );
        assert_eq!(
            sql,
            "INSERT INTO `p.d._sluice_loads` (`execution`, `job`, `row_count`, `started_at`, \
             `finished_at`) VALUES (@execution, CAST(NULL AS STRING), @row_count, \
             TIMESTAMP_MILLIS(@started_at), CAST(NULL AS TIMESTAMP))"
        );
        assert_eq!(parameters.len(), 3);
        assert_eq!(
            parameters[0]
                .parameter_value
                .as_ref()
                .unwrap()
                .value
                .as_deref(),
            Some("e'1")
        );
    }

    #[test]
    fn the_table_has_every_documented_column() {
        let body = table_body(&TableRef {
            project: "p".into(),
            dataset: "d".into(),
            table: TABLE.into(),
            decorator: None,
        });
        let names: Vec<&str> = body
            .schema
            .as_ref()
            .unwrap()
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/load.md"))
                .expect("docs/load.md");
        for name in names {
            assert!(
                docs.contains(&format!("| `{name}` |")),
                "docs/load.md lacks lineage column `{name}`"
            );
        }
    }
}
