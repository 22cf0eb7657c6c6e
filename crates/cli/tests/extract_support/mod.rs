//! Helpers for the `sluice extract` CLI tests: the real binary, signals, file listings.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The real `sluice` binary with a clean environment: no inherited `SLUICE_*`, Cloud Run or
/// emulator variables, fast retries.
pub fn sluice() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    for (name, _) in std::env::vars() {
        if name.starts_with("SLUICE_")
            || name.starts_with("CLOUD_RUN_")
            || name == "STORAGE_EMULATOR_HOST"
            || name == "SOCRATA_APP_TOKEN"
            || name == "RUST_LOG"
        {
            command.env_remove(name);
        }
    }
    command
        .env("SLUICE_LOG_FORMAT", "json")
        .env("SLUICE_MAX_ATTEMPTS", "6")
        .env("SLUICE_RETRY_BUDGET", "30s")
        .env("SLUICE_READ_TIMEOUT", "10s")
        .stdin(Stdio::null());
    command
}

pub fn output(command: &mut Command) -> Output {
    command.output().expect("running sluice")
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn spawn(command: &mut Command) -> Child {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting sluice")
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}

/// Every file under `dir` (hidden ones included), relative, sorted.
pub fn all_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Files whose names do not start with `.` in any segment (the store's visible objects).
pub fn visible_files(dir: &Path) -> Vec<String> {
    all_files(dir)
        .into_iter()
        .filter(|f| !f.split('/').any(|s| s.starts_with('.')))
        .collect()
}

/// A CSV of roughly `bytes` bytes.
pub fn csv_of_size(bytes: usize) -> Vec<u8> {
    let mut out = b"id,value,label,at\n".to_vec();
    let mut i = 0u64;
    while out.len() < bytes {
        out.extend_from_slice(
            format!(
                "{i},{}.5,label {},2025-06-{:02}T12:00:00Z\n",
                i * 7 % 1000,
                i % 97,
                i % 28 + 1
            )
            .as_bytes(),
        );
        i += 1;
    }
    out
}
