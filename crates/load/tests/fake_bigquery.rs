//! What bqemulator cannot show, against a focused fake of `jobs.insert`/`jobs.get` that behaves
//! as BigQuery does (409 on a reused id, RUNNING jobs, job failures with reason/message/location,
//! request bodies validated against the discovery document). Objects live in fake-gcs-server.

mod support;

use serde_json::{Value, json};
use sluice_load::{
    ErrorClass, LoadConfig, LoadError, Outcome, SchemaSource, SourceFormat, WriteMode,
};
use support::fake_bq::{FakeBigQuery, Script, check_insert, validate};
use support::{Gcs, glob, simple_parquet, task};

/// The fake answers load jobs only (`jobs.insert`/`jobs.get`); lineage rows (a table and an
/// INSERT query job per load) are covered against the emulator in `merge.rs`.
fn config(input: sluice_load::Input, table: &str, gcs: &Gcs, endpoint: &str) -> LoadConfig {
    let mut c = support::config(input, table, gcs, endpoint);
    c.lineage = false;
    c
}

const PROJECT: &str = "proj";

async fn setup() -> (Gcs, FakeBigQuery) {
    let gcs = Gcs::start();
    gcs.put("raw/events/part-0.parquet", simple_parquet(0, 3))
        .await;
    (gcs, FakeBigQuery::start().await)
}

fn parquet_config(gcs: &Gcs, fake: &FakeBigQuery) -> LoadConfig {
    config(
        glob("raw/**/*.parquet"),
        &format!("{PROJECT}.raw.{{dataset}}"),
        gcs,
        &fake.endpoint(),
    )
}

async fn run(c: &LoadConfig) -> Result<sluice_load::LoadReport, LoadError> {
    sluice_load::run(c, &task(0, 1), &Default::default()).await
}

/// The body the loader sends for this config (recorded by a throwaway fake).
async fn insert_body(c: &LoadConfig) -> Value {
    let probe = FakeBigQuery::start().await;
    let mut c = c.clone();
    c.bigquery = sluice_load::ClientConfig::emulator(&probe.endpoint());
    run(&c).await.expect("probe run");
    probe.requests()[0].body.clone().expect("insert body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_pass_the_discovery_schema_and_carry_the_options() {
    let (gcs, fake) = setup().await;
    let mut c = parquet_config(&gcs, &fake);
    c.write = WriteMode::Truncate;
    let report = run(&c).await.expect("load");
    assert_eq!(report.jobs[0].outcome, Outcome::Loaded);
    // The fake answered 200, so the body passed the discovery-document validation; check the
    // options and that the same validation does reject what BigQuery rejects.
    let body = fake.requests()[0].body.clone().unwrap();
    let load = &body["configuration"]["load"];
    assert_eq!(load["writeDisposition"], "WRITE_TRUNCATE");
    assert_eq!(load["sourceFormat"], "PARQUET");
    assert_eq!(
        load["sourceUris"],
        json!(["gs://lake/raw/events/part-0.parquet"])
    );
    assert_eq!(load["destinationTable"]["tableId"], "events");
    assert_eq!(
        load["schema"]["fields"][0],
        json!({"name": "id", "type": "INTEGER", "mode": "REQUIRED"})
    );
    assert_eq!(
        body["configuration"]["labels"]["sluice"],
        Value::Null,
        "labels come from the CLI"
    );
    let job = json!({"$ref": "Job"});
    let mut bad = body.clone();
    bad["configuration"]["load"]["maxBadRecord"] = json!(3);
    let (location, message) = validate(&bad, &job, "job", true).unwrap_err();
    assert_eq!(location, "job.configuration.load");
    assert!(
        message.contains("Unknown name \"maxBadRecord\""),
        "{message}"
    );
    let mut bad = body.clone();
    bad["configuration"]["load"]["writeDisposition"] = json!("WRITE_OVER");
    let (location, _) = check_insert(&bad, true).unwrap_err();
    assert_eq!(location, "job.configuration.load.writeDisposition");
    let mut bad = body.clone();
    bad["jobReference"]["jobId"] = json!("has.dots");
    assert!(check_insert(&bad, true).is_err());
    let mut bad = body;
    bad["configuration"]["load"]["maxBadRecords"] = json!("many");
    assert!(validate(&bad, &job, "job", true).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_already_done_counts_as_loaded_without_a_new_job() {
    let (gcs, fake) = setup().await;
    let c = parquet_config(&gcs, &fake);
    let body = insert_body(&c).await;
    let id = body["jobReference"]["jobId"].as_str().unwrap().to_string();
    fake.seed_job(PROJECT, &id, &body, Script::ok());

    let report = run(&c).await.expect("load");
    let job = &report.jobs[0];
    assert_eq!(job.outcome, Outcome::AlreadyLoaded);
    assert_eq!(job.attempt, 0);
    assert_eq!(job.rows, Some(10));
    assert_eq!(job.job_id, format!("{PROJECT}:US.{id}"));
    // One insert (answered 409) and one get; no second job.
    assert_eq!(fake.inserted_ids(), [id]);
    assert_eq!(fake.gets(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_from_an_earlier_attempt_is_followed_to_its_end() {
    let (gcs, fake) = setup().await;
    let c = parquet_config(&gcs, &fake);
    let body = insert_body(&c).await;
    let id = body["jobReference"]["jobId"].as_str().unwrap().to_string();
    fake.seed_job(
        PROJECT,
        &id,
        &body,
        Script::Succeed {
            polls: 3,
            rows: 3,
            bad_records: 0,
            errors: vec![],
        },
    );
    let report = run(&c).await.expect("load");
    assert_eq!(report.jobs[0].outcome, Outcome::AlreadyLoaded);
    assert_eq!(report.jobs[0].rows, Some(3));
    assert_eq!(fake.inserted_ids().len(), 1);
    assert!(fake.gets() >= 4, "polled until DONE: {} gets", fake.gets());
    // Every poll named the job's location, as BigQuery requires outside US/EU.
    assert!(
        fake.requests()
            .iter()
            .filter(|r| r.method == "GET")
            .all(|r| r.query.contains("location=US"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_job_failure_is_retried_under_the_next_attempt_suffix() {
    let (gcs, fake) = setup().await;
    let c = parquet_config(&gcs, &fake);
    fake.script([
        Script::fail("backendError", "Backend error. Please try again.", ""),
        Script::Succeed {
            polls: 1,
            rows: 3,
            bad_records: 0,
            errors: vec![],
        },
    ]);
    let report = run(&c).await.expect("load");
    let ids = fake.inserted_ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[1], format!("{}_a1", ids[0]));
    assert_eq!(report.jobs[0].attempt, 1);
    assert_eq!(report.jobs[0].outcome, Outcome::Loaded);
    assert!(report.jobs[0].job_id.ends_with("_a1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_stop_after_max_job_attempts() {
    let (gcs, fake) = setup().await;
    let mut c = parquet_config(&gcs, &fake);
    c.max_job_attempts = 2;
    fake.script([
        Script::fail("backendError", "first", ""),
        Script::fail("internalError", "second", ""),
    ]);
    let err = run(&c).await.unwrap_err();
    let LoadError::JobFailed(failure) = &err else {
        panic!("{err}")
    };
    assert_eq!(failure.class, ErrorClass::Transient);
    assert_eq!(failure.error.reason, "internalError");
    assert_eq!(fake.inserted_ids().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_failure_fails_the_task_with_reason_message_and_location() {
    let (gcs, fake) = setup().await;
    let c = parquet_config(&gcs, &fake);
    fake.script([Script::Fail {
        polls: 1,
        error: json!({"reason": "invalid", "message": "Error while reading data, error message: Parquet column 'id' has type INT64 which does not match the target cpp_type STRING.", "location": "gs://lake/raw/events/part-0.parquet"}),
        errors: vec![json!({"reason": "invalid", "message": "File: 0 / Offset:0 / Reason: schema mismatch", "location": "gs://lake/raw/events/part-0.parquet"})],
    }]);
    let err = run(&c).await.unwrap_err();
    let text = err.to_string();
    let LoadError::JobFailed(failure) = &err else {
        panic!("{text}")
    };
    assert_eq!(failure.class, ErrorClass::Terminal);
    assert_eq!(failure.table, format!("{PROJECT}.raw.events"));
    for needle in [
        "into proj.raw.events failed (terminal)",
        "proj:US.sluice_load_raw_events_",
        "invalid: Error while reading data",
        "(location: gs://lake/raw/events/part-0.parquet)",
        "Reason: schema mismatch",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in {text}");
    }
    assert_eq!(fake.inserted_ids().len(), 1, "terminal: no resubmission");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_failed_in_an_earlier_run_does_not_block_the_load() {
    let (gcs, fake) = setup().await;
    let c = parquet_config(&gcs, &fake);
    let body = insert_body(&c).await;
    let id = body["jobReference"]["jobId"].as_str().unwrap().to_string();
    // E.g. the dataset was missing then and has been created since.
    fake.seed_job(
        PROJECT,
        &id,
        &body,
        Script::fail("notFound", "Not found: Dataset proj:raw", ""),
    );
    let report = run(&c).await.expect("load");
    assert_eq!(report.jobs[0].outcome, Outcome::Loaded);
    assert_eq!(report.jobs[0].attempt, 1);
    assert_eq!(fake.inserted_ids(), [id.clone(), format!("{id}_a1")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_errors_are_retried_or_reported_by_bigquery_reason() {
    let (gcs, fake) = setup().await;
    let c = parquet_config(&gcs, &fake);
    // 503 and 403 rateLimitExceeded: the same insert is repeated (same id: safe, the 409
    // path covers an insert that did go through).
    fake.script([
        Script::InsertError {
            status: 503,
            reason: "backendError".into(),
            message: "unavailable".into(),
        },
        Script::InsertError {
            status: 403,
            reason: "rateLimitExceeded".into(),
            message: "Exceeded rate limits".into(),
        },
    ]);
    let report = run(&c).await.expect("load");
    let ids = fake.inserted_ids();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert_eq!(report.jobs[0].attempt, 0);

    // 403 quotaExceeded is terminal and quoted.
    let (gcs2, fake2) = setup().await;
    let c2 = parquet_config(&gcs2, &fake2);
    fake2.script([Script::InsertError {
        status: 403,
        reason: "quotaExceeded".into(),
        message: "Quota exceeded: load jobs per table per day".into(),
    }]);
    let err = sluice_runtime::error_chain(&run(&c2).await.unwrap_err());
    assert!(
        err.contains("HTTP 403: quotaExceeded: Quota exceeded: load jobs per table per day")
            && err.contains("table proj.raw.events"),
        "{err}"
    );
    assert_eq!(fake2.inserted_ids().len(), 1);
}

fn csv_config(gcs: &Gcs, fake: &FakeBigQuery, max_bad: u32) -> LoadConfig {
    let mut c = config(
        glob("csv/*.csv"),
        &format!("{PROJECT}.raw.cities"),
        gcs,
        &fake.endpoint(),
    );
    c.format = SourceFormat::Csv;
    c.schema = SchemaSource::Explicit(
        sluice_load::parse_schema_file(
            r#"[{"name":"city","type":"STRING"},{"name":"pop","type":"INTEGER"}]"#,
        )
        .unwrap(),
    );
    c.max_bad_records = Some(max_bad);
    c.csv.field_delimiter = ";".into();
    c
}

/// bqemulator ignores `maxBadRecords` (its CSV load is a plain DuckDB COPY), so BigQuery's two
/// outcomes are scripted here: bad rows within the limit load with `badRecords` reported, more
/// than the limit fail the job with per-row locations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_bad_rows_under_and_over_max_bad_records() {
    let gcs = Gcs::start();
    gcs.put(
        "csv/cities.csv",
        bytes::Bytes::from_static(b"city;pop\nOslo;709000\nBergen;many\n"),
    )
    .await;
    let fake = FakeBigQuery::start().await;
    fake.script([Script::Succeed {
        polls: 1,
        rows: 1,
        bad_records: 1,
        errors: vec![json!({"reason": "invalid", "message": "Could not parse 'many' as INT64 for field pop (position 1) starting at location 20", "location": "gs://lake/csv/cities.csv"})],
    }]);
    let report = run(&csv_config(&gcs, &fake, 1))
        .await
        .expect("within the limit");
    assert_eq!(report.jobs[0].bad_records, Some(1));
    assert_eq!(report.jobs[0].rows, Some(1));
    let body = fake.requests()[0].body.clone().unwrap();
    let load = &body["configuration"]["load"];
    assert_eq!(load["maxBadRecords"], 1);
    assert_eq!(load["skipLeadingRows"], 1);
    assert_eq!(load["fieldDelimiter"], ";");
    assert_eq!(load["sourceFormat"], "CSV");

    let fake = FakeBigQuery::start().await;
    fake.script([Script::Fail {
        polls: 0,
        error: json!({"reason": "invalid", "message": "Error while reading data, error message: CSV table encountered too many errors, giving up. Rows: 2; errors: 1. Please look into the errors[] collection for more details.", "location": "gs://lake/csv/cities.csv"}),
        errors: vec![json!({"reason": "invalid", "message": "Could not parse 'many' as INT64 for field pop (position 1) starting at location 20", "location": "gs://lake/csv/cities.csv"})],
    }]);
    let err = run(&csv_config(&gcs, &fake, 0))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("too many errors") && err.contains("Could not parse 'many'"),
        "{err}"
    );
    assert_eq!(fake.inserted_ids().len(), 1, "invalid data is terminal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_reload_through_a_decorator_is_idempotent() {
    let gcs = Gcs::start();
    gcs.put(
        "raw/trips/dt=2024-01-31/part-00000.parquet",
        simple_parquet(0, 3),
    )
    .await;
    gcs.put(
        "raw/trips/dt=2024-02-01/part-00000.parquet",
        simple_parquet(5, 2),
    )
    .await;
    let fake = FakeBigQuery::start().await;
    let mut c = config(
        glob("raw/**/*.parquet"),
        &format!("{PROJECT}.raw.{{dataset}}${{dt}}"),
        &gcs,
        &fake.endpoint(),
    );
    c.write = WriteMode::Truncate;
    c.schema_update.allow_field_addition = true;
    let first = run(&c).await.expect("first load");
    let tables: Vec<&str> = first.jobs.iter().map(|j| j.table.as_str()).collect();
    assert_eq!(
        tables,
        ["proj.raw.trips$20240131", "proj.raw.trips$20240201"]
    );
    let bodies: Vec<Value> = fake.requests().into_iter().filter_map(|r| r.body).collect();
    for body in &bodies {
        let load = &body["configuration"]["load"];
        assert_eq!(load["writeDisposition"], "WRITE_TRUNCATE");
        assert!(
            load["destinationTable"]["tableId"]
                .as_str()
                .unwrap()
                .starts_with("trips$2024")
        );
        assert_eq!(load["schemaUpdateOptions"], json!(["ALLOW_FIELD_ADDITION"]));
        assert_eq!(
            load["sourceUris"].as_array().unwrap().len(),
            1,
            "one partition's objects per job"
        );
    }
    // A retried task: the same two ids, both answered 409 and counted, nothing loaded twice.
    let second = run(&c).await.expect("rerun");
    assert!(
        second
            .jobs
            .iter()
            .all(|j| j.outcome == Outcome::AlreadyLoaded)
    );
    let ids = fake.inserted_ids();
    assert_eq!(ids.len(), 4);
    assert_eq!(
        ids[..2].iter().collect::<std::collections::BTreeSet<_>>(),
        ids[2..].iter().collect()
    );

    // A new generation of one partition's object is new data: only that partition reloads.
    gcs.put(
        "raw/trips/dt=2024-02-01/part-00000.parquet",
        simple_parquet(5, 4),
    )
    .await;
    let third = run(&c).await.expect("reload one partition");
    let outcomes: Vec<(&str, Outcome)> = third
        .jobs
        .iter()
        .map(|j| (j.table.as_str(), j.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("proj.raw.trips$20240131", Outcome::AlreadyLoaded),
            ("proj.raw.trips$20240201", Outcome::Loaded)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_plans_ids_without_calling_bigquery() {
    let (gcs, fake) = setup().await;
    let mut c = parquet_config(&gcs, &fake);
    c.dry_run = true;
    let report = run(&c).await.expect("plan");
    assert_eq!(report.jobs[0].outcome, Outcome::Planned);
    assert_eq!(report.jobs[0].file_rows, Some(3));
    assert!(fake.requests().is_empty());
    c.dry_run = false;
    run(&c).await.expect("load");
    let planned = report.jobs[0]
        .job_id
        .rsplit('.')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        fake.inserted_ids(),
        [planned],
        "the dry run names the id the real run uses"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_input_fails_unless_allowed() {
    let (gcs, fake) = setup().await;
    let mut c = config(
        glob("nothing/**/*.parquet"),
        "proj.raw.t",
        &gcs,
        &fake.endpoint(),
    );
    let err = run(&c).await.unwrap_err().to_string();
    assert!(
        err.contains("no objects to load in gs://lake/nothing/**/*.parquet"),
        "{err}"
    );
    c.allow_empty = true;
    let report = run(&c).await.expect("allowed");
    assert!(report.jobs.is_empty());
    assert!(fake.requests().is_empty());
}

/// SIGTERM mid-poll: the task stops at once and leaves the job running (no cancel call); a
/// retried task finds it by id and follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_stops_polling_and_leaves_the_job_to_the_retry() {
    let (gcs, fake) = setup().await;
    let c = parquet_config(&gcs, &fake);
    fake.script([Script::Succeed {
        polls: 10_000,
        rows: 3,
        bad_records: 0,
        errors: vec![],
    }]);
    let cancel = sluice_runtime::CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let started = std::time::Instant::now();
    let err = sluice_load::run(&c, &task(0, 1), &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::Cancelled), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(fake.requests().iter().all(|r| !r.path.ends_with("/cancel")));
    // The retried task: same id, 409, follows the still-running job.
    let ids_before = fake.inserted_ids();
    let still_following = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        sluice_load::run(&c, &task(0, 1), &Default::default()),
    )
    .await;
    assert!(
        still_following.is_err(),
        "the job is still RUNNING: the retry keeps polling it"
    );
    let ids = fake.inserted_ids();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[1], ids_before[0], "the retry submits the same id");
    assert!(fake.gets() >= 2, "and follows it with jobs.get");
}

/// Append over an input that grows between runs: with --job-per-object each object's job id
/// depends on that object alone, so the second run loads only the new object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_per_object_appends_each_object_once_as_the_input_grows() {
    let (gcs, fake) = setup().await;
    let mut c = parquet_config(&gcs, &fake);
    c.job_per_object = true;
    let first = run(&c).await.expect("first run");
    assert_eq!(first.jobs.len(), 1);
    gcs.put("raw/events/part-1.parquet", simple_parquet(3, 2))
        .await;
    let second = run(&c).await.expect("second run");
    let outcomes: Vec<Outcome> = second.jobs.iter().map(|j| j.outcome).collect();
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.contains(&Outcome::AlreadyLoaded) && outcomes.contains(&Outcome::Loaded));
    let ids = fake.inserted_ids();
    assert_eq!(ids.len(), 3);
    assert!(
        ids[1..].contains(&ids[0]),
        "part-0's id is unchanged: {ids:?}"
    );
    c.write = WriteMode::Truncate;
    let err = run(&c).await.unwrap_err().to_string();
    assert!(
        err.contains("--job-per-object needs --write append"),
        "{err}"
    );
}
