//! A fake Cloud Run Admin API v2: no emulator exists, so tests run `sluice-trigger` against
//! this plain-HTTP server.
//!
//! Every request is routed and checked through the discovery document ([`Discovery`]): an
//! unknown path, query parameter, body field, wrong type or enum value is answered with 400
//! INVALID_ARGUMENT *and* recorded in [`FakeCloudRun::violations`], which tests assert empty.
//! Its own responses are checked against the document too.
//!
//! Behaviour: jobs create/get/patch/list/run, operations get, executions get/list/cancel,
//! tasks list. Executions progress as they are polled (`executions.get`), following a
//! per-job [`Scenario`]. Faults can be injected: the next `jobs.run` can fail ambiguously
//! ([`RunFault`]) and the next GETs can be refused (429/503).

use super::discovery::Discovery;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// How executions of a job play out.
#[derive(Debug, Clone)]
pub enum Scenario {
    /// Every task succeeds once the execution has been polled `polls` times.
    Succeed { polls: u32 },
    /// Task `index` fails every attempt (retried `maxRetries` times) with `exit_code`.
    FailTask {
        index: u32,
        exit_code: i32,
        polls: u32,
    },
    /// Task `index` fails `failures` times, then succeeds.
    RetryTask {
        index: u32,
        failures: u32,
        polls: u32,
    },
    /// Runs until cancelled.
    Hang,
}

impl Scenario {
    /// `succeed[:POLLS]`, `fail-task:INDEX:EXIT[:POLLS]`, `retry-task:INDEX:FAILURES[:POLLS]`,
    /// `hang`.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let n = |i: usize, default: u32| -> Result<u32, String> {
            parts.get(i).map_or(Ok(default), |p| {
                p.parse()
                    .map_err(|_| format!("{p:?} in {text:?} is not a number"))
            })
        };
        match parts[0] {
            "succeed" => Ok(Scenario::Succeed { polls: n(1, 2)? }),
            "fail-task" => Ok(Scenario::FailTask {
                index: n(1, 0)?,
                exit_code: n(2, 1)? as i32,
                polls: n(3, 2)?,
            }),
            "retry-task" => Ok(Scenario::RetryTask {
                index: n(1, 0)?,
                failures: n(2, 1)?,
                polls: n(3, 2)?,
            }),
            "hang" => Ok(Scenario::Hang),
            _ => Err(format!(
                "unknown scenario {text:?} (succeed, fail-task, retry-task, hang)"
            )),
        }
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario::Succeed { polls: 2 }
    }
}

/// A failure of the next `jobs.run` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunFault {
    /// Create the execution, then answer 503.
    CreateThen503,
    /// Create the execution, then close the connection without answering.
    CreateThenDrop,
    /// Answer 503 without creating anything.
    Refuse503,
    /// Create the execution, then answer only after `delay` (past the client's timeout).
    CreateThenStall(Duration),
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The discovery method id (`run.projects.locations.jobs.run`), if the path matched one.
    pub method_id: Option<String>,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

struct Execution {
    name: String,
    job: String,
    created: DateTime<Utc>,
    started: Option<DateTime<Utc>>,
    completed: Option<DateTime<Utc>>,
    template: Value,
    task_count: u32,
    parallelism: u32,
    max_retries: u32,
    scenario: Scenario,
    polls: u32,
    cancel_requested: bool,
    cancelled: bool,
}

enum Operation {
    Job { job: String, polls: u32 },
    Run { execution: String },
    Cancel { execution: String },
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<String, Value>,
    executions: Vec<Execution>,
    operations: BTreeMap<String, Operation>,
    scenarios: BTreeMap<String, Scenario>,
    run_fault: Option<RunFault>,
    get_failures: Vec<u16>,
    /// GET failures armed by the next `jobs.run`.
    get_failures_after_run: Vec<u16>,
    requests: Vec<Recorded>,
    violations: Vec<String>,
    counter: u64,
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }
}

/// The running fake; stops when dropped.
pub struct FakeCloudRun {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    discovery: Arc<Discovery>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCloudRun {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl FakeCloudRun {
    /// Starts on a free loopback port.
    pub async fn start() -> FakeCloudRun {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> FakeCloudRun {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the fake Cloud Run API");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let discovery = Arc::new(Discovery::load());
        let (s, d) = (state.clone(), discovery.clone());
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, d) = (s.clone(), d.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(s.clone(), d.clone(), req));
                    // An Err from the service (RunFault::CreateThenDrop) makes hyper close
                    // the connection without a response: that is the point.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeCloudRun {
            addr,
            state,
            discovery,
            server,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn revision(&self) -> String {
        self.discovery.revision().to_string()
    }

    pub fn set_scenario(&self, job: &str, scenario: Scenario) {
        self.state
            .lock()
            .unwrap()
            .scenarios
            .insert(job.to_string(), scenario);
    }

    pub fn fail_next_run(&self, fault: RunFault) {
        self.state.lock().unwrap().run_fault = Some(fault);
    }

    /// The next `n` GET requests are answered with `status` (and `Retry-After: 0`).
    pub fn fail_next_gets(&self, n: usize, status: u16) {
        self.state
            .lock()
            .unwrap()
            .get_failures
            .extend(std::iter::repeat_n(status, n));
    }

    /// Like [`Self::fail_next_gets`], starting right after the next `jobs.run`.
    pub fn fail_gets_after_next_run(&self, n: usize, status: u16) {
        self.state
            .lock()
            .unwrap()
            .get_failures_after_run
            .extend(std::iter::repeat_n(status, n));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests whose discovery method id ends with `suffix` (e.g. `jobs.run`).
    pub fn calls(&self, suffix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method_id.as_deref().is_some_and(|m| m.ends_with(suffix)))
            .collect()
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    /// Panics listing every request that broke the discovery document.
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "requests broke run.v2.json:\n{}",
            v.join("\n")
        );
    }

    pub fn job(&self, name: &str) -> Option<Value> {
        self.state.lock().unwrap().jobs.get(name).cloned()
    }

    /// Names of the executions of `job` (its full name), oldest first.
    pub fn executions_of(&self, job: &str) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.executions
            .iter()
            .filter(|e| e.job == job)
            .map(|e| e.name.clone())
            .collect()
    }

    /// The execution as `executions.get` would show it, without advancing it.
    pub fn execution(&self, name: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        st.executions
            .iter()
            .find(|e| e.name == name)
            .map(execution_json)
    }

    /// A job as `jobs.create` would have stored it, for tests that start from a deployed job.
    pub fn put_job(&self, name: &str, mut job: Value) {
        job["name"] = json!(name);
        let mut st = self.state.lock().unwrap();
        server_fill_job(&mut job, name, 1);
        st.jobs.insert(name.to_string(), job);
    }
}

type Resp = Response<Full<Bytes>>;

fn respond(status: u16, body: Value) -> Resp {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json; charset=UTF-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn google_error(status: u16, rpc: &str, message: impl Into<String>) -> Resp {
    let mut r = respond(
        status,
        json!({"error": {"code": status, "message": message.into(), "status": rpc}}),
    );
    if status == 429 || status == 503 {
        r.headers_mut().insert("retry-after", "0".parse().unwrap());
    }
    r
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

async fn handle(
    state: Arc<Mutex<State>>,
    discovery: Arc<Discovery>,
    req: Request<Incoming>,
) -> Result<Resp, std::io::Error> {
    let method = req.method().as_str().to_string();
    let path = percent_decode(req.uri().path());
    let query = parse_query(req.uri().query());
    let body_bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();

    // Admin endpoints of the standalone fake (not part of the API): set a job's scenario
    // (`POST /__fake/scenario?job=load&scenario=fail-task:1:3`) and read a summary.
    if path == "/__fake/scenario" {
        let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.clone());
        let parsed = get("scenario").as_deref().map(Scenario::parse);
        return Ok(match (get("job"), parsed) {
            (Some(job), Some(Ok(s))) => {
                state.lock().unwrap().scenarios.insert(job, s);
                respond(200, json!({}))
            }
            (_, Some(Err(e))) => respond(400, json!({ "error": e })),
            _ => respond(400, json!({ "error": "need job= and scenario=" })),
        });
    }
    if path == "/__fake/summary" {
        let st = state.lock().unwrap();
        let v = json!({
            "jobs": st.jobs.keys().collect::<Vec<_>>(),
            "executions": st.executions.iter().map(|e| json!({"name": e.name, "job": e.job})).collect::<Vec<_>>(),
            "runs": st.requests.iter().filter(|r| r.method_id.as_deref() == Some("run.projects.locations.jobs.run")).map(|r| r.path.clone()).collect::<Vec<_>>(),
            "violations": st.violations,
        });
        return Ok(respond(200, v));
    }

    let Some(m) = discovery.find_method(&method, &path) else {
        let msg = format!("{method} {path}: no method of run.v2.json has this path");
        let mut st = state.lock().unwrap();
        st.violations.push(msg.clone());
        st.requests.push(Recorded {
            method,
            path,
            method_id: None,
            query,
            body: None,
        });
        return Ok(google_error(404, "NOT_FOUND", msg));
    };
    let mut problems = discovery.validate_query(m, &query);
    let mut body: Option<Value> = None;
    match &m.request {
        Some(schema) => match serde_json::from_slice::<Value>(&body_bytes) {
            Ok(mut v) => {
                problems.extend(
                    discovery
                        .validate(schema, &mut v)
                        .into_iter()
                        .map(|p| format!("body {p}")),
                );
                body = Some(v);
            }
            Err(e) => problems.push(format!("body is not JSON: {e}")),
        },
        None => {
            if !body_bytes.is_empty() {
                problems.push(format!(
                    "{} takes no body but got {} bytes",
                    m.id,
                    body_bytes.len()
                ));
            }
        }
    }
    let method_id = m.id.clone();
    {
        let mut st = state.lock().unwrap();
        st.requests.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            method_id: Some(method_id.clone()),
            query: query.clone(),
            body: body.clone(),
        });
        if !problems.is_empty() {
            let msg = format!("{method_id} ({method} {path}): {}", problems.join("; "));
            st.violations.push(msg.clone());
            return Ok(google_error(400, "INVALID_ARGUMENT", msg));
        }
        if method == "GET" && !st.get_failures.is_empty() {
            let status = st.get_failures.remove(0);
            let rpc = if status == 429 {
                "RESOURCE_EXHAUSTED"
            } else {
                "UNAVAILABLE"
            };
            return Ok(google_error(status, rpc, "injected failure"));
        }
    }
    // The resource the path names: `{name}` for get/patch/run/cancel, `{parent}` for
    // create/list (without the collection segment).
    let name = path.trim_start_matches("/v2/");
    let name = name.split(':').next().unwrap_or_default();
    let name = ["/jobs", "/executions", "/tasks"]
        .iter()
        .find_map(|c| name.strip_suffix(c))
        .unwrap_or(name)
        .to_string();
    let q = |k: &str| query.iter().find(|(qk, _)| qk == k).map(|(_, v)| v.clone());

    let (status, response): (u16, Value) = match method_id.as_str() {
        "run.projects.locations.jobs.create" => {
            let job_id = q("jobId").unwrap_or_default();
            let full = format!("{name}/jobs/{job_id}");
            let mut st = state.lock().unwrap();
            if st.jobs.contains_key(&full) {
                return Ok(google_error(
                    409,
                    "ALREADY_EXISTS",
                    format!("Resource '{job_id}' already exists."),
                ));
            }
            let mut job = body.unwrap_or_default();
            job["name"] = json!(full);
            server_fill_job(&mut job, &full, 1);
            st.jobs.insert(full.clone(), job);
            (200, new_job_operation(&mut st, &name, &full))
        }
        "run.projects.locations.jobs.get" => {
            let st = state.lock().unwrap();
            match st.jobs.get(&name) {
                Some(j) => (200, j.clone()),
                None => {
                    return Ok(google_error(
                        404,
                        "NOT_FOUND",
                        format!("Resource '{name}' was not found"),
                    ));
                }
            }
        }
        "run.projects.locations.jobs.patch" => {
            let mut st = state.lock().unwrap();
            let allow_missing = q("allowMissing").as_deref() == Some("true");
            let mut job = body.unwrap_or_default();
            let existing = st.jobs.get(&name).cloned();
            let generation = match &existing {
                None if !allow_missing => {
                    return Ok(google_error(
                        404,
                        "NOT_FOUND",
                        format!("Resource '{name}' was not found"),
                    ));
                }
                None => 1,
                Some(cur) => {
                    let sent = job["etag"].as_str().unwrap_or("");
                    if !sent.is_empty() && Some(sent) != cur["etag"].as_str() {
                        return Ok(google_error(
                            409,
                            "ABORTED",
                            "etag mismatch: the job changed since it was read",
                        ));
                    }
                    cur["generation"]
                        .as_str()
                        .and_then(|g| g.parse::<i64>().ok())
                        .unwrap_or(1)
                        + 1
                }
            };
            if job["name"].as_str() != Some(name.as_str()) {
                return Ok(google_error(
                    400,
                    "INVALID_ARGUMENT",
                    "job.name must match the path",
                ));
            }
            server_fill_job(&mut job, &name, generation);
            if let Some(cur) = &existing {
                for keep in [
                    "createTime",
                    "uid",
                    "latestCreatedExecution",
                    "executionCount",
                    "creator",
                ] {
                    if let Some(v) = cur.get(keep) {
                        job[keep] = v.clone();
                    }
                }
            }
            st.jobs.insert(name.clone(), job);
            let parent = name.split("/jobs/").next().unwrap_or_default().to_string();
            (200, new_job_operation(&mut st, &parent, &name))
        }
        "run.projects.locations.jobs.list" => {
            let st = state.lock().unwrap();
            let jobs: Vec<Value> = st
                .jobs
                .iter()
                .filter(|(k, _)| k.starts_with(&format!("{name}/jobs/")))
                .map(|(_, v)| v.clone())
                .collect();
            (200, json!({ "jobs": jobs }))
        }
        "run.projects.locations.jobs.run" => {
            let fault = {
                let mut st = state.lock().unwrap();
                let armed = std::mem::take(&mut st.get_failures_after_run);
                st.get_failures.extend(armed);
                st.run_fault.take()
            };
            if fault == Some(RunFault::Refuse503) {
                return Ok(google_error(
                    503,
                    "UNAVAILABLE",
                    "injected: run refused before creating anything",
                ));
            }
            let op = {
                let mut st = state.lock().unwrap();
                let Some(job) = st.jobs.get(&name).cloned() else {
                    return Ok(google_error(
                        404,
                        "NOT_FOUND",
                        format!("Resource '{name}' was not found"),
                    ));
                };
                start_execution(&mut st, &name, &job, body.as_ref().unwrap_or(&Value::Null))
            };
            match fault {
                Some(RunFault::CreateThen503) => {
                    return Ok(google_error(
                        503,
                        "UNAVAILABLE",
                        "injected: execution created, then 503",
                    ));
                }
                Some(RunFault::CreateThenDrop) => {
                    return Err(std::io::Error::other(
                        "injected: connection dropped after creating the execution",
                    ));
                }
                Some(RunFault::CreateThenStall(d)) => tokio::time::sleep(d).await,
                _ => {}
            }
            (200, op)
        }
        "run.projects.locations.operations.get" => {
            let mut st = state.lock().unwrap();
            match operation_json(&mut st, &name) {
                Some(op) => (200, op),
                None => {
                    return Ok(google_error(
                        404,
                        "NOT_FOUND",
                        format!("Operation '{name}' was not found"),
                    ));
                }
            }
        }
        "run.projects.locations.jobs.executions.get" => {
            let mut st = state.lock().unwrap();
            let Some(e) = st.executions.iter_mut().find(|e| e.name == name) else {
                return Ok(google_error(
                    404,
                    "NOT_FOUND",
                    format!("Resource '{name}' was not found"),
                ));
            };
            advance(e);
            (200, execution_json(e))
        }
        "run.projects.locations.jobs.executions.list" => {
            let st = state.lock().unwrap();
            let size = q("pageSize")
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(100);
            let mut list: Vec<&Execution> =
                st.executions.iter().filter(|e| e.job == name).collect();
            list.reverse();
            let executions: Vec<Value> = list.into_iter().take(size).map(execution_json).collect();
            (200, json!({ "executions": executions }))
        }
        "run.projects.locations.jobs.executions.cancel" => {
            let mut st = state.lock().unwrap();
            let Some(e) = st.executions.iter_mut().find(|e| e.name == name) else {
                return Ok(google_error(
                    404,
                    "NOT_FOUND",
                    format!("Resource '{name}' was not found"),
                ));
            };
            if e.completed.is_some() {
                return Ok(google_error(
                    400,
                    "FAILED_PRECONDITION",
                    format!("execution {name} has already completed"),
                ));
            }
            e.cancel_requested = true;
            let exec_name = e.name.clone();
            let parent = location_of(&exec_name);
            let id = st.next_id();
            let op_name = format!("{parent}/operations/op-cancel-{id}");
            st.operations.insert(
                op_name.clone(),
                Operation::Cancel {
                    execution: exec_name,
                },
            );
            (200, operation_json(&mut st, &op_name).unwrap())
        }
        "run.projects.locations.jobs.executions.tasks.list" => {
            let st = state.lock().unwrap();
            let Some(e) = st.executions.iter().find(|e| e.name == name) else {
                return Ok(google_error(
                    404,
                    "NOT_FOUND",
                    format!("Resource '{name}' was not found"),
                ));
            };
            (200, json!({ "tasks": tasks_json(e) }))
        }
        other => {
            return Ok(google_error(
                501,
                "UNIMPLEMENTED",
                format!("the fake does not implement {other}"),
            ));
        }
    };
    // The fake's own answers must honour the document too.
    if let Some(schema) = &m.response {
        let mut check = response.clone();
        let problems = discovery.validate(schema, &mut check);
        if !problems.is_empty() {
            state.lock().unwrap().violations.push(format!(
                "fake response to {method_id}: {}",
                problems.join("; ")
            ));
        }
    }
    Ok(respond(status, response))
}

fn location_of(name: &str) -> String {
    name.split("/jobs/").next().unwrap_or_default().to_string()
}

/// What the server fills in on create/patch: output-only fields and Cloud Run's defaults,
/// spelled as the API spells them (CPU in millicores).
fn server_fill_job(job: &mut Value, name: &str, generation: i64) {
    let t = now();
    let _ = name;
    job["uid"] = json!(format!("uid-{}", generation));
    job["generation"] = json!(generation.to_string());
    job["observedGeneration"] = json!(generation.to_string());
    if job.get("createTime").is_none() {
        job["createTime"] = json!(ts(t));
    }
    job["updateTime"] = json!(ts(t));
    job["creator"] = json!("tester@example.com");
    job["lastModifier"] = json!("tester@example.com");
    job["etag"] = json!(format!(
        "\"etag-{generation}-{}\"",
        t.timestamp_nanos_opt().unwrap_or(0)
    ));
    if job.get("launchStage").is_none() {
        job["launchStage"] = json!("GA");
    }
    job["terminalCondition"] =
        json!({"type": "Ready", "state": "CONDITION_SUCCEEDED", "lastTransitionTime": ts(t)});
    let exec = &mut job["template"];
    if exec.get("taskCount").is_none() {
        exec["taskCount"] = json!(1);
    }
    let task = &mut exec["template"];
    if task.get("maxRetries").is_none() {
        task["maxRetries"] = json!(3);
    }
    if task.get("timeout").is_none() {
        task["timeout"] = json!("600s");
    }
    if task.get("serviceAccount").is_none() {
        // The project's default compute service account (the fake's project number is 123456).
        task["serviceAccount"] = json!("123456-compute@developer.gserviceaccount.com");
    }
    if task.get("executionEnvironment").is_none() {
        task["executionEnvironment"] = json!("EXECUTION_ENVIRONMENT_GEN2");
    }
    if let Some(containers) = task["containers"].as_array_mut() {
        for c in containers {
            let limits = &mut c["resources"]["limits"];
            let cpu = limits
                .get("cpu")
                .and_then(Value::as_str)
                .unwrap_or("1")
                .to_string();
            let millis = match cpu.strip_suffix('m') {
                Some(m) => m.parse::<f64>().unwrap_or(1000.0),
                None => cpu.parse::<f64>().unwrap_or(1.0) * 1000.0,
            };
            limits["cpu"] = json!(format!("{}m", millis as u64));
            if limits.get("memory").is_none() {
                limits["memory"] = json!("512Mi");
            }
        }
    }
}

fn new_job_operation(st: &mut State, location: &str, job: &str) -> Value {
    let id = st.next_id();
    let op_name = format!("{location}/operations/op-job-{id}");
    st.operations.insert(
        op_name.clone(),
        Operation::Job {
            job: job.to_string(),
            polls: 0,
        },
    );
    let job_value = st.jobs.get(job).cloned().unwrap_or_default();
    json!({
        "name": op_name,
        "metadata": any("google.cloud.run.v2.Job", &job_value),
        "done": false,
    })
}

fn any(type_name: &str, v: &Value) -> Value {
    let mut m = v.as_object().cloned().unwrap_or_default();
    m.insert(
        "@type".into(),
        json!(format!("type.googleapis.com/{type_name}")),
    );
    Value::Object(m)
}

fn operation_json(st: &mut State, name: &str) -> Option<Value> {
    let op = st.operations.get_mut(name)?;
    match op {
        Operation::Job { job, polls } => {
            // Done from the first poll on: creation is quick, but never instant.
            *polls += 1;
            let job = st.jobs.get(job.as_str()).cloned().unwrap_or_default();
            Some(json!({
                "name": name,
                "metadata": any("google.cloud.run.v2.Job", &job),
                "done": true,
                "response": any("google.cloud.run.v2.Job", &job),
            }))
        }
        Operation::Run { execution } | Operation::Cancel { execution } => {
            let e = st.executions.iter().find(|e| &e.name == execution)?;
            let v = execution_json(e);
            let mut op = json!({"name": name, "metadata": any("google.cloud.run.v2.Execution", &v), "done": e.completed.is_some()});
            if e.completed.is_some() {
                op["response"] = any("google.cloud.run.v2.Execution", &v);
            }
            Some(op)
        }
    }
}

fn random_suffix(n: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (now().timestamp_subsec_nanos() as u64);
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// `jobs.run`: a new execution with the job's template and the overrides applied.
fn start_execution(st: &mut State, job_name: &str, job: &Value, run_req: &Value) -> Value {
    let id = st.next_id();
    let job_id = job_name.rsplit('/').next().unwrap_or("job").to_string();
    let exec_id = format!("{job_id}-{}", random_suffix(id));
    let name = format!("{job_name}/executions/{exec_id}");
    let mut template = job["template"]["template"].clone();
    let mut task_count = job["template"]["taskCount"].as_u64().unwrap_or(1) as u32;
    let parallelism = job["template"]["parallelism"].as_u64().unwrap_or(0) as u32;
    let overrides = &run_req["overrides"];
    if let Some(n) = overrides["taskCount"].as_u64().filter(|n| *n > 0) {
        task_count = n as u32;
    }
    if let Some(t) = overrides["timeout"].as_str() {
        template["timeout"] = json!(t);
    }
    for co in overrides["containerOverrides"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let want = co["name"].as_str().unwrap_or("");
        let Some(containers) = template["containers"].as_array_mut() else {
            continue;
        };
        let target = containers
            .iter_mut()
            .enumerate()
            .find(|(i, c)| {
                if want.is_empty() {
                    *i == 0
                } else {
                    c["name"].as_str() == Some(want)
                }
            })
            .map(|(_, c)| c);
        let Some(c) = target else { continue };
        if co["clearArgs"] == true {
            c["args"] = json!([]);
        } else if let Some(args) = co["args"].as_array().filter(|a| !a.is_empty()) {
            c["args"] = json!(args);
        }
        // Env overrides merge by name.
        let mut env = c["env"].as_array().cloned().unwrap_or_default();
        for var in co["env"].as_array().cloned().unwrap_or_default() {
            env.retain(|e| e["name"] != var["name"]);
            env.push(var);
        }
        c["env"] = json!(env);
    }
    let max_retries = template["maxRetries"].as_u64().unwrap_or(3) as u32;
    let scenario = st.scenarios.get(&job_id).cloned().unwrap_or_default();
    st.executions.push(Execution {
        name: name.clone(),
        job: job_name.to_string(),
        created: now(),
        started: None,
        completed: None,
        template,
        task_count,
        parallelism,
        max_retries,
        scenario,
        polls: 0,
        cancel_requested: false,
        cancelled: false,
    });
    if let Some(j) = st.jobs.get_mut(job_name) {
        let count = j["executionCount"].as_i64().unwrap_or(0) + 1;
        j["executionCount"] = json!(count);
        j["latestCreatedExecution"] = json!({
            "name": name,
            "createTime": ts(now()),
            "completionStatus": "EXECUTION_RUNNING",
        });
    }
    let location = location_of(job_name);
    let op_name = format!("{location}/operations/op-run-{id}");
    st.operations.insert(
        op_name.clone(),
        Operation::Run {
            execution: name.clone(),
        },
    );
    operation_json(st, &op_name).unwrap()
}

/// One poll's worth of progress.
fn advance(e: &mut Execution) {
    if e.completed.is_some() {
        return;
    }
    e.polls += 1;
    if e.started.is_none() {
        e.started = Some(now());
    }
    if e.cancel_requested {
        e.cancelled = true;
        e.completed = Some(now());
        return;
    }
    let target = match e.scenario {
        Scenario::Succeed { polls }
        | Scenario::FailTask { polls, .. }
        | Scenario::RetryTask { polls, .. } => polls,
        Scenario::Hang => u32::MAX,
    };
    if e.polls >= target {
        e.completed = Some(now());
    }
}

/// Per task: (state, retried, exit code of the last attempt).
fn task_outcomes(e: &Execution) -> Vec<(&'static str, u32, Option<i32>)> {
    (0..e.task_count)
        .map(|i| {
            if e.cancelled {
                return ("CANCELLED", 0, None);
            }
            if e.completed.is_none() {
                return if e.started.is_some() {
                    ("RUNNING", 0, None)
                } else {
                    ("PENDING", 0, None)
                };
            }
            match e.scenario {
                Scenario::FailTask {
                    index, exit_code, ..
                } if index == i => ("FAILED", e.max_retries, Some(exit_code)),
                Scenario::RetryTask {
                    index, failures, ..
                } if index == i => ("SUCCEEDED", failures, Some(0)),
                _ => ("SUCCEEDED", 0, Some(0)),
            }
        })
        .collect()
}

fn log_uri(e: &Execution) -> String {
    let project = e.name.split('/').nth(1).unwrap_or("p");
    format!(
        "https://console.cloud.google.com/logs/viewer?project={project}&advancedFilter=resource.type%3D%22cloud_run_job%22"
    )
}

fn execution_json(e: &Execution) -> Value {
    let outcomes = task_outcomes(e);
    let count = |s: &str| outcomes.iter().filter(|o| o.0 == s).count();
    let running = if e.completed.is_none() && e.started.is_some() {
        let p = if e.parallelism == 0 {
            e.task_count
        } else {
            e.parallelism.min(e.task_count)
        };
        p as usize
    } else {
        0
    };
    let retried: u32 = outcomes.iter().map(|o| o.1).sum();
    let mut v = json!({
        "name": e.name,
        "uid": format!("uid-{}", e.name.len()),
        "job": e.job.rsplit('/').next().unwrap_or_default(),
        "createTime": ts(e.created),
        "generation": "1",
        "launchStage": "GA",
        "taskCount": e.task_count,
        "parallelism": if e.parallelism == 0 { e.task_count } else { e.parallelism },
        "template": e.template,
        "succeededCount": count("SUCCEEDED"),
        "failedCount": count("FAILED"),
        "cancelledCount": count("CANCELLED"),
        "runningCount": running,
        "retriedCount": retried,
        "logUri": log_uri(e),
        "etag": "\"x\"",
        "reconciling": e.completed.is_none(),
    });
    if let Some(s) = e.started {
        v["startTime"] = json!(ts(s));
    }
    let mut conditions =
        vec![json!({"type": "ResourcesAvailable", "state": "CONDITION_SUCCEEDED"})];
    if let Some(c) = e.completed {
        v["completionTime"] = json!(ts(c));
        let completed = if e.cancelled {
            json!({"type": "Completed", "state": "CONDITION_FAILED", "executionReason": "CANCELLED",
                   "message": "The execution was cancelled.", "lastTransitionTime": ts(c)})
        } else if count("FAILED") > 0 {
            json!({"type": "Completed", "state": "CONDITION_FAILED", "executionReason": "NON_ZERO_EXIT_CODE",
                   "message": format!("Task {} failed.", failed_index(&outcomes)), "lastTransitionTime": ts(c)})
        } else {
            json!({"type": "Completed", "state": "CONDITION_SUCCEEDED", "message": format!("Execution completed successfully in {}s.", (c - e.created).num_seconds()), "lastTransitionTime": ts(c)})
        };
        conditions.push(completed);
    } else if e.started.is_some() {
        conditions.push(json!({"type": "Started", "state": "CONDITION_SUCCEEDED"}));
        conditions.push(json!({"type": "Completed", "state": "CONDITION_PENDING"}));
    }
    v["conditions"] = json!(conditions);
    v
}

fn failed_index(outcomes: &[(&str, u32, Option<i32>)]) -> usize {
    outcomes.iter().position(|o| o.0 == "FAILED").unwrap_or(0)
}

fn tasks_json(e: &Execution) -> Vec<Value> {
    let exec_id = e.name.rsplit('/').next().unwrap_or_default().to_string();
    task_outcomes(e)
        .into_iter()
        .enumerate()
        .map(|(i, (state, retried, exit))| {
            let mut t = json!({
                "name": format!("{}/tasks/{exec_id}-task{i}", e.name),
                "index": i,
                "job": e.job.rsplit('/').next().unwrap_or_default(),
                "execution": exec_id,
                "createTime": ts(e.created),
                "retried": retried,
                "maxRetries": e.max_retries,
                "timeout": e.template["timeout"].clone(),
                "logUri": log_uri(e),
            });
            if state != "PENDING" && state != "CANCELLED" {
                t["startTime"] = json!(ts(e.started.unwrap_or(e.created)));
            }
            if matches!(state, "SUCCEEDED" | "FAILED") {
                t["completionTime"] = json!(ts(e.completed.unwrap_or(e.created)));
                let code = exit.unwrap_or(0);
                t["lastAttemptResult"] = if code == 0 {
                    json!({"exitCode": 0, "status": {"code": 0}})
                } else {
                    json!({"exitCode": code, "status": {"code": 2, "message": format!("Container terminated with exit code {code}.")}})
                };
            }
            t
        })
        .collect()
}
