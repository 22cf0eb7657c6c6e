//! The `sluice` binary as the extract -> load tests run it: emulator endpoints only from the
//! test's own env (never the developer's shell), JSON logs, output captured.

use std::process::{Command, Output};

/// Runs `sluice ARGS` with `env` on top of a cleaned environment.
pub fn sluice(args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_remove("BIGQUERY_EMULATOR_HOST")
        .env_remove("STORAGE_EMULATOR_HOST")
        .env_remove("SLUICE_LOAD_ON_INCOMPLETE")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("SLUICE_LOG_FORMAT", "json")
        .output()
        .expect("run sluice")
}

/// stderr then stdout, for assertion messages and searches.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// The env of one Cloud Run task against the emulators at `gcs` and `bq`: execution
/// `{job}-{day}`, task `index` of `count`, attempt `attempt`.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn task_env(
    gcs: &str,
    bq: &str,
    job: &str,
    day: &str,
    (index, count, attempt): (u32, u32, u32),
) -> Vec<(&'static str, String)> {
    vec![
        ("STORAGE_EMULATOR_HOST", gcs.to_string()),
        ("BIGQUERY_EMULATOR_HOST", bq.to_string()),
        ("CLOUD_RUN_JOB", job.to_string()),
        ("CLOUD_RUN_EXECUTION", format!("{job}-{day}")),
        ("CLOUD_RUN_TASK_INDEX", index.to_string()),
        ("CLOUD_RUN_TASK_COUNT", count.to_string()),
        ("CLOUD_RUN_TASK_ATTEMPT", attempt.to_string()),
    ]
}

/// A CSV of `count` rows `name,value`.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn csv(count: usize) -> String {
    let mut out = String::from("name,value\n");
    for i in 0..count {
        out.push_str(&format!("row{i},{}\n", i * 7));
    }
    out
}

/// The JSON log lines of `out` that have `field`.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn lines_with(out: &Output, field: &str) -> Vec<serde_json::Value> {
    text(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get(field).is_some())
        .collect()
}
