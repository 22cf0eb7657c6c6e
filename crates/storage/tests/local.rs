//! Local-backend specifics: its hidden files, keys that would escape the root, files written
//! by other tools, and stale sidecars.

mod support;

use bytes::Bytes;
use sluice_runtime::CancellationToken;
use sluice_storage::{LocalStore, ObjectStore, StorageError, WriteOptions, write_bytes};
use support::files_under;

fn store() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path(), CancellationToken::new());
    (dir, store)
}

#[tokio::test]
async fn keys_cannot_escape_the_root_or_clash_with_internal_files() {
    let (_dir, store) = store();
    for bad in [
        "../x",
        "a/../../x",
        "/abs",
        "a//b",
        "",
        "a/.b.sluice-meta.json",
        ".x.sluice-tmp-1",
    ] {
        match store.writer(bad, WriteOptions::default()).await {
            Err(StorageError::InvalidLocation { url, reason }) => {
                assert!(url.starts_with("file://"), "{url}");
                assert!(!reason.is_empty());
            }
            Err(e) => panic!("{bad:?}: {e:?}"),
            Ok(_) => panic!("{bad:?} accepted"),
        }
        assert!(store.head(bad).await.is_err(), "{bad:?}");
    }
    assert!(store.list("../").await.is_err());
}

#[tokio::test]
async fn internal_files_are_hidden_and_sidecars_hold_metadata() {
    let (dir, store) = store();
    let options = WriteOptions {
        metadata: [("k".to_string(), "v".to_string())].into(),
        content_type: Some("text/plain".into()),
        ..WriteOptions::default()
    };
    write_bytes(&store, "a/b.txt", Bytes::from_static(b"hello"), options)
        .await
        .unwrap();
    let mut pending = store
        .writer("a/c.txt", WriteOptions::default())
        .await
        .unwrap();
    pending.write(Bytes::from_static(b"half")).await.unwrap();
    let files = files_under(dir.path());
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files.contains(&"a/b.txt".to_string()));
    assert!(files.contains(&"a/.b.txt.sluice-meta.json".to_string()));
    assert!(files.iter().any(|f| f.starts_with("a/.c.txt.sluice-tmp-")));
    let listed = store.list("").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, "a/b.txt");
    assert_eq!(listed[0].metadata["k"], "v");
    assert_eq!(listed[0].crc32c, Some(crc32c::crc32c(b"hello")));
    drop(pending);
    store.delete("a/b.txt").await.unwrap();
    assert!(files_under(dir.path()).is_empty());
}

#[tokio::test]
async fn foreign_files_and_stale_sidecars() {
    let (dir, store) = store();
    // Written by another tool: listed, no crc32c or metadata known.
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/foreign.csv"), b"a,b\n").unwrap();
    let head = store.head("in/foreign.csv").await.unwrap().unwrap();
    assert_eq!((head.size, head.crc32c), (4, None));
    assert!(head.metadata.is_empty());
    assert_eq!(store.list("in/").await.unwrap().len(), 1);
    // A sidecar that does not describe the data next to it (size differs) is ignored.
    write_bytes(
        &store,
        "in/x",
        Bytes::from_static(b"12345"),
        WriteOptions {
            metadata: [("k".to_string(), "v".to_string())].into(),
            ..WriteOptions::default()
        },
    )
    .await
    .unwrap();
    std::fs::write(dir.path().join("in/x"), b"123").unwrap();
    let head = store.head("in/x").await.unwrap().unwrap();
    assert_eq!((head.size, head.crc32c), (3, None));
    assert!(head.metadata.is_empty());
    // A directory is not an object.
    assert_eq!(store.head("in").await.unwrap(), None);
    assert!(matches!(
        store.read("in", None).await,
        Err(StorageError::NotFound { .. })
    ));
}

#[tokio::test]
async fn root_is_created_on_first_write_and_absent_root_lists_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("not/yet"), CancellationToken::new());
    assert!(store.list("").await.unwrap().is_empty());
    assert_eq!(store.head("x").await.unwrap(), None);
    write_bytes(
        &store,
        "deep/er/x",
        Bytes::from_static(b"x"),
        WriteOptions::default(),
    )
    .await
    .unwrap();
    assert!(dir.path().join("not/yet/deep/er/x").is_file());
    assert_eq!(
        store.root_url(),
        format!("file://{}/not/yet", dir.path().display())
    );
}
