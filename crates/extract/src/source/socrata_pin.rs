//! One Socrata plan per execution.
//!
//! Tasks of an array job start at different times and Cloud Run retries a failed task later;
//! had each planned on its own, a row updated in between would move the upper bound and every
//! boundary, and the tasks would cut the dataset into different pages (rows lost or pulled
//! twice). So, as `execution_date` does for `dt=today`, the first task to plan a source
//! writes its plan to a small object created only if absent, and every other task and retry
//! of the execution reads it:
//!
//! `{prefix}_manifests/executions/{CLOUD_RUN_EXECUTION}/socrata-{hash}.json`, where `hash`
//! is `naming::identity_hash` of the resource's identity (URL and query without secrets) and
//! page size. Its body: `{"kind": "sluice.extract.socrata-plan", "execution", "source",
//! "pinned_at", "pinned_by_task", "pinned_by_attempt", "plan": {"since", "upper", "rows",
//! "page_size", "boundaries": [{"updated_at", "id"}], "truth", "types"}}`. Task 0 removes it
//! with the execution date pin after 8 days. Without an execution (a local run of one task)
//! nothing is pinned.
//!
//! A source that cannot be planned (its count query fails after the client's retries) is
//! pinned too, as `"failed": "<cause>"` instead of `"plan"`: every task of the execution then
//! agrees that the source has one failed item and nothing else, so the other sources' items
//! are split the same way by every task and load can keep just this source's dataset out.
//! The execution does not try that source again (a retry of the task sees the failure pin);
//! the next execution does, from the same stored state.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sluice_runtime::TaskContext;
use sluice_storage::ObjectStore;

use crate::error::{ExtractError, Result};
use crate::pin::{self, Pin, Pinned};
use crate::source::socrata::SocrataPlan;

const PIN_KIND: &str = "sluice.extract.socrata-plan";

/// Where and for whom plans are pinned.
pub(crate) struct PinScope<'a> {
    pub store: &'a dyn ObjectStore,
    /// The destination prefix (without partition), as for the execution date pin.
    pub prefix: &'a str,
    pub task: &'a TaskContext,
}

#[derive(Debug, Serialize, Deserialize)]
struct PlanPin {
    kind: String,
    execution: String,
    /// The resource's identity (no secrets).
    source: String,
    pinned_at: DateTime<Utc>,
    pinned_by_task: u32,
    pinned_by_attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plan: Option<SocrataPlan>,
    /// Why the source could not be planned (then there is no `plan`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failed: Option<String>,
}

/// The execution's verdict on one Socrata source: its plan, or why it has none.
pub(crate) type Planned = std::result::Result<SocrataPlan, String>;

/// `{prefix}_manifests/executions/{execution}/socrata-{hash}.json`
pub(crate) fn pin_key(prefix: &str, execution: &str, identity: &str, page_size: u64) -> String {
    let hash = crate::naming::identity_hash(&format!("{identity}#page_size={page_size}"));
    format!("{prefix}_manifests/executions/{execution}/socrata-{hash}.json")
}

/// The execution's plan of the source `identity`: read from its pin, or made by `plan_now`
/// and pinned. Without a scope or an execution, `plan_now`'s. A source failure of `plan_now`
/// (`ExtractError::is_source_failure`) is the inner `Err` (pinned like a plan); anything else
/// (storage, cancellation) fails the task.
pub(crate) async fn pinned_plan<F>(
    scope: Option<&PinScope<'_>>,
    identity: &str,
    page_size: u64,
    since: Option<&str>,
    plan_now: F,
) -> Result<Planned>
where
    F: Future<Output = Result<SocrataPlan>>,
{
    let Some((scope, execution)) = scope.and_then(|s| s.task.execution.as_deref().map(|e| (s, e)))
    else {
        return source_outcome(plan_now.await);
    };
    let key = pin_key(scope.prefix, execution, identity, page_size);
    let url = scope.store.url_of(&key);
    if let Some(pin) = pin::read::<PlanPin>(scope.store, &key).await? {
        return use_pin(pin, since, &url);
    }
    let planned = source_outcome(plan_now.await)?;
    let pin = PlanPin {
        kind: PIN_KIND.into(),
        execution: execution.to_string(),
        source: identity.to_string(),
        pinned_at: Utc::now(),
        pinned_by_task: scope.task.index,
        pinned_by_attempt: scope.task.attempt,
        plan: planned.as_ref().ok().cloned(),
        failed: planned.as_ref().err().cloned(),
    };
    match pin::create_or_read(scope.store, &key, pin).await? {
        Pinned::Ours(_) => {
            match &planned {
                Ok(plan) => tracing::info!(
                    execution,
                    pin = %url,
                    rows = plan.rows,
                    upper = plan.upper.as_deref().unwrap_or(""),
                    "pinned the plan of {identity} for execution {execution} at {url}"
                ),
                Err(cause) => tracing::error!(
                    execution,
                    pin = %url,
                    error = %cause,
                    "Socrata source {identity} cannot be planned: {cause}; pinned as failed for \
                     execution {execution} at {url} (the other sources go on)"
                ),
            }
            Ok(planned)
        }
        // Theirs wins (a plan or a failure); ours is dropped.
        Pinned::Theirs(theirs) => use_pin(theirs, since, &url),
    }
}

impl Pin for PlanPin {
    const KIND: &'static str = PIN_KIND;
    const WHAT: &'static str = "Socrata plan pin";
    const LIMIT: u64 = 16 * 1024 * 1024;
    fn kind(&self) -> &str {
        &self.kind
    }
}

/// A source failure becomes the source's verdict; any other error stays the task's.
fn source_outcome(result: Result<SocrataPlan>) -> Result<Planned> {
    match result {
        Ok(plan) => Ok(Ok(plan)),
        Err(e) if e.is_source_failure() => Ok(Err(e.to_string())),
        Err(e) => Err(e),
    }
}

fn use_pin(pin: PlanPin, since: Option<&str>, url: &str) -> Result<Planned> {
    let plan = match (pin.plan, pin.failed) {
        (Some(plan), None) => plan,
        (None, Some(cause)) => {
            return Ok(Err(format!(
                "{cause} (pinned as failed for this execution by task {} at {url}; the next \
                 execution tries again)",
                pin.pinned_by_task
            )));
        }
        _ => {
            return Err(ExtractError::Config(format!(
                "{url}: a Socrata plan pin must have exactly one of `plan` and `failed`; delete \
                 it to let the execution plan again"
            )));
        }
    };
    if plan.since.as_deref() != since {
        tracing::warn!(
            pin = %url,
            "this task's window starts at {:?} but the execution's pinned plan at {:?}; \
             using the pinned plan so every task reads the same pages",
            since,
            plan.since
        );
    }
    tracing::debug!(pin = %url, "using the execution's pinned Socrata plan {url}");
    Ok(Ok(plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_storage::LocalStore;

    fn task(index: u32, execution: Option<&str>) -> TaskContext {
        TaskContext {
            index,
            count: 2,
            attempt: 0,
            job: None,
            execution: execution.map(str::to_string),
        }
    }

    fn raw_scope<'a>(store: &'a LocalStore, task: &'a TaskContext) -> PinScope<'a> {
        PinScope {
            store,
            prefix: "raw/",
            task,
        }
    }

    fn plan(rows: u64) -> SocrataPlan {
        SocrataPlan {
            since: None,
            upper: Some("2026-01-02T00:00:00.000".into()),
            rows,
            page_size: 10,
            boundaries: Vec::new(),
            truth: None,
            types: None,
        }
    }

    #[tokio::test]
    async fn the_first_plan_of_an_execution_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path(), Default::default());
        let t0 = task(0, Some("x-1"));
        let scope = raw_scope(&store, &t0);
        let first = pinned_plan(Some(&scope), "https://h/resource/a", 10, None, async {
            Ok(plan(5))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(first.rows, 5);
        let t1 = task(1, Some("x-1"));
        let scope = raw_scope(&store, &t1);
        let second = pinned_plan(Some(&scope), "https://h/resource/a", 10, None, async {
            panic!("must not plan again")
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(second, first);
        let key = pin_key("raw/", "x-1", "https://h/resource/a", 10);
        assert!(
            key.starts_with("raw/_manifests/executions/x-1/socrata-"),
            "{key}"
        );
        let text = std::fs::read_to_string(dir.path().join(&key)).unwrap();
        assert!(
            text.contains("\"kind\": \"sluice.extract.socrata-plan\""),
            "{text}"
        );
        // Another execution plans for itself; no execution pins nothing.
        let t2 = task(0, Some("x-2"));
        let scope = raw_scope(&store, &t2);
        let other = pinned_plan(Some(&scope), "https://h/resource/a", 10, None, async {
            Ok(plan(7))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(other.rows, 7);
        let local = task(0, None);
        let scope = raw_scope(&store, &local);
        let direct = pinned_plan(Some(&scope), "https://h/resource/a", 10, None, async {
            Ok(plan(9))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(direct.rows, 9);
        assert_eq!(store.list("raw/_manifests/").await.unwrap().len(), 2);
    }

    fn dead_portal() -> ExtractError {
        ExtractError::Http {
            url: "https://h/resource/a.json".into(),
            status: 503,
            retry_after: None,
            message: String::new(),
        }
    }

    #[tokio::test]
    async fn a_source_failure_is_pinned_and_every_task_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path(), Default::default());
        let t0 = task(0, Some("x-1"));
        let scope = raw_scope(&store, &t0);
        let first = pinned_plan(Some(&scope), "https://h/resource/a", 10, None, async {
            Err(dead_portal())
        })
        .await
        .unwrap();
        let cause = first.unwrap_err();
        assert!(cause.contains("HTTP 503"), "{cause}");
        // Task 1 would plan fine now, but the execution already decided: same verdict.
        let t1 = task(1, Some("x-1"));
        let scope = raw_scope(&store, &t1);
        let second = pinned_plan(Some(&scope), "https://h/resource/a", 10, None, async {
            Ok(plan(5))
        })
        .await
        .unwrap();
        let cause = second.unwrap_err();
        assert!(
            cause.contains("HTTP 503") && cause.contains("pinned as failed"),
            "{cause}"
        );
        // A storage or configuration error is the task's, not the source's: nothing pinned.
        let t2 = task(0, Some("x-2"));
        let scope = raw_scope(&store, &t2);
        let err = pinned_plan(Some(&scope), "https://h/resource/a", 10, None, async {
            Err(ExtractError::Config("bad".into()))
        })
        .await
        .unwrap_err();
        assert!(matches!(err, ExtractError::Config(_)));
        assert_eq!(
            store
                .list("raw/_manifests/executions/x-2/")
                .await
                .unwrap()
                .len(),
            0
        );
    }
}
