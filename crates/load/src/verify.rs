//! A manifest's entries are claims: before anything loads, each listed object must still exist
//! with the generation the manifest names (a rewritten object would silently load other data
//! under a stale identity).
//!
//! Checking costs one request per object with `HEAD`; extract writes the objects of one run into
//! few directories, so a directory holding many of them is checked with one listing instead
//! (1,000 objects per page on GCS): 10,000 objects cost ~10 requests, not 10,000.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use sluice_storage::ObjectMeta;

use crate::config::LoadConfig;
use crate::errors::LoadError;
use crate::inputs::{SourceObject, Stores};
use crate::plan::WorkItem;

/// From this many objects in one directory, one listing of it is cheaper than a `HEAD` each.
const LIST_FROM: usize = 16;

/// `bucket`, and the key up to its last `/` (the object's directory).
type Dir = (String, String);

fn dir_of(object: &SourceObject) -> Dir {
    let dir = object.key.rfind('/').map_or("", |i| &object.key[..=i]);
    (object.bucket.clone(), dir.to_string())
}

/// Checks every object of `items` (all items at once, `--read-concurrency` requests in flight)
/// and fills in the size and generation the bucket reports.
pub(crate) async fn verify_manifest_objects(
    config: &LoadConfig,
    stores: &Stores,
    mut items: Vec<WorkItem>,
) -> Result<Vec<WorkItem>, LoadError> {
    let mut per_dir: BTreeMap<Dir, usize> = BTreeMap::new();
    for object in items.iter().flat_map(|i| i.objects.iter()) {
        *per_dir.entry(dir_of(object)).or_default() += 1;
    }
    // Never the bucket's root: that listing is the whole bucket.
    let to_list: Vec<Dir> = per_dir
        .into_iter()
        .filter(|((_, dir), n)| *n >= LIST_FROM && !dir.is_empty())
        .map(|(d, _)| d)
        .collect();
    let listings: Vec<Result<(Dir, Vec<ObjectMeta>), LoadError>> = futures::stream::iter(to_list)
        .map(|(bucket, dir)| async move {
            let listed = stores.in_bucket(&bucket).list(&dir).await?;
            Ok(((bucket, dir), listed))
        })
        .buffer_unordered(config.read_concurrency)
        .collect()
        .await;
    let mut listed: HashMap<Dir, HashMap<String, ObjectMeta>> = HashMap::new();
    for listing in listings {
        let (dir, metas) = listing?;
        listed.insert(dir, metas.into_iter().map(|m| (m.key.clone(), m)).collect());
    }

    let objects: Vec<(usize, SourceObject)> = items
        .iter_mut()
        .enumerate()
        .flat_map(|(i, item)| item.objects.drain(..).map(move |o| (i, o)))
        .collect();
    let listed = &listed;
    let checked: Vec<Result<(usize, SourceObject), LoadError>> = futures::stream::iter(objects)
        .map(|(i, object)| async move {
            let meta = match listed.get(&dir_of(&object)) {
                Some(in_dir) => in_dir.get(&object.key).cloned(),
                None => stores.of(&object).head(&object.key).await?,
            };
            Ok((i, checked_against(object, meta)?))
        })
        .buffered(config.read_concurrency)
        .collect()
        .await;
    for result in checked {
        let (i, object) = result?;
        items[i].objects.push(object);
    }
    Ok(items)
}

/// The object as the bucket has it, or why it cannot be loaded.
fn checked_against(
    mut object: SourceObject,
    meta: Option<ObjectMeta>,
) -> Result<SourceObject, LoadError> {
    let Some(meta) = meta else {
        return Err(LoadError::MissingObject {
            url: object.url(),
            manifest: object.listed_in.clone(),
        });
    };
    if let (Some(expected), Some(actual)) = (object.generation, meta.generation)
        && expected != actual
    {
        return Err(LoadError::ObjectChanged {
            url: object.url(),
            manifest: object.listed_in.clone(),
            expected,
            actual,
        });
    }
    object.generation = object.generation.or(meta.generation);
    object.size = Some(meta.size);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::object;

    fn meta(key: &str, generation: i64, size: u64) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size,
            generation: Some(generation),
            crc32c: None,
            metadata: Default::default(),
            content_type: None,
            updated: None,
        }
    }

    #[test]
    fn directories_and_verdicts() {
        assert_eq!(dir_of(&object("raw/city/a.parquet", 1)).1, "raw/city/");
        assert_eq!(dir_of(&object("a.parquet", 1)).1, "");
        let ok = checked_against(
            object("raw/a.parquet", 7),
            Some(meta("raw/a.parquet", 7, 42)),
        )
        .unwrap();
        assert_eq!(ok.size, Some(42));
        let err = checked_against(object("raw/a.parquet", 7), None).unwrap_err();
        assert!(matches!(err, LoadError::MissingObject { .. }), "{err}");
        let err = checked_against(
            object("raw/a.parquet", 7),
            Some(meta("raw/a.parquet", 8, 42)),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                LoadError::ObjectChanged {
                    expected: 7,
                    actual: 8,
                    ..
                }
            ),
            "{err}"
        );
    }
}
