//! Shared set-up for the `sluice dbt` tests: emulators with the source table loaded, the
//! built binary, JSON log parsing.
#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sluice_testkit::{BigQueryEmulator, FakeGcs};

pub const PROJECT: &str = "sluice-test";
pub const DATASET: &str = "analytics";
/// Rows in `raw/cars.csv` of the test project.
pub const CAR_ROWS: i64 = 7;

/// The dbt project under test (crates/dbt/tests/project).
pub fn dbt_project() -> PathBuf {
    sluice_testkit::repo_root().join("crates/dbt/tests/project")
}

/// fake-gcs-server plus bqemulator reading its objects, with `raw.cars` loaded from a CSV in
/// `gs://landing` by a BigQuery load job, the way `sluice load` produces source tables.
pub struct Stack {
    pub gcs: FakeGcs,
    pub bq: BigQueryEmulator,
}

impl Stack {
    pub fn start() -> Self {
        let gcs = FakeGcs::start().expect("start fake-gcs-server");
        let bq = BigQueryEmulator::start(PROJECT, &gcs.root()).expect("start bqemulator");
        gcs.create_bucket("landing").unwrap();
        gcs.create_bucket("artifacts").unwrap();
        let csv = std::fs::read(dbt_project().join("raw/cars.csv")).unwrap();
        put_object(&gcs, "gs://landing", "cars.csv", csv);

        let (status, body) = bq
            .rest(
                "POST",
                &format!("/bigquery/v2/projects/{PROJECT}/datasets"),
                Some(&serde_json::json!({
                    "datasetReference": {"projectId": PROJECT, "datasetId": "raw"},
                    "location": "US",
                })),
            )
            .unwrap();
        assert!(
            (200..300).contains(&status),
            "create dataset raw: {status} {body}"
        );
        let (status, body) = bq
            .rest(
                "POST",
                &format!("/bigquery/v2/projects/{PROJECT}/jobs"),
                Some(&serde_json::json!({
                    "jobReference": {"projectId": PROJECT, "jobId": "load_raw_cars"},
                    "configuration": {"load": {
                        "sourceUris": ["gs://landing/cars.csv"],
                        "sourceFormat": "CSV",
                        "skipLeadingRows": 1,
                        "writeDisposition": "WRITE_TRUNCATE",
                        "destinationTable": {"projectId": PROJECT, "datasetId": "raw", "tableId": "cars"},
                        "schema": {"fields": [
                            {"name": "name", "type": "STRING"},
                            {"name": "horsepower", "type": "INTEGER"},
                            {"name": "origin", "type": "STRING"},
                        ]},
                    }},
                })),
            )
            .unwrap();
        assert!(
            (200..300).contains(&status),
            "load raw.cars: {status} {body}"
        );
        assert_eq!(
            bq.query_scalar_i64("select count(*) from raw.cars")
                .unwrap(),
            CAR_ROWS,
            "raw.cars after the load job; bqemulator log:\n{}",
            bq.log()
        );
        Stack { gcs, bq }
    }

    /// `sluice dbt` with a generated profile pointing at this stack's emulators.
    pub fn sluice_dbt(&self, scratch: &Path) -> Command {
        self.sluice_dbt_for(scratch, &dbt_project())
    }

    /// `sluice dbt` for the project in `project_dir`.
    pub fn sluice_dbt_for(&self, scratch: &Path, project_dir: &Path) -> Command {
        let mut cmd = sluice(scratch);
        cmd.env("STORAGE_EMULATOR_HOST", self.gcs.endpoint())
            .args(["dbt", "--dbt-bin"])
            .arg(sluice_testkit::venv_bin("dbt"))
            .arg("--project-dir")
            .arg(project_dir)
            .args(["--bigquery-project", PROJECT, "--bigquery-dataset", DATASET])
            .args(["--bigquery-location", "US", "--threads", "2"])
            .args(["--bigquery-endpoint", &self.bq.endpoint()]);
        cmd
    }

    /// Keys under `prefix` in `bucket`, through the storage crate's GCS client.
    pub fn list_objects(&self, bucket: &str, prefix: &str) -> Vec<String> {
        runtime().block_on(async {
            let (store, _) = sluice_storage::open(&format!("gs://{bucket}"), &self.store_config())
                .await
                .unwrap();
            store
                .list(prefix)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.key)
                .collect()
        })
    }

    pub fn read_object(&self, bucket: &str, key: &str) -> Vec<u8> {
        runtime().block_on(async {
            let (store, _) = sluice_storage::open(&format!("gs://{bucket}"), &self.store_config())
                .await
                .unwrap();
            sluice_storage::read_to_bytes(store.as_ref(), key, 64 << 20)
                .await
                .unwrap()
                .to_vec()
        })
    }

    fn store_config(&self) -> sluice_storage::StoreConfig {
        sluice_storage::StoreConfig {
            gcs_emulator_host: Some(self.gcs.endpoint()),
            ..Default::default()
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn put_object(gcs: &FakeGcs, url: &str, key: &str, data: Vec<u8>) {
    runtime().block_on(async {
        let config = sluice_storage::StoreConfig {
            gcs_emulator_host: Some(gcs.endpoint()),
            ..Default::default()
        };
        let (store, _) = sluice_storage::open(url, &config).await.unwrap();
        sluice_storage::write_bytes(store.as_ref(), key, data.into(), Default::default())
            .await
            .unwrap();
    });
}

/// The built `sluice` with JSON logs, a clean task environment, and `TMPDIR` at `scratch` (so a
/// test can see what the run left in its temp dir).
pub fn sluice(scratch: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    for var in [
        "CLOUD_RUN_TASK_INDEX",
        "CLOUD_RUN_TASK_COUNT",
        "CLOUD_RUN_TASK_ATTEMPT",
        "CLOUD_RUN_JOB",
        "CLOUD_RUN_EXECUTION",
        "DBT_PROJECT_DIR",
        "DBT_PROFILES_DIR",
        "BIGQUERY_EMULATOR_HOST",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    for (name, _) in std::env::vars() {
        if name.starts_with("SLUICE_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("TMPDIR", scratch).arg("--log-format").arg("json");
    cmd
}

/// stdout's JSON log lines; panics with the raw output on a line that is not JSON.
pub fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}\n{}", text(out)))
        })
        .collect()
}

/// Both streams, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "--- exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The event whose message starts with `prefix`.
pub fn find<'a>(events: &'a [Value], prefix: &str) -> Option<&'a Value> {
    events
        .iter()
        .find(|e| e["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
}

/// `unique_id`s of the nodes dbt reported with `node_status`.
pub fn nodes_with_status(events: &[Value], status: &str) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .filter(|e| e["node_status"] == status)
        .filter_map(|e| e["node_id"].as_str().map(String::from))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Files under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}
