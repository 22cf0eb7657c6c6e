//! `sluice-trigger`: deploys a pipeline's Cloud Run jobs from `jobs.toml`, runs them with
//! overrides and follows their executions to a per-task verdict — or runs the same tasks on
//! this machine as Cloud Run would.
//!
//! - `spec`: the `jobs.toml` format (docs/jobs-spec.md), validated.
//! - `render`: spec -> Admin API `Job`, and the managed-field comparison behind "unchanged".
//! - `api`: the Admin API v2 calls over the official `google-cloud-run-v2` clients, with
//!   retries on safe calls only.
//! - `run`: starting an execution exactly once (ambiguous `jobs.run` failures), waiting.
//! - `report`: the execution report, text and the stable JSON (docs/trigger.md).
//! - `local`: the local runner.
//! - `commands`: the commands as functions; `src/main.rs` only parses flags.

#![warn(unreachable_pub)]

mod api;
pub mod commands;
mod config;
mod duration;
mod legacy_env;
mod local;
mod local_docker;
mod render;
mod report;
mod run;
mod spec;

pub use api::{ApiOptions, CloudRun};
pub use local::{LogMode, Output, Stderr};
pub use render::JobTarget;
pub use run::{RunRequest, RunSettings, WaitSettings, start as start_execution};
pub use spec::check_env_name;

/// Env override `run` adds to each execution it starts, so that after an ambiguous failure
/// the execution it created can be told apart from anyone else's.
pub const RUN_MARKER_ENV: &str = "SLUICE_TRIGGER_RUN_ID";
