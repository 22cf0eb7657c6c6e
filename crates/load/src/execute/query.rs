//! Query jobs with deterministic ids (the MERGE, a lineage row) and read-only queries (the
//! merge's checks and schema changes).
//!
//! A query job that changes data must run once however often the task does. BigQuery refuses a
//! reused job id (409) and Sluice follows the existing job then; bqemulator does not (it runs
//! the job again), so every id is looked up first ([`probe`]): a DONE job without error is the
//! answer, a running one is followed, a failed one moves on to the next `_a<N>` suffix (a failed
//! DML statement changed nothing, so running it again under a new id cannot apply it twice).

use std::collections::BTreeMap;

use google_cloud_bigquery_v2::model;
use sluice_runtime::retry::RetryError;

use crate::api::{Api, failure};
use crate::bq_error::ErrorClass;
use crate::config::LoadConfig;
use crate::errors::{LoadError, QUOTED_ERRORS, QueryFailure};
use crate::job_id;

use super::job::{MAX_SUFFIX_PROBES, bq_error, display_job_id, follow, job_status};

/// What the ids `base`, `base_a1`, ... hold.
pub(super) enum Found {
    /// A job DONE without error that `accept` took, and its attempt.
    Done(Box<model::Job>, u32),
    /// No job with this attempt's id: the first free one.
    Free(u32),
}

/// Where a job runs: its project and (outside the US/EU multi-regions, required) location.
#[derive(Clone, Copy)]
pub(super) struct JobSite<'a> {
    pub(super) project: &'a str,
    pub(super) location: Option<&'a str>,
}

/// `jobs.get` of `base` and its attempt suffixes, in order: running jobs are followed to their
/// end; the first DONE one without error that `accept` takes is returned; else the first id no
/// job has.
pub(super) async fn probe(
    config: &LoadConfig,
    api: &Api<'_>,
    site: JobSite<'_>,
    base: &str,
    table: &str,
    accept: impl Fn(&model::Job) -> bool,
) -> Result<Found, LoadError> {
    let project = site.project;
    for attempt in 0..MAX_SUFFIX_PROBES {
        let id = job_id::attempt_id(base, attempt);
        let got = api
            .call(format!("jobs.get {project}:{id}"), || {
                api.client.get_job(project, &id, site.location)
            })
            .await;
        let job = match got {
            Ok(job) => job,
            Err(RetryError::Exhausted { source, .. }) if source.is_not_found() => {
                return Ok(Found::Free(attempt));
            }
            Err(e) => return Err(failure(e, || format!("table {table}: job {id}"))),
        };
        let job = Box::pin(follow(config, api, job, project, &id)).await?;
        if job_status(&job).1.is_none() && accept(&job) {
            return Ok(Found::Done(Box::new(job), attempt));
        }
    }
    Err(LoadError::AttemptsExhausted {
        table: table.to_string(),
        base_id: base.to_string(),
        probes: MAX_SUFFIX_PROBES,
    })
}

/// A query job that changes data: the MERGE or a lineage row.
pub(super) struct QueryJob<'a> {
    /// `merge`, `lineage`: how errors and logs name it.
    pub(super) what: &'static str,
    /// The table it is for, for messages.
    pub(super) table: &'a str,
    pub(super) sql: String,
    pub(super) parameters: Vec<model::QueryParameter>,
}

/// A STRING query parameter.
pub(super) fn string_parameter(name: &str, value: &str) -> model::QueryParameter {
    parameter(name, "STRING", value.to_string())
}

/// An INT64 query parameter.
pub(super) fn int_parameter(name: &str, value: i64) -> model::QueryParameter {
    parameter(name, "INT64", value.to_string())
}

fn parameter(name: &str, kind: &str, value: String) -> model::QueryParameter {
    model::QueryParameter::new()
        .set_name(name)
        .set_parameter_type(model::QueryParameterType::new().set_type(kind))
        .set_parameter_value(model::QueryParameterValue::new().set_value(value))
}

fn query_body(
    job: &QueryJob<'_>,
    site: JobSite<'_>,
    id: &str,
    labels: &BTreeMap<String, String>,
) -> model::Job {
    let mut query = model::JobConfigurationQuery::new()
        .set_query(job.sql.clone())
        .set_use_legacy_sql(false);
    if !job.parameters.is_empty() {
        query = query
            .set_parameter_mode("NAMED")
            .set_query_parameters(job.parameters.clone());
    }
    let mut reference = model::JobReference::new()
        .set_project_id(site.project)
        .set_job_id(id);
    if let Some(location) = site.location {
        reference = reference.set_location(location);
    }
    model::Job::new()
        .set_job_reference(reference)
        .set_configuration(
            model::JobConfiguration::new()
                .set_query(query)
                .set_labels(labels.clone()),
        )
}

/// Runs `job` once under `base` (or finds the run an earlier attempt made): returns the DONE
/// job and whether this call submitted it.
pub(super) async fn run_once(
    config: &LoadConfig,
    api: &Api<'_>,
    site: JobSite<'_>,
    base: &str,
    job: &QueryJob<'_>,
) -> Result<(model::Job, bool), LoadError> {
    let mut attempt = match Box::pin(probe(config, api, site, base, job.table, |_| true)).await? {
        Found::Done(done, _) => return Ok((*done, false)),
        Found::Free(attempt) => attempt,
    };
    let project = site.project;
    let mut submitted = 0u32;
    loop {
        if attempt >= MAX_SUFFIX_PROBES {
            return Err(LoadError::AttemptsExhausted {
                table: job.table.to_string(),
                base_id: base.to_string(),
                probes: MAX_SUFFIX_PROBES,
            });
        }
        let id = job_id::attempt_id(base, attempt);
        let body = query_body(job, site, &id, &config.labels);
        let inserted = api
            .call(format!("jobs.insert {project}:{id}"), || {
                api.client.insert_job(project, body.clone())
            })
            .await;
        let (found, ours) = match inserted {
            Ok(found) => {
                submitted += 1;
                tracing::info!(table = job.table, job_id = %id, "submitted {} job {id} for {}", job.what, job.table);
                (found, true)
            }
            // Our own insert whose answer was lost (the call was retried), or a job the probe
            // could not see (no --location outside the US/EU multi-regions): follow it.
            Err(RetryError::Exhausted { source, .. }) if source.is_conflict() => {
                let found = api
                    .call(format!("jobs.get {project}:{id}"), || {
                        api.client.get_job(project, &id, site.location)
                    })
                    .await
                    .map_err(|e| failure(e, || format!("table {}: job {id}", job.table)))?;
                (found, false)
            }
            Err(e) => {
                return Err(failure(e, || {
                    format!("table {}: submitting {} job {id}", job.table, job.what)
                }));
            }
        };
        let done = Box::pin(follow(config, api, found, project, &id)).await?;
        let (_, error, errors) = job_status(&done);
        let Some(error) = error else {
            return Ok((done, ours));
        };
        let error = bq_error(error);
        let transient = error.class() == ErrorClass::Transient;
        let failed = LoadError::QueryFailed(Box::new(QueryFailure {
            what: job.what,
            table: job.table.to_string(),
            job_id: display_job_id(&done, project, &id),
            error: error.clone(),
            errors: errors
                .iter()
                .take(QUOTED_ERRORS + 1)
                .map(bq_error)
                .collect(),
        }));
        // As for load jobs (job.rs): a failed statement changed nothing; resubmit when the
        // failure is transient (bounded), or when the failed job is not ours.
        if ours && !(transient && submitted < config.max_job_attempts) {
            return Err(failed);
        }
        tracing::warn!(table = job.table, job_id = %id, "{failed}; submitting it again");
        attempt += 1;
    }
}

/// The rows of a read-only query, values as strings (NULL = `None`), waiting for it to finish.
pub(super) async fn read_rows(
    api: &Api<'_>,
    site: JobSite<'_>,
    sql: &str,
    table: &str,
) -> Result<Vec<Vec<Option<String>>>, LoadError> {
    const WAIT_MS: u32 = 10_000;
    let project = site.project;
    let context = || format!("table {table}: query {sql}");
    let first = api
        .call(format!("jobs.query {project}"), || {
            api.client.query(project, sql, site.location, WAIT_MS)
        })
        .await
        .map_err(|e| failure(e, context))?;
    if !first.errors.is_empty() || first.job_complete == Some(true) {
        return rows_or_error(first.rows, &first.errors, table, sql);
    }
    let id = first
        .job_reference
        .as_ref()
        .map(|r| r.job_id.clone())
        .unwrap_or_default();
    loop {
        let next = api
            .call(format!("jobs.getQueryResults {project}:{id}"), || {
                api.client
                    .get_query_results(project, &id, site.location, WAIT_MS)
            })
            .await
            .map_err(|e| failure(e, context))?;
        if !next.errors.is_empty() || next.job_complete == Some(true) {
            return rows_or_error(next.rows, &next.errors, table, sql);
        }
        tokio::select! {
            biased;
            _ = api.cancel().cancelled() => return Err(LoadError::Cancelled),
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
    }
}

fn rows_or_error(
    rows: Vec<serde_json::Map<String, serde_json::Value>>,
    errors: &[model::ErrorProto],
    table: &str,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, LoadError> {
    if let Some(first) = errors.first() {
        return Err(LoadError::QueryFailed(Box::new(QueryFailure {
            what: "check",
            table: table.to_string(),
            job_id: format!("(query {sql})"),
            error: bq_error(first),
            errors: errors
                .iter()
                .take(QUOTED_ERRORS + 1)
                .map(bq_error)
                .collect(),
        })));
    }
    Ok(rows.iter().map(row_values).collect())
}

/// `{"f": [{"v": "1"}, {"v": null}]}` -> `[Some("1"), None]`.
fn row_values(row: &serde_json::Map<String, serde_json::Value>) -> Vec<Option<String>> {
    let cells = row.get("f").and_then(|f| f.as_array());
    cells
        .map(|cells| {
            cells
                .iter()
                .map(|cell| match cell.get("v") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(other) => Some(other.to_string()),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_as_strings_with_nulls() {
        let row: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"f": [{"v": "1"}, {"v": null}, {"v": 2}]}"#).unwrap();
        assert_eq!(
            row_values(&row),
            [Some("1".to_string()), None, Some("2".to_string())]
        );
    }

    #[test]
    fn query_jobs_carry_named_parameters_and_location() {
        let job = QueryJob {
            what: "lineage",
            table: "p.d.t",
            sql: "INSERT INTO t (a) VALUES (@a)".into(),
            parameters: vec![string_parameter("a", "x'y"), int_parameter("n", 3)],
        };
        let site = JobSite {
            project: "p",
            location: Some("EU"),
        };
        let body = query_body(&job, site, "sluice_lineage_x", &BTreeMap::new());
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["jobReference"]["location"], "EU");
        let query = &json["configuration"]["query"];
        assert_eq!(query["useLegacySql"], false);
        assert_eq!(query["parameterMode"], "NAMED");
        assert_eq!(
            query["queryParameters"][0]["parameterValue"]["value"],
            "x'y"
        );
        assert_eq!(
            query["queryParameters"][1]["parameterType"]["type"],
            "INT64"
        );
    }
}
