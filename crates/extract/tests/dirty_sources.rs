//! Sources that misbehave the way open-data portals do (issue 13): a maintenance page or an
//! API error served with 200 where data was expected, Latin-1 / Windows-1252 / UTF-16 text,
//! and sources that drip, stall or take too long. Each against the real test HTTP server,
//! with outputs read back (Parquet with a real reader).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use bytes::Bytes;
use common::{config, keys, object, run, run_ok, task};
use sluice_extract::{BadRows, ExtractConfig, ExtractError, OutputFormat};
use sluice_runtime::CancellationToken;
use sluice_storage::{LocalStore, ObjectStore};
use sluice_testkit::{Fault, ServedFile, TestServer, gzip, read_parquet};

const PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Down for maintenance</title></head>\
    <body><h1>We'll be back soon</h1><p>The portal is being upgraded.</p></body></html>\n";

/// Runs a config that must fail; returns the error of its only item (from the manifest).
async fn item_error(cfg: ExtractConfig, dest: &Path) -> String {
    let err = run(cfg, &task(0, 1)).await.unwrap_err();
    assert!(
        matches!(err, ExtractError::ItemsFailed { failed: 1, .. }),
        "{err}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&object(dest, "_manifests/task-00000.json")).unwrap();
    manifest["items"][0]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {manifest}"))
        .to_string()
}

/// Only the task manifest and receipts: no data object was written.
fn no_data_objects(dest: &Path) {
    let written: Vec<String> = keys(dest)
        .into_iter()
        .filter(|k| !k.starts_with("_"))
        .collect();
    assert!(written.is_empty(), "{written:?}");
}

async fn metadata(dest: &Path, key: &str) -> std::collections::BTreeMap<String, String> {
    LocalStore::new(dest, CancellationToken::new())
        .head(key)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{key} missing"))
        .metadata
}

fn strings(dest: &Path, key: &str, column: usize) -> Vec<String> {
    let (_, batches, _) = read_parquet(Bytes::from(object(dest, key)));
    batches
        .iter()
        .flat_map(|b| {
            let col = b.column(column).as_string::<i32>();
            (0..col.len())
                .map(|i| col.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

// ---- not data ----

#[tokio::test]
async fn an_html_page_served_as_text_html_fails_after_retries() {
    let server = TestServer::start();
    let url = server.serve(
        "a.csv",
        ServedFile::new(PAGE).with_content_type("text/html; charset=utf-8"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![format!("{url}?token=SECRET42")];
    let error = item_error(cfg, dir.path()).await;
    assert!(error.contains("a.csv?token=REDACTED"), "{error}");
    assert!(!error.contains("SECRET42"), "{error}");
    assert!(error.contains("not data: got an HTML page"), "{error}");
    assert!(
        error.contains("Content-Type text/html; charset=utf-8"),
        "{error}"
    );
    assert!(
        error.contains("body starts \"<!DOCTYPE html> <html><head><title>Down for maintenance"),
        "{error}"
    );
    assert!(error.contains("--accept-any-content"), "{error}");
    // Transient: retried by the request policy (6 attempts in tests), then final.
    assert!(error.contains("gave up after 6 attempts"), "{error}");
    assert_eq!(server.requests_to("a.csv").len(), 6);
    no_data_objects(dir.path());
}

#[tokio::test]
async fn an_html_body_served_as_csv_fails_in_passthrough_and_parquet() {
    let server = TestServer::start();
    let url = server.serve("b.csv", ServedFile::new(PAGE)); // text/csv
    for (format, bad_rows) in [
        (OutputFormat::Passthrough, BadRows::Fail),
        (OutputFormat::Parquet, BadRows::Quarantine),
        (OutputFormat::Parquet, BadRows::Fail),
    ] {
        let before = server.requests_to("b.csv").len();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.urls = vec![url.clone()];
        cfg.format = format;
        cfg.bad_rows = bad_rows;
        let error = item_error(cfg, dir.path()).await;
        assert!(
            error.contains("b.csv: not data: got an HTML page where CSV data (.csv) was expected (Content-Type text/csv, body starts"),
            "{error}"
        );
        assert_eq!(server.requests_to("b.csv").len() - before, 6);
        no_data_objects(dir.path());
    }
}

#[tokio::test]
async fn a_json_error_body_for_a_csv_item_is_not_data() {
    let server = TestServer::start();
    let url = server.serve(
        "resource/x.csv",
        ServedFile::new(r#"{"error":true,"message":"Service temporarily unavailable"}"#)
            .with_content_type("application/json"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    cfg.http.retry.max_attempts = 2;
    let error = item_error(cfg, dir.path()).await;
    assert!(error.contains("got a JSON document"), "{error}");
    assert!(error.contains("Service temporarily unavailable"), "{error}");
    assert_eq!(server.requests_to("resource/x.csv").len(), 2);
}

#[tokio::test]
async fn a_page_that_goes_away_is_retried_into_the_data() {
    let server = TestServer::start();
    let url = server.serve(
        "c.csv",
        ServedFile::new(PAGE).with_content_type("text/html"),
    );
    // The portal comes back while the request is being retried.
    let data = b"id,v\n1,a\n".to_vec();
    let swap = {
        let data = data.clone();
        let server = &server;
        let started = Instant::now();
        async move {
            while server.requests_to("c.csv").is_empty() {
                assert!(started.elapsed() < Duration::from_secs(10));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            server.serve("c.csv", ServedFile::new(data));
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    cfg.http.retry.initial_delay = Duration::from_millis(200);
    cfg.http.retry.max_delay = Duration::from_millis(400);
    let (outcome, ()) = tokio::join!(run_ok(cfg), swap);
    assert_eq!(object(dir.path(), "c/c-00000.csv"), data);
    assert_eq!(outcome.manifest.items[0].attempts, 1);
    assert!(server.requests_to("c.csv").len() >= 2);
}

#[tokio::test]
async fn accept_any_content_stores_the_page() {
    let server = TestServer::start();
    let url = server.serve(
        "a.csv",
        ServedFile::new(PAGE).with_content_type("text/html"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    cfg.csv.accept_any_content = true;
    run_ok(cfg).await;
    assert_eq!(object(dir.path(), "a/a-00000.csv"), PAGE.as_bytes());
    assert_eq!(server.requests_to("a.csv").len(), 1);
}

#[tokio::test]
async fn html_inside_a_gzip_or_a_local_file_fails_without_retries() {
    let server = TestServer::start();
    let url = server.serve("d.csv.gz", ServedFile::new(gzip(PAGE.as_bytes())));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    let error = item_error(cfg, dir.path()).await;
    assert!(
        error.contains("d.csv.gz: not data: got an HTML page"),
        "{error}"
    );
    assert!(!error.contains("gave up"), "{error}");
    // Retrying cannot change what a file holds.
    assert_eq!(server.requests_to("d.csv.gz").len(), 1);
    no_data_objects(dir.path());

    let src = tempfile::tempdir().unwrap();
    let page = src.path().join("e.csv");
    std::fs::write(&page, PAGE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![page.display().to_string()];
    cfg.format = OutputFormat::Parquet;
    let error = item_error(cfg, dir.path()).await;
    assert!(
        error.contains("e.csv: not data: got an HTML page"),
        "{error}"
    );
}

#[tokio::test]
async fn data_that_merely_looks_odd_is_not_refused() {
    let server = TestServer::start();
    // An extension-less JSON API in passthrough, a CSV served as text/plain.
    let json = r#"{"rows":[1,2,3]}"#;
    let api = server.serve(
        "api/v1/data",
        ServedFile::new(json).with_content_type("application/json"),
    );
    let csv = "<5,>10\n1,2\n";
    let plain = server.serve(
        "f.csv",
        ServedFile::new(csv).with_content_type("text/plain"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![api, plain];
    run_ok(cfg).await;
    assert_eq!(object(dir.path(), "data/data-00000.bin"), json.as_bytes());
    assert_eq!(object(dir.path(), "f/f-00000.csv"), csv.as_bytes());
}

// ---- encodings ----

fn latin1() -> Vec<u8> {
    // name,city / José,München / Straße,Köln, in ISO-8859-1.
    b"name,city\nJos\xe9,M\xfcnchen\nStra\xdfe,K\xf6ln\n".to_vec()
}

fn cp1252() -> Vec<u8> {
    // price,quote / € 5,“quoted” / 3 €,don’t
    b"price,quote\n\x80 5,\x93quoted\x94\n3 \x80,don\x92t\n".to_vec()
}

#[tokio::test]
async fn latin1_and_windows_1252_come_out_as_utf8_in_passthrough_and_parquet() {
    let server = TestServer::start();
    let a = server.serve("latin1.csv", ServedFile::new(latin1()));
    let b = server.serve("cp1252.csv", ServedFile::new(cp1252()));
    for label in ["latin1", "windows-1252"] {
        let encoding = sluice_extract::parse_encoding(label).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.urls = vec![a.clone(), b.clone()];
        cfg.csv.encoding = Some(encoding);
        run_ok(cfg).await;
        assert_eq!(
            String::from_utf8(object(dir.path(), "latin1/latin1-00000.csv")).unwrap(),
            "name,city\nJosé,München\nStraße,Köln\n"
        );
        assert_eq!(
            String::from_utf8(object(dir.path(), "cp1252/cp1252-00000.csv")).unwrap(),
            "price,quote\n€ 5,“quoted”\n3 €,don’t\n"
        );
        let meta = metadata(dir.path(), "latin1/latin1-00000.csv").await;
        assert_eq!(
            meta.get("sluice-source-encoding").map(String::as_str),
            Some("windows-1252")
        );

        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.urls = vec![a.clone(), b.clone()];
        cfg.csv.encoding = Some(encoding);
        cfg.format = OutputFormat::Parquet;
        run_ok(cfg).await;
        let key = "latin1/latin1-00000.parquet";
        assert_eq!(strings(dir.path(), key, 0), ["José", "Straße"]);
        assert_eq!(strings(dir.path(), key, 1), ["München", "Köln"]);
        let key = "cp1252/cp1252-00000.parquet";
        assert_eq!(strings(dir.path(), key, 0), ["€ 5", "3 €"]);
        assert_eq!(strings(dir.path(), key, 1), ["“quoted”", "don’t"]);
    }
}

#[tokio::test]
async fn without_encoding_latin1_is_not_silently_altered() {
    let server = TestServer::start();
    let url = server.serve("latin1.csv", ServedFile::new(latin1()));
    // Passthrough stays a byte-exact copy.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url.clone()];
    run_ok(cfg).await;
    assert_eq!(object(dir.path(), "latin1/latin1-00000.csv"), latin1());
    // Parquet: the invalid UTF-8 is the converter's to report, never replaced with U+FFFD.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    cfg.format = OutputFormat::Parquet;
    cfg.bad_rows = BadRows::Quarantine;
    match run(cfg, &task(0, 1)).await {
        // Rows with invalid UTF-8 are bad rows: quarantined, never stored altered.
        Ok(_) => {
            let values = strings(dir.path(), "latin1/latin1-00000.parquet", 0);
            assert!(!values.iter().any(|v| v.contains('\u{fffd}')), "{values:?}");
        }
        // (Before the converter quarantines invalid UTF-8 in the inference sample, it fails
        // the item, naming the problem.)
        Err(_) => {
            let manifest: serde_json::Value =
                serde_json::from_slice(&object(dir.path(), "_manifests/task-00000.json")).unwrap();
            let error = manifest["items"][0]["error"].as_str().unwrap_or_default();
            assert!(error.to_lowercase().contains("utf-8"), "{error}");
        }
    }
}

fn utf16le_bom(text: &str) -> Vec<u8> {
    let mut out = vec![0xFF, 0xFE];
    out.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    out
}

#[tokio::test]
async fn utf16le_with_a_bom_is_read_without_a_flag_and_a_bom_wins_over_the_flag() {
    let server = TestServer::start();
    let text = "id,name\n1,Zoë\n2,日本\n";
    let url = server.serve("u16.csv", ServedFile::new(utf16le_bom(text)));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url.clone()];
    cfg.format = OutputFormat::Parquet;
    run_ok(cfg).await;
    assert_eq!(
        strings(dir.path(), "u16/u16-00000.parquet", 1),
        ["Zoë", "日本"]
    );
    let meta = metadata(dir.path(), "u16/u16-00000.parquet").await;
    assert_eq!(meta["sluice-source-encoding"], "UTF-16LE");

    // Passthrough without --encoding: the bytes as served.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url.clone()];
    run_ok(cfg).await;
    assert_eq!(object(dir.path(), "u16/u16-00000.csv"), utf16le_bom(text));
    // With any --encoding: UTF-8, as the BOM says (not as windows-1252).
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    cfg.csv.encoding = Some(encoding_rs::WINDOWS_1252);
    run_ok(cfg).await;
    assert_eq!(object(dir.path(), "u16/u16-00000.csv"), text.as_bytes());
}

#[tokio::test]
async fn multibyte_sequences_split_across_network_chunks_and_gzip() {
    let server = TestServer::start();
    let mut text = String::from("id,word\n");
    for i in 0..2000 {
        text.push_str(&format!("{i},日本語テキスト€{i}\n"));
    }
    let ascii_euro = text.replace('€', "E");
    let (sjis, _, unmappable) = encoding_rs::SHIFT_JIS.encode(&ascii_euro);
    assert!(!unmappable);
    let utf16: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    // Odd chunk sizes put sequences across chunk boundaries everywhere.
    let a = server.serve(
        "sjis.csv",
        ServedFile::new(sjis.into_owned()).slow(7, Duration::ZERO),
    );
    let b = server.serve(
        "u16.csv.gz",
        ServedFile::new(gzip(&utf16)).slow(5, Duration::ZERO),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![a.clone()];
    cfg.csv.encoding = Some(encoding_rs::SHIFT_JIS);
    run_ok(cfg).await;
    assert_eq!(
        String::from_utf8(object(dir.path(), "sjis/sjis-00000.csv")).unwrap(),
        ascii_euro
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![b];
    cfg.csv.encoding = Some(encoding_rs::UTF_16LE);
    cfg.format = OutputFormat::Parquet;
    run_ok(cfg).await;
    let words = strings(dir.path(), "u16/u16-00000.parquet", 1);
    assert_eq!(words.len(), 2000);
    assert_eq!(words[1999], "日本語テキスト€1999");
}

#[tokio::test]
async fn bytes_invalid_in_the_declared_encoding_fail_with_line_and_offset() {
    let server = TestServer::start();
    let url = server.serve(
        "bad.csv",
        ServedFile::new(b"id,v\n1,ok\n2,\x81 bad\n".to_vec()),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    cfg.csv.encoding = Some(encoding_rs::SHIFT_JIS);
    let error = item_error(cfg, dir.path()).await;
    assert!(
        error.contains("bad.csv: line 3, byte offset 12: bytes 81"),
        "{error}"
    );
    no_data_objects(dir.path());
}

// ---- bounded time ----

fn assert_within(started: Instant, limit: Duration) {
    assert!(
        started.elapsed() < limit,
        "took {:?}, limit {limit:?}",
        started.elapsed()
    );
}

async fn timed_failure(cfg: ExtractConfig, dest: &Path) -> (String, Duration) {
    let started = Instant::now();
    let error = item_error(cfg, dest).await;
    (error, started.elapsed())
}

#[tokio::test]
async fn a_drip_fails_on_min_rate_within_the_window() {
    let server = TestServer::start();
    let body = "x".repeat(5000);
    let url = server.serve(
        "drip.csv",
        ServedFile::new(body).slow(1, Duration::from_millis(500)),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    cfg.http.min_rate = 1024;
    cfg.http.min_rate_window = Duration::from_secs(3);
    let (error, took) = timed_failure(cfg, dir.path()).await;
    assert!(took >= Duration::from_secs(3), "{took:?}: {error}");
    assert!(took < Duration::from_secs(6), "{took:?}: {error}");
    assert!(
        error.contains("drip.csv: --min-rate: received") && error.contains("in the last 3s"),
        "{error}"
    );
    assert!(error.contains("below the minimum of 1.0 KiB/s"), "{error}");
    // Final at once: neither the request nor the item is retried.
    assert_eq!(server.requests_to("drip.csv").len(), 1);
    no_data_objects(dir.path());
}

#[tokio::test]
async fn a_drip_after_a_good_start_fails_in_the_pump_too() {
    let server = TestServer::start();
    // 2 KiB per second: past the not-data sniff at once, then too slow for 100 KiB/s.
    let mut body = "id,v\n".to_string();
    body.push_str(&"1,aaaa\n".repeat(8000));
    let url = server.serve(
        "slow.csv",
        ServedFile::new(body).slow(2048, Duration::from_secs(1)),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    cfg.http.min_rate = 100 * 1024;
    cfg.http.min_rate_window = Duration::from_secs(2);
    cfg.format = OutputFormat::Parquet;
    let (error, took) = timed_failure(cfg, dir.path()).await;
    assert!(took < Duration::from_secs(6), "{took:?}: {error}");
    assert!(error.contains("--min-rate: received"), "{error}");
    no_data_objects(dir.path());
}

#[tokio::test]
async fn a_stall_fails_via_the_read_timeout_in_bounded_time() {
    let server = TestServer::start();
    let body = "id,v\n".to_string() + &"1,a\n".repeat(5000);
    // 2000 bytes, then nothing for an hour; no ranges, so each attempt starts over.
    let url = server.serve(
        "stall.csv",
        ServedFile::new(body)
            .slow(2000, Duration::from_secs(3600))
            .without_ranges(),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    cfg.http.read_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let error = item_error(cfg, dir.path()).await;
    assert_within(started, Duration::from_secs(12));
    assert!(
        error.contains("stall.csv: connection broke mid-body"),
        "{error}"
    );
    assert!(error.contains("read timeout"), "{error}");
    // The item was attempted 4 times (each a fresh GET), never more.
    assert_eq!(server.requests_to("stall.csv").len(), 4);
    no_data_objects(dir.path());
}

#[tokio::test]
async fn item_timeout_bounds_a_slow_but_steady_transfer() {
    let server = TestServer::start();
    // 10 KB/s: fast enough for --min-rate, too slow for a 2 s deadline.
    let body = "id,v\n".to_string() + &"1,aaaaaaaaa\n".repeat(10_000);
    let url = server.serve(
        "steady.csv",
        ServedFile::new(body).slow(1000, Duration::from_millis(100)),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    cfg.http.item_timeout = Duration::from_secs(2);
    let (error, took) = timed_failure(cfg, dir.path()).await;
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}: {error}"
    );
    assert!(
        error.contains("steady.csv: --item-timeout 2s reached: the item has run 2"),
        "{error}"
    );
    no_data_objects(dir.path());
}

#[tokio::test]
async fn item_timeout_bounds_retries_and_backoff_too() {
    let server = TestServer::start();
    let url = server.serve("busy.csv", ServedFile::new("a\n1\n"));
    // The server keeps asking for 2 s more; the deadline does not wait for it.
    server.fail(
        "busy.csv",
        (0..10).map(|_| Fault::Status(503, Some("2".into()))),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    cfg.http.item_timeout = Duration::from_millis(2500);
    let (error, took) = timed_failure(cfg, dir.path()).await;
    assert!(took < Duration::from_secs(4), "{took:?}: {error}");
    assert!(error.contains("--item-timeout 2.5s reached"), "{error}");
    assert_eq!(server.requests_to("busy.csv").len(), 2);
}

#[tokio::test]
async fn restarts_of_a_stalled_source_share_one_min_rate_window() {
    let server = TestServer::start();
    let body = "id,v\n".to_string() + &"1,a\n".repeat(5000);
    let url = server.serve(
        "stall2.csv",
        ServedFile::new(body)
            .slow(200, Duration::from_secs(3600))
            .without_ranges(),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    cfg.http.read_timeout = Duration::from_secs(1);
    cfg.http.min_rate_window = Duration::from_millis(2500);
    let (error, took) = timed_failure(cfg, dir.path()).await;
    // Each attempt gets 200 bytes, then stalls 1 s into its read timeout (inside the
    // not-data sniff, so the request is retried); a meter per attempt would never see a whole
    // 2.5 s window. The item's one meter does, in the third attempt.
    assert!(
        error.contains("stall2.csv: --min-rate: received"),
        "{error}"
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert_eq!(server.requests_to("stall2.csv").len(), 3);
}
