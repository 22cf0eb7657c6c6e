//! `sluice_dbt::run` end to end with a stand-in `dbt` (a shell script): the decisions around dbt
//! (deps or not, the shard, exit codes, artifacts, scrubbing) without Python's start-up time.
//! The real dbt against bqemulator is exercised by `crates/cli/tests/dbt_*.rs`.

use std::path::{Path, PathBuf};

use sluice_dbt::{
    ArtifactsConfig, Auth, BigQueryProfile, DbtConfig, DepsMode, ProfileSource, Secret,
};
use sluice_runtime::logging::{LogCapture, cloud_logging_layer};
use sluice_runtime::{CancellationToken, ExitCode, ShardStrategy, TaskContext};
use tracing_subscriber::layer::SubscriberExt;

const TOKEN: &str = "tok-orchestration-secret-42";

/// A dbt stand-in that records its argv, prints dbt-style JSON events (one carrying the token,
/// as a leaky dbt might), and leaves dbt-style artifacts.
const FAKE_DBT: &str = r#"#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls"
case "$1" in
  deps)
    mkdir -p "$DBT_PROJECT_DIR/dbt_packages/pkg"
    echo '{"info": {"level": "info", "msg": "Installed pkg", "name": "DepsInstallInfo"}}'
    exit 0 ;;
  ls)
    for m in p.a p.b p.c p.d p.e; do
      echo "{\"info\": {\"level\": \"info\", \"msg\": \"$m\", \"name\": \"PrintEvent\"}, \"data\": {\"msg\": \"$m\"}}"
    done
    exit 0 ;;
esac
echo "{\"info\": {\"level\": \"warn\", \"msg\": \"connecting with $DBT_ENV_SECRET_SLUICE_BIGQUERY_TOKEN\", \"name\": \"X\"}}"
echo '{"info": {"level": "error", "msg": "1 of 2 FAIL 1 t", "name": "LogTestResult"}, "data": {"node_info": {"unique_id": "test.p.t", "node_status": "fail", "resource_type": "test"}}}'
echo "plain stderr noise" >&2
echo "{\"info\": {\"msg\": \"token $DBT_ENV_SECRET_SLUICE_BIGQUERY_TOKEN\"}}" > "$DBT_LOG_PATH/dbt.log"
cp "$DBT_PROFILES_DIR/profiles.yml" "$(dirname "$0")/profiles-seen.yml"
stat -c '%a' "$DBT_PROFILES_DIR" "$DBT_PROFILES_DIR/profiles.yml" > "$(dirname "$0")/profile-modes"
printf '{"results": [{"status": "success"}, {"status": "fail"}], "elapsed_time": 1.5, "args": {"which": "%s"}}' "$1" > "$DBT_TARGET_PATH/run_results.json"
echo '{}' > "$DBT_TARGET_PATH/manifest.json"
exit "$(cat "$(dirname "$0")/exit_code" 2>/dev/null || echo 1)"
"#;

struct Fixture {
    root: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let dbt = bin.join("dbt");
        std::fs::write(&dbt, FAKE_DBT).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dbt, std::fs::Permissions::from_mode(0o755)).unwrap();
        let project = root.path().join("project");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::write(
            project.join("dbt_project.yml"),
            "name: p\nprofile: p_profile\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.path().join("scratch")).unwrap();
        Fixture { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn config(&self) -> DbtConfig {
        let mut profile = BigQueryProfile::new("analytics");
        profile.auth = Auth::OauthSecrets {
            token: Secret::new(TOKEN),
        };
        profile.api_endpoint = Some("http://127.0.0.1:1".into());
        let mut config = DbtConfig::new(
            self.path("project"),
            ProfileSource::Generate(Box::new(profile)),
            self.path("scratch"),
        );
        config.dbt_bin = self.path("bin/dbt");
        config.artifacts = Some(ArtifactsConfig::new(
            self.path("artifacts").to_string_lossy(),
            Default::default(),
        ));
        config
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("bin/calls"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn set_exit(&self, code: i32) {
        std::fs::write(self.path("bin/exit_code"), code.to_string()).unwrap();
    }
}

/// Runs on a current-thread runtime so the capturing subscriber sees the reader tasks' events.
fn run(
    config: &DbtConfig,
    task: &TaskContext,
    cancel: &CancellationToken,
) -> (
    Result<sluice_dbt::DbtOutcome, sluice_dbt::DbtError>,
    Vec<serde_json::Value>,
) {
    let logs = LogCapture::new();
    let subscriber = tracing_subscriber::registry().with(cloud_logging_layer(task, logs.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(sluice_dbt::run(config, task, cancel));
    (result, logs.json_lines().unwrap())
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn failed_run_is_summarised_uploaded_and_scrubbed() {
    let fx = Fixture::new();
    let mut task = TaskContext::local();
    task.execution = Some("exec-1".into());
    let (result, logs) = run(&fx.config(), &task, &CancellationToken::new());
    let outcome = result.unwrap();
    assert_eq!(outcome.exit_code(), ExitCode::TaskFailed);
    assert_eq!(fx.calls(), ["build"]);

    let all = serde_json::to_string(&logs).unwrap();
    assert!(!all.contains(TOKEN), "token in logs: {all}");
    let masked = logs
        .iter()
        .find(|e| e["message"] == "connecting with REDACTED")
        .unwrap_or_else(|| panic!("{all}"));
    assert_eq!(masked["severity"], "WARNING");
    let fail = logs.iter().find(|e| e["node_id"] == "test.p.t").unwrap();
    assert_eq!(fail["severity"], "ERROR");
    let stderr = logs
        .iter()
        .find(|e| e["message"] == "plain stderr noise")
        .unwrap();
    assert_eq!(
        (&stderr["severity"], &stderr["stream"]),
        (&"WARNING".into(), &"stderr".into())
    );
    let summary = logs
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("dbt build failed")
        })
        .unwrap_or_else(|| panic!("{all}"));
    assert_eq!(summary["pass"], 1);
    assert_eq!(summary["error"], 1);

    // Artifacts at artifacts/exec-1/task-00000/, the token masked inside them too.
    let uploaded = fx.path("artifacts/exec-1/task-00000");
    let names: Vec<String> = files(&uploaded)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(names, ["dbt.log", "manifest.json", "run_results.json"]);
    assert_eq!(outcome.uploaded.len(), 3);
    let log = std::fs::read_to_string(uploaded.join("dbt.log")).unwrap();
    assert_eq!(log.trim(), r#"{"info": {"msg": "token REDACTED"}}"#);
    for file in files(fx.root.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "token in {}",
            file.display()
        );
    }
    // The run dir (profile included) is gone.
    assert_eq!(files(&fx.path("scratch")), Vec::<PathBuf>::new());
}

#[test]
fn generated_profile_is_private_and_holds_no_token() {
    let fx = Fixture::new();
    fx.set_exit(0);
    let (result, _) = run(
        &fx.config(),
        &TaskContext::local(),
        &CancellationToken::new(),
    );
    assert_eq!(result.unwrap().exit_code(), ExitCode::Ok);
    // What dbt read: the project's profile name, the token only as an env reference.
    let seen = std::fs::read_to_string(fx.path("bin/profiles-seen.yml")).unwrap();
    assert!(
        seen.contains("\"p_profile\":\n  target: \"sluice\""),
        "{seen}"
    );
    assert!(seen.contains("method: \"oauth-secrets\""), "{seen}");
    assert!(
        seen.contains("env_var('DBT_ENV_SECRET_SLUICE_BIGQUERY_TOKEN')"),
        "{seen}"
    );
    assert!(!seen.contains(TOKEN), "{seen}");
    let modes = std::fs::read_to_string(fx.path("bin/profile-modes")).unwrap();
    assert_eq!(modes.split_whitespace().collect::<Vec<_>>(), ["700", "600"]);
}

#[test]
fn deps_run_only_when_packages_are_declared_and_missing() {
    let fx = Fixture::new();
    fx.set_exit(0);
    let project = fx.path("project");
    std::fs::write(
        project.join("packages.yml"),
        "packages:\n  - local: ../pkg\n",
    )
    .unwrap();
    let mut config = fx.config();
    config.args = vec!["run".into()];

    let (result, _) = run(&config, &TaskContext::local(), &CancellationToken::new());
    assert_eq!(result.unwrap().exit_code(), ExitCode::Ok);
    // The stand-in installed into the project (writable), so the next run skips deps.
    assert_eq!(fx.calls(), ["deps", "run"]);
    let (result, _) = run(&config, &TaskContext::local(), &CancellationToken::new());
    assert_eq!(result.unwrap().exit_code(), ExitCode::Ok);
    assert_eq!(fx.calls(), ["deps", "run", "run"]);
    config.deps = DepsMode::Always;
    let (_, _) = run(&config, &TaskContext::local(), &CancellationToken::new());
    config.deps = DepsMode::Never;
    std::fs::remove_dir_all(project.join("dbt_packages")).unwrap();
    let (_, _) = run(&config, &TaskContext::local(), &CancellationToken::new());
    assert_eq!(fx.calls(), ["deps", "run", "run", "deps", "run", "run"]);
}

#[test]
fn failed_deps_stops_before_the_command() {
    let fx = Fixture::new();
    std::fs::write(
        fx.path("project/packages.yml"),
        "packages:\n  - local: ../pkg\n",
    )
    .unwrap();
    // A dbt whose deps fails like a network error does (exit 2).
    let script = std::fs::read_to_string(fx.path("bin/dbt"))
        .unwrap()
        .replace("mkdir -p \"$DBT_PROJECT_DIR/dbt_packages/pkg\"", "exit 2");
    std::fs::write(fx.path("bin/dbt"), script).unwrap();
    let (result, logs) = run(
        &fx.config(),
        &TaskContext::local(),
        &CancellationToken::new(),
    );
    let outcome = result.unwrap();
    assert_eq!(
        outcome.exit_code(),
        ExitCode::Usage,
        "dbt's exit 2 is passed on"
    );
    assert_eq!(outcome.finished.as_ref().unwrap().0, "deps");
    assert_eq!(fx.calls(), ["deps"]);
    assert!(
        logs.iter().any(|e| e["message"]
            .as_str()
            .unwrap()
            .starts_with("dbt deps failed")),
        "{logs:?}"
    );
}

#[test]
fn shard_by_runs_this_tasks_share_only() {
    let fx = Fixture::new();
    fx.set_exit(0);
    let mut config = fx.config();
    config.shard_by = Some("tag:daily".into());
    config.shard_strategy = ShardStrategy::RoundRobin;
    config.args = vec!["build".into(), "--vars".into(), "{a: 1}".into()];
    let task = TaskContext {
        index: 1,
        count: 2,
        ..TaskContext::local()
    };
    let (result, logs) = run(&config, &task, &CancellationToken::new());
    assert_eq!(result.unwrap().exit_code(), ExitCode::Ok, "{logs:?}");
    assert_eq!(
        fx.calls(),
        [
            "ls --select tag:daily --resource-type model --output selector --vars {a: 1}",
            // Round-robin over the sorted listing p.a..p.e: task 1 of 2 gets p.b and p.d.
            "build --vars {a: 1} --select p.b p.d",
        ]
    );
    // dbt ls's listing is consumed, not logged line by line.
    assert!(!logs.iter().any(|e| e["message"] == "p.a"), "{logs:?}");

    // A task whose share is empty does nothing and succeeds.
    let fx = Fixture::new();
    let mut config = fx.config();
    config.shard_by = Some("tag:daily".into());
    let task = TaskContext {
        index: 6,
        count: 7,
        ..TaskContext::local()
    };
    let (result, logs) = run(&config, &task, &CancellationToken::new());
    let outcome = result.unwrap();
    assert_eq!(outcome.exit_code(), ExitCode::Ok);
    assert!(outcome.finished.is_none());
    assert_eq!(fx.calls().len(), 1, "only ls ran");
    assert!(
        logs.iter()
            .any(|e| e["message"].as_str().unwrap().starts_with("nothing to do")),
        "{logs:?}"
    );
}

#[test]
fn stop_before_start_runs_nothing() {
    let fx = Fixture::new();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let (result, _) = run(&fx.config(), &TaskContext::local(), &cancel);
    let outcome = result.unwrap();
    assert!(outcome.stopped);
    assert!(fx.calls().is_empty());
}

#[test]
fn bad_artifacts_url_fails_before_dbt_runs() {
    let fx = Fixture::new();
    let mut config = fx.config();
    config.artifacts = Some(ArtifactsConfig::new("s3://elsewhere/x", Default::default()));
    let (result, _) = run(&config, &TaskContext::local(), &CancellationToken::new());
    let err = result.unwrap_err();
    assert!(err.to_string().contains("s3://elsewhere/x"), "{err}");
    assert!(fx.calls().is_empty());
}
