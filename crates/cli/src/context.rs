//! What every subcommand gets: the task contract, the shutdown token and store settings,
//! plus the mapping from failures to exit codes.

use sluice_runtime::{CancellationToken, ExitCode, Shutdown, TaskContext};
use std::path::PathBuf;

use sluice_storage::{CredentialSetup, StorageError, StoreConfig};

pub struct Context {
    pub task: TaskContext,
    pub shutdown: Shutdown,
    /// `--upload-chunk-mib` / `SLUICE_UPLOAD_CHUNK_MIB`; `None`: the store's default.
    pub upload_chunk_mib: Option<usize>,
}

/// Largest `--upload-chunk-mib`: each upload holds two chunks, and Cloud Run's memory is finite.
pub const MAX_UPLOAD_CHUNK_MIB: usize = 1024;

/// `--upload-chunk-mib` / `SLUICE_UPLOAD_CHUNK_MIB`: a whole number of MiB, 1 to 1024.
pub fn parse_upload_chunk_mib(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_UPLOAD_CHUNK_MIB).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a whole number of MiB from 1 to {MAX_UPLOAD_CHUNK_MIB} \
             (--upload-chunk-mib or SLUICE_UPLOAD_CHUNK_MIB)"
        )),
    }
}

impl Context {
    pub fn new(task: TaskContext, shutdown: Shutdown) -> Self {
        Self {
            task,
            shutdown,
            upload_chunk_mib: None,
        }
    }

    pub fn cancel(&self) -> CancellationToken {
        self.shutdown.token()
    }

    /// Store settings from the environment (`STORAGE_EMULATOR_HOST`) and the global flags.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            gcs_emulator_host: std::env::var("STORAGE_EMULATOR_HOST")
                .ok()
                .filter(|v| !v.is_empty()),
            cancel: self.cancel(),
            // 1 MiB is a multiple of GCS's 256 KiB chunk quantum.
            upload_chunk_size: self.upload_chunk_mib.map(|mib| mib * 1024 * 1024),
            // The task index: a retried task (same index) removes the temp files its killed
            // predecessor left, never those of the other tasks writing the same directory.
            temp_owner: Some(format!("task-{:05}", self.task.index)),
            credentials: self.credential_setup(),
        }
    }

    /// Where Application Default Credentials would come from here (the libraries read no env).
    pub fn credential_setup(&self) -> CredentialSetup {
        let adc_file = match std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
            Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
            // google-cloud-auth's well-known path on Linux and macOS.
            _ => std::env::var_os("HOME")
                .map(|home| {
                    PathBuf::from(home).join(".config/gcloud/application_default_credentials.json")
                })
                .filter(|path| path.exists()),
        };
        CredentialSetup {
            on_cloud_run: self.task.job.is_some(),
            adc_file,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_chunk_mib() {
        assert_eq!(parse_upload_chunk_mib("16"), Ok(16));
        assert_eq!(parse_upload_chunk_mib(" 1 "), Ok(1));
        assert_eq!(parse_upload_chunk_mib("1024"), Ok(1024));
        for bad in [
            "0",
            "-1",
            "1.5",
            "16MiB",
            "",
            "1025",
            "99999999999999999999999",
        ] {
            let err = parse_upload_chunk_mib(bad).unwrap_err();
            assert!(
                err.contains("whole number of MiB from 1 to 1024"),
                "{bad}: {err}"
            );
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
    if let Some(setup) = setup_error(err) {
        // One line naming the fix; the wrappers around it would only repeat it.
        tracing::error!("{setup}");
        return ExitCode::Usage;
    }
    if err.downcast_ref::<UsageError>().is_some() {
        tracing::error!("{err:#}");
        return ExitCode::Usage;
    }
    tracing::error!("task failed: {err:#}");
    ExitCode::TaskFailed
}

/// A missing bucket or missing credentials ([`StorageError::Setup`]) anywhere in the chain,
/// also inside the library errors that wrap a storage error without exposing it as a source.
pub fn setup_error(err: &anyhow::Error) -> Option<&StorageError> {
    err.chain().find_map(|cause| {
        let storage = if let Some(e) = cause.downcast_ref::<StorageError>() {
            e
        } else if let Some(sluice_extract::ExtractError::Storage(e)) =
            cause.downcast_ref::<sluice_extract::ExtractError>()
        {
            e
        } else if let Some(sluice_load::LoadError::Storage(e)) =
            cause.downcast_ref::<sluice_load::LoadError>()
        {
            e
        } else {
            return None;
        };
        storage.is_setup().then_some(storage)
    })
}
