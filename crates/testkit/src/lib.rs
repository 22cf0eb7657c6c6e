//! Test harness for the local emulator stack.
//!
//! Each test starts its own emulator instances on free ports ([`FakeGcs::start`],
//! [`BigQueryEmulator::start`]); they are killed when the handle drops (also when the test
//! panics) and, through a watchdog, when the test process dies without dropping them (killed
//! by a timeout or Ctrl-C, or a handle kept in a `static`). The Python side (fake-gcs-server's
//! binary, bqemulator, dbt, Google's discovery documents) comes from the project venv that
//! `scripts/stack install` creates; the bqemulator quirks live in one launcher,
//! `scripts/bqemulator_launcher.py`, shared with `scripts/stack`.
//!
//! Google's real clients can be pointed at the emulators: [`FakeGcs::gcloud`],
//! [`FakeGcs::gsutil`] and [`BigQueryEmulator::bq`] return ready-made [`Command`]s. See
//! `docs/local-stack.md`.
//!
//! For tests of HTTP sources it also has [`TestServer`], an HTTP/1.1 server with files,
//! injected faults and SODA datasets ([`Soda`]: a SoQL subset, data that changes between requests), and shared inputs/read-back ([`gzip`], [`zip`],
//! [`read_parquet`]).

#![warn(unreachable_pub)]

mod bigquery;
mod fixtures;
mod gcs;
mod http;
mod process;
mod server;
mod skip;
mod soda;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

pub use bigquery::BigQueryEmulator;
pub use fixtures::{gzip, read_parquet, zip};
pub use gcs::FakeGcs;
pub use process::ServiceProcess;
pub use server::{Fault, Recorded, ServedFile, SocrataDataset, TestServer};
pub use skip::{in_ci, skip_unless_ci};
pub use soda::{Soda, SodaData, SodaRequest, SodaRow};

/// The repository root: the nearest ancestor of the running test's package directory that
/// holds `scripts/stack`.
///
/// The package directory is read at run time (cargo and nextest set `CARGO_MANIFEST_DIR` for
/// every test process) rather than baked in with `env!`: a target directory shared between
/// checkouts at different paths (CI caches one) may hold binaries compiled elsewhere, whose
/// baked-in path points at the other checkout.
pub fn repo_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    start
        .ancestors()
        .find(|dir| dir.join("scripts/stack").is_file())
        .unwrap_or_else(|| panic!("no ancestor of {} holds scripts/stack", start.display()))
        .canonicalize()
        .expect("repo root")
}

/// The project venv (`$SLUICE_VENV`, else `.venv` at the repo root), as `scripts/stack` uses.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("SLUICE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"))
}

/// A program installed in the project venv, e.g. `venv_bin("dbt")`, `venv_bin("python")`.
pub fn venv_bin(name: &str) -> PathBuf {
    venv_dir().join("bin").join(name)
}

/// Panics with the set-up command when the Python stack is missing.
pub fn require_stack() {
    let python = venv_bin("python");
    assert!(
        python.exists(),
        "the local stack is not installed ({} is missing): run `scripts/stack install` first",
        python.display()
    );
}

/// The venv's `site-packages` directory.
pub fn site_packages() -> anyhow::Result<PathBuf> {
    let lib = venv_dir().join("lib");
    let entries = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}: run `scripts/stack install`", lib.display()))?;
    for entry in entries {
        let candidate = entry?.path().join("site-packages");
        if candidate.is_dir() {
            return Ok(candidate);
        }
    }
    bail!(
        "no python*/site-packages under {}: run `scripts/stack install`",
        lib.display()
    )
}

/// One of Google's published API discovery documents, as shipped in the pinned
/// `google-api-python-client` wheel: `discovery_document("bigquery.v2")`, `"storage.v1"`,
/// `"run.v2"`. The contract a fake checks request bodies against; `bq` needs the BigQuery one
/// because bqemulator does not serve `$discovery`.
pub fn discovery_document(name: &str) -> anyhow::Result<PathBuf> {
    let path = site_packages()?
        .join("googleapiclient/discovery_cache/documents")
        .join(format!("{name}.json"));
    if !path.is_file() {
        bail!(
            "discovery document {name} not found at {}: run `scripts/stack install`",
            path.display()
        );
    }
    Ok(path)
}

/// A free TCP port on 127.0.0.1 (bound then released). Another process may take it before
/// the emulator binds it; the `start` functions retry with a new port when that happens.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Runs `command` to completion and returns stdout; a non-zero exit is an error that names
/// the command and carries both output streams.
pub fn run(command: &mut Command) -> anyhow::Result<Vec<u8>> {
    let what = format!(
        "{} {}",
        command.get_program().to_string_lossy(),
        command
            .get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = command
        .output()
        .with_context(|| format!("running {what} (is it installed? see docs/local-stack.md)"))?;
    if !output.status.success() {
        bail!(
            "{what}: {}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output.stdout)
}

/// Starts a service up to three times, choosing new ports each time, while the failure is a
/// lost race for a port.
fn start_with_retry<T>(mut start: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut attempt = 1;
    loop {
        match start() {
            Err(error) if attempt < 3 && process::port_taken(&error) => attempt += 1,
            other => return other,
        }
    }
}

/// Percent-encodes one URL path segment or query value (RFC 3986 unreserved kept).
fn encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_object_names() {
        assert_eq!(
            super::encode("raw/dt=2024-01-01/a b+c.csv"),
            "raw%2Fdt%3D2024-01-01%2Fa%20b%2Bc.csv"
        );
    }
}
