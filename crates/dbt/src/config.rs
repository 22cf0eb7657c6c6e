//! Typed configuration for one `sluice dbt` run. The binary fills it from flags and env; this
//! crate never reads the process environment.

use std::path::PathBuf;
use std::time::Duration;

use sluice_runtime::ShardStrategy;
use sluice_storage::StoreConfig;

/// Cloud Run sends SIGKILL about 10 s after SIGTERM. dbt gets most of that to cancel its
/// BigQuery jobs; the artifacts upload gets what is left.
pub(crate) const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(7);
/// Budget for uploading artifacts after a stop signal (the rest of Cloud Run's 10 s).
pub(crate) const DEFAULT_ARTIFACTS_TIMEOUT_AFTER_STOP: Duration = Duration::from_secs(2);
/// Budget for uploading artifacts after a normal exit.
pub(crate) const DEFAULT_ARTIFACTS_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest dbt output line re-emitted whole; longer lines are cut (dbt prints whole SQL
/// statements and stack traces; an unbounded line would be an unbounded allocation).
pub(crate) const DEFAULT_MAX_LINE_BYTES: usize = 256 * 1024;
/// Target name of a generated profile.
pub(crate) const DEFAULT_TARGET_NAME: &str = "sluice";

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct DbtConfig {
    /// The `dbt` executable: a path, or a name looked up on `PATH`.
    pub dbt_bin: PathBuf,
    /// The directory holding `dbt_project.yml`.
    pub project_dir: PathBuf,
    /// Where the profile comes from.
    pub profiles: ProfileSource,
    /// dbt's arguments, passed through unchanged; empty means `build`.
    pub args: Vec<String>,
    /// Split the nodes `dbt ls --select SELECTOR` finds across the tasks of the execution.
    pub shard_by: Option<String>,
    pub shard_strategy: ShardStrategy,
    pub deps: DepsMode,
    /// Upload run_results.json, manifest.json, sources.json and dbt.log here.
    pub artifacts: Option<ArtifactsConfig>,
    /// Parent of the private per-run directory (profiles, target, logs). The binary passes the
    /// system temp dir.
    pub scratch_dir: PathBuf,
    /// How long dbt gets to stop after SIGINT before it is killed.
    pub stop_timeout: Duration,
    pub max_line_bytes: usize,
}

impl DbtConfig {
    /// A config with the defaults for everything but the project, the profile and where
    /// private scratch directories go (the binary passes the system temp dir).
    pub fn new(
        project_dir: impl Into<PathBuf>,
        profiles: ProfileSource,
        scratch_dir: impl Into<PathBuf>,
    ) -> Self {
        DbtConfig {
            dbt_bin: PathBuf::from("dbt"),
            project_dir: project_dir.into(),
            profiles,
            args: Vec::new(),
            shard_by: None,
            shard_strategy: ShardStrategy::default(),
            deps: DepsMode::default(),
            artifacts: None,
            scratch_dir: scratch_dir.into(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }

    /// The dbt arguments to run: the user's, or `build`.
    pub fn effective_args(&self) -> Vec<String> {
        if self.args.is_empty() {
            vec!["build".to_string()]
        } else {
            self.args.clone()
        }
    }
}

/// Where `profiles.yml` comes from.
#[derive(Debug, Clone)]
pub enum ProfileSource {
    /// The user's directory holding `profiles.yml`, used as is.
    Dir(PathBuf),
    /// Generate one into a private temp dir.
    Generate(Box<BigQueryProfile>),
}

/// When to run `dbt deps` before the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DepsMode {
    /// When the project declares packages and none are installed.
    #[default]
    Auto,
    /// Whenever the project declares packages.
    Always,
    Never,
}

impl std::str::FromStr for DepsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DepsMode::Auto),
            "always" => Ok(DepsMode::Always),
            "never" => Ok(DepsMode::Never),
            _ => Err(format!(
                "unknown deps mode {s:?}; expected one of: auto, always, never"
            )),
        }
    }
}

/// Where and how to upload artifacts.
#[derive(Debug, Clone)]
pub struct ArtifactsConfig {
    /// `gs://bucket/prefix`, `file:///dir` or a local directory.
    pub url: String,
    /// Store settings. Its cancellation token is ignored: artifacts must still be uploaded after
    /// a stop signal, so uploads are bounded by the timeouts below instead.
    pub store: StoreConfig,
    pub timeout: Duration,
    pub timeout_after_stop: Duration,
}

impl ArtifactsConfig {
    pub fn new(url: impl Into<String>, store: StoreConfig) -> Self {
        ArtifactsConfig {
            url: url.into(),
            store,
            timeout: DEFAULT_ARTIFACTS_TIMEOUT,
            timeout_after_stop: DEFAULT_ARTIFACTS_TIMEOUT_AFTER_STOP,
        }
    }
}

/// The dbt-bigquery target a generated `profiles.yml` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigQueryProfile {
    /// The profile name; `None` means the `profile:` of `dbt_project.yml`.
    pub profile_name: Option<String>,
    pub target_name: String,
    /// GCP project; `None` lets dbt-bigquery take it from Application Default Credentials.
    pub project: Option<String>,
    pub dataset: String,
    pub location: Option<String>,
    pub threads: u32,
    pub priority: Option<Priority>,
    pub job_execution_timeout_seconds: Option<u64>,
    pub job_retries: Option<u32>,
    pub impersonate_service_account: Option<String>,
    pub auth: Auth,
    /// BigQuery API endpoint override (an emulator).
    pub api_endpoint: Option<String>,
}

impl BigQueryProfile {
    /// ADC auth, 4 threads, target `sluice`.
    pub fn new(dataset: impl Into<String>) -> Self {
        BigQueryProfile {
            profile_name: None,
            target_name: DEFAULT_TARGET_NAME.to_string(),
            project: None,
            dataset: dataset.into(),
            location: None,
            threads: 4,
            priority: None,
            job_execution_timeout_seconds: None,
            job_retries: None,
            impersonate_service_account: None,
            auth: Auth::Oauth,
            api_endpoint: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Interactive,
    Batch,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Batch => "batch",
        }
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "interactive" => Ok(Priority::Interactive),
            "batch" => Ok(Priority::Batch),
            _ => Err(format!(
                "unknown BigQuery priority {s:?}; expected interactive or batch"
            )),
        }
    }
}

/// How dbt-bigquery authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `method: oauth`: Application Default Credentials (on Cloud Run, the job's service
    /// account through the metadata server). Nothing secret is written anywhere.
    Oauth,
    /// `method: service-account` with a key file the user pointed at explicitly. Only the path
    /// goes into the profile.
    ServiceAccount { keyfile: PathBuf },
    /// `method: oauth-secrets` with a bare access token (emulators; a short-lived token for
    /// local runs). The token reaches dbt only through a `DBT_ENV_SECRET_` variable, which dbt
    /// scrubs from its logs; the profile file holds an `env_var()` reference, never the value.
    OauthSecrets { token: Secret },
}

/// The one secret type of the workspace: `Debug` and `Display` print a mask.
pub use sluice_runtime::Secret;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_never_prints_its_token() {
        let auth = Auth::OauthSecrets {
            token: Secret::new("ya29.very-secret"),
        };
        assert!(!format!("{auth:?}").contains("very-secret"));
    }

    #[test]
    fn parses_modes_and_priorities() {
        assert_eq!("Always".parse(), Ok(DepsMode::Always));
        assert_eq!("never".parse(), Ok(DepsMode::Never));
        assert!(
            "sometimes"
                .parse::<DepsMode>()
                .unwrap_err()
                .contains("auto, always, never")
        );
        assert_eq!("batch".parse(), Ok(Priority::Batch));
        assert!("fast".parse::<Priority>().unwrap_err().contains("\"fast\""));
    }

    #[test]
    fn default_command_is_build() {
        let mut c = DbtConfig::new("/p", ProfileSource::Dir("/x".into()), "/tmp");
        assert_eq!(c.effective_args(), ["build"]);
        c.args = vec!["test".into(), "--select".into(), "a".into()];
        assert_eq!(c.effective_args(), ["test", "--select", "a"]);
    }
}
