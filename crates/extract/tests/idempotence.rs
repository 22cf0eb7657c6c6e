//! Idempotence: a retried task redoes only what is not committed; `--skip-existing` skips
//! sources whose version is unchanged without downloading them; a new execution rewrites the
//! same keys.

mod common;

use common::{config, object, run, task};
use sluice_extract::ItemStatus;
use sluice_runtime::TaskContext;
use sluice_testkit::{Fault, ServedFile, TestServer};

fn gets(server: &TestServer, path: &str) -> usize {
    server
        .requests_to(path)
        .iter()
        .filter(|r| r.method == "GET")
        .count()
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
async fn a_retried_attempt_redoes_only_what_is_not_committed() {
    let server = TestServer::start();
    let urls: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| server.serve(&format!("{n}.csv"), ServedFile::new(format!("x\n{n}\n"))))
        .collect();
    // `c` fails on the first attempt (a permanent status, once).
    server.fail("c.csv", [Fault::Status(404, None)]);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = urls.clone();
    cfg.dataset = Some("d".into());
    let first = task(0, 1);
    assert!(run(cfg.clone(), &first).await.is_err());
    let manifest: serde_json::Value =
        serde_json::from_slice(&object(dir.path(), "_manifests/task-00000.json")).unwrap();
    assert_eq!(manifest["complete"], false);

    // Cloud Run retries the task: same execution, attempt 1.
    let retry = TaskContext {
        attempt: 1,
        ..first.clone()
    };
    let outcome = run(cfg.clone(), &retry).await.unwrap();
    assert_eq!(
        statuses(&outcome),
        [
            ("a".into(), ItemStatus::Reused),
            ("b".into(), ItemStatus::Reused),
            ("c".into(), ItemStatus::Extracted)
        ]
    );
    assert_eq!(
        (
            gets(&server, "a.csv"),
            gets(&server, "b.csv"),
            gets(&server, "c.csv")
        ),
        (1, 1, 2)
    );
    assert!(outcome.manifest.complete);
    assert_eq!(outcome.manifest.totals.objects, 3);
    assert_eq!(object(dir.path(), "d/c-00000.csv"), b"x\nc\n");

    // A reused item whose object has since vanished is extracted again.
    std::fs::remove_file(dir.path().join("d/a-00000.csv")).unwrap();
    let again = TaskContext {
        attempt: 2,
        ..first.clone()
    };
    let outcome = run(cfg.clone(), &again).await.unwrap();
    assert_eq!(outcome.manifest.items[0].status, ItemStatus::Extracted);
    assert_eq!(gets(&server, "a.csv"), 2);

    // A new execution does not trust the old one: everything is extracted again, same keys.
    let next = TaskContext {
        execution: Some("extract-test-exec2".into()),
        attempt: 0,
        ..first
    };
    let outcome = run(cfg, &next).await.unwrap();
    assert!(
        outcome
            .manifest
            .items
            .iter()
            .all(|i| i.status == ItemStatus::Extracted)
    );
    assert_eq!(
        (
            gets(&server, "a.csv"),
            gets(&server, "b.csv"),
            gets(&server, "c.csv")
        ),
        (3, 2, 3)
    );
}

#[tokio::test]
async fn skip_existing_compares_source_versions_without_downloading() {
    let server = TestServer::start();
    let a = server.serve("a.csv", ServedFile::new("x\n1\n"));
    let b = server.serve("b.csv", ServedFile::new("x\n2\n"));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![a, b];
    cfg.skip_existing = true;
    let outcome = run(cfg.clone(), &task(0, 1)).await.unwrap();
    assert!(
        outcome
            .manifest
            .items
            .iter()
            .all(|i| i.status == ItemStatus::Extracted)
    );

    // `b` changes (new ETag); `a` does not.
    server.serve("b.csv", ServedFile::new("x\n2\n3\n"));
    let next = TaskContext {
        execution: Some("extract-test-exec2".into()),
        ..task(0, 1)
    };
    let outcome = run(cfg, &next).await.unwrap();
    assert_eq!(
        statuses(&outcome),
        [
            ("a".into(), ItemStatus::Skipped),
            ("b".into(), ItemStatus::Extracted)
        ]
    );
    assert_eq!(
        gets(&server, "a.csv"),
        1,
        "a skipped item must not be downloaded"
    );
    let heads = server
        .requests_to("a.csv")
        .iter()
        .filter(|r| r.method == "HEAD")
        .count();
    assert_eq!(heads, 1);
    assert_eq!(object(dir.path(), "b/b-00000.csv"), b"x\n2\n3\n");
    // The skipped item's objects are still listed for `load`.
    assert_eq!(outcome.manifest.items[0].objects[0].name, "a/a-00000.csv");
    assert_eq!(outcome.manifest.totals.objects, 2);
}
