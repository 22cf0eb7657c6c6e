//! Load objects from Cloud Storage into BigQuery with idempotent load jobs.
//!
//! [`run`] is one Cloud Run task's share of a load, as a one-way pipeline (`run.rs`):
//! discover the objects (a glob or `extract`'s task manifests), plan one work item per
//! destination table or partition and take the task's share, prepare each item's job (schema
//! from the Parquet footers, deterministic job id, checks against the existing table), execute
//! the jobs (following those an earlier attempt already submitted), and report. With
//! `--manifests`, tables whose extract is incomplete are skipped, never loaded in part. See
//! `docs/load.md`.

#![warn(unreachable_pub)]

mod api;
mod bq_error;
mod client;
mod compat;
mod completeness;
mod config;
mod errors;
mod execute;
mod footer;
mod inputs;
mod job_id;
mod merge_sql;
mod plan;
mod prepare;
mod recorded;
mod report;
mod run;
mod schema;
mod spec;
mod state;
mod template;
mod verify;
mod widen;

pub use bq_error::{BqError, ErrorClass};
pub use client::{ApiError, ApiFailure, ClientConfig, Credentials};
pub use completeness::SkippedTable;
pub use config::{
    ConfigError, CsvOptions, Input, LoadConfig, OnIncomplete, PartitionType, Partitioning,
    PollSettings, SchemaSource, SchemaUpdate, SourceFormat, WriteMode,
};
pub use errors::{JobFailure, LoadError, ManifestOrigin, QueryFailure, TypeMismatch};
pub use footer::FooterError;
pub use report::{JobReport, LoadReport, Outcome};
pub use run::run;
pub use schema::{ColumnError, Field, Mode, parse_schema_file};
pub use template::TableTemplate;
