//! Uploading what dbt leaves behind (run_results.json, manifest.json, sources.json, dbt.log) to
//! `prefix/{execution or UTC timestamp}/task-{index}/`, whatever dbt's exit code was.
//!
//! A retried task writes to the same keys and replaces the previous attempt's files (each
//! object commits atomically), so the prefix always holds one coherent set: the latest
//! attempt's. Every object carries the task, attempt and dbt's exit status as metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sluice_runtime::TaskContext;
use sluice_storage::{ObjectStore, StorageError, WriteOptions};
use tokio::io::AsyncReadExt;

use sluice_runtime::redact::Redactor;

/// Bytes read from a local file per write.
const CHUNK: usize = 256 * 1024;

/// A file to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Artifact {
    /// The object name under the run prefix.
    pub name: &'static str,
    pub path: PathBuf,
    pub content_type: &'static str,
}

/// The artifacts that exist after a run. The log goes first: when dbt failed early it is the
/// one that explains why.
pub(crate) fn collect(target_dir: &Path, log_dir: &Path) -> Vec<Artifact> {
    [
        ("dbt.log", log_dir.join("dbt.log"), "application/x-ndjson"),
        (
            "run_results.json",
            target_dir.join("run_results.json"),
            "application/json",
        ),
        (
            "sources.json",
            target_dir.join("sources.json"),
            "application/json",
        ),
        (
            "manifest.json",
            target_dir.join("manifest.json"),
            "application/json",
        ),
    ]
    .into_iter()
    .filter(|(_, path, _)| path.is_file())
    .map(|(name, path, content_type)| Artifact {
        name,
        path,
        content_type,
    })
    .collect()
}

/// `base/{execution or timestamp}/task-00003`: executions are unique per run on Cloud Run; a
/// local run has none, so the start time (UTC, to the second) stands in.
pub(crate) fn run_prefix(
    base: &str,
    task: &TaskContext,
    started: chrono::DateTime<chrono::Utc>,
) -> String {
    let run = match &task.execution {
        Some(execution) => execution.clone(),
        None => started.format("%Y%m%dT%H%M%SZ").to_string(),
    };
    let mut parts: Vec<&str> = Vec::new();
    let base = base.trim_matches('/');
    if !base.is_empty() {
        parts.push(base);
    }
    let task_part = format!("task-{:05}", task.index);
    parts.push(&run);
    parts.push(&task_part);
    parts.join("/")
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StorageError),
}

/// Uploads one artifact to `key`, secrets masked; returns the object's URL. On any failure the
/// writer is aborted, so no partial object appears.
pub(crate) async fn upload_one(
    store: &dyn ObjectStore,
    key: &str,
    artifact: &Artifact,
    metadata: &BTreeMap<String, String>,
    redactor: &Redactor,
) -> Result<String, UploadError> {
    let read_err = |source| UploadError::Read {
        path: artifact.path.clone(),
        source,
    };
    let mut file = tokio::fs::File::open(&artifact.path)
        .await
        .map_err(read_err)?;
    let options = WriteOptions {
        if_absent: false,
        metadata: metadata.clone(),
        content_type: Some(artifact.content_type.to_string()),
    };
    let mut writer = store.writer(key, options).await?;
    let mut scrub = redactor.stream();
    let mut buf = vec![0u8; CHUNK];
    let result: Result<(), UploadError> = async {
        loop {
            let n = file.read(&mut buf).await.map_err(read_err)?;
            if n == 0 {
                break;
            }
            let out = scrub.push(&buf[..n]);
            if !out.is_empty() {
                writer.write(Bytes::from(out)).await?;
            }
        }
        let tail = scrub.finish();
        if !tail.is_empty() {
            writer.write(Bytes::from(tail)).await?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            writer.commit().await?;
            Ok(store.url_of(key))
        }
        Err(err) => {
            if let Err(abort_err) = writer.abort().await {
                tracing::warn!(object = %store.url_of(key), error = %abort_err, "cannot abort artifact upload");
            }
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn prefix_uses_execution_or_timestamp() {
        let started = chrono::Utc
            .with_ymd_and_hms(2026, 11, 28, 5, 12, 0)
            .unwrap();
        let mut task = TaskContext::local();
        assert_eq!(
            run_prefix("", &task, started),
            "20261128T051200Z/task-00000"
        );
        task.execution = Some("dbt-abc12".into());
        task.index = 3;
        task.count = 4;
        assert_eq!(
            run_prefix("runs/dbt/", &task, started),
            "runs/dbt/dbt-abc12/task-00003"
        );
    }

    #[test]
    fn collects_only_existing_files_log_first() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::create_dir_all(&logs).unwrap();
        assert!(collect(&target, &logs).is_empty());
        std::fs::write(target.join("manifest.json"), "{}").unwrap();
        std::fs::write(logs.join("dbt.log"), "{}\n").unwrap();
        let names: Vec<&str> = collect(&target, &logs).iter().map(|a| a.name).collect();
        assert_eq!(names, ["dbt.log", "manifest.json"]);
    }
}
