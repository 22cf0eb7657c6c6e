//! A flaky server still yields byte-identical output: 503 then OK, 429 with Retry-After, a
//! connection dropped mid-body (resumed with Range/If-Range, or the item restarted), a source
//! that changes mid-transfer; permanent errors fail at once with the URL and status.

mod common;

use std::time::{Duration, Instant};

use common::{config, object, run, run_ok, task, typed_csv};
use sluice_extract::{ExtractError, OutputFormat};
use sluice_testkit::{Fault, ServedFile, TestServer, gzip};

fn big_body() -> Vec<u8> {
    typed_csv(20_000).into_bytes()
}

#[tokio::test]
async fn retries_503_then_succeeds() {
    let server = TestServer::start();
    let body = big_body();
    let url = server.serve("a.csv", ServedFile::new(body.clone()));
    server.fail(
        "a.csv",
        [Fault::Status(503, None), Fault::Status(502, None)],
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    run_ok(cfg).await;
    assert_eq!(object(dir.path(), "a/a-00000.csv"), body);
    assert_eq!(server.requests_to("a.csv").len(), 3);
}

#[tokio::test]
async fn honours_retry_after_on_429() {
    let server = TestServer::start();
    let body = big_body();
    let url = server.serve("a.csv", ServedFile::new(body.clone()));
    server.fail("a.csv", [Fault::Status(429, Some("1".into()))]);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    let started = Instant::now();
    run_ok(cfg).await;
    // The policy's own backoff is ~10 ms; only Retry-After explains a full second.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(object(dir.path(), "a/a-00000.csv"), body);
    assert_eq!(server.requests_to("a.csv").len(), 2);
}

#[tokio::test]
async fn a_dropped_connection_resumes_with_range_and_if_range() {
    let server = TestServer::start();
    let body = big_body();
    let file = ServedFile::new(body.clone());
    let etag = file.etag.clone().unwrap();
    let url = server.serve("a.csv", file);
    server.fail(
        "a.csv",
        [Fault::DropAfter(300_000), Fault::DropAfter(200_000)],
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    let outcome = run_ok(cfg).await;
    assert_eq!(object(dir.path(), "a/a-00000.csv"), body);
    let requests = server.requests_to("a.csv");
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_eq!(requests[0].header("range"), None);
    assert_eq!(requests[1].header("range"), Some("bytes=300000-"));
    assert_eq!(requests[1].header("if-range"), Some(etag.as_str()));
    assert_eq!(requests[2].header("range"), Some("bytes=500000-"));
    let item = &outcome.manifest.items[0];
    assert_eq!(item.resumes, 2);
    assert_eq!(item.attempts, 1);
    assert_eq!(item.source.bytes, body.len() as u64);
}

#[tokio::test]
async fn a_drop_mid_gzip_resumes_into_an_identical_parquet_file() {
    // Resumption happens below the decoder: the converter never notices.
    let server = TestServer::start();
    let csv = big_body();
    let gz = gzip(&csv);
    let url = server.serve(
        "a.csv.gz",
        ServedFile::new(gz.clone()).slow(16 * 1024, Duration::ZERO),
    );
    let dir_ok = tempfile::tempdir().unwrap();
    let mut cfg = config(dir_ok.path());
    cfg.urls = vec![url.clone()];
    cfg.format = OutputFormat::Parquet;
    run_ok(cfg).await;
    server.fail("a.csv.gz", [Fault::DropAfter(gz.len() / 3)]);
    let dir_flaky = tempfile::tempdir().unwrap();
    let mut cfg = config(dir_flaky.path());
    cfg.urls = vec![url];
    cfg.format = OutputFormat::Parquet;
    let outcome = run_ok(cfg).await;
    assert_eq!(outcome.manifest.items[0].resumes, 1);
    let key = "a/a-00000.parquet";
    // Same input, same schema, same encoder: the files are byte-identical.
    assert_eq!(object(dir_ok.path(), key), object(dir_flaky.path(), key));
}

#[tokio::test]
async fn without_range_support_the_item_restarts_from_zero() {
    let server = TestServer::start();
    let body = big_body();
    let url = server.serve("a.csv", ServedFile::new(body.clone()).without_ranges());
    server.fail("a.csv", [Fault::DropAfter(250_000)]);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    let outcome = run_ok(cfg).await;
    assert_eq!(object(dir.path(), "a/a-00000.csv"), body);
    let requests = server.requests_to("a.csv");
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.header("range").is_none()));
    assert_eq!(outcome.manifest.items[0].attempts, 2);
    // The progress counters restarted with the item.
    assert_eq!(outcome.manifest.items[0].source.bytes, body.len() as u64);
}

#[tokio::test]
async fn a_source_that_changes_mid_transfer_restarts_the_item() {
    let server = TestServer::start();
    let old = big_body();
    // Slow enough that the file can be replaced while the first response is in flight.
    let url = server.serve(
        "a.csv",
        ServedFile::new(old).slow(16 * 1024, Duration::from_millis(5)),
    );
    server.fail("a.csv", [Fault::DropAfter(100_000)]);
    let mut new = typed_csv(15_000).into_bytes();
    new.extend_from_slice(b"# v2\n");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    let extract = tokio::spawn(async move { common::run(cfg, &task(0, 1)).await });
    // Replace the file once the first GET is under way: the resume's If-Range no longer
    // matches, the server answers 200 with the new file, and the item starts over.
    while server.requests_to("a.csv").is_empty() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.serve("a.csv", ServedFile::new(new.clone()));
    let outcome = extract.await.unwrap().unwrap();
    assert_eq!(object(dir.path(), "a/a-00000.csv"), new);
    let requests = server.requests_to("a.csv");
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_eq!(requests[1].header("range"), Some("bytes=100000-"));
    assert_eq!(requests[2].header("range"), None);
    assert_eq!(outcome.manifest.items[0].attempts, 2);
}

#[tokio::test]
async fn permanent_errors_fail_at_once_with_the_redacted_url_and_status() {
    let server = TestServer::start();
    let missing = server.url("nope.csv?$$app_token=SECRET123&x=1");
    let forbidden = server.serve("f.csv", ServedFile::new("a\n1\n"));
    server.fail("f.csv", [Fault::Status(403, None)]);
    let ok = server.serve("ok.csv", ServedFile::new("a\n1\n"));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![missing, forbidden, ok];
    let err = run(cfg, &task(0, 1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ExtractError::ItemsFailed {
                failed: 2,
                total: 3,
                ..
            }
        ),
        "{err}"
    );
    // The exit error names every failed item with its (redacted) source and cause.
    let message = err.to_string();
    assert!(message.starts_with("2 of 3 items failed"), "{message}");
    assert!(
        message.contains("HTTP 404") && message.contains("HTTP 403"),
        "{message}"
    );
    assert!(message.contains("/f.csv"), "{message}");
    assert!(!message.contains("SECRET123"), "{message}");
    assert_eq!(server.requests_to("nope.csv").len(), 1);
    assert_eq!(server.requests_to("f.csv").len(), 1);
    let manifest: serde_json::Value =
        serde_json::from_slice(&object(dir.path(), "_manifests/task-00000.json")).unwrap();
    let text = manifest.to_string();
    assert!(!text.contains("SECRET123"), "{text}");
    let errors: Vec<String> = manifest["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["error"].as_str().map(str::to_string))
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("nope.csv?$$app_token=REDACTED&x=1: HTTP 404")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("f.csv: HTTP 403")),
        "{errors:?}"
    );
    // The good item was still extracted (failures do not stop the rest of the share).
    assert_eq!(object(dir.path(), "ok/ok-00000.csv"), b"a\n1\n");
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![format!("http://127.0.0.1:{port}/a.csv")];
    cfg.http.retry.max_attempts = 3;
    let err = run(cfg, &task(0, 1)).await.unwrap_err();
    let manifest: serde_json::Value =
        serde_json::from_slice(&object(dir.path(), "_manifests/task-00000.json")).unwrap();
    let error = manifest["items"][0]["error"].as_str().unwrap().to_string();
    assert!(
        error.contains(&format!("127.0.0.1:{port}/a.csv")),
        "{error}"
    );
    assert!(error.to_lowercase().contains("connect"), "{error} / {err}");
    // The request was retried to the policy's limit; the item is not redone on top of that
    // (4 item attempts x 3 requests would multiply the wait on a dead host).
    assert!(error.contains("gave up after 3 attempts"), "{error}");
    assert_eq!(manifest["items"][0]["attempts"], 1, "{manifest}");
}
