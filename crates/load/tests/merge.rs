//! `--write merge` and lineage against real peers: fake-gcs-server holds the Parquet objects,
//! bqemulator runs the staging loads, the checks, the MERGE and the lineage INSERTs. Results
//! are read back with queries and compared value by value. A crash at a given step is a
//! fault-injecting proxy in front of the emulator (`support/fault_proxy.rs`): the call fails as
//! if the task died there, and the retry runs against the same emulator state.

mod support;

use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, Int64Array, StringArray, TimestampMicrosecondArray};
use sluice_load::{LoadConfig, LoadError, Outcome, PartitionType, Partitioning, WriteMode};
use sluice_runtime::{ExitCode, ExitStatus};
use sluice_testkit::BigQueryEmulator;
use support::fault_proxy::{Fault, FaultProxy};
use support::{Gcs, config, glob, on_main_sized_stack, parquet, task};

const PROJECT: &str = "test-project";
const TABLE: &str = "test-project.raw.people";
/// 2024-01-01T00:00:00Z in microseconds.
const T0: i64 = 1_704_067_200_000_000;
const HOUR: i64 = 3_600_000_000;

fn emulator(gcs: &Gcs) -> BigQueryEmulator {
    let bq = BigQueryEmulator::start(PROJECT, &gcs.server.root()).expect("bqemulator");
    bq.create_dataset("raw").expect("create dataset");
    bq
}

/// Rows of (id, name, updated): `updated` in hours after T0.
fn people(rows: &[(i64, &str, i64)]) -> bytes::Bytes {
    parquet(vec![
        (
            "id",
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )) as ArrayRef,
            false,
        ),
        (
            "name",
            Arc::new(StringArray::from(
                rows.iter().map(|r| Some(r.1)).collect::<Vec<_>>(),
            )),
            true,
        ),
        (
            "updated",
            Arc::new(
                TimestampMicrosecondArray::from(
                    rows.iter().map(|r| T0 + r.2 * HOUR).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            true,
        ),
    ])
}

fn merge_config(pattern: &str, gcs: &Gcs, endpoint: &str, keys: &[&str]) -> LoadConfig {
    let mut c = config(glob(pattern), TABLE, gcs, endpoint);
    c.write = WriteMode::Merge;
    c.merge_keys = keys.iter().map(|k| k.to_string()).collect();
    c
}

async fn run(c: &LoadConfig) -> Result<sluice_load::LoadReport, LoadError> {
    sluice_load::run(c, &task(0, 1), &Default::default()).await
}

/// `(id, name, hours after T0)` of every row of the table, by id.
fn table_rows(emu: &BigQueryEmulator) -> Vec<(i64, String, i64)> {
    emu.query_rows(&format!(
        "select id, name, unix_micros(updated) from `{TABLE}` order by id"
    ))
    .expect("query table")
    .into_iter()
    .map(|r| {
        (
            r[0].as_deref().unwrap().parse().unwrap(),
            r[1].clone().unwrap_or_default(),
            (r[2].as_deref().unwrap().parse::<i64>().unwrap() - T0) / HOUR,
        )
    })
    .collect()
}

fn expect_rows(emu: &BigQueryEmulator, expected: &[(i64, &str, i64)]) {
    let want: Vec<(i64, String, i64)> = expected
        .iter()
        .map(|(i, n, h)| (*i, n.to_string(), *h))
        .collect();
    assert_eq!(table_rows(emu), want);
    let dupes = emu
        .query_scalar_i64(&format!(
            "select count(*) - count(distinct id) from `{TABLE}`"
        ))
        .unwrap();
    assert_eq!(dupes, 0, "duplicate keys in {TABLE}");
}

/// Table ids in dataset `raw`.
fn tables(emu: &BigQueryEmulator) -> Vec<String> {
    let listed = emu
        .rest_ok(
            "GET",
            &format!("/bigquery/v2/projects/{PROJECT}/datasets/raw/tables"),
            None,
        )
        .unwrap();
    let mut out: Vec<String> = listed["tables"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["tableReference"]["tableId"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn staging_tables(emu: &BigQueryEmulator) -> Vec<String> {
    tables(emu)
        .into_iter()
        .filter(|t| t.starts_with("_sluice_stage_"))
        .collect()
}

fn lineage_count(emu: &BigQueryEmulator) -> i64 {
    emu.query_scalar_i64("select count(*) from `test-project.raw._sluice_loads`")
        .unwrap()
}

#[test]
fn day_two_merges_updates_and_new_rows_and_reruns_change_nothing() {
    on_main_sized_stack(day_two_merges_updates_and_new_rows_and_reruns_change_nothing_body);
}

async fn day_two_merges_updates_and_new_rows_and_reruns_change_nothing_body() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    let gen1 = gcs
        .put(
            "raw/people/1/part-0.parquet",
            people(&[(1, "a", 0), (2, "b", 0), (3, "c", 0), (4, "d", 0)]),
        )
        .await;
    let mut day1 = merge_config("raw/people/1/*.parquet", &gcs, &emu.endpoint(), &["id"]);
    day1.order_by = Some("updated".into());
    let report = run(&day1).await.expect("day 1");
    assert_eq!(report.jobs.len(), 1);
    assert_eq!(report.jobs[0].outcome, Outcome::Loaded);
    assert_eq!(report.jobs[0].rows, Some(4), "staged rows");
    assert!(
        report.jobs[0].job_id.contains("sluice_merge_raw_people_"),
        "{}",
        report.jobs[0].job_id
    );
    expect_rows(&emu, &[(1, "a", 0), (2, "b", 0), (3, "c", 0), (4, "d", 0)]);
    assert_eq!(
        staging_tables(&emu),
        Vec::<String>::new(),
        "staging dropped"
    );

    // Day 2: 2 updated, 3 updated twice in the batch (the later wins), 5 and 6 new; 1 comes
    // again unchanged (no update); 4 is not in the batch and stays as it was.
    gcs.put(
        "raw/people/2/part-0.parquet",
        people(&[
            (1, "a", 0),
            (2, "b2", 24),
            (3, "c-late", 30),
            (5, "e", 24),
            (3, "c-early", 25),
            (6, "f", 24),
        ]),
    )
    .await;
    let mut day2 = merge_config("raw/people/2/*.parquet", &gcs, &emu.endpoint(), &["id"]);
    day2.order_by = Some("updated".into());
    let report = run(&day2).await.expect("day 2");
    assert_eq!(report.jobs[0].outcome, Outcome::Loaded);
    let day2_rows = [
        (1, "a", 0),
        (2, "b2", 24),
        (3, "c-late", 30),
        (4, "d", 0),
        (5, "e", 24),
        (6, "f", 24),
    ];
    expect_rows(&emu, &day2_rows);
    assert_eq!(staging_tables(&emu), Vec::<String>::new());

    // Reruns (a retried task, or the same objects again) change nothing: not day 2, and not
    // day 1 either, which would otherwise put the old values back.
    let again = run(&day2).await.expect("day 2 again");
    assert_eq!(again.jobs[0].outcome, Outcome::AlreadyLoaded);
    assert_eq!(again.jobs[0].job_id, report.jobs[0].job_id);
    let again = run(&day1).await.expect("day 1 again");
    assert_eq!(again.jobs[0].outcome, Outcome::AlreadyLoaded);
    expect_rows(&emu, &day2_rows);

    // One lineage row per load, with what it loaded.
    assert_eq!(lineage_count(&emu), 2);
    let merged = emu
        .query_rows("select merged_rows from `test-project.raw._sluice_loads` order by file_rows")
        .unwrap();
    assert_eq!(
        merged,
        [vec![Some("4".to_string())], vec![Some("4".to_string())]],
        "day 2 merged 2 updates and 2 inserts; the unchanged row 1 is no update"
    );
    let lineage = emu
        .query_rows(
            "select write_mode, target_table, file_count, file_rows, row_count, objects, \
             load_job_id is not null, merge_job_id, sluice_version, task_index, task_attempt, \
             started_at is not null, finished_at >= started_at \
             from `test-project.raw._sluice_loads` order by file_rows",
        )
        .unwrap();
    let day1_row = &lineage[0];
    assert_eq!(day1_row[0].as_deref(), Some("merge"));
    assert_eq!(day1_row[1].as_deref(), Some(TABLE));
    assert_eq!(day1_row[2].as_deref(), Some("1"));
    assert_eq!(day1_row[3].as_deref(), Some("4"));
    assert_eq!(day1_row[4].as_deref(), Some("4"));
    let objects: serde_json::Value = serde_json::from_str(day1_row[5].as_deref().unwrap()).unwrap();
    assert_eq!(
        objects,
        serde_json::json!([{"url": "gs://lake/raw/people/1/part-0.parquet", "generation": gen1}])
    );
    assert_eq!(day1_row[6].as_deref(), Some("true"));
    assert!(
        day1_row[7]
            .as_deref()
            .unwrap()
            .contains("sluice_merge_raw_people_"),
        "{day1_row:?}"
    );
    assert_eq!(day1_row[8].as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(day1_row[9].as_deref(), Some("0"));
    assert_eq!(day1_row[10].as_deref(), Some("0"));
    assert_eq!(day1_row[11].as_deref(), Some("true"));
    assert_eq!(day1_row[12].as_deref(), Some("true"));
    assert_eq!(lineage[1][3].as_deref(), Some("6"), "day 2 staged 6 rows");
    assert_eq!(
        lineage[1][7].as_deref(),
        Some(report.jobs[0].job_id.as_str())
    );
}

#[test]
fn without_an_order_column_identical_duplicates_merge_and_differing_ones_fail() {
    on_main_sized_stack(
        without_an_order_column_identical_duplicates_merge_and_differing_ones_fail_body,
    );
}

async fn without_an_order_column_identical_duplicates_merge_and_differing_ones_fail_body() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    let regional = |rows: &[(&str, i64, &str)]| {
        parquet(vec![
            (
                "region",
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )) as ArrayRef,
                false,
            ),
            (
                "id",
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                false,
            ),
            (
                "name",
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
                true,
            ),
        ])
    };
    // A composite key; ("eu", 1) twice with identical rows (extracted twice) is fine.
    gcs.put(
        "in/a/part.parquet",
        regional(&[("eu", 1, "a"), ("eu", 1, "a"), ("us", 1, "b")]),
    )
    .await;
    let c = merge_config("in/a/*.parquet", &gcs, &emu.endpoint(), &["region", "id"]);
    run(&c).await.expect("identical duplicates merge");
    let rows = emu
        .query_rows(&format!(
            "select region, id, name from `{TABLE}` order by region, id"
        ))
        .unwrap();
    assert_eq!(
        rows,
        [
            [Some("eu".to_string()), Some("1".into()), Some("a".into())],
            [Some("us".to_string()), Some("1".into()), Some("b".into())],
        ]
    );

    // ("eu", 2) with two different rows and nothing to order them by: refused before the
    // MERGE, naming table, key columns and the key.
    gcs.put(
        "in/b/part.parquet",
        regional(&[("eu", 2, "x"), ("eu", 2, "y"), ("us", 1, "b2")]),
    )
    .await;
    let c = merge_config("in/b/*.parquet", &gcs, &emu.endpoint(), &["region", "id"]);
    let err = run(&c).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(TABLE)
            && text.contains("(region, id)")
            && text.contains(r#"key region="eu", id="2""#),
        "{text}"
    );
    assert_eq!(err.exit_code(), ExitCode::TaskFailed);
    let names = emu
        .query_rows(&format!("select name from `{TABLE}` order by region, id"))
        .unwrap();
    assert_eq!(
        names,
        [[Some("a".to_string())], [Some("b".to_string())]],
        "nothing merged"
    );
    assert_eq!(
        lineage_count(&emu),
        1,
        "only the merge that ran is recorded"
    );
}

#[test]
fn partitioned_target_takes_a_new_column_on_day_two() {
    on_main_sized_stack(partitioned_target_takes_a_new_column_on_day_two_body);
}

async fn partitioned_target_takes_a_new_column_on_day_two_body() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    let dated = |rows: &[(i64, i32, Option<&str>)], with_zip: bool| {
        let mut columns = vec![
            (
                "id",
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )) as ArrayRef,
                false,
            ),
            (
                "day",
                Arc::new(Date32Array::from(
                    rows.iter().map(|r| 19_723 + r.1).collect::<Vec<_>>(),
                )),
                true,
            ),
        ];
        if with_zip {
            columns.push((
                "zip",
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
                true,
            ));
        }
        parquet(columns)
    };
    gcs.put(
        "d1/part.parquet",
        dated(&[(1, 0, None), (2, 0, None)], false),
    )
    .await;
    let partitioned = |pattern: &str| {
        let mut c = merge_config(pattern, &gcs, &emu.endpoint(), &["id"]);
        c.partitioning = Some(Partitioning {
            field: Some("day".into()),
            kind: PartitionType::Day,
        });
        c
    };
    run(&partitioned("d1/*.parquet")).await.expect("day 1");
    let table = emu
        .rest_ok(
            "GET",
            &format!("/bigquery/v2/projects/{PROJECT}/datasets/raw/tables/people"),
            None,
        )
        .unwrap();
    assert_eq!(table["timePartitioning"]["field"], "day", "{table}");

    // Day 2 brings a column the table lacks: refused without --schema-update (as for an
    // append), added with allow-field-addition.
    gcs.put(
        "d2/part.parquet",
        dated(&[(2, 1, Some("75001")), (3, 1, Some("10115"))], true),
    )
    .await;
    let err = run(&partitioned("d2/*.parquet")).await.unwrap_err();
    assert!(
        err.to_string().contains("column `zip`")
            && err.to_string().contains("allow-field-addition"),
        "{err}"
    );
    let mut c = partitioned("d2/*.parquet");
    c.schema_update.allow_field_addition = true;
    run(&c).await.expect("day 2 with a new column");
    let rows = emu
        .query_rows(&format!(
            "select id, cast(day as string), zip from `{TABLE}` order by id"
        ))
        .unwrap();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        rows,
        [
            vec![s("1"), s("2024-01-01"), None],
            vec![s("2"), s("2024-01-02"), s("75001")],
            vec![s("3"), s("2024-01-02"), s("10115")],
        ]
    );
}

#[test]
fn a_missing_key_column_is_a_usage_error() {
    on_main_sized_stack(a_missing_key_column_is_a_usage_error_body);
}

async fn a_missing_key_column_is_a_usage_error_body() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    gcs.put("in/part.parquet", people(&[(1, "a", 0)])).await;
    let c = merge_config("in/*.parquet", &gcs, &emu.endpoint(), &["id", "nope"]);
    let err = run(&c).await.unwrap_err();
    assert_eq!(err.exit_code(), ExitCode::Usage, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(TABLE) && text.contains("--key column `nope` is not in the data"),
        "{text}"
    );
    assert_eq!(tables(&emu), Vec::<String>::new(), "nothing was created");
}

/// A crash (the call fails) at each step after the staging load; each retry finishes the
/// merge without loading or merging twice.
#[test]
fn retries_after_a_crash_at_every_step_change_nothing() {
    on_main_sized_stack(retries_after_a_crash_at_every_step_change_nothing_body);
}

async fn retries_after_a_crash_at_every_step_change_nothing_body() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    let proxy = FaultProxy::start(&emu.endpoint()).await;
    gcs.put("d1/part.parquet", people(&[(1, "a", 0), (2, "b", 0)]))
        .await;
    gcs.put("d2/part.parquet", people(&[(2, "b2", 24), (3, "c", 24)]))
        .await;
    let through_proxy = |pattern: &str| {
        let mut c = merge_config(pattern, &gcs, &proxy.endpoint(), &["id"]);
        c.order_by = Some("updated".into());
        c
    };
    let jobs_inserted = |log: &[String], needle: &str| {
        log.iter()
            .filter(|l| l.starts_with("POST ") && l.contains("/jobs") && l.contains(needle))
            .count()
    };

    // 1. Between the staging load and the MERGE: the MERGE's insert fails.
    proxy.fail(Fault {
        method: "POST",
        path_contains: "/jobs".into(),
        body_contains: "MERGE ".into(),
        times: 1,
    });
    run(&through_proxy("d1/*.parquet")).await.unwrap_err();
    assert_eq!(
        staging_tables(&emu).len(),
        1,
        "the crash left the staging table"
    );
    assert!(!tables(&emu).contains(&"people".to_string()) || table_rows(&emu).is_empty());
    proxy.take_log();
    let report = run(&through_proxy("d1/*.parquet")).await.expect("retry 1");
    let log = proxy.take_log();
    assert_eq!(
        jobs_inserted(&log, "sourceUris"),
        0,
        "the staging load is not run again"
    );
    assert_eq!(jobs_inserted(&log, "MERGE "), 1);
    assert_eq!(report.jobs[0].outcome, Outcome::Loaded);
    expect_rows(&emu, &[(1, "a", 0), (2, "b", 0)]);
    assert_eq!(
        staging_tables(&emu),
        Vec::<String>::new(),
        "merged, then dropped"
    );
    assert_eq!(lineage_count(&emu), 1);

    // 2. After the MERGE, before the staging table is dropped.
    proxy.fail(Fault {
        method: "DELETE",
        path_contains: "/tables/_sluice_stage_".into(),
        body_contains: String::new(),
        times: 1,
    });
    run(&through_proxy("d2/*.parquet")).await.unwrap_err();
    let day2 = [(1, "a", 0), (2, "b2", 24), (3, "c", 24)];
    expect_rows(&emu, &day2);
    assert_eq!(staging_tables(&emu).len(), 1);
    proxy.take_log();
    let report = run(&through_proxy("d2/*.parquet")).await.expect("retry 2");
    let log = proxy.take_log();
    assert_eq!(report.jobs[0].outcome, Outcome::AlreadyLoaded);
    assert_eq!(
        jobs_inserted(&log, "MERGE ") + jobs_inserted(&log, "sourceUris"),
        0
    );
    expect_rows(&emu, &day2);
    assert_eq!(staging_tables(&emu), Vec::<String>::new());
    // The lineage row was not written by the crashed attempt; the retry wrote it, once.
    assert_eq!(lineage_count(&emu), 2);

    // 3. After the MERGE and the drop, when the lineage row is written.
    gcs.put("d3/part.parquet", people(&[(4, "d", 48)])).await;
    proxy.fail(Fault {
        method: "POST",
        path_contains: "/jobs".into(),
        body_contains: "_sluice_loads".into(),
        times: 1,
    });
    run(&through_proxy("d3/*.parquet")).await.unwrap_err();
    assert_eq!(lineage_count(&emu), 2);
    let report = run(&through_proxy("d3/*.parquet")).await.expect("retry 3");
    assert_eq!(report.jobs[0].outcome, Outcome::AlreadyLoaded);
    assert_eq!(lineage_count(&emu), 3);
    run(&through_proxy("d3/*.parquet"))
        .await
        .expect("retry 3 again");
    assert_eq!(lineage_count(&emu), 3, "one row per load");
    expect_rows(
        &emu,
        &[(1, "a", 0), (2, "b2", 24), (3, "c", 24), (4, "d", 48)],
    );
}

#[test]
fn every_write_mode_records_lineage_unless_turned_off() {
    on_main_sized_stack(every_write_mode_records_lineage_unless_turned_off_body);
}

async fn every_write_mode_records_lineage_unless_turned_off_body() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    gcs.put("in/part.parquet", people(&[(1, "a", 0), (2, "b", 0)]))
        .await;
    let mut c = config(glob("in/*.parquet"), TABLE, &gcs, &emu.endpoint());
    c.write = WriteMode::Truncate;
    c.lineage = false;
    run(&c).await.expect("truncate without lineage");
    assert!(
        !tables(&emu).contains(&"_sluice_loads".to_string()),
        "{:?}",
        tables(&emu)
    );

    c.lineage = true;
    c.write = WriteMode::Append;
    let report = run(&c).await.expect("append");
    assert_eq!(lineage_count(&emu), 1);
    let row = emu
        .query_rows(
            "select write_mode, load_job_id, merge_job_id, file_rows, byte_count > 0 \
             from `test-project.raw._sluice_loads`",
        )
        .unwrap()
        .remove(0);
    assert_eq!(row[0].as_deref(), Some("append"));
    assert_eq!(row[1].as_deref(), Some(report.jobs[0].job_id.as_str()));
    assert_eq!(row[2], None);
    assert_eq!(row[3].as_deref(), Some("2"));
    assert_eq!(row[4].as_deref(), Some("true"));
}
