//! A focused fake of BigQuery's `jobs.insert` and `jobs.get`, for what bqemulator does not do:
//! it rejects a reused job id with 409 `duplicate` (the emulator silently runs the job again),
//! lets a job stay RUNNING across polls, and fails jobs with the reasons real BigQuery uses
//! (transient `backendError`, terminal `invalid` with per-row errors, ...).
//!
//! Like BigQuery, it validates every request body against the published discovery document
//! (`tests/fixtures/bigquery.v2.json`): an unknown field, a wrong type or an enum value the API
//! does not have is a 400 `invalid` naming the field, never silently accepted.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};

/// The discovery document, parsed once.
fn discovery() -> &'static Value {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::from_str(include_str!("../fixtures/bigquery.v2.json"))
            .expect("valid discovery document")
    })
}

/// Checks `value` against the discovery schema `schema`; returns the first violation as
/// (location, message).
pub fn validate(
    value: &Value,
    schema: &Value,
    path: &str,
    ints_for_enums: bool,
) -> Result<(), (String, String)> {
    let schemas = &discovery()["schemas"];
    if let Some(name) = schema.get("$ref").and_then(Value::as_str) {
        return validate(value, &schemas[name], path, ints_for_enums);
    }
    let fail = |m: String| Err((path.to_string(), m));
    match schema.get("type").and_then(Value::as_str).unwrap_or("any") {
        "object" => {
            let Some(object) = value.as_object() else {
                return fail(format!(
                    "Invalid value at '{path}': expected an object, got {value}"
                ));
            };
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, field) in object {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) => validate(field, s, &child, ints_for_enums)?,
                    (None, Some(s)) => validate(field, s, &child, ints_for_enums)?,
                    (None, None) => {
                        return fail(format!(
                            "Invalid JSON payload received. Unknown name \"{key}\" at '{path}': Cannot find field."
                        ));
                    }
                }
            }
            Ok(())
        }
        "array" => {
            let Some(items) = value.as_array() else {
                return fail(format!(
                    "Invalid value at '{path}': expected a list, got {value}"
                ));
            };
            for (i, item) in items.iter().enumerate() {
                validate(
                    item,
                    &schema["items"],
                    &format!("{path}[{i}]"),
                    ints_for_enums,
                )?;
            }
            Ok(())
        }
        "string" => {
            let format = schema.get("format").and_then(Value::as_str);
            if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
                if let Some(s) = value.as_str() {
                    if !allowed.iter().any(|a| a == s) {
                        return fail(format!(
                            "Invalid value at '{path}': {s:?} is not one of {allowed:?}"
                        ));
                    }
                    return Ok(());
                }
                // `$alt=json;enum-encoding=int` lets clients send enum ordinals.
                if ints_for_enums
                    && let Some(i) = value.as_u64()
                    && (i as usize) < allowed.len()
                {
                    return Ok(());
                }
                return fail(format!(
                    "Invalid value at '{path}': expected an enum value, got {value}"
                ));
            }
            match (value, format) {
                (Value::String(_), _) => Ok(()),
                (Value::Number(n), Some("int64" | "uint64")) if n.is_i64() || n.is_u64() => Ok(()),
                _ => fail(format!(
                    "Invalid value at '{path}': expected a string, got {value}"
                )),
            }
        }
        "integer" => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
            Value::String(s) if s.parse::<i64>().is_ok() => Ok(()),
            _ => fail(format!(
                "Invalid value at '{path}': expected an integer, got {value}"
            )),
        },
        "number" => match value {
            Value::Number(_) => Ok(()),
            _ => fail(format!(
                "Invalid value at '{path}': expected a number, got {value}"
            )),
        },
        "boolean" => match value {
            Value::Bool(_) => Ok(()),
            _ => fail(format!(
                "Invalid value at '{path}': expected a boolean, got {value}"
            )),
        },
        _ => Ok(()),
    }
}

/// What BigQuery checks of a `jobs.insert` body: the discovery schema, then the values the
/// schema leaves as free strings but the API documents (dispositions, formats, job id).
pub fn check_insert(body: &Value, ints_for_enums: bool) -> Result<(), (String, String)> {
    validate(body, &json!({"$ref": "Job"}), "job", ints_for_enums)?;
    let id = body["jobReference"]["jobId"].as_str().unwrap_or_default();
    let valid_id = !id.is_empty()
        && id.len() <= 1024
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_id {
        return Err((
            "job.jobReference.jobId".into(),
            format!("Invalid job ID \"{id}\""),
        ));
    }
    let load = &body["configuration"]["load"];
    let documented: [(&str, &[&str]); 3] = [
        (
            "writeDisposition",
            &[
                "WRITE_APPEND",
                "WRITE_TRUNCATE",
                "WRITE_TRUNCATE_DATA",
                "WRITE_EMPTY",
            ],
        ),
        ("createDisposition", &["CREATE_IF_NEEDED", "CREATE_NEVER"]),
        (
            "sourceFormat",
            &[
                "CSV",
                "DATASTORE_BACKUP",
                "NEWLINE_DELIMITED_JSON",
                "AVRO",
                "PARQUET",
                "ORC",
            ],
        ),
    ];
    for (field, allowed) in documented {
        if let Some(v) = load.get(field).and_then(Value::as_str)
            && !allowed.contains(&v)
        {
            return Err((
                format!("job.configuration.load.{field}"),
                format!("Invalid value for {field}: {v}"),
            ));
        }
    }
    let uris = load["sourceUris"].as_array().map_or(0, Vec::len);
    if uris == 0 || load["destinationTable"]["tableId"].as_str().is_none() {
        return Err((
            "job.configuration.load".into(),
            "Load configuration must specify sourceUris and destinationTable".into(),
        ));
    }
    Ok(())
}

/// What a job does once inserted.
#[derive(Debug, Clone)]
pub enum Script {
    /// RUNNING for `polls` gets, then DONE without error.
    Succeed {
        polls: u32,
        rows: i64,
        bad_records: i64,
        errors: Vec<Value>,
    },
    /// RUNNING for `polls` gets, then DONE with this `errorResult` (and `errors`).
    Fail {
        polls: u32,
        error: Value,
        errors: Vec<Value>,
    },
    /// The insert itself answers with an HTTP error; no job is created.
    InsertError {
        status: u16,
        reason: String,
        message: String,
    },
}

impl Script {
    pub fn ok() -> Script {
        Script::Succeed {
            polls: 0,
            rows: 10,
            bad_records: 0,
            errors: vec![],
        }
    }

    pub fn fail(reason: &str, message: &str, location: &str) -> Script {
        Script::Fail {
            polls: 0,
            error: json!({"reason": reason, "message": message, "location": location}),
            errors: vec![],
        }
    }
}

#[derive(Debug, Clone)]
struct FakeJob {
    body: Value,
    polls_left: u32,
    outcome: Script,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Option<Value>,
}

#[derive(Default)]
struct State {
    jobs: HashMap<String, FakeJob>,
    scripts: VecDeque<Script>,
    requests: Vec<Recorded>,
}

/// The running fake; stops when dropped.
pub struct FakeBigQuery {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeBigQuery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error_body(
    code: u16,
    status: &str,
    reason: &str,
    message: &str,
    location: Option<&str>,
) -> Value {
    let mut entry = json!({"domain": "global", "reason": reason, "message": message});
    if let Some(l) = location {
        entry["location"] = json!(l);
        entry["locationType"] = json!("other");
    }
    json!({"error": {"code": code, "message": message, "errors": [entry], "status": status}})
}

fn job_resource(project: &str, id: &str, job: &FakeJob) -> Value {
    let mut out = job.body.clone();
    out["kind"] = json!("bigquery#job");
    out["id"] = json!(format!("{project}:US.{id}"));
    out["jobReference"]["location"] = json!("US");
    let done = job.polls_left == 0;
    out["status"] = json!({"state": if done { "DONE" } else { "RUNNING" }});
    out["statistics"] = json!({"creationTime": "1700000000000", "startTime": "1700000000000"});
    if done {
        out["statistics"]["endTime"] = json!("1700000001500");
        match &job.outcome {
            Script::Succeed {
                rows,
                bad_records,
                errors,
                ..
            } => {
                out["statistics"]["load"] = json!({
                    "inputFiles": "1", "inputFileBytes": "1234",
                    "outputRows": rows.to_string(), "outputBytes": "999",
                    "badRecords": bad_records.to_string()
                });
                if !errors.is_empty() {
                    out["status"]["errors"] = json!(errors);
                }
            }
            Script::Fail { error, errors, .. } => {
                out["status"]["errorResult"] = error.clone();
                let mut all = vec![error.clone()];
                all.extend(errors.iter().cloned());
                out["status"]["errors"] = json!(all);
            }
            Script::InsertError { .. } => {}
        }
    }
    out
}

fn respond(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

fn handle(
    state: &Mutex<State>,
    method: &str,
    path: &str,
    query: &str,
    body: Option<Value>,
) -> (u16, Value) {
    // The setup checks every real run makes before its jobs (the dataset exists; is there a
    // table to compare schemas with?) are answered here and not recorded: the tests look at
    // the job protocol. Datasets exist; tables do not (the load creates them).
    let route: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, route.as_slice()) {
        ("GET", ["bigquery", "v2", "projects", project, "datasets", dataset]) => {
            return (
                200,
                serde_json::json!({
                    "kind": "bigquery#dataset",
                    "id": format!("{project}:{dataset}"),
                    "datasetReference": {"projectId": project, "datasetId": dataset},
                    "location": "US"
                }),
            );
        }
        (
            "GET",
            [
                "bigquery",
                "v2",
                "projects",
                project,
                "datasets",
                dataset,
                "tables",
                table,
            ],
        ) => {
            let message = format!("Not found: Table {project}:{dataset}.{table}");
            return (
                404,
                error_body(404, "NOT_FOUND", "notFound", &message, None),
            );
        }
        _ => {}
    }
    let mut state = state.lock().unwrap();
    state.requests.push(Recorded {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        body: body.clone(),
    });
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("POST", ["bigquery", "v2", "projects", project, "jobs"]) => {
            let Some(body) = body else {
                return (
                    400,
                    error_body(
                        400,
                        "INVALID_ARGUMENT",
                        "invalid",
                        "Request body is empty",
                        None,
                    ),
                );
            };
            let ints = query.contains("enum-encoding=int") || query.contains("enum-encoding%3Dint");
            if let Err((location, message)) = check_insert(&body, ints) {
                return (
                    400,
                    error_body(
                        400,
                        "INVALID_ARGUMENT",
                        "invalid",
                        &message,
                        Some(&location),
                    ),
                );
            }
            let id = body["jobReference"]["jobId"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if state.jobs.contains_key(&id) {
                let message = format!("Already Exists: Job {project}:US.{id}");
                return (
                    409,
                    error_body(409, "ALREADY_EXISTS", "duplicate", &message, None),
                );
            }
            let script = state.scripts.pop_front().unwrap_or_else(Script::ok);
            if let Script::InsertError {
                status,
                reason,
                message,
            } = &script
            {
                return (
                    *status,
                    error_body(*status, "UNAVAILABLE", reason, message, None),
                );
            }
            let polls = match &script {
                Script::Succeed { polls, .. } | Script::Fail { polls, .. } => *polls,
                Script::InsertError { .. } => 0,
            };
            let job = FakeJob {
                body,
                polls_left: polls,
                outcome: script,
            };
            let resource = job_resource(project, &id, &job);
            state.jobs.insert(id, job);
            (200, resource)
        }
        ("GET", ["bigquery", "v2", "projects", project, "jobs", id]) => {
            let id = id.to_string();
            let Some(job) = state.jobs.get_mut(&id) else {
                let message = format!("Not found: Job {project}:{id}");
                return (
                    404,
                    error_body(404, "NOT_FOUND", "notFound", &message, None),
                );
            };
            let resource = job_resource(project, &id, job);
            job.polls_left = job.polls_left.saturating_sub(1);
            (200, resource)
        }
        _ => (
            404,
            error_body(
                404,
                "NOT_FOUND",
                "notFound",
                &format!("no route {method} {path}"),
                None,
            ),
        ),
    }
}

impl FakeBigQuery {
    pub async fn start() -> FakeBigQuery {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_string();
                            let query = req.uri().query().unwrap_or_default().to_string();
                            let bytes = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let body = if bytes.is_empty() {
                                None
                            } else {
                                match serde_json::from_slice(&bytes) {
                                    Ok(v) => Some(v),
                                    Err(e) => {
                                        return Ok::<_, Infallible>(respond(
                                            400,
                                            error_body(
                                                400,
                                                "INVALID_ARGUMENT",
                                                "invalid",
                                                &format!("Malformed JSON: {e}"),
                                                None,
                                            ),
                                        ));
                                    }
                                }
                            };
                            let (status, value) = handle(&state, &method, &path, &query, body);
                            Ok::<_, Infallible>(respond(status, value))
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        FakeBigQuery { addr, state, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Outcomes for the next inserts, in order (then: succeed).
    pub fn script(&self, scripts: impl IntoIterator<Item = Script>) {
        self.state.lock().unwrap().scripts.extend(scripts);
    }

    /// A job that exists before the test runs, as if an earlier task attempt had submitted it.
    pub fn seed_job(&self, project: &str, id: &str, body_from: &Value, outcome: Script) {
        let polls = match &outcome {
            Script::Succeed { polls, .. } | Script::Fail { polls, .. } => *polls,
            Script::InsertError { .. } => 0,
        };
        let mut body = body_from.clone();
        body["jobReference"] = json!({"projectId": project, "jobId": id});
        self.state.lock().unwrap().jobs.insert(
            id.to_string(),
            FakeJob {
                body,
                polls_left: polls,
                outcome,
            },
        );
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Job ids of the inserts received, in order.
    pub fn inserted_ids(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r.method == "POST")
            .filter_map(|r| {
                r.body.as_ref()?["jobReference"]["jobId"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect()
    }

    /// How many `jobs.get` calls were made.
    pub fn gets(&self) -> usize {
        self.requests().iter().filter(|r| r.method == "GET").count()
    }
}
