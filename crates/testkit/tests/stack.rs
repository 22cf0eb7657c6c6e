//! The emulators start, answer, talk to each other through the shared filesystem root, can be
//! read with Google's own clients, and are gone after drop, after a panic and after the test
//! process is killed.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_testkit::{BigQueryEmulator, FakeGcs, run, venv_bin};

const PROJECT: &str = "test-project";

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Waits up to `limit` for `port` to stop accepting connections.
fn closes_within(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !listening(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

/// Runs a load job through REST and waits until it is DONE; returns the final job resource.
fn load(bq: &BigQueryEmulator, load: serde_json::Value) -> serde_json::Value {
    let path = format!("/bigquery/v2/projects/{PROJECT}/jobs");
    let job = bq
        .rest_ok(
            "POST",
            &path,
            Some(&json!({"configuration": {"load": load}})),
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", bq.log()));
    let id = job["jobReference"]["jobId"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = bq.rest_ok("GET", &format!("{path}/{id}"), None).unwrap();
        if job["status"]["state"] == "DONE" {
            return job;
        }
        assert!(Instant::now() < deadline, "load job {id} not done: {job}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn fake_gcs_serves_objects_to_http_gcloud_and_gsutil() {
    let gcs = FakeGcs::start().unwrap();
    eprintln!("fake-gcs-server ready in {:?}", gcs.startup_time());
    gcs.create_bucket("bucket-a").unwrap();

    let object = gcs
        .upload("bucket-a", "raw/dt=2024-01-01/hello world.txt", b"hello\n")
        .unwrap();
    assert_eq!(object["size"], "6", "{object}");
    assert!(object["generation"].is_string(), "{object}");
    // The filesystem layout bqemulator relies on: root/bucket/object.
    assert_eq!(
        std::fs::read(gcs.object_path("bucket-a", "raw/dt=2024-01-01/hello world.txt")).unwrap(),
        b"hello\n"
    );
    assert_eq!(
        gcs.download("bucket-a", "raw/dt=2024-01-01/hello world.txt")
            .unwrap(),
        b"hello\n"
    );
    assert_eq!(
        gcs.list("bucket-a", "raw/").unwrap(),
        ["raw/dt=2024-01-01/hello world.txt"]
    );
    let missing = gcs.download("bucket-a", "nope").unwrap_err();
    assert!(format!("{missing:#}").contains("HTTP 404"), "{missing:#}");

    // Google's clients, pointed at the emulator by gcloud_env().
    let url = "gs://bucket-a/raw/dt=2024-01-01/hello world.txt";
    let cat = run(gcs.gcloud().args(["storage", "cat", url])).unwrap();
    assert_eq!(text(cat), "hello\n");
    let ls = text(run(gcs.gcloud().args(["storage", "ls", "gs://bucket-a/raw/**"])).unwrap());
    assert_eq!(ls.trim(), url, "gcloud storage ls");
    let gsutil = text(run(gcs.gsutil().args(["cat", url])).unwrap());
    assert_eq!(gsutil, "hello\n", "gsutil cat");
    // And writing through gcloud lands where the JSON API and the filesystem see it.
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), "from gcloud\n").unwrap();
    run(gcs
        .gcloud()
        .args(["storage", "cp"])
        .arg(local.path())
        .arg("gs://bucket-a/up/from-gcloud.txt"))
    .unwrap();
    assert_eq!(
        gcs.download("bucket-a", "up/from-gcloud.txt").unwrap(),
        b"from gcloud\n"
    );

    let port = gcs.port();
    drop(gcs);
    assert!(
        closes_within(port, Duration::from_secs(2)),
        "fake-gcs-server still listening on {port} after drop"
    );
}

#[test]
fn bigquery_loads_csv_and_parquet_from_fake_gcs_and_queries() {
    let gcs = FakeGcs::start().unwrap();
    gcs.create_bucket("raw").unwrap();
    let bq = BigQueryEmulator::start(PROJECT, &gcs.root()).unwrap();
    eprintln!("bqemulator ready in {:?}", bq.startup_time());
    bq.create_dataset("demo").unwrap();

    // CSV uploaded over HTTP: bqemulator reads gs://raw/... from fake-gcs-server's files.
    gcs.upload(
        "raw",
        "csv/cities.csv",
        b"name,population\nOslo,709000\nBergen,291000\n",
    )
    .unwrap();
    let job = load(
        &bq,
        json!({
            "sourceUris": ["gs://raw/csv/cities.csv"],
            "sourceFormat": "CSV",
            "skipLeadingRows": 1,
            "schema": {"fields": [
                {"name": "name", "type": "STRING"},
                {"name": "population", "type": "INTEGER"}
            ]},
            "destinationTable": {"projectId": PROJECT, "datasetId": "demo", "tableId": "cities"}
        }),
    );
    assert!(job["status"]["errorResult"].is_null(), "{job}");
    assert_eq!(
        bq.query_scalar_i64("select sum(population) from `test-project.demo.cities`")
            .unwrap(),
        1_000_000
    );

    // Parquet (written by DuckDB from the venv), with the explicit schema bqemulator needs.
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("rivers.parquet");
    write_parquet(
        &parquet,
        "select * from (values ('Glomma', 621, date '2024-01-01'), ('Tana', 361, null)) \
         t(name, length_km, surveyed)",
    );
    gcs.upload(
        "raw",
        "parquet/rivers.parquet",
        &std::fs::read(&parquet).unwrap(),
    )
    .unwrap();
    let job = load(
        &bq,
        json!({
            "sourceUris": ["gs://raw/parquet/*.parquet"],
            "sourceFormat": "PARQUET",
            "schema": {"fields": [
                {"name": "name", "type": "STRING"},
                {"name": "length_km", "type": "INTEGER"},
                {"name": "surveyed", "type": "DATE"}
            ]},
            "destinationTable": {"projectId": PROJECT, "datasetId": "demo", "tableId": "rivers"}
        }),
    );
    assert!(job["status"]["errorResult"].is_null(), "{job}");
    assert_eq!(
        bq.query_rows("select name, length_km, surveyed from demo.rivers order by name")
            .unwrap(),
        [
            [
                Some("Glomma".into()),
                Some("621".into()),
                Some("2024-01-01".into())
            ],
            [Some("Tana".into()), Some("361".into()), None],
        ]
    );

    // A load from an object that does not exist fails the job, naming the URI.
    let job = load(
        &bq,
        json!({
            "sourceUris": ["gs://raw/csv/missing.csv"],
            "sourceFormat": "CSV",
            "schema": {"fields": [{"name": "x", "type": "STRING"}]},
            "destinationTable": {"projectId": PROJECT, "datasetId": "demo", "tableId": "missing"}
        }),
    );
    assert!(!job["status"]["errorResult"].is_null(), "{job}");

    let port = bq.port();
    drop(bq);
    assert!(
        closes_within(port, Duration::from_secs(2)),
        "bqemulator still listening on {port} after drop"
    );
}

#[test]
fn bq_client_talks_to_the_emulator() {
    let gcs = FakeGcs::start().unwrap();
    gcs.create_bucket("raw").unwrap();
    gcs.upload("raw", "c.csv", b"name,n\na,1\nb,2\n").unwrap();
    let bq = BigQueryEmulator::start(PROJECT, &gcs.root()).unwrap();

    run(bq.bq().unwrap().args(["mk", "--dataset", "test-project:d"])).unwrap();
    let datasets = bq.bq_json(&["ls"]).unwrap();
    assert_eq!(
        datasets[0]["datasetReference"]["datasetId"], "d",
        "{datasets}"
    );
    run(bq.bq().unwrap().args([
        "load",
        "--source_format=CSV",
        "--skip_leading_rows=1",
        "d.t",
        "gs://raw/c.csv",
        "name:STRING,n:INTEGER",
    ]))
    .unwrap();
    let rows = bq
        .bq_json(&[
            "query",
            "--nouse_legacy_sql",
            "select sum(n) as total from d.t",
        ])
        .unwrap();
    assert_eq!(rows[0]["total"], "3", "{rows}");
    // What bq loaded is visible through REST too.
    assert_eq!(bq.query_scalar_i64("select count(*) from d.t").unwrap(), 2);
}

#[test]
fn services_die_when_the_holder_panics() {
    let ports = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let gcs = FakeGcs::start().unwrap();
        let bq = BigQueryEmulator::start(PROJECT, &gcs.root()).unwrap();
        ports.lock().unwrap().extend([gcs.port(), bq.port()]);
        panic!("test failure while the emulators run");
    });
    assert!(result.is_err());
    for port in ports.into_inner().unwrap() {
        assert!(
            closes_within(port, Duration::from_secs(2)),
            "port {port} still open after a panic unwound past its handle"
        );
    }
}

/// Not a test on its own: the body of the child process in
/// `services_die_when_the_test_process_is_killed`.
#[test]
fn orphan_helper() {
    if std::env::var_os("SLUICE_TESTKIT_ORPHAN_HELPER").is_none() {
        return;
    }
    let gcs = FakeGcs::start().unwrap();
    let bq = BigQueryEmulator::start(PROJECT, &gcs.root()).unwrap();
    // On a line of its own: libtest has already printed "test orphan_helper ... ".
    println!("\nPORTS {} {}", gcs.port(), bq.port());
    // Leak both handles (as a `static` would) and wait to be killed.
    std::mem::forget(gcs);
    std::mem::forget(bq);
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn services_die_when_the_test_process_is_killed() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "orphan_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SLUICE_TESTKIT_ORPHAN_HELPER", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let line = stdout
        .lines()
        .map(Result::unwrap)
        .find(|l| l.starts_with("PORTS "))
        .expect("the helper prints its ports (or fails before: see its stderr above)");
    let ports: Vec<u16> = line[6..].split(' ').map(|p| p.parse().unwrap()).collect();
    assert!(ports.iter().all(|&p| listening(p)), "{line}");
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    for port in ports {
        assert!(
            closes_within(port, Duration::from_secs(5)),
            "port {port} still open 5 s after the test process was SIGKILLed"
        );
    }
}

/// Behaviours of the emulators that differ from Google's services, pinned so that an upgrade
/// that changes one fails here and docs/local-stack.md gets updated.
#[test]
fn quirks_of_bqemulator_are_as_documented() {
    let gcs = FakeGcs::start().unwrap();
    gcs.create_bucket("raw").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("p.parquet");
    write_parquet(&parquet, "select 1::bigint as a");
    gcs.upload("raw", "p.parquet", &std::fs::read(&parquet).unwrap())
        .unwrap();
    let bq = BigQueryEmulator::start(PROJECT, &gcs.root()).unwrap();
    bq.create_dataset("q").unwrap();

    // 1. A reused job id is accepted (BigQuery answers 409 "Already Exists").
    let job = json!({
        "jobReference": {"projectId": PROJECT, "jobId": "same-id"},
        "configuration": {"query": {"query": "select 1", "useLegacySql": false}}
    });
    let path = format!("/bigquery/v2/projects/{PROJECT}/jobs");
    let (first, body) = bq.rest("POST", &path, Some(&job)).unwrap();
    assert!((200..300).contains(&first), "{first} {body}");
    let (second, body) = bq.rest("POST", &path, Some(&job)).unwrap();
    assert!(
        (200..300).contains(&second),
        "bqemulator now rejects duplicate job ids ({second} {body}): update docs/local-stack.md"
    );

    // 2. Parquet into a new table without an explicit schema fails.
    let (status, body) = bq
        .rest(
            "POST",
            &path,
            Some(&json!({"configuration": {"load": {
                "sourceUris": ["gs://raw/p.parquet"],
                "sourceFormat": "PARQUET",
                "destinationTable": {"projectId": PROJECT, "datasetId": "q", "tableId": "p"}
            }}})),
        )
        .unwrap();
    let failed = !(200..300).contains(&status) || {
        let job: serde_json::Value = serde_json::from_str(&body).unwrap();
        let id = job["jobReference"]["jobId"].as_str().unwrap().to_string();
        let done = wait_done(&bq, &id);
        !done["status"]["errorResult"].is_null()
    };
    assert!(
        failed,
        "bqemulator now loads Parquet without a schema ({status} {body}): update docs/local-stack.md"
    );
}

fn wait_done(bq: &BigQueryEmulator, id: &str) -> serde_json::Value {
    let path = format!("/bigquery/v2/projects/{PROJECT}/jobs/{id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = bq.rest_ok("GET", &path, None).unwrap();
        if job["status"]["state"] == "DONE" || Instant::now() > deadline {
            return job;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes the result of a DuckDB `select` to a Parquet file with the venv's DuckDB.
fn write_parquet(path: &Path, select: &str) {
    let script = "import duckdb, sys; duckdb.sql(f\"copy ({sys.argv[1]}) to '{sys.argv[2]}' (format parquet)\")";
    run(Command::new(venv_bin("python"))
        .args(["-c", script, select])
        .arg(path))
    .unwrap();
}
