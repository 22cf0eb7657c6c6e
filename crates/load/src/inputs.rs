//! Stage 1, discover: the input (a glob over a bucket, or the task manifests `extract` wrote)
//! -> the objects to load.
//!
//! Every task lists the whole input (listing is cheap next to loading) and then keeps its own
//! share of the work items (`plan.rs`), so tasks agree on the split without talking to each
//! other. Manifests are read through `sluice-manifest`, the format extract writes with.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_manifest::{AnyManifest, ColumnRecord, ItemStatus, ListedObject, TaskManifest};
use sluice_storage::{Location, ObjectStore, StoreConfig};

use crate::completeness::{Completeness, ManifestFacts};
use crate::config::{Input, LoadConfig};
use crate::errors::{LoadError, ManifestOrigin};
use crate::template::ObjectVars;

/// Manifests larger than this are refused (they list objects; they are not data).
const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

/// One object to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceObject {
    pub(crate) bucket: String,
    /// Full key inside the bucket.
    pub(crate) key: String,
    /// GCS generation. Part of the job identity: a rewritten object is new data.
    pub(crate) generation: Option<i64>,
    pub(crate) size: Option<u64>,
    /// Where this object came from (the glob or manifest URL), for error messages.
    pub(crate) listed_in: String,
    /// Template variables derived from the key (and the manifest).
    pub(crate) vars: ObjectVars,
    /// The incremental cursor column extract recorded for the object's item
    /// (`source.cursor.column`): `--write merge` orders rows of one key by it.
    pub(crate) cursor_column: Option<String>,
    /// The columns and rows extract recorded for the object (manifests only): planning needs no
    /// footer read when they are there.
    pub(crate) recorded: Option<Recorded>,
}

impl SourceObject {
    /// `gs://bucket/key`: what BigQuery's `sourceUris` takes.
    pub(crate) fn url(&self) -> String {
        format!("gs://{}/{}", self.bucket, self.key)
    }

    /// `gs://bucket/key#generation`.
    pub(crate) fn versioned_url(&self) -> String {
        match self.generation {
            Some(g) => format!("{}#{g}", self.url()),
            None => self.url(),
        }
    }
}

/// What extract recorded about one Parquet object in its task manifest (`recorded.rs` turns it
/// into the schema a footer read would give).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub(crate) columns: Vec<ColumnRecord>,
    pub(crate) rows: u64,
}

impl Recorded {
    /// The record of a manifest entry, when it has both columns and rows.
    pub(crate) fn of(columns: Option<Vec<ColumnRecord>>, rows: Option<u64>) -> Option<Recorded> {
        Some(Recorded {
            columns: columns.filter(|c| !c.is_empty())?,
            rows: rows?,
        })
    }
}

/// What discovery found, plus the open stores (one per bucket) later stages read with.
pub(crate) struct Discovered {
    pub(crate) objects: Vec<SourceObject>,
    pub(crate) stores: Stores,
    /// Whether the objects are a manifest's claims (checked against the bucket in `prepare`).
    pub(crate) from_manifests: bool,
    /// Which datasets of the extract execution are whole (always, for a glob).
    pub(crate) completeness: Completeness,
    /// Task manifests whose every item was `skipped` (unchanged since the last pull), or that
    /// list no item (every Socrata window empty): how many items. Zero objects is then the
    /// normal outcome of a day with nothing new, not a wrong input.
    pub(crate) unchanged_items: Option<usize>,
}

/// Open stores by bucket.
#[derive(Clone)]
pub(crate) struct Stores {
    config: StoreConfig,
    by_bucket: BTreeMap<String, Arc<dyn ObjectStore>>,
}

impl Stores {
    fn new(config: StoreConfig) -> Stores {
        Stores {
            config,
            by_bucket: BTreeMap::new(),
        }
    }

    /// The store for `bucket`, opened on first use.
    pub(crate) async fn bucket(&mut self, bucket: &str) -> Result<Arc<dyn ObjectStore>, LoadError> {
        if let Some(store) = self.by_bucket.get(bucket) {
            return Ok(store.clone());
        }
        let (store, _) = sluice_storage::open(&format!("gs://{bucket}"), &self.config).await?;
        self.by_bucket.insert(bucket.to_string(), store.clone());
        Ok(store)
    }

    /// Opens every bucket `objects` live in, so readers can share `&self`.
    pub(crate) async fn open_all<'a>(
        &mut self,
        objects: impl Iterator<Item = &'a SourceObject>,
    ) -> Result<(), LoadError> {
        let buckets: std::collections::BTreeSet<&str> =
            objects.map(|o| o.bucket.as_str()).collect();
        for bucket in buckets {
            self.bucket(bucket).await?;
        }
        Ok(())
    }

    /// The store of an object whose bucket [`Stores::open_all`] opened.
    pub(crate) fn of(&self, object: &SourceObject) -> &dyn ObjectStore {
        self.in_bucket(&object.bucket)
    }

    /// The store of a bucket [`Stores::open_all`] opened.
    pub(crate) fn in_bucket(&self, bucket: &str) -> &dyn ObjectStore {
        self.by_bucket
            .get(bucket)
            .expect("open_all opened every bucket of the share")
            .as_ref()
    }
}

/// `gs://bucket/rest` -> (`bucket`, `rest`), with storage's validation of both.
fn split_gs_url(url: &str) -> Result<(String, String), LoadError> {
    match Location::parse(url)? {
        Location::Gcs { bucket, prefix } => Ok((bucket, prefix)),
        // `LoadConfig::validate` refuses non-gs:// inputs; manifest entries are checked by
        // their prefix before they get here.
        Location::Local { .. } => Err(LoadError::Config(crate::config::ConfigError(format!(
            "{url}: BigQuery loads only from Cloud Storage; give a gs:// URL"
        )))),
    }
}

/// `_` and `.` segments are Hadoop/Spark/extract bookkeeping (`_SUCCESS`, `_manifests/`,
/// `.staging/`), never data.
fn is_hidden(key: &str) -> bool {
    key.split('/')
        .any(|segment| segment.starts_with('_') || segment.starts_with('.'))
}

/// The objects of `config.input`. An empty input is an error unless `--allow-empty`.
pub(crate) async fn discover(config: &LoadConfig) -> Result<Discovered, LoadError> {
    let mut stores = Stores::new(config.store.clone());
    let (input, objects, completeness, unchanged_items) = match &config.input {
        Input::Glob(url) => (
            url,
            list_glob(url, &mut stores).await?,
            Completeness::default(),
            None,
        ),
        Input::Manifests(url) => {
            let read = read_manifests(url, &mut stores).await?;
            (url, read.objects, read.completeness, read.unchanged_items)
        }
    };
    // An extract whose every item failed wrote no objects: that is reported as skipped tables,
    // not as an empty input. One whose every item was unchanged has nothing new to load.
    if objects.is_empty()
        && !config.allow_empty
        && completeness.is_complete()
        && unchanged_items.is_none()
    {
        return Err(LoadError::NoObjects {
            input: input.clone(),
        });
    }
    Ok(Discovered {
        objects,
        stores,
        from_manifests: matches!(config.input, Input::Manifests(_)),
        completeness,
        unchanged_items,
    })
}

async fn list_glob(url: &str, stores: &mut Stores) -> Result<Vec<SourceObject>, LoadError> {
    let (bucket, pattern) = split_gs_url(url)?;
    let store = stores.bucket(&bucket).await?;
    let listed = sluice_storage::list_glob(store.as_ref(), &pattern).await?;
    let base = sluice_storage::glob_base(&pattern);
    let mut skipped_hidden = 0;
    let mut objects = Vec::with_capacity(listed.len());
    for meta in listed {
        // Keys below the glob's base only: a hidden directory above it is the user's choice.
        let below = meta.key.strip_prefix(base).unwrap_or(&meta.key);
        if meta.key.ends_with('/') || is_hidden(below) {
            skipped_hidden += usize::from(!meta.key.ends_with('/'));
            continue;
        }
        objects.push(SourceObject {
            vars: ObjectVars::from_key(&meta.key, base, None),
            bucket: bucket.clone(),
            key: meta.key,
            generation: meta.generation,
            size: Some(meta.size),
            listed_in: url.to_string(),
            cursor_column: None,
            recorded: None,
        });
    }
    if skipped_hidden > 0 {
        tracing::info!(
            skipped = skipped_hidden,
            "skipped {skipped_hidden} object(s) under `_`/`.` names (bookkeeping, not data) in {url}"
        );
    }
    Ok(objects)
}

/// What a set of task manifests lists.
struct ReadManifests {
    objects: Vec<SourceObject>,
    completeness: Completeness,
    /// Every item `skipped` (unchanged since the last pull), or none at all: how many; else `None`.
    unchanged_items: Option<usize>,
}

async fn read_manifests(url: &str, stores: &mut Stores) -> Result<ReadManifests, LoadError> {
    let (bucket, prefix) = split_gs_url(url)?;
    let store = stores.bucket(&bucket).await?;
    let manifests: Vec<_> = store
        .list(&prefix)
        .await?
        .into_iter()
        .filter(|m| is_task_manifest(m.key.strip_prefix(&prefix).unwrap_or(&m.key)))
        .collect();
    if manifests.is_empty() {
        return Err(LoadError::NoManifests {
            prefix: url.to_string(),
        });
    }
    // Template variables are relative to the extract destination the manifests sit in.
    let base = prefix
        .trim_end_matches('/')
        .strip_suffix("_manifests")
        .unwrap_or("")
        .to_string();
    let mut objects = Vec::new();
    let mut origins = Vec::new();
    let mut facts = Vec::new();
    let (mut items_seen, mut items_unchanged) = (0usize, 0usize);
    for manifest in manifests {
        let manifest_url = store.url_of(&manifest.key);
        let bytes =
            sluice_storage::read_to_bytes(store.as_ref(), &manifest.key, MAX_MANIFEST_BYTES)
                .await?;
        // Either form comes down to the objects it lists.
        let listed: Vec<(ListedObject, Option<String>, Option<Recorded>)> =
            match sluice_manifest::parse_any(&bytes, &manifest_url)? {
                AnyManifest::Task(task) => {
                    facts.push(manifest_facts(&task, &manifest_url));
                    items_seen += task.items.len();
                    items_unchanged += task
                        .items
                        .iter()
                        .filter(|item| item.status == ItemStatus::Skipped)
                        .count();
                    origins.push(ManifestOrigin {
                        url: manifest_url.clone(),
                        execution: task.execution.clone(),
                        task_index: task.task_index,
                        task_count: task.task_count,
                    });
                    // A failed item has no objects; `Completeness` keeps its dataset's tables out.
                    task.items
                        .into_iter()
                        .flat_map(|item| {
                            let cursor = item.source.cursor.and_then(|c| c.column);
                            item.objects.into_iter().map(move |o| {
                                let recorded = Recorded::of(o.columns, o.rows);
                                let listed = ListedObject {
                                    url: o.url,
                                    generation: o.generation,
                                    size: Some(o.size),
                                    dataset: Some(o.dataset),
                                };
                                (listed, cursor.clone(), recorded)
                            })
                        })
                        .collect()
                }
                AnyManifest::Objects(list) => {
                    list.objects.into_iter().map(|o| (o, None, None)).collect()
                }
            };
        for (entry, cursor_column, recorded) in listed {
            let (bucket, key) = resolve_entry_url(&entry.url, &bucket, &base)?;
            objects.push(SourceObject {
                vars: ObjectVars::from_key(&key, &base, entry.dataset),
                bucket,
                key,
                generation: entry.generation,
                size: entry.size,
                listed_in: manifest_url.clone(),
                cursor_column,
                recorded,
            });
        }
    }
    let completeness = match check_manifest_set(url, &origins)? {
        Some(task_count) => Completeness::judge(task_count, &facts),
        None => Completeness::default(),
    };
    // No item at all is the same news: every Socrata window was empty.
    let unchanged_items =
        (!origins.is_empty() && items_unchanged == items_seen).then_some(items_seen);
    Ok(ReadManifests {
        objects,
        completeness,
        unchanged_items,
    })
}

/// `task-00003.json` directly under the manifest prefix (not the per-item receipts in subdirectories).
fn is_task_manifest(name: &str) -> bool {
    !name.contains('/') && name.starts_with("task-") && name.ends_with(".json")
}

/// An absolute `gs://` URL, or a key relative to the extract destination.
fn resolve_entry_url(url: &str, bucket: &str, base: &str) -> Result<(String, String), LoadError> {
    if url.starts_with("gs://") {
        return split_gs_url(url);
    }
    Ok((
        bucket.to_string(),
        format!("{base}{}", url.trim_start_matches('/')),
    ))
}

/// What `Completeness` needs from a task manifest: its items per dataset and the failed ones.
/// A failed item is no longer an error here: only its dataset's tables are kept out.
fn manifest_facts(manifest: &TaskManifest, url: &str) -> ManifestFacts {
    let mut items = BTreeMap::new();
    let mut failed = Vec::new();
    for item in &manifest.items {
        *items.entry(item.dataset.clone()).or_insert(0) += 1;
        if item.status == ItemStatus::Failed {
            failed.push((
                item.dataset.clone(),
                item.key.clone(),
                item.error
                    .clone()
                    .unwrap_or_else(|| "no cause recorded".into()),
            ));
        }
    }
    ManifestFacts {
        url: url.to_string(),
        task_index: manifest.task_index,
        complete: manifest.complete,
        planned_items: manifest.planned_items.clone(),
        items,
        failed,
    }
}

/// extract's manifests under one prefix must be one execution's: one `task_count`, one
/// execution. A stale manifest from an older run with more tasks would otherwise load old data
/// without a word. Returns the task count; which tasks are missing, and what that leaves
/// incomplete, is `Completeness`'s to say.
fn check_manifest_set(prefix: &str, origins: &[ManifestOrigin]) -> Result<Option<u32>, LoadError> {
    let Some(first) = origins.first() else {
        return Ok(None);
    };
    if let Some(other) = origins
        .iter()
        .find(|o| o.task_count != first.task_count || o.execution != first.execution)
    {
        return Err(LoadError::MixedManifests {
            prefix: prefix.to_string(),
            first: Box::new(first.clone()),
            other: Box::new(other.clone()),
        });
    }
    Ok(Some(first.task_count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_storage_locations() {
        assert_eq!(
            split_gs_url("gs://bkt/raw/x").unwrap(),
            ("bkt".to_string(), "raw/x".to_string())
        );
        assert_eq!(split_gs_url("gs://bkt").unwrap(), ("bkt".into(), "".into()));
        // storage's validation applies: no bucket, a bucket name GCS would refuse.
        let err = split_gs_url("gs:///x").unwrap_err().to_string();
        assert!(err.contains("empty bucket name"), "{err}");
        let err = split_gs_url("gs://Bkt/x").unwrap_err().to_string();
        assert!(err.contains("contains 'B'"), "{err}");
        assert_eq!(
            resolve_entry_url("city/b.parquet", "bkt", "raw/").unwrap(),
            ("bkt".to_string(), "raw/city/b.parquet".to_string())
        );
        assert_eq!(
            resolve_entry_url("gs://other/city/b.parquet", "bkt", "raw/").unwrap(),
            ("other".to_string(), "city/b.parquet".to_string())
        );
    }

    #[test]
    fn hidden_and_manifest_names() {
        assert!(is_hidden("_SUCCESS"));
        assert!(is_hidden("city/_manifests/task-00000.json"));
        assert!(is_hidden(".staging/x"));
        assert!(!is_hidden("city/dt=2024-01-01/a.parquet"));
        assert!(is_task_manifest("task-00003.json"));
        assert!(!is_task_manifest("items/city/a.json"));
        assert!(!is_task_manifest("notes.json"));
    }

    #[test]
    fn failed_items_become_facts_not_errors() {
        let bytes = include_bytes!("../../manifest/tests/fixtures/task-00000.json");
        let mut m = TaskManifest::parse(bytes, "gs://b/m0").unwrap();
        let facts = manifest_facts(&m, "gs://b/m0");
        assert!(facts.failed.is_empty());
        assert_eq!(facts.items.values().sum::<usize>(), m.items.len());
        m.complete = false;
        m.items[0].status = ItemStatus::Failed;
        m.items[0].error = Some("https://h/x.csv: HTTP 404".into());
        let facts = manifest_facts(&m, "gs://b/m0");
        assert!(!facts.complete);
        assert_eq!(
            facts.failed,
            [(
                m.items[0].dataset.clone(),
                m.items[0].key.clone(),
                "https://h/x.csv: HTTP 404".to_string()
            )]
        );
    }

    #[test]
    fn a_manifest_set_is_one_full_execution() {
        let o = |i, count, ex: &str| ManifestOrigin {
            url: format!("gs://b/raw/_manifests/task-{i:05}.json"),
            execution: Some(ex.into()),
            task_index: i,
            task_count: count,
        };
        assert_eq!(
            check_manifest_set("p", &[o(0, 2, "e"), o(1, 2, "e")]).unwrap(),
            Some(2)
        );
        // A missing task is for `Completeness` to judge, not an error of the set.
        assert_eq!(
            check_manifest_set("p", &[o(0, 3, "e"), o(2, 3, "e")]).unwrap(),
            Some(3)
        );
        assert_eq!(check_manifest_set("p", &[]).unwrap(), None);
        let err = check_manifest_set("p", &[o(0, 2, "e"), o(1, 3, "old")]).unwrap_err();
        assert!(err.to_string().contains("different extract runs"), "{err}");
        assert!(
            err.to_string().contains("task-00001.json is task 1 of 3"),
            "{err}"
        );
    }
}
