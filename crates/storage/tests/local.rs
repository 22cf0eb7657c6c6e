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

/// A process killed mid-write (SIGKILL: no destructor runs) leaves its temp file. The next
/// process of the same owner (the retried task) removes it when it first writes to that
/// directory; temp files of other owners (tasks writing the same directory concurrently) and
/// locked ones (live writers, even of the same owner) stay.
#[tokio::test]
async fn stale_temp_files_of_the_same_owner_are_swept_by_the_next_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("raw");
    std::fs::create_dir_all(out.join("other")).unwrap();
    let plant = |name: &str| {
        let path = out.join(name);
        std::fs::write(&path, b"partial").unwrap();
        path
    };
    // What a killed attempt of task 3 left (another run id than this process's).
    let stale = plant(".a.csv.sluice-tmp-task-00003.0badc0de.00000001");
    let stale_sidecar = plant("..a.csv.sluice-meta.json.sluice-tmp-task-00003.0badc0de.00000002");
    // Task 4 is writing into the same directory right now, and has a dead file too.
    let live_other = plant(".b.csv.sluice-tmp-task-00004.12345678.00000003");
    let live_other_lock = std::fs::OpenOptions::new()
        .write(true)
        .open(&live_other)
        .unwrap();
    live_other_lock.try_lock().unwrap();
    let dead_other = plant(".c.csv.sluice-tmp-task-00004.12345678.00000004");
    // A second live process under the same owner (two local runs without a task index).
    let live_same = plant(".d.csv.sluice-tmp-task-00003.87654321.00000005");
    let live_same_lock = std::fs::OpenOptions::new()
        .write(true)
        .open(&live_same)
        .unwrap();
    live_same_lock.try_lock().unwrap();
    // In a directory this attempt does not write to: left alone (documented).
    let elsewhere = out.join("other/.x.csv.sluice-tmp-task-00003.0badc0de.00000006");
    std::fs::write(&elsewhere, b"partial").unwrap();

    let store =
        LocalStore::new(dir.path(), CancellationToken::new()).with_temp_owner(Some("task-00003"));
    let mut writer = store
        .writer("raw/a.csv", WriteOptions::default())
        .await
        .unwrap();
    assert!(
        !stale.exists(),
        "the stale temp file of task 3 is still there"
    );
    assert!(!stale_sidecar.exists());
    for kept in [&live_other, &dead_other, &live_same, &elsewhere] {
        assert!(kept.exists(), "{} was removed", kept.display());
    }
    // This attempt's own temp file carries the owner and is not swept by a second writer.
    let own: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".a.csv.sluice-tmp-task-00003."))
        .collect();
    assert_eq!(own.len(), 1, "{own:?}");
    let mut second = store
        .writer("raw/e.csv", WriteOptions::default())
        .await
        .unwrap();
    assert!(out.join(&own[0]).exists());
    writer.write(Bytes::from_static(b"x,y\n")).await.unwrap();
    writer.commit().await.unwrap();
    second.write(Bytes::from_static(b"1\n")).await.unwrap();
    second.commit().await.unwrap();
    assert_eq!(std::fs::read(out.join("a.csv")).unwrap(), b"x,y\n");

    // Once task 4's writer is gone (its lock released), task 4's next attempt sweeps both
    // of its files; task 3's live one stays.
    drop(live_other_lock);
    let task4 =
        LocalStore::new(dir.path(), CancellationToken::new()).with_temp_owner(Some("task-00004"));
    // This process already swept `raw` for task 3, not for task 4.
    drop(
        task4
            .writer("raw/f.csv", WriteOptions::default())
            .await
            .unwrap(),
    );
    assert!(!live_other.exists() && !dead_other.exists());
    assert!(live_same.exists());
}

/// Without an owner (a library caller that sets none) nothing is swept.
#[tokio::test]
async fn stores_without_an_owner_sweep_nothing() {
    let (dir, store) = store();
    std::fs::create_dir_all(dir.path().join("d")).unwrap();
    let stale = dir
        .path()
        .join("d/.a.sluice-tmp-task-00000.0badc0de.00000001");
    std::fs::write(&stale, b"x").unwrap();
    drop(store.writer("d/a", WriteOptions::default()).await.unwrap());
    assert!(stale.exists());
}
