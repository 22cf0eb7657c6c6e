//! Drifted files (one schema per dataset, issue 18) through staging tables and one widening
//! INSERT, against fake-gcs-server + bqemulator, with a crash (a fault-injecting proxy in front
//! of the emulator, `support/fault_proxy.rs`) before the INSERT and before the staging drop:
//! each retry finishes the item without a second staging load or INSERT, and the table holds
//! every row exactly once with its exact value.

mod support;

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use sluice_load::{LoadConfig, LoadError, Outcome};
use sluice_testkit::BigQueryEmulator;
use support::fault_proxy::{Fault, FaultProxy};
use support::{Gcs, config, glob, on_main_sized_stack, parquet, task};

const PROJECT: &str = "test-project";
const TABLE: &str = "test-project.raw.flights";

fn emulator(gcs: &Gcs) -> BigQueryEmulator {
    let bq = BigQueryEmulator::start(PROJECT, &gcs.server.root()).expect("bqemulator");
    bq.create_dataset("raw").expect("create dataset");
    bq
}

/// `id INT64, dep STRING` with no value in `dep`: what extract infers for an empty column.
fn empty_dep(ids: &[i64]) -> bytes::Bytes {
    parquet(vec![
        (
            "id",
            Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef,
            false,
        ),
        (
            "dep",
            Arc::new(StringArray::from(vec![None::<&str>; ids.len()])) as ArrayRef,
            true,
        ),
        (
            "delay",
            Arc::new(Int64Array::from(vec![1; ids.len()])) as ArrayRef,
            true,
        ),
    ])
}

/// `id INT64, dep INT64, delay FLOAT64`.
fn with_dep(rows: &[(i64, i64, f64)]) -> bytes::Bytes {
    parquet(vec![
        (
            "id",
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )) as ArrayRef,
            false,
        ),
        (
            "dep",
            Arc::new(Int64Array::from(
                rows.iter().map(|r| Some(r.1)).collect::<Vec<_>>(),
            )),
            true,
        ),
        (
            "delay",
            Arc::new(Float64Array::from(
                rows.iter().map(|r| Some(r.2)).collect::<Vec<_>>(),
            )),
            true,
        ),
    ])
}

async fn run(c: &LoadConfig) -> Result<sluice_load::LoadReport, LoadError> {
    sluice_load::run(c, &task(0, 1), &Default::default()).await
}

fn rows(emu: &BigQueryEmulator) -> Vec<Vec<Option<String>>> {
    emu.query_rows(&format!(
        "select cast(id as string), cast(dep as string), cast(delay as string) from `{TABLE}` order by id"
    ))
    .expect("query table")
}

fn staging_tables(emu: &BigQueryEmulator) -> Vec<String> {
    let listed = emu
        .rest_ok(
            "GET",
            &format!("/bigquery/v2/projects/{PROJECT}/datasets/raw/tables"),
            None,
        )
        .unwrap();
    listed["tables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["tableReference"]["tableId"].as_str())
        .filter(|t| t.starts_with("_sluice_stage_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_crash_before_the_insert_or_the_drop_is_finished_by_the_retry() {
    on_main_sized_stack(a_crash_before_the_insert_or_the_drop_is_finished_by_the_retry_body);
}

async fn a_crash_before_the_insert_or_the_drop_is_finished_by_the_retry_body() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    let proxy = FaultProxy::start(&emu.endpoint()).await;
    gcs.put("d1/a.parquet", empty_dep(&[1, 2])).await;
    gcs.put("d1/b.parquet", with_dep(&[(3, 605, 2.5), (4, 610, 0.0)]))
        .await;
    let through_proxy = |pattern: &str| config(glob(pattern), TABLE, &gcs, &proxy.endpoint());
    let jobs_inserted = |log: &[String], needle: &str| {
        log.iter()
            .filter(|l| l.starts_with("POST ") && l.contains("/jobs") && l.contains(needle))
            .count()
    };
    let s = |v: &str| Some(v.to_string());
    let day1 = vec![
        vec![s("1"), None, s("1.0")],
        vec![s("2"), None, s("1.0")],
        vec![s("3"), s("605"), s("2.5")],
        vec![s("4"), s("610"), s("0.0")],
    ];

    // 1. Both staging loads done, the INSERT's submission fails.
    proxy.fail(Fault {
        method: "POST",
        path_contains: "/jobs".into(),
        body_contains: "sluice_widen_".into(),
        times: 1,
    });
    run(&through_proxy("d1/*.parquet")).await.unwrap_err();
    assert_eq!(
        staging_tables(&emu).len(),
        2,
        "one staging table per schema"
    );
    proxy.take_log();
    let report = run(&through_proxy("d1/*.parquet")).await.expect("retry 1");
    let log = proxy.take_log();
    assert_eq!(
        jobs_inserted(&log, "sourceUris"),
        0,
        "the staging loads are not run again"
    );
    // The INSERT reads the staging tables (the lineage row names its id, not the tables).
    assert_eq!(
        jobs_inserted(&log, "FROM `test-project.raw._sluice_stage_"),
        1
    );
    assert_eq!(report.jobs[0].outcome, Outcome::Loaded);
    assert_eq!(report.jobs[0].rows, Some(4));
    assert_eq!(rows(&emu), day1);
    assert_eq!(staging_tables(&emu), Vec::<String>::new());

    // 2. Day 2, `dep` empty in every file: the table's INTEGER wins, and the crash comes
    // after the INSERT, at the staging drop.
    gcs.put("d2/c.parquet", empty_dep(&[5])).await;
    proxy.fail(Fault {
        method: "DELETE",
        path_contains: "/tables/_sluice_stage_".into(),
        body_contains: String::new(),
        times: 1,
    });
    run(&through_proxy("d2/*.parquet")).await.unwrap_err();
    assert_eq!(staging_tables(&emu).len(), 1);
    proxy.take_log();
    let report = run(&through_proxy("d2/*.parquet")).await.expect("retry 2");
    let log = proxy.take_log();
    assert_eq!(report.jobs[0].outcome, Outcome::AlreadyLoaded);
    assert_eq!(
        jobs_inserted(&log, "sourceUris")
            + jobs_inserted(&log, "FROM `test-project.raw._sluice_stage_"),
        0
    );
    assert_eq!(staging_tables(&emu), Vec::<String>::new());
    let mut want = day1;
    want.push(vec![s("5"), None, s("1.0")]);
    assert_eq!(rows(&emu), want, "day 2's row once, the schema unchanged");
    let types = emu
        .rest_ok(
            "GET",
            &format!("/bigquery/v2/projects/{PROJECT}/datasets/raw/tables/flights"),
            None,
        )
        .unwrap();
    let types: Vec<&str> = types["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["INTEGER", "INTEGER", "FLOAT"]);
}
