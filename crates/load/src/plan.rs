//! Stage 2, plan: objects -> work items, and this task's share of them.
//!
//! A *work item* is every object bound for one destination (a table, or one partition of it
//! with a `$` decorator), found by filling the `--table` template per object. One item is one
//! load job: BigQuery applies a job atomically, so a `WRITE_TRUNCATE` of a table or partition
//! from many files replaces it exactly once. Items, not objects, are what tasks share: two
//! tasks never write the same destination.

use std::collections::BTreeMap;

use sluice_runtime::{TaskContext, shard};

use crate::config::LoadConfig;
use crate::errors::LoadError;
use crate::inputs::SourceObject;
use crate::template::{TableRef, TableTemplate};

/// Everything bound for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkItem {
    pub(crate) destination: TableRef,
    /// Sorted by URL, no duplicates.
    pub(crate) objects: Vec<SourceObject>,
    /// `--job-per-object`: this item is one object of a destination with others.
    pub(crate) per_object: bool,
}

impl WorkItem {
    /// The stable key tasks shard on: the full destination.
    /// Unique per item: the destination, plus the object when items are one object each.
    pub(crate) fn shard_key(&self) -> String {
        match self.objects.as_slice() {
            [only] if self.per_object => format!("{}\n{}", self.destination, only.url()),
            _ => self.destination.to_string(),
        }
    }

    pub(crate) fn total_bytes(&self) -> u64 {
        self.objects.iter().filter_map(|o| o.size).sum()
    }
}

/// Fills the template for every object and groups objects by destination, sorted.
///
/// The same object listed twice (two manifests naming one object) is kept once; listed twice
/// with different generations it is an error, since one of the listings is stale.
pub(crate) fn group(
    objects: Vec<SourceObject>,
    template: &TableTemplate,
) -> Result<Vec<WorkItem>, LoadError> {
    let mut by_destination: BTreeMap<TableRef, BTreeMap<String, SourceObject>> = BTreeMap::new();
    for object in objects {
        let destination = template
            .render(&object.vars)
            .map_err(|reason| LoadError::Template {
                object: object.url(),
                template: template.to_string(),
                reason,
            })?;
        let entry = by_destination.entry(destination).or_default();
        match entry.get(&object.url()) {
            Some(seen) if seen.generation != object.generation => {
                return Err(LoadError::ConflictingListings {
                    url: object.url(),
                    first_generation: seen.generation,
                    first_listed_in: seen.listed_in.clone(),
                    generation: object.generation,
                    listed_in: object.listed_in,
                });
            }
            Some(_) => {}
            None => {
                entry.insert(object.url(), object);
            }
        }
    }
    Ok(by_destination
        .into_iter()
        .map(|(destination, objects)| WorkItem {
            destination,
            objects: objects.into_values().collect(),
            per_object: false,
        })
        .collect())
}

/// `--job-per-object`: one item (one job, one id) per object, so an append over an input that
/// grows between runs loads each object exactly once: an object's id depends on it alone.
pub(crate) fn split_per_object(items: Vec<WorkItem>) -> Vec<WorkItem> {
    items
        .into_iter()
        .flat_map(|item| {
            let destination = item.destination;
            item.objects.into_iter().map(move |object| WorkItem {
                destination: destination.clone(),
                objects: vec![object],
                per_object: true,
            })
        })
        .collect()
}

/// What the whole input comes to, and the part of it this task loads.
pub(crate) struct Plan {
    /// Objects found by every task's shared listing.
    pub(crate) objects_total: usize,
    /// Work items (destinations) across all tasks.
    pub(crate) items_total: usize,
    /// This task's items, in destination order.
    pub(crate) mine: Vec<WorkItem>,
}

/// Groups `objects` into work items and takes this task's share of them.
pub(crate) fn plan(
    objects: Vec<SourceObject>,
    config: &LoadConfig,
    task: &TaskContext,
) -> Result<Plan, LoadError> {
    let objects_total = objects.len();
    let mut items = group(objects, &config.table)?;
    if config.job_per_object {
        items = split_per_object(items);
    }
    let items_total = items.len();
    let mine = shard::take_share(
        items,
        WorkItem::shard_key,
        task.index,
        task.count,
        config.shard_strategy,
    );
    Ok(Plan {
        objects_total,
        items_total,
        mine,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::template::ObjectVars;

    /// An object under `gs://b/raw/`, as discovery lists it (shared with spec's tests).
    pub(crate) fn object(key: &str, generation: i64) -> SourceObject {
        SourceObject {
            bucket: "b".into(),
            key: key.into(),
            generation: Some(generation),
            size: Some(100),
            listed_in: "gs://b/raw/**".into(),
            vars: ObjectVars::from_key(key, "raw/", None),
            cursor_column: None,
            recorded: None,
        }
    }

    #[test]
    fn groups_by_destination_sorted_and_deduplicated() {
        let t = TableTemplate::parse("p.ds.{dataset}${dt}").unwrap();
        let items = group(
            vec![
                object("raw/b/dt=2024-01-02/x.parquet", 1),
                object("raw/a/dt=2024-01-01/y.parquet", 1),
                object("raw/a/dt=2024-01-01/x.parquet", 1),
                object("raw/a/dt=2024-01-01/x.parquet", 1),
            ],
            &t,
        )
        .unwrap();
        let keys: Vec<String> = items.iter().map(WorkItem::shard_key).collect();
        assert_eq!(keys, ["p.ds.a$20240101", "p.ds.b$20240102"]);
        let urls: Vec<String> = items[0].objects.iter().map(SourceObject::url).collect();
        assert_eq!(
            urls,
            [
                "gs://b/raw/a/dt=2024-01-01/x.parquet",
                "gs://b/raw/a/dt=2024-01-01/y.parquet"
            ]
        );
        let err = group(
            vec![object("raw/a/dt=1/x", 1), object("raw/a/dt=1/x", 2)],
            &TableTemplate::parse("p.ds.t").unwrap(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("different generations"), "{err}");
        let err = group(vec![object("raw/x.parquet", 1)], &t).unwrap_err();
        assert!(err.to_string().contains("gs://b/raw/x.parquet"), "{err}");
    }

    #[test]
    fn per_object_items_are_one_object_each() {
        let t = TableTemplate::parse("p.ds.t").unwrap();
        let items = split_per_object(
            group(
                vec![object("raw/a.parquet", 1), object("raw/b.parquet", 1)],
                &t,
            )
            .unwrap(),
        );
        let keys: Vec<String> = items.iter().map(WorkItem::shard_key).collect();
        assert_eq!(
            keys,
            [
                "p.ds.t\ngs://b/raw/a.parquet",
                "p.ds.t\ngs://b/raw/b.parquet"
            ]
        );
    }
}
