//! BigQuery calls under the runtime's retry policy and the task's cancellation, with failures
//! turned into load errors naming what they were for. `prepare` (tables.get) and `execute`
//! (datasets, tables, jobs) both call through here.

use std::future::Future;

use sluice_runtime::retry::RetryError;
use sluice_runtime::{CancellationToken, RetryPolicy};

use crate::client::{ApiError, BigQuery};
use crate::config::LoadConfig;
use crate::errors::LoadError;

/// The client with the retry policy and cancellation every call runs under.
pub(crate) struct Api<'a> {
    pub(crate) client: BigQuery,
    retry: &'a RetryPolicy,
    cancel: &'a CancellationToken,
}

/// A dataset or table: what `get_or_create` gets, and creates when missing.
#[derive(Clone, Copy)]
pub(crate) enum Resource<'a> {
    /// `project:dataset`.
    Dataset(&'a str),
    /// `project.dataset.table`.
    Table(&'a str),
}

impl Resource<'_> {
    /// `dataset p:d` / `table p.d.t`: how errors name it.
    fn describe(self) -> String {
        match self {
            Resource::Dataset(name) => format!("dataset {name}"),
            Resource::Table(name) => format!("table {name}"),
        }
    }

    /// The API call `method` (`get`, `insert`) on it, as the retry log names it.
    fn call(self, method: &str) -> String {
        match self {
            Resource::Dataset(name) => format!("datasets.{method} {name}"),
            Resource::Table(name) => format!("tables.{method} {name}"),
        }
    }
}

impl<'a> Api<'a> {
    pub(crate) async fn connect(
        config: &'a LoadConfig,
        cancel: &'a CancellationToken,
    ) -> Result<Api<'a>, LoadError> {
        let client = BigQuery::new(&config.bigquery)
            .await
            .map_err(|source| LoadError::Api {
                context: "BigQuery client".into(),
                source: Box::new(source),
            })?;
        Ok(Api {
            client,
            retry: &config.retry,
            cancel,
        })
    }

    pub(crate) fn cancel(&self) -> &CancellationToken {
        self.cancel
    }

    /// Runs `op` under the retry policy; the raw outcome, for callers that treat some
    /// failures (a 409) as answers.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        what: String,
        op: F,
    ) -> Result<T, RetryError<ApiError>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        self.retry
            .run(&what, self.cancel, |_| op(), ApiError::retry_decision)
            .await
    }

    /// `get` under retries, its failure named after the resource.
    pub(crate) async fn get<T, G, GF>(
        &self,
        resource: Resource<'_>,
        get: G,
    ) -> Result<Option<T>, LoadError>
    where
        G: Fn() -> GF,
        GF: Future<Output = Result<Option<T>, ApiError>>,
    {
        self.call(resource.call("get"), get)
            .await
            .map_err(|e| failure(e, || resource.describe()))
    }

    /// `get`, then `insert` when it is missing; a 409 on the insert (another task created it
    /// first) is answered by a second `get`. Returns the resource and whether this call created
    /// it.
    pub(crate) async fn get_or_create<T, G, GF, I, IF>(
        &self,
        resource: Resource<'_>,
        get: G,
        insert: I,
    ) -> Result<(T, bool), LoadError>
    where
        G: Fn() -> GF,
        GF: Future<Output = Result<Option<T>, ApiError>>,
        I: Fn() -> IF,
        IF: Future<Output = Result<T, ApiError>>,
    {
        let context = || resource.describe();
        if let Some(existing) = self.get(resource, &get).await? {
            return Ok((existing, false));
        }
        match self.call(resource.call("insert"), insert).await {
            Ok(created) => Ok((created, true)),
            Err(RetryError::Exhausted { source, .. }) if source.is_conflict() => {
                match self.get(resource, &get).await? {
                    Some(existing) => Ok((existing, false)),
                    None => Err(LoadError::Vanished {
                        what: resource.describe(),
                    }),
                }
            }
            Err(e) => Err(failure(e, context)),
        }
    }
}

/// A retried call's failure: cancellation stays cancellation; otherwise the last API error,
/// under `context` (what it was for).
pub(crate) fn failure(err: RetryError<ApiError>, context: impl FnOnce() -> String) -> LoadError {
    match err {
        RetryError::Cancelled { .. } => LoadError::Cancelled,
        RetryError::Exhausted { source, .. } => LoadError::Api {
            context: context(),
            source: Box::new(source),
        },
    }
}
