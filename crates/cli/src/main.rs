//! `sluice`: the entrypoint of every Cloud Run Job of a pipeline. Jobs differ only in the
//! subcommand. This crate turns flags and env into typed config and hands it to the library
//! crates; it holds no pipeline logic.

mod commands;
mod context;
mod env_twins;

use std::io::IsTerminal;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use sluice_runtime::logging::{self, LogFormat, LogOptions};
use sluice_runtime::{ExitCode, Shutdown, TaskContext};

use crate::context::{Context, classify_failure};

const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SLUICE_GIT_SHA"), ")");

#[derive(Debug, Parser)]
#[command(name = "sluice", version = VERSION, about = "ELT jobs for Google Cloud Run: extract, load, dbt")]
struct Cli {
    /// Log output: `json` (Cloud Logging lines), `text` (human), `auto` (json off a TTY or on Cloud Run).
    #[arg(long, global = true, env = "SLUICE_LOG_FORMAT", default_value = "auto")]
    log_format: LogFormat,

    /// Cloud Storage upload chunk in MiB (whole number, 1 to 1024; default 16, 8 for
    /// `extract --format parquet`). Objects up to this size go in one request; larger ones in
    /// chunks of this size. Each open upload holds at most two chunks in memory.
    #[arg(
        long,
        global = true,
        env = "SLUICE_UPLOAD_CHUNK_MIB",
        value_name = "MIB",
        value_parser = context::parse_upload_chunk_mib
    )]
    upload_chunk_mib: Option<usize>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream open data (HTTP files, Socrata SODA) into GCS or a local directory.
    Extract(commands::extract::Args),
    /// Load GCS objects into BigQuery with idempotent load jobs.
    Load(commands::load::Args),
    /// Run dbt-bigquery with profiles, logs and artifacts handled.
    Dbt(commands::dbt::Args),
}

/// The command line with env values hidden from `--help` on every argument: a `SLUICE_URL` or
/// `SLUICE_SOCRATA` may carry a token in its query, and help output lands in terminals, CI logs
/// and bug reports. Help still names each env variable, just not its value.
fn command() -> clap::Command {
    fn hide(command: clap::Command) -> clap::Command {
        command
            .mut_args(|arg| arg.hide_env_values(true))
            .mut_subcommands(hide)
    }
    hide(Cli::command())
}

fn main() -> std::process::ExitCode {
    let matches = env_twins::get_matches(command);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let deprecated = env_twins::notices(&matches, &|name| std::env::var_os(name));
    let task = match TaskContext::from_env() {
        Ok(task) => task,
        Err(err) => {
            eprintln!("sluice: invalid Cloud Run task environment: {err}");
            return ExitCode::Usage.into();
        }
    };
    let log_options = LogOptions {
        format: cli.log_format,
        filter: std::env::var("RUST_LOG").ok(),
        stdout_is_tty: std::io::stdout().is_terminal(),
        on_cloud_run: std::env::var_os("CLOUD_RUN_JOB").is_some(),
    };
    if let Err(err) = logging::init(&log_options, &task) {
        eprintln!("sluice: cannot set up logging: {err}");
        return ExitCode::Usage.into();
    }
    for notice in deprecated {
        tracing::warn!(
            deprecated_env = notice.legacy,
            replacement = notice.name,
            "{}",
            notice.message
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("sluice: cannot start the async runtime: {err}");
            return ExitCode::TaskFailed.into();
        }
    };
    let code = runtime.block_on(async move {
        let shutdown = Shutdown::install();
        let mut context = Context::new(task, shutdown.clone());
        context.upload_chunk_mib = cli.upload_chunk_mib;
        let result = match cli.command {
            Command::Extract(args) => commands::extract::run(args, &context).await,
            Command::Load(args) => commands::load::run(args, &context).await,
            Command::Dbt(args) => commands::dbt::run(args, &context).await,
        };
        match result {
            Ok(code) => code,
            Err(err) => classify_failure(&err, &shutdown),
        }
    });
    code.into()
}
