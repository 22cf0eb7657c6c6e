//! What can go wrong before or around dbt (dbt's own failures are exit codes, not errors).

use std::path::PathBuf;

use sluice_runtime::{ExitCode, ExitStatus};

#[derive(Debug, thiserror::Error)]
pub enum DbtError {
    /// The project directory or one of its files is missing or malformed.
    #[error("{}: {reason}", path.display())]
    Project { path: PathBuf, reason: String },

    /// A setting that cannot work (e.g. `--select` in the dbt args together with `--shard-by`).
    #[error("{0}")]
    Usage(String),

    /// The dbt executable could not be started.
    #[error("cannot start dbt ({program}): {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },

    /// A local file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Waiting for or signalling the dbt process failed.
    #[error("supervising dbt (pid {pid}): {source}")]
    Supervise {
        pid: u32,
        #[source]
        source: std::io::Error,
    },

    /// The artifacts destination cannot be opened (bad URL, bad emulator host).
    #[error("artifacts destination {url}: {source}")]
    ArtifactsDestination {
        url: String,
        #[source]
        source: sluice_storage::StorageError,
    },
}

/// Configuration problems (exit 2) versus a failed run (exit 1).
impl ExitStatus for DbtError {
    fn exit_code(&self) -> ExitCode {
        match self {
            DbtError::Project { .. } | DbtError::Usage(_) => ExitCode::Usage,
            // A dbt that is not there or not executable is a wrong `--dbt-bin`.
            DbtError::Spawn { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                ExitCode::Usage
            }
            // A malformed URL or a missing bucket is the user's to fix; a failing store is not.
            DbtError::ArtifactsDestination { source, .. } => source.exit_code(),
            DbtError::Spawn { .. } | DbtError::Io { .. } | DbtError::Supervise { .. } => {
                ExitCode::TaskFailed
            }
        }
    }
}

impl DbtError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        DbtError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_failed() {
        let e = DbtError::Project {
            path: "/p/dbt_project.yml".into(),
            reason: "no `profile:` key".into(),
        };
        assert_eq!(e.to_string(), "/p/dbt_project.yml: no `profile:` key");
        assert_eq!(e.exit_code(), ExitCode::Usage);
        let e = DbtError::Spawn {
            program: "/nope/dbt".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(e.to_string().contains("/nope/dbt"), "{e}");
        assert_eq!(e.exit_code(), ExitCode::Usage);
        let e = DbtError::io(
            "write",
            "/t/profiles.yml",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert!(
            e.to_string().starts_with("cannot write /t/profiles.yml: "),
            "{e}"
        );
        assert_eq!(e.exit_code(), ExitCode::TaskFailed);
    }

    #[test]
    fn artifacts_destination_delegates_to_storage() {
        let e = DbtError::ArtifactsDestination {
            url: "gs://".into(),
            source: sluice_storage::StorageError::InvalidLocation {
                url: "gs://".into(),
                reason: "no bucket".into(),
            },
        };
        assert_eq!(e.exit_code(), ExitCode::Usage);
        let e = DbtError::ArtifactsDestination {
            url: "gs://b".into(),
            source: sluice_storage::StorageError::NotFound {
                url: "gs://b".into(),
            },
        };
        assert_eq!(e.exit_code(), ExitCode::TaskFailed);
        let e = DbtError::Spawn {
            program: "dbt".into(),
            source: std::io::Error::from(std::io::ErrorKind::OutOfMemory),
        };
        assert_eq!(e.exit_code(), ExitCode::TaskFailed);
    }
}
