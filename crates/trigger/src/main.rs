//! `sluice-trigger`: flags and env in, library calls out (see `sluice_trigger::commands`).
//! Stdout carries only results (text or `--output json`); logs and task output go to stderr.

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use sluice_runtime::logging::{self, LogFormat, LogOptions, ResolvedFormat};
use sluice_runtime::{ExitCode, Shutdown, TaskContext};
use sluice_trigger::commands::{self, CommandError, Context, OutputFormat};
use sluice_trigger::{ApiOptions, LogMode, RunRequest, RunSettings, WaitSettings};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Parser)]
#[command(
    name = "sluice-trigger",
    version,
    about = "Deploy, run, wait for and cancel Sluice's Cloud Run jobs, or run their tasks locally"
)]
struct Cli {
    /// Log format on stderr: json (Cloud Logging lines), text, or auto (text on a terminal).
    #[arg(long, global = true, env = "SLUICE_LOG_FORMAT", default_value = "auto")]
    log_format: LogFormat,

    /// Result format on stdout.
    #[arg(long, global = true, value_enum, default_value = "text")]
    output: Output,

    /// Google Cloud project (else the spec's, else CLOUDSDK_CORE_PROJECT / GOOGLE_CLOUD_PROJECT).
    #[arg(long, global = true)]
    project: Option<String>,

    /// Cloud Run region (else the spec's, else CLOUDSDK_RUN_REGION / GOOGLE_CLOUD_REGION).
    #[arg(long, global = true)]
    region: Option<String>,

    /// Admin API endpoint, for a test server; plain http:// endpoints get no credentials.
    #[arg(long, global = true, env = "CLOUD_RUN_ENDPOINT")]
    endpoint: Option<String>,

    /// First wait between execution polls (grows 1.5x per poll).
    #[arg(long, global = true, env = "SLUICE_TRIGGER_POLL_INTERVAL", default_value = "2s", value_parser = sluice_runtime::duration::parse)]
    poll_interval: Duration,

    /// Longest wait between execution polls.
    #[arg(long, global = true, env = "SLUICE_TRIGGER_POLL_MAX_INTERVAL", default_value = "30s", value_parser = sluice_runtime::duration::parse)]
    poll_max_interval: Duration,

    /// Stop waiting after this long (the execution keeps running). Default: task timeout x
    /// (max retries + 1) x waves of parallel tasks, plus an hour.
    #[arg(long, global = true, env = "SLUICE_TRIGGER_MAX_WAIT", value_parser = sluice_runtime::duration::parse)]
    max_wait: Option<Duration>,

    /// Timeout of each HTTP attempt to the Admin API.
    #[arg(long, global = true, env = "SLUICE_TRIGGER_ATTEMPT_TIMEOUT", default_value = "60s", value_parser = sluice_runtime::duration::parse)]
    attempt_timeout: Duration,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update the spec's jobs (unchanged jobs are left alone).
    Deploy {
        /// The jobs.toml file.
        spec: PathBuf,
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
        /// Print the request bodies instead of sending them (reads the current jobs).
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: do not call the API; show every job as a create.
        #[arg(long, requires = "dry_run")]
        offline: bool,
    },
    /// Start an execution of a deployed job, with overrides.
    Run {
        job: String,
        #[command(flatten)]
        overrides: Overrides,
        /// Follow the execution to the end; exit 0 only if it succeeded.
        #[arg(long)]
        wait: bool,
        /// On Ctrl-C/SIGTERM while waiting, cancel the execution too.
        #[arg(long, requires = "wait")]
        cancel_on_interrupt: bool,
        #[command(flatten)]
        spec: SpecArg,
    },
    /// Follow an execution (full name or JOB-xxxxx id) to the end.
    Wait {
        execution: String,
        /// The execution's job, if its id does not start with it.
        #[arg(long)]
        job: Option<String>,
        /// On Ctrl-C/SIGTERM, cancel the execution too.
        #[arg(long)]
        cancel_on_interrupt: bool,
        #[command(flatten)]
        spec: SpecArg,
    },
    /// Cancel an execution.
    Cancel {
        execution: String,
        #[arg(long)]
        job: Option<String>,
        /// Wait until it has stopped and report it.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        spec: SpecArg,
    },
    /// Show a job's latest executions.
    Status {
        job: String,
        /// How many executions.
        #[arg(long, default_value_t = 5)]
        limit: usize,
        #[command(flatten)]
        spec: SpecArg,
    },
    /// Run a job's tasks on this machine as Cloud Run would.
    Local {
        /// The jobs.toml file.
        spec: PathBuf,
        job: String,
        #[command(flatten)]
        overrides: Overrides,
        /// Tasks at once (default: the spec's parallelism; 0 there means one per CPU).
        #[arg(long)]
        parallelism: Option<u32>,
        /// Run each task as `ENGINE run IMAGE` instead of the sluice binary.
        #[arg(long)]
        docker: bool,
        /// Container engine for --docker.
        #[arg(long, env = "SLUICE_TRIGGER_ENGINE", default_value = "docker")]
        engine: PathBuf,
        /// Image for --docker (default: the job's image), e.g. one built locally.
        #[arg(long, env = "SLUICE_TRIGGER_IMAGE")]
        image: Option<String>,
        /// With --docker: mount your Application Default Credentials file read-only and set
        /// GOOGLE_APPLICATION_CREDENTIALS, for runs against real GCP (containers then run as
        /// the file's owner, who alone can read it).
        #[arg(long, env = "SLUICE_TRIGGER_ADC", requires = "docker")]
        adc: bool,
        /// The sluice binary (default: [local] sluice_bin, then next to sluice-trigger, then PATH).
        #[arg(long, env = "SLUICE_BIN")]
        sluice_bin: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct SpecArg {
    /// A jobs.toml to take project and region from.
    #[arg(long = "spec", env = "SLUICE_TRIGGER_SPEC")]
    path: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct Overrides {
    /// Replace the container args (repeat for each; or give them after `--`).
    #[arg(long = "args", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// Run with no container args.
    #[arg(long, conflicts_with = "args")]
    clear_args: bool,
    /// Set an env var for this execution (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Task count for this execution.
    #[arg(long)]
    tasks: Option<u32>,
    /// Task timeout for this execution (e.g. 30m).
    #[arg(long, value_parser = sluice_runtime::duration::parse)]
    timeout: Option<Duration>,
    /// Container args, after `--`.
    #[arg(last = true)]
    trailing: Vec<String>,
}

impl Overrides {
    fn args(&self) -> Option<Vec<String>> {
        if self.clear_args {
            return Some(Vec::new());
        }
        let all: Vec<String> = self.args.iter().chain(&self.trailing).cloned().collect();
        (!all.is_empty()).then_some(all)
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not K=V"))?;
    sluice_trigger::check_env_name(k)?;
    Ok((k.to_string(), v.to_string()))
}

fn init_logging(format: LogFormat) -> Result<ResolvedFormat, String> {
    let options = LogOptions {
        format,
        filter: std::env::var("RUST_LOG").ok(),
        // Logs go to stderr here (stdout is for results), so stderr decides "auto".
        stdout_is_tty: std::io::stderr().is_terminal(),
        on_cloud_run: std::env::var_os("CLOUD_RUN_JOB").is_some(),
    };
    let resolved = logging::resolve_format(&options);
    let filter = logging::build_filter(&options)?;
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match resolved {
        ResolvedFormat::Json => registry
            .with(logging::cloud_logging_layer(
                &TaskContext::local(),
                std::io::stderr,
            ))
            .try_init(),
        ResolvedFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_target(false)
                    .with_ansi(options.stdout_is_tty)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    installed.map_err(|e| e.to_string())?;
    Ok(resolved)
}

/// The command line with env values hidden from `--help` (values may carry secrets; help
/// output ends up in logs). Help still names each env variable.
fn command() -> clap::Command {
    fn hide(command: clap::Command) -> clap::Command {
        command
            .mut_args(|arg| arg.hide_env_values(true))
            .mut_subcommands(hide)
    }
    hide(Cli::command())
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let resolved = match init_logging(cli.log_format) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice-trigger: cannot set up logging: {e}");
            return ExitCode::Usage.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice-trigger: cannot start the async runtime: {e}");
            return ExitCode::TaskFailed.into();
        }
    };
    let code = runtime.block_on(dispatch(cli, resolved));
    std::process::ExitCode::from(code.clamp(0, 255) as u8)
}

async fn dispatch(cli: Cli, log_format: ResolvedFormat) -> i32 {
    let shutdown = Shutdown::install();
    let env = |name: &str| std::env::var(name).ok();
    let output = match cli.output {
        Output::Text => OutputFormat::Text,
        Output::Json => OutputFormat::Json,
    };
    let wait_settings = WaitSettings {
        poll_initial: cli.poll_interval,
        poll_max: cli.poll_max_interval.max(cli.poll_interval),
        max_wait: cli.max_wait,
    };
    let ctx = |spec: Option<PathBuf>| Context {
        api: ApiOptions {
            endpoint: cli.endpoint.clone(),
            attempt_timeout: cli.attempt_timeout,
            lro_poll_initial: cli.poll_interval.min(Duration::from_secs(1)),
            lro_poll_max: cli.poll_max_interval.min(Duration::from_secs(10)),
            ..ApiOptions::default()
        },
        project: cli.project.clone(),
        region: cli.region.clone(),
        spec,
        output,
        shutdown: shutdown.clone(),
        env: &env,
    };
    let mut stdout = std::io::stdout();
    let result: Result<i32, CommandError> = match &cli.command {
        Command::Deploy {
            spec,
            job,
            dry_run,
            offline,
        } => {
            let opts = commands::DeployOptions {
                spec: spec.clone(),
                only: job.clone(),
                dry_run: *dry_run,
                offline: *offline,
            };
            commands::deploy(&ctx(None), &opts, &mut stdout).await
        }
        Command::Run {
            job,
            overrides,
            wait,
            cancel_on_interrupt,
            spec,
        } => {
            let opts = commands::RunOptions {
                job: job.clone(),
                request: RunRequest {
                    args: overrides.args(),
                    env: overrides.env.clone(),
                    tasks: overrides.tasks,
                    timeout: overrides.timeout,
                },
                wait: *wait,
                cancel_on_interrupt: *cancel_on_interrupt,
                settings: RunSettings::default(),
                wait_settings: wait_settings.clone(),
            };
            commands::run(&ctx(spec.path.clone()), &opts, &mut stdout).await
        }
        Command::Wait {
            execution,
            job,
            cancel_on_interrupt,
            spec,
        } => {
            let opts = commands::ExecutionOptions {
                execution: execution.clone(),
                job: job.clone(),
                wait: true,
                cancel_on_interrupt: *cancel_on_interrupt,
                wait_settings: wait_settings.clone(),
            };
            commands::wait(&ctx(spec.path.clone()), &opts, &mut stdout).await
        }
        Command::Cancel {
            execution,
            job,
            wait,
            spec,
        } => {
            let opts = commands::ExecutionOptions {
                execution: execution.clone(),
                job: job.clone(),
                wait: *wait,
                cancel_on_interrupt: false,
                wait_settings: wait_settings.clone(),
            };
            commands::cancel(&ctx(spec.path.clone()), &opts, &mut stdout).await
        }
        Command::Status { job, limit, spec } => {
            let opts = commands::StatusOptions {
                job: job.clone(),
                limit: *limit,
            };
            commands::status(&ctx(spec.path.clone()), &opts, &mut stdout).await
        }
        Command::Local {
            spec,
            job,
            overrides,
            parallelism,
            docker,
            engine,
            image,
            adc,
            sluice_bin,
        } => {
            let opts = commands::LocalOptions {
                spec: spec.clone(),
                job: job.clone(),
                tasks: overrides.tasks,
                parallelism: *parallelism,
                timeout: overrides.timeout,
                args: overrides.args(),
                env: overrides.env.clone(),
                docker: *docker,
                engine: engine.clone(),
                image: image.clone(),
                adc: *adc,
                sluice_bin: sluice_bin.clone(),
                current_exe: std::env::current_exe().ok(),
                log_mode: match log_format {
                    ResolvedFormat::Json => LogMode::Json,
                    ResolvedFormat::Text => LogMode::Text,
                },
                parent_env: std::env::vars().collect(),
            };
            commands::local(
                output,
                &shutdown,
                &opts,
                Arc::new(sluice_trigger::Stderr),
                &mut stdout,
            )
            .await
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            // Also plainly on stderr when logs are JSON, for whoever reads the terminal.
            if log_format == ResolvedFormat::Json {
                eprintln!("sluice-trigger: {e}");
            }
            e.exit
        }
    }
}
