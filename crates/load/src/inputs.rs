//! Finding the objects to load: a glob over a bucket, or the task manifests `extract` wrote.
//!
//! Every task lists the whole input (listing is cheap next to loading) and then keeps its own
//! share of the work items, so tasks agree on the split without talking to each other.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use sluice_storage::{ObjectStore, StoreConfig};

use crate::config::Input;
use crate::errors::LoadError;
use crate::plan::SourceObject;
use crate::template::ObjectVars;

/// Manifests larger than this are refused (they list objects; they are not data).
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

/// What discovery found, plus the open stores (one per bucket) to read footers with.
pub struct Discovered {
    pub objects: Vec<SourceObject>,
    pub stores: Stores,
    /// Keys skipped because a path segment starts with `_` or `.` (`_SUCCESS`, `_manifests/`, ...).
    pub skipped_hidden: usize,
}

/// Open stores by bucket.
#[derive(Default, Clone)]
pub struct Stores {
    config: StoreConfig,
    by_bucket: BTreeMap<String, Arc<dyn ObjectStore>>,
}

impl Stores {
    pub fn new(config: StoreConfig) -> Stores {
        Stores {
            config,
            by_bucket: BTreeMap::new(),
        }
    }

    /// The store for `bucket`, opened on first use.
    pub async fn bucket(&mut self, bucket: &str) -> Result<Arc<dyn ObjectStore>, LoadError> {
        if let Some(store) = self.by_bucket.get(bucket) {
            return Ok(store.clone());
        }
        let (store, _) = sluice_storage::open(&format!("gs://{bucket}"), &self.config).await?;
        self.by_bucket.insert(bucket.to_string(), store.clone());
        Ok(store)
    }

    /// The store for `bucket` if already open.
    pub fn get(&self, bucket: &str) -> Option<Arc<dyn ObjectStore>> {
        self.by_bucket.get(bucket).cloned()
    }
}

/// `gs://bucket/rest` -> (`bucket`, `rest`).
pub fn split_gs_url(url: &str) -> Result<(String, String), LoadError> {
    let rest = url
        .strip_prefix("gs://")
        .ok_or_else(|| LoadError::Input(format!("{url}: not a gs:// URL")))?;
    let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(LoadError::Input(format!("{url}: no bucket")));
    }
    Ok((bucket.to_string(), path.to_string()))
}

/// `_` and `.` segments are Hadoop/Spark/extract bookkeeping (`_SUCCESS`, `_manifests/`,
/// `.staging/`), never data.
fn is_hidden(key: &str) -> bool {
    key.split('/')
        .any(|segment| segment.starts_with('_') || segment.starts_with('.'))
}

/// The glob's literal prefix up to its last `/`: the directory template variables are relative to.
fn glob_base(pattern: &str) -> &str {
    let literal = match pattern.find(['*', '?', '[', '{', '\\']) {
        Some(at) => &pattern[..at],
        None => pattern,
    };
    match literal.rfind('/') {
        Some(i) => &literal[..=i],
        None => "",
    }
}

pub async fn discover(input: &Input, store_config: &StoreConfig) -> Result<Discovered, LoadError> {
    let mut stores = Stores::new(store_config.clone());
    match input {
        Input::Glob(url) => {
            let (bucket, pattern) = split_gs_url(url)?;
            let store = stores.bucket(&bucket).await?;
            let listed = sluice_storage::list_glob(store.as_ref(), &pattern).await?;
            let base = glob_base(&pattern);
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
                    listed_in: url.clone(),
                });
            }
            Ok(Discovered {
                objects,
                stores,
                skipped_hidden,
            })
        }
        Input::Manifests(url) => {
            let (bucket, prefix) = split_gs_url(url)?;
            let store = stores.bucket(&bucket).await?;
            let listed = store.list(&prefix).await?;
            let manifests: Vec<_> = listed
                .into_iter()
                .filter(|m| is_task_manifest(m.key.strip_prefix(&prefix).unwrap_or(&m.key)))
                .collect();
            if manifests.is_empty() {
                return Err(LoadError::Input(format!(
                    "no task manifests (task-NNNNN.json) under {url}"
                )));
            }
            // Template variables are relative to the extract destination the manifests sit in.
            let base = prefix
                .trim_end_matches('/')
                .strip_suffix("_manifests")
                .unwrap_or("")
                .to_string();
            let mut objects = Vec::new();
            let mut headers = Vec::new();
            for manifest in manifests {
                let manifest_url = store.url_of(&manifest.key);
                let bytes = sluice_storage::read_to_bytes(
                    store.as_ref(),
                    &manifest.key,
                    MAX_MANIFEST_BYTES,
                )
                .await?;
                let parsed = parse_manifest(&bytes, &manifest_url)?;
                if let Some(header) = parsed.header {
                    headers.push((manifest_url.clone(), header));
                }
                for entry in parsed.entries {
                    let (bucket, key) = resolve_entry_url(&entry.url, &bucket, &base);
                    objects.push(SourceObject {
                        vars: ObjectVars::from_key(&key, &base, entry.dataset.clone()),
                        bucket,
                        key,
                        generation: entry.generation,
                        size: entry.size,
                        listed_in: manifest_url.clone(),
                    });
                }
            }
            check_manifest_set(url, &headers)?;
            Ok(Discovered {
                objects,
                stores,
                skipped_hidden: 0,
            })
        }
    }
}

/// `task-00003.json` directly under the manifest prefix (not the per-item receipts in subdirectories).
fn is_task_manifest(name: &str) -> bool {
    !name.contains('/') && name.starts_with("task-") && name.ends_with(".json")
}

/// An absolute `gs://` URL, or a key relative to the extract destination.
fn resolve_entry_url(url: &str, bucket: &str, base: &str) -> (String, String) {
    match split_gs_url(url) {
        Ok((b, k)) => (b, k),
        Err(_) => (
            bucket.to_string(),
            format!("{base}{}", url.trim_start_matches('/')),
        ),
    }
}

/// One object a manifest lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    pub url: String,
    pub generation: Option<i64>,
    pub size: Option<u64>,
    pub dataset: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Text(String),
}

impl Number {
    fn value(&self) -> Option<i64> {
        match self {
            Number::Int(i) => Some(*i),
            Number::Text(t) => t.trim().parse().ok(),
        }
    }
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(alias = "uri")]
    url: Option<String>,
    #[serde(alias = "name")]
    key: Option<String>,
    generation: Option<Number>,
    #[serde(alias = "bytes")]
    size: Option<Number>,
    dataset: Option<String>,
}

#[derive(Deserialize)]
struct RawItem {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    objects: Vec<RawEntry>,
}

/// `sluice extract`'s task manifest (see docs/extract.md), or a plain `{"objects": [...]}` list.
#[derive(Deserialize)]
struct RawManifest {
    kind: Option<String>,
    version: Option<u32>,
    execution: Option<String>,
    task_index: Option<u32>,
    task_count: Option<u32>,
    complete: Option<bool>,
    #[serde(default)]
    items: Vec<RawItem>,
    #[serde(default, alias = "outputs")]
    objects: Vec<RawEntry>,
    dataset: Option<String>,
}

/// The kind `sluice extract` writes.
pub const EXTRACT_MANIFEST_KIND: &str = "sluice.extract.task-manifest";

/// Which task of which extract execution wrote a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHeader {
    pub execution: Option<String>,
    pub task_index: u32,
    pub task_count: u32,
}

/// A parsed manifest: its header (extract's format) and the objects it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub header: Option<ManifestHeader>,
    pub entries: Vec<ManifestEntry>,
}

/// Parses a task manifest. `sluice extract`'s format (`kind` `sluice.extract.task-manifest`,
/// version 1) lists `items[].objects[]` with `url`, `generation`, `size`, `dataset`; a manifest
/// that is not `complete` (its extract task failed part of its share) is refused, since loading
/// it with `--write truncate` would replace a table with part of its data. A plain
/// `{"objects": [...]}` list is accepted too, for inputs not written by extract.
pub fn parse_manifest(bytes: &[u8], url: &str) -> Result<Manifest, LoadError> {
    let fail = |reason: String| LoadError::Manifest {
        url: url.to_string(),
        reason,
    };
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|e| fail(format!("not a task manifest: {e}")))?;
    let mut header = None;
    let raw_entries: Vec<RawEntry> = match raw.kind.as_deref() {
        Some(EXTRACT_MANIFEST_KIND) => {
            if raw.version != Some(1) {
                return Err(fail(format!(
                    "manifest version {:?} is not supported (this sluice reads version 1)",
                    raw.version
                )));
            }
            if raw.complete != Some(true) {
                return Err(fail(
                    "the manifest is not complete: its extract task failed part of its share; \
                     rerun extract before loading"
                        .into(),
                ));
            }
            if raw
                .items
                .iter()
                .any(|i| i.status.as_deref() == Some("failed"))
            {
                return Err(fail("the manifest lists a failed item".into()));
            }
            header = Some(ManifestHeader {
                execution: raw.execution.clone(),
                task_index: raw.task_index.unwrap_or_default(),
                task_count: raw.task_count.unwrap_or(1),
            });
            raw.items.into_iter().flat_map(|i| i.objects).collect()
        }
        Some(other) => return Err(fail(format!("unknown manifest kind {other:?}"))),
        None => raw.objects,
    };
    let entries = raw_entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let url = e
                .url
                .or(e.key)
                .ok_or_else(|| fail(format!("object {} has neither `url` nor `key`", i + 1)))?;
            Ok(ManifestEntry {
                url,
                generation: e.generation.as_ref().and_then(Number::value),
                size: e
                    .size
                    .as_ref()
                    .and_then(Number::value)
                    .and_then(|s| u64::try_from(s).ok()),
                dataset: e.dataset.or_else(|| raw.dataset.clone()),
            })
        })
        .collect::<Result<Vec<_>, LoadError>>()?;
    Ok(Manifest { header, entries })
}

/// extract's manifests under one prefix must be one execution's full set: every task index
/// `0..task_count` present, one `task_count`, one execution. A missing task (it failed and
/// wrote nothing) or a stale manifest from an older run with more tasks would otherwise load
/// part of the data, or old data, without a word.
pub fn check_manifest_set(
    prefix: &str,
    headers: &[(String, ManifestHeader)],
) -> Result<(), LoadError> {
    let Some((first_url, first)) = headers.first() else {
        return Ok(());
    };
    for (url, h) in headers {
        if h.task_count != first.task_count || h.execution != first.execution {
            return Err(LoadError::Input(format!(
                "{prefix}: manifests from different extract runs: {first_url} is task {} of {} \
                 (execution {:?}), {url} is task {} of {} (execution {:?}); remove the stale ones",
                first.task_index,
                first.task_count,
                first.execution,
                h.task_index,
                h.task_count,
                h.execution
            )));
        }
    }
    let present: BTreeMap<u32, &String> = headers.iter().map(|(u, h)| (h.task_index, u)).collect();
    let missing: Vec<String> = (0..first.task_count)
        .filter(|i| !present.contains_key(i))
        .map(|i| format!("task-{i:05}.json"))
        .collect();
    if !missing.is_empty() {
        return Err(LoadError::Input(format!(
            "{prefix}: extract ran {} task(s) but {} wrote no manifest ({}); its data would be missing",
            first.task_count,
            missing.len(),
            missing.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_bases() {
        assert_eq!(
            split_gs_url("gs://b/raw/x").unwrap(),
            ("b".to_string(), "raw/x".to_string())
        );
        assert_eq!(split_gs_url("gs://b").unwrap(), ("b".into(), "".into()));
        assert!(split_gs_url("s3://b/x").is_err());
        assert_eq!(glob_base("raw/**/*.parquet"), "raw/");
        assert_eq!(glob_base("raw/part-*.csv"), "raw/");
        assert_eq!(glob_base("*.csv"), "");
        assert_eq!(glob_base("raw/exact.csv"), "raw/");
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
    fn extract_manifests_and_their_set() {
        let manifest = |index: u32, complete: bool| {
            serde_json::json!({
                "kind": EXTRACT_MANIFEST_KIND, "version": 1, "execution": "ex-1",
                "task_index": index, "task_count": 2, "complete": complete,
                "items": [{"status": "extracted", "objects": [
                    {"name": "raw/city/a.parquet", "url": "gs://b/raw/city/a.parquet",
                     "dataset": "city", "size": 10, "generation": 17, "rows": 3}]}]
            })
            .to_string()
        };
        let parsed = parse_manifest(manifest(0, true).as_bytes(), "gs://b/m0").unwrap();
        assert_eq!(parsed.entries[0].url, "gs://b/raw/city/a.parquet");
        assert_eq!(parsed.entries[0].generation, Some(17));
        assert_eq!(parsed.entries[0].dataset.as_deref(), Some("city"));
        let err = parse_manifest(manifest(1, false).as_bytes(), "gs://b/m1").unwrap_err();
        assert!(
            err.to_string()
                .contains("gs://b/m1: the manifest is not complete"),
            "{err}"
        );

        let h = |i, count, ex: &str| ManifestHeader {
            execution: Some(ex.into()),
            task_index: i,
            task_count: count,
        };
        check_manifest_set(
            "p",
            &[("a".into(), h(0, 2, "e")), ("b".into(), h(1, 2, "e"))],
        )
        .unwrap();
        let err = check_manifest_set(
            "p",
            &[("a".into(), h(0, 3, "e")), ("b".into(), h(2, 3, "e"))],
        )
        .unwrap_err();
        assert!(err.to_string().contains("task-00001.json"), "{err}");
        let err = check_manifest_set(
            "p",
            &[("a".into(), h(0, 2, "e")), ("b".into(), h(1, 3, "old"))],
        )
        .unwrap_err();
        assert!(err.to_string().contains("different extract runs"), "{err}");
    }

    #[test]
    fn manifest_entries() {
        let entries = parse_manifest(
            br#"{"objects":[
                {"url":"gs://b/raw/city/a.parquet","generation":"17","size":10,"dataset":"city"},
                {"key":"city/b.parquet","generation":18,"bytes":"20"}],
               "dataset":"fallback"}"#,
            "gs://b/raw/_manifests/task-00000.json",
        )
        .unwrap()
        .entries;
        assert_eq!(entries[0].generation, Some(17));
        assert_eq!(entries[0].size, Some(10));
        assert_eq!(entries[1].url, "city/b.parquet");
        assert_eq!(entries[1].dataset.as_deref(), Some("fallback"));
        assert_eq!(
            resolve_entry_url(&entries[1].url, "b", "raw/"),
            ("b".to_string(), "raw/city/b.parquet".to_string())
        );
        let err = parse_manifest(br#"{"objects":[{}]}"#, "gs://b/m.json").unwrap_err();
        assert!(err.to_string().contains("gs://b/m.json"), "{err}");
        let err = parse_manifest(b"[]", "gs://b/m.json").unwrap_err();
        assert!(err.to_string().contains("not a task manifest"), "{err}");
    }
}
