//! `sluice-trigger local`: tasks run on this machine with Cloud Run's contract, parallelism,
//! retries, timeouts and signals. The jobs here are small `sh` scripts that record what they
//! saw in files.

use serde_json::Value;
use sluice_runtime::Shutdown;
use sluice_runtime::StopSignal;
use sluice_trigger::commands::{self, LocalOptions, OutputFormat};
use sluice_trigger::{LogMode, Output};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Collects re-emitted task lines.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl Output for Lines {
    fn line(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
}

impl Lines {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

fn options(spec: &Path, job: &str) -> LocalOptions {
    LocalOptions {
        spec: spec.to_path_buf(),
        job: job.into(),
        tasks: None,
        parallelism: None,
        timeout: None,
        args: None,
        env: vec![],
        docker: false,
        engine: PathBuf::from("docker"),
        image: None,
        adc: false,
        sluice_bin: None,
        current_exe: None,
        log_mode: LogMode::Text,
        parent_env: std::env::vars().collect(),
    }
}

async fn run_local(opts: &LocalOptions, shutdown: &Shutdown) -> (i32, Value, Arc<Lines>) {
    let lines = Arc::new(Lines::default());
    let mut out = Vec::new();
    let code = commands::local(OutputFormat::Json, shutdown, opts, lines.clone(), &mut out)
        .await
        .unwrap_or_else(|e| panic!("local failed: {e}"));
    let report = serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
    (code, report, lines)
}

/// A spec whose job runs `script` with `sh -c`, recording into `dir` (exported as OUT).
fn spec_with(dir: &Path, job_settings: &str, script: &str) -> PathBuf {
    let spec = format!(
        r#"
[local]
kill_grace = "500ms"
env = {{ OUT = "{out}" }}

[[jobs]]
name = "work"
command = ["sh", "-c", '''{script}''']
{job_settings}
"#,
        out = dir.display()
    );
    let p = dir.join("jobs.toml");
    std::fs::write(&p, spec).unwrap();
    p
}

fn nanos(s: &str) -> u128 {
    s.trim().parse().unwrap()
}

#[tokio::test]
async fn five_tasks_two_at_a_time_with_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    // Each attempt records its env and its start/end times in its own file, sleeps long
    // enough that a third concurrent task would overlap, and task 3 fails its first attempt.
    let script = r#"
f="$OUT/attempt.$CLOUD_RUN_TASK_INDEX.$CLOUD_RUN_TASK_ATTEMPT"
echo "$CLOUD_RUN_JOB $CLOUD_RUN_EXECUTION $CLOUD_RUN_TASK_INDEX $CLOUD_RUN_TASK_COUNT $CLOUD_RUN_TASK_ATTEMPT" > "$f.env"
date +%s%N > "$f.start"
echo "hello from task $CLOUD_RUN_TASK_INDEX"
sleep 0.3
date +%s%N > "$f.end"
if [ "$CLOUD_RUN_TASK_INDEX" = 3 ] && [ "$CLOUD_RUN_TASK_ATTEMPT" = 0 ]; then
  echo "task 3 fails once" >&2
  exit 7
fi
"#;
    let spec = spec_with(
        dir.path(),
        "tasks = 5\nparallelism = 2\nmax_retries = 2",
        script,
    );
    let (code, report, lines) =
        run_local(&options(&spec, "work"), &Shutdown::new_unsignalled()).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["state"], "SUCCEEDED");
    assert_eq!(report["mode"], "local");
    assert_eq!(report["task_count"], 5);
    assert_eq!(report["parallelism"], 2);
    assert_eq!(report["counts"]["succeeded"], 5);
    assert_eq!(report["counts"]["retried"], 1);
    let t3 = &report["tasks"][3];
    assert_eq!(
        (
            t3["state"].as_str(),
            t3["attempts"].as_u64(),
            t3["retried"].as_u64()
        ),
        (Some("SUCCEEDED"), Some(2), Some(1))
    );
    assert_eq!(report["tasks"][0]["attempts"], 1);

    // The contract each attempt saw.
    let execution = report["execution_id"].as_str().unwrap();
    assert!(
        execution.starts_with("work-") && execution.len() == "work-".len() + 5,
        "{execution}"
    );
    let mut attempts = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name.strip_suffix(".env") {
            let env = std::fs::read_to_string(dir.path().join(&name)).unwrap();
            let fields: Vec<&str> = env.split_whitespace().collect();
            assert_eq!(fields[0], "work");
            assert_eq!(
                fields[1], execution,
                "every task sees the same execution name"
            );
            assert_eq!(fields[3], "5");
            let start =
                nanos(&std::fs::read_to_string(dir.path().join(format!("{stem}.start"))).unwrap());
            let end =
                nanos(&std::fs::read_to_string(dir.path().join(format!("{stem}.end"))).unwrap());
            attempts.push((fields[2].to_string(), fields[4].to_string(), start, end));
        }
    }
    attempts.sort();
    let ids: Vec<(String, String)> = attempts
        .iter()
        .map(|a| (a.0.clone(), a.1.clone()))
        .collect();
    let expected: Vec<(String, String)> = [
        ("0", "0"),
        ("1", "0"),
        ("2", "0"),
        ("3", "0"),
        ("3", "1"),
        ("4", "0"),
    ]
    .iter()
    .map(|(i, a)| (i.to_string(), a.to_string()))
    .collect();
    assert_eq!(
        ids, expected,
        "task 3 ran again with CLOUD_RUN_TASK_ATTEMPT=1"
    );

    // Never more than two at once, and two at once did happen.
    let concurrency_at = |t: u128| attempts.iter().filter(|a| a.2 <= t && t < a.3).count();
    let max = attempts.iter().map(|a| concurrency_at(a.2)).max().unwrap();
    assert_eq!(max, 2, "{attempts:?}");

    // Output is prefixed with task and attempt.
    let lines = lines.all();
    assert!(
        lines.contains(&"[task 2/5 attempt 0] hello from task 2".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"[task 3/5 attempt 0] task 3 fails once".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"[task 3/5 attempt 1] hello from task 3".to_string()),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_task_past_its_timeout_gets_sigterm_then_sigkill_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    // Task 0 traps TERM, records it and exits; task 1 ignores TERM and must be killed.
    let script = r#"
if [ "$CLOUD_RUN_TASK_INDEX" = 0 ]; then
  trap 'echo term > "$OUT/term.0"; exit 143' TERM
else
  trap '' TERM
fi
sleep 30 &
wait
wait
"#;
    let spec = spec_with(
        dir.path(),
        "tasks = 2\nparallelism = 2\nmax_retries = 0\ntask_timeout = \"1s\"",
        script,
    );
    let started = Instant::now();
    let (code, report, _) = run_local(&options(&spec, "work"), &Shutdown::new_unsignalled()).await;
    let elapsed = started.elapsed();
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["state"], "FAILED");
    assert_eq!(report["counts"]["failed"], 2);
    assert!(
        dir.path().join("term.0").exists(),
        "task 0 received SIGTERM"
    );
    let t0 = &report["tasks"][0];
    assert_eq!(t0["state"], "FAILED");
    assert_eq!(t0["exit_code"], 143);
    assert_eq!(t0["message"], "timed out after 1.0s (SIGTERM)");
    let t1 = &report["tasks"][1];
    assert_eq!(t1["state"], "FAILED");
    assert_eq!(
        t1["term_signal"], 9,
        "ignored SIGTERM, so SIGKILL after the grace period"
    );
    assert!(
        elapsed < Duration::from_secs(6),
        "the stray `sleep 30` children must not be waited for: {elapsed:?}"
    );
}

#[tokio::test]
async fn sigterm_to_local_is_forwarded_and_nothing_new_starts() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
trap 'echo term > "$OUT/term.$CLOUD_RUN_TASK_INDEX"; exit 143' TERM
touch "$OUT/started.$CLOUD_RUN_TASK_INDEX"
sleep 30 &
wait
"#;
    let spec = spec_with(dir.path(), "tasks = 4\nparallelism = 2", script);
    let shutdown = Shutdown::new_unsignalled();
    let trigger = shutdown.clone();
    let out_dir = dir.path().to_path_buf();
    tokio::spawn(async move {
        // Once both running tasks have started, "receive" SIGTERM.
        while !(out_dir.join("started.0").exists() && out_dir.join("started.1").exists()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        trigger.request(StopSignal::Terminate);
    });
    let (code, report, _) = run_local(&options(&spec, "work"), &shutdown).await;
    assert_eq!(code, 143);
    assert_eq!(report["state"], "CANCELLED");
    assert_eq!(report["exit_code"], 143);
    assert!(dir.path().join("term.0").exists() && dir.path().join("term.1").exists());
    assert!(
        !dir.path().join("started.2").exists(),
        "no task starts after the signal"
    );
    assert_eq!(report["tasks"][2]["state"], "CANCELLED");
    assert_eq!(report["tasks"][2]["attempts"], 0);
    assert_eq!(
        report["tasks"][0]["attempts"], 1,
        "an interrupted attempt is not retried"
    );
    assert_eq!(report["counts"]["cancelled"], 4);
}

#[tokio::test]
async fn json_mode_keeps_every_line_parseable_with_labels() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
echo 'plain text line'
echo '{"severity":"WARNING","message":"structured"}'
echo 'to stderr' >&2
"#;
    let spec = spec_with(dir.path(), "", script);
    let mut opts = options(&spec, "work");
    opts.log_mode = LogMode::Json;
    let (code, report, lines) = run_local(&opts, &Shutdown::new_unsignalled()).await;
    assert_eq!(code, 0);
    let parsed: Vec<Value> = lines
        .all()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), 3);
    for v in &parsed {
        let labels = &v["logging.googleapis.com/labels"];
        assert_eq!(labels["job"], "work");
        assert_eq!(labels["execution"], report["execution_id"]);
        assert_eq!(labels["task_index"], "0");
        assert_eq!(labels["task_attempt"], "0");
    }
    assert!(
        parsed
            .iter()
            .any(|v| v["severity"] == "WARNING" && v["message"] == "structured")
    );
    assert!(
        parsed
            .iter()
            .any(|v| v["severity"] == "ERROR" && v["message"] == "to stderr")
    );
}

#[tokio::test]
async fn the_image_entrypoint_is_the_sluice_binary_and_env_layers_apply() {
    let dir = tempfile::tempdir().unwrap();
    // A stand-in `sluice` that reports its argv and env.
    let fake_sluice = dir.path().join("bin").join("sluice");
    std::fs::create_dir_all(fake_sluice.parent().unwrap()).unwrap();
    std::fs::write(
        &fake_sluice,
        "#!/bin/sh\necho \"$@\" > \"$OUT/argv\"\necho \"$SLUICE_EXTRACT_FORMAT $SLUICE_DEST $FROM_FLAG $EMULATOR\" > \"$OUT/env\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake_sluice, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = dir.path().join("jobs.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
[defaults]
env = {{ SLUICE_EXTRACT_FORMAT = "parquet", SLUICE_DEST = "gs://prod/raw" }}

[local]
sluice_bin = "bin/sluice"
env = {{ OUT = "{out}", EMULATOR = "http://127.0.0.1:${{EMU_PORT:-4443}}" }}

[[jobs]]
name = "extract"
args = ["extract", "--url", "https://data.example.org/a.csv"]
local_args = ["extract", "--url", "http://127.0.0.1:${{EMU_PORT:-8000}}/a.csv"]
local_env = {{ SLUICE_DEST = "gs://demo/raw" }}
"#,
            out = dir.path().display()
        ),
    )
    .unwrap();
    let mut opts = options(&spec, "extract");
    opts.env = vec![("FROM_FLAG".into(), "yes".into())];
    let (code, report, _) = run_local(&opts, &Shutdown::new_unsignalled()).await;
    assert_eq!(code, 0, "{report:#}");
    let argv = std::fs::read_to_string(dir.path().join("argv")).unwrap();
    assert_eq!(
        argv.trim(),
        "extract --url http://127.0.0.1:8000/a.csv",
        "local_args, expanded"
    );
    let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
    assert_eq!(
        env.trim(),
        "parquet gs://demo/raw yes http://127.0.0.1:4443",
        "spec env < local env < --env"
    );

    // --sluice-bin wins; a missing one is a usage error naming it.
    opts.sluice_bin = Some(dir.path().join("missing"));
    let err = commands::local(
        OutputFormat::Text,
        &Shutdown::new_unsignalled(),
        &opts,
        Arc::new(Lines::default()),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit, 2);
    assert!(err.message.contains("missing does not exist"), "{err}");
}

#[tokio::test]
async fn docker_without_an_engine_is_a_clear_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("jobs.toml");
    std::fs::write(&spec, "[[jobs]]\nname = \"extract\"\nimage = \"img:1\"\n").unwrap();
    let mut opts = options(&spec, "extract");
    opts.docker = true;
    opts.engine = PathBuf::from("no-such-container-engine");
    let err = commands::local(
        OutputFormat::Text,
        &Shutdown::new_unsignalled(),
        &opts,
        Arc::new(Lines::default()),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit, 2);
    assert!(
        err.message.contains("--docker needs a container engine"),
        "{err}"
    );
    assert!(err.message.contains("no-such-container-engine"), "{err}");
}

/// The binary: stdout is exactly the JSON report, task lines go to stderr, and a SIGTERM to
/// `sluice-trigger local` reaches the running task and ends with 143.
#[test]
fn binary_reports_json_on_stdout_and_forwards_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_with(
        dir.path(),
        "tasks = 2\nparallelism = 2\nmax_retries = 0",
        "echo out-$CLOUD_RUN_TASK_INDEX; [ $CLOUD_RUN_TASK_INDEX = 0 ]",
    );
    let bin = env!("CARGO_BIN_EXE_sluice-trigger");
    let out = std::process::Command::new(bin)
        .args([
            "local",
            spec.to_str().unwrap(),
            "work",
            "--output",
            "json",
            "--log-format",
            "text",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "task 1 fails");
    let report: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(report["state"], "FAILED");
    assert_eq!(report["tasks"][1]["exit_code"], 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[task 0/2 attempt 0] out-0"), "{stderr}");

    let dir2 = tempfile::tempdir().unwrap();
    let spec = spec_with(
        dir2.path(),
        "",
        "trap 'echo term > \"$OUT/term\"; exit 143' TERM; touch \"$OUT/started\"; sleep 30 & wait",
    );
    let mut child = std::process::Command::new(bin)
        .args(["local", spec.to_str().unwrap(), "work", "--output", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir2.path().join("started").exists() {
        assert!(Instant::now() < deadline, "task never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling the child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(
        dir2.path().join("term").exists(),
        "SIGTERM reached the task"
    );
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["state"], "CANCELLED");
    assert_eq!(report["message"], "interrupted by SIGTERM");
}

/// A second SIGTERM makes `sluice-trigger` exit at once; its tasks (in their own process
/// groups) must not outlive it.
#[test]
fn a_second_signal_exits_at_once_without_orphaning_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("jobs.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
[local]
kill_grace = "20s"
env = {{ OUT = "{}" }}

[[jobs]]
name = "stubborn"
command = ["sh", "-c", '''trap 'echo term >> "$OUT/term"' TERM; echo $$ > "$OUT/pid"; while true; do sleep 0.1; done''']
"#,
            dir.path().display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_sluice-trigger");
    let mut child = std::process::Command::new(bin)
        .args(["local", spec.to_str().unwrap(), "stubborn"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pid_file.exists()
        || std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .is_empty()
    {
        assert!(Instant::now() < deadline, "task never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let task_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let alive = |pid: i32| unsafe { libc::kill(pid, 0) } == 0;
    // SAFETY (all three): signalling processes this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    while !dir.path().join("term").exists() {
        assert!(
            Instant::now() < deadline,
            "the task never saw the forwarded SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        alive(task_pid),
        "the task ignores SIGTERM and is still in its 20 s grace"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    let gone_by = Instant::now() + Duration::from_secs(2);
    while alive(task_pid) {
        assert!(
            Instant::now() < gone_by,
            "task {task_pid} outlived sluice-trigger"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn long_and_non_utf8_lines_are_capped_not_fatal() {
    // Before issue 14 the local runner read whole lines without a limit and stopped reading a
    // stream at the first invalid UTF-8 byte.
    let dir = tempfile::tempdir().unwrap();
    let script =
        r#"head -c 300000 /dev/zero | tr '\0' x; echo; printf 'bad \377 byte\n'; echo after"#;
    let spec = spec_with(dir.path(), "", script);
    let (code, report, lines) =
        run_local(&options(&spec, "work"), &Shutdown::new_unsignalled()).await;
    assert_eq!(code, 0, "{report:#}");
    let all = lines.all();
    let long = all
        .iter()
        .find(|l| l.contains("xxxx"))
        .unwrap_or_else(|| panic!("{all:?}"));
    assert!(
        long.ends_with("[line cut at 262144 bytes]"),
        "{}",
        &long[long.len() - 60..]
    );
    assert!(long.len() < 262_144 + 100, "{}", long.len());
    assert!(
        all.iter().any(|l| l.ends_with("bad \u{fffd} byte")),
        "{all:?}"
    );
    assert!(all.iter().any(|l| l.ends_with("] after")), "{all:?}");
}
