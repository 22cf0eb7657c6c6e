//! Stage 3, prepare: this task's work items -> job specs ready to submit, with every check that
//! can fail before any job exists:
//!
//! - a manifest's objects still exist with the generations it lists (`verify.rs`: one listing
//!   per directory of many objects, else `HEAD` each);
//! - Parquet: every object's schema -- from what extract recorded in the manifest, else from
//!   its footer (ranged reads, bounded concurrency) -- mapped, and merged per item
//!   ([`ParquetSchema::merge`]): the files of one job must agree;
//! - the spec and its deterministic base job id per item;
//! - unless it is a dry run, the spec compared with the existing table (`compat.rs`).

use std::collections::BTreeMap;

use futures::StreamExt;

use crate::api::{Api, Resource};
use crate::compat;
use crate::config::{LoadConfig, SourceFormat, WriteMode};
use crate::errors::{LoadError, TypeMismatch};
use crate::footer::{self, FooterError};
use crate::inputs::{SourceObject, Stores};
use crate::plan::WorkItem;
use crate::schema::{self, Field, ParquetSchema};
use crate::spec::{self, LoadSpec};
use crate::template::TableRef;
use crate::verify;
use crate::widen::{self, ObjectSchema};

/// A work item with its job: what `execute` submits.
pub(crate) struct Prepared {
    pub(crate) item: WorkItem,
    pub(crate) spec: LoadSpec,
    pub(crate) base_id: String,
    /// Rows in the Parquet footers (Parquet only).
    pub(crate) file_rows: Option<u64>,
    /// Parquet: the objects grouped by their own schema, and what the footers say about each
    /// column (`widen.rs`); a group whose types differ from `spec.schema` is drifted.
    pub(crate) widen: Option<Widen>,
}

/// The objects' own schemas behind a Parquet item's joined one.
#[derive(Debug, Clone)]
pub(crate) struct Widen {
    pub(crate) facts: widen::Facts,
    pub(crate) groups: Vec<widen::Group>,
}

impl Prepared {
    /// The groups of objects that cannot load as they are into `spec.schema` (empty when all
    /// can: the item is one plain load job).
    pub(crate) fn drifted_groups(&self) -> Vec<&widen::Group> {
        match (&self.widen, &self.spec.schema) {
            (Some(w), Some(fields)) => {
                widen::drifted(&w.groups, fields, self.spec.hive_prefix.is_some())
            }
            _ => Vec::new(),
        }
    }
}

/// Prepares `items`. `api` is `None` on a dry run, which talks to no BigQuery.
pub(crate) async fn prepare(
    config: &LoadConfig,
    stores: &mut Stores,
    items: Vec<WorkItem>,
    from_manifests: bool,
    api: Option<&Api<'_>>,
) -> Result<Vec<Prepared>, LoadError> {
    stores
        .open_all(items.iter().flat_map(|i| i.objects.iter()))
        .await?;
    let items = if from_manifests {
        verify::verify_manifest_objects(config, stores, items).await?
    } else {
        items
    };
    let mut prepared = Vec::with_capacity(items.len());
    if config.format == SourceFormat::Parquet {
        let schemas = read_schemas(config, stores, &items).await?;
        for (item, (unified, rows)) in items.into_iter().zip(schemas) {
            let mut p = with_spec(config, item, Some(&unified.schema), Some(rows))?;
            p.widen = Some(Widen {
                facts: unified.facts,
                groups: unified.groups,
            });
            prepared.push(p);
        }
    } else {
        for item in items {
            prepared.push(with_spec(config, item, None, None)?);
        }
    }
    if let Some(api) = api {
        check_table_schemas(config, api, &mut prepared).await?;
    }
    for p in &prepared {
        widen::refuse_unsupported(config, &p.item, &p.spec, &p.drifted_groups())?;
    }
    Ok(prepared)
}

fn with_spec(
    config: &LoadConfig,
    item: WorkItem,
    parquet: Option<&ParquetSchema>,
    file_rows: Option<u64>,
) -> Result<Prepared, LoadError> {
    let spec = spec::build_spec(config, &item, parquet)?;
    let base_id = spec::base_job_id(&item, &spec);
    Ok(Prepared {
        item,
        spec,
        base_id,
        file_rows,
        widen: None,
    })
}

/// Every object's schema (the manifests' records, else the footer; bounded concurrency across
/// items), joined per item (`widen::unify`): the joined schema and the row count, in item order.
async fn read_schemas(
    config: &LoadConfig,
    stores: &Stores,
    items: &[WorkItem],
) -> Result<Vec<(widen::Unified, u64)>, LoadError> {
    let reads: Vec<(usize, usize, &SourceObject)> = items
        .iter()
        .enumerate()
        .flat_map(|(i, item)| item.objects.iter().enumerate().map(move |(j, o)| (i, j, o)))
        .collect();
    let objects = reads.len();
    let footers: Vec<Result<(usize, usize, Shape), LoadError>> = futures::stream::iter(reads)
        .map(|(i, j, object)| async move { Ok((i, j, read_schema(stores, object).await?)) })
        .buffer_unordered(config.read_concurrency)
        .collect()
        .await;
    let mut by_item: BTreeMap<usize, BTreeMap<usize, (ObjectSchema, u64)>> = BTreeMap::new();
    let mut footers_read = 0usize;
    for footer in footers {
        let (i, j, shape) = footer?;
        footers_read += usize::from(shape.origin == Origin::Footer);
        by_item
            .entry(i)
            .or_default()
            .insert(j, (shape.schema, shape.rows));
    }
    let recorded = objects - footers_read;
    tracing::info!(
        objects,
        recorded,
        footers_read,
        "schemas of {objects} object(s): {recorded} from the manifests' records, {footers_read} from footers"
    );
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let mut rows = 0u64;
        let mut schemas = Vec::with_capacity(item.objects.len());
        for (_, (parsed, file_rows)) in by_item.remove(&i).unwrap_or_default() {
            rows += file_rows;
            schemas.push(parsed);
        }
        let unified = widen::unify(schemas).map_err(|(j, d)| LoadError::SchemaMismatch {
            table: item.destination.to_string(),
            first: item.objects[0].url(),
            file: item.objects[j].url(),
            column: d.column,
            detail: d.detail,
        })?;
        out.push((unified, rows));
    }
    Ok(out)
}

/// One object's schema and rows, and where they came from.
struct Shape {
    schema: ObjectSchema,
    rows: u64,
    origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Recorded,
    Footer,
}

/// One object's schema, mapped to BigQuery's with its columns' facts (`widen.rs`), and its row
/// count: from what extract recorded when the manifest has all of it (`recorded.rs`), else from
/// the footer.
async fn read_schema(stores: &Stores, object: &SourceObject) -> Result<Shape, LoadError> {
    if let Some(recorded) = &object.recorded
        && let Some(schema) = recorded.schema()
    {
        return Ok(Shape {
            schema,
            rows: recorded.rows,
            origin: Origin::Recorded,
        });
    }
    let store = stores.of(object);
    let size = match object.size {
        Some(s) => s,
        None => {
            store
                .head(&object.key)
                .await?
                .ok_or_else(|| LoadError::ObjectGone { url: object.url() })?
                .size
        }
    };
    let metadata = footer::read_metadata(store, &object.key, size)
        .await
        .map_err(|e| match e {
            FooterError::Storage(e) => LoadError::Storage(e),
            source => LoadError::Footer {
                url: object.url(),
                source,
            },
        })?;
    let rows = metadata.file_metadata().num_rows().max(0) as u64;
    let parsed = schema::from_parquet(metadata.file_metadata().schema()).map_err(|source| {
        LoadError::Column {
            url: object.url(),
            source,
        }
    })?;
    Ok(Shape {
        schema: ObjectSchema {
            schema: parsed,
            facts: widen::facts(&metadata),
        },
        rows,
        origin: Origin::Footer,
    })
}

/// For loads that keep the table's schema (append, WRITE_EMPTY, a `$` partition's
/// truncate), compares each item's schema with the existing table's (`compat.rs`) and
/// refuses a mismatch before any job is created; lossless adaptations (a REQUIRED column
/// sent NULLABLE to match the table) change the spec and so the job id.
async fn check_table_schemas(
    config: &LoadConfig,
    api: &Api<'_>,
    prepared: &mut [Prepared],
) -> Result<(), LoadError> {
    let keeps_schema = match config.write {
        // A merge's target keeps its schema too: the staged rows must fit it (execute/merge.rs
        // adds the new columns the checks allowed before the MERGE).
        WriteMode::Append | WriteMode::Empty | WriteMode::Merge => true,
        WriteMode::Truncate => config.table.has_decorator(),
    };
    if !keeps_schema {
        return Ok(());
    }
    let mut tables: BTreeMap<TableRef, Option<Vec<Field>>> = BTreeMap::new();
    for p in prepared.iter_mut() {
        let Some(sent) = p.spec.schema.as_mut() else {
            continue;
        };
        let base = p.item.destination.base();
        if !tables.contains_key(&base) {
            let name = base.to_string();
            let found = api
                .get(Resource::Table(&name), || api.client.get_table(&base))
                .await?;
            let fields = found
                .and_then(|t| t.schema)
                .map(|s| s.fields.iter().map(compat::table_field).collect::<Vec<_>>())
                .filter(|f| !f.is_empty());
            tables.insert(base.clone(), fields);
        }
        let Some(Some(table_fields)) = tables.get(&base) else {
            continue;
        };
        // Inference-caused drift against the table (a column with no value in any file, a
        // narrower type) takes the table's type; the drifted objects then load through
        // `execute/widen.rs`.
        let adopted = p
            .widen
            .as_ref()
            .is_some_and(|w| widen::adopt_table_types(sent, &w.facts, table_fields));
        let changed = compat::check(sent, table_fields, config.schema_update).map_err(|e| {
            let file = match p.item.objects.len() - 1 {
                0 => p.item.objects[0].url(),
                n => format!(
                    "{} (and {n} other file(s) of the job)",
                    p.item.objects[0].url()
                ),
            };
            LoadError::TypeMismatch(Box::new(TypeMismatch {
                table: base.to_string(),
                file,
                column: e.column,
                file_type: e.file_type,
                table_type: e.table_type,
                hint: e.hint,
            }))
        })?;
        if changed || adopted {
            p.base_id = spec::base_job_id(&p.item, &p.spec);
        }
    }
    Ok(())
}
