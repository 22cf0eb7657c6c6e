//! The real `sluice extract` binary on dirty sources (issue 13): a maintenance page served
//! with 200 fails the task (exit 1) after retries, naming the URL and what arrived, unless
//! `--accept-any-content`; `--encoding` turns Latin-1 into UTF-8; a drip ends on `--min-rate`.

mod extract_support;

use std::time::{Duration, Instant};

use extract_support::{all_files, sluice, text};
use sluice_testkit::{ServedFile, TestServer};

const PAGE: &str = "<!DOCTYPE html><html><head><title>Scheduled maintenance</title></head></html>";

#[test]
fn a_maintenance_page_exits_1_after_retries_and_the_flag_lets_it_through() {
    let server = TestServer::start();
    let url = server.serve(
        "a.csv",
        ServedFile::new(PAGE).with_content_type("text/html"),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = sluice()
        .args(["extract", "--url", &url, "--dest"])
        .arg(dir.path())
        .env("SLUICE_MAX_ATTEMPTS", "3")
        .output()
        .unwrap();
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(1), "{logs}");
    assert!(
        logs.contains("a.csv: not data: got an HTML page where CSV data (.csv) was expected"),
        "{logs}"
    );
    assert!(logs.contains("Scheduled maintenance"), "{logs}");
    assert_eq!(server.requests_to("a.csv").len(), 3);
    assert!(!all_files(dir.path()).iter().any(|f| f.ends_with(".csv")));

    let out = sluice()
        .args(["extract", "--url", &url, "--dest"])
        .arg(dir.path())
        .env("SLUICE_ACCEPT_ANY_CONTENT", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read(dir.path().join("a/a-00000.csv")).unwrap(),
        PAGE.as_bytes()
    );
}

#[test]
fn encoding_latin1_writes_utf8() {
    let server = TestServer::start();
    let url = server.serve(
        "l1.csv",
        ServedFile::new(b"name\nJos\xe9\nStra\xdfe\n".to_vec()),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = sluice()
        .args(["extract", "--url", &url, "--encoding", "latin1", "--dest"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("l1/l1-00000.csv")).unwrap(),
        "name\nJosé\nStraße\n"
    );
}

#[test]
fn a_drip_exits_1_on_min_rate_in_bounded_time() {
    let server = TestServer::start();
    let url = server.serve(
        "drip.csv",
        ServedFile::new("x".repeat(1000)).slow(1, Duration::from_millis(500)),
    );
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = sluice()
        .args([
            "extract",
            "--url",
            &url,
            "--min-rate",
            "1KiB/s",
            "--min-rate-window",
            "2s",
        ])
        .arg("--dest")
        .arg(dir.path())
        .output()
        .unwrap();
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(1), "{logs}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(logs.contains("drip.csv: --min-rate: received"), "{logs}");
    assert!(logs.contains("in the last 2s"), "{logs}");
}
