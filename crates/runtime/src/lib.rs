//! The task runtime every Sluice job stands on: who am I (the Cloud Run task contract), which
//! share of the work is mine (sharding), how I report (Cloud Logging JSON), when I stop
//! (cancellation), how I retry (backoff) and how I exit (exit codes) — and the contracts every
//! crate shares so they cannot drift apart: durations, secrets and redaction, child processes,
//! emulator endpoints.
//!
//! Library code never reads process env or argv itself; binaries build the typed values here
//! from env/flags and hand them down.
//!
//! Modules whose items are used by path (`retry::classify_http_status`, `duration::parse`)
//! are public namespaces; the rest are private and re-exported here.

#![warn(unreachable_pub)]

mod cancel;
mod contract;
pub mod duration;
pub mod endpoint;
pub mod env_twins;
mod error_text;
mod exit;
pub mod logging;
pub mod redact;
pub mod retry;
mod secret;
pub mod shard;
pub mod supervise;

pub use cancel::{Shutdown, StopSignal};
pub use contract::{ContractError, TaskContext};
pub use error_text::error_chain;
pub use exit::{ExitCode, ExitStatus};
pub use retry::{RetryDecision, RetryPolicy};
pub use secret::Secret;
pub use shard::ShardStrategy;
pub use tokio_util::sync::CancellationToken;
