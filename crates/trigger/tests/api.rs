//! `sluice-trigger` against the fake Cloud Run Admin API v2 (tests/support), which checks
//! every request against Google's discovery document.

mod support;

use serde_json::{Value, json};
use sluice_runtime::CancellationToken;
use sluice_runtime::StopSignal;
use sluice_runtime::{RetryPolicy, Shutdown};
use sluice_trigger::commands::{self, Context, OutputFormat};
use sluice_trigger::{
    ApiOptions, CloudRun, JobTarget, RunRequest, RunSettings, WaitSettings, start_execution,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::discovery::Discovery;
use support::fake::{FakeCloudRun, RunFault, Scenario};

const SPEC: &str = r#"
[defaults]
project = "demo-project"
region = "europe-west1"
image = "europe-west1-docker.pkg.dev/demo-project/sluice/sluice:1"
labels = { pipeline = "open-data" }
env = { RUST_LOG = "info" }

[[jobs]]
name = "extract"
args = ["extract", "--dest", "gs://bucket/raw"]
tasks = 3
parallelism = 2
task_timeout = "30m"
max_retries = 2
secrets = { SOCRATA_APP_TOKEN = "socrata-token" }
vpc = { connector = "projects/demo-project/locations/europe-west1/connectors/c1", egress = "all-traffic" }

[[jobs]]
name = "load"
args = ["load", "--write", "truncate"]
memory = "1Gi"
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

fn api_options(fake: &FakeCloudRun) -> ApiOptions {
    ApiOptions {
        endpoint: Some(fake.endpoint()),
        attempt_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            multiplier: 2.0,
            max_attempts: 5,
            max_elapsed: Duration::from_secs(5),
        },
        lro_poll_initial: Duration::from_millis(5),
        lro_poll_max: Duration::from_millis(20),
        lro_timeout: Duration::from_secs(10),
    }
}

fn ctx<'a>(
    fake: &FakeCloudRun,
    output: OutputFormat,
    spec: Option<PathBuf>,
    shutdown: &Shutdown,
) -> Context<'a> {
    Context {
        api: api_options(fake),
        project: None,
        region: None,
        spec,
        output,
        shutdown: shutdown.clone(),
        env: &no_env,
    }
}

fn fast_run() -> RunSettings {
    RunSettings {
        settle: vec![
            Duration::ZERO,
            Duration::from_millis(20),
            Duration::from_millis(50),
        ],
        max_attempts: 3,
        clock_skew: Duration::from_secs(120),
        resend_backoff: Duration::from_millis(10),
    }
}

fn fast_wait() -> WaitSettings {
    WaitSettings {
        poll_initial: Duration::from_millis(5),
        poll_max: Duration::from_millis(20),
        max_wait: Some(Duration::from_secs(20)),
    }
}

fn write_spec(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("jobs.toml");
    std::fs::write(&p, text).unwrap();
    p
}

async fn deploy(fake: &FakeCloudRun, spec: &Path, dry_run: bool) -> (i32, Value) {
    let shutdown = Shutdown::new_unsignalled();
    let mut out = Vec::new();
    let opts = commands::DeployOptions {
        spec: spec.to_path_buf(),
        dry_run,
        ..Default::default()
    };
    let code = commands::deploy(
        &ctx(fake, OutputFormat::Json, None, &shutdown),
        &opts,
        &mut out,
    )
    .await
    .unwrap();
    (code, serde_json::from_slice(&out).unwrap())
}

fn actions(v: &Value) -> Vec<(String, String)> {
    v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["job"].as_str().unwrap().to_string(),
                j["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn run_opts(job: &str, wait: bool) -> commands::RunOptions {
    commands::RunOptions {
        job: job.into(),
        request: RunRequest::default(),
        wait,
        cancel_on_interrupt: false,
        settings: fast_run(),
        wait_settings: fast_wait(),
    }
}

async fn run_json(fake: &FakeCloudRun, spec: &Path, opts: &commands::RunOptions) -> (i32, Value) {
    let shutdown = Shutdown::new_unsignalled();
    let mut out = Vec::new();
    let code = commands::run(
        &ctx(
            fake,
            OutputFormat::Json,
            Some(spec.to_path_buf()),
            &shutdown,
        ),
        opts,
        &mut out,
    )
    .await
    .unwrap_or_else(|e| panic!("run failed: {e}"));
    (
        code,
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out))),
    )
}

async fn deployed() -> (FakeCloudRun, tempfile::TempDir, PathBuf) {
    let fake = FakeCloudRun::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), SPEC);
    let (code, _) = deploy(&fake, &spec, false).await;
    assert_eq!(code, 0);
    (fake, dir, spec)
}

const EXTRACT: &str = "projects/demo-project/locations/europe-west1/jobs/extract";

// ---------------------------------------------------------------------------------------------
// The validator itself.

#[test]
fn validator_accepts_a_good_job_and_rejects_bad_bodies() {
    let d = Discovery::load();
    assert_eq!(d.revision(), "20261031");
    let good = json!({
        "labels": {"a": "b"},
        "template": {"taskCount": 3, "template": {
            "containers": [{"image": "i", "env": [{"name": "X", "valueSource": {"secretKeyRef": {"secret": "s", "version": "latest"}}}]}],
            "timeout": "600s", "maxRetries": 3,
            "vpcAccess": {"connector": "c", "egress": "ALL_TRAFFIC"}
        }},
        "generation": "7",
        "createTime": "2026-11-28T10:00:00.123Z",
    });
    assert!(
        d.validate("GoogleCloudRunV2Job", &mut good.clone())
            .is_empty()
    );

    let cases = [
        (
            json!({"template": {"template": {"containers": [{"imag": "i"}]}}}),
            "$.template.template.containers[0].imag: unknown field",
        ),
        (
            json!({"template": {"taskCount": "3"}}),
            "$.template.taskCount: expected a int32 integer",
        ),
        (
            json!({"template": {"taskCount": 3000000000u64}}),
            "$.template.taskCount: expected a int32 integer",
        ),
        (
            json!({"template": {"template": {"vpcAccess": {"egress": "SOMETIMES"}}}}),
            "\"SOMETIMES\" is not one of",
        ),
        (
            json!({"template": {"template": {"vpcAccess": {"egress": 7}}}}),
            "7 is not a number of enum",
        ),
        (json!({"generation": 7}), "$.generation: expected a string"),
        (
            json!({"generation": "seven"}),
            "\"seven\" is not an int64 string",
        ),
        (
            json!({"template": {"template": {"timeout": "10m"}}}),
            "\"10m\" is not a google-duration",
        ),
        (
            json!({"createTime": "yesterday"}),
            "is not an RFC 3339 google-datetime",
        ),
        (json!({"labels": {"a": 1}}), "$.labels.a: expected a string"),
        (
            json!({"template": {"template": {"containers": {"image": "i"}}}}),
            "expected an array",
        ),
        (
            json!({"reconciling": "no"}),
            "$.reconciling: expected a boolean",
        ),
    ];
    for (mut body, expected) in cases {
        let problems = d.validate("GoogleCloudRunV2Job", &mut body).join("\n");
        assert!(
            problems.contains(expected),
            "expected {expected:?} in {problems:?} for {body}"
        );
    }

    // Enum numbers (the protobuf JSON mapping) are accepted and rewritten to names.
    let mut numbered =
        json!({"launchStage": 4, "template": {"template": {"vpcAccess": {"egress": 1}}}});
    assert!(d.validate("GoogleCloudRunV2Job", &mut numbered).is_empty());
    assert_eq!(numbered["launchStage"], "GA");
    assert_eq!(
        numbered["template"]["template"]["vpcAccess"]["egress"],
        "ALL_TRAFFIC"
    );
}

#[test]
fn validator_routes_paths_and_checks_query_parameters() {
    let d = Discovery::load();
    let run = d
        .find_method("POST", &format!("/v2/{EXTRACT}:run"))
        .unwrap();
    assert_eq!(run.id, "run.projects.locations.jobs.run");
    assert_eq!(
        run.request.as_deref(),
        Some("GoogleCloudRunV2RunJobRequest")
    );
    let get = d.find_method("GET", &format!("/v2/{EXTRACT}")).unwrap();
    assert_eq!(get.id, "run.projects.locations.jobs.get");
    assert!(
        d.find_method("GET", &format!("/v2/{EXTRACT}:run"))
            .is_none()
    );
    assert!(d.find_method("POST", "/v2/projects/p/jobs").is_none());

    let create = d
        .find_method("POST", "/v2/projects/p/locations/r/jobs")
        .unwrap();
    let q = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    assert!(
        d.validate_query(
            create,
            &q(&[
                ("jobId", "x"),
                ("validateOnly", "false"),
                ("$alt", "json;enum-encoding=int")
            ])
        )
        .is_empty()
    );
    let problems = d
        .validate_query(create, &q(&[("jobId", "x"), ("updateMask", "a")]))
        .join("\n");
    assert!(
        problems
            .contains("\"updateMask\" is not a parameter of run.projects.locations.jobs.create"),
        "{problems}"
    );
    let problems = d
        .validate_query(create, &q(&[("validateOnly", "maybe")]))
        .join("\n");
    assert!(
        problems.contains("validateOnly=\"maybe\" is not a boolean"),
        "{problems}"
    );
    let problems = d.validate_query(create, &q(&[("$alt", "xml")])).join("\n");
    assert!(problems.contains("alt=\"xml\" is not one of"), "{problems}");
    let patch = d.find_method("PATCH", &format!("/v2/{EXTRACT}")).unwrap();
    assert!(
        d.validate_query(patch, &q(&[("allowMissing", "true")]))
            .is_empty()
    );
}

#[tokio::test]
async fn fake_rejects_requests_that_break_the_document() {
    // A hand-made bad request shows the fake enforces the contract (and records it).
    let fake = FakeCloudRun::start().await;
    let client = reqwest_like_post(
        &fake,
        "/v2/projects/p/locations/r/jobs?jobId=x",
        r#"{"template":{"taskCount":"3"}}"#,
    )
    .await;
    assert!(client.starts_with("HTTP/1.1 400"), "{client}");
    assert!(client.contains("INVALID_ARGUMENT"), "{client}");
    let v = fake.violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("$.template.taskCount"), "{v:?}");
}

/// A minimal HTTP/1.1 POST over a raw socket (no client library smoothing anything over).
async fn reqwest_like_post(fake: &FakeCloudRun, path_and_query: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(fake.addr).await.unwrap();
    let req = format!(
        "POST {path_and_query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// deploy

#[tokio::test]
async fn deploy_creates_then_leaves_unchanged_then_updates() {
    let fake = FakeCloudRun::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), SPEC);

    let (code, out) = deploy(&fake, &spec, false).await;
    assert_eq!(code, 0, "{out:#}\n{:?}", fake.violations());
    assert_eq!(
        actions(&out),
        [
            ("extract".into(), "created".into()),
            ("load".into(), "created".into())
        ]
    );
    let creates = fake.calls("jobs.create");
    assert_eq!(creates.len(), 2);
    assert!(
        fake.calls("operations.get").len() >= 2,
        "create operations are polled to completion"
    );
    assert!(
        creates[0]
            .query
            .contains(&("jobId".into(), "extract".into()))
    );
    let stored = fake.job(EXTRACT).unwrap();
    let task = &stored["template"]["template"];
    assert_eq!(stored["template"]["taskCount"], 3);
    assert_eq!(stored["template"]["parallelism"], 2);
    assert_eq!(task["timeout"], "1800s");
    assert_eq!(task["maxRetries"], 2);
    assert_eq!(task["vpcAccess"]["egress"], "ALL_TRAFFIC");
    assert_eq!(
        task["containers"][0]["args"],
        json!(["extract", "--dest", "gs://bucket/raw"])
    );
    let env = task["containers"][0]["env"].as_array().unwrap();
    let token = env
        .iter()
        .find(|e| e["name"] == "SOCRATA_APP_TOKEN")
        .unwrap();
    assert_eq!(
        token["valueSource"]["secretKeyRef"],
        json!({"secret": "socrata-token", "version": "latest"})
    );
    assert!(
        token.get("value").is_none(),
        "secrets never travel as values"
    );
    assert_eq!(stored["labels"]["pipeline"], "open-data");
    // The fake spells CPU "1000m" back, as a server may: still "unchanged" below.
    assert_eq!(task["containers"][0]["resources"]["limits"]["cpu"], "1000m");

    let before = fake.requests().len();
    let (code, out) = deploy(&fake, &spec, false).await;
    assert_eq!(code, 0, "{out:#}\n{:?}", fake.violations());
    assert_eq!(
        actions(&out),
        [
            ("extract".into(), "unchanged".into()),
            ("load".into(), "unchanged".into())
        ]
    );
    let after: Vec<String> = fake.requests()[before..]
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(
        after,
        ["GET", "GET"],
        "an unchanged spec makes no mutating call"
    );

    let changed = SPEC
        .replace("memory = \"1Gi\"", "memory = \"2Gi\"")
        .replace("task_timeout = \"30m\"", "task_timeout = \"45m\"");
    std::fs::write(&spec, changed).unwrap();
    // Dry run: shows the PATCH body, sends nothing.
    let before = fake.requests().len();
    let (code, out) = deploy(&fake, &spec, true).await;
    assert_eq!(code, 0);
    assert_eq!(
        actions(&out),
        [
            ("extract".into(), "would-update".into()),
            ("load".into(), "would-update".into())
        ]
    );
    assert_eq!(out["jobs"][0]["changed"], json!(["task_timeout"]));
    assert_eq!(out["jobs"][0]["request"]["method"], "PATCH");
    assert_eq!(
        out["jobs"][0]["request"]["body"]["template"]["template"]["timeout"],
        "2700s"
    );
    assert!(fake.requests()[before..].iter().all(|r| r.method == "GET"));

    let gen_before = fake.job(EXTRACT).unwrap()["generation"].clone();
    let (code, out) = deploy(&fake, &spec, false).await;
    assert_eq!(code, 0, "{out:#}\n{:?}", fake.violations());
    assert_eq!(out["jobs"][1]["changed"], json!(["memory"]));
    let patches = fake.calls("jobs.patch");
    assert_eq!(patches.len(), 2);
    let body = patches[1].body.as_ref().unwrap();
    assert_eq!(
        body["template"]["template"]["containers"][0]["resources"]["limits"]["memory"],
        "2Gi"
    );
    assert!(
        body["etag"].as_str().is_some_and(|e| !e.is_empty()),
        "updates are conditional on the etag"
    );
    assert!(
        body.get("uid").is_none() && body.get("createTime").is_none(),
        "no output-only fields sent back"
    );
    assert_ne!(fake.job(EXTRACT).unwrap()["generation"], gen_before);
    // Unchanged again after the update.
    let (_, out) = deploy(&fake, &spec, false).await;
    assert_eq!(
        actions(&out),
        [
            ("extract".into(), "unchanged".into()),
            ("load".into(), "unchanged".into())
        ]
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn deploy_dry_run_offline_needs_no_api_and_missing_image_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), SPEC);
    let shutdown = Shutdown::new_unsignalled();
    let env = |_: &str| None;
    let ctx = Context {
        api: ApiOptions {
            // Nothing listens here: an API call would fail the test.
            endpoint: Some("http://127.0.0.1:9".into()),
            ..ApiOptions::default()
        },
        project: Some("other-project".into()),
        region: None,
        spec: None,
        output: OutputFormat::Text,
        shutdown,
        env: &env,
    };
    let mut out = Vec::new();
    let opts = commands::DeployOptions {
        spec: spec.clone(),
        only: Some("load".into()),
        dry_run: true,
        offline: true,
    };
    assert_eq!(commands::deploy(&ctx, &opts, &mut out).await.unwrap(), 0);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("would-create projects/other-project/locations/europe-west1/jobs/load"),
        "{text}"
    );
    assert!(text.contains("\"jobId\": \"load\""), "{text}");

    let no_image = write_spec(
        dir.path(),
        "[[jobs]]\nname = \"a\"\nproject = \"p\"\nregion = \"r\"\n",
    );
    let opts = commands::DeployOptions {
        spec: no_image,
        dry_run: true,
        offline: true,
        ..Default::default()
    };
    let err = commands::deploy(&ctx, &opts, &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(err.exit, 2);
    assert!(
        err.message
            .contains("job \"a\": field \"image\" is required"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// run / wait

#[tokio::test]
async fn run_sends_overrides_and_returns_the_execution() {
    let (fake, _dir, spec) = deployed().await;
    let mut opts = run_opts("extract", false);
    opts.request = RunRequest {
        args: Some(vec!["extract".into(), "--limit".into(), "10".into()]),
        env: vec![("SLUICE_EXTRACT_FORMAT".into(), "csv".into())],
        tasks: Some(5),
        timeout: Some(Duration::from_secs(900)),
    };
    let (code, out) = run_json(&fake, &spec, &opts).await;
    assert_eq!(code, 0);
    assert_eq!(out["state"], "RUNNING");
    let runs = fake.calls("jobs.run");
    assert_eq!(runs.len(), 1);
    let body = runs[0].body.as_ref().unwrap();
    let o = &body["overrides"];
    assert_eq!(o["taskCount"], 5);
    assert_eq!(o["timeout"], "900s");
    let co = &o["containerOverrides"][0];
    assert_eq!(co["args"], json!(["extract", "--limit", "10"]));
    assert!(
        co["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == &json!({"name": "SLUICE_EXTRACT_FORMAT", "value": "csv"}))
    );
    assert!(
        co["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "SLUICE_TRIGGER_RUN_ID")
    );
    let name = out["execution"].as_str().unwrap();
    assert!(
        name.starts_with(&format!("{EXTRACT}/executions/extract-")),
        "{name}"
    );
    let exec = fake.execution(name).unwrap();
    assert_eq!(exec["taskCount"], 5);
    assert_eq!(
        exec["template"]["containers"][0]["args"],
        json!(["extract", "--limit", "10"])
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn wait_on_success_reports_every_task() {
    let (fake, _dir, spec) = deployed().await;
    fake.set_scenario(
        "extract",
        Scenario::RetryTask {
            index: 2,
            failures: 1,
            polls: 3,
        },
    );
    let (code, out) = run_json(&fake, &spec, &run_opts("extract", true)).await;
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(out["schema"], "sluice-trigger/execution/v1");
    assert_eq!(out["state"], "SUCCEEDED");
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["job"], "extract");
    assert_eq!(out["counts"]["succeeded"], 3);
    assert_eq!(out["counts"]["retried"], 1);
    let tasks = out["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    assert_eq!(tasks[2]["state"], "SUCCEEDED");
    assert_eq!(tasks[2]["attempts"], 2);
    assert_eq!(tasks[2]["retried"], 1);
    assert_eq!(tasks[0]["exit_code"], 0);
    assert!(
        out["log_uri"]
            .as_str()
            .unwrap()
            .starts_with("https://console.cloud.google.com/logs")
    );
    assert!(out["duration_seconds"].as_f64().is_some());
    assert!(fake.calls("tasks.list").len() == 1);
    fake.assert_no_violations();
}

#[tokio::test]
async fn wait_on_failure_exits_non_zero_and_lists_the_failed_task() {
    let (fake, _dir, spec) = deployed().await;
    fake.set_scenario(
        "extract",
        Scenario::FailTask {
            index: 1,
            exit_code: 3,
            polls: 2,
        },
    );
    let (code, out) = run_json(&fake, &spec, &run_opts("extract", true)).await;
    assert_eq!(code, 1);
    assert_eq!(out["state"], "FAILED");
    assert_eq!(out["exit_code"], 1);
    assert_eq!(out["counts"]["failed"], 1);
    let failed = &out["tasks"][1];
    assert_eq!(failed["state"], "FAILED");
    assert_eq!(failed["exit_code"], 3);
    assert_eq!(failed["attempts"], 3, "max_retries 2 => 3 attempts");
    assert_eq!(failed["message"], "Container terminated with exit code 3.");
    assert_eq!(out["message"], "Task 1 failed.");

    // The text form names the failed task too.
    let shutdown = Shutdown::new_unsignalled();
    let mut text = Vec::new();
    let name = out["execution"].as_str().unwrap().to_string();
    let opts = commands::ExecutionOptions {
        execution: name.rsplit('/').next().unwrap().to_string(),
        wait: true,
        wait_settings: fast_wait(),
        ..Default::default()
    };
    let code = commands::wait(
        &ctx(&fake, OutputFormat::Text, Some(spec.clone()), &shutdown),
        &opts,
        &mut text,
    )
    .await
    .unwrap();
    assert_eq!(code, 1);
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains(": FAILED"), "{text}");
    assert!(
        text.contains("task 1    FAILED    attempts 3  exit 3"),
        "{text}"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn ambiguous_run_failures_never_start_a_second_execution() {
    for fault in [
        RunFault::CreateThen503,
        RunFault::CreateThenDrop,
        // Past the 2 s attempt timeout: the client gives up while the server has acted.
        RunFault::CreateThenStall(Duration::from_secs(4)),
    ] {
        let (fake, _dir, spec) = deployed().await;
        fake.fail_next_run(fault);
        let api = CloudRun::connect(&api_options(&fake), CancellationToken::new())
            .await
            .unwrap();
        let target = JobTarget {
            project: "demo-project".into(),
            region: "europe-west1".into(),
            job: "extract".into(),
        };
        let started = start_execution(&api, &target, &RunRequest::default(), &fast_run())
            .await
            .unwrap();
        assert!(
            started.adopted,
            "{fault:?}: the failed call's execution was found, not returned"
        );
        assert_eq!(
            fake.calls("jobs.run").len(),
            1,
            "{fault:?}: jobs.run must not be re-sent"
        );
        let execs = fake.executions_of(EXTRACT);
        assert_eq!(execs, vec![started.execution.name.clone()], "{fault:?}");
        // And the command follows it to the end like any other.
        let opts = commands::ExecutionOptions {
            execution: started.execution.name.clone(),
            wait: true,
            wait_settings: fast_wait(),
            ..Default::default()
        };
        let shutdown = Shutdown::new_unsignalled();
        let code = commands::wait(
            &ctx(&fake, OutputFormat::Json, Some(spec), &shutdown),
            &opts,
            &mut Vec::new(),
        )
        .await
        .unwrap();
        assert_eq!(code, 0, "{fault:?}");
        assert_eq!(fake.executions_of(EXTRACT).len(), 1);
        fake.assert_no_violations();
    }
}

#[tokio::test]
async fn when_looking_fails_too_run_says_an_execution_may_be_running() {
    let (fake, _dir, spec) = deployed().await;
    fake.fail_next_run(RunFault::CreateThen503);
    fake.fail_gets_after_next_run(100, 500);
    let shutdown = Shutdown::new_unsignalled();
    let err = commands::run(
        &ctx(&fake, OutputFormat::Json, Some(spec), &shutdown),
        &run_opts("extract", true),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit, 1);
    assert!(err.message.contains("jobs.run failed ambiguously"), "{err}");
    assert!(err.message.contains("an execution may be running"), "{err}");
    assert!(
        err.message.contains("sluice-trigger status extract"),
        "{err}"
    );
    assert_eq!(
        fake.calls("jobs.run").len(),
        1,
        "never re-sent while unsure"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn run_is_re_sent_only_when_nothing_was_created() {
    let (fake, _dir, spec) = deployed().await;
    fake.fail_next_run(RunFault::Refuse503);
    let (code, out) = run_json(&fake, &spec, &run_opts("extract", false)).await;
    assert_eq!(code, 0);
    let runs = fake.calls("jobs.run");
    assert_eq!(
        runs.len(),
        2,
        "re-sent after the settle window found nothing"
    );
    // Same marker both times: a late-appearing first attempt would still be recognisable.
    let marker = |r: &support::fake::Recorded| {
        r.body.as_ref().unwrap()["overrides"]["containerOverrides"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "SLUICE_TRIGGER_RUN_ID")
            .unwrap()["value"]
            .clone()
    };
    assert_eq!(marker(&runs[0]), marker(&runs[1]));
    assert_eq!(
        fake.executions_of(EXTRACT),
        vec![out["execution"].as_str().unwrap().to_string()]
    );
    // Between the two calls it looked: job get and executions list.
    let between: Vec<String> = fake
        .requests()
        .iter()
        .skip_while(|r| r.method_id.as_deref() != Some("run.projects.locations.jobs.run"))
        .skip(1)
        .take_while(|r| r.method_id.as_deref() != Some("run.projects.locations.jobs.run"))
        .filter_map(|r| r.method_id.clone())
        .collect();
    assert!(
        between.contains(&"run.projects.locations.jobs.executions.list".to_string()),
        "{between:?}"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn an_execution_someone_else_started_is_not_adopted() {
    let (fake, _dir, spec) = deployed().await;
    // Another client's execution, created just now, carries another marker.
    let (_, other) = run_json(&fake, &spec, &run_opts("extract", false)).await;
    fake.fail_next_run(RunFault::Refuse503);
    let (code, ours) = run_json(&fake, &spec, &run_opts("extract", false)).await;
    assert_eq!(code, 0);
    assert_ne!(ours["execution"], other["execution"]);
    assert_eq!(fake.executions_of(EXTRACT).len(), 2);
    fake.assert_no_violations();
}

#[tokio::test]
async fn transient_get_failures_are_retried_and_missing_jobs_are_named() {
    let (fake, _dir, spec) = deployed().await;
    fake.fail_next_gets(2, 503);
    fake.fail_next_gets(1, 429);
    let (code, _) = run_json(&fake, &spec, &run_opts("extract", true)).await;
    assert_eq!(code, 0);
    let shutdown = Shutdown::new_unsignalled();
    let err = commands::run(
        &ctx(&fake, OutputFormat::Json, Some(spec.clone()), &shutdown),
        &run_opts("dbt", false),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit, 2);
    assert!(
        err.message
            .contains("job dbt not found in project demo-project, region europe-west1"),
        "{err}"
    );
    fake.assert_no_violations();
}

// ---------------------------------------------------------------------------------------------
// cancel, interrupt, status

#[tokio::test]
async fn cancel_stops_a_running_execution() {
    let (fake, _dir, spec) = deployed().await;
    fake.set_scenario("extract", Scenario::Hang);
    let (_, started) = run_json(&fake, &spec, &run_opts("extract", false)).await;
    let id = started["execution_id"].as_str().unwrap().to_string();
    let shutdown = Shutdown::new_unsignalled();
    let c = ctx(&fake, OutputFormat::Json, Some(spec.clone()), &shutdown);
    let opts = commands::ExecutionOptions {
        execution: id.clone(),
        wait: true,
        wait_settings: fast_wait(),
        ..Default::default()
    };
    let mut out = Vec::new();
    let code = commands::cancel(&c, &opts, &mut out).await.unwrap();
    assert_eq!(code, 0);
    let report: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["state"], "CANCELLED");
    assert_eq!(report["counts"]["cancelled"], 3);
    assert_eq!(report["tasks"][0]["state"], "CANCELLED");
    assert_eq!(fake.calls("executions.cancel").len(), 1);
    // A second cancel is refused with the reason.
    let err = commands::cancel(&c, &opts, &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(err.exit, 1);
    assert!(
        err.message.contains("already finished (CANCELLED)"),
        "{err}"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn interrupting_wait_leaves_the_execution_running_unless_asked() {
    for cancel_on_interrupt in [false, true] {
        let (fake, _dir, spec) = deployed().await;
        fake.set_scenario("extract", Scenario::Hang);
        let shutdown = Shutdown::new_unsignalled();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            trigger.request(StopSignal::Interrupt);
        });
        let mut opts = run_opts("extract", true);
        opts.cancel_on_interrupt = cancel_on_interrupt;
        let mut out = Vec::new();
        let code = commands::run(
            &ctx(&fake, OutputFormat::Json, Some(spec.clone()), &shutdown),
            &opts,
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(code, 130);
        let report: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(report["state"], "RUNNING");
        assert_eq!(report["exit_code"], 130);
        assert!(
            report["message"]
                .as_str()
                .unwrap()
                .contains("sluice-trigger wait"),
            "{report:#}"
        );
        assert_eq!(
            fake.calls("executions.cancel").len(),
            usize::from(cancel_on_interrupt)
        );
        fake.assert_no_violations();
    }
}

#[tokio::test]
async fn status_lists_the_latest_executions_newest_first() {
    let (fake, _dir, spec) = deployed().await;
    fake.set_scenario(
        "extract",
        Scenario::FailTask {
            index: 0,
            exit_code: 1,
            polls: 1,
        },
    );
    let (_, first) = run_json(&fake, &spec, &run_opts("extract", true)).await;
    fake.set_scenario("extract", Scenario::Succeed { polls: 1 });
    let (_, second) = run_json(&fake, &spec, &run_opts("extract", true)).await;
    let shutdown = Shutdown::new_unsignalled();
    let mut out = Vec::new();
    let opts = commands::StatusOptions {
        job: "extract".into(),
        limit: 5,
    };
    let code = commands::status(
        &ctx(&fake, OutputFormat::Json, Some(spec.clone()), &shutdown),
        &opts,
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(code, 0);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["schema"], "sluice-trigger/status/v1");
    assert_eq!(v["execution_count"], 2);
    assert_eq!(v["latest_created_execution"], second["execution"]);
    let states: Vec<(&str, &str)> = v["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["execution"].as_str().unwrap(),
                e["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (second["execution"].as_str().unwrap(), "SUCCEEDED"),
            (first["execution"].as_str().unwrap(), "FAILED")
        ]
    );
    let mut text = Vec::new();
    commands::status(
        &ctx(&fake, OutputFormat::Text, Some(spec.clone()), &shutdown),
        &opts,
        &mut text,
    )
    .await
    .unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.starts_with("job extract (projects/demo-project/locations/europe-west1/jobs/extract): 2 execution(s)"), "{text}");
    fake.assert_no_violations();
}

// ---------------------------------------------------------------------------------------------
// The binary end to end.

#[tokio::test]
async fn binary_deploys_runs_and_reports_json() {
    let fake = FakeCloudRun::start().await;
    fake.set_scenario(
        "load",
        Scenario::FailTask {
            index: 0,
            exit_code: 2,
            polls: 2,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), SPEC);
    let bin = env!("CARGO_BIN_EXE_sluice-trigger");
    let endpoint = fake.endpoint();
    let run = |args: Vec<String>| {
        let endpoint = endpoint.clone();
        async move {
            tokio::process::Command::new(bin)
                .args(&args)
                .env("CLOUD_RUN_ENDPOINT", &endpoint)
                .env("SLUICE_TRIGGER_POLL_INTERVAL", "10ms")
                .env("SLUICE_TRIGGER_POLL_MAX_INTERVAL", "50ms")
                .env("SLUICE_LOG_FORMAT", "json")
                .output()
                .await
                .unwrap()
        }
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let spec_s = spec.display().to_string();

    let out = run(s(&["deploy", &spec_s])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("created      projects/demo-project/locations/europe-west1/jobs/extract"),
        "{stdout}"
    );

    let out = run(s(&[
        "run", "extract", "--spec", &spec_s, "--wait", "--output", "json", "--", "extract",
        "--limit", "5",
    ]))
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_slice(&out.stdout).expect("stdout is exactly one JSON document");
    assert_eq!(report["state"], "SUCCEEDED");
    let body = fake.calls("jobs.run")[0].body.clone().unwrap();
    assert_eq!(
        body["overrides"]["containerOverrides"][0]["args"],
        json!(["extract", "--limit", "5"])
    );
    // Logs went to stderr as Cloud Logging JSON lines.
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "{stderr}"
    );

    let out = run(s(&[
        "run", "load", "--spec", &spec_s, "--wait", "--output", "json",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["state"], "FAILED");
    assert_eq!(report["tasks"][0]["exit_code"], 2);

    let out = run(s(&["run", "nope", "--project", "p", "--region", "r"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("job nope not found in project p, region r")
    );
    fake.assert_no_violations();
}
