//! Shared helpers for the extract integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use sluice_extract::{ExtractConfig, ProgressMode, TaskOutcome};
use sluice_runtime::{CancellationToken, RetryPolicy, TaskContext};
use sluice_storage::StoreConfig;

/// Retries that keep tests fast but still exercise backoff.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        multiplier: 2.0,
        max_attempts: 6,
        max_elapsed: Duration::from_secs(30),
    }
}

pub fn config(dest: &Path) -> ExtractConfig {
    let mut config = ExtractConfig::new(dest.display().to_string());
    config.http.retry = fast_retry();
    config.http.read_timeout = Duration::from_secs(5);
    config.http.connect_timeout = Duration::from_secs(5);
    config.progress.mode = ProgressMode::Off;
    config
}

pub fn task(index: u32, count: u32) -> TaskContext {
    TaskContext {
        index,
        count,
        attempt: 0,
        job: Some("extract-test".into()),
        execution: Some("extract-test-exec1".into()),
    }
}

pub async fn run(
    config: ExtractConfig,
    task: &TaskContext,
) -> Result<TaskOutcome, sluice_extract::ExtractError> {
    let outcome = sluice_extract::run(
        config,
        task,
        StoreConfig::default(),
        CancellationToken::new(),
    )
    .await?;
    Ok(with_items(outcome).await)
}

/// The outcome with its manifest's items read back from the store: `run` returns only the
/// header and totals (a task's items need not fit in memory).
pub async fn with_items(mut outcome: TaskOutcome) -> TaskOutcome {
    outcome.manifest = stored_manifest(&outcome.manifest_url).await;
    outcome
}

/// The task manifest stored at `url` (`file://` or `gs://`, the latter through the emulator
/// in `STORAGE_EMULATOR_HOST`).
pub async fn stored_manifest(url: &str) -> sluice_extract::TaskManifest {
    let (dir, file) = url.rsplit_once('/').expect("a manifest URL has a '/'");
    let config = StoreConfig {
        gcs_emulator_host: std::env::var("STORAGE_EMULATOR_HOST").ok(),
        ..StoreConfig::default()
    };
    let (store, prefix) = sluice_storage::open(dir, &config)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let key = sluice_storage::join_key(&prefix, file);
    let bytes = sluice_storage::read_to_bytes(store.as_ref(), &key, 1 << 30)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    sluice_extract::TaskManifest::parse(&bytes, url).unwrap_or_else(|e| panic!("{e}"))
}

pub async fn run_ok(config: ExtractConfig) -> TaskOutcome {
    match run(config, &task(0, 1)).await {
        Ok(outcome) => outcome,
        Err(e) => panic!("extract failed: {e}"),
    }
}

/// A CSV with every type: id INT64, price FLOAT64 (some NA), ok BOOL, day DATE, at TIMESTAMP,
/// name STRING (with commas/quotes/newlines).
pub fn typed_csv(rows: usize) -> String {
    let mut out = String::from("id,price,ok,day,at,name\n");
    for i in 0..rows {
        let price = if i % 10 == 3 {
            "NA".to_string()
        } else {
            format!("{}.25", i)
        };
        let name = match i % 4 {
            0 => format!("plain {i}"),
            1 => format!("\"comma, {i}\""),
            2 => format!("\"quote \"\"{i}\"\"\""),
            _ => format!("\"two\nlines {i}\""),
        };
        out.push_str(&format!(
            "{i},{price},{},2024-01-{:02},2024-01-{:02}T{:02}:30:00Z,{name}\n",
            i % 2 == 0,
            i % 28 + 1,
            i % 28 + 1,
            i % 24
        ));
    }
    out
}

pub fn object(dest: &Path, key: &str) -> Vec<u8> {
    std::fs::read(dest.join(key)).unwrap_or_else(|e| panic!("reading {key}: {e}"))
}

/// Object keys under `dest` (hidden files excluded), sorted.
pub fn keys(dest: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    if dest.exists() {
        walk(dest, dest, &mut out);
    }
    out.sort();
    out
}
