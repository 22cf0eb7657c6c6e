//! `--since auto --cursor COL` for a growing CSV (`docs/state.md`, "Files with a cursor
//! column"): day 1 is a full pull; once `load` stored `max(COL)` (simulated here with the
//! manifest crate's types, as load writes them), day 2 writes only the rows after the mark, an
//! old row changed in place without a later COL value is not pulled again, `--lag` re-reads a
//! window, an unchanged file is skipped, a changed file with nothing new commits an empty
//! object, and retries give the same rows. Real HTTP on loopback, a local destination.

mod common;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use bytes::Bytes;
use common::{config, run, task};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice_extract::{ExtractConfig, ItemRecord, ItemStatus, OutputFormat, TaskOutcome};
use sluice_manifest::{SourceState, StateFile};
use sluice_runtime::TaskContext;
use sluice_testkit::{ServedFile, TestServer};

const DAY1: &str = "\
id,updated_at,amount
1,2026-11-25 10:00:00,10
2,2026-11-26 10:00:00,20
3,2026-11-27 10:00:00,30
4,,40
5,2026-11-29 10:00:00,50
";

/// Day 2: row 2 changed in place (amount) with the same `updated_at`; rows 6 and 7 are new,
/// 6 is within a day of the old mark.
const DAY2: &str = "\
id,updated_at,amount
1,2026-11-25 10:00:00,10
2,2026-11-26 10:00:00,21
3,2026-11-27 10:00:00,30
4,,40
5,2026-11-29 10:00:00,50
6,2026-11-29 12:00:00,60
7,2026-11-30 09:00:00,70
";

fn cursor_config(dest: &std::path::Path, url: &str) -> ExtractConfig {
    let mut cfg = config(dest);
    cfg.urls = vec![url.to_string()];
    cfg.dataset = Some("shop".into());
    cfg.format = OutputFormat::Parquet;
    cfg.since_auto = true;
    cfg.cursor = Some("updated_at".into());
    cfg
}

fn on(execution: &str, attempt: u32) -> TaskContext {
    TaskContext {
        execution: Some(execution.into()),
        attempt,
        ..task(0, 1)
    }
}

fn only_item(outcome: &TaskOutcome) -> &ItemRecord {
    assert_eq!(outcome.manifest.items.len(), 1);
    &outcome.manifest.items[0]
}

/// The `id`s of the item's object, in order, and its `rows` record.
fn ids(dest: &std::path::Path, item: &ItemRecord) -> Vec<i64> {
    assert_eq!(item.objects.len(), 1, "{item:?}");
    let object = &item.objects[0];
    let data = Bytes::from(common::object(dest, &object.name));
    let ids: Vec<i64> = ParquetRecordBatchReaderBuilder::try_new(data)
        .unwrap()
        .build()
        .unwrap()
        .flat_map(|b| {
            let b = b.unwrap();
            let col = b.column(0).as_primitive::<Int64Type>().clone();
            assert_eq!(col.null_count(), 0);
            col.values().to_vec()
        })
        .collect();
    assert_eq!(object.rows, Some(ids.len() as u64));
    ids
}

/// What `load` stores after loading `item` (`crates/load/src/state.rs`): `max(old, to)`,
/// the column and the file's version.
fn advance(dest: &std::path::Path, item: &ItemRecord) {
    let path = dest.join("_state/shop.json");
    let mut state = match std::fs::read(&path) {
        Ok(bytes) => StateFile::parse(&bytes, "state").unwrap(),
        Err(_) => StateFile::new("shop"),
    };
    let cursor = item.source.cursor.clone().unwrap();
    let old = state
        .sources
        .get(&cursor.state_key)
        .and_then(|e| e.mark.clone());
    let mark = match (old, cursor.to) {
        (Some(o), Some(t)) if sluice_manifest::compare_marks(&t, &o).is_le() => Some(o),
        (o, t) => t.or(o),
    };
    state.sources.insert(
        cursor.state_key.clone(),
        SourceState {
            column: cursor.column.clone(),
            mark,
            source_version: Some(item.source.version.clone()),
            extracted_by: item.execution.clone(),
            advanced_by: Some("load-test".into()),
            advanced_at: "2026-12-01T06:00:00Z".into(),
        },
    );
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, state.to_bytes()).unwrap();
}

fn set_mark(dest: &std::path::Path, mark: &str) {
    let path = dest.join("_state/shop.json");
    let mut state = StateFile::parse(&std::fs::read(&path).unwrap(), "state").unwrap();
    let entry = state.sources.get_mut("shop/orders").unwrap();
    entry.mark = Some(mark.into());
    std::fs::write(&path, state.to_bytes()).unwrap();
}

#[tokio::test]
async fn a_growing_csv_is_pulled_by_its_cursor_column() {
    let server = TestServer::start();
    let url = server.serve("orders.csv", ServedFile::new(DAY1));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path();
    let cfg = cursor_config(dest, &url);

    // Day 1, no state: a full pull, the row without `updated_at` included.
    let day1 = run(cfg.clone(), &on("x-day1", 0)).await.unwrap();
    let item = only_item(&day1);
    assert_eq!(item.status, ItemStatus::Extracted);
    assert_eq!(ids(dest, item), vec![1, 2, 3, 4, 5]);
    let cursor = item.source.cursor.clone().unwrap();
    assert_eq!(cursor.state_key, "shop/orders");
    assert_eq!(cursor.column.as_deref(), Some("updated_at"));
    assert_eq!(cursor.from, None, "a full pull has no lower bound");
    assert_eq!(cursor.to.as_deref(), Some("2026-11-29T10:00:00.000000Z"));
    assert_eq!((cursor.read_rows, cursor.filtered_rows), (Some(5), Some(0)));
    assert!(
        !dest.join("_state").exists(),
        "extract never writes the state"
    );
    advance(dest, item);

    // Day 2: the file grew. Only rows 6 and 7 are written; row 2 (changed without a later
    // `updated_at`) and the row without a value are not.
    server.serve("orders.csv", ServedFile::new(DAY2));
    let day2 = run(cfg.clone(), &on("x-day2", 0)).await.unwrap();
    let item = only_item(&day2).clone();
    assert_eq!(item.status, ItemStatus::Extracted);
    assert_eq!(ids(dest, &item), vec![6, 7]);
    let cursor = item.source.cursor.clone().unwrap();
    assert_eq!(cursor.from.as_deref(), Some("2026-11-29T10:00:00.000000Z"));
    assert_eq!(cursor.to.as_deref(), Some("2026-11-30T09:00:00.000000Z"));
    assert_eq!((cursor.read_rows, cursor.filtered_rows), (Some(7), Some(5)));
    assert_eq!(day2.manifest.totals.rows, 2);

    // A retry of the day 2 task after it committed: reused from the receipt, same record.
    let retried = run(cfg.clone(), &on("x-day2", 1)).await.unwrap();
    let again = only_item(&retried);
    assert_eq!(again.status, ItemStatus::Reused);
    assert_eq!(again.objects, item.objects);
    assert_eq!(again.source.cursor, item.source.cursor);
    // Another execution from the same state and the same file: the same rows and window.
    let rerun = run(cfg.clone(), &on("x-day2-rerun", 0)).await.unwrap();
    let rerun = only_item(&rerun);
    assert_eq!(ids(dest, rerun), vec![6, 7]);
    assert_eq!(rerun.source.cursor, item.source.cursor);

    // `--lag 25h` re-reads a window before the mark: from 2026-11-28T09:00 (exclusive), so
    // rows 5, 6 and 7 (merge makes that harmless).
    let mut lagged = cfg.clone();
    lagged.lag = std::time::Duration::from_secs(86_400 + 3600);
    let lag = run(lagged, &on("x-day2-lag", 0)).await.unwrap();
    let lag = only_item(&lag);
    assert_eq!(ids(dest, lag), vec![5, 6, 7]);
    assert_eq!(
        lag.source.cursor.as_ref().unwrap().from.as_deref(),
        Some("2026-11-28T09:00:00.000000Z")
    );

    // Load stores day 2; day 3 the file is unchanged: skipped by version, not downloaded.
    advance(dest, &item);
    let gets_before = server
        .requests_to("orders.csv")
        .iter()
        .filter(|r| r.method == "GET")
        .count();
    let day3 = run(cfg.clone(), &on("x-day3", 0)).await.unwrap();
    let skipped = only_item(&day3);
    assert_eq!(
        (skipped.status, skipped.objects.len()),
        (ItemStatus::Skipped, 0)
    );
    let gets_after = server
        .requests_to("orders.csv")
        .iter()
        .filter(|r| r.method == "GET")
        .count();
    assert_eq!(gets_after, gets_before);

    // Day 4: changed (row 1 edited in place) but nothing after the mark: one object, 0 rows,
    // and `to` stays at the mark.
    server.serve(
        "orders.csv",
        ServedFile::new(DAY2.replace("1,2026-11-25 10:00:00,10", "1,2026-11-25 10:00:00,11")),
    );
    let day4 = run(cfg.clone(), &on("x-day4", 0)).await.unwrap();
    let empty = only_item(&day4);
    assert_eq!(empty.status, ItemStatus::Extracted);
    assert_eq!(ids(dest, empty), Vec::<i64>::new());
    let cursor = empty.source.cursor.as_ref().unwrap();
    assert_eq!(cursor.to.as_deref(), Some("2026-11-30T09:00:00.000000Z"));
    assert_eq!((cursor.read_rows, cursor.filtered_rows), (Some(7), Some(7)));
    assert!(day4.manifest.complete);
}

#[tokio::test]
async fn a_bad_mark_fails_the_item_by_name_and_misuse_is_a_usage_error() {
    let server = TestServer::start();
    let url = server.serve("orders.csv", ServedFile::new(DAY1));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path();
    let cfg = cursor_config(dest, &url);
    let day1 = run(cfg.clone(), &on("y-day1", 0)).await.unwrap();
    advance(dest, only_item(&day1));
    server.serve("orders.csv", ServedFile::new(DAY2));

    // A mark that is not a timestamp: the item fails naming state file, source, column, value.
    set_mark(dest, "last tuesday");
    let err = run(cfg.clone(), &on("y-bad", 0))
        .await
        .unwrap_err()
        .to_string();
    for part in [
        "_state/shop.json",
        "shop/orders",
        "--cursor updated_at",
        "\"last tuesday\"",
        "TIMESTAMP",
    ] {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }

    // A column the file does not have.
    set_mark(dest, "2026-11-29T10:00:00Z");
    let mut missing = cfg.clone();
    missing.cursor = Some("changed_at".into());
    // (the stored mark is for `updated_at`: refused before anything is pulled, exit 2)
    let err = run(missing.clone(), &on("y-col", 0)).await.unwrap_err();
    assert!(err.is_config(), "{err:?}");
    assert!(err.to_string().contains("\"updated_at\""), "{err}");
    std::fs::remove_file(dest.join("_state/shop.json")).unwrap();
    let err = run(missing, &on("y-col2", 0))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("orders.csv") && err.contains("--cursor changed_at: no such column"),
        "{err}"
    );

    // Usage errors naming the flag: passthrough, no `--since auto`, a Socrata source.
    let mut passthrough = cfg.clone();
    passthrough.format = OutputFormat::Passthrough;
    let mut literal = cfg.clone();
    literal.since_auto = false;
    let mut socrata = cfg.clone();
    socrata.urls.clear();
    socrata.socrata = vec!["https://data.example.gov/resource/abcd-1234".to_string()];
    for (what, bad) in [
        ("passthrough", passthrough),
        ("since", literal),
        ("socrata", socrata),
    ] {
        let err = run(bad, &on("y-usage", 0)).await.unwrap_err();
        assert!(err.is_config(), "{what}: {err:?}");
        assert!(
            err.to_string().contains("--cursor updated_at"),
            "{what}: {err}"
        );
    }
}
