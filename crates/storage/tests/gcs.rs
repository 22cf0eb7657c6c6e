//! GCS-specific behaviour against fake-gcs-server, some through a proxy that corrupts or fails
//! requests: checksum enforcement, retries and resumption, session cancellation, `open`, and
//! interoperability with Google's own `gcloud storage` client.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use sluice_runtime::CancellationToken;
use sluice_storage::{ObjectStore, StorageError, StoreConfig, WriteOptions, join_key};
use support::{Action, BUCKET, CHUNK, FakeGcs, Proxy, data, files_under, gcs_store, read_all};

fn server() -> FakeGcs {
    let server = FakeGcs::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    server
}

fn is_upload(seen: &support::Seen) -> bool {
    seen.uri.starts_with("/upload/")
}

async fn write_all(
    store: &dyn ObjectStore,
    key: &str,
    payload: &[u8],
    options: WriteOptions,
) -> sluice_storage::Result<sluice_storage::ObjectMeta> {
    let mut w = store.writer(key, options).await?;
    for piece in payload.chunks(70_000) {
        w.write(Bytes::copy_from_slice(piece)).await?;
    }
    w.commit().await
}

/// fake-gcs-server does not check the crc32c we send, so a byte flipped on the way is stored:
/// the writer must notice from the crc32c the server reports, delete the object and fail.
#[tokio::test]
async fn corrupted_upload_is_a_checksum_mismatch_and_leaves_nothing() {
    let server = server();
    let proxy = Proxy::start(server.endpoint(), |seen, body| {
        // One byte in the middle of every upload body with data (multipart or chunk).
        if is_upload(seen) && body.len() > 1000 && seen.method != "DELETE" {
            let at = body.len() / 2;
            body[at] ^= 0x01;
        }
        Action::Forward
    })
    .await;
    let through_proxy = gcs_store(&proxy.endpoint, CancellationToken::new()).await;
    let direct = gcs_store(&server.endpoint(), CancellationToken::new()).await;

    // 100 KB: one multipart request. 3.5 chunks: a resumable session.
    for (key, len) in [("small.bin", 100_000), ("large.bin", 3 * CHUNK + CHUNK / 2)] {
        let payload = data(len, 21);
        let err = write_all(&through_proxy, key, &payload, WriteOptions::default())
            .await
            .unwrap_err();
        let StorageError::ChecksumMismatch { url, local, remote } = &err else {
            panic!("{key}: expected ChecksumMismatch, got {err:?}");
        };
        assert_eq!(url, &format!("gs://{BUCKET}/{key}"));
        assert_eq!(*local, crc32c::crc32c(&payload));
        assert_ne!(remote, local);
        assert!(err.to_string().contains("crc32c mismatch"), "{err}");
        assert_eq!(
            direct.head(key).await.unwrap(),
            None,
            "{key} stayed visible"
        );
    }
    assert!(direct.list("").await.unwrap().is_empty());
    assert!(files_under(&server.root().join(BUCKET)).is_empty());
}

/// Full reads are checked against the object's crc32c (by the official crate): a byte flipped
/// on the way is an error, not silently wrong data.
#[tokio::test]
async fn corrupted_download_is_an_error() {
    let server = server();
    let direct = gcs_store(&server.endpoint(), CancellationToken::new()).await;
    let payload = data(3 * CHUNK, 28);
    write_all(&direct, "d.bin", &payload, WriteOptions::default())
        .await
        .unwrap();
    let proxy = Proxy::start(server.endpoint(), |seen, _| {
        if seen.method == "GET" && seen.uri.contains("alt=media") {
            Action::ForwardCorruptingResponse
        } else {
            Action::Forward
        }
    })
    .await;
    let store = gcs_store(&proxy.endpoint, CancellationToken::new()).await;
    let mut stream = store.read("d.bin", None).await.unwrap();
    use futures::StreamExt;
    let mut error = None;
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            error = Some(e);
            break;
        }
    }
    let error = error.expect("a corrupted download must end with an error");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("gs://{BUCKET}/d.bin: read failed")),
        "{text}"
    );
    assert!(text.to_lowercase().contains("checksum"), "{text}");
}

/// Real GCS refuses to finalise when the bytes do not match the `X-Goog-Hash` we send, with a
/// 400 naming both values: that too is a `ChecksumMismatch`, with the server's value.
#[tokio::test]
async fn server_side_checksum_refusal_is_a_checksum_mismatch() {
    let server = server();
    let proxy = Proxy::start(server.endpoint(), |seen, _| {
        let finalising = seen.method == "PUT"
            && seen
                .content_range
                .as_deref()
                .is_some_and(|r| !r.ends_with("/*"));
        let multipart = seen.uri.contains("uploadType=multipart");
        if finalising || multipart {
            Action::RespondWith(
                400,
                r#"Provided CRC32C "AAAAAA==" doesn't match calculated CRC32C "mnG7TA==". "#.into(),
            )
        } else {
            Action::Forward
        }
    })
    .await;
    let store = gcs_store(&proxy.endpoint, CancellationToken::new()).await;
    for len in [10, 2 * CHUNK + 1] {
        let payload = data(len, 22);
        let err = write_all(&store, "refused.bin", &payload, WriteOptions::default())
            .await
            .unwrap_err();
        match err {
            StorageError::ChecksumMismatch { local, remote, .. } => {
                assert_eq!(local, crc32c::crc32c(&payload));
                assert_eq!(remote, crc32c::crc32c(b"hello"));
            }
            other => panic!("expected ChecksumMismatch, got {other:?}"),
        }
    }
    // The refused session was cancelled.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        proxy
            .seen()
            .iter()
            .any(|s| s.method == "DELETE" && s.uri.contains("upload_id="))
    );
}

/// Transient failures (503s, a lost response) are retried; a chunk whose response was lost is
/// not sent again because the session says it arrived.
#[tokio::test]
async fn transient_failures_are_retried_and_uploads_resume() {
    let server = server();
    let count = |n: &AtomicUsize| n.fetch_add(1, Ordering::SeqCst);
    let (posts, first_chunk, second_chunk, gets) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (p, c1, c2, g) = (
        posts.clone(),
        first_chunk.clone(),
        second_chunk.clone(),
        gets.clone(),
    );
    let proxy = Proxy::start(server.endpoint(), move |seen, _| {
        let range = seen.content_range.as_deref().unwrap_or("");
        match seen.method.as_str() {
            "POST" if seen.uri.contains("uploadType=resumable") && count(&p) == 0 => {
                Action::Respond(503)
            }
            "PUT" if range.starts_with("bytes 0-") && count(&c1) == 0 => Action::Respond(503),
            "PUT" if range.starts_with(&format!("bytes {CHUNK}-")) && count(&c2) == 0 => {
                Action::ForwardThenRespond(503)
            }
            "GET" if count(&g) == 0 => Action::Respond(429),
            _ => Action::Forward,
        }
    })
    .await;
    let store = gcs_store(&proxy.endpoint, CancellationToken::new()).await;
    let payload = data(4 * CHUNK + 99, 23);
    let meta = write_all(&store, "retried.bin", &payload, WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(meta.crc32c, Some(crc32c::crc32c(&payload)));
    // The first GET fails with 429 and is retried.
    assert_eq!(
        store.head("retried.bin").await.unwrap().unwrap().size,
        payload.len() as u64
    );
    assert!(read_all(&store, "retried.bin", None).await == payload);

    let seen = proxy.seen();
    let puts_at = |start: usize| {
        seen.iter()
            .filter(|s| {
                s.method == "PUT"
                    && s.content_range
                        .as_deref()
                        .is_some_and(|r| r.starts_with(&format!("bytes {start}-")))
            })
            .count()
    };
    assert_eq!(
        posts.load(Ordering::SeqCst),
        2,
        "session start retried once"
    );
    assert_eq!(puts_at(0), 2, "the refused first chunk is sent again");
    assert_eq!(
        puts_at(CHUNK),
        1,
        "the chunk whose response was lost is not resent"
    );
    assert_eq!(puts_at(2 * CHUNK), 1);
    assert_eq!(
        seen.iter()
            .filter(|s| s.content_range.as_deref() == Some("bytes */*"))
            .count(),
        2,
        "a status query after each failed chunk"
    );
}

/// A multipart create-if-absent whose response is lost is retried, meets its own object
/// (412), recognises it by size/crc32c/metadata and succeeds; a different object stays a 412.
#[tokio::test]
async fn lost_response_on_create_if_absent_is_recognised() {
    let server = server();
    let lost = Arc::new(AtomicUsize::new(0));
    let l = lost.clone();
    let proxy = Proxy::start(server.endpoint(), move |seen, _| {
        if seen.uri.contains("uploadType=multipart") && l.fetch_add(1, Ordering::SeqCst) == 0 {
            Action::ForwardThenRespond(503)
        } else {
            Action::Forward
        }
    })
    .await;
    let store = gcs_store(&proxy.endpoint, CancellationToken::new()).await;
    let options = WriteOptions {
        if_absent: true,
        ..WriteOptions::default()
    };
    let meta = write_all(&store, "once.bin", b"payload", options.clone())
        .await
        .unwrap();
    assert_eq!(meta.crc32c, Some(crc32c::crc32c(b"payload")));
    assert_eq!(lost.load(Ordering::SeqCst), 2, "sent twice");
    let err = write_all(&store, "once.bin", b"other", options)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err:?}");
}

/// Dropping or aborting a writer with an open session cancels the session on the server.
#[tokio::test]
async fn abandoned_sessions_are_cancelled() {
    let server = server();
    let proxy = Proxy::start(server.endpoint(), |_, _| Action::Forward).await;
    let store = gcs_store(&proxy.endpoint, CancellationToken::new()).await;
    let mut w = store
        .writer("a.bin", WriteOptions::default())
        .await
        .unwrap();
    w.write(Bytes::from(data(2 * CHUNK + 1, 24))).await.unwrap();
    w.abort().await.unwrap();
    let deletes = |p: &Proxy| {
        p.seen()
            .iter()
            .filter(|s| s.method == "DELETE" && s.uri.contains("upload_id="))
            .count()
    };
    assert_eq!(
        deletes(&proxy),
        1,
        "abort waits for the session to be cancelled"
    );

    let mut w = store
        .writer("b.bin", WriteOptions::default())
        .await
        .unwrap();
    w.write(Bytes::from(data(2 * CHUNK + 1, 25))).await.unwrap();
    drop(w);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        deletes(&proxy),
        2,
        "drop cancels the session in the background"
    );
    assert!(store.list("").await.unwrap().is_empty());
}

/// A writer holds at most two chunk buffers (the one being filled, the one on the wire): with
/// the server stalled on the first chunk, the third chunk's first byte blocks instead of
/// taking a third buffer.
#[tokio::test]
async fn a_stalled_upload_applies_backpressure() {
    let server = server();
    let proxy = Proxy::start(server.endpoint(), |seen, _| {
        if seen.method == "PUT" {
            Action::Hang
        } else {
            Action::Forward
        }
    })
    .await;
    let store = gcs_store(&proxy.endpoint, CancellationToken::new()).await;
    let mut w = store
        .writer("slow.bin", WriteOptions::default())
        .await
        .unwrap();
    let chunk = Bytes::from(data(CHUNK, 27));
    for i in 0..2 {
        tokio::time::timeout(Duration::from_secs(5), w.write(chunk.clone()))
            .await
            .unwrap_or_else(|_| panic!("chunk {i} should be accepted"))
            .unwrap();
    }
    let blocked = tokio::time::timeout(
        Duration::from_millis(500),
        w.write(Bytes::from_static(b"x")),
    )
    .await;
    assert!(blocked.is_err(), "a third chunk buffer was taken");
    let stats = store.chunk_buffer_stats();
    assert_eq!((stats.live, stats.peak), (2, 2), "{stats:?}");
    // Dropping the stalled writer still cleans up (the hung request is abandoned).
    drop(w);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        proxy
            .seen()
            .iter()
            .any(|s| s.method == "DELETE" && s.uri.contains("upload_id="))
    );
    assert!(store.list("").await.unwrap().is_empty());
}

/// Upload memory is two chunk buffers, never more: a producer much faster than a slow server
/// (every chunk `PUT` delayed) pushes twelve chunks through one writer, and the number of chunk
/// buffers allocated at once -- counted from allocation until freed, whether being filled, on
/// the wire (until the HTTP client lets go of the last byte) or idle for reuse -- peaks at
/// exactly two (so filling and sending still overlap), and none outlives the commit.
#[tokio::test]
async fn at_most_two_chunk_buffers_are_ever_alive() {
    let server = server();
    let proxy = Proxy::start(server.endpoint(), |seen, _| {
        if seen.method == "PUT" {
            Action::DelayThenForward(Duration::from_millis(40))
        } else {
            Action::Forward
        }
    })
    .await;
    let store = gcs_store(&proxy.endpoint, CancellationToken::new()).await;
    let payload = data(12 * CHUNK + 5, 29);
    let mut w = store
        .writer("bounded.bin", WriteOptions::default())
        .await
        .unwrap();
    let mut most = 0;
    for piece in payload.chunks(CHUNK / 3) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
        most = most.max(store.chunk_buffer_stats().live);
    }
    let meta = w.commit().await.unwrap();
    assert_eq!(meta.size, payload.len() as u64);
    let stats = store.chunk_buffer_stats();
    assert_eq!(stats.peak, 2, "{stats:?}");
    assert_eq!(most, 2, "the writer never overlapped filling and sending");
    assert_eq!(stats.live, 0, "buffers outlived the commit: {stats:?}");
    assert!(read_all(&store, "bounded.bin", None).await == payload);
}

/// Metadata on documented GCS behaviour only: a multipart upload carries all of it in its one
/// request; a resumable upload carries the writer's options in the `POST` that opens the
/// session (the only session request that takes object metadata) and gets what is known only
/// at commit from one `PATCH` with `ifGenerationMatch` + `ifMetagenerationMatch` after
/// finalisation. No request carries `X-Goog-Meta-*` headers. Requests per object are counted.
#[tokio::test]
async fn metadata_goes_in_the_creating_request_and_commit_metadata_by_one_patch() {
    let server = server();
    // The bodies of the requests that open sessions, to check what metadata they carry.
    let initiations = Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let seen_initiations = initiations.clone();
    let proxy = Proxy::start(server.endpoint(), move |seen, body| {
        if seen.method == "POST" && seen.uri.contains("uploadType=resumable") {
            seen_initiations
                .lock()
                .unwrap()
                .push(serde_json::from_slice(body).unwrap());
        }
        Action::Forward
    })
    .await;
    let store = gcs_store(&proxy.endpoint, CancellationToken::new()).await;
    let options: std::collections::BTreeMap<String, String> = [(
        "source".to_string(),
        "https://example.test/a.csv".to_string(),
    )]
    .into();
    let extra: std::collections::BTreeMap<String, String> =
        [("sluice-rows".to_string(), "42".to_string())].into();
    let mut wanted = options.clone();
    wanted.extend(extra.clone());
    let commit = async |key: &str, len: usize| {
        let before = proxy.seen().len();
        let write_options = WriteOptions {
            metadata: options.clone(),
            ..WriteOptions::default()
        };
        let mut w = store.writer(key, write_options).await.unwrap();
        w.write(Bytes::from(data(len, 30))).await.unwrap();
        let meta = w.commit_with_metadata(extra.clone()).await.unwrap();
        (meta, proxy.seen()[before..].to_vec())
    };

    let (small, requests) = commit("small.bin", 1000).await;
    assert_eq!(small.metadata, wanted);
    let methods: Vec<&str> = requests.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(methods, ["POST"], "one multipart request: {requests:?}");
    assert!(
        requests[0].uri.contains("uploadType=multipart"),
        "{requests:?}"
    );

    let (large, requests) = commit("large.bin", 2 * CHUNK + 10).await;
    assert_eq!(large.metadata, wanted);
    let methods: Vec<&str> = requests.iter().map(|s| s.method.as_str()).collect();
    // Open the session, two full chunks, the finalising chunk, the patch.
    assert_eq!(
        methods,
        ["POST", "PUT", "PUT", "PUT", "PATCH"],
        "{requests:?}"
    );
    assert!(
        requests.iter().all(|s| s.meta_headers.is_empty()),
        "no X-Goog-Meta-* headers: {requests:?}"
    );
    let initiations = initiations.lock().unwrap().clone();
    assert_eq!(initiations.len(), 1, "{initiations:?}");
    assert_eq!(
        initiations[0]["metadata"],
        serde_json::json!(options),
        "the session opens with the options' metadata only"
    );
    let patch = &requests[4];
    assert!(patch.uri.contains("ifGenerationMatch="), "{patch:?}");
    assert!(patch.uri.contains("ifMetagenerationMatch=1"), "{patch:?}");
    // The generation the commit reports is the object's (the emulator changes it on PATCH).
    let head = store.head("large.bin").await.unwrap().unwrap();
    assert_eq!(head.generation, large.generation);
    assert_eq!(head.metadata, wanted);

    // Nothing added at commit: nothing to patch.
    let before = proxy.seen().len();
    let mut w = store
        .writer(
            "plain.bin",
            WriteOptions {
                metadata: options.clone(),
                ..WriteOptions::default()
            },
        )
        .await
        .unwrap();
    w.write(Bytes::from(data(2 * CHUNK + 10, 31)))
        .await
        .unwrap();
    let plain = w.commit().await.unwrap();
    assert_eq!(plain.metadata, options);
    let methods: Vec<String> = proxy.seen()[before..]
        .iter()
        .map(|s| s.method.clone())
        .collect();
    assert_eq!(methods, ["POST", "PUT", "PUT", "PUT"]);
}

/// If the object cannot be given its final metadata, the commit fails and the object is
/// removed: it never stays visible without it.
#[tokio::test]
async fn a_failed_metadata_patch_fails_the_commit_and_removes_the_object() {
    let server = server();
    let proxy = Proxy::start(server.endpoint(), |seen, _| {
        if seen.method == "PATCH" {
            Action::RespondWith(403, "permission denied (injected)".into())
        } else {
            Action::Forward
        }
    })
    .await;
    let store = gcs_store(&proxy.endpoint, CancellationToken::new()).await;
    let mut w = store
        .writer("unpatched.bin", WriteOptions::default())
        .await
        .unwrap();
    w.write(Bytes::from(data(3 * CHUNK, 31))).await.unwrap();
    let err = w
        .commit_with_metadata([("sluice-rows".to_string(), "1".to_string())].into())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "gs://{BUCKET}/unpatched.bin: set metadata failed: HTTP 403"
        )),
        "{text}"
    );
    assert_eq!(store.head("unpatched.bin").await.unwrap(), None);
}

/// Permanent failures are not retried and name the object and the operation.
#[tokio::test]
async fn permanent_failures_name_object_and_operation() {
    let server = server();
    let store = gcs_store(&server.endpoint(), CancellationToken::new()).await;
    let missing_bucket = sluice_storage::GcsStore::connect(
        "no-such-bucket",
        sluice_storage::GcsOptions {
            endpoint: Some(server.endpoint()),
            anonymous: true,
            retry: support::fast_retry(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let err = missing_bucket.list("x/").await.unwrap_err();
    assert_eq!(err.to_string(), "gs://no-such-bucket/x/: not found");
    let err = write_all(&missing_bucket, "k", b"data", WriteOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("gs://no-such-bucket/k: "),
        "{err}"
    );
    drop(store);

    // Nothing listens here: connection refused is retried, then reported with its cause.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = gcs_store(
        &format!("http://127.0.0.1:{port}"),
        CancellationToken::new(),
    )
    .await;
    let err = dead.head("k").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("gs://{BUCKET}/k: get metadata failed: ")),
        "{text}"
    );
    assert!(text.contains("gave up after 4 attempts"), "{text}");
}

#[tokio::test]
async fn open_resolves_urls_and_prefixes() {
    let server = server();
    let config = StoreConfig {
        // The form STORAGE_EMULATOR_HOST usually takes: host:port without a scheme.
        gcs_emulator_host: Some(server.endpoint().trim_start_matches("http://").to_string()),
        cancel: CancellationToken::new(),
        upload_chunk_size: None,
        ..Default::default()
    };
    let (store, prefix) = sluice_storage::open(&format!("gs://{BUCKET}/raw/2024"), &config)
        .await
        .unwrap();
    assert_eq!(prefix, "raw/2024");
    assert_eq!(store.root_url(), format!("gs://{BUCKET}"));
    let key = join_key(&prefix, "a.csv");
    sluice_storage::write_bytes(
        store.as_ref(),
        &key,
        Bytes::from_static(b"a,b\n"),
        WriteOptions::default(),
    )
    .await
    .unwrap();
    let listed = store.list(&prefix).await.unwrap();
    assert_eq!(listed[0].key, "raw/2024/a.csv");

    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let (local, prefix) = sluice_storage::open(&url, &config).await.unwrap();
    assert_eq!((local.root_url(), prefix.as_str()), (url.clone(), ""));
    let (local2, _) = sluice_storage::open(dir.path().to_str().unwrap(), &config)
        .await
        .unwrap();
    assert_eq!(local2.root_url(), url);

    for bad in ["s3://bucket/x", "gs://", "gs://UPPER/x"] {
        match sluice_storage::open(bad, &config).await {
            Err(StorageError::InvalidLocation { url, .. }) => assert_eq!(url, bad),
            Err(other) => panic!("{bad}: {other:?}"),
            Ok(_) => panic!("{bad} opened"),
        }
    }
}

/// Google's own client reads what Sluice wrote (bytes, crc32c, metadata), and Sluice reads
/// what it wrote.
#[tokio::test]
async fn gcloud_storage_interoperates() {
    let server = server();
    let store = gcs_store(&server.endpoint(), CancellationToken::new()).await;
    let payload = data(2 * CHUNK + 4321, 26);
    let options = WriteOptions {
        metadata: [("source".to_string(), "sluice-test".to_string())].into(),
        content_type: Some("application/x-parquet".into()),
        ..WriteOptions::default()
    };
    let mut w = store.writer("interop/data.bin", options).await.unwrap();
    for piece in payload.chunks(70_000) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    w.commit_with_metadata([("sluice-rows".to_string(), "7".to_string())].into())
        .await
        .unwrap();

    let config = tempfile::tempdir().unwrap();
    let gcloud = async |args: &[&str]| {
        let out = tokio::process::Command::new("gcloud")
            .args(args)
            .env("CLOUDSDK_CONFIG", config.path())
            .envs(server.gcloud_env())
            .output()
            .await
            .expect("gcloud is installed (see docs/local-stack.md)");
        assert!(
            out.status.success(),
            "gcloud {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let url = format!("gs://{BUCKET}/interop/data.bin");
    let read = gcloud(&["storage", "cat", &url]).await;
    assert!(read == payload, "gcloud read different bytes");
    let described = gcloud(&["storage", "objects", "describe", &url, "--format=json"]).await;
    let described: serde_json::Value = serde_json::from_slice(&described).unwrap();
    let crc = described["crc32c_hash"].as_str().unwrap_or_default();
    assert_eq!(
        crc,
        sluice_storage::crc32c_to_base64(crc32c::crc32c(&payload)),
        "{described}"
    );
    assert_eq!(
        described["custom_fields"]["source"], "sluice-test",
        "{described}"
    );
    assert_eq!(
        described["custom_fields"]["sluice-rows"], "7",
        "{described}"
    );
    assert_eq!(
        described["content_type"], "application/x-parquet",
        "{described}"
    );

    // The other way round: an object gcloud uploaded.
    let file = config.path().join("upload.txt");
    std::fs::write(&file, b"written by gcloud\n").unwrap();
    let dest = format!("gs://{BUCKET}/interop/from-gcloud.txt");
    gcloud(&["storage", "cp", file.to_str().unwrap(), &dest]).await;
    let head = store
        .head("interop/from-gcloud.txt")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.crc32c, Some(crc32c::crc32c(b"written by gcloud\n")));
    assert_eq!(
        read_all(&store, "interop/from-gcloud.txt", None).await,
        b"written by gcloud\n"
    );
}
