//! Setup mistakes are fast usage errors (exit 2, one line naming the fix), while a metadata
//! server that answers with an error, or any trouble on Cloud Run, stays transient (exit 1);
//! `--help` never shows env values; load refuses files that do not fit an existing table.
//! All against the real binary, fake-gcs-server and bqemulator.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_testkit::{BigQueryEmulator, FakeGcs};

const PROJECT: &str = "setup-project";

/// The real binary with nothing inherited that could supply credentials or emulators: an
/// empty HOME (no gcloud ADC file), no GOOGLE_APPLICATION_CREDENTIALS, no emulator hosts, not
/// on Cloud Run, and the metadata server pointed at a closed loopback port
/// (`GCE_METADATA_HOST`, which google-cloud-auth honours), so no test can reach a real one.
fn sluice(home: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    for (name, _) in std::env::vars() {
        if name.starts_with("SLUICE_")
            || name.starts_with("CLOUD_RUN_")
            || name.ends_with("_EMULATOR_HOST")
            || name.starts_with("GCE_METADATA")
            || name == "GOOGLE_APPLICATION_CREDENTIALS"
            || name == "RUST_LOG"
        {
            command.env_remove(name);
        }
    }
    command
        .env("HOME", home)
        .env("GCE_METADATA_HOST", format!("127.0.0.1:{}", closed_port()))
        .env("SLUICE_LOG_FORMAT", "json")
        .stdin(Stdio::null());
    command
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn run(command: &mut Command) -> (Output, Duration, String) {
    let started = Instant::now();
    let out = command.output().expect("running sluice");
    let elapsed = started.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, elapsed, text)
}

/// Exit 2 within 5 s, with every `needle` in the output.
fn assert_fast_usage(command: &mut Command, needles: &[&str]) -> String {
    let (out, elapsed, text) = run(command);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}: {text}");
    for needle in needles {
        assert!(text.contains(needle), "expected {needle:?} in {text}");
    }
    text
}

const CREDENTIAL_FIXES: &[&str] = &[
    "GOOGLE_APPLICATION_CREDENTIALS",
    "gcloud auth application-default login",
    "STORAGE_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
];

fn local_csv(dir: &std::path::Path) -> String {
    let path = dir.join("cities.csv");
    std::fs::write(&path, "id,city\n1,Oslo\n2,Bergen\n").unwrap();
    path.to_str().unwrap().to_string()
}

/// The error lines of a JSON log: exactly one, naming the fix.
fn error_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["severity"] == "ERROR")
        .map(|v| v["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn missing_bucket_is_a_fast_usage_error_naming_the_fix() {
    let gcs = FakeGcs::start().expect("fake-gcs-server");
    let home = tempfile::tempdir().unwrap();
    let csv = local_csv(home.path());
    let text = assert_fast_usage(
        sluice(home.path())
            .env("STORAGE_EMULATOR_HOST", gcs.endpoint())
            .args(["extract", "--url", &csv, "--dest", "gs://no-such-bucket/x"]),
        &["gcloud storage buckets create gs://no-such-bucket --location"],
    );
    let errors = error_lines(&text);
    assert_eq!(errors.len(), 1, "{text}");
    assert!(!errors[0].contains('\n'), "{errors:?}");
    // Nothing was written anywhere (the emulator has no such bucket to write to, and the
    // check ran before any item).
    assert!(!text.contains("items done"), "{text}");

    let port = closed_port();
    assert_fast_usage(
        sluice(home.path())
            .env("STORAGE_EMULATOR_HOST", gcs.endpoint())
            .env("BIGQUERY_EMULATOR_HOST", format!("127.0.0.1:{port}"))
            .args([
                "load",
                "--source",
                "gs://no-such-bucket/raw/*.parquet",
                "--table",
                "p-1.ds.t",
            ]),
        &["gcloud storage buckets create gs://no-such-bucket"],
    );
}

#[test]
fn no_credentials_is_a_fast_usage_error_naming_the_fixes() {
    let home = tempfile::tempdir().unwrap();
    let csv = local_csv(home.path());
    assert_fast_usage(
        sluice(home.path()).args(["extract", "--url", &csv, "--dest", "gs://some-bucket/x"]),
        CREDENTIAL_FIXES,
    );
    assert_fast_usage(
        sluice(home.path()).args([
            "load",
            "--source",
            "gs://some-bucket/raw/*.parquet",
            "--table",
            "p-1.ds.t",
        ]),
        CREDENTIAL_FIXES,
    );
    // GCS emulated, BigQuery not: the BigQuery credentials are probed before anything else.
    let gcs = FakeGcs::start().expect("fake-gcs-server");
    gcs.create_bucket("lake").unwrap();
    assert_fast_usage(
        sluice(home.path())
            .env("STORAGE_EMULATOR_HOST", gcs.endpoint())
            .args([
                "load",
                "--source",
                "gs://lake/raw/*.parquet",
                "--table",
                "p-1.ds.t",
            ]),
        CREDENTIAL_FIXES,
    );
    // A GOOGLE_APPLICATION_CREDENTIALS file that is not there is a setup error too.
    let missing = home.path().join("nope.json");
    assert_fast_usage(
        sluice(home.path())
            .env("GOOGLE_APPLICATION_CREDENTIALS", &missing)
            .args(["extract", "--url", &csv, "--dest", "gs://some-bucket/x"]),
        &["nope.json"],
    );
}

/// A metadata server that answers 500: it exists and hiccuped, so the task fails (exit 1) and
/// Cloud Run retries it.
#[test]
fn metadata_server_errors_and_cloud_run_stay_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = "metadata server is having a bad day";
            let _ = write!(
                stream,
                "HTTP/1.1 500 Internal Server Error\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let home = tempfile::tempdir().unwrap();
    let csv = local_csv(home.path());
    let (out, elapsed, text) = run(sluice(home.path())
        .env("GCE_METADATA_HOST", format!("127.0.0.1:{port}"))
        .args(["extract", "--url", &csv, "--dest", "gs://some-bucket/x"]));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("get credentials"), "{text}");
    assert!(
        elapsed < Duration::from_secs(20),
        "took {elapsed:?}: {text}"
    );

    // On Cloud Run an unreachable metadata server is a hiccup too, never a usage error.
    let (out, _, text) = run(sluice(home.path())
        .env("CLOUD_RUN_JOB", "extract-job")
        .args(["extract", "--url", &csv, "--dest", "gs://some-bucket/x"]));
    assert_eq!(out.status.code(), Some(1), "{text}");
}

#[test]
fn malformed_tables_are_usage_errors_naming_the_table() {
    let home = tempfile::tempdir().unwrap();
    for table in [
        "p-1.ds.my table",
        "p-1.ds.t;drop",
        "p-1.ds.t; drop table x",
        "a.b.c.d",
        "p-1..t",
        "p-1.ds.",
        ".ds.t",
        "p-1.ds.t'",
        "p-1.d s.t",
    ] {
        let (out, elapsed, text) = run(sluice(home.path()).args([
            "load",
            "--source",
            "gs://b/*.parquet",
            "--table",
            table,
        ]));
        assert_eq!(out.status.code(), Some(2), "{table}: {text}");
        assert!(elapsed < Duration::from_secs(5), "{table}: {elapsed:?}");
        let quoted = serde_json::to_string(table).unwrap();
        // The JSON log escapes the quotes once more.
        let escaped = quoted.replace('"', "\\\"");
        assert!(
            text.contains(&escaped),
            "{table}: expected {escaped} in {text}"
        );
    }
}

#[test]
fn help_never_shows_env_values() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        vec!["extract", "--help"],
        vec!["help", "extract"],
        vec!["load", "--help"],
        vec!["dbt", "--help"],
        vec!["--help"],
    ] {
        let (out, _, text) = run(sluice(home.path())
            .env(
                "SLUICE_SOCRATA",
                "https://data.example/resource/abcd-1234.json?$$app_token=SOCRATA-SECRET-1",
            )
            .env("SLUICE_URL", "https://h.example/a.csv?token=URL-SECRET-2")
            .env("SLUICE_SOURCE", "gs://b/x?sig=SOURCE-SECRET-3")
            .env("SLUICE_DBT_ARTIFACTS", "gs://b/a?k=DBT-SECRET-4")
            .env("SLUICE_LOG_FORMAT", "text")
            .args(&args));
        assert_eq!(out.status.code(), Some(0), "{args:?}: {text}");
        assert!(!text.contains("SECRET"), "{args:?} shows a secret: {text}");
        if args.contains(&"extract") {
            // The variable is still named, only its value is hidden.
            assert!(text.contains("SLUICE_SOCRATA"), "{text}");
        }
    }
}

/// Parquet with columns `id` (INTEGER) and `city` (STRING) in fake-gcs-server, via extract.
fn extract_parquet(gcs: &FakeGcs, home: &std::path::Path) {
    gcs.create_bucket("lake").unwrap();
    let csv = local_csv(home);
    let (out, _, text) = run(sluice(home)
        .env("STORAGE_EMULATOR_HOST", gcs.endpoint())
        .args([
            "extract",
            "--url",
            &csv,
            "--dest",
            "gs://lake/raw",
            "--format",
            "parquet",
        ]));
    assert!(out.status.success(), "extract: {text}");
}

#[test]
fn missing_dataset_is_a_usage_error_and_a_type_mismatch_is_refused_before_any_job() {
    let gcs = FakeGcs::start().expect("fake-gcs-server");
    let bq = BigQueryEmulator::start(PROJECT, &gcs.root()).expect("bqemulator");
    let home = tempfile::tempdir().unwrap();
    extract_parquet(&gcs, home.path());
    let load = |table: &str| {
        let mut command = sluice(home.path());
        command
            .env("STORAGE_EMULATOR_HOST", gcs.endpoint())
            .env("BIGQUERY_EMULATOR_HOST", bq.endpoint())
            .args([
                "load",
                "--source",
                "gs://lake/raw/**/*.parquet",
                "--table",
                table,
            ]);
        command
    };

    let text = assert_fast_usage(
        &mut load(&format!("{PROJECT}.missing_ds.cities")),
        &[
            &format!("dataset {PROJECT}:missing_ds does not exist"),
            "bq mk --dataset",
            "--create-dataset",
        ],
    );
    assert!(!text.contains("submitted load job"), "{text}");

    // A table whose `id` is BOOLEAN: the files' INTEGER does not fit. (A STRING `id` would: the
    // integers' text is exact, so load widens them into it -- `one_schema.rs`.)
    bq.create_dataset("raw").unwrap();
    let table = serde_json::json!({
        "tableReference": {"projectId": PROJECT, "datasetId": "raw", "tableId": "cities"},
        "schema": {"fields": [
            {"name": "id", "type": "BOOLEAN", "mode": "NULLABLE"},
            {"name": "city", "type": "STRING", "mode": "NULLABLE"}
        ]}
    });
    bq.rest_ok(
        "POST",
        &format!("/bigquery/v2/projects/{PROJECT}/datasets/raw/tables"),
        Some(&table),
    )
    .unwrap();
    let (out, _, text) = run(&mut load(&format!("{PROJECT}.raw.cities")));
    assert_eq!(out.status.code(), Some(1), "{text}");
    for needle in [
        "column `id` is INTEGER in gs://lake/raw/",
        "but BOOLEAN in the table",
        "Nothing was loaded",
    ] {
        assert!(text.contains(needle), "expected {needle:?} in {text}");
    }
    assert!(!text.contains("submitted load job"), "{text}");
    assert_eq!(
        bq.query_scalar_i64("select count(*) from raw.cities")
            .unwrap(),
        0
    );

    // The same files into a table that fits (NULLABLE columns; the files' REQUIRED `id`, if
    // any, is sent NULLABLE) load.
    let fits = serde_json::json!({
        "tableReference": {"projectId": PROJECT, "datasetId": "raw", "tableId": "fits"},
        "schema": {"fields": [
            {"name": "id", "type": "INTEGER", "mode": "NULLABLE"},
            {"name": "city", "type": "STRING", "mode": "NULLABLE"}
        ]}
    });
    bq.rest_ok(
        "POST",
        &format!("/bigquery/v2/projects/{PROJECT}/datasets/raw/tables"),
        Some(&fits),
    )
    .unwrap();
    let (out, _, text) = run(&mut load(&format!("{PROJECT}.raw.fits")));
    assert!(out.status.success(), "{text}");
    assert_eq!(
        bq.query_scalar_i64("select count(*) from raw.fits")
            .unwrap(),
        2
    );
}
