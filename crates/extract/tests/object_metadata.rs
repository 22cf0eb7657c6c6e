//! What extract knows only at the end -- rows, bytes, SHA-256 -- is on every object it
//! commits (`sluice-rows`, `sluice-bytes`, `sluice-sha256`), next to the source metadata; and
//! an object without it is not a committed output: a retried task and `--skip-existing`
//! extract its item again instead of trusting the receipt. (Local directory here; the same
//! against fake-gcs-server, read back with `gcloud`/`gsutil`, is in the CLI tests.)

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{config, run, run_ok, task};
use sha2::Digest;
use sluice_extract::{BadRows, ItemStatus, OutputFormat};
use sluice_runtime::{CancellationToken, TaskContext};
use sluice_storage::{LocalStore, ObjectStore};
use sluice_testkit::{ServedFile, TestServer};

fn sha256(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

async fn metadata(dest: &Path, key: &str) -> BTreeMap<String, String> {
    LocalStore::new(dest, CancellationToken::new())
        .head(key)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{key} missing"))
        .metadata
}

/// A CSV of about `bytes` bytes with `n` data rows.
fn csv(min_bytes: usize) -> (Vec<u8>, u64) {
    let mut out = b"id,amount,label\n".to_vec();
    let mut rows = 0;
    while out.len() < min_bytes {
        out.extend_from_slice(format!("{rows},{}.5,label {}\n", rows * 7, rows % 13).as_bytes());
        rows += 1;
    }
    (out, rows)
}

#[tokio::test]
async fn every_object_carries_rows_bytes_and_sha256() {
    let server = TestServer::start();
    let (small, _) = csv(2_000);
    // Bigger than the sink's 1 MiB chunks: many writes before the commit.
    let (large, large_rows) = csv(3 * 1024 * 1024 + 100);
    let mut bad = large.clone();
    bad.extend_from_slice(b"x,not a number,z\nnot,enough\n");
    let small_url = server.serve("small.csv", ServedFile::new(small.clone()));
    let large_url = server.serve("large.csv", ServedFile::new(large.clone()));
    let bad_url = server.serve("bad.csv", ServedFile::new(bad));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path();

    // Passthrough: bytes and SHA-256, no row count.
    let mut cfg = config(dest);
    cfg.urls = vec![small_url.clone(), large_url.clone()];
    cfg.dataset = Some("raw".into());
    let outcome = run_ok(cfg).await;
    for (name, body) in [("small", &small), ("large", &large)] {
        let key = format!("raw/{name}-00000.csv");
        let m = metadata(dest, &key).await;
        assert_eq!(m["sluice-bytes"], body.len().to_string(), "{key}");
        assert_eq!(m["sluice-sha256"], sha256(body), "{key}");
        assert!(!m.contains_key("sluice-rows"), "{key}: {m:?}");
        assert_eq!(m["sluice-source"], server.url(&format!("{name}.csv")));
        assert_eq!(m["sluice-format"], "passthrough");
        let o = outcome
            .manifest
            .items
            .iter()
            .flat_map(|i| &i.objects)
            .find(|o| o.name == key)
            .unwrap();
        assert_eq!(m["sluice-sha256"], o.sha256);
    }

    // Parquet: rows too; quarantined rows go to a rejects object with its own count.
    let mut cfg = config(dest);
    cfg.urls = vec![small_url, large_url, bad_url];
    cfg.dataset = Some("pq".into());
    cfg.format = OutputFormat::Parquet;
    cfg.bad_rows = BadRows::Quarantine;
    let outcome = run_ok(cfg).await;
    let mut seen = 0;
    for item in &outcome.manifest.items {
        for o in &item.objects {
            let m = metadata(dest, &o.name).await;
            let data = std::fs::read(dest.join(&o.name)).unwrap();
            assert_eq!(m["sluice-rows"], o.rows.unwrap().to_string(), "{}", o.name);
            assert_eq!(m["sluice-bytes"], o.size.to_string(), "{}", o.name);
            assert_eq!(m["sluice-bytes"], data.len().to_string(), "{}", o.name);
            assert_eq!(m["sluice-sha256"], sha256(&data), "{}", o.name);
            assert_eq!(m["sluice-sha256"], o.sha256, "{}", o.name);
            assert_eq!(m["sluice-format"], "parquet");
            seen += 1;
            if let Some(r) = &o.rejects {
                let m = metadata(dest, &r.name).await;
                let data = std::fs::read(dest.join(&r.name)).unwrap();
                assert_eq!(m["sluice-rows"], "2", "{}", r.name);
                assert_eq!(r.rows, 2);
                assert_eq!(m["sluice-bytes"], data.len().to_string());
                assert_eq!(m["sluice-sha256"], sha256(&data));
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 4, "three Parquet objects and one rejects object");
    let large_pq = metadata(dest, "pq/large-00000.parquet").await;
    assert_eq!(large_pq["sluice-rows"], large_rows.to_string());

    // Receipts and task manifests carry bytes and SHA-256 as well.
    let manifest = "_manifests/task-00000.json";
    let m = metadata(dest, manifest).await;
    assert_eq!(
        m["sluice-sha256"],
        sha256(&std::fs::read(dest.join(manifest)).unwrap())
    );
}

/// Takes the commit-time metadata off an object's sidecar, as a task that died between
/// finalising a GCS upload and setting its metadata would leave it (size and data unchanged).
fn strip_commit_metadata(dest: &Path, key: &str) {
    let (dir, name) = key.rsplit_once('/').unwrap();
    let sidecar = dest.join(dir).join(format!(".{name}.sluice-meta.json"));
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
    let metadata = json["metadata"].as_object_mut().unwrap();
    for k in ["sluice-rows", "sluice-bytes", "sluice-sha256"] {
        metadata.remove(k);
    }
    std::fs::write(&sidecar, serde_json::to_vec(&json).unwrap()).unwrap();
}

fn statuses(outcome: &sluice_extract::TaskOutcome) -> Vec<(String, ItemStatus)> {
    outcome
        .manifest
        .items
        .iter()
        .map(|i| (i.name.clone(), i.status))
        .collect()
}

#[tokio::test]
async fn an_object_without_its_commit_metadata_is_extracted_again() {
    let server = TestServer::start();
    let a = server.serve("a.csv", ServedFile::new("x\n1\n2\n"));
    let b = server.serve("b.csv", ServedFile::new("x\n3\n"));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path();
    let mut cfg = config(dest);
    cfg.urls = vec![a, b];
    cfg.dataset = Some("d".into());
    cfg.format = OutputFormat::Parquet;
    // Receipts (what `--skip-existing` reads in a later execution) are written only by runs
    // with the flag; a retry reads the task journal either way.
    cfg.skip_existing = true;
    let first = task(0, 1);
    run(cfg.clone(), &first).await.unwrap();

    // A retried task (same execution) reuses `b`, but not `a`, whose object lacks it.
    strip_commit_metadata(dest, "d/a-00000.parquet");
    let retry = TaskContext {
        attempt: 1,
        ..first.clone()
    };
    let outcome = run(cfg.clone(), &retry).await.unwrap();
    assert_eq!(
        statuses(&outcome),
        [
            ("a".into(), ItemStatus::Extracted),
            ("b".into(), ItemStatus::Reused)
        ]
    );
    let m = metadata(dest, "d/a-00000.parquet").await;
    assert_eq!(m["sluice-rows"], "2", "the rewrite has its metadata again");

    // --skip-existing in a new execution: the unchanged `b` is skipped; `a`, stripped again,
    // is extracted rather than skipped.
    strip_commit_metadata(dest, "d/a-00000.parquet");
    let next = TaskContext {
        execution: Some("extract-test-exec2".into()),
        ..first
    };
    let outcome = run(cfg, &next).await.unwrap();
    assert_eq!(
        statuses(&outcome),
        [
            ("a".into(), ItemStatus::Extracted),
            ("b".into(), ItemStatus::Skipped)
        ]
    );
    assert_eq!(
        server
            .requests_to("b.csv")
            .iter()
            .filter(|r| r.method == "GET")
            .count(),
        1
    );
}
