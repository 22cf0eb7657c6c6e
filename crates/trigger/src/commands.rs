//! The commands, as library functions: typed options in, text or JSON on `out`, an exit code
//! back. The binary only parses flags into these options; tests call them directly.

use crate::api::{ApiError, ApiOptions, CloudRun};
use crate::config::{self, Lookup};
use crate::local::{self, LocalRun};
use crate::render::{self, JobTarget};
use crate::report::{self, ExecutionReport, STATUS_SCHEMA};
use crate::run::{self, RunError, RunRequest, RunSettings, WaitEnd, WaitSettings};
use crate::spec::{JobSpec, Spec, SpecError};
use serde::Serialize;
use serde_json::json;
use sluice_runtime::{ExitCode, ExitStatus, Shutdown};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// A command that could not do its job, with the exit code that says why.
#[derive(Debug)]
pub struct CommandError {
    pub exit: i32,
    pub message: String,
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CommandError {}

impl CommandError {
    pub fn usage(message: impl Into<String>) -> Self {
        CommandError {
            exit: ExitCode::Usage.code(),
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        CommandError {
            exit: ExitCode::TaskFailed.code(),
            message: message.into(),
        }
    }
}

impl CommandError {
    /// The error's message with the exit code its own [`ExitStatus`] rule gives.
    fn from_status(e: &(impl ExitStatus + std::fmt::Display)) -> Self {
        CommandError {
            exit: e.exit_code().code(),
            message: e.to_string(),
        }
    }
}

impl ExitStatus for CommandError {
    fn exit_code(&self) -> ExitCode {
        match self.exit {
            0 => ExitCode::Ok,
            2 => ExitCode::Usage,
            130 => ExitCode::Interrupted,
            143 => ExitCode::Terminated,
            _ => ExitCode::TaskFailed,
        }
    }
}

impl From<SpecError> for CommandError {
    fn from(e: SpecError) -> Self {
        CommandError::from_status(&e)
    }
}

impl From<RunError> for CommandError {
    fn from(e: RunError) -> Self {
        CommandError::from_status(&e)
    }
}

impl From<local::LocalError> for CommandError {
    fn from(e: local::LocalError) -> Self {
        CommandError::from_status(&e)
    }
}

impl From<std::io::Error> for CommandError {
    fn from(e: std::io::Error) -> Self {
        CommandError::failed(format!("cannot write output: {e}"))
    }
}

/// What every API command shares.
pub struct Context<'a> {
    pub api: ApiOptions,
    pub project: Option<String>,
    pub region: Option<String>,
    /// A spec to take project/region (and job settings) from.
    pub spec: Option<PathBuf>,
    pub output: OutputFormat,
    pub shutdown: Shutdown,
    pub env: Lookup<'a>,
}

impl Context<'_> {
    fn load_spec(&self) -> Result<Option<Spec>, CommandError> {
        match &self.spec {
            None => Ok(None),
            Some(p) => {
                let spec = Spec::load(p)?;
                for w in &spec.warnings {
                    tracing::warn!("{w}");
                }
                Ok(Some(spec))
            }
        }
    }

    fn target(&self, job: &str, spec: Option<&Spec>) -> Result<JobTarget, CommandError> {
        config::resolve_target(
            job,
            self.project.as_deref(),
            self.region.as_deref(),
            spec.map(|s| config::spec_location(s, job))
                .unwrap_or_default(),
            self.env,
        )
        .map_err(CommandError::usage)
    }

    async fn connect(&self) -> Result<CloudRun, CommandError> {
        CloudRun::connect(&self.api, self.shutdown.token())
            .await
            .map_err(|e| self.api_error(e))
    }

    fn interrupted_exit(&self) -> i32 {
        self.shutdown
            .exit_code()
            .map_or(ExitCode::Interrupted.code(), ExitCode::code)
    }

    /// A stop signal's code when the call was interrupted, else the error's own.
    fn api_error(&self, e: ApiError) -> CommandError {
        if e.is_interrupted() {
            CommandError {
                exit: self.interrupted_exit(),
                message: e.to_string(),
            }
        } else {
            CommandError::from_status(&e)
        }
    }
}

fn print_json(out: &mut dyn Write, value: &impl Serialize) -> Result<(), CommandError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| CommandError::failed(e.to_string()))?;
    writeln!(out, "{text}")?;
    Ok(())
}

fn print_report(
    ctx: &Context<'_>,
    out: &mut dyn Write,
    r: &ExecutionReport,
) -> Result<(), CommandError> {
    match ctx.output {
        OutputFormat::Json => print_json(out, r),
        OutputFormat::Text => {
            write!(out, "{}", report::render_text(r))?;
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// deploy

#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    pub spec: PathBuf,
    pub only: Option<String>,
    pub dry_run: bool,
    /// With `dry_run`: do not read the current jobs; print every job as a create.
    pub offline: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeployResult {
    pub job: String,
    pub name: String,
    /// created, updated, unchanged, would-create, would-update, failed
    pub action: &'static str,
    pub changed: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn request_json(
    method: &str,
    path: String,
    query: serde_json::Value,
    body: &google_cloud_run_v2::model::Job,
) -> serde_json::Value {
    json!({
        "method": method,
        "path": path,
        "query": query,
        "body": serde_json::to_value(body).unwrap_or_default(),
    })
}

/// Creates or updates every job of the spec (or `--job`), or shows what it would send.
pub async fn deploy(
    ctx: &Context<'_>,
    opts: &DeployOptions,
    out: &mut dyn Write,
) -> Result<i32, CommandError> {
    let spec = Spec::load(&opts.spec)?;
    for w in &spec.warnings {
        tracing::warn!("{w}");
    }
    let jobs: Vec<&JobSpec> = match &opts.only {
        Some(name) => vec![spec.job(name).map_err(CommandError::usage)?],
        None => spec.jobs.iter().collect(),
    };
    let mut planned = Vec::new();
    for job in jobs {
        if job.image.is_none() {
            return Err(CommandError::usage(format!(
                "job {:?}: field \"image\" is required to deploy (in the job or in [defaults])",
                job.name
            )));
        }
        let target = config::resolve_target(
            &job.name,
            ctx.project.as_deref(),
            ctx.region.as_deref(),
            (job.project.clone(), job.region.clone()),
            ctx.env,
        )
        .map_err(CommandError::usage)?;
        planned.push((job, target));
    }
    let api = if opts.dry_run && opts.offline {
        None
    } else {
        Some(ctx.connect().await?)
    };
    let mut results = Vec::new();
    let mut failures = 0;
    for (job, target) in planned {
        let r = deploy_one(api.as_ref(), job, &target, opts.dry_run).await;
        let r = match r {
            Ok(r) => r,
            Err(e) if e.is_interrupted() => return Err(ctx.api_error(e)),
            Err(e) => {
                failures += 1;
                tracing::error!(job = %job.name, "{e}");
                DeployResult {
                    job: job.name.clone(),
                    name: target.name(),
                    action: "failed",
                    changed: vec![],
                    request: None,
                    error: Some(e.to_string()),
                }
            }
        };
        if ctx.output == OutputFormat::Text {
            print_deploy_text(out, &r)?;
        }
        results.push(r);
    }
    if ctx.output == OutputFormat::Json {
        print_json(
            out,
            &json!({"schema": "sluice-trigger/deploy/v1", "dry_run": opts.dry_run, "jobs": results}),
        )?;
    }
    Ok(if failures > 0 {
        ExitCode::TaskFailed.code()
    } else {
        0
    })
}

fn print_deploy_text(out: &mut dyn Write, r: &DeployResult) -> Result<(), CommandError> {
    let changed = if r.changed.is_empty() {
        String::new()
    } else {
        format!(" (changed: {})", r.changed.join(", "))
    };
    writeln!(out, "{:<12} {}{}", r.action, r.name, changed)?;
    if let Some(e) = &r.error {
        writeln!(out, "  {e}")?;
    }
    if let Some(req) = &r.request {
        let text = serde_json::to_string_pretty(req).unwrap_or_default();
        writeln!(out, "{text}")?;
    }
    Ok(())
}

async fn deploy_one(
    api: Option<&CloudRun>,
    job: &JobSpec,
    target: &JobTarget,
    dry_run: bool,
) -> Result<DeployResult, ApiError> {
    let current = match api {
        Some(api) => api.get_job(&target.name()).await?,
        None => None,
    };
    let result = |action, changed, request| DeployResult {
        job: job.name.clone(),
        name: target.name(),
        action,
        changed,
        request,
        error: None,
    };
    match current {
        None => {
            let body = render::new_job(job);
            let request = request_json(
                "POST",
                format!("/v2/{}/jobs", target.parent()),
                json!({"jobId": job.name}),
                &body,
            );
            if dry_run {
                return Ok(result("would-create", vec![], Some(request)));
            }
            let api = api.expect("an API client unless offline");
            api.create_job(&target.parent(), &job.name, body).await?;
            tracing::info!(job = %target.name(), "created");
            Ok(result("created", vec![], None))
        }
        Some(actual) => {
            let changed = render::changes(job, &actual);
            if changed.is_empty() {
                return Ok(result("unchanged", vec![], None));
            }
            let body = render::updated_job(&actual, job);
            let request = request_json("PATCH", format!("/v2/{}", target.name()), json!({}), &body);
            if dry_run {
                return Ok(result("would-update", changed, Some(request)));
            }
            let api = api.expect("an API client unless offline");
            api.update_job(body).await?;
            tracing::info!(job = %target.name(), changed = ?changed, "updated");
            Ok(result("updated", changed, None))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// run / wait / cancel / status

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub job: String,
    pub request: RunRequest,
    pub wait: bool,
    pub cancel_on_interrupt: bool,
    pub settings: RunSettings,
    pub wait_settings: WaitSettings,
}

/// `run JOB`: starts one execution; with `wait`, follows it and reports per task.
pub async fn run(
    ctx: &Context<'_>,
    opts: &RunOptions,
    out: &mut dyn Write,
) -> Result<i32, CommandError> {
    let spec = ctx.load_spec()?;
    let target = ctx.target(&opts.job, spec.as_ref())?;
    let api = ctx.connect().await?;
    let started = match run::start(&api, &target, &opts.request, &opts.settings).await {
        Ok(s) => s,
        Err(RunError::Api(e)) => return Err(ctx.api_error(e)),
        Err(e) => return Err(e.into()),
    };
    let name = started.execution.name.clone();
    tracing::info!(execution = %name, adopted = started.adopted, "execution started");
    if !opts.wait {
        let r = report::from_api(&started.execution, &[]);
        match ctx.output {
            OutputFormat::Json => {
                let mut r = r;
                r.exit_code = 0;
                print_json(out, &r)?;
            }
            OutputFormat::Text => writeln!(out, "{name}")?,
        }
        return Ok(0);
    }
    follow(
        ctx,
        &api,
        &name,
        &opts.wait_settings,
        opts.cancel_on_interrupt,
        out,
    )
    .await
}

async fn follow(
    ctx: &Context<'_>,
    api: &CloudRun,
    name: &str,
    settings: &WaitSettings,
    cancel_on_interrupt: bool,
    out: &mut dyn Write,
) -> Result<i32, CommandError> {
    let token = ctx.shutdown.token();
    let end = run::wait(api, name, settings, &token)
        .await
        .map_err(|e| ctx.api_error(e))?;
    if let WaitEnd::Interrupted(_) = &end {
        if cancel_on_interrupt {
            match api.cancel_execution(name).await {
                Ok(()) => tracing::warn!(execution = %name, "interrupted: cancellation requested"),
                Err(e) => {
                    tracing::error!(execution = %name, "interrupted, and cancelling failed: {e}")
                }
            }
        } else {
            tracing::warn!(
                execution = %name,
                "interrupted: the execution keeps running (--cancel-on-interrupt would cancel it)"
            );
        }
    }
    let r = run::report_for(api, &end, Some(ctx.interrupted_exit())).await;
    print_report(ctx, out, &r)?;
    Ok(r.exit_code)
}

#[derive(Debug, Clone, Default)]
pub struct ExecutionOptions {
    /// Full name or short id.
    pub execution: String,
    pub job: Option<String>,
    pub wait: bool,
    pub cancel_on_interrupt: bool,
    pub wait_settings: WaitSettings,
}

fn execution_name(
    ctx: &Context<'_>,
    spec: Option<&Spec>,
    opts: &ExecutionOptions,
) -> Result<String, CommandError> {
    config::execution_name(&opts.execution, opts.job.as_deref(), |job| {
        ctx.target(job, spec).map_err(|e| e.message)
    })
    .map_err(CommandError::usage)
}

/// `wait EXECUTION`.
pub async fn wait(
    ctx: &Context<'_>,
    opts: &ExecutionOptions,
    out: &mut dyn Write,
) -> Result<i32, CommandError> {
    let spec = ctx.load_spec()?;
    let name = execution_name(ctx, spec.as_ref(), opts)?;
    let api = ctx.connect().await?;
    follow(
        ctx,
        &api,
        &name,
        &opts.wait_settings,
        opts.cancel_on_interrupt,
        out,
    )
    .await
}

/// `cancel EXECUTION [--wait]`.
pub async fn cancel(
    ctx: &Context<'_>,
    opts: &ExecutionOptions,
    out: &mut dyn Write,
) -> Result<i32, CommandError> {
    let spec = ctx.load_spec()?;
    let name = execution_name(ctx, spec.as_ref(), opts)?;
    let api = ctx.connect().await?;
    if let Err(e) = api.cancel_execution(&name).await {
        // Cancelling a finished execution is refused: say how it finished instead.
        if let Ok(exec) = api.get_execution(&name).await {
            let state = report::execution_state(&exec);
            if state != report::ExecutionState::Running {
                return Err(CommandError::failed(format!(
                    "execution {name} already finished ({}); nothing to cancel",
                    state.as_str()
                )));
            }
        }
        return Err(ctx.api_error(e));
    }
    tracing::info!(execution = %name, "cancellation requested");
    if opts.wait {
        let code = follow(ctx, &api, &name, &opts.wait_settings, false, out).await?;
        // The cancel worked if the execution stopped; its own verdict is in the report.
        return Ok(
            if code == ctx.interrupted_exit() && ctx.shutdown.is_cancelled() {
                code
            } else {
                0
            },
        );
    }
    match ctx.output {
        OutputFormat::Json => {
            print_json(out, &json!({"execution": name, "cancel_requested": true}))?
        }
        OutputFormat::Text => writeln!(out, "cancellation requested: {name}")?,
    }
    Ok(0)
}

#[derive(Debug, Clone, Default)]
pub struct StatusOptions {
    pub job: String,
    pub limit: usize,
}

/// `status JOB`: the job and its latest executions.
pub async fn status(
    ctx: &Context<'_>,
    opts: &StatusOptions,
    out: &mut dyn Write,
) -> Result<i32, CommandError> {
    let spec = ctx.load_spec()?;
    let target = ctx.target(&opts.job, spec.as_ref())?;
    let api = ctx.connect().await?;
    let job = api
        .get_job(&target.name())
        .await
        .map_err(|e| ctx.api_error(e))?
        .ok_or_else(|| {
            CommandError::usage(format!(
                "job {} not found in project {}, region {}",
                target.job, target.project, target.region
            ))
        })?;
    let executions = api
        .list_executions(&target.name(), opts.limit.max(1))
        .await
        .map_err(|e| ctx.api_error(e))?;
    let reports: Vec<ExecutionReport> = executions
        .iter()
        .map(|e| report::from_api(e, &[]))
        .collect();
    match ctx.output {
        OutputFormat::Json => print_json(
            out,
            &json!({
                "schema": STATUS_SCHEMA,
                "job": target.job,
                "name": target.name(),
                "execution_count": job.execution_count,
                "latest_created_execution": job.latest_created_execution.as_ref().map(|l| l.name.clone()),
                "executions": reports,
            }),
        )?,
        OutputFormat::Text => {
            writeln!(
                out,
                "job {} ({}): {} execution(s)",
                target.job,
                target.name(),
                job.execution_count
            )?;
            for r in &reports {
                let duration = r
                    .duration_seconds
                    .map(|d| crate::duration::human(std::time::Duration::from_secs_f64(d.max(0.0))))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "  {:<28} {:<9} {:<24} {}/{} succeeded{}{} {}",
                    r.execution_id,
                    r.state.as_str(),
                    r.create_time.clone().unwrap_or_default(),
                    r.counts.succeeded,
                    r.task_count,
                    if r.counts.failed > 0 {
                        format!(", {} failed", r.counts.failed)
                    } else {
                        String::new()
                    },
                    if r.counts.running > 0 {
                        format!(", {} running", r.counts.running)
                    } else {
                        String::new()
                    },
                    duration
                )?;
            }
        }
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// local

#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub spec: PathBuf,
    pub job: String,
    pub tasks: Option<u32>,
    pub parallelism: Option<u32>,
    pub timeout: Option<std::time::Duration>,
    pub args: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub docker: bool,
    pub engine: PathBuf,
    /// `--image`: overrides the job's image in container mode.
    pub image: Option<String>,
    /// `--adc`: mount the Application Default Credentials file into every container.
    pub adc: bool,
    pub sluice_bin: Option<PathBuf>,
    pub current_exe: Option<PathBuf>,
    pub log_mode: local::LogMode,
    pub parent_env: Vec<(String, String)>,
}

/// `local SPEC JOB`.
pub async fn local(
    output: OutputFormat,
    shutdown: &Shutdown,
    opts: &LocalOptions,
    sink: Arc<dyn local::Output>,
    out: &mut dyn Write,
) -> Result<i32, CommandError> {
    let spec = Spec::load(&opts.spec)?;
    for w in &spec.warnings {
        tracing::warn!("{w}");
    }
    let job = spec.job(&opts.job).map_err(CommandError::usage)?.clone();
    let path_var = opts
        .parent_env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| std::ffi::OsString::from(v));
    let launcher = if opts.docker {
        let image = opts
            .image
            .clone()
            .or_else(|| job.image.clone())
            .ok_or_else(|| {
                CommandError::usage(format!(
                    "job {:?}: --docker needs an image (--image, or the job's image)",
                    job.name
                ))
            })?;
        let engine =
            local::check_engine(&opts.engine, path_var.as_ref()).map_err(CommandError::usage)?;
        let adc = opts
            .adc
            .then(|| crate::local_docker::AdcMount::locate(&opts.parent_env))
            .transpose()
            .map_err(CommandError::usage)?;
        local::Launcher::Docker { engine, image, adc }
    } else {
        let needs_sluice = job
            .command
            .first()
            .is_none_or(|c| c == "sluice" || c.ends_with("/sluice"));
        let sluice_bin = if needs_sluice {
            Some(
                local::resolve_sluice_bin(
                    opts.sluice_bin.as_deref(),
                    spec.local.sluice_bin.as_deref(),
                    opts.current_exe.as_deref(),
                    path_var.as_ref(),
                )
                .map_err(CommandError::usage)?,
            )
        } else {
            None
        };
        local::Launcher::Direct { sluice_bin }
    };
    let run = LocalRun {
        job,
        tasks: opts.tasks,
        parallelism: opts.parallelism,
        timeout: opts.timeout,
        args: opts.args.clone(),
        env: opts.env.clone(),
        launcher,
        workdir: spec.local.workdir.clone(),
        kill_grace: spec.local.kill_grace,
        log_mode: opts.log_mode,
        parent_env: opts.parent_env.clone(),
    };
    let report = local::run(run, shutdown.clone(), sink).await?;
    match output {
        OutputFormat::Json => print_json(out, &report)?,
        OutputFormat::Text => write!(out, "{}", report::render_text(&report))?,
    }
    Ok(report.exit_code)
}
