//! The task runtime every Sluice job stands on: who am I (the Cloud Run task contract), which
//! share of the work is mine (sharding), how I report (Cloud Logging JSON), when I stop
//! (cancellation), how I retry (backoff) and how I exit (exit codes).
//!
//! Library code never reads process env or argv itself; binaries build the typed values here
//! from env/flags and hand them down.

pub mod cancel;
pub mod contract;
pub mod error_text;
pub mod exit;
pub mod logging;
pub mod retry;
pub mod shard;

pub use cancel::Shutdown;
pub use contract::{ContractError, TaskContext};
pub use error_text::error_chain;
pub use exit::{ExitCode, ExitStatus};
pub use retry::{RetryDecision, RetryPolicy};
pub use shard::ShardStrategy;
pub use tokio_util::sync::CancellationToken;
