//! Socrata SODA against the SODA test server (`sluice_testkit::Soda`): system fields become
//! typed `_socrata_*` columns, the user's `$select`/`$where` are kept, pages are keyset ranges
//! of `(:updated_at, :id)` under a pinned upper bound, so rows changing during an execution
//! never make another row go missing or appear twice, and every task of an execution reads
//! the same pages.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampMicrosecondType};
use bytes::Bytes;
use common::{config, keys, object, run, run_ok, task};
use sluice_extract::{ExtractConfig, OutputFormat, TaskOutcome};
use sluice_runtime::Secret;
use sluice_testkit::{Soda, TestServer, read_parquet};

const TOKEN: &str = "tok-SEKRIT-42";

/// 30 permits; permit i was last updated on 2026-01-(i+1), so `:updated_at` order is permit
/// order, and page k (of 7 rows) holds permits 7k..7k+6.
fn permits(rows: usize) -> Soda {
    let soda = Soda::new(&[
        ("permit_id", "number"),
        ("zip", "text"),
        ("cost", "number"),
        ("issued", "floating_timestamp"),
    ])
    .require_app_token(TOKEN);
    soda.update(|d| {
        for i in 0..rows {
            let at = format!("2026-01-{:02}T00:00:00.000", i + 1);
            let issued = if i % 7 == 0 {
                String::new()
            } else {
                format!("2025-03-{:02}T08:00:00.000", i % 28 + 1)
            };
            // Numeric-looking text keeps its leading zero; costs turn decimal on late pages.
            let cost = if i < 20 {
                format!("{}", i * 100)
            } else {
                format!("{}.5", i * 100)
            };
            d.insert_at(
                &at,
                &[&i.to_string(), &format!("0{}", 2100 + i), &cost, &issued],
            );
        }
    });
    soda
}

fn socrata_config(dir: &std::path::Path, resource: &str, format: OutputFormat) -> ExtractConfig {
    let mut cfg = config(dir);
    cfg.socrata = vec![resource.to_string()];
    cfg.socrata_options.page_size = 7;
    cfg.socrata_options.app_token = Some(Secret::new(TOKEN));
    cfg.format = format;
    // One page at a time, in page order: the tests change data between page requests.
    cfg.concurrency = 1;
    cfg
}

/// Every row of every Parquet object the task wrote, as `column -> text` maps.
fn parquet_rows(dir: &std::path::Path, outcome: &TaskOutcome) -> Vec<BTreeMap<String, String>> {
    let mut rows = Vec::new();
    for item in &outcome.manifest.items {
        for o in &item.objects {
            let (_, batches, _) = read_parquet(Bytes::from(object(dir, &o.name)));
            for batch in batches {
                for r in 0..batch.num_rows() {
                    let mut row = BTreeMap::new();
                    for (i, field) in batch.schema().fields().iter().enumerate() {
                        let column = batch.column(i);
                        let text = if column.is_null(r) {
                            String::new()
                        } else if let DataType::Timestamp(..) = column.data_type() {
                            let micros = column.as_primitive::<TimestampMicrosecondType>().value(r);
                            chrono::DateTime::from_timestamp_micros(micros)
                                .unwrap()
                                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                        } else {
                            arrow::util::display::array_value_to_string(column, r).unwrap()
                        };
                        row.insert(field.name().clone(), text);
                    }
                    rows.push(row);
                }
            }
        }
    }
    rows
}

fn permit_ids(rows: &[BTreeMap<String, String>]) -> Vec<u32> {
    let mut ids: Vec<u32> = rows
        .iter()
        .map(|r| r["permit_id"].parse::<f64>().unwrap() as u32)
        .collect();
    ids.sort();
    ids
}

fn page_requests(soda: &Soda) -> Vec<sluice_testkit::SodaRequest> {
    soda.requests()
        .into_iter()
        .filter(|r| r.is_page())
        .collect()
}

#[tokio::test]
async fn system_fields_are_typed_columns_and_pages_are_keyset_ranges() {
    let server = TestServer::start();
    let soda = permits(30);
    let resource = server.soda("perm-its1", &soda);
    let dir = tempfile::tempdir().unwrap();
    let outcome = run_ok(socrata_config(dir.path(), &resource, OutputFormat::Parquet)).await;

    let items = &outcome.manifest.items;
    assert_eq!(items.len(), 5);
    let requests = soda.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.app_token.as_deref() == Some(TOKEN) && r.status == 200)
    );
    // One count, boundaries at ranks 7, 14, 21, 28 (last first), one type probe, 5 pages.
    let stats: Vec<_> = requests
        .iter()
        .filter(|r| r.param("$select").is_some_and(|s| s.contains("count(*)")))
        .collect();
    assert_eq!(stats.len(), 1);
    let boundary_offsets: Vec<&str> = requests.iter().filter_map(|r| r.param("$offset")).collect();
    assert_eq!(boundary_offsets, ["28", "21", "14", "7"]);
    let pages = page_requests(&soda);
    assert_eq!(pages.len(), 5);
    for page in &pages {
        assert_eq!(
            page.param("$order"),
            Some(":updated_at,:id"),
            "{}",
            page.uri
        );
        assert_eq!(page.param("$limit"), Some("8"), "{}", page.uri);
        assert_eq!(page.param("$offset"), None, "{}", page.uri);
        assert_eq!(
            page.param("$select"),
            Some("*, :id, :updated_at, :created_at")
        );
        assert!(
            page.param("$where")
                .unwrap()
                .contains(":updated_at <= '2026-01-30T00:00:00.000'")
        );
    }

    let rows = parquet_rows(dir.path(), &outcome);
    assert_eq!(permit_ids(&rows), (0..30).collect::<Vec<_>>());
    let live = soda.rows();
    for row in &rows {
        let i = row["permit_id"].parse::<f64>().unwrap() as usize;
        assert_eq!(row["_socrata_id"], live[i].id);
        assert_eq!(
            row["_socrata_updated_at"],
            format!("2026-01-{:02}T00:00:00.000Z", i + 1)
        );
        assert_eq!(row["_socrata_created_at"], row["_socrata_updated_at"]);
        assert_eq!(row["zip"], format!("0{}", 2100 + i));
    }
    let mut schemas = Vec::new();
    for item in items {
        let o = &item.objects[0];
        assert_eq!(o.page, item.source.page.as_ref().map(|p| p.number));
        let (schema, batches, _) = read_parquet(Bytes::from(object(dir.path(), &o.name)));
        if o.page == Some(4) {
            let cost = batches[0].column(2).as_primitive::<Float64Type>();
            assert_eq!(cost.value(1), 2900.5);
            let updated = batches[0]
                .column(5)
                .as_primitive::<TimestampMicrosecondType>();
            assert_eq!(updated.value(0), 1_769_644_800_000_000); // 2026-01-29T00:00:00Z
        }
        schemas.push(schema);
    }
    assert!(
        schemas.windows(2).all(|w| w[0].fields() == w[1].fields()),
        "{schemas:#?}"
    );
    let columns: Vec<(&str, &DataType)> = schemas[0]
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    assert_eq!(
        columns,
        [
            ("permit_id", &DataType::Float64),
            ("zip", &DataType::Utf8),
            ("cost", &DataType::Float64),
            ("issued", &utc),
            ("_socrata_id", &DataType::Utf8),
            ("_socrata_updated_at", &utc),
            ("_socrata_created_at", &utc),
        ]
    );
    // Every page records the same window for the state: full pull up to U.
    for item in items {
        let cursor = item.source.cursor.as_ref().expect("cursor");
        assert_eq!(cursor.state_key, "perm_its1/perm-its1");
        assert_eq!(cursor.column.as_deref(), Some("_socrata_updated_at"));
        assert_eq!(cursor.from, None);
        assert_eq!(cursor.to.as_deref(), Some("2026-01-30T00:00:00.000"));
    }
}

#[tokio::test]
async fn passthrough_csv_gets_the_renamed_header() {
    let server = TestServer::start();
    let soda = permits(10);
    let resource = server.soda("perm-its1", &soda);
    let dir = tempfile::tempdir().unwrap();
    let outcome = run_ok(socrata_config(
        dir.path(),
        &resource,
        OutputFormat::Passthrough,
    ))
    .await;
    assert_eq!(outcome.manifest.items.len(), 2);
    let text = String::from_utf8(object(dir.path(), "perm_its1/perm-its1-00000.csv")).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        r#""permit_id","zip","cost","issued","_socrata_id","_socrata_updated_at","_socrata_created_at""#
    );
    assert_eq!(text.lines().count(), 8);
    let first = soda.rows()[0].clone();
    assert!(
        text.contains(&format!(r#""{}","2026-01-01T00:00:00.000Z""#, first.id)),
        "{text}"
    );
}

#[tokio::test]
async fn the_users_select_and_where_are_kept_and_combined_with_the_window() {
    let server = TestServer::start();
    let soda = permits(30);
    let resource = server.soda("perm-its1", &soda);
    let url = format!(
        "{resource}?$select=permit_id,%20zip&$where=cost%20%3E=%201000%20OR%20zip%20=%20%2702101%27&$limit=5"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = socrata_config(dir.path(), &url, OutputFormat::Parquet);
    cfg.socrata_options.since = Some("2026-01-05T00:00:00.000".into());
    let outcome = run_ok(cfg).await;
    let rows = parquet_rows(dir.path(), &outcome);
    // cost >= 1000 is permits 10..29, zip 02101 is permit 1; the window keeps updates after
    // Jan 5 (permits 5..29).
    assert_eq!(permit_ids(&rows), (10..30).collect::<Vec<_>>());
    assert_eq!(
        rows[0].keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "_socrata_created_at",
            "_socrata_id",
            "_socrata_updated_at",
            "permit_id",
            "zip"
        ]
    );
    for page in page_requests(&soda) {
        assert_eq!(
            page.param("$select"),
            Some("permit_id, zip, :id, :updated_at, :created_at")
        );
        let where_ = page.param("$where").unwrap();
        assert!(
            where_.starts_with(
                "(cost >= 1000 OR zip = '02101') AND (:updated_at > '2026-01-05T00:00:00.000') AND "
            ),
            "{where_}"
        );
        assert_ne!(
            page.param("$limit"),
            Some("5"),
            "the URL's $limit is dropped"
        );
    }
    let cursor = outcome.manifest.items[0].source.cursor.clone().unwrap();
    assert_eq!(cursor.from.as_deref(), Some("2026-01-05T00:00:00.000"));
    assert_eq!(cursor.to.as_deref(), Some("2026-01-30T00:00:00.000"));

    let bad = format!("{resource}?$select=zip,count(*)&$group=zip");
    let mut cfg = socrata_config(dir.path(), &bad, OutputFormat::Parquet);
    cfg.socrata_options.app_token = None;
    let err = run(cfg, &task(0, 1)).await.unwrap_err();
    assert!(err.is_config(), "{err}");
    assert!(err.to_string().contains("/resource/perm-its1"), "{err}");
}

#[tokio::test]
async fn rows_changing_between_page_requests_never_cost_another_row() {
    let server = TestServer::start();
    let soda = permits(30);
    let resource = server.soda("perm-its1", &soda);
    // Before the third page request (pages 0 and 1 are written): permit 3 (page 0, already
    // read) and permit 20 (page 2, not yet) are updated, permit 15 (page 2) is deleted,
    // two permits are inserted. With `$offset` pages, the three rows leaving the window would
    // make pages 2 to 4 start three rows later, and three permits would be lost.
    let seen = Arc::new(Mutex::new(0));
    let counter = seen.clone();
    soda.before_request(move |request, data| {
        if !request.is_page() {
            return;
        }
        let mut n = counter.lock().unwrap();
        *n += 1;
        if *n == 3 {
            for permit in ["3", "20"] {
                let id = data.find("permit_id", permit).unwrap();
                data.set(&id, "zip", "99999");
            }
            let id = data.find("permit_id", "15").unwrap();
            data.delete(&id);
            data.insert(&["100", "02200", "1", ""]);
            data.insert(&["101", "02201", "1", ""]);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let outcome = run_ok(socrata_config(dir.path(), &resource, OutputFormat::Parquet)).await;
    assert_eq!(*seen.lock().unwrap(), 5);
    let rows = parquet_rows(dir.path(), &outcome);
    let expected: Vec<u32> = (0..30).filter(|i| ![15, 20].contains(i)).collect();
    assert_eq!(permit_ids(&rows), expected, "exactly these rows, each once");
    let three = rows
        .iter()
        .find(|r| r["permit_id"].parse::<f64>().unwrap() == 3.0)
        .unwrap();
    assert_eq!(three["zip"], "02103", "read before its update");
}

#[tokio::test]
async fn a_page_that_grew_fails_instead_of_being_written() {
    let server = TestServer::start();
    let soda = permits(14);
    let resource = server.soda("perm-its1", &soda);
    // A row appearing inside page 0's keys, under the upper bound: not how Socrata behaves,
    // so the plan no longer describes the data.
    soda.before_request(|request, data| {
        if request.is_page() && data.find("permit_id", "500").is_none() {
            data.insert_at("2026-01-02T12:00:00.000", &["500", "02500", "1", ""]);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let err = run(
        socrata_config(dir.path(), &resource, OutputFormat::Parquet),
        &task(0, 1),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("1 of 2") || text.contains("failed"), "{text}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&object(dir.path(), "_manifests/task-00000.json")).unwrap();
    let errors: Vec<&str> = manifest["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["error"].as_str())
        .collect();
    assert_eq!(errors.len(), 1, "{manifest:#}");
    assert!(
        errors[0].contains("returned 8 rows, more than the 7 planned"),
        "{}",
        errors[0]
    );
    assert!(!keys(dir.path()).contains(&"perm_its1/perm-its1-00000.parquet".to_string()));
}

#[tokio::test]
async fn since_windows_and_an_empty_window() {
    let server = TestServer::start();
    let soda = permits(30);
    let resource = server.soda("perm-its1", &soda);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = socrata_config(dir.path(), &resource, OutputFormat::Passthrough);
    cfg.socrata_options.since = Some("2026-01-25T00:00:00.000".into());
    let outcome = run_ok(cfg.clone()).await;
    // Permits updated on Jan 26..30: 5 rows, one page.
    assert_eq!(outcome.manifest.items.len(), 1);
    let text = String::from_utf8(object(dir.path(), "perm_its1/perm-its1-00000.csv")).unwrap();
    assert_eq!(text.lines().count(), 6);
    assert!(soda.requests().iter().all(|r| {
        r.param("$where")
            .is_some_and(|w| w.contains(":updated_at > '2026-01-25T00:00:00.000'"))
    }));

    // Day 2: two permits change; a pull since day 1's upper bound gets exactly those.
    soda.update(|d| {
        for permit in ["4", "27"] {
            let id = d.find("permit_id", permit).unwrap();
            d.set(&id, "cost", "1");
        }
    });
    let day1 = outcome.manifest.items[0]
        .source
        .cursor
        .clone()
        .unwrap()
        .to
        .unwrap();
    cfg.socrata_options.since = Some(day1.clone());
    let dir2 = tempfile::tempdir().unwrap();
    cfg.dest = dir2.path().display().to_string();
    let outcome = run_ok(cfg.clone()).await;
    let text = String::from_utf8(object(dir2.path(), "perm_its1/perm-its1-00000.csv")).unwrap();
    let permits: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(permits, ["\"4\"", "\"27\""]);
    let cursor = outcome.manifest.items[0].source.cursor.clone().unwrap();
    assert_eq!(cursor.from, Some(day1));
    assert_eq!(
        cursor.to.as_deref(),
        Some(soda.rows()[4].updated_at.trim_end_matches('Z'))
    );

    // Nothing changed since: no pages, no objects, no cursor.
    cfg.socrata_options.since = cursor.to.clone();
    let dir3 = tempfile::tempdir().unwrap();
    cfg.dest = dir3.path().display().to_string();
    let outcome = run_ok(cfg).await;
    assert_eq!(outcome.planned_items, 0);
    assert!(outcome.manifest.items.is_empty());
    let written: Vec<String> = keys(dir3.path())
        .into_iter()
        .filter(|k| !k.starts_with("_manifests/executions/"))
        .collect();
    assert_eq!(written, ["_manifests/task-00000.json"]);
}

#[tokio::test]
async fn every_task_of_an_execution_reads_the_pinned_plan() {
    let server = TestServer::start();
    let soda = permits(30);
    let resource = server.soda("perm-its1", &soda);
    let dir = tempfile::tempdir().unwrap();
    let cfg = socrata_config(dir.path(), &resource, OutputFormat::Parquet);
    let first = run(cfg.clone(), &task(0, 2)).await.unwrap();
    let planning_requests = soda.requests().iter().filter(|r| !r.is_page()).count();

    // Between the tasks: every permit is updated (so a fresh plan would have a new upper
    // bound, new boundaries and all rows on other pages) and new permits arrive.
    soda.update(|d| {
        for permit in 0..30 {
            let id = d.find("permit_id", &permit.to_string()).unwrap();
            d.set(&id, "zip", "99999");
        }
        d.insert(&["100", "02200", "1", ""]);
    });
    let second = run(cfg.clone(), &task(1, 2)).await.unwrap();
    assert_eq!(
        soda.requests().iter().filter(|r| !r.is_page()).count(),
        planning_requests,
        "the second task planned nothing itself"
    );
    let mut pages: Vec<u64> = first
        .manifest
        .items
        .iter()
        .chain(&second.manifest.items)
        .map(|i| i.source.page.as_ref().unwrap().number)
        .collect();
    pages.sort();
    assert_eq!(pages, [0, 1, 2, 3, 4], "every pinned page exactly once");
    let cursors: Vec<_> = first
        .manifest
        .items
        .iter()
        .chain(&second.manifest.items)
        .map(|i| i.source.cursor.clone().unwrap())
        .collect();
    assert!(cursors.iter().all(|c| c == &cursors[0]), "{cursors:?}");
    assert_eq!(cursors[0].to.as_deref(), Some("2026-01-30T00:00:00.000"));
    // The first task's pages hold the rows as they were; the second task's pinned pages are
    // empty (all their rows left the window) -- never rows of the first task's pages again.
    let rows_first = parquet_rows(dir.path(), &first);
    let pages_first: Vec<u64> = first
        .manifest
        .items
        .iter()
        .map(|i| i.source.page.as_ref().unwrap().number)
        .collect();
    let expected: Vec<u32> = (0..30)
        .filter(|i| pages_first.contains(&(*i as u64 / 7)))
        .collect();
    assert_eq!(permit_ids(&rows_first), expected);
    assert!(parquet_rows(dir.path(), &second).is_empty());
    let pins: Vec<String> = keys(dir.path())
        .into_iter()
        .filter(|k| k.starts_with("_manifests/executions/extract-test-exec1/socrata-"))
        .collect();
    assert_eq!(pins.len(), 1, "{:?}", keys(dir.path()));
}

#[tokio::test]
async fn the_app_token_is_sent_but_never_written() {
    let server = TestServer::start();
    let soda = permits(10);
    let resource = server.soda("perm-its1", &soda);
    let dir = tempfile::tempdir().unwrap();
    let outcome = run_ok(socrata_config(dir.path(), &resource, OutputFormat::Parquet)).await;
    assert_eq!(outcome.manifest.items.len(), 2);
    assert!(
        soda.requests()
            .iter()
            .all(|r| r.app_token.as_deref() == Some(TOKEN))
    );
    for key in keys(dir.path()) {
        let bytes = object(dir.path(), &key);
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "{key} holds the token"
        );
    }

    // Without the token: a clear 403 naming the planning request (in a new destination: in
    // the first one this execution's plan is pinned, so nothing would be planned).
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = socrata_config(dir.path(), &resource, OutputFormat::Parquet);
    cfg.socrata_options.app_token = None;
    let err = run(cfg, &task(0, 1)).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("HTTP 403"), "{text}");
    assert!(
        text.contains("/resource/perm-its1.json?$select=count(*)"),
        "{text}"
    );
}
