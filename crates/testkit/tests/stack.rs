//! The emulators start, answer, talk to each other through the shared filesystem root, and
//! are gone after drop.

use sluice_testkit::{BigQueryEmulator, FakeGcs};

#[test]
fn fake_gcs_serves_objects_and_dies_on_drop() {
    let gcs = FakeGcs::start().unwrap();
    gcs.create_bucket("bucket-a").unwrap();
    let object = gcs.root().join("bucket-a");
    assert!(
        object.is_dir(),
        "bucket dir should exist under the filesystem root"
    );
    let port = gcs.port();
    drop(gcs);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "fake-gcs-server still listening after drop"
    );
}

#[test]
fn bigquery_emulator_loads_from_fake_gcs_root_and_queries() {
    let gcs = FakeGcs::start().unwrap();
    gcs.create_bucket("raw").unwrap();
    std::fs::write(
        gcs.root().join("raw/cities.csv"),
        "name,population\nOslo,709000\nBergen,291000\n",
    )
    .unwrap();
    let bq = BigQueryEmulator::start("test-project", &gcs.root()).unwrap();
    let (status, body) = bq
        .rest(
            "POST",
            "/bigquery/v2/projects/test-project/datasets",
            Some(&serde_json::json!({
                "datasetReference": {"projectId": "test-project", "datasetId": "demo"}
            })),
        )
        .unwrap();
    assert!(
        (200..300).contains(&status),
        "create dataset: {status} {body}"
    );
    let load = serde_json::json!({
        "configuration": {"load": {
            "sourceUris": ["gs://raw/cities.csv"],
            "sourceFormat": "CSV",
            "skipLeadingRows": 1,
            "schema": {"fields": [{"name": "name", "type": "STRING"}, {"name": "population", "type": "INTEGER"}]},
            "destinationTable": {"projectId": "test-project", "datasetId": "demo", "tableId": "cities"}
        }}
    });
    let (status, body) = bq
        .rest(
            "POST",
            "/bigquery/v2/projects/test-project/jobs",
            Some(&load),
        )
        .unwrap();
    assert!(
        (200..300).contains(&status),
        "load job: {status} {body}\n{}",
        bq.log()
    );
    let mut rows = 0;
    for _ in 0..50 {
        match bq.query_scalar_i64("select sum(population) from `test-project.demo.cities`") {
            Ok(n) => {
                rows = n;
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    assert_eq!(rows, 1_000_000);
}
