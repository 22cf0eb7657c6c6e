//! `sluice load` as a process: flag/env validation (exit 2), and the extract -> load path the
//! demo pipeline runs: `sluice extract --format parquet` writes Parquet + task manifests to
//! fake-gcs-server, two `sluice load` tasks load them into a partitioned bqemulator table.

mod process_support;

use process_support::{sluice, text};

use sluice_testkit::{BigQueryEmulator, FakeGcs};

const BUCKET: &str = "lake";
const PROJECT: &str = "demo-project";

#[test]
fn configuration_errors_exit_2_with_the_reason() {
    for (args, needle) in [
        (
            vec!["load", "--table", "p.ds.t"],
            "--source <GLOB>|--manifests <PREFIX>",
        ),
        (
            vec![
                "load",
                "--source",
                "gs://b/x/*.parquet",
                "--table",
                "p.ds.t",
                "--write",
                "truncate",
                "--schema-update",
                "allow-field-addition",
            ],
            "--schema-update needs --write append",
        ),
        (
            vec![
                "load",
                "--source",
                "gs://b/*.csv",
                "--table",
                "p.ds.t",
                "--format",
                "csv",
            ],
            "CSV loads need --schema FILE or --autodetect",
        ),
        (
            vec!["load", "--source", "gs://b/*.parquet", "--table", "ds.t"],
            "must be PROJECT.DATASET.TABLE",
        ),
        (
            vec![
                "load",
                "--source",
                "gs://b/*",
                "--table",
                "p.ds.t",
                "--create-dataset",
            ],
            "--create-dataset needs --location",
        ),
    ] {
        let out = sluice(&args, &[]);
        let text = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(
            text.contains(needle),
            "{args:?}: expected {needle:?} in {text}"
        );
    }
    // Env twins are read: SLUICE_WRITE=truncate with the same schema update fails the same way.
    let out = sluice(
        &["load", "--source", "gs://b/*.parquet", "--table", "p.ds.t"],
        &[
            ("SLUICE_WRITE", "truncate".into()),
            ("SLUICE_SCHEMA_UPDATE", "allow-field-relaxation".into()),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn loads_what_extract_wrote_into_a_partitioned_table() {
    let gcs = FakeGcs::start().expect("fake-gcs-server");
    gcs.create_bucket(BUCKET).expect("bucket");
    let bq = BigQueryEmulator::start(PROJECT, &gcs.root()).expect("bqemulator");
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("city,population,founded\n");
    for i in 0..25 {
        csv.push_str(&format!("city{i},{},{}-01-01\n", 1000 + i, 1800 + i));
    }
    std::fs::write(dir.path().join("cities.csv"), &csv).unwrap();
    std::fs::write(
        dir.path().join("rivers.csv"),
        "river,km\nGlomma,621\nRhine,1233\n",
    )
    .unwrap();
    let env = vec![
        ("STORAGE_EMULATOR_HOST", gcs.endpoint()),
        ("BIGQUERY_EMULATOR_HOST", bq.endpoint()),
    ];

    let cities = format!("file://{}", dir.path().join("cities.csv").display());
    let rivers = format!("file://{}", dir.path().join("rivers.csv").display());
    let extract = sluice(
        &[
            "extract",
            "--url",
            &cities,
            "--url",
            &rivers,
            "--dest",
            &format!("gs://{BUCKET}/raw"),
            "--format",
            "parquet",
            "--partition",
            "dt=2026-11-28",
        ],
        &env,
    );
    assert!(extract.status.success(), "extract: {}", text(&extract));

    let load_args = [
        "load",
        "--manifests",
        &format!("gs://{BUCKET}/raw/_manifests/"),
        "--table",
        &format!("{PROJECT}.raw.{{dataset}}"),
        "--write",
        "truncate",
        "--hive-partitioning",
        "--partition-by",
        "dt",
        "--create-dataset",
        "--location",
        "US",
    ];
    let mut logs = String::new();
    for index in 0..2 {
        let mut task_env = env.clone();
        task_env.push(("CLOUD_RUN_TASK_INDEX", index.to_string()));
        task_env.push(("CLOUD_RUN_TASK_COUNT", "2".into()));
        let out = sluice(&load_args, &task_env);
        let text = text(&out);
        assert!(out.status.success(), "load task {index}: {text}");
        logs.push_str(&text);
    }
    assert_eq!(
        bq.query_scalar_i64("select count(*) from raw.cities")
            .unwrap(),
        25
    );
    assert_eq!(
        bq.query_scalar_i64("select count(*) from raw.rivers")
            .unwrap(),
        2
    );
    assert_eq!(
        bq.query_scalar_i64("select count(*) from raw.cities where dt = date '2026-11-28'")
            .unwrap(),
        25
    );
    // The types extract inferred reach BigQuery explicitly, plus the Hive `dt` column.
    let (status, table) = bq
        .rest(
            "GET",
            &format!("/bigquery/v2/projects/{PROJECT}/datasets/raw/tables/cities"),
            None,
        )
        .unwrap();
    assert_eq!(status, 200, "{table}");
    let table: serde_json::Value = serde_json::from_str(&table).unwrap();
    let types: Vec<String> = table["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f["name"].as_str().unwrap(),
                f["type"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            "city STRING",
            "population INTEGER",
            "founded DATE",
            "dt DATE"
        ],
        "{table}"
    );
    assert_eq!(table["timePartitioning"]["field"], "dt", "{table}");
    // One report line per job, as Cloud Logging JSON with the fields a person looks for.
    let reports: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("outcome").is_some())
        .collect();
    assert_eq!(reports.len(), 2, "{logs}");
    let cities_report = reports
        .iter()
        .find(|r| r["table"] == format!("{PROJECT}.raw.cities"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert_eq!(cities_report["outcome"], "loaded");
    assert_eq!(cities_report["file_rows"], 25);
    assert!(
        cities_report["job_id"]
            .as_str()
            .unwrap()
            .contains("sluice_load_raw_cities_"),
        "{cities_report}"
    );
    for field in ["rows", "bytes", "bad_records", "duration_ms", "severity"] {
        assert!(
            cities_report.get(field).is_some(),
            "{field} in {cities_report}"
        );
    }
}
