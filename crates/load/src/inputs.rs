//! Stage 1, discover: the input (a glob over a bucket, or the task manifests `extract` wrote)
//! -> the objects to load.
//!
//! Every task lists the whole input (listing is cheap next to loading) and then keeps its own
//! share of the work items (`plan.rs`), so tasks agree on the split without talking to each
//! other. Manifests are read through `sluice-manifest`, the format extract writes with.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_manifest::{AnyManifest, ItemStatus, ListedObject, TaskManifest};
use sluice_storage::{Location, ObjectStore, StoreConfig};

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

/// What discovery found, plus the open stores (one per bucket) later stages read with.
pub(crate) struct Discovered {
    pub(crate) objects: Vec<SourceObject>,
    pub(crate) stores: Stores,
    /// Whether the objects are a manifest's claims (checked against the bucket in `prepare`).
    pub(crate) from_manifests: bool,
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
        self.by_bucket
            .get(&object.bucket)
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
    let (input, objects, from_manifests) = match &config.input {
        Input::Glob(url) => (url, list_glob(url, &mut stores).await?, false),
        Input::Manifests(url) => (url, read_manifests(url, &mut stores).await?, true),
    };
    if objects.is_empty() && !config.allow_empty {
        return Err(LoadError::NoObjects {
            input: input.clone(),
        });
    }
    Ok(Discovered {
        objects,
        stores,
        from_manifests,
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

async fn read_manifests(url: &str, stores: &mut Stores) -> Result<Vec<SourceObject>, LoadError> {
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
    for manifest in manifests {
        let manifest_url = store.url_of(&manifest.key);
        let bytes =
            sluice_storage::read_to_bytes(store.as_ref(), &manifest.key, MAX_MANIFEST_BYTES)
                .await?;
        // Either form comes down to the objects it lists.
        let listed: Vec<(ListedObject, Option<String>)> =
            match sluice_manifest::parse_any(&bytes, &manifest_url)? {
                AnyManifest::Task(task) => {
                    check_complete(&task, &manifest_url)?;
                    origins.push(ManifestOrigin {
                        url: manifest_url.clone(),
                        execution: task.execution.clone(),
                        task_index: task.task_index,
                        task_count: task.task_count,
                    });
                    task.items
                        .into_iter()
                        .flat_map(|item| {
                            let cursor = item.source.cursor.and_then(|c| c.column);
                            item.objects.into_iter().map(move |o| {
                                let listed = ListedObject {
                                    url: o.url,
                                    generation: o.generation,
                                    size: Some(o.size),
                                    dataset: Some(o.dataset),
                                };
                                (listed, cursor.clone())
                            })
                        })
                        .collect()
                }
                AnyManifest::Objects(list) => list.objects.into_iter().map(|o| (o, None)).collect(),
            };
        for (entry, cursor_column) in listed {
            let (bucket, key) = resolve_entry_url(&entry.url, &bucket, &base)?;
            objects.push(SourceObject {
                vars: ObjectVars::from_key(&key, &base, entry.dataset),
                bucket,
                key,
                generation: entry.generation,
                size: entry.size,
                listed_in: manifest_url.clone(),
                cursor_column,
            });
        }
    }
    check_manifest_set(url, &origins)?;
    Ok(objects)
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

/// A manifest whose extract task failed part of its share is refused: loading it with
/// `--write truncate` would replace a table with part of its data.
fn check_complete(manifest: &TaskManifest, url: &str) -> Result<(), LoadError> {
    if !manifest.complete {
        return Err(LoadError::IncompleteManifest {
            url: url.to_string(),
        });
    }
    if let Some(item) = manifest
        .items
        .iter()
        .find(|i| i.status == ItemStatus::Failed)
    {
        return Err(LoadError::FailedItem {
            url: url.to_string(),
            key: item.key.clone(),
        });
    }
    Ok(())
}

/// extract's manifests under one prefix must be one execution's full set: every task index
/// `0..task_count` present, one `task_count`, one execution. A missing task (it failed and
/// wrote nothing) or a stale manifest from an older run with more tasks would otherwise load
/// part of the data, or old data, without a word.
fn check_manifest_set(prefix: &str, origins: &[ManifestOrigin]) -> Result<(), LoadError> {
    let Some(first) = origins.first() else {
        return Ok(());
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
    let present: BTreeMap<u32, &String> = origins.iter().map(|o| (o.task_index, &o.url)).collect();
    let missing: Vec<String> = (0..first.task_count)
        .filter(|i| !present.contains_key(i))
        .map(|i| format!("task-{i:05}.json"))
        .collect();
    if !missing.is_empty() {
        return Err(LoadError::MissingManifests {
            prefix: prefix.to_string(),
            task_count: first.task_count,
            missing,
        });
    }
    Ok(())
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

    fn manifest(complete: bool, failed: bool) -> TaskManifest {
        let bytes = include_bytes!("../../manifest/tests/fixtures/task-00000.json");
        let mut m = TaskManifest::parse(bytes, "gs://b/m0").unwrap();
        m.complete = complete;
        if failed {
            m.items[0].status = ItemStatus::Failed;
        }
        m
    }

    #[test]
    fn incomplete_manifests_and_failed_items_are_refused() {
        check_complete(&manifest(true, false), "gs://b/m0").unwrap();
        let err = check_complete(&manifest(false, false), "gs://b/m1").unwrap_err();
        assert!(
            err.to_string()
                .contains("gs://b/m1: the manifest is not complete"),
            "{err}"
        );
        let err = check_complete(&manifest(true, true), "gs://b/m2").unwrap_err();
        assert!(err.to_string().contains("lists a failed item"), "{err}");
    }

    #[test]
    fn a_manifest_set_is_one_full_execution() {
        let o = |i, count, ex: &str| ManifestOrigin {
            url: format!("gs://b/raw/_manifests/task-{i:05}.json"),
            execution: Some(ex.into()),
            task_index: i,
            task_count: count,
        };
        check_manifest_set("p", &[o(0, 2, "e"), o(1, 2, "e")]).unwrap();
        let err = check_manifest_set("p", &[o(0, 3, "e"), o(2, 3, "e")]).unwrap_err();
        assert!(err.to_string().contains("task-00001.json"), "{err}");
        let err = check_manifest_set("p", &[o(0, 2, "e"), o(1, 3, "old")]).unwrap_err();
        assert!(err.to_string().contains("different extract runs"), "{err}");
        assert!(
            err.to_string().contains("task-00001.json is task 1 of 3"),
            "{err}"
        );
    }
}
