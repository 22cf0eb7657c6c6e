//! Shared test helpers: Parquet files written with the `parquet` crate, objects put into
//! fake-gcs-server through `sluice_storage`, and the real `bq` client pointed at bqemulator.

#![allow(dead_code)]

pub mod fake_bq;
pub mod fault_proxy;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use sluice_load::{ClientConfig, Input, LoadConfig, TableTemplate};
use sluice_runtime::{RetryPolicy, TaskContext};
use sluice_storage::{StoreConfig, WriteOptions};
use sluice_testkit::FakeGcs;

pub const BUCKET: &str = "lake";

/// Parquet bytes of one batch built from `columns`.
pub fn parquet(columns: Vec<(&str, ArrayRef, bool)>) -> Bytes {
    let fields: Vec<arrow::datatypes::Field> = columns
        .iter()
        .map(|(name, array, nullable)| {
            arrow::datatypes::Field::new(*name, array.data_type().clone(), *nullable)
        })
        .collect();
    let schema = Arc::new(arrow::datatypes::Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|c| c.1).collect())
        .expect("batch");
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    Bytes::from(out)
}

/// `n` rows of (id INT64 required, name STRING nullable).
pub fn simple_parquet(first_id: i64, n: usize) -> Bytes {
    use arrow::array::{Int64Array, StringArray};
    let ids: Vec<i64> = (0..n as i64).map(|i| first_id + i).collect();
    let names: Vec<Option<String>> = ids.iter().map(|i| Some(format!("row-{i}"))).collect();
    parquet(vec![
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef, false),
        ("name", Arc::new(StringArray::from(names)) as ArrayRef, true),
    ])
}

/// fake-gcs-server with one bucket.
pub struct Gcs {
    pub server: FakeGcs,
    pub store: StoreConfig,
}

impl Gcs {
    pub fn start() -> Gcs {
        let server = FakeGcs::start().expect("fake-gcs-server");
        server.create_bucket(BUCKET).expect("bucket");
        let store = StoreConfig {
            gcs_emulator_host: Some(server.endpoint()),
            ..Default::default()
        };
        Gcs { server, store }
    }

    /// Writes an object; returns its generation.
    pub async fn put(&self, key: &str, data: Bytes) -> i64 {
        let (store, _) = sluice_storage::open(&format!("gs://{BUCKET}"), &self.store)
            .await
            .expect("open bucket");
        let meta = sluice_storage::write_bytes(store.as_ref(), key, data, WriteOptions::default())
            .await
            .expect("write object");
        meta.generation.unwrap_or_default()
    }

    pub async fn delete(&self, key: &str) {
        let (store, _) = sluice_storage::open(&format!("gs://{BUCKET}"), &self.store)
            .await
            .expect("open bucket");
        store.delete(key).await.expect("delete");
    }
}

/// A load config for tests: fast polling and retries, the given endpoint (anonymous).
pub fn config(input: Input, table: &str, gcs: &Gcs, bigquery_endpoint: &str) -> LoadConfig {
    let mut c = LoadConfig::new(input, TableTemplate::parse(table).expect("table"));
    c.store = gcs.store.clone();
    c.bigquery = ClientConfig::emulator(bigquery_endpoint);
    c.poll.initial = Duration::from_millis(20);
    c.poll.max = Duration::from_millis(50);
    c.retry = RetryPolicy {
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        multiplier: 2.0,
        max_attempts: 4,
        max_elapsed: Duration::from_secs(10),
    };
    c
}

pub fn glob(pattern: &str) -> Input {
    Input::Glob(format!("gs://{BUCKET}/{pattern}"))
}

pub fn task(index: u32, count: u32) -> TaskContext {
    TaskContext {
        index,
        count,
        ..TaskContext::local()
    }
}

/// The real `bq` client against bqemulator: an access-token file satisfies its auth, and the
/// vendored discovery document replaces the `$discovery` endpoint the emulator lacks.
pub fn bq(endpoint: &str, project: &str, args: &[&str]) -> serde_json::Value {
    let fixtures = sluice_testkit::repo_root().join("crates/load/tests/fixtures");
    let token = std::env::temp_dir().join("sluice-load-test-token");
    std::fs::write(&token, "test-token").expect("token file");
    let output = std::process::Command::new("bq")
        .arg(format!("--api={endpoint}"))
        .arg(format!(
            "--discovery_file={}",
            fixtures.join("bigquery.v2.json").display()
        ))
        .arg(format!("--project_id={project}"))
        .arg("--format=json")
        .args(args)
        .env("CLOUDSDK_AUTH_ACCESS_TOKEN_FILE", &token)
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .output()
        .expect("run bq");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bq {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bq output {stdout:?}: {e}"))
}

/// `select count(*)` through the real `bq` client.
pub fn bq_count(endpoint: &str, project: &str, table: &str) -> i64 {
    let out = bq(
        endpoint,
        project,
        &[
            "query",
            "--nouse_legacy_sql",
            &format!("select count(*) as n from `{table}`"),
        ],
    );
    out[0]["n"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .or_else(|| out[0]["n"].as_i64())
        .unwrap_or_else(|| panic!("count of {table}: {out}"))
}

/// Runs `test` on a multi-threaded runtime driven from a thread with the 8 MiB stack a
/// binary's main thread has (`sluice` polls its commands there). A merge's path through the
/// generated BigQuery client (a `model::Job` is 7 KB, and unoptimised builds give every
/// temporary of every async frame its own slot) needs a little more than the 2 MiB of a test
/// thread in debug builds.
pub fn on_main_sized_stack<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let handle = std::thread::Builder::new()
        .stack_size(8 * 1024 * 1024)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(test())
        })
        .expect("spawn test thread");
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}
