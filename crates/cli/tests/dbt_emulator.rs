//! `sluice dbt` running the real dbt-core 1.11 + dbt-bigquery 1.11 against bqemulator, with
//! artifacts going to fake-gcs-server. Each test starts its own emulators.

mod dbt_support;

use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dbt_support::{
    CAR_ROWS, DATASET, Stack, events, files_containing, files_under, find, nodes_with_status, text,
};

const MODELS: [&str; 3] = [
    "model.sluice_test.mart_origin_power",
    "model.sluice_test.stg_cars",
    "model.sluice_test.stg_origins",
];

#[test]
fn build_passes_uploads_artifacts_and_leaks_no_token() {
    let stack = Stack::start();
    let scratch = tempfile::tempdir().unwrap();
    // The emulator takes any token; a distinctive one shows whether it leaks anywhere.
    let token = "ya29.sluice-test-token-7f3c9a1e5d";
    let out = stack
        .sluice_dbt(scratch.path())
        .args(["--artifacts", "gs://artifacts/dbt-runs"])
        .env("SLUICE_DBT_BIGQUERY_TOKEN", token)
        .env("CLOUD_RUN_JOB", "transform")
        .env("CLOUD_RUN_EXECUTION", "transform-x7k2p")
        .args(["--", "build"])
        .output()
        .unwrap();
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(0), "{logs}");
    let ev = events(&out);

    // dbt's events arrive as Sluice events with node facts as fields.
    assert_eq!(nodes_with_status(&ev, "success"), MODELS, "{logs}");
    assert_eq!(
        nodes_with_status(&ev, "pass").len(),
        3,
        "three data tests: {logs}"
    );
    let done = find(&ev, "dbt build succeeded").unwrap_or_else(|| panic!("no summary: {logs}"));
    assert_eq!(done["severity"], "INFO");
    assert_eq!(
        (done["pass"].as_u64(), done["error"].as_u64()),
        (Some(6), Some(0)),
        "{done}"
    );
    assert_eq!(done["dbt_exit_code"], 0);
    assert!(
        done["message"]
            .as_str()
            .unwrap()
            .contains("PASS=6 WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL=6"),
        "{done}"
    );
    let started = find(&ev, "1 of 6 START").unwrap_or_else(|| panic!("{logs}"));
    assert_eq!(started["target"], "dbt");
    assert_eq!(
        started["logging.googleapis.com/labels"]["execution"],
        "transform-x7k2p"
    );

    // The mart really is in BigQuery: one row per origin.
    let origins = stack
        .bq
        .query_scalar_i64(&format!("select count(*) from {DATASET}.mart_origin_power"))
        .unwrap();
    assert_eq!(origins, 3);
    let cars = stack
        .bq
        .query_scalar_i64(&format!(
            "select sum(cars) from {DATASET}.mart_origin_power"
        ))
        .unwrap();
    assert_eq!(cars, CAR_ROWS);

    // Artifacts under prefix/execution/task.
    let prefix = "dbt-runs/transform-x7k2p/task-00000/";
    let keys = stack.list_objects("artifacts", prefix);
    for name in ["dbt.log", "run_results.json", "manifest.json"] {
        assert!(
            keys.contains(&format!("{prefix}{name}")),
            "{name} missing from {keys:?}"
        );
    }
    let run_results: serde_json::Value = serde_json::from_slice(
        &stack.read_object("artifacts", &format!("{prefix}run_results.json")),
    )
    .unwrap();
    assert_eq!(run_results["results"].as_array().unwrap().len(), 6);
    let dbt_log = stack.read_object("artifacts", &format!("{prefix}dbt.log"));
    assert!(String::from_utf8_lossy(&dbt_log).contains("mart_origin_power"));

    // No token in the logs, the uploaded objects, or anything left in the temp dir (which the
    // run cleans up entirely: the generated profile is gone).
    assert!(!logs.contains(token), "token in output: {logs}");
    assert_eq!(
        files_containing(&stack.gcs.root(), token),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        files_under(scratch.path()),
        Vec::<std::path::PathBuf>::new()
    );
    // The project dir stays clean: target and logs went to the private run dir.
    let project = dbt_support::dbt_project();
    assert!(!project.join("target").exists() && !project.join("logs").exists());
}

#[test]
fn failing_test_exits_1_with_an_error_event_and_artifacts() {
    let stack = Stack::start();
    let scratch = tempfile::tempdir().unwrap();
    let artifacts = tempfile::tempdir().unwrap();
    let out = stack
        .sluice_dbt(scratch.path())
        .arg("--artifacts")
        .arg(artifacts.path())
        .args(["--", "build", "--vars", "{fail_test: true}"])
        .output()
        .unwrap();
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(1), "{logs}");
    let ev = events(&out);

    let failure = ev
        .iter()
        .find(|e| {
            e["node_id"] == "test.sluice_test.assert_no_car_over_200hp"
                && e["node_status"] == "fail"
        })
        .unwrap_or_else(|| panic!("no failing-test event: {logs}"));
    assert_eq!(failure["severity"], "ERROR", "{failure}");
    assert_eq!(failure["resource_type"], "test");
    assert_eq!(failure["num_failures"], 1);
    assert_eq!(failure["dbt_event"], "LogTestResult");
    // The mart downstream of the failed test is skipped.
    assert_eq!(
        nodes_with_status(&ev, "skipped"),
        ["model.sluice_test.mart_origin_power"],
        "{logs}"
    );
    let done = find(&ev, "dbt build failed").unwrap_or_else(|| panic!("{logs}"));
    assert_eq!(done["severity"], "ERROR");
    assert_eq!(
        (done["error"].as_u64(), done["skip"].as_u64()),
        (Some(1), Some(1))
    );

    // Uploaded even though dbt failed.
    let files: Vec<String> = files_under(artifacts.path())
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(String::from))
        .filter(|n| !n.starts_with('.'))
        .collect();
    for name in ["dbt.log", "run_results.json", "manifest.json"] {
        assert!(files.contains(&name.to_string()), "{name} not in {files:?}");
    }
}

#[test]
fn sigterm_stops_dbt_mid_query_and_exits_143() {
    let stack = Stack::start();
    let scratch = tempfile::tempdir().unwrap();
    let artifacts = tempfile::tempdir().unwrap();
    let stop_timeout = 3;
    let mut child = stack
        .sluice_dbt(scratch.path())
        .args(["--stop-timeout", &stop_timeout.to_string()])
        .arg("--artifacts")
        .arg(artifacts.path())
        .args([
            "--",
            "run",
            "--select",
            "slow_crunch",
            "--vars",
            "{slow: true}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });

    // Wait until dbt has sent the slow query to BigQuery.
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the slow model never started:\n{}", lines.join("\n")));
        let started = line.contains("START sql table model analytics.slow_crunch");
        lines.push(line);
        if started {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    let elapsed = signalled.elapsed();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    let all = lines.join("\n");

    assert_eq!(status.code(), Some(143), "{all}");
    // SIGINT, the bounded wait, then the kill: well inside Cloud Run's 10 s.
    assert!(
        elapsed < Duration::from_secs(stop_timeout + 4),
        "took {elapsed:?}:\n{all}"
    );
    let ev: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        find(&ev, "stop requested: sending SIGINT to dbt").is_some(),
        "{all}"
    );
    let done = find(&ev, "dbt run stopped").unwrap_or_else(|| panic!("no summary:\n{all}"));
    assert_eq!(done["severity"], "ERROR");
    assert_eq!(done["stopped"], true);
    // dbt and everything it started are gone.
    let pid = done["dbt_pid"].as_u64().unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "dbt (pid {pid}) still running"
    );
    // Whatever dbt left is uploaded on the way out.
    let names: Vec<String> = files_under(artifacts.path())
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(String::from))
        .collect();
    assert!(names.contains(&"dbt.log".to_string()), "{names:?}\n{all}");
}

#[test]
fn shard_by_splits_models_across_two_tasks() {
    let stack = Stack::start();
    let scratch = tempfile::tempdir().unwrap();
    let spawn = |index: u32| {
        stack
            .sluice_dbt(scratch.path())
            .args([
                "--shard-by",
                "tag:staging",
                "--shard-strategy",
                "round-robin",
            ])
            .env("CLOUD_RUN_TASK_INDEX", index.to_string())
            .env("CLOUD_RUN_TASK_COUNT", "2")
            .args(["--", "build"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children = [spawn(0), spawn(1)];
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut built = Vec::new();
    for (index, out) in outs.iter().enumerate() {
        let logs = text(out);
        assert_eq!(out.status.code(), Some(0), "task {index}: {logs}");
        let ev = events(out);
        let share = find(&ev, "running this task's share").unwrap_or_else(|| panic!("{logs}"));
        assert_eq!(
            (share["models"].as_u64(), share["share"].as_u64()),
            (Some(2), Some(1))
        );
        let models = nodes_with_status(&ev, "success");
        assert_eq!(models.len(), 1, "task {index} built {models:?}: {logs}");
        built.extend(models);
    }
    built.sort();
    // Each staging model built exactly once, by one task; the untagged mart by neither.
    assert_eq!(
        built,
        [
            "model.sluice_test.stg_cars",
            "model.sluice_test.stg_origins"
        ]
    );
}
