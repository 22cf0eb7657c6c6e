//! `--since auto` for files (`docs/state.md`): the first run (no state) pulls everything; with
//! the state `load` wrote, an unchanged source is skipped without a download and with no
//! objects, a changed one is pulled. Real HTTP on loopback (the `TestServer` serves ETag and
//! Last-Modified), a local destination.

mod common;

use common::{config, run, task};
use sluice_extract::ItemStatus;
use sluice_manifest::{SourceState, StateFile};
use sluice_runtime::TaskContext;
use sluice_testkit::{ServedFile, TestServer};

fn gets(server: &TestServer, path: &str) -> usize {
    server
        .requests_to(path)
        .iter()
        .filter(|r| r.method == "GET")
        .count()
}

/// What `load` stores for dataset `d` after loading `items` (their source versions).
fn store_loaded_state(dest: &std::path::Path, items: &[sluice_extract::ItemRecord]) -> StateFile {
    let mut state = StateFile::new("d");
    for item in items {
        state.sources.insert(
            format!("d/{}", item.name),
            SourceState {
                column: None,
                mark: None,
                source_version: Some(item.source.version.clone()),
                extracted_by: item.execution.clone(),
                advanced_by: Some("load-1".into()),
                advanced_at: "2026-12-01T06:00:00Z".into(),
            },
        );
    }
    std::fs::create_dir_all(dest.join("_state")).unwrap();
    std::fs::write(dest.join("_state/d.json"), state.to_bytes()).unwrap();
    state
}

#[tokio::test]
async fn files_are_pulled_first_then_skipped_while_unchanged() {
    let server = TestServer::start();
    let a = server.serve("a.csv", ServedFile::new("x\n1\n"));
    let b = server.serve("b.csv", ServedFile::new("x\n2\n"));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![a, b];
    cfg.dataset = Some("d".into());
    cfg.since_auto = true;

    // Day 1, no state file: a full pull; every item says which state entry it feeds.
    let day1 = run(cfg.clone(), &task(0, 1)).await.unwrap();
    let items = &day1.manifest.items;
    assert!(items.iter().all(|i| i.status == ItemStatus::Extracted));
    for item in items {
        let cursor = item.source.cursor.as_ref().expect("a cursor record");
        assert_eq!(cursor.state_key, format!("d/{}", item.name));
        assert_eq!(
            (&cursor.column, &cursor.from, &cursor.to),
            (&None, &None, &None)
        );
        assert!(
            item.source.version.etag.is_some(),
            "{:?}",
            item.source.version
        );
    }
    assert!(
        !dir.path().join("_state").exists(),
        "extract never writes the state"
    );

    // What `load` stores after loading day 1.
    let state = store_loaded_state(dir.path(), items);

    // Day 2: `b` changed (new ETag), `a` did not.
    server.serve("b.csv", ServedFile::new("x\n2\n3\n"));
    let day2 = TaskContext {
        execution: Some("extract-test-day2".into()),
        ..task(0, 1)
    };
    let outcome = run(cfg.clone(), &day2).await.unwrap();
    let by_name: Vec<(&str, ItemStatus, usize)> = outcome
        .manifest
        .items
        .iter()
        .map(|i| (i.name.as_str(), i.status, i.objects.len()))
        .collect();
    assert_eq!(
        by_name,
        [
            ("a", ItemStatus::Skipped, 0),
            ("b", ItemStatus::Extracted, 1)
        ],
        "an unchanged file is skipped with no objects (nothing for load to append again)"
    );
    assert_eq!(
        gets(&server, "a.csv"),
        1,
        "a skipped file must not be downloaded"
    );
    assert_eq!(gets(&server, "b.csv"), 2);
    // The new version is what load will store for `b`.
    let b_item = &outcome.manifest.items[1];
    assert_ne!(
        b_item.source.version,
        state.sources["d/b"].source_version.clone().unwrap()
    );
    assert!(outcome.manifest.complete);

    // `--since TS` overrides: nothing is compared for files (no cursor records at all).
    let mut literal = cfg.clone();
    literal.since_auto = false;
    literal.socrata_options.since = Some("2026-01-01T00:00:00".into());
    let day3 = TaskContext {
        execution: Some("extract-test-day3".into()),
        ..task(0, 1)
    };
    let outcome = run(literal, &day3).await.unwrap();
    assert!(
        outcome
            .manifest
            .items
            .iter()
            .all(|i| i.status == ItemStatus::Extracted && i.source.cursor.is_none())
    );
}

/// Many servers (static file servers, Python's http.server, some portals) send no ETag: the
/// version is then Last-Modified plus the size from the HEAD's Content-Length.
#[tokio::test]
async fn without_an_etag_last_modified_and_size_decide() {
    let server = TestServer::start();
    let plain = |body: &'static str, modified: &str| ServedFile {
        etag: None,
        last_modified: Some(modified.into()),
        ..ServedFile::new(body)
    };
    let a = server.serve("a.csv", plain("x\n1\n", "Mon, 30 Nov 2026 06:00:00 GMT"));
    let b = server.serve("b.csv", plain("x\n2\n", "Mon, 30 Nov 2026 06:00:00 GMT"));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![a, b];
    cfg.dataset = Some("d".into());
    cfg.since_auto = true;
    let day1 = run(cfg.clone(), &task(0, 1)).await.unwrap();
    for item in &day1.manifest.items {
        assert_eq!(
            item.source.version.size,
            Some(4),
            "{:?}",
            item.source.version
        );
    }
    store_loaded_state(dir.path(), &day1.manifest.items);

    // Day 2: `b` republished (new Last-Modified), `a` untouched.
    server.serve("b.csv", plain("x\n2\n", "Tue, 01 Dec 2026 06:00:00 GMT"));
    let day2 = TaskContext {
        execution: Some("extract-test-day2".into()),
        ..task(0, 1)
    };
    let outcome = run(cfg, &day2).await.unwrap();
    let statuses: Vec<(&str, ItemStatus)> = outcome
        .manifest
        .items
        .iter()
        .map(|i| (i.name.as_str(), i.status))
        .collect();
    assert_eq!(
        statuses,
        [("a", ItemStatus::Skipped), ("b", ItemStatus::Extracted)]
    );
    assert_eq!(
        gets(&server, "a.csv"),
        1,
        "a skipped file is not downloaded"
    );
}

#[tokio::test]
async fn a_broken_state_file_is_refused_by_name() {
    let server = TestServer::start();
    let a = server.serve("a.csv", ServedFile::new("x\n1\n"));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![a];
    cfg.dataset = Some("d".into());
    cfg.since_auto = true;
    std::fs::create_dir_all(dir.path().join("_state")).unwrap();
    std::fs::write(
        dir.path().join("_state/d.json"),
        b"{\"kind\": \"sluice.state\"}",
    )
    .unwrap();
    let err = run(cfg, &task(0, 1)).await.unwrap_err();
    assert!(err.is_config(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("_state/d.json") && text.contains("field `version`: missing"),
        "{text}"
    );
    assert_eq!(
        gets(&server, "a.csv"),
        0,
        "nothing is pulled before the state is understood"
    );
}
