//! What every subcommand gets: the task contract, the shutdown token and store settings,
//! plus the mapping from failures to exit codes.

use sluice_runtime::{CancellationToken, ExitCode, Shutdown, TaskContext};
use sluice_storage::StoreConfig;

pub struct Context {
    pub task: TaskContext,
    pub shutdown: Shutdown,
}

impl Context {
    pub fn new(task: TaskContext, shutdown: Shutdown) -> Self {
        Self { task, shutdown }
    }

    pub fn cancel(&self) -> CancellationToken {
        self.shutdown.token()
    }

    /// Store settings from the environment (`STORAGE_EMULATOR_HOST`).
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            gcs_emulator_host: std::env::var("STORAGE_EMULATOR_HOST")
                .ok()
                .filter(|v| !v.is_empty()),
            cancel: self.cancel(),
        }
    }
}

/// A configuration or usage problem found after clap parsed the flags: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Logs the failure with its whole cause chain and picks the exit code.
pub fn classify_failure(err: &anyhow::Error, shutdown: &Shutdown) -> ExitCode {
    if let (Some(signal), Some(code)) = (shutdown.signal(), shutdown.exit_code()) {
        tracing::error!(error = format!("{err:#}"), "stopped by {}", signal.name());
        return code;
    }
    if err.downcast_ref::<UsageError>().is_some() {
        tracing::error!("{err:#}");
        return ExitCode::Usage;
    }
    tracing::error!("task failed: {err:#}");
    ExitCode::TaskFailed
}
