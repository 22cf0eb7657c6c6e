//! bqemulator (PyPI, DuckDB-backed), started through `scripts/bqemulator_launcher.py`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::process::ServiceProcess;
use crate::{
    discovery_document, free_port, http, repo_root, require_stack, run, start_with_retry, venv_bin,
};

/// bqemulator (ephemeral, in memory) on 127.0.0.1, reading `gs://bucket/obj` as
/// `gcs_root/bucket/obj`. Killed on drop; its tables go with it.
pub struct BigQueryEmulator {
    process: ServiceProcess,
    port: u16,
    project: String,
    dir: tempfile::TempDir,
    startup: Duration,
}

impl BigQueryEmulator {
    /// Starts a private instance whose default project is `project` and whose `gs://` root is
    /// `gcs_root` (pass [`crate::FakeGcs::root`]). Takes about 1.5 s (Python imports).
    pub fn start(project: &str, gcs_root: &Path) -> anyhow::Result<Self> {
        require_stack();
        let dir = tempfile::Builder::new()
            .prefix("sluice-bqemu-")
            .tempdir()
            .context("creating bqemulator's temp dir")?;
        let launcher = repo_root().join("scripts/bqemulator_launcher.py");
        let (process, port, startup) = start_with_retry(|| {
            let port = free_port()?;
            let grpc_port = free_port()?;
            let mut command = Command::new(venv_bin("python"));
            command
                .arg(&launcher)
                .args(["start", "--rest-port", &port.to_string()])
                .args(["--grpc-port", &grpc_port.to_string()])
                .args(["--project", project, "--log-level", "warning"])
                .env("BQEMU_GCS_LOCAL_ROOT", gcs_root)
                // A stray BQEMU_DATA_DIR would make it persistent and shared between tests.
                .env_remove("BQEMU_DATA_DIR");
            let mut process =
                ServiceProcess::spawn("bqemulator", command, &dir.path().join("server.log"))?;
            let startup =
                process.wait_http_ok(port, &format!("/bigquery/v2/projects/{project}/datasets"))?;
            Ok((process, port, startup))
        })?;
        // Files the real `bq` client needs (see bq()).
        std::fs::write(dir.path().join("token"), "sluice-test-token")?;
        std::fs::write(dir.path().join("bigqueryrc"), "")?;
        std::fs::create_dir_all(dir.path().join("gcloud"))?;
        Ok(Self {
            process,
            port,
            project: project.to_string(),
            dir,
            startup,
        })
    }

    /// `http://127.0.0.1:PORT`: what `BIGQUERY_EMULATOR_HOST` is set to, dbt's
    /// `api_endpoint`, and `bq --api`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    /// How long start-up took until the REST API answered.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Issues a REST call (`method`, path under the emulator such as
    /// `/bigquery/v2/projects/P/datasets`) and returns status and body, whatever the status.
    pub fn rest(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(u16, String)> {
        let body = body.map(|b| b.to_string());
        http::request(self.port, method, path, body.as_deref())
    }

    /// Like [`Self::rest`] but a non-2xx status is an error, and the body is parsed as JSON.
    pub fn rest_ok(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, text) = self.rest(method, path, body)?;
        if !(200..300).contains(&status) {
            bail!("{method} {path} on bqemulator: HTTP {status}: {text}");
        }
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: {text}"))
    }

    /// Creates dataset `dataset` in the emulator's project.
    pub fn create_dataset(&self, dataset: &str) -> anyhow::Result<()> {
        let path = format!("/bigquery/v2/projects/{}/datasets", self.project);
        let body = serde_json::json!({
            "datasetReference": {"projectId": self.project, "datasetId": dataset}
        });
        self.rest_ok("POST", &path, Some(&body)).map(drop)
    }

    /// Runs a GoogleSQL query through `jobs.query` and returns the response JSON.
    pub fn query(&self, sql: &str) -> anyhow::Result<serde_json::Value> {
        let body = serde_json::json!({ "query": sql, "useLegacySql": false });
        let path = format!("/bigquery/v2/projects/{}/queries", self.project);
        self.rest_ok("POST", &path, Some(&body))
            .with_context(|| format!("query {sql:?}"))
    }

    /// The result rows of `sql` as strings (NULL = `None`), in the order returned.
    pub fn query_rows(&self, sql: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        let result = self.query(sql)?;
        let rows = result["rows"].as_array().cloned().unwrap_or_default();
        Ok(rows
            .iter()
            .map(|row| {
                row["f"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|cell| match &cell["v"] {
                        serde_json::Value::Null => None,
                        serde_json::Value::String(s) => Some(s.clone()),
                        other => Some(other.to_string()),
                    })
                    .collect()
            })
            .collect())
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

    /// Google's `bq` client pointed at this emulator: `--api`, the BigQuery discovery
    /// document (bqemulator does not serve `$discovery`), `--project_id`, an empty
    /// `--bigqueryrc`, a dummy access-token file instead of credentials and a private gcloud
    /// config dir. Add the command and its flags, e.g.
    /// `bq.bq().args(["--format=json", "query", "--nouse_legacy_sql", "select 1"])`.
    pub fn bq(&self) -> anyhow::Result<Command> {
        let mut command = Command::new("bq");
        command
            .arg(format!(
                "--bigqueryrc={}",
                self.dir.path().join("bigqueryrc").display()
            ))
            .arg(format!("--api={}", self.endpoint()))
            .arg(format!(
                "--discovery_file={}",
                discovery_document("bigquery.v2")?.display()
            ))
            .arg(format!("--project_id={}", self.project))
            .env("CLOUDSDK_CONFIG", self.dir.path().join("gcloud"))
            .env(
                "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE",
                self.dir.path().join("token"),
            )
            .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
            .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "true");
        Ok(command)
    }

    /// Runs `bq --format=json ARGS...` against this emulator and parses its output.
    pub fn bq_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let stdout = run(self.bq()?.arg("--format=json").args(args))?;
        let text = String::from_utf8_lossy(&stdout);
        serde_json::from_str(text.trim()).with_context(|| format!("bq {args:?} printed {text:?}"))
    }

    /// The last 50 lines of the emulator's log (for assertion messages).
    pub fn log(&self) -> String {
        self.process.log_tail(50)
    }
}
