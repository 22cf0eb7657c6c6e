//! Stage 5, report: what the task did, as a [`LoadReport`] and as log lines. A leaf module:
//! the stages hand it their results; it calls none of them.

use std::time::Duration;

use sluice_runtime::TaskContext;

use sluice_runtime::{ExitCode, ExitStatus};

use crate::completeness::{Skipped, SkippedTable};
use crate::config::OnIncomplete;
use crate::errors::LoadError;

/// How a work item ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A job submitted by this run loaded the objects.
    Loaded,
    /// A job with this id had already loaded them (an earlier attempt of this task).
    AlreadyLoaded,
    /// Dry run: the job that would be submitted.
    Planned,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Loaded => "loaded",
            Outcome::AlreadyLoaded => "already_loaded",
            Outcome::Planned => "planned",
        }
    }
}

/// What one load job did.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    /// `project.dataset.table[$decorator]`.
    pub table: String,
    /// `project:location.job_id` (the form `bq show -j` and the console take).
    pub job_id: String,
    pub outcome: Outcome,
    pub files: usize,
    /// Bytes of the source objects as listed.
    pub listed_bytes: u64,
    /// Rows in the Parquet footers (Parquet only).
    pub file_rows: Option<u64>,
    /// BigQuery's `statistics.load.outputRows`.
    pub rows: Option<i64>,
    /// BigQuery's `statistics.load.inputFileBytes`.
    pub input_bytes: Option<i64>,
    /// BigQuery's `statistics.load.badRecords` (CSV/JSON rows skipped under `maxBadRecords`).
    pub bad_records: Option<i64>,
    /// BigQuery's end - start time, or the time this run spent on the job.
    pub duration: Duration,
    /// The `_a<N>` suffix the job ran under (0: none).
    pub attempt: u32,
}

/// What one task did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Objects found by every task's shared listing.
    pub objects_total: usize,
    /// Work items (destinations) across all tasks.
    pub items_total: usize,
    /// Jobs of this task, in destination order.
    pub jobs: Vec<JobReport>,
    /// `--manifests`: tables of this task's share not loaded because their extract is
    /// incomplete (under `--on-incomplete skip`; under `fail` they are the task's error).
    pub skipped: Vec<SkippedTable>,
}

impl LoadReport {
    /// The destinations (`project.dataset.table[$decorator]`) whose data is in BigQuery after
    /// this task: loaded now or by an earlier attempt. A dry run loads nothing. What may advance
    /// per-table state (a skipped or failed table is never here).
    pub fn loaded_tables(&self) -> std::collections::BTreeSet<&str> {
        self.jobs
            .iter()
            .filter(|j| j.outcome != Outcome::Planned)
            .map(|j| j.table.as_str())
            .collect()
    }
}

/// An empty input under `--allow-empty`.
pub(crate) fn log_nothing_to_do(input: &str) {
    tracing::info!("no objects to load in {input}; nothing to do (--allow-empty)");
}

/// `--manifests` of an extract whose every item was unchanged since the last pull.
pub(crate) fn log_nothing_new(input: &str, items: usize) {
    tracing::info!(
        unchanged_items = items,
        "nothing new to load in {input}: {} since the last pull",
        if items == 0 {
            "the extract found no new rows".to_string()
        } else {
            format!("all {items} item(s) of the extract were unchanged")
        }
    );
}

/// The split: how much there is and how much of it is this task's.
pub(crate) fn log_share(
    objects_total: usize,
    items_total: usize,
    share: usize,
    task: &TaskContext,
) {
    tracing::info!(
        objects = objects_total,
        items = items_total,
        share,
        task = %task,
        "{objects_total} object(s) for {items_total} destination(s); this task loads {share}"
    );
}

/// The task's report from every item's result: the jobs in destination order, or the
/// failure(s). A shutdown with nothing else failed is [`LoadError::Cancelled`]; a single item
/// that failed is its own error; several are [`LoadError::Failed`].
pub(crate) fn finish(
    objects_total: usize,
    items_total: usize,
    results: Vec<Result<JobReport, LoadError>>,
) -> Result<LoadReport, LoadError> {
    let total = results.len();
    let mut jobs = Vec::with_capacity(total);
    let mut failures = Vec::new();
    let mut cancelled = false;
    for result in results {
        match result {
            Ok(job) => jobs.push(job),
            Err(LoadError::Cancelled) => cancelled = true,
            Err(e) => failures.push(e),
        }
    }
    jobs.sort_by(|a, b| a.table.cmp(&b.table));
    if cancelled && failures.is_empty() {
        return Err(LoadError::Cancelled);
    }
    match failures.len() {
        0 => Ok(LoadReport {
            objects_total,
            items_total,
            jobs,
            skipped: Vec::new(),
        }),
        1 if total == 1 => Err(failures.remove(0)),
        _ => Err(LoadError::Failed { failures, total }),
    }
}

/// Adds this task's skipped tables to its result. Under `--on-incomplete fail` any skipped
/// table makes the task fail with [`LoadError::IncompleteTables`] (after the complete tables
/// were loaded); under `skip` each is a warning. A shutdown or a usage error stays what it is.
pub(crate) fn conclude(
    result: Result<LoadReport, LoadError>,
    skipped: Skipped,
    on_incomplete: OnIncomplete,
) -> Result<LoadReport, LoadError> {
    if skipped.tables.is_empty() {
        return result;
    }
    match (on_incomplete, result) {
        (OnIncomplete::Skip, result) => {
            log_skipped(&skipped);
            result.map(|report| LoadReport {
                skipped: skipped.tables,
                ..report
            })
        }
        (OnIncomplete::Fail, Ok(report)) => Err(LoadError::IncompleteTables {
            loaded: report.loaded_tables().len(),
            skipped: skipped.tables,
            nothing_loadable: skipped.nothing_loadable,
            also: None,
        }),
        (OnIncomplete::Fail, Err(e))
            if matches!(e, LoadError::Cancelled) || e.exit_code() == ExitCode::Usage =>
        {
            log_skipped(&skipped);
            Err(e)
        }
        (OnIncomplete::Fail, Err(e)) => Err(LoadError::IncompleteTables {
            loaded: 0,
            skipped: skipped.tables,
            nothing_loadable: skipped.nothing_loadable,
            also: Some(Box::new(e)),
        }),
    }
}

/// One warning per skipped table (the error carries them under `--on-incomplete fail`).
fn log_skipped(skipped: &Skipped) {
    if skipped.nothing_loadable {
        tracing::warn!(
            skipped = skipped.tables.len(),
            "nothing to load: every table of this extract execution is incomplete"
        );
    }
    for table in &skipped.tables {
        tracing::warn!(
            table = %table.table,
            outcome = "skipped",
            reasons = ?table.reasons,
            "{}: not loaded, its extract is incomplete: {}",
            table.table,
            table.reasons.join("; ")
        );
    }
}

/// The per-job report line.
pub(crate) fn log_job(job: &JobReport) {
    let rows = job.rows.map_or("?".to_string(), |r| r.to_string());
    let bytes = job.input_bytes.unwrap_or(job.listed_bytes as i64);
    tracing::info!(
        table = %job.table,
        job_id = %job.job_id,
        outcome = job.outcome.as_str(),
        rows = job.rows,
        file_rows = job.file_rows,
        bytes,
        bad_records = job.bad_records.unwrap_or(0),
        files = job.files,
        duration_ms = job.duration.as_millis() as u64,
        attempt = job.attempt,
        "{}: {} rows, {} bytes from {} file(s), {} bad record(s), {} ms, job {}",
        job.table,
        rows,
        bytes,
        job.files,
        job.bad_records.unwrap_or(0),
        job.duration.as_millis(),
        job.job_id,
    );
    if let (Some(rows), Some(file_rows)) = (job.rows, job.file_rows)
        && job.outcome == Outcome::Loaded
        && rows >= 0
        && rows as u64 != file_rows
    {
        tracing::warn!(
            table = %job.table,
            job_id = %job.job_id,
            "{}: BigQuery reports {rows} output rows but the files' footers hold {file_rows}",
            job.table
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(table: &str) -> JobReport {
        JobReport {
            table: table.into(),
            job_id: format!("p:US.{table}"),
            outcome: Outcome::Loaded,
            files: 1,
            listed_bytes: 1,
            file_rows: None,
            rows: None,
            input_bytes: None,
            bad_records: None,
            duration: Duration::ZERO,
            attempt: 0,
        }
    }

    #[test]
    fn jobs_in_destination_order_and_failures_by_count() {
        let report = finish(5, 2, vec![Ok(job("p.d.b")), Ok(job("p.d.a"))]).unwrap();
        let tables: Vec<&str> = report.jobs.iter().map(|j| j.table.as_str()).collect();
        assert_eq!(tables, ["p.d.a", "p.d.b"]);
        assert_eq!((report.objects_total, report.items_total), (5, 2));

        let gone = || LoadError::ObjectGone {
            url: "gs://b/x".into(),
        };
        let err = finish(1, 1, vec![Err(gone())]).unwrap_err();
        assert!(matches!(err, LoadError::ObjectGone { .. }), "{err}");
        let err = finish(2, 2, vec![Err(gone()), Ok(job("p.d.a"))]).unwrap_err();
        assert!(
            matches!(err, LoadError::Failed { total: 2, ref failures } if failures.len() == 1),
            "{err}"
        );
        let err = finish(2, 2, vec![Err(LoadError::Cancelled), Ok(job("p.d.a"))]).unwrap_err();
        assert!(matches!(err, LoadError::Cancelled), "{err}");
    }
}
