//! One work item's load job: submit it under its deterministic id (or find the job an earlier
//! attempt submitted), follow it to its end, and resubmit under the next attempt suffix when
//! that is safe and useful.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use google_cloud_bigquery_v2::model;
use sluice_runtime::retry::RetryError;

use crate::api::{Api, failure};
use crate::bq_error::{BqError, ErrorClass};
use crate::config::LoadConfig;
use crate::errors::{JobFailure, LoadError, QUOTED_ERRORS};
use crate::inputs::SourceObject;
use crate::job_id;
use crate::plan::WorkItem;
use crate::prepare::Prepared;
use crate::report::{JobReport, Outcome, log_job};
use crate::spec;
use crate::template::TableRef;

/// Suffixes probed per item before giving up (each probe is one insert answered 409 + one get).
pub(super) const MAX_SUFFIX_PROBES: u32 = 50;

/// The project that runs (and pays for) the item's job.
pub(super) fn job_project<'a>(config: &'a LoadConfig, destination: &'a TableRef) -> &'a str {
    config
        .job_project
        .as_deref()
        .unwrap_or(&destination.project)
}

/// Submits the item's job (or finds it), follows it to its end, retries failed jobs under
/// the next attempt suffix when that is safe and useful. Returns the report and the DONE job.
pub(super) async fn run_job(
    config: &LoadConfig,
    api: &Api<'_>,
    p: &Prepared,
) -> Result<(JobReport, model::Job), LoadError> {
    run_job_from(config, api, p, 0).await
}

/// [`run_job`] starting at attempt suffix `first_attempt` (a merge's staging load skips the
/// ids whose jobs loaded into an earlier, since dropped, staging table).
pub(super) async fn run_job_from(
    config: &LoadConfig,
    api: &Api<'_>,
    p: &Prepared,
    first_attempt: u32,
) -> Result<(JobReport, model::Job), LoadError> {
    let started = Instant::now();
    let table = p.item.destination.to_string();
    let project = job_project(config, &p.item.destination);
    let mut attempt = first_attempt;
    let mut submitted = 0u32;
    loop {
        if attempt >= MAX_SUFFIX_PROBES {
            return Err(LoadError::AttemptsExhausted {
                table,
                base_id: p.base_id.clone(),
                probes: MAX_SUFFIX_PROBES,
            });
        }
        let id = job_id::attempt_id(&p.base_id, attempt);
        let body = spec::to_job(
            &p.spec,
            &p.item,
            project,
            &id,
            config.location.as_deref(),
            &config.labels,
        );
        let inserted = api
            .call(format!("jobs.insert {project}:{id}"), || {
                api.client.insert_job(project, body.clone())
            })
            .await;
        let (job, ours) = match inserted {
            Ok(job) => {
                submitted += 1;
                tracing::info!(table = %table, job_id = %id, files = p.item.objects.len(), "submitted load job {id} into {table}");
                (job, true)
            }
            // The id exists: an earlier attempt of this task (or our own insert whose
            // response was lost) submitted it. Follow that job instead of loading again.
            Err(RetryError::Exhausted { source, .. }) if source.is_conflict() => {
                // jobs.get needs the job's location outside the US/EU multi-regions; without
                // --location, BigQuery's 409 message names it (`Job proj:europe-west1.id`).
                let location = config.location.clone().or_else(|| {
                    source
                        .bq_error()
                        .and_then(|e| location_from_conflict(&e.message, &id))
                });
                let job = api
                    .call(format!("jobs.get {project}:{id}"), || {
                        api.client.get_job(project, &id, location.as_deref())
                    })
                    .await
                    .map_err(|e| failure(e, || format!("table {table}: job {id}")))?;
                check_same_load(&job, &p.item, &id)?;
                let state = job_status(&job).0.to_string();
                tracing::info!(table = %table, job_id = %id, state = %state, "job {id} already exists ({state}); following it");
                (job, false)
            }
            Err(e) => {
                return Err(failure(e, || {
                    format!("table {table}: submitting load job {id}")
                }));
            }
        };
        let job = Box::pin(follow(config, api, job, project, &id)).await?;
        let (_, error, errors) = job_status(&job);
        let Some(error) = error else {
            let outcome = if ours {
                Outcome::Loaded
            } else {
                Outcome::AlreadyLoaded
            };
            let report = job_report(&job, p, outcome, attempt, started.elapsed(), project, &id);
            warn_bad_records(&report, errors);
            log_job(&report);
            return Ok((report, job));
        };
        let error = bq_error(error);
        let class = error.class();
        let job_failure = LoadError::JobFailed(Box::new(JobFailure {
            table: table.clone(),
            job_id: display_job_id(&job, project, &id),
            error: error.clone(),
            errors: errors
                .iter()
                .take(QUOTED_ERRORS + 1)
                .map(bq_error)
                .collect(),
            class,
        }));
        // A failed load job wrote nothing, so a new job under the next suffix cannot
        // duplicate data. Resubmit when the failure is transient (bounded by
        // max_job_attempts), or when it belongs to an earlier run: what failed then (a
        // missing dataset, a permission, a schema since fixed) may be fixed now, and an id
        // that failed once must not block the load forever.
        let retry = if !ours {
            true
        } else {
            class == ErrorClass::Transient && submitted < config.max_job_attempts
        };
        if !retry {
            return Err(job_failure);
        }
        tracing::warn!(
            table = %table,
            job_id = %id,
            reason = %error.reason,
            "{job_failure}; submitting it again as {}",
            job_id::attempt_id(&p.base_id, attempt + 1)
        );
        attempt += 1;
    }
}

/// Polls `jobs.get` until the job is DONE, backing off from `poll.initial` to `poll.max`.
/// On cancellation the job is left running: a retried task finds it by id and follows it.
pub(super) async fn follow(
    config: &LoadConfig,
    api: &Api<'_>,
    mut job: model::Job,
    project: &str,
    id: &str,
) -> Result<model::Job, LoadError> {
    let location = job
        .job_reference
        .as_ref()
        .and_then(|r| r.location.clone())
        .or_else(|| config.location.clone());
    let mut delay = config.poll.initial;
    while job_status(&job).0 != "DONE" {
        tokio::select! {
            biased;
            _ = api.cancel().cancelled() => return Err(LoadError::Cancelled),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(config.poll.max);
        job = api
            .call(format!("jobs.get {project}:{id}"), || {
                api.client.get_job(project, id, location.as_deref())
            })
            .await
            .map_err(|e| failure(e, || format!("following job {project}:{id}")))?;
        tracing::debug!(job_id = %id, state = %job_status(&job).0, "polled");
    }
    Ok(job)
}

pub(super) fn job_status(
    job: &model::Job,
) -> (&str, Option<&model::ErrorProto>, &[model::ErrorProto]) {
    match &job.status {
        Some(s) => (s.state.as_str(), s.error_result.as_ref(), &s.errors),
        None => ("", None, &[]),
    }
}

pub(super) fn bq_error(e: &model::ErrorProto) -> BqError {
    BqError::new(&e.reason, &e.message, Some(&e.location))
}

/// A job found under our id must be the same load: the id hashes destination, options and
/// objects, so a mismatch means something else chose this id.
fn check_same_load(job: &model::Job, item: &WorkItem, id: &str) -> Result<(), LoadError> {
    let load = job.configuration.as_ref().and_then(|c| c.load.as_ref());
    let Some(load) = load else {
        return Err(LoadError::NotALoadJob {
            job_id: id.to_string(),
        });
    };
    let destination_matches = load.destination_table.as_ref().is_some_and(|t| {
        t.project_id == item.destination.project
            && t.dataset_id == item.destination.dataset
            && t.table_id == item.destination.table_id()
    });
    let ours: BTreeSet<String> = item.objects.iter().map(SourceObject::url).collect();
    let theirs: BTreeSet<String> = load.source_uris.iter().cloned().collect();
    if !destination_matches || ours != theirs {
        return Err(LoadError::ForeignJob {
            job_id: id.to_string(),
            table: item.destination.to_string(),
        });
    }
    Ok(())
}

/// `europe-west1` from `Already Exists: Job proj:europe-west1.sluice_load_x`.
fn location_from_conflict(message: &str, id: &str) -> Option<String> {
    let end = message.find(&format!(".{id}"))?;
    let before = &message[..end];
    let start = before.rfind(':')? + 1;
    let location = &before[start..];
    (!location.is_empty()
        && location
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    .then(|| location.to_string())
}

pub(super) fn display_job_id(job: &model::Job, project: &str, id: &str) -> String {
    let location = job
        .job_reference
        .as_ref()
        .and_then(|r| r.location.clone())
        .filter(|l| !l.is_empty());
    match location {
        Some(l) => format!("{project}:{l}.{id}"),
        None => format!("{project}:{id}"),
    }
}

fn job_report(
    job: &model::Job,
    p: &Prepared,
    outcome: Outcome,
    attempt: u32,
    wall: Duration,
    project: &str,
    id: &str,
) -> JobReport {
    let stats = job.statistics.as_ref();
    let load = stats.and_then(|s| s.load.as_ref());
    let duration = match stats {
        Some(s) if s.end_time > 0 && s.start_time > 0 && s.end_time >= s.start_time => {
            Duration::from_millis((s.end_time - s.start_time) as u64)
        }
        _ => wall,
    };
    JobReport {
        table: p.item.destination.to_string(),
        job_id: display_job_id(job, project, id),
        outcome,
        files: p.item.objects.len(),
        listed_bytes: p.item.total_bytes(),
        file_rows: p.file_rows,
        rows: load.and_then(|l| l.output_rows),
        input_bytes: load.and_then(|l| l.input_file_bytes),
        bad_records: load.and_then(|l| l.bad_records),
        duration,
        attempt,
    }
}

fn warn_bad_records(report: &JobReport, errors: &[model::ErrorProto]) {
    let skipped = report.bad_records.unwrap_or(0);
    if skipped > 0 || !errors.is_empty() {
        let quoted: Vec<String> = errors
            .iter()
            .take(QUOTED_ERRORS)
            .map(|e| bq_error(e).to_string())
            .collect();
        tracing::warn!(
            table = %report.table,
            job_id = %report.job_id,
            bad_records = skipped,
            "{} skipped {skipped} bad record(s) (within --max-bad-records): {}",
            report.table,
            quoted.join("; ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_messages_name_the_location() {
        assert_eq!(
            location_from_conflict(
                "Already Exists: Job proj:europe-west1.sluice_load_x",
                "sluice_load_x"
            ),
            Some("europe-west1".to_string())
        );
        assert_eq!(
            location_from_conflict("Already Exists: Job example.com:proj:US.j", "j"),
            Some("US".to_string())
        );
        assert_eq!(
            location_from_conflict("Already Exists: Job proj.j2", "j"),
            None
        );
        assert_eq!(location_from_conflict("duplicate", "j"), None);
    }
}
