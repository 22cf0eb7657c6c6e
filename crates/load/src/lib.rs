//! Load objects from Cloud Storage into BigQuery with idempotent load jobs.
//!
//! [`run`] is one Cloud Run task's share of a load: it lists the input (a glob or `extract`'s
//! task manifests), groups objects into one work item per destination table or partition,
//! takes the task's share of the items, derives each item's schema from the Parquet footers,
//! and submits one load job per item under a deterministic job id, following jobs that an
//! earlier attempt already submitted. See `docs/load.md`.

pub mod client;
pub mod compat;
pub mod config;
pub mod errors;
pub mod footer;
pub mod inputs;
pub mod job_id;
pub mod plan;
pub mod run;
pub mod schema;
pub mod template;

pub use client::{ApiError, BigQuery, ClientConfig, Credentials};
pub use config::{
    ConfigError, CsvOptions, Input, LoadConfig, PartitionType, Partitioning, PollSettings,
    SchemaSource, SchemaUpdate, SourceFormat, WriteMode,
};
pub use errors::{BqError, ErrorClass, JobFailure, LoadError, TypeMismatch};
pub use run::{JobReport, LoadReport, Outcome, run};
pub use template::{TableRef, TableTemplate};
