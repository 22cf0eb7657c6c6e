//! `sluice dbt`: flags/env -> typed config -> `sluice_dbt`.
//!
//! Every flag has a `SLUICE_DBT_...` twin. dbt's own variables are honoured as fallbacks where
//! they name the same thing (`DBT_PROJECT_DIR`, `DBT_PROFILES_DIR`), and so is
//! `BIGQUERY_EMULATOR_HOST`. An `oauth-secrets` token is read from `SLUICE_DBT_BIGQUERY_TOKEN`
//! only: a flag would show it in `ps` and in Cloud Run's execution overrides.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use sluice_dbt::{
    ArtifactsConfig, Auth, BigQueryProfile, DbtConfig, DepsMode, PROJECT_FILE, Priority,
    ProfileSource,
};
use sluice_runtime::{ExitCode, Secret, ShardStrategy};

use crate::context::{Context, UsageError};

/// Token used against an emulator when none is given: emulators accept any.
const EMULATOR_TOKEN: &str = "dummy";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory holding dbt_project.yml [fallback env: DBT_PROJECT_DIR; default: the current directory].
    #[arg(long, env = "SLUICE_DBT_PROJECT_DIR", value_name = "DIR")]
    project_dir: Option<PathBuf>,

    /// Use this directory's profiles.yml instead of generating one [fallback env: DBT_PROFILES_DIR].
    #[arg(long, env = "SLUICE_DBT_PROFILES_DIR", value_name = "DIR")]
    profiles_dir: Option<PathBuf>,

    /// The dbt executable (a path, or a name looked up on PATH).
    #[arg(
        long,
        env = "SLUICE_DBT_BIN",
        value_name = "PATH",
        default_value = "dbt"
    )]
    dbt_bin: PathBuf,

    /// Upload run_results.json, manifest.json, sources.json and dbt.log to
    /// URL/{execution or UTC timestamp}/task-NNNNN/ (gs://bucket/prefix or a local directory).
    #[arg(long, env = "SLUICE_DBT_ARTIFACTS", value_name = "URL")]
    artifacts: Option<String>,

    /// Split the models this dbt selector picks across the execution's tasks; each task runs
    /// the command with --select <its share>. Without it, task 0 runs everything.
    #[arg(long, env = "SLUICE_DBT_SHARD_BY", value_name = "SELECTOR")]
    shard_by: Option<String>,

    /// How --shard-by deals models to tasks: contiguous, round-robin or hash.
    #[arg(long, env = "SLUICE_DBT_SHARD_STRATEGY", default_value = "round-robin")]
    shard_strategy: ShardStrategy,

    /// When to run `dbt deps` first: auto (packages declared, none installed), always, never.
    #[arg(long, env = "SLUICE_DBT_DEPS", default_value = "auto")]
    deps: DepsMode,

    /// How long dbt gets to stop (cancel its queries) after SIGINT/SIGTERM before it is
    /// killed (7s, 5.5, 1m; a bare number is seconds). Cloud Run kills the container 10 s
    /// after SIGTERM.
    #[arg(
        long,
        env = "SLUICE_DBT_STOP_TIMEOUT",
        value_name = "DURATION",
        default_value = "7s",
        value_parser = sluice_runtime::duration::parse
    )]
    stop_timeout: Duration,

    /// Profile name of the generated profiles.yml [default: `profile:` of dbt_project.yml].
    #[arg(long, env = "SLUICE_DBT_PROFILE_NAME", value_name = "NAME")]
    profile_name: Option<String>,

    /// Target name of the generated profiles.yml (what `target.name` is in models).
    #[arg(
        long,
        env = "SLUICE_DBT_TARGET_NAME",
        value_name = "NAME",
        default_value = "sluice"
    )]
    target_name: String,

    /// BigQuery project [default: the project of Application Default Credentials].
    #[arg(long, env = "SLUICE_DBT_BIGQUERY_PROJECT", value_name = "PROJECT")]
    bigquery_project: Option<String>,

    /// BigQuery dataset dbt builds into (required to generate a profile).
    #[arg(long, env = "SLUICE_DBT_BIGQUERY_DATASET", value_name = "DATASET")]
    bigquery_dataset: Option<String>,

    /// BigQuery location (US, EU, europe-west1, ...).
    #[arg(long, env = "SLUICE_DBT_BIGQUERY_LOCATION", value_name = "LOCATION")]
    bigquery_location: Option<String>,

    /// dbt threads.
    #[arg(long, env = "SLUICE_DBT_THREADS", default_value = "4")]
    threads: u32,

    /// BigQuery job priority: interactive or batch.
    #[arg(long, env = "SLUICE_DBT_PRIORITY")]
    priority: Option<Priority>,

    /// dbt-bigquery job_execution_timeout_seconds.
    #[arg(
        long,
        env = "SLUICE_DBT_JOB_EXECUTION_TIMEOUT_SECONDS",
        value_name = "SECONDS"
    )]
    job_execution_timeout_seconds: Option<u64>,

    /// dbt-bigquery job_retries.
    #[arg(long, env = "SLUICE_DBT_JOB_RETRIES", value_name = "N")]
    job_retries: Option<u32>,

    /// Service account to impersonate (dbt-bigquery impersonate_service_account).
    #[arg(
        long,
        env = "SLUICE_DBT_IMPERSONATE_SERVICE_ACCOUNT",
        value_name = "EMAIL"
    )]
    impersonate_service_account: Option<String>,

    /// Authenticate with this service-account key file (method service-account) instead of
    /// Application Default Credentials.
    #[arg(long, env = "SLUICE_DBT_KEYFILE", value_name = "PATH")]
    keyfile: Option<PathBuf>,

    /// BigQuery API endpoint of an emulator (sets api_endpoint and oauth-secrets with a dummy
    /// token) [fallback env: BIGQUERY_EMULATOR_HOST].
    #[arg(long, env = "SLUICE_DBT_BIGQUERY_ENDPOINT", value_name = "URL")]
    bigquery_endpoint: Option<String>,

    /// dbt's arguments, after `--` [default: build].
    #[arg(last = true, value_name = "DBT_ARGS")]
    dbt_args: Vec<String>,
}

pub async fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    let config = config_from(args, context)?;
    // The error's own ExitStatus decides the exit code (context::exit_code_of).
    let outcome = sluice_dbt::run(&config, &context.task, &context.cancel()).await?;
    if outcome.stopped {
        // The caller turns this into 130/143 from the signal that stopped us.
        return Err(anyhow!("dbt was stopped by a shutdown signal"));
    }
    Ok(outcome.exit_code())
}

fn env_fallback(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn config_from(args: Args, context: &Context) -> Result<DbtConfig, UsageError> {
    let project_dir = args
        .project_dir
        .or_else(|| env_fallback("DBT_PROJECT_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    // The project is the first thing to be wrong about; say so before asking for a profile.
    // (Only its presence: `sluice_dbt::run` reads and checks it.)
    if !project_dir.join(PROJECT_FILE).is_file() {
        return Err(UsageError(format!(
            "{}: no {PROJECT_FILE} here (--project-dir / SLUICE_DBT_PROJECT_DIR / DBT_PROJECT_DIR)",
            project_dir.display()
        )));
    }
    let profiles_dir = args
        .profiles_dir
        .or_else(|| env_fallback("DBT_PROFILES_DIR").map(PathBuf::from));
    let endpoint = args
        .bigquery_endpoint
        .or_else(|| env_fallback("BIGQUERY_EMULATOR_HOST"))
        .map(|e| sluice_runtime::endpoint::emulator_url(&e));
    let token = env_fallback("SLUICE_DBT_BIGQUERY_TOKEN").map(Secret::new);

    let profiles = match profiles_dir {
        Some(dir) => {
            if args.bigquery_dataset.is_some() || args.keyfile.is_some() {
                tracing::warn!(
                    profiles_dir = %dir.display(),
                    "using the given profiles.yml; --bigquery-* / --keyfile settings are ignored"
                );
            }
            ProfileSource::Dir(dir)
        }
        None => {
            let dataset = args.bigquery_dataset.ok_or_else(|| {
                UsageError(
                    "no profile: set --bigquery-dataset (SLUICE_DBT_BIGQUERY_DATASET) to generate \
                     profiles.yml, or --profiles-dir (SLUICE_DBT_PROFILES_DIR) to use yours"
                        .into(),
                )
            })?;
            let auth = match (&endpoint, args.keyfile, token) {
                (Some(_), Some(_), _) => {
                    return Err(UsageError(
                        "--keyfile cannot be used with --bigquery-endpoint (emulators take a dummy token)"
                            .into(),
                    ));
                }
                (_, Some(keyfile), _) => Auth::ServiceAccount { keyfile },
                (_, None, Some(token)) => Auth::OauthSecrets { token },
                (Some(_), None, None) => Auth::OauthSecrets {
                    token: Secret::new(EMULATOR_TOKEN),
                },
                (None, None, None) => Auth::Oauth,
            };
            ProfileSource::Generate(Box::new(BigQueryProfile {
                profile_name: args.profile_name,
                target_name: args.target_name,
                project: args.bigquery_project,
                dataset,
                location: args.bigquery_location,
                threads: args.threads,
                priority: args.priority,
                job_execution_timeout_seconds: args.job_execution_timeout_seconds,
                job_retries: args.job_retries,
                impersonate_service_account: args.impersonate_service_account,
                auth,
                api_endpoint: endpoint,
            }))
        }
    };
    if args.threads == 0 {
        return Err(UsageError("--threads must be at least 1".into()));
    }

    let mut config = DbtConfig::new(project_dir, profiles, std::env::temp_dir());
    config.dbt_bin = args.dbt_bin;
    config.args = args.dbt_args;
    config.shard_by = args.shard_by.filter(|s| !s.trim().is_empty());
    config.shard_strategy = args.shard_strategy;
    config.deps = args.deps;
    config.stop_timeout = args.stop_timeout;
    config.artifacts = args
        .artifacts
        .filter(|a| !a.trim().is_empty())
        .map(|url| ArtifactsConfig::new(url, context.store_config()));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn stop_timeout(value: &str) -> Result<Duration, clap::Error> {
        Cli::try_parse_from(["sluice-dbt".to_string(), format!("--stop-timeout={value}")])
            .map(|c| c.args.stop_timeout)
    }

    #[test]
    fn stop_timeout_takes_durations_and_bare_seconds() {
        assert_eq!(
            Cli::try_parse_from(["sluice-dbt"])
                .unwrap()
                .args
                .stop_timeout,
            sluice_dbt::DbtConfig::new(".", ProfileSource::Dir(".".into()), ".").stop_timeout
        );
        assert_eq!(stop_timeout("5.5").unwrap(), Duration::from_millis(5500));
        assert_eq!(stop_timeout("7").unwrap(), Duration::from_secs(7));
        assert_eq!(stop_timeout("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(stop_timeout("0").unwrap(), Duration::ZERO);
        // Negative values are refused while parsing, naming the flag (exit 2 from clap).
        let err = stop_timeout("-1").unwrap_err().to_string();
        assert!(err.contains("--stop-timeout"), "{err}");
    }
}
