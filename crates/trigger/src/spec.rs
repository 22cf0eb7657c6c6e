//! `jobs.toml`: the declarative description of a pipeline's Cloud Run jobs, and of how
//! `sluice-trigger local` runs them on this machine. The format is documented in
//! `docs/jobs-spec.md`; this module parses it, applies `[defaults]`, and validates every field
//! with errors that name the job and the field.
//!
//! ```toml
//! [defaults]
//! project = "my-project"
//! region = "europe-west1"
//! image = "europe-west1-docker.pkg.dev/my-project/sluice/sluice:latest"
//! env = { RUST_LOG = "info" }
//!
//! [local]
//! env = { STORAGE_EMULATOR_HOST = "http://127.0.0.1:4443" }
//!
//! [[jobs]]
//! name = "extract"
//! args = ["extract", "--dest", "gs://bucket/raw"]
//! tasks = 4
//! parallelism = 2
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Cloud Run's defaults, made explicit so that a deployed job compares equal to its spec
/// (the API fills these in when a request leaves them out).
pub(crate) const DEFAULT_CPU: &str = "1";
pub(crate) const DEFAULT_MEMORY: &str = "512Mi";
pub(crate) const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(600);
pub(crate) const DEFAULT_MAX_RETRIES: u32 = 3;
/// Cloud Run limits.
pub(crate) const MAX_TASKS: u32 = 10_000;
pub(crate) const MAX_TASK_TIMEOUT: Duration = Duration::from_secs(168 * 3600);
pub(crate) const MAX_RETRIES_LIMIT: u32 = 10;
/// SIGTERM -> SIGKILL grace, as on Cloud Run.
pub(crate) const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

/// Env names Cloud Run sets itself (and `local` sets the same way), plus the marker
/// `sluice-trigger run` adds to identify its executions: a spec may not set them.
pub(crate) const RESERVED_ENV: &[&str] = &[
    "CLOUD_RUN_JOB",
    "CLOUD_RUN_EXECUTION",
    "CLOUD_RUN_TASK_INDEX",
    "CLOUD_RUN_TASK_COUNT",
    "CLOUD_RUN_TASK_ATTEMPT",
    crate::RUN_MARKER_ENV,
];

/// Label key prefixes the Admin API rejects or reserves.
pub(crate) const RESERVED_LABEL_PREFIXES: &[&str] =
    &["run.googleapis.com/", "cloud.googleapis.com/", "goog-"];

// ---------------------------------------------------------------------------------------------
// The TOML shape (serde). Unknown keys are errors, so a typo never silently does nothing.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    defaults: RawSettings,
    #[serde(default)]
    local: RawLocal,
    #[serde(default)]
    jobs: Vec<RawSettings>,
}

/// One job, or `[defaults]` (where `name`, `local_env` and `local_args` are not allowed).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    name: Option<String>,
    project: Option<String>,
    region: Option<String>,
    image: Option<String>,
    service_account: Option<String>,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    env: Option<BTreeMap<String, Scalar>>,
    secrets: Option<BTreeMap<String, RawSecret>>,
    cpu: Option<Scalar>,
    memory: Option<String>,
    tasks: Option<i64>,
    parallelism: Option<i64>,
    task_timeout: Option<String>,
    max_retries: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    vpc: Option<RawVpc>,
    local_env: Option<BTreeMap<String, Scalar>>,
    local_args: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocal {
    sluice_bin: Option<String>,
    workdir: Option<String>,
    kill_grace: Option<String>,
    env: Option<BTreeMap<String, Scalar>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawSecret {
    Name(String),
    Ref {
        secret: String,
        #[serde(default)]
        version: Option<Scalar>,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVpc {
    connector: Option<String>,
    network: Option<String>,
    subnetwork: Option<String>,
    tags: Option<Vec<String>>,
    egress: Option<String>,
}

/// Env values and CPU may be written as TOML strings, integers, floats or booleans; Cloud Run
/// wants strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Scalar {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::String(s) => s,
            Scalar::Integer(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The validated, defaults-applied model.

/// A parsed and validated `jobs.toml`.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// The file it came from (for messages).
    pub path: PathBuf,
    /// `[defaults]` project and region (jobs carry them merged in already).
    pub project: Option<String>,
    pub region: Option<String>,
    /// Jobs in file order.
    pub jobs: Vec<JobSpec>,
    pub local: LocalSettings,
    /// Non-fatal findings (e.g. a plain env value that looks like a secret).
    pub warnings: Vec<String>,
}

/// One Cloud Run job, with `[defaults]` applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobSpec {
    pub name: String,
    pub project: Option<String>,
    pub region: Option<String>,
    /// Required to deploy; `local` without `--docker` does not need it.
    pub image: Option<String>,
    pub service_account: Option<String>,
    /// Entrypoint override; empty = the image's entrypoint (`sluice`).
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// Sorted by name (deterministic request bodies and diffs).
    pub env: Vec<EnvVar>,
    pub cpu: Cpu,
    pub memory: Memory,
    pub tasks: u32,
    /// 0 = as many as Cloud Run allows.
    pub parallelism: u32,
    pub task_timeout: Duration,
    pub max_retries: u32,
    pub labels: BTreeMap<String, String>,
    pub vpc: Option<Vpc>,
    /// `[local].env` merged with this job's `local_env` (job wins); `${VAR}` not yet expanded.
    pub local_env: Vec<(String, String)>,
    /// Args for local runs instead of `args` (e.g. loopback URLs); `${VAR}` not yet expanded.
    pub local_args: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnvVar {
    pub name: String,
    pub value: EnvValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnvValue {
    Plain(String),
    /// A Secret Manager reference: Cloud Run resolves it; the value never passes through us.
    Secret {
        secret: String,
        version: String,
    },
}

/// CPU limit in millicores, with the API spelling it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cpu {
    pub millis: u64,
}

impl Cpu {
    pub(crate) fn parse(text: &str) -> Result<Cpu, String> {
        let millis = parse_cpu_millis(text).ok_or_else(|| {
            format!("{text:?} is not a CPU quantity (expected e.g. 1, 2, 0.5 or 500m)")
        })?;
        if millis == 0 || millis > 8000 {
            return Err(format!(
                "{text:?} is out of range (Cloud Run allows up to 8 CPUs)"
            ));
        }
        Ok(Cpu { millis })
    }

    /// `"2"` for whole CPUs, `"500m"` otherwise.
    pub(crate) fn to_api(self) -> String {
        if self.millis.is_multiple_of(1000) {
            (self.millis / 1000).to_string()
        } else {
            format!("{}m", self.millis)
        }
    }
}

/// Parses Kubernetes-style CPU quantities (`1`, `0.5`, `500m`) into millicores.
pub(crate) fn parse_cpu_millis(text: &str) -> Option<u64> {
    let t = text.trim();
    if let Some(m) = t.strip_suffix('m') {
        return m.parse::<u64>().ok();
    }
    let value: f64 = t.parse().ok()?;
    if !value.is_finite() || value < 0.0 || t.starts_with('+') {
        return None;
    }
    let millis = value * 1000.0;
    (millis.fract().abs() < 1e-6).then_some(millis.round() as u64)
}

/// Memory limit in bytes, with the spelling given (sent as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Memory {
    pub bytes: u64,
    pub text: String,
}

impl Memory {
    pub(crate) fn parse(text: &str) -> Result<Memory, String> {
        let bytes = parse_memory_bytes(text).ok_or_else(|| {
            format!("{text:?} is not a memory quantity (expected e.g. 512Mi, 2Gi)")
        })?;
        const MI: u64 = 1 << 20;
        if !(128 * MI..=32 * 1024 * MI).contains(&bytes) {
            return Err(format!(
                "{text:?} is out of range (Cloud Run allows 128Mi to 32Gi)"
            ));
        }
        Ok(Memory {
            bytes,
            text: text.trim().to_string(),
        })
    }
}

/// Parses Kubernetes-style memory quantities (`512Mi`, `2Gi`, `1G`, `1000000`) into bytes.
pub(crate) fn parse_memory_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let multiplier: u64 = match unit {
        "" => 1,
        "k" | "K" => 1000,
        "M" => 1000u64.pow(2),
        "G" => 1000u64.pow(3),
        "T" => 1000u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    if number.is_empty() {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let bytes = value * multiplier as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes.round() as u64)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Vpc {
    pub access: VpcAccess,
    pub egress: Egress,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VpcAccess {
    /// A Serverless VPC Access connector (`projects/P/locations/R/connectors/C` or its id).
    Connector(String),
    /// Direct VPC egress.
    Direct {
        network: Option<String>,
        subnetwork: Option<String>,
        tags: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Egress {
    AllTraffic,
    /// Cloud Run's default when egress is not given.
    PrivateRangesOnly,
}

impl Egress {
    pub(crate) fn parse(text: &str) -> Result<Egress, String> {
        match text.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "all-traffic" | "all" => Ok(Egress::AllTraffic),
            "private-ranges-only" | "private-ranges" => Ok(Egress::PrivateRangesOnly),
            _ => Err(format!(
                "{text:?} is not an egress setting (expected all-traffic or private-ranges-only)"
            )),
        }
    }
}

/// Settings only `sluice-trigger local` uses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LocalSettings {
    /// The `sluice` binary for local runs, resolved against the spec's directory.
    pub sluice_bin: Option<PathBuf>,
    /// Working directory of local tasks (default: the spec's directory).
    pub workdir: PathBuf,
    /// SIGTERM -> SIGKILL grace.
    pub kill_grace: Duration,
}

/// Every problem found in a spec, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

/// A spec that does not validate is the user's to fix: exit 2.
impl sluice_runtime::ExitStatus for SpecError {
    fn exit_code(&self) -> sluice_runtime::ExitCode {
        sluice_runtime::ExitCode::Usage
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid job spec {}:", self.path.display())?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

impl Spec {
    /// Reads and validates a spec file.
    pub(crate) fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            path: path.to_path_buf(),
            problems: vec![format!("cannot read it: {e}")],
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Spec::parse(&text, path, base)
    }

    /// Parses and validates spec text; relative local paths resolve against `base_dir`.
    pub(crate) fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<Spec, SpecError> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| SpecError {
            path: path.to_path_buf(),
            problems: vec![e.to_string().trim_end().to_string()],
        })?;
        let mut v = Validator::default();
        let local = v.local(&raw.local, base_dir);
        if raw.defaults.name.is_some() {
            v.problem(
                "[defaults]: field \"name\" is not allowed here (each [[jobs]] entry names itself)",
            );
        }
        if raw.defaults.local_env.is_some() {
            v.problem("[defaults]: field \"local_env\" is not allowed here (use [local] env)");
        }
        if raw.defaults.local_args.is_some() {
            v.problem("[defaults]: field \"local_args\" is not allowed here (set it per job)");
        }
        let local_env_defaults = raw.local.env.clone().unwrap_or_default();
        let mut jobs: Vec<JobSpec> = Vec::new();
        if raw.jobs.is_empty() {
            v.problem("no jobs: add at least one [[jobs]] entry with a name");
        }
        for (i, job) in raw.jobs.iter().enumerate() {
            let Some(name) = job.name.clone() else {
                v.problem(format!(
                    "[[jobs]] entry #{}: field \"name\" is required",
                    i + 1
                ));
                continue;
            };
            if jobs.iter().any(|j| j.name == name) {
                v.problem(format!("job {name:?}: defined more than once"));
                continue;
            }
            if let Some(job) = v.job(&name, &raw.defaults, job, &local_env_defaults) {
                jobs.push(job);
            }
        }
        if v.problems.is_empty() {
            Ok(Spec {
                path: path.to_path_buf(),
                project: raw.defaults.project.clone(),
                region: raw.defaults.region.clone(),
                jobs,
                local,
                warnings: v.warnings,
            })
        } else {
            Err(SpecError {
                path: path.to_path_buf(),
                problems: v.problems,
            })
        }
    }

    /// The job named `name`, or an error listing the names there are.
    pub(crate) fn job(&self, name: &str) -> Result<&JobSpec, String> {
        self.jobs.iter().find(|j| j.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.jobs.iter().map(|j| j.name.as_str()).collect();
            format!(
                "no job {name:?} in {} (jobs: {})",
                self.path.display(),
                names.join(", ")
            )
        })
    }
}

#[derive(Default)]
struct Validator {
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl Validator {
    fn problem(&mut self, p: impl Into<String>) {
        self.problems.push(p.into());
    }

    fn local(&mut self, raw: &RawLocal, base: &Path) -> LocalSettings {
        let resolve = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let kill_grace = match raw
            .kill_grace
            .as_deref()
            .map(sluice_runtime::duration::parse)
        {
            None => DEFAULT_KILL_GRACE,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.problem(format!("[local]: field \"kill_grace\": {e}"));
                DEFAULT_KILL_GRACE
            }
        };
        if let Some(env) = &raw.env {
            for name in env.keys() {
                if let Err(e) = check_env_name(name) {
                    self.problem(format!("[local]: field \"env\": {e}"));
                }
            }
        }
        LocalSettings {
            sluice_bin: raw.sluice_bin.as_deref().map(resolve),
            workdir: raw
                .workdir
                .as_deref()
                .map(resolve)
                .unwrap_or_else(|| base.to_path_buf()),
            kill_grace,
        }
    }

    fn job(
        &mut self,
        name: &str,
        d: &RawSettings,
        j: &RawSettings,
        local_defaults: &BTreeMap<String, Scalar>,
    ) -> Option<JobSpec> {
        let before = self.problems.len();
        let mut p = |field: &str, msg: String| {
            self.problems
                .push(format!("job {name:?}: field {field:?}: {msg}"));
        };
        if let Err(e) = check_job_name(name) {
            p("name", e);
        }
        // Scalars: the job's value, else the default's.
        let pick = |f: fn(&RawSettings) -> &Option<String>| f(j).clone().or_else(|| f(d).clone());
        let project = pick(|s| &s.project);
        let region = pick(|s| &s.region);
        let image = pick(|s| &s.image);
        let service_account = pick(|s| &s.service_account);
        if let Some(v) = &project
            && let Err(e) = check_project(v)
        {
            p("project", e);
        }
        if let Some(v) = &region
            && let Err(e) = check_region(v)
        {
            p("region", e);
        }
        if let Some(v) = &image
            && (v.trim().is_empty() || v.chars().any(char::is_whitespace))
        {
            p("image", format!("{v:?} is not an image reference"));
        }
        if let Some(v) = &service_account
            && !v.contains('@')
        {
            p(
                "service_account",
                format!(
                    "{v:?} is not a service account email (NAME@PROJECT.iam.gserviceaccount.com)"
                ),
            );
        }
        let command = j
            .command
            .clone()
            .or_else(|| d.command.clone())
            .unwrap_or_default();
        if (j.command.is_some() || d.command.is_some()) && command.is_empty() {
            p(
                "command",
                "must not be empty (leave it out to use the image's entrypoint)".into(),
            );
        }
        let args = j
            .args
            .clone()
            .or_else(|| d.args.clone())
            .unwrap_or_default();

        // Env: defaults then job (job wins by name); secrets likewise.
        let mut plain: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in d.env.iter().flatten().chain(j.env.iter().flatten()) {
            plain.insert(k.clone(), v.clone().into_string());
        }
        let mut secrets: BTreeMap<String, RawSecret> = BTreeMap::new();
        for (k, v) in d.secrets.iter().flatten().chain(j.secrets.iter().flatten()) {
            secrets.insert(k.clone(), v.clone());
        }
        let mut env = Vec::new();
        for (k, v) in &plain {
            if let Err(e) = check_env_name(k) {
                p("env", e);
            }
            if secrets.contains_key(k) {
                p("env", format!("{k:?} is set both in env and in secrets"));
            }
            env.push(EnvVar {
                name: k.clone(),
                value: EnvValue::Plain(v.clone()),
            });
        }
        for (k, v) in &secrets {
            if let Err(e) = check_env_name(k) {
                p("secrets", e);
            }
            match secret_ref(v) {
                Ok((secret, version)) => env.push(EnvVar {
                    name: k.clone(),
                    value: EnvValue::Secret { secret, version },
                }),
                Err(e) => p("secrets", format!("{k:?}: {e}")),
            }
        }
        env.sort_by(|a, b| a.name.cmp(&b.name));

        let cpu = match j.cpu.clone().or_else(|| d.cpu.clone()) {
            None => Cpu::parse(DEFAULT_CPU).expect("default cpu parses"),
            Some(s) => Cpu::parse(&s.into_string()).unwrap_or_else(|e| {
                p("cpu", e);
                Cpu { millis: 1000 }
            }),
        };
        let memory = match pick(|s| &s.memory) {
            None => Memory::parse(DEFAULT_MEMORY).expect("default memory parses"),
            Some(s) => Memory::parse(&s).unwrap_or_else(|e| {
                p("memory", e);
                Memory {
                    bytes: 0,
                    text: s.clone(),
                }
            }),
        };
        let mut int = |field: &str, v: Option<i64>, default: u32, min: i64, max: i64| -> u32 {
            match v {
                None => default,
                Some(n) if (min..=max).contains(&n) => n as u32,
                Some(n) => {
                    p(field, format!("{n} is out of range ({min} to {max})"));
                    default
                }
            }
        };
        let tasks = int("tasks", j.tasks.or(d.tasks), 1, 1, MAX_TASKS as i64);
        let parallelism = int(
            "parallelism",
            j.parallelism.or(d.parallelism),
            0,
            0,
            MAX_TASKS as i64,
        );
        let max_retries = int(
            "max_retries",
            j.max_retries.or(d.max_retries),
            DEFAULT_MAX_RETRIES,
            0,
            MAX_RETRIES_LIMIT as i64,
        );
        let task_timeout = match pick(|s| &s.task_timeout) {
            None => DEFAULT_TASK_TIMEOUT,
            Some(t) => match sluice_runtime::duration::parse(&t) {
                Ok(d) if d < Duration::from_secs(1) => {
                    p("task_timeout", format!("{t:?} is shorter than 1s"));
                    DEFAULT_TASK_TIMEOUT
                }
                Ok(d) if d > MAX_TASK_TIMEOUT => {
                    p(
                        "task_timeout",
                        format!("{t:?} is longer than Cloud Run's 168h"),
                    );
                    DEFAULT_TASK_TIMEOUT
                }
                Ok(d) if d.subsec_nanos() != 0 => {
                    p(
                        "task_timeout",
                        format!("{t:?} is not a whole number of seconds"),
                    );
                    DEFAULT_TASK_TIMEOUT
                }
                Ok(d) => d,
                Err(e) => {
                    p("task_timeout", e.to_string());
                    DEFAULT_TASK_TIMEOUT
                }
            },
        };
        let mut labels = BTreeMap::new();
        for (k, v) in d.labels.iter().flatten().chain(j.labels.iter().flatten()) {
            labels.insert(k.clone(), v.clone());
        }
        for (k, v) in &labels {
            if let Err(e) = check_label(k, v) {
                p("labels", e);
            }
        }
        let vpc = match j.vpc.as_ref().or(d.vpc.as_ref()) {
            None => None,
            Some(raw) => match vpc(raw) {
                Ok(v) => Some(v),
                Err(e) => {
                    p("vpc", e);
                    None
                }
            },
        };
        let mut local_env: BTreeMap<String, String> = local_defaults
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_string()))
            .collect();
        for (k, v) in j.local_env.iter().flatten() {
            if let Err(e) = check_env_name(k) {
                p("local_env", e);
            }
            local_env.insert(k.clone(), v.clone().into_string());
        }
        for k in plain.keys().chain(secrets.keys()) {
            self.warnings
                .extend(crate::legacy_env::warning(name, &command, &args, k));
        }
        for k in plain.keys() {
            if looks_secret(k) {
                self.warnings.push(format!(
                    "job {name:?}: env {k:?} looks like a secret but is a plain value; \
                     use [secrets] so the value stays in Secret Manager"
                ));
            }
        }
        if self.problems.len() > before {
            return None;
        }
        Some(JobSpec {
            name: name.to_string(),
            project,
            region,
            image,
            service_account,
            command,
            args,
            env,
            cpu,
            memory,
            tasks,
            parallelism,
            task_timeout,
            max_retries,
            labels,
            vpc,
            local_env: local_env.into_iter().collect(),
            local_args: j.local_args.clone(),
        })
    }
}

fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "API_KEY",
        "PRIVATE_KEY",
        "CREDENTIAL",
    ]
    .iter()
    .any(|w| upper.contains(w))
}

fn secret_ref(raw: &RawSecret) -> Result<(String, String), String> {
    let (secret, version) = match raw {
        RawSecret::Name(s) => (s.clone(), "latest".to_string()),
        RawSecret::Ref { secret, version } => (
            secret.clone(),
            version
                .clone()
                .map(Scalar::into_string)
                .unwrap_or_else(|| "latest".into()),
        ),
    };
    check_secret_name(&secret)?;
    if !(version == "latest"
        || (!version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()) && version != "0"))
    {
        return Err(format!(
            "version {version:?} must be \"latest\" or a positive version number"
        ));
    }
    Ok((secret, version))
}

fn check_secret_name(secret: &str) -> Result<(), String> {
    let id_ok = |id: &str| {
        !id.is_empty()
            && id.len() <= 255
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let parts: Vec<&str> = secret.split('/').collect();
    let ok = match parts.as_slice() {
        [id] => id_ok(id),
        ["projects", project, "secrets", id] => !project.is_empty() && id_ok(id),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "secret {secret:?} is not a Secret Manager secret id or projects/P/secrets/S"
        ))
    }
}

fn vpc(raw: &RawVpc) -> Result<Vpc, String> {
    let egress = match &raw.egress {
        None => Egress::PrivateRangesOnly,
        Some(e) => Egress::parse(e)?,
    };
    let direct = raw.network.is_some() || raw.subnetwork.is_some() || raw.tags.is_some();
    let access = match (&raw.connector, direct) {
        (Some(_), true) => {
            return Err(
                "set either connector or network/subnetwork (direct VPC egress), not both".into(),
            );
        }
        (Some(c), false) if !c.trim().is_empty() => VpcAccess::Connector(c.clone()),
        (Some(_), false) => return Err("connector must not be empty".into()),
        (None, true) => {
            if raw.network.is_none() && raw.subnetwork.is_none() {
                return Err("direct VPC egress needs network or subnetwork".into());
            }
            VpcAccess::Direct {
                network: raw.network.clone(),
                subnetwork: raw.subnetwork.clone(),
                tags: raw.tags.clone().unwrap_or_default(),
            }
        }
        (None, false) => {
            return Err("set connector, or network/subnetwork for direct VPC egress".into());
        }
    };
    Ok(Vpc { access, egress })
}

/// Cloud Run job ids: lowercase letters, digits and hyphens, starting with a letter, not ending
/// with a hyphen, at most 63 characters.
pub(crate) fn check_job_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid Cloud Run job name (lowercase letters, digits and hyphens, \
             starting with a letter, at most 63 characters)"
        ))
    }
}

pub(crate) fn check_project(p: &str) -> Result<(), String> {
    let ok = !p.is_empty()
        && p.len() <= 100
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{p:?} is not a project id"))
    }
}

pub(crate) fn check_region(r: &str) -> Result<(), String> {
    let ok = !r.is_empty()
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("{r:?} is not a region (e.g. europe-west1)"))
    }
}

pub fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.contains('=')
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("{name:?} is not a valid environment variable name"));
    }
    if RESERVED_ENV.contains(&name) {
        return Err(format!(
            "{name:?} is set by Cloud Run (or sluice-trigger) itself"
        ));
    }
    Ok(())
}

/// Google Cloud label rules: keys 1-63 characters starting with a lowercase letter; keys and
/// values use lowercase letters, digits, `_` and `-`; values up to 63 characters.
pub(crate) fn check_label(key: &str, value: &str) -> Result<(), String> {
    if let Some(prefix) = RESERVED_LABEL_PREFIXES.iter().find(|p| key.starts_with(*p)) {
        return Err(format!(
            "label {key:?} uses the reserved {prefix:?} prefix, which Cloud Run rejects"
        ));
    }
    let allowed = |c: char| c.is_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    if key.is_empty()
        || key.chars().count() > 63
        || !key.starts_with(char::is_lowercase)
        || !key.chars().all(allowed)
    {
        return Err(format!(
            "label key {key:?} must be 1-63 lowercase letters, digits, '_' or '-', starting with a letter"
        ));
    }
    if value.chars().count() > 63 || !value.chars().all(allowed) {
        return Err(format!(
            "label {key:?}: value {value:?} must be at most 63 lowercase letters, digits, '_' or '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse(text, Path::new("jobs.toml"), Path::new("/specs"))
    }

    fn problems(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const FULL: &str = r#"
        [defaults]
        project = "demo-project"
        region = "europe-west1"
        image = "europe-west1-docker.pkg.dev/demo-project/sluice/sluice:1"
        service_account = "jobs@demo-project.iam.gserviceaccount.com"
        memory = "1Gi"
        labels = { pipeline = "open-data" }
        env = { RUST_LOG = "info", SLUICE_EXTRACT_FORMAT = "parquet" }

        [local]
        sluice_bin = "../target/debug/sluice"
        env = { STORAGE_EMULATOR_HOST = "http://127.0.0.1:4443" }

        [[jobs]]
        name = "extract"
        args = ["extract", "--dest", "gs://bucket/raw"]
        tasks = 4
        parallelism = 2
        task_timeout = "30m"
        max_retries = 1
        cpu = 2
        env = { SLUICE_EXTRACT_FORMAT = "csv", WORKERS = 4 }
        secrets = { SOCRATA_APP_TOKEN = "socrata-token", DB = { secret = "projects/p/secrets/db", version = 3 } }
        labels = { step = "extract" }
        vpc = { connector = "projects/demo-project/locations/europe-west1/connectors/c1", egress = "all-traffic" }
        local_env = { SLUICE_DEST = "file:///tmp/out" }
        local_args = ["extract", "--dest", "gs://demo/raw"]

        [[jobs]]
        name = "dbt"
        command = ["sluice"]
        args = ["dbt", "--", "build"]
        region = "us-central1"
    "#;

    #[test]
    fn full_spec_applies_defaults_and_overrides() {
        let spec = parse(FULL).unwrap();
        assert_eq!(spec.jobs.len(), 2);
        let e = spec.job("extract").unwrap();
        assert_eq!(e.project.as_deref(), Some("demo-project"));
        assert_eq!(e.tasks, 4);
        assert_eq!(e.parallelism, 2);
        assert_eq!(e.task_timeout, Duration::from_secs(1800));
        assert_eq!(e.max_retries, 1);
        assert_eq!(e.cpu, Cpu { millis: 2000 });
        assert_eq!(e.memory.bytes, 1 << 30);
        let env: Vec<(&str, &EnvValue)> =
            e.env.iter().map(|v| (v.name.as_str(), &v.value)).collect();
        assert_eq!(
            env,
            vec![
                (
                    "DB",
                    &EnvValue::Secret {
                        secret: "projects/p/secrets/db".into(),
                        version: "3".into()
                    }
                ),
                ("RUST_LOG", &EnvValue::Plain("info".into())),
                ("SLUICE_EXTRACT_FORMAT", &EnvValue::Plain("csv".into())),
                (
                    "SOCRATA_APP_TOKEN",
                    &EnvValue::Secret {
                        secret: "socrata-token".into(),
                        version: "latest".into()
                    }
                ),
                ("WORKERS", &EnvValue::Plain("4".into())),
            ]
        );
        assert_eq!(
            e.labels.get("pipeline").map(String::as_str),
            Some("open-data")
        );
        assert_eq!(e.labels.get("step").map(String::as_str), Some("extract"));
        assert_eq!(
            e.vpc,
            Some(Vpc {
                access: VpcAccess::Connector(
                    "projects/demo-project/locations/europe-west1/connectors/c1".into()
                ),
                egress: Egress::AllTraffic
            })
        );
        assert_eq!(
            e.local_env,
            vec![
                ("SLUICE_DEST".to_string(), "file:///tmp/out".to_string()),
                (
                    "STORAGE_EMULATOR_HOST".to_string(),
                    "http://127.0.0.1:4443".to_string()
                ),
            ]
        );
        assert_eq!(e.local_args.as_deref().map(|a| a.len()), Some(3));
        let d = spec.job("dbt").unwrap();
        assert_eq!(d.local_args, None);
        assert_eq!(d.region.as_deref(), Some("us-central1"));
        assert_eq!(d.command, vec!["sluice"]);
        assert_eq!(d.tasks, 1);
        assert_eq!(d.max_retries, DEFAULT_MAX_RETRIES);
        assert_eq!(d.task_timeout, DEFAULT_TASK_TIMEOUT);
        assert_eq!(d.cpu.to_api(), "1");
        assert_eq!(d.memory.text, "1Gi");
        assert_eq!(
            spec.local.sluice_bin,
            Some(PathBuf::from("/specs/../target/debug/sluice"))
        );
        assert_eq!(spec.local.workdir, PathBuf::from("/specs"));
        assert_eq!(spec.local.kill_grace, DEFAULT_KILL_GRACE);
        assert!(spec.job("load").unwrap_err().contains("extract, dbt"));
    }

    #[test]
    fn errors_name_job_and_field() {
        let err = problems(
            r#"
            [[jobs]]
            name = "extract"
            memory = "512MB"
            cpu = "lots"
            tasks = 0
            task_timeout = "90 parsecs"
            labels = { "run.googleapis.com/x" = "y", Team = "a" }
            secrets = { TOKEN = { secret = "a b" } }
            env = { CLOUD_RUN_TASK_INDEX = "1" }
            "#,
        );
        for needle in [
            r#"job "extract": field "memory": "512MB" is not a memory quantity"#,
            r#"job "extract": field "cpu": "lots""#,
            r#"job "extract": field "tasks": 0 is out of range"#,
            r#"job "extract": field "task_timeout": invalid duration "90 parsecs""#,
            r#"reserved "run.googleapis.com/" prefix"#,
            r#"label key "Team""#,
            r#"job "extract": field "secrets": "TOKEN": secret "a b""#,
            r#"field "env": "CLOUD_RUN_TASK_INDEX" is set by Cloud Run"#,
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn durations_take_humantime_and_bare_seconds() {
        for (text, secs) in [("90", 90), ("1h 30m", 5400), ("1.5h", 5400), ("600s", 600)] {
            let spec = Spec::parse(
                &format!("[[jobs]]\nname = \"a\"\nimage = \"i:1\"\ntask_timeout = \"{text}\"\n"),
                Path::new("jobs.toml"),
                Path::new("."),
            )
            .unwrap();
            assert_eq!(
                spec.jobs[0].task_timeout,
                Duration::from_secs(secs),
                "{text}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_missing_names_are_errors() {
        let err = problems("[[jobs]]\nname = \"a\"\nmemroy = \"1Gi\"\n");
        assert!(err.contains("memroy"), "{err}");
        let err = problems("[[jobs]]\nargs = []\n");
        assert!(
            err.contains("entry #1: field \"name\" is required"),
            "{err}"
        );
        let err = problems("[[jobs]]\nname = \"a\"\n[[jobs]]\nname = \"a\"\n");
        assert!(err.contains("job \"a\": defined more than once"), "{err}");
        let err = problems("[[jobs]]\nname = \"Extract_1\"\n");
        assert!(err.contains("not a valid Cloud Run job name"), "{err}");
        let err = problems("[defaults]\nname = \"x\"\n[[jobs]]\nname = \"a\"\n");
        assert!(err.contains("[defaults]: field \"name\""), "{err}");
        assert!(problems("").contains("no jobs"));
    }

    #[test]
    fn vpc_rules() {
        let err =
            problems("[[jobs]]\nname = \"a\"\nvpc = { connector = \"c\", network = \"n\" }\n");
        assert!(err.contains("not both"), "{err}");
        let err = problems("[[jobs]]\nname = \"a\"\nvpc = { egress = \"sometimes\" }\n");
        assert!(err.contains("not an egress setting"), "{err}");
        let spec = parse("[[jobs]]\nname = \"a\"\nvpc = { subnetwork = \"s\", tags = [\"t\"] }\n")
            .unwrap();
        assert_eq!(
            spec.jobs[0].vpc,
            Some(Vpc {
                access: VpcAccess::Direct {
                    network: None,
                    subnetwork: Some("s".into()),
                    tags: vec!["t".into()]
                },
                egress: Egress::PrivateRangesOnly
            })
        );
    }

    #[test]
    fn env_and_secret_conflict_and_secret_warning() {
        let err =
            problems("[[jobs]]\nname = \"a\"\nenv = { X = \"1\" }\nsecrets = { X = \"s\" }\n");
        assert!(
            err.contains("\"X\" is set both in env and in secrets"),
            "{err}"
        );
        let spec = parse("[[jobs]]\nname = \"a\"\nenv = { API_TOKEN = \"abc\" }\n").unwrap();
        assert_eq!(spec.warnings.len(), 1);
        assert!(spec.warnings[0].contains("API_TOKEN"));
        assert!(
            !spec.warnings[0].contains("abc"),
            "warnings never echo values"
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_cpu_millis("1"), Some(1000));
        assert_eq!(parse_cpu_millis("0.5"), Some(500));
        assert_eq!(parse_cpu_millis("1000m"), Some(1000));
        assert_eq!(parse_cpu_millis("abc"), None);
        assert_eq!(Cpu { millis: 500 }.to_api(), "500m");
        assert_eq!(parse_memory_bytes("512Mi"), Some(512 << 20));
        assert_eq!(parse_memory_bytes("1G"), Some(1_000_000_000));
        assert_eq!(parse_memory_bytes("0.5Gi"), Some(512 << 20));
        assert_eq!(parse_memory_bytes("1GB"), None);
        assert!(Memory::parse("64Mi").unwrap_err().contains("out of range"));
        assert!(Cpu::parse("16").unwrap_err().contains("out of range"));
    }

    /// The issue's set-up: an extract schema in `[defaults].env` reaches every job. Each job
    /// gets a warning naming its own replacement; a spec with the new names gets none.
    #[test]
    fn a_shared_old_name_in_defaults_warns_for_every_job() {
        let spec = |env: &str| {
            let text = format!(
                "[defaults]\nenv = {{ {env} = \"extract.toml\" }}\n\
                 [[jobs]]\nname = \"extract\"\nargs = [\"extract\"]\n\
                 [[jobs]]\nname = \"load\"\nargs = [\"load\"]\n"
            );
            parse(&text).unwrap()
        };
        let old = spec("SLUICE_SCHEMA");
        assert_eq!(old.warnings.len(), 2, "{:?}", old.warnings);
        assert!(
            old.warnings[0].contains("job \"extract\"")
                && old.warnings[0].contains("use SLUICE_EXTRACT_SCHEMA")
        );
        assert!(
            old.warnings[1].contains("job \"load\"")
                && old.warnings[1].contains("use SLUICE_LOAD_SCHEMA")
        );
        assert!(
            !old.warnings.iter().any(|w| w.contains("extract.toml")),
            "values are not echoed"
        );
        assert!(spec("SLUICE_EXTRACT_SCHEMA").warnings.is_empty());
    }
}
