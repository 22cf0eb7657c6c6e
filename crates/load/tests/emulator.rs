//! `sluice load` against real peers: fake-gcs-server holds the objects, bqemulator runs the
//! load jobs (reading `gs://` through the same directory), and the real `bq` client checks
//! what landed. What the emulator cannot do (409 on reused ids, job failures, maxBadRecords,
//! partition decorators) is covered in `fake_bigquery.rs`.

mod support;

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, ListBuilder,
    StringArray, StringBuilder, TimestampMicrosecondArray,
};
use sluice_load::{Input, LoadError, Outcome, PartitionType, Partitioning, WriteMode};
use sluice_testkit::BigQueryEmulator;
use support::{BUCKET, Gcs, bq, bq_count, config, glob, parquet, simple_parquet, task};

const PROJECT: &str = "test-project";

fn emulator(gcs: &Gcs) -> BigQueryEmulator {
    let bq = BigQueryEmulator::start(PROJECT, &gcs.server.root()).expect("bqemulator");
    let (status, body) = bq
        .rest(
            "POST",
            &format!("/bigquery/v2/projects/{PROJECT}/datasets"),
            Some(&serde_json::json!({"datasetReference": {"projectId": PROJECT, "datasetId": "raw"}})),
        )
        .expect("create dataset");
    assert_eq!(status, 200, "{body}");
    bq
}

fn typed_parquet(first_id: i64, n: usize) -> bytes::Bytes {
    let ids: Vec<i64> = (first_id..first_id + n as i64).collect();
    let mut tags = ListBuilder::new(StringBuilder::new());
    for i in 0..n {
        for j in 0..(i % 3) {
            tags.values().append_value(format!("t{j}"));
        }
        tags.append(true);
    }
    let micros: Vec<i64> = ids
        .iter()
        .map(|i| 1_704_067_200_000_000 + i * 1_000_000)
        .collect();
    parquet(vec![
        (
            "id",
            Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
            false,
        ),
        (
            "name",
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| (i % 2 == 0).then(|| format!("n{i}")))
                    .collect::<Vec<_>>(),
            )),
            true,
        ),
        (
            "at",
            Arc::new(TimestampMicrosecondArray::from(micros.clone()).with_timezone("UTC")),
            true,
        ),
        (
            "local",
            Arc::new(TimestampMicrosecondArray::from(micros)),
            true,
        ),
        ("day", Arc::new(Date32Array::from(vec![19_723; n])), true),
        (
            "amount",
            Arc::new(
                Decimal128Array::from(ids.iter().map(|i| i128::from(*i) * 125).collect::<Vec<_>>())
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
            true,
        ),
        ("score", Arc::new(Float64Array::from(vec![0.5; n])), true),
        ("ok", Arc::new(BooleanArray::from(vec![true; n])), true),
        ("tags", Arc::new(tags.finish()), true),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_loads_with_explicit_types_and_row_counts() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    gcs.put("raw/events/part-0.parquet", typed_parquet(0, 3))
        .await;
    gcs.put("raw/events/part-1.parquet", typed_parquet(3, 4))
        .await;

    let c = config(
        glob("raw/**/*.parquet"),
        &format!("{PROJECT}.raw.{{dataset}}"),
        &gcs,
        &emu.endpoint(),
    );
    let report = sluice_load::run(&c, &task(0, 1), &Default::default())
        .await
        .expect("load");
    assert_eq!(report.jobs.len(), 1, "two files, one destination, one job");
    let job = &report.jobs[0];
    assert_eq!(job.table, format!("{PROJECT}.raw.events"));
    assert_eq!(job.outcome, Outcome::Loaded);
    assert_eq!(job.files, 2);
    assert_eq!(job.file_rows, Some(7));
    assert_eq!(job.rows, Some(7));
    assert!(
        job.job_id.contains("sluice_load_raw_events_"),
        "{}",
        job.job_id
    );

    let schema = bq(
        &emu.endpoint(),
        PROJECT,
        &["show", "--schema", "raw.events"],
    );
    let described: Vec<String> = schema
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{} {} {}",
                f["name"].as_str().unwrap(),
                f["type"].as_str().unwrap(),
                f["mode"].as_str().unwrap_or("NULLABLE")
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            "id INTEGER REQUIRED",
            "name STRING NULLABLE",
            "at TIMESTAMP NULLABLE",
            "local DATETIME NULLABLE",
            "day DATE NULLABLE",
            "amount NUMERIC NULLABLE",
            "score FLOAT NULLABLE",
            "ok BOOLEAN NULLABLE",
            "tags STRING REPEATED",
        ]
    );
    assert_eq!(bq_count(&emu.endpoint(), PROJECT, "raw.events"), 7);
    let rows = bq(
        &emu.endpoint(),
        PROJECT,
        &[
            "query",
            "--nouse_legacy_sql",
            "select id, cast(amount * 100 as int64) as cents, array_length(tags) as n, cast(day as string) as day from raw.events where id = 5",
        ],
    );
    assert_eq!(rows[0]["cents"], "625", "{rows}");
    assert_eq!(rows[0]["n"], "2", "{rows}");
    assert_eq!(rows[0]["day"], "2024-01-01", "{rows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_adds_and_truncate_replaces() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    gcs.put("in/a/part.parquet", simple_parquet(0, 3)).await;
    gcs.put("in/b/part.parquet", simple_parquet(100, 2)).await;
    let table = format!("{PROJECT}.raw.events");
    let run = |pattern: &str, write: WriteMode| {
        let mut c = config(glob(pattern), &table, &gcs, &emu.endpoint());
        c.write = write;
        async move { sluice_load::run(&c, &task(0, 1), &Default::default()).await }
    };
    run("in/a/*.parquet", WriteMode::Append)
        .await
        .expect("append a");
    run("in/b/*.parquet", WriteMode::Append)
        .await
        .expect("append b");
    assert_eq!(bq_count(&emu.endpoint(), PROJECT, "raw.events"), 5);
    // Truncate replaces the table with exactly the objects of the job, however often it runs.
    run("in/**/*.parquet", WriteMode::Truncate)
        .await
        .expect("truncate");
    assert_eq!(bq_count(&emu.endpoint(), PROJECT, "raw.events"), 5);
    let report = run("in/a/*.parquet", WriteMode::Truncate)
        .await
        .expect("truncate a");
    assert_eq!(report.jobs[0].rows, Some(3));
    assert_eq!(bq_count(&emu.endpoint(), PROJECT, "raw.events"), 3);
    // WRITE_EMPTY refuses a table with rows: the job fails with BigQuery's message.
    let err = run("in/b/*.parquet", WriteMode::Empty).await.unwrap_err();
    // The API error is the source of the load error: the whole chain carries both.
    let text = sluice_runtime::error_chain(&err);
    assert!(
        text.contains(&table) && text.contains("WRITE_EMPTY"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hive_partitioned_objects_load_into_a_partitioned_table() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    gcs.put(
        "raw/trips/dt=2024-01-01/part-00000.parquet",
        simple_parquet(0, 3),
    )
    .await;
    gcs.put(
        "raw/trips/dt=2024-01-02/part-00000.parquet",
        simple_parquet(10, 2),
    )
    .await;
    let mut c = config(
        glob("raw/**/*.parquet"),
        &format!("{PROJECT}.raw.{{dataset}}"),
        &gcs,
        &emu.endpoint(),
    );
    c.hive_partitioning = true;
    c.write = WriteMode::Truncate;
    c.partitioning = Some(Partitioning {
        field: Some("dt".into()),
        kind: PartitionType::Day,
    });
    c.clustering = vec!["id".into()];
    let report = sluice_load::run(&c, &task(0, 1), &Default::default())
        .await
        .expect("load");
    assert_eq!(report.jobs.len(), 1);
    let table = bq(&emu.endpoint(), PROJECT, &["show", "raw.trips"]);
    assert_eq!(table["timePartitioning"]["field"], "dt", "{table}");
    assert_eq!(table["timePartitioning"]["type"], "DAY", "{table}");
    assert_eq!(table["clustering"]["fields"][0], "id", "{table}");
    let per_day = bq(
        &emu.endpoint(),
        PROJECT,
        &[
            "query",
            "--nouse_legacy_sql",
            "select cast(dt as string) as dt, count(*) as n from raw.trips group by dt order by dt",
        ],
    );
    assert_eq!(per_day[0]["dt"], "2024-01-01", "{per_day}");
    assert_eq!(per_day[0]["n"], "3", "{per_day}");
    assert_eq!(per_day[1]["n"], "2", "{per_day}");

    // Asking for another layout than the table has is refused before any job runs.
    c.partitioning.as_mut().unwrap().kind = PartitionType::Month;
    let err = sluice_load::run(&c, &task(0, 1), &Default::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot change a table's partitioning"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_with_a_schema_file_loads() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    gcs.put(
        "csv/cities.csv",
        bytes::Bytes::from_static(b"city,population\nOslo,709000\nBergen,291000\n"),
    )
    .await;
    let mut c = config(
        glob("csv/*.csv"),
        &format!("{PROJECT}.raw.cities"),
        &gcs,
        &emu.endpoint(),
    );
    c.format = sluice_load::SourceFormat::Csv;
    c.schema = sluice_load::SchemaSource::Explicit(
        sluice_load::parse_schema_file(
            r#"[{"name":"city","type":"STRING","mode":"REQUIRED"},{"name":"population","type":"INT64"}]"#,
        )
        .unwrap(),
    );
    c.max_bad_records = Some(5);
    sluice_load::run(&c, &task(0, 1), &Default::default())
        .await
        .expect("load");
    let rows = bq(
        &emu.endpoint(),
        PROJECT,
        &[
            "query",
            "--nouse_legacy_sql",
            "select sum(population) as p from raw.cities",
        ],
    );
    assert_eq!(rows[0]["p"], "1000000", "{rows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_whose_schemas_differ_fail_naming_file_and_column() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    gcs.put("drift/a.parquet", simple_parquet(0, 2)).await;
    gcs.put(
        "drift/b.parquet",
        parquet(vec![
            ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef, false),
            (
                "name",
                Arc::new(Float64Array::from(vec![1.5])) as ArrayRef,
                true,
            ),
        ]),
    )
    .await;
    let c = config(
        glob("drift/*.parquet"),
        &format!("{PROJECT}.raw.drift"),
        &gcs,
        &emu.endpoint(),
    );
    let err = sluice_load::run(&c, &task(0, 1), &Default::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, LoadError::SchemaMismatch { .. })
            && text.contains("gs://lake/drift/b.parquet")
            && text.contains("gs://lake/drift/a.parquet")
            && text.contains("`name`")
            && text.contains("FLOAT differs from STRING"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_naming_a_missing_object_fails_clearly() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    let generation = gcs
        .put("raw/city/present.parquet", simple_parquet(0, 1))
        .await;
    // A manifest as `sluice extract` writes it (the shared types, starting from one a real
    // extract run wrote), listing one object that exists and one that does not.
    let mut manifest = sluice_manifest::TaskManifest::parse(
        include_bytes!("../../manifest/tests/fixtures/task-00000.json"),
        "fixture",
    )
    .unwrap();
    manifest.items.truncate(1);
    let template = manifest.items[0].objects[0].clone();
    let object = |name: &str, generation: i64| sluice_manifest::ObjectRecord {
        name: name.to_string(),
        url: format!("gs://{BUCKET}/{name}"),
        dataset: "city".into(),
        size: 10,
        generation: Some(generation),
        ..template.clone()
    };
    manifest.items[0].objects = vec![
        object("raw/city/present.parquet", generation),
        object("raw/city/gone.parquet", 7),
    ];
    manifest.task_index = 0;
    manifest.task_count = 1;
    gcs.put("raw/_manifests/task-00000.json", manifest.to_bytes().into())
        .await;
    let c = config(
        Input::Manifests(format!("gs://{BUCKET}/raw/_manifests/")),
        &format!("{PROJECT}.raw.{{dataset}}"),
        &gcs,
        &emu.endpoint(),
    );
    let err = sluice_load::run(&c, &task(0, 1), &Default::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "gs://{BUCKET}/raw/city/gone.parquet is listed in manifest gs://{BUCKET}/raw/_manifests/task-00000.json but does not exist"
        )
    );
    // Nothing was loaded: the check runs before any job.
    let (status, _) = emu
        .rest(
            "GET",
            &format!("/bigquery/v2/projects/{PROJECT}/datasets/raw/tables/city"),
            None,
        )
        .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharding_across_tasks_loads_every_object_exactly_once() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    let tables = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
    ];
    for (i, name) in tables.iter().enumerate() {
        gcs.put(
            &format!("shard/{name}/part.parquet"),
            simple_parquet(0, i + 1),
        )
        .await;
    }
    let table = format!("{PROJECT}.raw.{{dir}}");
    for count in [1u32, 3] {
        let mut c = config(glob("shard/**/*.parquet"), &table, &gcs, &emu.endpoint());
        c.write = WriteMode::Truncate;
        let mut seen = Vec::new();
        for index in 0..count {
            let report = sluice_load::run(&c, &task(index, count), &Default::default())
                .await
                .expect("task");
            assert_eq!(report.items_total, tables.len());
            seen.extend(report.jobs.into_iter().map(|j| j.table));
        }
        seen.sort();
        let expected: Vec<String> = tables
            .iter()
            .map(|t| format!("{PROJECT}.raw.{t}"))
            .collect();
        assert_eq!(
            seen, expected,
            "{count} task(s): every destination exactly once"
        );
        for (i, name) in tables.iter().enumerate() {
            assert_eq!(
                emu.query_scalar_i64(&format!("select count(*) from raw.{name}"))
                    .unwrap(),
                i as i64 + 1,
                "{name} after {count} task(s)"
            );
        }
    }
    assert_eq!(bq_count(&emu.endpoint(), PROJECT, "raw.golf"), 7);
}
