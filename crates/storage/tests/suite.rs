//! The behaviours every backend must have, run against the local filesystem and against
//! fake-gcs-server (with 256 KiB upload chunks so a few MiB span many chunks).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use sluice_storage::{StorageError, WriteOptions, list_glob};
use support::{CHUNK, Fixture, data, files_under, read_all};

/// Writes `payload` in uneven pieces (so pieces straddle chunk boundaries).
async fn write_in_pieces(
    fx: &Fixture,
    key: &str,
    payload: &[u8],
    options: WriteOptions,
) -> Result<sluice_storage::ObjectMeta, StorageError> {
    let mut w = fx.store.writer(key, options).await?;
    for piece in payload.chunks(100_003) {
        w.write(Bytes::copy_from_slice(piece)).await?;
    }
    w.commit().await
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn roundtrip_multi_chunk(fx: Fixture) {
    let payload = data(3 * 1024 * 1024 + 123, 1);
    let committed = write_in_pieces(&fx, "dir/big.bin", &payload, WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(committed.key, "dir/big.bin");
    assert_eq!(committed.size, payload.len() as u64);
    assert_eq!(committed.crc32c, Some(crc32c::crc32c(&payload)));
    assert_eq!(fx.is_gcs(), committed.generation.is_some());
    let back = read_all(fx.store.as_ref(), "dir/big.bin", None).await;
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "read-back differs");
    // Exactly a whole number of chunks: the last chunk must still finalise the upload.
    let exact = data(4 * CHUNK, 2);
    write_in_pieces(&fx, "exact.bin", &exact, WriteOptions::default())
        .await
        .unwrap();
    assert!(read_all(fx.store.as_ref(), "exact.bin", None).await == exact);
}

async fn empty_and_small_objects(fx: Fixture) {
    let w = fx
        .store
        .writer("empty", WriteOptions::default())
        .await
        .unwrap();
    let m = w.commit().await.unwrap();
    assert_eq!((m.size, m.crc32c), (0, Some(0)));
    assert!(read_all(fx.store.as_ref(), "empty", None).await.is_empty());
    let m = sluice_storage::write_bytes(
        fx.store.as_ref(),
        "small.txt",
        Bytes::from_static(b"hello"),
        WriteOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(m.crc32c, Some(crc32c::crc32c(b"hello")));
    let got = sluice_storage::read_to_bytes(fx.store.as_ref(), "small.txt", 5)
        .await
        .unwrap();
    assert_eq!(&got[..], b"hello");
    let err = sluice_storage::read_to_bytes(fx.store.as_ref(), "small.txt", 4)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("4-byte limit"), "{err}");
}

async fn ranged_read(fx: Fixture) {
    let payload = data(CHUNK * 2 + 1000, 3);
    write_in_pieces(&fx, "r.bin", &payload, WriteOptions::default())
        .await
        .unwrap();
    let s = fx.store.as_ref();
    let len = payload.len() as u64;
    for range in [
        0..1,
        10..20,
        (CHUNK as u64 - 5)..(CHUNK as u64 + 5),
        1..len,
        (len - 1)..len,
    ] {
        let got = read_all(s, "r.bin", Some(range.clone())).await;
        assert!(
            got == payload[range.start as usize..range.end as usize],
            "range {range:?}"
        );
    }
    // A range running past the end is cut at the end.
    assert!(
        read_all(s, "r.bin", Some((len - 10)..(len + 100))).await == payload[payload.len() - 10..]
    );
    // An empty range is empty.
    assert!(read_all(s, "r.bin", Some(5..5)).await.is_empty());
    // A range starting past the end is an error naming the object.
    let err = match s.read("r.bin", Some(len..len + 1)).await {
        Err(e) => e,
        Ok(_) => panic!("read past the end succeeded"),
    };
    assert!(err.to_string().contains("r.bin"), "{err}");
    let err = match s.read("missing.bin", Some(0..10)).await {
        Err(e) => e,
        Ok(_) => panic!("read of a missing object succeeded"),
    };
    assert!(
        matches!(err, StorageError::NotFound { ref url } if url.ends_with("/missing.bin")),
        "{err:?}"
    );
}

async fn list_prefix_and_glob(fx: Fixture) {
    let keys = [
        "raw/2024/a.csv",
        "raw/2024/b.csv",
        "raw/2024/sub/c.csv",
        "raw/2025/d.json",
        "raw2/e.csv",
        "other.txt",
    ];
    for (i, key) in keys.iter().enumerate() {
        sluice_storage::write_bytes(
            fx.store.as_ref(),
            key,
            Bytes::from(vec![b'x'; i + 1]),
            WriteOptions {
                metadata: meta(&[("n", &i.to_string())]),
                ..WriteOptions::default()
            },
        )
        .await
        .unwrap();
    }
    // An upload in progress is not listed.
    let mut pending = fx
        .store
        .writer("raw/2024/pending.csv", WriteOptions::default())
        .await
        .unwrap();
    pending
        .write(Bytes::from(data(CHUNK + 10, 9)))
        .await
        .unwrap();

    let s = fx.store.as_ref();
    let names =
        |v: Vec<sluice_storage::ObjectMeta>| v.into_iter().map(|m| m.key).collect::<Vec<_>>();
    assert_eq!(
        names(s.list("raw/").await.unwrap()),
        [
            "raw/2024/a.csv",
            "raw/2024/b.csv",
            "raw/2024/sub/c.csv",
            "raw/2025/d.json"
        ]
    );
    assert_eq!(names(s.list("raw").await.unwrap()).len(), 5);
    assert_eq!(
        names(s.list("raw/2024/a").await.unwrap()),
        ["raw/2024/a.csv"]
    );
    assert_eq!(names(s.list("").await.unwrap()).len(), 6);
    assert!(s.list("nothing/here").await.unwrap().is_empty());
    // Listing reports sizes and custom metadata.
    let listed = s.list("raw/2025/").await.unwrap();
    assert_eq!((listed[0].size, listed[0].metadata["n"].as_str()), (4, "3"));

    assert_eq!(
        names(list_glob(s, "raw/*/*.csv").await.unwrap()),
        ["raw/2024/a.csv", "raw/2024/b.csv"]
    );
    assert_eq!(
        names(list_glob(s, "raw/**/*.csv").await.unwrap()),
        ["raw/2024/a.csv", "raw/2024/b.csv", "raw/2024/sub/c.csv"]
    );
    assert_eq!(
        names(list_glob(s, "**/*.json").await.unwrap()),
        ["raw/2025/d.json"]
    );
    assert_eq!(
        names(list_glob(s, "raw*/e.csv").await.unwrap()),
        ["raw2/e.csv"]
    );
    assert_eq!(
        names(list_glob(s, "raw/202[4]/?.csv").await.unwrap()).len(),
        2
    );
    // As in gcloud, an unclosed `[` is a literal, not an error.
    assert!(list_glob(s, "raw/[").await.unwrap().is_empty());
    assert_eq!(
        names(list_glob(s, "raw/**.csv").await.unwrap()),
        ["raw/2024/a.csv", "raw/2024/b.csv", "raw/2024/sub/c.csv"]
    );
    // A pattern ending in `/` names directories, not objects.
    assert!(matches!(
        list_glob(s, "raw/").await,
        Err(StorageError::InvalidLocation { .. })
    ));
    pending.abort().await.unwrap();
}

async fn head_with_metadata_and_crc(fx: Fixture) {
    let payload = data(CHUNK + 77, 4);
    let options = WriteOptions {
        metadata: meta(&[("source", "https://example.com/a.csv?x=1"), ("rows", "42")]),
        content_type: Some("text/csv".into()),
        ..WriteOptions::default()
    };
    let committed = write_in_pieces(&fx, "m/obj.csv", &payload, options.clone())
        .await
        .unwrap();
    let head = fx
        .store
        .head("m/obj.csv")
        .await
        .unwrap()
        .expect("object exists");
    assert_eq!(head.key, "m/obj.csv");
    assert_eq!(head.size, payload.len() as u64);
    assert_eq!(head.crc32c, Some(crc32c::crc32c(&payload)));
    assert_eq!(head.metadata, options.metadata);
    assert_eq!(head.content_type.as_deref(), Some("text/csv"));
    assert_eq!(head.generation, committed.generation);
    assert!(head.updated.is_some());
    // Small (single-request) uploads carry metadata too.
    sluice_storage::write_bytes(
        fx.store.as_ref(),
        "m/small",
        Bytes::from_static(b"abc"),
        options.clone(),
    )
    .await
    .unwrap();
    let small = fx.store.head("m/small").await.unwrap().unwrap();
    assert_eq!(
        (small.metadata, small.content_type),
        (options.metadata, options.content_type)
    );
    assert_eq!(fx.store.head("m/absent").await.unwrap(), None);
}

async fn create_if_absent(fx: Fixture) {
    let once = WriteOptions {
        if_absent: true,
        metadata: meta(&[("writer", "first")]),
        ..WriteOptions::default()
    };
    let first = data(1000, 5);
    write_in_pieces(&fx, "once.bin", &first, once.clone())
        .await
        .unwrap();
    let second_opts = WriteOptions {
        metadata: meta(&[("writer", "second")]),
        ..once
    };
    // Small and multi-chunk second attempts both fail and change nothing.
    for second in [data(10, 6), data(3 * CHUNK, 7)] {
        let err = write_in_pieces(&fx, "once.bin", &second, second_opts.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::AlreadyExists { ref url } if url.ends_with("/once.bin")),
            "{err:?}"
        );
        assert!(read_all(fx.store.as_ref(), "once.bin", None).await == first);
        let head = fx.store.head("once.bin").await.unwrap().unwrap();
        assert_eq!(head.metadata["writer"], "first");
        assert_eq!(head.crc32c, Some(crc32c::crc32c(&first)));
    }
    // Without the flag a write replaces the object.
    let third = data(2 * CHUNK + 5, 8);
    write_in_pieces(&fx, "once.bin", &third, WriteOptions::default())
        .await
        .unwrap();
    assert!(read_all(fx.store.as_ref(), "once.bin", None).await == third);
    assert!(
        fx.store
            .head("once.bin")
            .await
            .unwrap()
            .unwrap()
            .metadata
            .is_empty()
    );
}

/// Nothing under the key, in listings, or on disk (temp files) once a write is abandoned.
async fn assert_nothing_left(fx: &Fixture, key: &str) {
    // The GCS writer cancels its session from a background task: give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let store = fx.fresh_store().await;
    assert_eq!(store.head(key).await.unwrap(), None, "{key} is visible");
    assert!(store.list("").await.unwrap().is_empty());
    let files = files_under(&fx.disk_root());
    assert!(files.is_empty(), "files left behind: {files:?}");
}

async fn dropped_writer_leaves_nothing(fx: Fixture) {
    for len in [100, 3 * CHUNK + 1] {
        let mut w = fx
            .store
            .writer("drop.bin", WriteOptions::default())
            .await
            .unwrap();
        w.write(Bytes::from(data(len, 10))).await.unwrap();
        w.write(Bytes::from(data(len, 11))).await.unwrap();
        drop(w);
        assert_nothing_left(&fx, "drop.bin").await;
    }
}

async fn aborted_writer_leaves_nothing(fx: Fixture) {
    for len in [100, 3 * CHUNK + 1] {
        let mut w = fx
            .store
            .writer("abort.bin", WriteOptions::default())
            .await
            .unwrap();
        w.write(Bytes::from(data(len, 12))).await.unwrap();
        w.abort().await.unwrap();
        assert_nothing_left(&fx, "abort.bin").await;
    }
}

async fn cancelled_write_leaves_nothing(fx: Fixture) {
    let mut w = fx
        .store
        .writer("cancel.bin", WriteOptions::default())
        .await
        .unwrap();
    // Halfway: several chunks already sent.
    w.write(Bytes::from(data(3 * CHUNK + 1, 13))).await.unwrap();
    fx.cancel.cancel();
    let err = w.write(Bytes::from(data(CHUNK, 14))).await.unwrap_err();
    assert!(
        matches!(err, StorageError::Cancelled { ref url, .. } if url.ends_with("/cancel.bin")),
        "{err:?}"
    );
    drop(w);
    // New writers refuse to start; commit of a surviving writer refuses to finish.
    assert!(matches!(
        fx.store.writer("other", WriteOptions::default()).await,
        Err(StorageError::Cancelled { .. })
    ));
    assert_nothing_left(&fx, "cancel.bin").await;
}

async fn cancelled_before_commit_leaves_nothing(fx: Fixture) {
    let mut w = fx
        .store
        .writer("late.bin", WriteOptions::default())
        .await
        .unwrap();
    w.write(Bytes::from(data(2 * CHUNK + 1, 15))).await.unwrap();
    fx.cancel.cancel();
    let err = w.commit().await.unwrap_err();
    assert!(matches!(err, StorageError::Cancelled { .. }), "{err:?}");
    assert_nothing_left(&fx, "late.bin").await;
}

async fn delete_objects(fx: Fixture) {
    sluice_storage::write_bytes(
        fx.store.as_ref(),
        "d/x",
        Bytes::from_static(b"x"),
        WriteOptions {
            metadata: meta(&[("k", "v")]),
            ..WriteOptions::default()
        },
    )
    .await
    .unwrap();
    fx.store.delete("d/x").await.unwrap();
    assert_eq!(fx.store.head("d/x").await.unwrap(), None);
    assert!(matches!(
        fx.store.read("d/x", None).await,
        Err(StorageError::NotFound { .. })
    ));
    // Absent is not an error.
    fx.store.delete("d/x").await.unwrap();
    // A new object at the key does not inherit the old metadata.
    sluice_storage::write_bytes(
        fx.store.as_ref(),
        "d/x",
        Bytes::from_static(b"y"),
        WriteOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        fx.store
            .head("d/x")
            .await
            .unwrap()
            .unwrap()
            .metadata
            .is_empty()
    );
}

async fn urls_name_the_object(fx: Fixture) {
    let url = fx.store.url_of("a/b.csv");
    assert!(url.starts_with(&fx.store.root_url()));
    assert!(url.ends_with("/a/b.csv"));
    let err = match fx.store.read("no/such.csv", None).await {
        Err(e) => e,
        Ok(_) => panic!("read of a missing object succeeded"),
    };
    assert_eq!(
        err.to_string(),
        format!("{}: not found", fx.store.url_of("no/such.csv"))
    );
}

async fn concurrent_if_absent_writers_one_wins(fx: Fixture) {
    let once = WriteOptions {
        if_absent: true,
        ..WriteOptions::default()
    };
    // Both start before either commits, so only the commit itself can decide.
    let mut a = fx.store.writer("race.bin", once.clone()).await.unwrap();
    let mut b = fx.store.writer("race.bin", once).await.unwrap();
    a.write(Bytes::from_static(b"from a")).await.unwrap();
    b.write(Bytes::from_static(b"from b")).await.unwrap();
    a.commit().await.unwrap();
    let err = b.commit().await.unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(
        read_all(fx.store.as_ref(), "race.bin", None).await,
        b"from a"
    );
    let head = fx.store.head("race.bin").await.unwrap().unwrap();
    assert_eq!(head.crc32c, Some(crc32c::crc32c(b"from a")));
    // The loser left no temp files behind.
    let files = files_under(&fx.disk_root());
    assert!(files.iter().all(|f| !f.contains("sluice-tmp")), "{files:?}");
}

async fn cancelled_read_ends_with_an_error(fx: Fixture) {
    let payload = data(4 * 1024 * 1024, 16);
    write_in_pieces(&fx, "big.bin", &payload, WriteOptions::default())
        .await
        .unwrap();
    let mut stream = fx.store.read("big.bin", None).await.unwrap();
    use futures::StreamExt;
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty() && first.len() < payload.len());
    fx.cancel.cancel();
    let mut got = first.len();
    loop {
        match stream.next().await {
            Some(Ok(chunk)) => got += chunk.len(),
            Some(Err(StorageError::Cancelled { url, operation })) => {
                assert!(url.ends_with("/big.bin"));
                assert_eq!(operation, "read");
                break;
            }
            Some(Err(e)) => panic!("unexpected error {e:?}"),
            None => panic!("stream ended quietly after a cancel ({got} bytes)"),
        }
    }
    assert!(got < payload.len());
}

/// Metadata known only at commit (row counts, hashes) lands on the object next to the
/// writer's own, for an object sent in one request and for a multi-chunk one; an `extra` key
/// replaces the option's value. `head`, `list` and the commit agree.
async fn metadata_added_at_commit(fx: Fixture) {
    for (key, len) in [("meta/small.bin", 1000), ("meta/large.bin", 5 * CHUNK + 17)] {
        let payload = data(len, 41);
        let options = WriteOptions {
            metadata: meta(&[("source", "https://example.org/a.csv"), ("rows", "unknown")]),
            content_type: Some("text/csv".into()),
            ..WriteOptions::default()
        };
        let mut w = fx.store.writer(key, options).await.unwrap();
        for piece in payload.chunks(70_001) {
            w.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        let extra = meta(&[("rows", "42"), ("sha", "abc123")]);
        let committed = w.commit_with_metadata(extra).await.unwrap();
        let expected = meta(&[
            ("rows", "42"),
            ("sha", "abc123"),
            ("source", "https://example.org/a.csv"),
        ]);
        assert_eq!(committed.metadata, expected, "{key}");
        let head = fx.store.head(key).await.unwrap().unwrap();
        assert_eq!(head.metadata, expected, "{key}");
        assert_eq!(head.generation, committed.generation, "{key}");
        assert_eq!(head.size, len as u64);
        assert_eq!(head.crc32c, Some(crc32c::crc32c(&payload)));
        assert_eq!(head.content_type.as_deref(), Some("text/csv"));
        let listed = fx.store.list(key).await.unwrap();
        assert_eq!(listed[0].metadata, expected, "{key}");
        assert!(read_all(fx.store.as_ref(), key, None).await == payload);
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test] async fn $name() { super::$name(super::support::local().await).await })*
        }
        mod gcs {
            $(#[tokio::test] async fn $name() { super::$name(super::support::gcs().await).await })*
        }
    };
}

suite!(
    roundtrip_multi_chunk,
    empty_and_small_objects,
    ranged_read,
    list_prefix_and_glob,
    head_with_metadata_and_crc,
    create_if_absent,
    dropped_writer_leaves_nothing,
    aborted_writer_leaves_nothing,
    cancelled_write_leaves_nothing,
    cancelled_before_commit_leaves_nothing,
    delete_objects,
    urls_name_the_object,
    concurrent_if_absent_writers_one_wins,
    cancelled_read_ends_with_an_error,
    metadata_added_at_commit,
);
