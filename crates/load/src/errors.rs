//! Why a load task (or one of its jobs) failed, and which exit code that is.

use std::fmt;

use sluice_runtime::{ExitCode, ExitStatus};

use crate::bq_error::{BqError, ErrorClass};
use crate::client::ApiError;
use crate::completeness::SkippedTable;
use crate::config::ConfigError;
use crate::footer::FooterError;
use crate::schema::ColumnError;

/// Why a load task (or one of its jobs) failed. Every variant names what it failed on; a
/// variant that wraps a typed error keeps it as its `source` (render the whole chain with
/// `sluice_runtime::error_chain`).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Listing, heading or reading an object.
    #[error(transparent)]
    Storage(#[from] sluice_storage::StorageError),
    #[error("no objects to load in {input} (pass --allow-empty if that can be normal)")]
    NoObjects { input: String },
    #[error("no task manifests (task-NNNNN.json) under {prefix}")]
    NoManifests { prefix: String },
    /// A manifest that is not one (wrong kind or version, bad shape).
    #[error(transparent)]
    Manifest(#[from] sluice_manifest::ManifestError),
    /// Manifests under one prefix from different extract runs (a stale one left behind).
    #[error(
        "{prefix}: manifests from different extract runs: {first}, {other}; remove the stale ones"
    )]
    MixedManifests {
        prefix: String,
        first: Box<ManifestOrigin>,
        other: Box<ManifestOrigin>,
    },
    /// `--manifests` with `--on-incomplete fail`: tables whose extract is incomplete (a failed
    /// item, a task manifest never written) were not loaded; the complete ones were.
    #[error("{}", describe_incomplete(.skipped, *.loaded, *.nothing_loadable, .also.as_deref()))]
    IncompleteTables {
        /// This task's skipped tables, each with its reasons.
        skipped: Vec<SkippedTable>,
        /// Jobs of this task that loaded (or had loaded) their table.
        loaded: usize,
        /// No table of the whole input was loadable.
        nothing_loadable: bool,
        /// A load job of a complete table that failed as well.
        also: Option<Box<LoadError>>,
    },
    /// The incremental state file (`docs/state.md`) could not be read or advanced.
    #[error("state {url}: {reason}")]
    State { url: String, reason: String },
    #[error("{url} is listed in manifest {manifest} but does not exist")]
    MissingObject { url: String, manifest: String },
    #[error(
        "{url} changed since manifest {manifest} listed it (generation {expected} there, {actual} now)"
    )]
    ObjectChanged {
        url: String,
        manifest: String,
        expected: i64,
        actual: i64,
    },
    /// An object that vanished between listing and reading its footer.
    #[error("{url} does not exist")]
    ObjectGone { url: String },
    #[error(
        "{url} is listed twice with different generations ({first_generation:?} in {first_listed_in}, \
         {generation:?} in {listed_in}); one of the listings is stale"
    )]
    ConflictingListings {
        url: String,
        first_generation: Option<i64>,
        first_listed_in: String,
        generation: Option<i64>,
        listed_in: String,
    },
    /// Not a readable Parquet file.
    #[error("{url}: cannot read the Parquet footer")]
    Footer {
        url: String,
        #[source]
        source: FooterError,
    },
    /// A column whose type cannot be loaded.
    #[error("{url}")]
    Column {
        url: String,
        #[source]
        source: ColumnError,
    },
    #[error(
        "table {table}: the files of one load job must have the same schema; {file} differs from {first} at column `{column}`: {detail}"
    )]
    SchemaMismatch {
        table: String,
        first: String,
        file: String,
        column: String,
        detail: String,
    },
    /// The files do not fit the existing table (checked before any job is created).
    #[error("{0}")]
    TypeMismatch(Box<TypeMismatch>),
    #[error("{object}: cannot fill table template {template}: {reason}")]
    Template {
        object: String,
        template: String,
        reason: String,
    },
    #[error(
        "table {table}: --hive-partitioning needs one layout per job, but {first} and {other} differ \
         in their `key=value` directories"
    )]
    HiveLayout {
        table: String,
        first: String,
        other: String,
    },
    /// The destination's layout or columns do not fit the flags.
    #[error("table {table}: {reason}")]
    Table { table: String, reason: String },
    /// Without `--create-dataset`, a destination dataset that does not exist: a setup problem.
    #[error(
        "dataset {dataset} does not exist; create it with `bq mk --dataset \
         --location={location} {dataset}`, or pass --create-dataset --location {location}"
    )]
    MissingDataset { dataset: String, location: String },
    #[error("dataset {dataset} is in location {actual}, not --location {wanted}")]
    DatasetLocation {
        dataset: String,
        actual: String,
        wanted: String,
    },
    /// `insert` answered 409 and the `get` after it found nothing.
    #[error("{what}: insert said it exists, get says it does not")]
    Vanished { what: String },
    /// An API call that failed for good (after its retries).
    #[error("{context}")]
    Api {
        context: String,
        #[source]
        source: Box<ApiError>,
    },
    /// The load job ran and BigQuery reports it failed.
    #[error("{0}")]
    JobFailed(Box<JobFailure>),
    #[error(
        "table {table}: {probes} earlier jobs for this load all failed ({base_id}_a1.._a{}); see them \
         with `bq ls -j`, fix the cause, or pass --job-id-salt",
        .probes - 1
    )]
    AttemptsExhausted {
        table: String,
        base_id: String,
        probes: u32,
    },
    #[error(
        "job {job_id} exists but is not a load job; job ids starting with {} are reserved for sluice load",
        crate::job_id::PREFIX
    )]
    NotALoadJob { job_id: String },
    #[error(
        "job {job_id} exists but loads other objects or into another table than {table}; refusing to count it"
    )]
    ForeignJob { job_id: String, table: String },
    /// `--write merge`: a key or order column the data does not have (or cannot compare).
    #[error("table {table}: {reason}")]
    MergeColumn { table: String, reason: String },
    /// `--write merge` without an order column: one key carries different rows in the batch.
    #[error(
        "table {table}: rows with equal keys ({keys}) differ within the batch, e.g. key {key}; \
         without an order column Sluice cannot tell which is the latest: pass --order-by COL, or \
         fix the source. Nothing was merged"
    )]
    MergeDuplicateKey {
        table: String,
        keys: String,
        key: String,
    },
    /// `--write merge`: staged rows with a NULL key column (a MERGE never matches NULL).
    #[error(
        "table {table}: {count} staged row(s) have a NULL in the key column(s) {keys}; a MERGE \
         never matches NULL, so each run would insert them again. Nothing was merged"
    )]
    MergeNullKey {
        table: String,
        keys: String,
        count: i64,
    },
    /// A query job (the MERGE, a schema change, a lineage row) that ran and failed.
    #[error("{0}")]
    QueryFailed(Box<QueryFailure>),
    #[error(
        "stopped by a shutdown signal; jobs already submitted keep running in BigQuery and a retry follows them by id"
    )]
    Cancelled,
    /// Several items failed; each entry names its table.
    #[error("{} of {total} load job(s) failed:\n  {}", .failures.len(), .failures.iter().map(|f| sluice_runtime::error_chain(f)).collect::<Vec<_>>().join("\n  "))]
    Failed {
        failures: Vec<LoadError>,
        total: usize,
    },
}

/// The message of [`LoadError::IncompleteTables`]: what happened, each skipped table with its
/// reasons, and what to do.
fn describe_incomplete(
    skipped: &[SkippedTable],
    loaded: usize,
    nothing_loadable: bool,
    also: Option<&LoadError>,
) -> String {
    let mut out = if nothing_loadable {
        format!(
            "nothing was loadable: every table of this extract execution is incomplete; {} \
             table(s) skipped:",
            skipped.len()
        )
    } else if also.is_some() {
        format!(
            "{} table(s) skipped because their extract is incomplete:",
            skipped.len()
        )
    } else {
        format!(
            "{} table(s) skipped because their extract is incomplete ({loaded} job(s) of this \
             task loaded the complete ones):",
            skipped.len()
        )
    };
    for table in skipped {
        out.push_str(&format!(
            "\n  {}: {}",
            table.table,
            table.reasons.join("; ")
        ));
    }
    out.push_str(
        "\nrerun extract for them (a new execution, or a retry of the failed task), or pass \
         --on-incomplete skip to load the complete tables without failing",
    );
    if let Some(e) = also {
        out.push_str(&format!(
            "\nand a load job failed: {}",
            sluice_runtime::error_chain(e)
        ));
    }
    out
}

/// Which task of which extract execution wrote a manifest, for [`LoadError::MixedManifests`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestOrigin {
    pub url: String,
    pub execution: Option<String>,
    pub task_index: u32,
    pub task_count: u32,
}

impl fmt::Display for ManifestOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is task {} of {} (execution {:?})",
            self.url, self.task_index, self.task_count, self.execution
        )
    }
}

impl ExitStatus for LoadError {
    /// Configuration problems (flags, a missing dataset without `--create-dataset`, storage
    /// setup) are usage errors; everything else failed the task, which Cloud Run retries.
    fn exit_code(&self) -> ExitCode {
        match self {
            LoadError::Config(e) => e.exit_code(),
            LoadError::Storage(e) => e.exit_code(),
            LoadError::MissingDataset { .. } | LoadError::MergeColumn { .. } => ExitCode::Usage,
            _ => ExitCode::TaskFailed,
        }
    }
}

/// A job's files whose schema does not fit the existing table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "table {table}: column `{column}` is {file_type} in {file} but {table_type} in the table; {hint}. Nothing was loaded"
)]
pub struct TypeMismatch {
    pub table: String,
    /// The first file of the job (all of its files share one schema), with a count of the others.
    pub file: String,
    pub column: String,
    pub file_type: String,
    pub table_type: String,
    pub hint: String,
}

/// A query job that ran and failed, as BigQuery reported it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} job {job_id} for table {table} failed: {error}{}", describe_errors(.error, .errors))]
pub struct QueryFailure {
    /// `merge`, `lineage`, `check`.
    pub what: &'static str,
    pub table: String,
    pub job_id: String,
    pub error: BqError,
    pub errors: Vec<BqError>,
}

/// A load job that ran and failed, as BigQuery reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    pub table: String,
    /// `project:location.job_id`, the form the console and `bq show -j` take.
    pub job_id: String,
    /// `status.errorResult`.
    pub error: BqError,
    /// `status.errors`: per-file / per-row details (first few).
    pub errors: Vec<BqError>,
    pub class: ErrorClass,
}

impl fmt::Display for JobFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe_job_failure(
            &self.table,
            &self.job_id,
            &self.error,
            &self.errors,
            self.class,
        ))
    }
}

/// `; errors: ...` for the entries of `errors` other than `error`, or nothing.
fn describe_errors(error: &BqError, errors: &[BqError]) -> String {
    let details: Vec<String> = errors
        .iter()
        .filter(|e| *e != error)
        .take(QUOTED_ERRORS)
        .map(|e| e.to_string())
        .collect();
    if details.is_empty() {
        String::new()
    } else {
        format!("; errors: {}", details.join("; "))
    }
}

/// How many `status.errors` entries a failure message quotes.
pub(crate) const QUOTED_ERRORS: usize = 5;

fn describe_job_failure(
    table: &str,
    job_id: &str,
    error: &BqError,
    errors: &[BqError],
    class: ErrorClass,
) -> String {
    let kind = match class {
        ErrorClass::Transient => "transient",
        ErrorClass::Terminal => "terminal",
    };
    let mut out = format!("load job {job_id} into {table} failed ({kind}): {error}");
    let details: Vec<String> = errors
        .iter()
        .filter(|e| *e != error)
        .take(QUOTED_ERRORS)
        .map(|e| e.to_string())
        .collect();
    if !details.is_empty() {
        out.push_str("; errors: ");
        out.push_str(&details.join("; "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_failure_names_table_job_reason_message_location() {
        let top = BqError::new("invalid", "Too many errors", Some("gs://b/a.csv"));
        let row = BqError::new("invalid", "Bad int", Some("gs://b/a.csv:line 3"));
        let e = LoadError::JobFailed(Box::new(JobFailure {
            table: "p.ds.t".into(),
            job_id: "p:US.sluice_load_x".into(),
            error: top.clone(),
            errors: vec![top, row],
            class: ErrorClass::Terminal,
        }));
        assert_eq!(
            e.to_string(),
            "load job p:US.sluice_load_x into p.ds.t failed (terminal): invalid: Too many errors \
             (location: gs://b/a.csv); errors: invalid: Bad int (location: gs://b/a.csv:line 3)"
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(
            LoadError::Config(ConfigError("bad flag".into())).exit_code(),
            ExitCode::Usage
        );
        assert_eq!(
            LoadError::MissingDataset {
                dataset: "p:d".into(),
                location: "US".into()
            }
            .exit_code(),
            ExitCode::Usage
        );
        let setup = sluice_storage::StorageError::Setup {
            url: "gs://b".into(),
            problem: "the bucket does not exist".into(),
        };
        assert!(setup.is_setup());
        assert_eq!(LoadError::Storage(setup).exit_code(), ExitCode::Usage);
        assert_eq!(
            LoadError::NoObjects {
                input: "gs://b/x".into()
            }
            .exit_code(),
            ExitCode::TaskFailed
        );
        assert_eq!(LoadError::Cancelled.exit_code(), ExitCode::TaskFailed);
    }

    #[test]
    fn failed_lists_every_failure_with_its_cause() {
        let api = LoadError::Api {
            context: "table p.d.t".into(),
            source: Box::new(ApiError {
                call: "tables.get p.d.t".into(),
                failure: crate::client::ApiFailure::Other("boom".into()),
            }),
        };
        let e = LoadError::Failed {
            failures: vec![api, LoadError::Cancelled],
            total: 3,
        };
        let text = e.to_string();
        assert!(
            text.starts_with(
                "2 of 3 load job(s) failed:\n  table p.d.t: tables.get p.d.t: boom\n  stopped"
            ),
            "{text}"
        );
    }
}
