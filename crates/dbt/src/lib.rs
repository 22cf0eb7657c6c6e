//! Run dbt-bigquery under supervision: profiles, logs, signals, artifacts.
//!
//! [`run`] takes a typed [`DbtConfig`] (the binary builds it from flags and env; nothing here
//! reads the process environment), the task's place in its Cloud Run execution and the stop
//! token, and:
//!
//! 1. reads `dbt_project.yml` (profile name, packages) and writes a private `profiles.yml`
//!    unless the user brought one (`profiles`);
//! 2. points dbt's target and log paths at a fresh private directory and, for a read-only
//!    project that still needs packages, runs from a writable copy (`env`, `workdir`);
//! 3. runs `dbt deps` when packages are declared but not installed;
//! 4. with `--shard-by`, lists the selected models and keeps this task's share (`shard`);
//! 5. runs the command with JSON logs, re-emitting each dbt event as a Sluice log event
//!    (`log_events`), forwarding stop signals as SIGINT with a bounded wait (`supervise`);
//! 6. logs a summary from run_results.json (`summary`) and uploads the artifacts, also when
//!    dbt failed (`artifacts`).
//!
//! See `docs/dbt.md` for the behaviour as a user sees it.

#![warn(unreachable_pub)]

mod artifacts;
mod config;
mod env;
mod error;
mod log_events;
mod profiles;
mod project;
mod run;
mod shard;
mod summary;
mod supervise;
mod workdir;

pub use config::{
    ArtifactsConfig, Auth, BigQueryProfile, DbtConfig, DepsMode, Priority, ProfileSource, Secret,
};
pub use error::DbtError;
pub use project::PROJECT_FILE;
pub use run::{DbtOutcome, run};
pub use summary::RunSummary;
pub use supervise::{Finished, Termination};
