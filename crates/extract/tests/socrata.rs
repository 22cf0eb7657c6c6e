//! Socrata SODA: the count fixes the plan, pages use `$order=:id&$limit&$offset`, `--since`
//! becomes `$where`, the app token is sent as `X-App-Token`, and Parquet pages share one
//! schema taken from the declared column types.

mod common;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use bytes::Bytes;
use common::{config, object, run, run_ok, task};
use sluice_extract::OutputFormat;
use sluice_runtime::Secret;
use sluice_testkit::{SocrataDataset, TestServer, read_parquet};

fn permits() -> SocrataDataset {
    SocrataDataset {
        fields: vec![
            ("permit_id".into(), "number".into()),
            ("zip".into(), "text".into()),
            ("cost".into(), "number".into()),
            ("issued".into(), "floating_timestamp".into()),
            ("active".into(), "checkbox".into()),
        ],
        rows: (0..30)
            .map(|i| {
                vec![
                    i.to_string(),
                    // Numeric-looking text: inference alone would make it INT64 and drop the
                    // leading zero.
                    format!("0{}", 2100 + i),
                    // Whole numbers on early pages, decimals later: inference alone would
                    // type the pages differently.
                    if i < 20 {
                        format!("{}", i * 100)
                    } else {
                        format!("{}.5", i * 100)
                    },
                    if i % 7 == 0 {
                        String::new()
                    } else {
                        format!("2025-03-{:02}T08:00:00.000", i % 28 + 1)
                    },
                    (i % 2 == 0).to_string(),
                ]
            })
            .collect(),
        updated_at: (0..30)
            .map(|i| format!("2026-01-{:02}T00:00:00.000", i + 1))
            .collect(),
        app_token: Some("tok-SEKRIT-42".into()),
        last_modified: "Wed, 04 Sep 2024 17:25:46 GMT".into(),
    }
}

#[tokio::test]
async fn pages_are_planned_from_the_count_and_typed_from_the_declared_types() {
    let server = TestServer::start();
    let resource = server.socrata("perm-its1", permits());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.socrata = vec![resource];
    cfg.socrata_options.page_size = 7;
    cfg.socrata_options.app_token = Some(Secret::new("tok-SEKRIT-42"));
    cfg.format = OutputFormat::Parquet;
    let outcome = run_ok(cfg).await;

    let items = &outcome.manifest.items;
    assert_eq!(items.len(), 5);
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.header("x-app-token") == Some("tok-SEKRIT-42"))
    );
    let count = requests
        .iter()
        .filter(|r| r.uri.contains("count(*)"))
        .count();
    assert_eq!(count, 1);
    let mut offsets: Vec<String> = requests
        .iter()
        .filter(|r| r.uri.contains("$offset="))
        .map(|r| {
            assert!(r.uri.contains("$order=:id"), "{}", r.uri);
            assert!(r.uri.contains("$limit=7"), "{}", r.uri);
            r.uri
                .split("$offset=")
                .nth(1)
                .unwrap()
                .split('&')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    offsets.sort_by_key(|o| o.parse::<u64>().unwrap());
    assert_eq!(offsets, ["0", "7", "14", "21", "28"]);

    let mut schemas = Vec::new();
    let mut total = 0;
    for item in items {
        let o = &item.objects[0];
        assert_eq!(o.page, item.source.page.as_ref().map(|p| p.number));
        let (schema, batches, _) = read_parquet(Bytes::from(object(dir.path(), &o.name)));
        total += batches.iter().map(|b| b.num_rows()).sum::<usize>();
        if o.page == Some(4) {
            let cost = batches[0].column(2).as_primitive::<Float64Type>();
            assert_eq!(cost.value(1), 2900.5);
            assert_eq!(batches[0].column(1).as_string::<i32>().value(0), "02128");
        }
        schemas.push(schema);
    }
    assert_eq!(total, 30);
    // (The schema metadata differs: it carries each page's footer, e.g. `sluice.page`.)
    assert!(
        schemas.windows(2).all(|w| w[0].fields() == w[1].fields()),
        "pages must share one schema: {schemas:#?}"
    );
    let types: Vec<&DataType> = schemas[0].fields().iter().map(|f| f.data_type()).collect();
    assert_eq!(types[0], &DataType::Float64);
    assert_eq!(types[1], &DataType::Utf8);
    assert_eq!(types[2], &DataType::Float64);
    assert!(matches!(types[3], DataType::Timestamp(_, Some(_))));
    assert_eq!(types[4], &DataType::Boolean);
    assert_eq!(outcome.manifest.totals.rows, 30);
    let nulls: usize = items
        .iter()
        .map(|i| {
            let (_, b, _) = read_parquet(Bytes::from(object(dir.path(), &i.objects[0].name)));
            b.iter().map(|b| b.column(3).null_count()).sum::<usize>()
        })
        .sum();
    assert_eq!(nulls, 5); // i = 0, 7, 14, 21, 28
}

#[tokio::test]
async fn since_becomes_a_where_clause_on_updated_at() {
    let server = TestServer::start();
    let resource = server.socrata("perm-its1", permits());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.socrata = vec![resource];
    cfg.socrata_options.app_token = Some(Secret::new("tok-SEKRIT-42"));
    cfg.socrata_options.since = Some("2026-01-25T00:00:00.000".into());
    let outcome = run_ok(cfg).await;
    // Rows updated on Jan 26..30: 5 rows, one page.
    assert_eq!(outcome.manifest.items.len(), 1);
    let text = String::from_utf8(object(dir.path(), "perm_its1/perm-its1-00000.csv")).unwrap();
    assert_eq!(text.lines().count(), 6);
    assert!(server.requests().iter().all(|r| {
        r.uri
            .contains("$where=:updated_at%20%3E%20%272026-01-25T00:00:00.000%27")
    }));
}

#[tokio::test]
async fn a_missing_token_is_a_clear_403() {
    let server = TestServer::start();
    let resource = server.socrata("perm-its1", permits());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.socrata = vec![resource.clone()];
    let err = run(cfg, &task(0, 1)).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("HTTP 403"), "{text}");
    assert!(
        text.contains("/resource/perm-its1.json?$select=count(*)"),
        "{text}"
    );
}
