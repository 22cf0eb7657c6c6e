//! What one load job does: a [`LoadSpec`] built per work item in `prepare` (from the flags
//! and the merged footer schema), and the `jobs.insert` / `tables.insert` bodies `execute`
//! sends for it.
//!
//! A spec is independent of who submits it; its canonical JSON plus the item's objects and
//! their generations is the job's identity (see `job_id.rs`).

use std::collections::BTreeMap;

use google_cloud_bigquery_v2::model;
use serde::Serialize;

use crate::config::{LoadConfig, SchemaSource, SourceFormat, WriteMode};
use crate::errors::LoadError;
use crate::inputs::SourceObject;
use crate::merge_sql::{self, MergeSpec};
use crate::plan::WorkItem;
use crate::schema::{DecimalTarget, Field, Mode, ParquetSchema};
use crate::template::TableRef;

/// CSV options as sent, for the identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct CsvSpec {
    pub(crate) skip_leading_rows: u32,
    pub(crate) field_delimiter: String,
    pub(crate) quote: String,
    pub(crate) allow_quoted_newlines: bool,
    pub(crate) allow_jagged_rows: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) null_marker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) encoding: Option<String>,
}

/// What a load job does, in a stable, canonical form (field order and names here are part of
/// every job id: add new fields only as `Option`s skipped when `None`, so old ids stay valid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct LoadSpec {
    /// `project.dataset.table[$decorator]`.
    pub(crate) destination: String,
    pub(crate) source_format: &'static str,
    pub(crate) write_disposition: &'static str,
    pub(crate) create_disposition: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) schema: Option<Vec<Field>>,
    pub(crate) autodetect: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) decimal_target_types: Vec<&'static str>,
    pub(crate) list_inference: bool,
    pub(crate) enum_as_string: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) csv: Option<CsvSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_bad_records: Option<u32>,
    pub(crate) ignore_unknown_values: bool,
    /// `(type, field)`; field `None` is ingestion time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) time_partitioning: Option<(&'static str, Option<String>)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) clustering: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) schema_update_options: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) salt: Option<String>,
    /// `hivePartitioningOptions` (mode AUTO): the source URI prefix; the key columns are in `schema`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hive_prefix: Option<String>,
    /// `--write merge`: keys and order column (the load itself goes to a staging table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) merge: Option<MergeSpec>,
}

/// The Hive `key=value` directories of `key` in path order, and the key prefix before the first.
fn hive_segments(key: &str) -> (String, Vec<(String, String)>) {
    let mut prefix = String::new();
    let mut pairs = Vec::new();
    let dirs = key.rsplit_once('/').map_or("", |(d, _)| d);
    for segment in dirs.split('/') {
        match segment.split_once('=') {
            Some((k, v)) if !k.is_empty() => pairs.push((k.to_string(), v.to_string())),
            _ if pairs.is_empty() => {
                prefix.push_str(segment);
                prefix.push('/');
            }
            _ => {}
        }
    }
    (prefix, pairs)
}

/// BigQuery's AUTO inference for a partition key: DATE, INTEGER or STRING.
fn hive_key_type<'a>(values: impl Iterator<Item = &'a str> + Clone) -> &'static str {
    let is_date = |v: &str| {
        let b = v.as_bytes();
        b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
    };
    let is_int = |v: &str| {
        let digits = v.strip_prefix('-').unwrap_or(v);
        !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit())
    };
    if values.clone().all(is_date) {
        "DATE"
    } else if values.clone().all(is_int) {
        "INTEGER"
    } else {
        "STRING"
    }
}

/// With `--hive-partitioning`: the item's common source URI prefix and its key columns. All
/// objects of an item must share the prefix and the keys (BigQuery requires one layout per job).
pub(crate) fn hive_columns(item: &WorkItem) -> Result<Option<(String, Vec<Field>)>, LoadError> {
    let first = &item.objects[0];
    let (prefix, pairs) = hive_segments(&first.key);
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let mut values: Vec<Vec<String>> = vec![Vec::new(); keys.len()];
    for object in &item.objects {
        let (p, pairs) = hive_segments(&object.key);
        let same_keys = pairs
            .iter()
            .map(|(k, _)| k.as_str())
            .eq(keys.iter().copied());
        if (p != prefix && !keys.is_empty()) || !same_keys {
            return Err(LoadError::HiveLayout {
                table: item.destination.to_string(),
                first: first.url(),
                other: object.url(),
            });
        }
        for (i, (_, v)) in pairs.into_iter().enumerate() {
            values[i].push(v);
        }
    }
    if keys.is_empty() {
        return Ok(None);
    }
    let fields = keys
        .iter()
        .zip(&values)
        .map(|(k, vs)| {
            Field::new(
                *k,
                hive_key_type(vs.iter().map(String::as_str)),
                Mode::Nullable,
            )
        })
        .collect();
    Ok(Some((format!("gs://{}/{prefix}", first.bucket), fields)))
}

/// Builds the job template for `item`. `parquet` is the merged footer schema for Parquet items.
pub(crate) fn build_spec(
    config: &LoadConfig,
    item: &WorkItem,
    parquet: Option<&ParquetSchema>,
) -> Result<LoadSpec, LoadError> {
    let (mut schema, autodetect) = match (&config.schema, parquet) {
        (SchemaSource::FromFiles, Some(p)) => (Some(p.fields.clone()), false),
        (SchemaSource::FromFiles, None) => {
            // prepare reads every Parquet item's footers before building its spec.
            return Err(LoadError::Table {
                table: item.destination.to_string(),
                reason: "no schema: Parquet footers were not read".into(),
            });
        }
        (SchemaSource::Explicit(fields), _) => (Some(fields.clone()), false),
        (SchemaSource::Autodetect, _) => (None, true),
    };
    let mut hive_prefix = None;
    if config.hive_partitioning
        && let Some((prefix, columns)) = hive_columns(item)?
    {
        if let Some(fields) = schema.as_mut() {
            for column in columns {
                if fields
                    .iter()
                    .any(|f| f.name.eq_ignore_ascii_case(&column.name))
                {
                    return Err(LoadError::Table {
                        table: item.destination.to_string(),
                        reason: format!(
                            "--hive-partitioning: the files already have a column `{}`, \
                             which the `{}=` directories would add again",
                            column.name, column.name
                        ),
                    });
                }
                fields.push(column);
            }
        }
        hive_prefix = Some(prefix);
    }
    if let Some(fields) = &schema {
        let partition_field = config
            .partitioning
            .as_ref()
            .and_then(|p| p.field.as_deref());
        check_layout_columns(
            fields,
            partition_field,
            &config.clustering,
            &item.destination,
        )?;
    }
    let merge = match config.write {
        WriteMode::Merge => Some(merge_spec(config, item, schema.as_deref())?),
        _ => None,
    };
    let csv = (config.format == SourceFormat::Csv).then(|| CsvSpec {
        skip_leading_rows: config.csv.skip_leading_rows,
        field_delimiter: config.csv.field_delimiter.clone(),
        quote: config.csv.quote.clone(),
        allow_quoted_newlines: config.csv.allow_quoted_newlines,
        allow_jagged_rows: config.csv.allow_jagged_rows,
        null_marker: config.csv.null_marker.clone(),
        encoding: config.csv.encoding.clone(),
    });
    Ok(LoadSpec {
        destination: item.destination.to_string(),
        source_format: config.format.api_name(),
        write_disposition: config.write.api_name(),
        create_disposition: "CREATE_IF_NEEDED",
        schema,
        autodetect,
        decimal_target_types: parquet
            .map(|p| p.decimal_targets.iter().map(|t| t.as_str()).collect())
            .unwrap_or_default(),
        list_inference: parquet.is_some_and(|p| p.list_inference),
        enum_as_string: parquet.is_some_and(|p| p.enum_as_string),
        csv,
        max_bad_records: config.max_bad_records,
        ignore_unknown_values: config.ignore_unknown_values,
        time_partitioning: config
            .partitioning
            .as_ref()
            .map(|p| (p.kind.api_name(), p.field.clone())),
        clustering: config.clustering.clone(),
        schema_update_options: config.schema_update.api_names(),
        salt: config.job_id_salt.clone(),
        hive_prefix,
        merge,
    })
}

/// The item's merge keys and order column: `--order-by`, else the cursor column extract
/// recorded for the item's objects. Checked against the schema when it is known (with
/// `--autodetect` it is checked after the staging load, against the staged table).
fn merge_spec(
    config: &LoadConfig,
    item: &WorkItem,
    schema: Option<&[Field]>,
) -> Result<MergeSpec, LoadError> {
    let (order_by, from_flag) = match &config.order_by {
        Some(column) => (Some(column.clone()), true),
        None => {
            let cursors: std::collections::BTreeSet<&str> = item
                .objects
                .iter()
                .filter_map(|o| o.cursor_column.as_deref())
                .collect();
            if cursors.len() > 1 {
                return Err(LoadError::Table {
                    table: item.destination.to_string(),
                    reason: format!(
                        "the manifests name different cursor columns for this table ({}); pass \
                         --order-by COL to choose the one that orders the rows",
                        cursors.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
            (cursors.into_iter().next().map(str::to_string), false)
        }
    };
    let keys = config.merge_keys_for(&item.destination.table);
    if keys.is_empty() {
        return Err(LoadError::Table {
            table: item.destination.to_string(),
            reason: format!(
                "--write merge has no key for this table: add --key {}=COL[,COL] or a --key for \
                 every table",
                item.destination.table
            ),
        });
    }
    let spec = MergeSpec {
        keys: keys.to_vec(),
        order_by,
    };
    match schema {
        Some(fields) => merge_sql::resolve(&spec, from_flag, fields, &item.destination.to_string()),
        None => Ok(spec),
    }
}

/// A partitioning or clustering column must exist with a fitting type; BigQuery would say so
/// too, but only after the job ran, and without naming the file the schema came from.
fn check_layout_columns(
    fields: &[Field],
    partition_field: Option<&str>,
    clustering: &[String],
    table: &TableRef,
) -> Result<(), LoadError> {
    let find = |name: &str| fields.iter().find(|f| f.name.eq_ignore_ascii_case(name));
    if let Some(name) = partition_field {
        match find(name) {
            None => {
                return Err(LoadError::Table {
                    table: table.to_string(),
                    reason: format!("--partition-by column `{name}` is not in the schema"),
                });
            }
            Some(f)
                if f.mode == Mode::Repeated
                    || !matches!(f.field_type.as_str(), "DATE" | "TIMESTAMP" | "DATETIME") =>
            {
                return Err(LoadError::Table {
                    table: table.to_string(),
                    reason: format!(
                        "--partition-by column `{name}` is {}; time partitioning needs DATE, TIMESTAMP or DATETIME",
                        f.describe_type()
                    ),
                });
            }
            Some(_) => {}
        }
    }
    for name in clustering {
        if find(name).is_none() {
            return Err(LoadError::Table {
                table: table.to_string(),
                reason: format!("--cluster-by column `{name}` is not in the schema"),
            });
        }
    }
    Ok(())
}

/// The bytes hashed into the job id: a version tag, the spec's canonical JSON and every
/// object's `gs://bucket/key#generation`, sorted.
pub(crate) fn identity(spec: &LoadSpec, objects: &[SourceObject]) -> Vec<u8> {
    let mut out = b"sluice-load-job/v1\n".to_vec();
    out.extend_from_slice(
        serde_json::to_string(spec)
            .expect("LoadSpec serialises")
            .as_bytes(),
    );
    out.push(b'\n');
    let mut urls: Vec<String> = objects.iter().map(SourceObject::versioned_url).collect();
    urls.sort();
    for url in urls {
        out.extend_from_slice(url.as_bytes());
        out.push(b'\n');
    }
    out
}

/// The base job id for an item with `spec`.
pub(crate) fn base_job_id(item: &WorkItem, spec: &LoadSpec) -> String {
    let d = &item.destination;
    crate::job_id::base_id(
        &[
            &d.dataset,
            &d.table,
            d.decorator.as_deref().unwrap_or_default(),
        ],
        &identity(spec, &item.objects),
    )
}

fn to_api_fields(fields: &[Field]) -> Vec<model::TableFieldSchema> {
    fields
        .iter()
        .map(|f| {
            let mut out = model::TableFieldSchema::new()
                .set_name(f.name.clone())
                .set_type(f.field_type.clone())
                .set_mode(f.mode.as_str())
                .set_fields(to_api_fields(&f.fields));
            if let Some(d) = &f.description {
                out = out.set_description(d.clone());
            }
            out
        })
        .collect()
}

fn api_time_partitioning(spec: &LoadSpec) -> Option<model::TimePartitioning> {
    spec.time_partitioning.as_ref().map(|(kind, field)| {
        let tp = model::TimePartitioning::new().set_type(*kind);
        match field {
            Some(f) => tp.set_field(f.clone()),
            None => tp,
        }
    })
}

fn api_table_ref(table: &TableRef) -> model::TableReference {
    model::TableReference::new()
        .set_project_id(table.project.clone())
        .set_dataset_id(table.dataset.clone())
        .set_table_id(table.table_id())
}

/// The `jobs.insert` body for `spec` under `job_id`.
pub(crate) fn to_job(
    spec: &LoadSpec,
    item: &WorkItem,
    project: &str,
    job_id: &str,
    location: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> model::Job {
    let mut load = model::JobConfigurationLoad::new()
        .set_source_uris(item.objects.iter().map(SourceObject::url))
        .set_source_format(spec.source_format)
        .set_destination_table(api_table_ref(&item.destination))
        .set_write_disposition(spec.write_disposition)
        .set_create_disposition(spec.create_disposition)
        .set_schema_update_options(spec.schema_update_options.iter().copied());
    if let Some(fields) = &spec.schema {
        load = load.set_schema(model::TableSchema::new().set_fields(to_api_fields(fields)));
    }
    if spec.autodetect {
        load = load.set_autodetect(true);
    }
    if !spec.decimal_target_types.is_empty() {
        load = load.set_decimal_target_types(spec.decimal_target_types.iter().map(|t| {
            if *t == DecimalTarget::BigNumeric.as_str() {
                model::DecimalTargetType::Bignumeric
            } else {
                model::DecimalTargetType::Numeric
            }
        }));
    }
    if spec.list_inference || spec.enum_as_string {
        let mut options = model::ParquetOptions::new();
        if spec.list_inference {
            options = options.set_enable_list_inference(true);
        }
        if spec.enum_as_string {
            options = options.set_enum_as_string(true);
        }
        load = load.set_parquet_options(options);
    }
    if let Some(csv) = &spec.csv {
        load = load
            .set_skip_leading_rows(csv.skip_leading_rows as i32)
            .set_field_delimiter(csv.field_delimiter.clone())
            .set_quote(csv.quote.clone())
            .set_allow_quoted_newlines(csv.allow_quoted_newlines)
            .set_allow_jagged_rows(csv.allow_jagged_rows);
        if let Some(marker) = &csv.null_marker {
            load = load.set_null_marker(marker.clone());
        }
        if let Some(encoding) = &csv.encoding {
            load = load.set_encoding(encoding.clone());
        }
    }
    if let Some(n) = spec.max_bad_records {
        load = load.set_max_bad_records(n as i32);
    }
    if spec.ignore_unknown_values {
        load = load.set_ignore_unknown_values(true);
    }
    if let Some(prefix) = &spec.hive_prefix {
        load = load.set_hive_partitioning_options(
            model::HivePartitioningOptions::new()
                .set_mode("AUTO")
                .set_source_uri_prefix(prefix.clone()),
        );
    }
    if let Some(tp) = api_time_partitioning(spec) {
        load = load.set_time_partitioning(tp);
    }
    if !spec.clustering.is_empty() {
        load = load.set_clustering(model::Clustering::new().set_fields(spec.clustering.clone()));
    }
    let mut reference = model::JobReference::new()
        .set_project_id(project)
        .set_job_id(job_id);
    if let Some(location) = location {
        reference = reference.set_location(location);
    }
    model::Job::new()
        .set_job_reference(reference)
        .set_configuration(
            model::JobConfiguration::new()
                .set_load(load)
                .set_labels(labels.clone()),
        )
}

/// The `tables.insert` body creating the base table of `item` with the spec's schema,
/// partitioning and clustering (used when partitioning or clustering is asked for; see execute/).
pub(crate) fn to_table(spec: &LoadSpec, item: &WorkItem) -> Option<model::Table> {
    let fields = spec.schema.as_ref()?;
    let base = item.destination.base();
    let mut table = model::Table::new()
        .set_table_reference(api_table_ref(&base))
        .set_schema(model::TableSchema::new().set_fields(to_api_fields(fields)));
    if let Some(tp) = api_time_partitioning(spec) {
        table = table.set_time_partitioning(tp);
    }
    if !spec.clustering.is_empty() {
        table = table.set_clustering(model::Clustering::new().set_fields(spec.clustering.clone()));
    }
    Some(table)
}

/// Whether `config` needs the load-only knobs the emulator cannot take at load time, i.e.
/// the base table must exist with partitioning/clustering before the job runs.
pub(crate) fn wants_table_layout(config: &LoadConfig) -> bool {
    config.partitioning.is_some() || !config.clustering.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Input, PartitionType, Partitioning, WriteMode};
    use crate::plan::tests::object;
    use crate::plan::{group, split_per_object};
    use crate::template::TableTemplate;

    fn config(table: &str) -> LoadConfig {
        LoadConfig::new(
            Input::Glob("gs://b/raw/**".into()),
            TableTemplate::parse(table).unwrap(),
        )
    }

    fn parquet_schema() -> ParquetSchema {
        ParquetSchema {
            fields: vec![
                Field::new("id", "INTEGER", Mode::Required),
                Field::new("day", "DATE", Mode::Nullable),
            ],
            decimal_targets: Default::default(),
            list_inference: false,
            enum_as_string: false,
        }
    }

    #[test]
    fn job_id_depends_on_objects_generations_and_options() {
        let c = config("p.ds.t");
        let item = group(vec![object("raw/a.parquet", 1)], &c.table)
            .unwrap()
            .remove(0);
        let spec = build_spec(&c, &item, Some(&parquet_schema())).unwrap();
        let id = base_job_id(&item, &spec);
        assert!(id.starts_with("sluice_load_ds_t_"), "{id}");
        assert_eq!(id, base_job_id(&item, &spec), "deterministic");

        let regenerated = group(vec![object("raw/a.parquet", 2)], &c.table)
            .unwrap()
            .remove(0);
        assert_ne!(
            id,
            base_job_id(&regenerated, &spec),
            "generation is identity"
        );

        let mut truncate = c.clone();
        truncate.write = WriteMode::Truncate;
        let spec2 = build_spec(&truncate, &item, Some(&parquet_schema())).unwrap();
        assert_ne!(id, base_job_id(&item, &spec2), "disposition is identity");

        let mut salted = c.clone();
        salted.job_id_salt = Some("rerun-1".into());
        let spec3 = build_spec(&salted, &item, Some(&parquet_schema())).unwrap();
        assert_ne!(id, base_job_id(&item, &spec3), "salt is identity");

        let mut other_schema = parquet_schema();
        other_schema.fields[1].field_type = "TIMESTAMP".into();
        let spec4 = build_spec(&c, &item, Some(&other_schema)).unwrap();
        assert_ne!(id, base_job_id(&item, &spec4), "schema is identity");

        // Input order of objects does not matter.
        let two = |a, b| {
            group(vec![object(a, 1), object(b, 1)], &c.table)
                .unwrap()
                .remove(0)
        };
        let ab = two("raw/a.parquet", "raw/b.parquet");
        let ba = two("raw/b.parquet", "raw/a.parquet");
        assert_eq!(base_job_id(&ab, &spec), base_job_id(&ba, &spec));
    }

    #[test]
    fn job_body_carries_every_option() {
        let mut c = config("p.ds.t$20240101");
        c.write = WriteMode::Truncate;
        c.partitioning = Some(Partitioning {
            field: Some("day".into()),
            kind: PartitionType::Day,
        });
        c.clustering = vec!["id".into()];
        c.schema_update.allow_field_addition = true;
        let item = group(vec![object("raw/a.parquet", 7)], &c.table)
            .unwrap()
            .remove(0);
        let mut schema = parquet_schema();
        schema.decimal_targets.insert(DecimalTarget::BigNumeric);
        schema.list_inference = true;
        let spec = build_spec(&c, &item, Some(&schema)).unwrap();
        let job = to_job(&spec, &item, "runner", "jid", Some("EU"), &BTreeMap::new());
        let json = serde_json::to_value(&job).unwrap();
        let load = &json["configuration"]["load"];
        assert_eq!(json["jobReference"]["jobId"], "jid");
        assert_eq!(json["jobReference"]["projectId"], "runner");
        assert_eq!(json["jobReference"]["location"], "EU");
        assert_eq!(load["sourceUris"][0], "gs://b/raw/a.parquet");
        assert_eq!(load["destinationTable"]["tableId"], "t$20240101");
        assert_eq!(load["writeDisposition"], "WRITE_TRUNCATE");
        assert_eq!(load["sourceFormat"], "PARQUET");
        assert_eq!(load["schema"]["fields"][0]["mode"], "REQUIRED");
        assert_eq!(load["timePartitioning"]["field"], "day");
        assert_eq!(load["clustering"]["fields"][0], "id");
        assert_eq!(load["schemaUpdateOptions"][0], "ALLOW_FIELD_ADDITION");
        assert_eq!(load["parquetOptions"]["enableListInference"], true);
        assert!(load.get("decimalTargetTypes").is_some());
        let table = to_table(&spec, &item).unwrap();
        let json = serde_json::to_value(&table).unwrap();
        assert_eq!(json["tableReference"]["tableId"], "t");
    }

    #[test]
    fn hive_partitioning_adds_typed_key_columns() {
        let mut c = config("p.ds.{dataset}");
        c.hive_partitioning = true;
        c.partitioning = Some(Partitioning {
            field: Some("dt".into()),
            kind: PartitionType::Day,
        });
        let items = group(
            vec![
                object("raw/city/dt=2024-01-01/n=1/a.parquet", 1),
                object("raw/city/dt=2024-01-02/n=22/b.parquet", 1),
            ],
            &c.table,
        )
        .unwrap();
        let spec = build_spec(&c, &items[0], Some(&parquet_schema())).unwrap();
        let names: Vec<String> = spec
            .schema
            .as_ref()
            .unwrap()
            .iter()
            .map(|f| format!("{} {}", f.name, f.describe_type()))
            .collect();
        assert_eq!(
            names,
            ["id REQUIRED INTEGER", "day DATE", "dt DATE", "n INTEGER"]
        );
        assert_eq!(spec.hive_prefix.as_deref(), Some("gs://b/raw/city/"));
        let job = to_job(&spec, &items[0], "p", "j", None, &BTreeMap::new());
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(
            json["configuration"]["load"]["hivePartitioningOptions"]["sourceUriPrefix"],
            "gs://b/raw/city/"
        );
        // Mixed layouts in one job are refused.
        let mixed = group(
            vec![
                object("raw/city/dt=2024-01-01/a.parquet", 1),
                object("raw/city/b.parquet", 1),
            ],
            &c.table,
        )
        .unwrap();
        let err = build_spec(&c, &mixed[0], Some(&parquet_schema())).unwrap_err();
        assert!(err.to_string().contains("one layout per job"), "{err}");
        // Without the flag nothing is added.
        c.hive_partitioning = false;
        c.partitioning = None;
        let spec = build_spec(&c, &items[0], Some(&parquet_schema())).unwrap();
        assert_eq!(spec.schema.unwrap().len(), 2);
        assert_eq!(hive_key_type(["a", "1"].into_iter()), "STRING");
    }

    #[test]
    fn per_object_items_have_ids_independent_of_the_other_objects() {
        let c = config("p.ds.t");
        let one = split_per_object(group(vec![object("raw/a.parquet", 1)], &c.table).unwrap());
        let two = split_per_object(
            group(
                vec![object("raw/a.parquet", 1), object("raw/b.parquet", 1)],
                &c.table,
            )
            .unwrap(),
        );
        assert_eq!(two.len(), 2);
        let id = |item: &WorkItem| {
            base_job_id(
                item,
                &build_spec(&c, item, Some(&parquet_schema())).unwrap(),
            )
        };
        assert_eq!(
            id(&one[0]),
            id(&two[0]),
            "a new object does not change a.parquet's job"
        );
        assert_ne!(two[0].shard_key(), two[1].shard_key());
    }

    #[test]
    fn merge_orders_by_the_flag_else_the_manifests_cursor_column() {
        let mut c = config("p.ds.t");
        c.write = WriteMode::Merge;
        c.merge_keys = vec!["ID".into()];
        let mut a = object("raw/a.parquet", 1);
        a.cursor_column = Some("day".into());
        let item = group(vec![a.clone()], &c.table).unwrap().remove(0);
        let spec = build_spec(&c, &item, Some(&parquet_schema())).unwrap();
        assert_eq!(
            spec.write_disposition, "WRITE_TRUNCATE",
            "into the staging table"
        );
        let merge = spec.merge.clone().unwrap();
        assert_eq!(merge.keys, ["id"], "spelled as in the schema");
        assert_eq!(merge.order_by.as_deref(), Some("day"));
        // Merge is part of the identity: not the id a truncate of the same objects gets.
        let mut t = config("p.ds.t");
        t.write = WriteMode::Truncate;
        let truncate = build_spec(&t, &item, Some(&parquet_schema())).unwrap();
        assert_ne!(base_job_id(&item, &spec), base_job_id(&item, &truncate));
        // The flag wins over the manifests.
        c.order_by = Some("ID2".into());
        let err = build_spec(&c, &item, Some(&parquet_schema())).unwrap_err();
        assert!(err.to_string().contains("--order-by column `ID2`"), "{err}");
        c.order_by = None;
        // Two cursor columns for one table: the user has to choose.
        let mut b = object("raw/b.parquet", 1);
        b.cursor_column = Some("other".into());
        let mixed = group(vec![a, b], &c.table).unwrap().remove(0);
        let err = build_spec(&c, &mixed, Some(&parquet_schema())).unwrap_err();
        assert!(err.to_string().contains("day, other"), "{err}");
        // A cursor column the data lacks: no order column.
        let mut gone = object("raw/c.parquet", 1);
        gone.cursor_column = Some(":updated_at".into());
        let item = group(vec![gone], &c.table).unwrap().remove(0);
        let spec = build_spec(&c, &item, Some(&parquet_schema())).unwrap();
        assert_eq!(spec.merge.unwrap().order_by, None);
        // A table's own keys win over the keys for every table; a table with neither is
        // refused, naming the flag that would fix it.
        c.merge_keys_by_table.insert("t".into(), vec!["ID2".into()]);
        let err = build_spec(&c, &item, Some(&parquet_schema())).unwrap_err();
        assert!(err.to_string().contains("`ID2`"), "{err}");
        c.merge_keys_by_table.clear();
        c.merge_keys_by_table
            .insert("other".into(), vec!["id".into()]);
        c.merge_keys.clear();
        let err = build_spec(&c, &item, Some(&parquet_schema())).unwrap_err();
        assert!(err.to_string().contains("--key t=COL"), "{err}");
    }

    #[test]
    fn layout_columns_are_checked() {
        let mut c = config("p.ds.t");
        c.partitioning = Some(Partitioning {
            field: Some("id".into()),
            kind: PartitionType::Day,
        });
        let item = group(vec![object("raw/a.parquet", 1)], &c.table)
            .unwrap()
            .remove(0);
        let err = build_spec(&c, &item, Some(&parquet_schema())).unwrap_err();
        assert!(
            err.to_string()
                .contains("needs DATE, TIMESTAMP or DATETIME"),
            "{err}"
        );
        c.partitioning.as_mut().unwrap().field = Some("nope".into());
        let err = build_spec(&c, &item, Some(&parquet_schema())).unwrap_err();
        assert!(
            err.to_string().contains("`nope` is not in the schema"),
            "{err}"
        );
        c.partitioning = None;
        c.clustering = vec!["zzz".into()];
        let err = build_spec(&c, &item, Some(&parquet_schema())).unwrap_err();
        assert!(
            err.to_string().contains("--cluster-by column `zzz`"),
            "{err}"
        );
        c.clustering = vec!["ID".into()];
        build_spec(&c, &item, Some(&parquet_schema())).unwrap();
    }
}
