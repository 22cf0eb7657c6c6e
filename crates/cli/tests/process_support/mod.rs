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
