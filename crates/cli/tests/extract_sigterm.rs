//! SIGTERM mid-download (what Cloud Run sends before SIGKILL) leaves no partial object, exits
//! 143, and a rerun of the task completes.

mod extract_support;

use std::time::Duration;

use extract_support::{
    all_files, csv_of_size, sigterm, sluice, spawn, text, visible_files, wait_for,
};
use sluice_testkit::{ServedFile, TestServer, read_parquet};

#[test]
fn sigterm_mid_download_leaves_nothing_and_a_rerun_completes() {
    let server = TestServer::start();
    let body = csv_of_size(3 * 1024 * 1024);
    // ~3 MiB at 32 KiB per 20 ms: about two seconds of transfer.
    let url = server.serve(
        "big.csv",
        ServedFile::new(body.clone()).slow(32 * 1024, Duration::from_millis(20)),
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let args = [
        "extract",
        "--url",
        &url,
        "--dest",
        dest.to_str().unwrap(),
        "--format",
        "parquet",
        "--progress-interval",
        "100ms",
    ];
    let child = spawn(
        sluice()
            .args(args)
            .env("CLOUD_RUN_JOB", "extract")
            .env("CLOUD_RUN_EXECUTION", "extract-x1")
            .env("CLOUD_RUN_TASK_ATTEMPT", "0"),
    );
    assert!(wait_for(Duration::from_secs(10), || !server
        .requests_to("big.csv")
        .is_empty()));
    // Well into the body, well before its end.
    std::thread::sleep(Duration::from_millis(600));
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(143), "{logs}");
    assert!(logs.contains("SIGTERM"), "{logs}");
    // Progress was being reported when the signal came.
    assert!(logs.contains("\"rate_bytes_per_sec\""), "{logs}");
    // No object, no journal part, no manifest, and no temp file left behind.
    assert_eq!(all_files(&dest), Vec::<String>::new(), "{logs}");

    // Cloud Run retries the task.
    let out = sluice()
        .args(args)
        .env("CLOUD_RUN_JOB", "extract")
        .env("CLOUD_RUN_EXECUTION", "extract-x1")
        .env("CLOUD_RUN_TASK_ATTEMPT", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let files = visible_files(&dest);
    assert_eq!(
        files,
        [
            "_manifests/executions/extract-x1/task-00000/a001-00000.json",
            "_manifests/task-00000.json",
            "big/big-00000.parquet"
        ]
    );
    let (_, batches, _) = read_parquet(std::fs::read(dest.join("big/big-00000.parquet")).unwrap());
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let expected = body.iter().filter(|&&b| b == b'\n').count() - 1;
    assert_eq!(rows, expected);
}
