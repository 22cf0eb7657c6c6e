//! `dt=today` means the date of the *execution*, not of the task attempt.
//!
//! Cloud Run retries a failed task, possibly hours later, and tasks of one execution start at
//! different times. Had every attempt used its own clock, an execution spanning midnight UTC
//! would write part of its items (or a retried item) under the next day's partition, and load
//! would see both halves as different data. So the first task of an execution to get here pins
//! the date in a tiny object, created only if absent (atomic on both stores); every other task
//! and every retry of that execution reads the pin instead of the clock.
//!
//! Outside Cloud Run (`CLOUD_RUN_EXECUTION` unset) there is nothing to share and the task's
//! start date is used.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sluice_runtime::TaskContext;
use sluice_storage::ObjectStore;

use crate::error::Result;
use crate::pin::{self, Pin, Pinned};

const PIN_KIND: &str = "sluice.extract.execution-date";
/// Pins older than this are removed by task 0: Cloud Run's longest task timeout is 7 days, so
/// no attempt of an execution can start after its pin is this old.
const PIN_RETENTION: chrono::Duration = chrono::Duration::days(8);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExecutionPin {
    pub kind: String,
    pub execution: String,
    /// `YYYY-MM-DD` (UTC): what `today` means for every task of the execution.
    pub date: NaiveDate,
    pub pinned_at: DateTime<Utc>,
    pub pinned_by_task: u32,
    pub pinned_by_attempt: u32,
}

/// `{prefix}_manifests/executions/{execution}.json`
pub(crate) fn pin_key(prefix: &str, execution: &str) -> String {
    format!("{prefix}_manifests/executions/{execution}.json")
}

/// The execution's date: read from its pin, or pinned now as the UTC date of `now`.
pub(crate) async fn execution_date(
    store: &dyn ObjectStore,
    prefix: &str,
    task: &TaskContext,
    now: DateTime<Utc>,
) -> Result<NaiveDate> {
    let Some(execution) = task.execution.as_deref() else {
        return Ok(now.date_naive());
    };
    let key = pin_key(prefix, execution);
    // Reading first keeps retries (the common case after the first task) to one request.
    if let Some(pin) = pin::read::<ExecutionPin>(store, &key).await? {
        return Ok(pin.date);
    }
    let pin = ExecutionPin {
        kind: PIN_KIND.into(),
        execution: execution.to_string(),
        date: now.date_naive(),
        pinned_at: now,
        pinned_by_task: task.index,
        pinned_by_attempt: task.attempt,
    };
    match pin::create_or_read(store, &key, pin).await? {
        Pinned::Ours(pin) => {
            let url = store.url_of(&key);
            tracing::info!(execution, date = %pin.date, pin = %url, "pinned the execution date {} at {url}", pin.date);
            Ok(pin.date)
        }
        Pinned::Theirs(pin) => Ok(pin.date),
    }
}

impl Pin for ExecutionPin {
    const KIND: &'static str = PIN_KIND;
    const WHAT: &'static str = "execution date pin";
    const LIMIT: u64 = 64 * 1024;
    fn kind(&self) -> &str {
        &self.kind
    }
}

/// Task 0's housekeeping: removes pins of executions that can no longer run.
pub(crate) async fn remove_expired_pins(
    store: &dyn ObjectStore,
    prefix: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let dir = format!("{prefix}_manifests/executions/");
    for object in store.list(&dir).await? {
        let expired = object.updated.is_some_and(|t| now - t > PIN_RETENTION);
        if expired && object.key.ends_with(".json") {
            tracing::debug!(pin = %store.url_of(&object.key), "removing an expired execution date pin");
            store.delete(&object.key).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_storage::LocalStore;

    fn task(index: u32, attempt: u32, execution: Option<&str>) -> TaskContext {
        TaskContext {
            index,
            count: 3,
            attempt,
            job: Some("extract".into()),
            execution: execution.map(str::to_string),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn a_retry_after_midnight_keeps_the_execution_date() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path(), Default::default());
        let first = execution_date(
            &store,
            "raw/",
            &task(0, 0, Some("extract-abc12")),
            at("2026-11-28T23:59:50Z"),
        )
        .await
        .unwrap();
        assert_eq!(first.to_string(), "2026-11-28");
        // Another task, and a retry, after midnight.
        for t in [
            task(2, 0, Some("extract-abc12")),
            task(0, 1, Some("extract-abc12")),
        ] {
            let date = execution_date(&store, "raw/", &t, at("2026-11-29T00:10:00Z"))
                .await
                .unwrap();
            assert_eq!(date.to_string(), "2026-11-28");
        }
        // The next execution gets its own date.
        let next = execution_date(
            &store,
            "raw/",
            &task(0, 0, Some("extract-def34")),
            at("2026-11-29T00:10:00Z"),
        )
        .await
        .unwrap();
        assert_eq!(next.to_string(), "2026-11-29");
        let pin: ExecutionPin = serde_json::from_slice(
            &std::fs::read(
                dir.path()
                    .join("raw/_manifests/executions/extract-abc12.json"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!((pin.pinned_by_task, pin.pinned_by_attempt), (0, 0));
    }

    #[tokio::test]
    async fn without_an_execution_the_clock_decides() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path(), Default::default());
        let date = execution_date(&store, "", &task(0, 0, None), at("2026-11-29T00:10:00Z"))
            .await
            .unwrap();
        assert_eq!(date.to_string(), "2026-11-29");
        assert!(store.list("").await.unwrap().is_empty(), "nothing pinned");
    }

    #[tokio::test]
    async fn concurrent_tasks_agree_on_one_date() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalStore::new(dir.path(), Default::default()));
        let mut handles = Vec::new();
        for i in 0..8u32 {
            let store = store.clone();
            // Half the tasks see the clock after midnight.
            let now = if i % 2 == 0 {
                at("2026-11-28T23:59:59Z")
            } else {
                at("2026-11-29T00:00:01Z")
            };
            handles.push(tokio::spawn(async move {
                execution_date(store.as_ref(), "", &task(i, 0, Some("x-1")), now)
                    .await
                    .unwrap()
            }));
        }
        let mut dates = Vec::new();
        for h in handles {
            dates.push(h.await.unwrap());
        }
        dates.dedup();
        assert_eq!(
            dates.len(),
            1,
            "one date for the whole execution: {dates:?}"
        );
    }

    #[tokio::test]
    async fn task_zero_removes_only_expired_pins() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path(), Default::default());
        for execution in ["old-1", "new-1"] {
            execution_date(&store, "", &task(1, 0, Some(execution)), Utc::now())
                .await
                .unwrap();
        }
        let old = dir.path().join("_manifests/executions/old-1.json");
        let nine_days_ago =
            std::time::SystemTime::now() - std::time::Duration::from_secs(9 * 86_400);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(nine_days_ago)
            .unwrap();
        remove_expired_pins(&store, "", Utc::now()).await.unwrap();
        let left: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(left, ["_manifests/executions/new-1.json"]);
    }

    #[tokio::test]
    async fn a_foreign_object_at_the_pin_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("_manifests/executions/x-1.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{\"hello\": 1}").unwrap();
        let store = LocalStore::new(dir.path(), Default::default());
        let err = execution_date(&store, "", &task(0, 0, Some("x-1")), Utc::now())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("_manifests/executions/x-1.json"), "{err}");
        assert!(err.contains("not a valid execution date pin"), "{err}");
    }
}
