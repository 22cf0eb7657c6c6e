//! `ObjectStore::write_if_generation`: a generation-matched overwrite (GCS `ifGenerationMatch`)
//! on both backends, local directories and fake-gcs-server, and the read-modify-write loop it
//! exists for.

mod support;

use std::collections::BTreeMap;

use bytes::Bytes;
use sluice_storage::{ObjectStore, StorageError, WriteOptions};
use support::{Fixture, files_under, read_all};

fn options() -> WriteOptions {
    WriteOptions {
        metadata: BTreeMap::from([("sluice-kind".to_string(), "test".to_string())]),
        content_type: Some("application/json".into()),
        ..WriteOptions::default()
    }
}

async fn generation_matched_overwrite(fx: Fixture) {
    let store = fx.store.as_ref();
    // 0 = only if absent.
    let first = store
        .write_if_generation("s/state.json", Bytes::from_static(b"one"), 0, options())
        .await
        .unwrap();
    let g1 = first
        .generation
        .expect("a conditional write reports its generation");
    let head = store.head("s/state.json").await.unwrap().unwrap();
    assert_eq!(head.generation, Some(g1));
    assert_eq!(head.metadata, options().metadata);
    assert_eq!(head.content_type.as_deref(), Some("application/json"));
    assert_eq!(head.crc32c, Some(crc32c::crc32c(b"one")));

    // Absent-only fails once it exists, naming the object; nothing changes.
    let err = store
        .write_if_generation("s/state.json", Bytes::from_static(b"two"), 0, options())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::PreconditionFailed { expected: 0, url } if url == &store.url_of("s/state.json")),
        "{err:?}"
    );
    assert!(err.to_string().contains("expected generation 0"), "{err}");

    // The right generation replaces it and moves the generation on.
    let second = store
        .write_if_generation("s/state.json", Bytes::from_static(b"two"), g1, options())
        .await
        .unwrap();
    let g2 = second.generation.unwrap();
    assert!(g2 > g1, "{g2} after {g1}");
    assert_eq!(read_all(store, "s/state.json", None).await, b"two");

    // A stale generation fails and leaves the newer content.
    let err = store
        .write_if_generation("s/state.json", Bytes::from_static(b"three"), g1, options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::PreconditionFailed { expected, .. } if expected == g1),
        "{err:?}"
    );
    assert_eq!(read_all(store, "s/state.json", None).await, b"two");
    // A generation for an object that does not exist fails too.
    let err = store
        .write_if_generation("s/other.json", Bytes::from_static(b"x"), g2, options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::PreconditionFailed { .. }),
        "{err:?}"
    );
    assert!(store.head("s/other.json").await.unwrap().is_none());

    // The lock and temp files stay hidden from listings and leave no temp data behind.
    let listed: Vec<String> = store
        .list("s/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, ["s/state.json"]);
    let files = files_under(&fx.disk_root());
    assert!(
        files
            .iter()
            .all(|f| !f.contains("sluice-tmp-") || f.ends_with("sluice-tmp-lock")),
        "{files:?}"
    );
}

/// The loop `sluice load` runs on the state file: head, read, change, write at that
/// generation, and start over on a precondition failure. Writers racing on one object
/// lose no update.
async fn read_modify_write(store: &dyn ObjectStore, key: &str) -> u32 {
    let mut conflicts = 0;
    loop {
        let (current, generation) = match store.head(key).await.unwrap() {
            None => (0u64, 0),
            Some(meta) => {
                let bytes = sluice_storage::read_to_bytes(store, key, 1024)
                    .await
                    .unwrap();
                let n: u64 = std::str::from_utf8(&bytes).unwrap().parse().unwrap();
                (
                    n,
                    meta.generation
                        .expect("written conditionally, so it has one"),
                )
            }
        };
        let next = Bytes::from((current + 1).to_string());
        match store
            .write_if_generation(key, next, generation, options())
            .await
        {
            Ok(_) => return conflicts,
            Err(StorageError::PreconditionFailed { .. }) => conflicts += 1,
            Err(e) => panic!("{e}"),
        }
    }
}

async fn racing_writers_lose_no_update(fx: Fixture) {
    let store = fx.store.clone();
    let writers = 4;
    let rounds = 5;
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut conflicts = 0;
                for _ in 0..rounds {
                    conflicts += read_modify_write(store.as_ref(), "race/counter").await;
                }
                conflicts
            })
        })
        .collect();
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let bytes = read_all(store.as_ref(), "race/counter", None).await;
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        (writers * rounds).to_string(),
        "{conflicts} conflicts were retried"
    );
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(super::support::local().await).await })*
        }
        mod gcs {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(super::support::gcs().await).await })*
        }
    };
}

suite!(generation_matched_overwrite, racing_writers_lose_no_update);
