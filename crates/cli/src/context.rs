//! What every subcommand gets: the task contract, the shutdown token and store settings,
//! plus the mapping from failures to exit codes.

use sluice_dbt::DbtError;
use sluice_extract::ExtractError;
use sluice_load::LoadError;
use sluice_runtime::{CancellationToken, ExitCode, ExitStatus, Shutdown, TaskContext};
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

impl ExitStatus for UsageError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Usage
    }
}

/// Logs the failure with its whole cause chain and picks the exit code: a stop signal's code
/// when one stopped us, else what [`exit_code_of`] says.
pub fn classify_failure(err: &anyhow::Error, shutdown: &Shutdown) -> ExitCode {
    if let (Some(signal), Some(code)) = (shutdown.signal(), shutdown.exit_code()) {
        tracing::error!(error = format!("{err:#}"), "stopped by {}", signal.name());
        return code;
    }
    if let Some(setup) = setup_error(err) {
        // One line naming the fix; the wrappers around it would only repeat it.
        tracing::error!("{setup}");
        return setup.exit_code();
    }
    let code = exit_code_of(err);
    if code == ExitCode::Usage {
        tracing::error!("{err:#}");
    } else {
        tracing::error!("task failed: {err:#}");
    }
    code
}

/// The one rule: the first error in the chain that implements [`ExitStatus`] decides (each
/// library error delegates to the error it wraps where that one knows better); a chain with
/// none of them is a failed task.
pub fn exit_code_of(err: &anyhow::Error) -> ExitCode {
    err.chain()
        .find_map(exit_status)
        .unwrap_or(ExitCode::TaskFailed)
}

/// The exit code of one error in a chain, if its type is one of the library errors (anyhow
/// chains hold `dyn Error`, so the known types are downcast here, in one place).
fn exit_status(cause: &(dyn std::error::Error + 'static)) -> Option<ExitCode> {
    if let Some(e) = cause.downcast_ref::<UsageError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<StorageError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<ExtractError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<DbtError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<LoadError>() {
        return Some(e.exit_code());
    }
    None
}

/// A missing bucket or missing credentials ([`StorageError::Setup`]) anywhere in the chain,
/// also inside the library errors that wrap a storage error without exposing it as a source
/// (`#[error(transparent)]`), for a log line that names only the fix. The exit code does not
/// depend on it: [`exit_code_of`] gives the same answer through the wrappers' delegation.
fn setup_error(err: &anyhow::Error) -> Option<&StorageError> {
    err.chain().find_map(|cause| {
        let storage = if let Some(e) = cause.downcast_ref::<StorageError>() {
            e
        } else if let Some(ExtractError::Storage(e)) = cause.downcast_ref::<ExtractError>() {
            e
        } else if let Some(LoadError::Storage(e)) = cause.downcast_ref::<LoadError>() {
            e
        } else {
            return None;
        };
        storage.is_setup().then_some(storage)
    })
}

#[cfg(test)]
mod exit_tests {
    use super::*;

    fn setup() -> StorageError {
        StorageError::Setup {
            url: "gs://b".into(),
            problem: "bucket gs://b does not exist".into(),
        }
    }

    #[test]
    fn the_first_error_that_knows_decides() {
        let usage = anyhow::Error::new(UsageError("--x: bad".into())).context("extract");
        assert_eq!(exit_code_of(&usage), ExitCode::Usage);
        let config = anyhow::Error::new(ExtractError::Config("manifest m: bad".into()));
        assert_eq!(exit_code_of(&config), ExitCode::Usage);
        let wrapped = anyhow::Error::new(ExtractError::Storage(setup())).context("sluice extract");
        assert_eq!(exit_code_of(&wrapped), ExitCode::Usage);
        assert_eq!(
            setup_error(&wrapped).map(ToString::to_string),
            Some(setup().to_string())
        );
        let io = anyhow::Error::new(ExtractError::Storage(StorageError::NotFound {
            url: "gs://b/o".into(),
        }));
        assert_eq!(exit_code_of(&io), ExitCode::TaskFailed);
        let dbt = anyhow::Error::new(DbtError::Usage("--select with --shard-by".into()));
        assert_eq!(exit_code_of(&dbt), ExitCode::Usage);
        let load = anyhow::Error::new(LoadError::Storage(setup())).context("sluice load");
        assert_eq!(exit_code_of(&load), ExitCode::Usage);
        let plain = anyhow::anyhow!("something broke");
        assert_eq!(exit_code_of(&plain), ExitCode::TaskFailed);
    }

    #[test]
    fn a_stop_signal_wins() {
        let shutdown = Shutdown::new_unsignalled();
        shutdown.request(sluice_runtime::StopSignal::Terminate);
        let err = anyhow::Error::new(UsageError("late".into()));
        assert_eq!(classify_failure(&err, &shutdown), ExitCode::Terminated);
        let shutdown = Shutdown::new_unsignalled();
        assert_eq!(classify_failure(&err, &shutdown), ExitCode::Usage);
    }
}
