//! `sluice-trigger local`: a job's tasks run on this machine the way Cloud Run runs them.
//!
//! - Each task is the container's command/args from the spec — the `sluice` binary directly,
//!   any other command as written, or `docker run IMAGE` with `--docker` (`local_docker`: the
//!   run line, which variables a container gets, the workdir mount) — with the spec's env,
//!   the `[local]` env, and the task contract: `CLOUD_RUN_JOB`, `CLOUD_RUN_EXECUTION` (a fresh
//!   `JOB-xxxxx` id), `CLOUD_RUN_TASK_INDEX`, `CLOUD_RUN_TASK_COUNT`, `CLOUD_RUN_TASK_ATTEMPT`.
//! - At most `parallelism` tasks run at once; tasks start in index order.
//! - A failed attempt (non-zero exit, killed, or timed out) is retried up to `max_retries`
//!   times with `CLOUD_RUN_TASK_ATTEMPT` incremented; the task keeps its slot while retrying.
//! - The task timeout applies per attempt: SIGTERM to the task's main process (as Cloud Run
//!   signals the container's PID 1), SIGKILL to its whole process group after the grace
//!   period (10 s, as on Cloud Run). Each task runs in its own process group, so a terminal's
//!   Ctrl-C reaches only `sluice-trigger`, which forwards SIGTERM to every running task and
//!   starts nothing new.
//! - Task output (stdout and stderr) is re-emitted line by line on our stderr: in JSON mode
//!   every line is one Cloud Logging JSON object carrying the task's labels (a task's own
//!   JSON lines pass through untouched when they already carry labels); in text mode each line
//!   is prefixed `[task 3/5 attempt 0]` (0-based, like the env contract).

use crate::local_docker;
use crate::report::{
    Counts, ExecutionReport, ExecutionState, Mode, TaskReport, TaskState, rfc3339,
};
use crate::spec::{EnvValue, JobSpec};
use chrono::Utc;
use serde_json::{Map, Value};
use sluice_runtime::logging::cloud_json::{KEY_LABELS, labels};
use sluice_runtime::supervise::{
    self, Signal, StopTarget, Stream, SuperviseError, Supervision, Termination,
};
use sluice_runtime::{Shutdown, TaskContext};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;
use tokio::sync::Semaphore;

/// How task processes are started.
#[derive(Debug, Clone)]
pub(crate) enum Launcher {
    /// The command itself; `sluice` (absent command, or a command whose first word is
    /// `sluice` or `.../sluice`) means this binary.
    Direct { sluice_bin: Option<PathBuf> },
    /// `ENGINE run --rm --network host ... IMAGE`, with `--adc` credentials mounted.
    Docker {
        engine: PathBuf,
        image: String,
        adc: Option<local_docker::AdcMount>,
    },
}

/// How task output is re-emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMode {
    Json,
    Text,
}

/// Where re-emitted task lines go (stderr in the binary; a buffer in tests).
pub trait Output: Send + Sync {
    fn line(&self, line: &str);
}

/// Writes each line to stderr in one call, so lines from concurrent tasks never interleave.
pub struct Stderr;

impl Output for Stderr {
    fn line(&self, line: &str) {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(format!("{line}\n").as_bytes());
    }
}

/// Everything one local execution needs.
#[derive(Debug, Clone)]
pub(crate) struct LocalRun {
    pub job: JobSpec,
    /// Overrides of the spec's task count, parallelism, task timeout and args.
    pub tasks: Option<u32>,
    pub parallelism: Option<u32>,
    pub timeout: Option<Duration>,
    pub args: Option<Vec<String>>,
    /// Extra env, applied last (`--env K=V`).
    pub env: Vec<(String, String)>,
    pub launcher: Launcher,
    pub workdir: PathBuf,
    pub kill_grace: Duration,
    pub log_mode: LogMode,
    /// The environment `sluice-trigger` runs in: tasks inherit it (like the image's env
    /// they would have on Cloud Run: PATH, HOME...), `${VAR}` in local env expands from it,
    /// and secrets not given in the local env are looked up in it.
    pub parent_env: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("job {job}: {message}")]
    Config { job: String, message: String },
}

/// A local run that cannot start is a configuration problem: exit 2.
impl sluice_runtime::ExitStatus for LocalError {
    fn exit_code(&self) -> sluice_runtime::ExitCode {
        match self {
            LocalError::Config { .. } => sluice_runtime::ExitCode::Usage,
        }
    }
}

fn config_error(job: &JobSpec, message: impl Into<String>) -> LocalError {
    LocalError::Config {
        job: job.name.clone(),
        message: message.into(),
    }
}

/// `JOB-xxxxx`, like Cloud Run's execution ids.
pub(crate) fn execution_id(job: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{job}-{suffix}")
}

/// Finds the `sluice` binary: the flag, then `[local] sluice_bin`, then `sluice` next to this
/// executable, then `sluice` on `PATH`.
pub(crate) fn resolve_sluice_bin(
    flag: Option<&Path>,
    spec: Option<&Path>,
    current_exe: Option<&Path>,
    path_var: Option<&OsString>,
) -> Result<PathBuf, String> {
    if let Some(p) = flag.or(spec) {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("the sluice binary {} does not exist", p.display()))
        };
    }
    if let Some(dir) = current_exe.and_then(Path::parent) {
        let candidate = dir.join("sluice");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if let Some(found) = find_on_path("sluice", path_var) {
        return Ok(found);
    }
    Err(
        "cannot find the sluice binary: not next to sluice-trigger nor on PATH; build it \
         (cargo build -p sluice-cli) or pass --sluice-bin / set [local] sluice_bin"
            .into(),
    )
}

/// `name` as found on `PATH` (or as given, if it contains a slash and exists).
pub(crate) fn find_on_path(name: &str, path_var: Option<&OsString>) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn is_sluice(word: &str) -> bool {
    word == "sluice" || word.ends_with("/sluice")
}

/// The process argv of a task started directly.
pub(crate) fn direct_argv(
    job: &JobSpec,
    args: &[String],
    sluice_bin: Option<&Path>,
) -> Result<Vec<String>, String> {
    let needs_sluice = job.command.first().is_none_or(|c| is_sluice(c));
    let mut argv = Vec::new();
    if needs_sluice {
        let bin = sluice_bin.ok_or("this job runs the sluice binary, which was not found")?;
        argv.push(bin.display().to_string());
        argv.extend(job.command.iter().skip(1).cloned());
    } else {
        argv.extend(job.command.iter().cloned());
    }
    argv.extend(args.iter().cloned());
    Ok(argv)
}

/// Expands `${NAME}` and `${NAME:-default}` from `env`; `$$` is a literal `$`.
pub(crate) fn expand(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {value:?}"))?;
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match env(name).filter(|v| !v.is_empty()) {
                Some(v) => out.push_str(&v),
                None => match default {
                    Some(d) => out.push_str(d),
                    None => return Err(format!("${{{name}}} is not set")),
                },
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The env every task of the execution gets on top of the inherited environment (without
/// the per-task contract variables).
fn execution_env(
    run: &LocalRun,
    warn: &mut Vec<String>,
) -> Result<Vec<(String, String)>, LocalError> {
    let parent = |name: &str| {
        run.parent_env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut local: Vec<(String, String)> = Vec::new();
    for (k, v) in &run.job.local_env {
        let value = expand(v, &parent)
            .map_err(|e| config_error(&run.job, format!("local env {k}: {e}")))?;
        local.push((k.clone(), value));
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for var in &run.job.env {
        match &var.value {
            EnvValue::Plain(v) => env.push((var.name.clone(), v.clone())),
            EnvValue::Secret { secret, .. } => {
                let given =
                    local.iter().any(|(k, _)| k == &var.name) || parent(&var.name).is_some();
                if !given {
                    warn.push(format!(
                        "secret env {} (Secret Manager secret {secret}) is not available locally; \
                         set it in [local] env or in the environment",
                        var.name
                    ));
                }
            }
        }
    }
    env.extend(local);
    env.extend(run.env.iter().cloned());
    Ok(env)
}

#[derive(Debug, Clone, Default)]
struct Attempt {
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    interrupted: bool,
    error: Option<String>,
}

impl Attempt {
    fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.interrupted && self.error.is_none()
    }

    fn describe(&self, timeout: Duration) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        if self.timed_out {
            return format!(
                "timed out after {} (SIGTERM)",
                crate::duration::human(timeout)
            );
        }
        match (self.exit_code, self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "ended without status".into(),
        }
    }
}

/// Shared per-execution state for the task workers.
struct Exec {
    job: String,
    execution: String,
    count: u32,
    timeout: Duration,
    max_retries: u32,
    grace: Duration,
    env: Vec<(String, String)>,
    launcher: Launcher,
    argv_direct: Option<Vec<String>>,
    args: Vec<String>,
    spec: JobSpec,
    workdir: PathBuf,
    /// What containers may inherit by name (`local_docker::env_names`).
    parent_env: Vec<(String, String)>,
    log_mode: LogMode,
    out: Arc<dyn Output>,
    shutdown: Shutdown,
}

impl Exec {
    fn task_env(&self, index: u32, attempt: u32) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.push(("CLOUD_RUN_JOB".into(), self.job.clone()));
        env.push(("CLOUD_RUN_EXECUTION".into(), self.execution.clone()));
        env.push(("CLOUD_RUN_TASK_INDEX".into(), index.to_string()));
        env.push(("CLOUD_RUN_TASK_COUNT".into(), self.count.to_string()));
        env.push(("CLOUD_RUN_TASK_ATTEMPT".into(), attempt.to_string()));
        env
    }

    fn context(&self, index: u32, attempt: u32) -> TaskContext {
        TaskContext {
            index,
            count: self.count,
            attempt,
            job: Some(self.job.clone()),
            execution: Some(self.execution.clone()),
        }
    }

    async fn run_task(&self, index: u32) -> TaskReport {
        let started = Utc::now();
        let mut last = Attempt::default();
        let mut attempts = 0;
        let mut state = TaskState::Failed;
        for attempt in 0..=self.max_retries {
            if self.shutdown.is_cancelled() {
                state = TaskState::Cancelled;
                break;
            }
            attempts += 1;
            last = self.run_attempt(index, attempt).await;
            if last.succeeded() {
                state = TaskState::Succeeded;
                break;
            }
            if last.interrupted {
                state = TaskState::Cancelled;
                break;
            }
            let what = last.describe(self.timeout);
            if attempt < self.max_retries {
                tracing::warn!(
                    task = index,
                    attempt,
                    "task {index} attempt {attempt} failed ({what}); retrying"
                );
            } else {
                tracing::warn!(
                    task = index,
                    attempt,
                    "task {index} failed ({what}) after {attempts} attempt(s)"
                );
            }
        }
        TaskReport {
            index,
            state,
            attempts,
            retried: attempts.saturating_sub(1),
            exit_code: last.exit_code,
            term_signal: last.signal,
            log_uri: None,
            start_time: Some(rfc3339(started)),
            completion_time: Some(rfc3339(Utc::now())),
            message: (state != TaskState::Succeeded && attempts > 0)
                .then(|| last.describe(self.timeout)),
        }
    }

    async fn run_attempt(&self, index: u32, attempt: u32) -> Attempt {
        let env = self.task_env(index, attempt);
        let container = format!("sluice-{}-{index}-{attempt}", self.execution);
        let argv = match &self.launcher {
            Launcher::Direct { .. } => self.argv_direct.clone().unwrap_or_default(),
            Launcher::Docker { engine, image, adc } => {
                let names = local_docker::env_names(&env, &self.parent_env, &self.spec);
                local_docker::DockerTask {
                    engine,
                    image,
                    container_name: &container,
                    job: &self.spec,
                    args: &self.args,
                    env_names: &names,
                    workdir: &self.workdir,
                    adc: adc.as_ref(),
                }
                .argv()
            }
        };
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.workdir);
        let docker = match &self.launcher {
            Launcher::Docker { engine, .. } => Some(engine),
            Launcher::Direct { .. } => None,
        };
        let supervision = Supervision {
            // As Cloud Run does: SIGTERM to the container's main process, SIGKILL to
            // everything after the grace period.
            stop_signal: Signal::Terminate,
            // A container gets the signal through the engine; signalling the `docker run`
            // client would not reach it the same way.
            stop_target: if docker.is_some() {
                StopTarget::Caller
            } else {
                StopTarget::Leader
            },
            grace: self.grace,
            timeout: Some(self.timeout),
            max_line_bytes: supervise::DEFAULT_MAX_LINE_BYTES,
            // Tasks live in their own process groups: if sluice-trigger exits abruptly (a
            // second Ctrl-C), nothing else would stop them.
            kill_on_exit: true,
        };
        let task = self.context(index, attempt);
        let cancel = self.shutdown.token();
        let finished = supervise::run(cmd, &supervision, &cancel, |event| match event {
            supervise::Event::Started { pid } => tracing::info!(
                task = index,
                attempt,
                pid,
                "task {index} attempt {attempt} started (pid {pid})"
            ),
            supervise::Event::Line(line) => {
                let text = if line.truncated {
                    format!(
                        "{} [line cut at {} bytes]",
                        line.text, supervision.max_line_bytes
                    )
                } else {
                    line.text
                };
                self.out
                    .line(&format_line(self.log_mode, &task, line.stream, &text));
            }
            supervise::Event::Stopping { .. } => {
                if let Some(engine) = docker {
                    docker_kill(engine, &container, Some("TERM"));
                }
            }
            supervise::Event::Killing { .. } => {
                tracing::warn!(
                    task = index,
                    attempt,
                    "still running {} after SIGTERM; sending SIGKILL",
                    crate::duration::human(self.grace)
                );
                if let Some(engine) = docker {
                    docker_kill(engine, &container, None);
                }
            }
        })
        .await;
        match finished {
            Ok(finished) => {
                let (exit_code, signal) = match finished.termination {
                    Termination::Exited(code) => (Some(code), None),
                    Termination::Signalled(signal) => (None, Some(signal)),
                };
                Attempt {
                    exit_code,
                    signal,
                    timed_out: finished.timed_out,
                    interrupted: finished.stopped,
                    error: None,
                }
            }
            Err(err @ SuperviseError::Spawn { .. }) => {
                let msg = err.to_string();
                self.emit(index, attempt, Stream::Stderr, &msg);
                Attempt {
                    error: Some(msg),
                    exit_code: Some(127),
                    ..Attempt::default()
                }
            }
            Err(err @ SuperviseError::Wait { .. }) => Attempt {
                error: Some(format!("cannot wait for the task: {err}")),
                ..Attempt::default()
            },
        }
    }

    fn emit(&self, index: u32, attempt: u32, stream: Stream, line: &str) {
        let rendered = format_line(self.log_mode, &self.context(index, attempt), stream, line);
        self.out.line(&rendered);
    }
}

/// One line of task output as re-emitted (see the module docs).
pub(crate) fn format_line(mode: LogMode, task: &TaskContext, stream: Stream, line: &str) -> String {
    let parsed: Option<Map<String, Value>> = line
        .trim_start()
        .starts_with('{')
        .then(|| serde_json::from_str::<Map<String, Value>>(line).ok())
        .flatten();
    match mode {
        LogMode::Json => match parsed {
            Some(obj) if obj.contains_key(KEY_LABELS) => line.to_string(),
            Some(mut obj) => {
                obj.insert(KEY_LABELS.into(), Value::Object(labels(task)));
                Value::Object(obj).to_string()
            }
            None => {
                let mut obj = Map::new();
                let severity = match stream {
                    Stream::Stdout => "INFO",
                    Stream::Stderr => "ERROR",
                };
                obj.insert("severity".into(), severity.into());
                obj.insert("message".into(), line.into());
                obj.insert("timestamp".into(), rfc3339(Utc::now()).into());
                obj.insert(KEY_LABELS.into(), Value::Object(labels(task)));
                Value::Object(obj).to_string()
            }
        },
        LogMode::Text => {
            let prefix = format!(
                "[task {}/{} attempt {}]",
                task.index, task.count, task.attempt
            );
            match parsed {
                Some(obj) if obj.contains_key("message") => {
                    let severity = obj
                        .get("severity")
                        .and_then(Value::as_str)
                        .unwrap_or("INFO");
                    let message = match obj.get("message") {
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    };
                    format!("{prefix} {severity} {message}")
                }
                _ => format!("{prefix} {line}"),
            }
        }
    }
}

/// `ENGINE kill [--signal SIG] CONTAINER`; a container that is already gone is fine.
fn docker_kill(engine: &Path, container: &str, signal: Option<&str>) {
    let mut command = std::process::Command::new(engine);
    command.arg("kill");
    if let Some(signal) = signal {
        command.args(["--signal", signal]);
    }
    let _ = command
        .arg(container)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Checks that `--docker` can work before any task starts.
pub(crate) fn check_engine(engine: &Path, path_var: Option<&OsString>) -> Result<PathBuf, String> {
    let name = engine.display().to_string();
    let found = find_on_path(&name, path_var).ok_or_else(|| {
        format!(
            "--docker needs a container engine, but {name:?} was not found{} \
             (install Docker or Podman, or pass --engine PATH)",
            if name.contains('/') { "" } else { " on PATH" }
        )
    })?;
    let out = std::process::Command::new(&found)
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", found.display()))?;
    if !out.status.success() {
        return Err(format!(
            "container engine {} is installed but not usable: {}",
            found.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(found)
}

/// Runs the execution and reports it like `run --wait` does. Warnings (e.g. secrets that are
/// not available locally) are logged before the first task starts.
pub(crate) async fn run(
    run: LocalRun,
    shutdown: Shutdown,
    out: Arc<dyn Output>,
) -> Result<ExecutionReport, LocalError> {
    let job = &run.job;
    let count = run.tasks.unwrap_or(job.tasks);
    if count == 0 || count > crate::spec::MAX_TASKS {
        return Err(config_error(
            job,
            format!(
                "--tasks {count} is out of range (1 to {})",
                crate::spec::MAX_TASKS
            ),
        ));
    }
    let parallelism = match run.parallelism.unwrap_or(job.parallelism) {
        // Cloud Run's "as many as possible"; here: as many as there are cores.
        0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        p => p,
    }
    .min(count);
    let parent = |name: &str| {
        run.parent_env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    // --args wins; then the job's local_args (expanded like local env); then its args.
    let args = match (&run.args, &job.local_args) {
        (Some(a), _) => a.clone(),
        (None, Some(local)) => local
            .iter()
            .map(|a| expand(a, &parent))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| config_error(job, format!("local_args: {e}")))?,
        (None, None) => job.args.clone(),
    };
    let argv_direct = match &run.launcher {
        Launcher::Direct { sluice_bin } => {
            Some(direct_argv(job, &args, sluice_bin.as_deref()).map_err(|e| config_error(job, e))?)
        }
        Launcher::Docker { .. } => None,
    };
    if let Some(argv) = &argv_direct
        && argv.is_empty()
    {
        return Err(config_error(job, "nothing to run: no command and no args"));
    }
    if !run.workdir.is_dir() {
        return Err(config_error(
            job,
            format!("local workdir {} does not exist", run.workdir.display()),
        ));
    }
    let mut warnings = Vec::new();
    let env = execution_env(&run, &mut warnings)?;
    for w in &warnings {
        tracing::warn!(job = %job.name, "{w}");
    }
    let execution = execution_id(&job.name);
    let timeout = run.timeout.unwrap_or(job.task_timeout);
    tracing::info!(
        job = %job.name, execution = %execution, tasks = count, parallelism,
        "running {count} task(s) locally, at most {parallelism} at once"
    );
    let exec = Arc::new(Exec {
        job: job.name.clone(),
        execution: execution.clone(),
        count,
        timeout,
        max_retries: job.max_retries,
        grace: run.kill_grace,
        env,
        launcher: run.launcher.clone(),
        argv_direct,
        args,
        spec: job.clone(),
        // Absolute: container mode mounts it at the same path.
        workdir: std::fs::canonicalize(&run.workdir).unwrap_or_else(|_| run.workdir.clone()),
        parent_env: run.parent_env.clone(),
        log_mode: run.log_mode,
        out,
        shutdown: shutdown.clone(),
    });
    let started = Utc::now();
    let slots = Arc::new(Semaphore::new(parallelism as usize));
    let mut handles = Vec::new();
    let cancel = shutdown.token();
    for index in 0..count {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore never closes"),
            _ = cancel.cancelled() => break,
        };
        let exec = exec.clone();
        handles.push(tokio::spawn(async move {
            let report = exec.run_task(index).await;
            drop(permit);
            report
        }));
    }
    let mut tasks = Vec::new();
    for h in handles {
        match h.await {
            Ok(t) => tasks.push(t),
            Err(e) => return Err(config_error(job, format!("a task worker crashed: {e}"))),
        }
    }
    // Tasks never started because of an interrupt.
    for index in tasks.len() as u32..count {
        tasks.push(TaskReport {
            index,
            state: TaskState::Cancelled,
            attempts: 0,
            retried: 0,
            exit_code: None,
            term_signal: None,
            log_uri: None,
            start_time: None,
            completion_time: None,
            message: Some("not started (interrupted)".into()),
        });
    }
    let completed = Utc::now();
    let mut counts = Counts::default();
    for t in &tasks {
        match t.state {
            TaskState::Succeeded => counts.succeeded += 1,
            TaskState::Failed => counts.failed += 1,
            TaskState::Cancelled => counts.cancelled += 1,
            TaskState::Running => counts.running += 1,
            TaskState::Pending => counts.pending += 1,
        }
        counts.retried += t.retried;
    }
    let (state, exit_code, message) = if let Some(signal) = shutdown.signal() {
        (
            ExecutionState::Cancelled,
            signal.exit_code().code(),
            Some(format!("interrupted by {}", signal.name())),
        )
    } else if shutdown.is_cancelled() {
        (ExecutionState::Cancelled, 1, Some("cancelled".to_string()))
    } else if counts.succeeded == count {
        (ExecutionState::Succeeded, 0, None)
    } else {
        (
            ExecutionState::Failed,
            1,
            Some(format!("{} of {count} task(s) failed", counts.failed)),
        )
    };
    Ok(ExecutionReport {
        schema: crate::report::EXECUTION_SCHEMA,
        mode: Mode::Local,
        execution: execution.clone(),
        execution_id: execution,
        job: job.name.clone(),
        project: None,
        region: None,
        state,
        exit_code,
        task_count: count,
        parallelism,
        counts,
        tasks,
        log_uri: None,
        create_time: Some(rfc3339(started)),
        start_time: Some(rfc3339(started)),
        completion_time: Some(rfc3339(completed)),
        duration_seconds: Some((completed - started).num_milliseconds() as f64 / 1000.0),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;

    fn job(extra: &str) -> JobSpec {
        let text = format!("[[jobs]]\nname = \"extract\"\nimage = \"img:1\"\n{extra}");
        Spec::parse(&text, Path::new("jobs.toml"), Path::new("."))
            .unwrap()
            .jobs
            .remove(0)
    }

    #[test]
    fn argv_uses_the_sluice_binary_for_the_image_entrypoint() {
        let bin = PathBuf::from("/opt/sluice");
        let j = job("args = [\"extract\", \"--dest\", \"x\"]\n");
        assert_eq!(
            direct_argv(&j, &j.args, Some(&bin)).unwrap(),
            vec!["/opt/sluice", "extract", "--dest", "x"]
        );
        let j = job("command = [\"/usr/local/bin/sluice\", \"dbt\"]\nargs = [\"build\"]\n");
        assert_eq!(
            direct_argv(&j, &j.args, Some(&bin)).unwrap(),
            vec!["/opt/sluice", "dbt", "build"]
        );
        let j = job("command = [\"sh\", \"-c\", \"exit 0\"]\n");
        assert_eq!(
            direct_argv(&j, &j.args, None).unwrap(),
            vec!["sh", "-c", "exit 0"]
        );
        assert!(direct_argv(&job(""), &[], None).is_err());
    }

    #[test]
    fn expansion() {
        let env = |n: &str| (n == "PORT").then(|| "4443".to_string());
        assert_eq!(
            expand("http://127.0.0.1:${PORT}/x", &env).unwrap(),
            "http://127.0.0.1:4443/x"
        );
        assert_eq!(
            expand("${HOST:-localhost}:$$1", &env).unwrap(),
            "localhost:$1"
        );
        assert_eq!(expand("a$b", &env).unwrap(), "a$b");
        assert!(
            expand("${MISSING}", &env)
                .unwrap_err()
                .contains("${MISSING} is not set")
        );
        assert!(expand("${PORT", &env).is_err());
    }

    #[test]
    fn json_lines_stay_parseable_and_carry_labels() {
        let t = TaskContext {
            index: 3,
            count: 5,
            attempt: 1,
            job: Some("extract".into()),
            execution: Some("extract-ab12c".into()),
        };
        let plain = format_line(
            LogMode::Json,
            &t,
            Stream::Stderr,
            "Traceback (most recent call last):",
        );
        let v: Value = serde_json::from_str(&plain).unwrap();
        assert_eq!(v["severity"], "ERROR");
        assert_eq!(v[KEY_LABELS]["task_index"], "3");
        assert_eq!(v[KEY_LABELS]["execution"], "extract-ab12c");
        let own = r#"{"severity":"INFO","message":"hi","logging.googleapis.com/labels":{"task_index":"3"}}"#;
        assert_eq!(format_line(LogMode::Json, &t, Stream::Stdout, own), own);
        let unlabelled = format_line(
            LogMode::Json,
            &t,
            Stream::Stdout,
            r#"{"message":"m","n":1}"#,
        );
        let v: Value = serde_json::from_str(&unlabelled).unwrap();
        assert_eq!(v["n"], 1);
        assert_eq!(v[KEY_LABELS]["task_attempt"], "1");
        assert_eq!(
            format_line(LogMode::Text, &t, Stream::Stdout, "hello"),
            "[task 3/5 attempt 1] hello"
        );
        assert_eq!(
            format_line(LogMode::Text, &t, Stream::Stdout, own),
            "[task 3/5 attempt 1] INFO hi"
        );
    }

    #[test]
    fn sluice_bin_resolution_order() {
        let dir = tempfile::tempdir().unwrap();
        let exe_dir = dir.path().join("bin");
        std::fs::create_dir(&exe_dir).unwrap();
        let next_to = exe_dir.join("sluice");
        std::fs::write(&next_to, "").unwrap();
        let flag = dir.path().join("flag-sluice");
        std::fs::write(&flag, "").unwrap();
        let exe = exe_dir.join("sluice-trigger");
        assert_eq!(
            resolve_sluice_bin(Some(&flag), None, Some(&exe), None).unwrap(),
            flag
        );
        assert_eq!(
            resolve_sluice_bin(None, None, Some(&exe), None).unwrap(),
            next_to
        );
        let path = OsString::from(exe_dir.as_os_str());
        assert_eq!(
            resolve_sluice_bin(None, None, Some(Path::new("/nowhere/x")), Some(&path)).unwrap(),
            next_to
        );
        let err =
            resolve_sluice_bin(None, Some(Path::new("/nope/sluice")), None, None).unwrap_err();
        assert!(err.contains("/nope/sluice does not exist"), "{err}");
        assert!(
            resolve_sluice_bin(None, None, None, None)
                .unwrap_err()
                .contains("--sluice-bin")
        );
    }

    #[test]
    fn missing_engine_is_a_clear_error() {
        let err = check_engine(Path::new("/nonexistent/docker"), None).unwrap_err();
        assert!(err.contains("--docker needs a container engine"), "{err}");
        let err = check_engine(
            Path::new("no-such-engine-xyz"),
            Some(&OsString::from("/nonexistent")),
        )
        .unwrap_err();
        assert!(err.contains("not found on PATH"), "{err}");
    }
}
