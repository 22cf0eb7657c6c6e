//! Container mode of `sluice-trigger local --docker`: the `docker run` line of one task and
//! which variables of the caller's environment reach the container (docs/trigger.md,
//! "Container mode").
//!
//! Parity with process mode. A task run as a process inherits the whole environment of
//! `sluice-trigger` and gets the execution env (the spec's `env`, `[local].env`, the job's
//! `local_env`, `--env`, the task contract) on top. A container cannot inherit: every variable
//! must be named with `-e NAME` (values travel in the engine's environment, never on its argv).
//! It gets:
//!
//! - the whole execution env, exactly as process mode (same layering, same `${VAR}` expansion,
//!   same warnings for secrets that are not available);
//! - every secret the spec declares (`env` entries with `secret = ...`) that is set in the
//!   environment: process mode finds those by inheritance;
//! - the inherited variables the task's software reads ([`forwarded`]): every `SLUICE_*` (the
//!   flags' env twins), `DBT_*`, `GOOGLE_*`, the emulator endpoints, `RUST_LOG`,
//!   `RUST_BACKTRACE`, `TZ` and the proxy variables;
//! - but not variables that hold a path or program on this machine ([`HOST_ONLY`]), nor the
//!   rest of the caller's environment (`PATH`, `HOME`, `VIRTUAL_ENV`, `LANG`...): the image
//!   brings its own, as on Cloud Run. Anything else can be given with `--env K=V` or in the
//!   spec, which reach both modes alike.
//!
//! Paths: the local workdir is mounted read-only at the same path and is the container's
//! working directory, so relative paths in `args`, `local_env` and `local_args` (e.g.
//! `SLUICE_DBT_PROJECT_DIR = "examples/open-data/dbt"`) mean the same file in both modes.
//!
//! Credentials: `--adc` mounts the Application Default Credentials file read-only at
//! [`ADC_IN_CONTAINER`] and points `GOOGLE_APPLICATION_CREDENTIALS` at it, for runs against
//! real GCP. gcloud writes that file with mode 0600, so the container then runs as the file's
//! owner (`--user UID:GID`) instead of the image's uid 10001, which could not read it.

use crate::spec::{EnvValue, JobSpec};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Where `--adc` mounts the credentials file in the container.
pub(crate) const ADC_IN_CONTAINER: &str = "/var/run/sluice/adc.json";

/// `--adc`: the host's Application Default Credentials file and its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdcMount {
    pub(crate) path: PathBuf,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl AdcMount {
    /// The file gcloud's ADC lookup uses: `GOOGLE_APPLICATION_CREDENTIALS`, else
    /// `$CLOUDSDK_CONFIG/application_default_credentials.json`, else
    /// `~/.config/gcloud/application_default_credentials.json`. It must exist.
    pub(crate) fn locate(parent_env: &[(String, String)]) -> Result<AdcMount, String> {
        let var = |name: &str| {
            parent_env
                .iter()
                .find(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| PathBuf::from(v))
        };
        let path = var("GOOGLE_APPLICATION_CREDENTIALS")
            .or_else(|| {
                var("CLOUDSDK_CONFIG").map(|d| d.join("application_default_credentials.json"))
            })
            .or_else(|| {
                var("HOME").map(|h| h.join(".config/gcloud/application_default_credentials.json"))
            })
            .ok_or(
                "--adc: neither GOOGLE_APPLICATION_CREDENTIALS, CLOUDSDK_CONFIG nor HOME is set",
            )?;
        let meta = std::fs::metadata(&path).map_err(|e| {
            format!(
                "--adc: {}: {e} (create it with `gcloud auth application-default login`, or set \
                 GOOGLE_APPLICATION_CREDENTIALS to a credentials file)",
                path.display()
            )
        })?;
        if !meta.is_file() {
            return Err(format!("--adc: {} is not a file", path.display()));
        }
        use std::os::unix::fs::MetadataExt;
        Ok(AdcMount {
            path,
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }
}

/// Inherited variables forwarded when their name starts with one of these.
const FORWARDED_PREFIXES: &[&str] = &["SLUICE_", "DBT_", "GOOGLE_"];

/// Inherited variables forwarded by exact name.
const FORWARDED_NAMES: &[&str] = &[
    "STORAGE_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
    "CLOUDSDK_CORE_PROJECT",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "TZ",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// Name a file or program on this machine: meaningless inside the image, which has its own
/// (`sluice`, `dbt` on `PATH`; credentials come through an explicit mount).
const HOST_ONLY: &[&str] = &[
    "SLUICE_BIN",
    "SLUICE_DBT_BIN",
    "SLUICE_STACK_DIR",
    "GOOGLE_APPLICATION_CREDENTIALS",
];

/// Whether an inherited variable reaches the container (the rule in the module docs).
pub(crate) fn forwarded(name: &str) -> bool {
    !HOST_ONLY.contains(&name)
        && (FORWARDED_NAMES.contains(&name)
            || FORWARDED_PREFIXES.iter().any(|p| name.starts_with(p)))
}

/// The names passed with `-e`: the task env (execution env + contract), then the inherited
/// variables that [`forwarded`] allows and the spec's secrets found in the environment, each
/// once, in a stable order.
pub(crate) fn env_names(
    task_env: &[(String, String)],
    parent_env: &[(String, String)],
    job: &JobSpec,
) -> Vec<String> {
    let secrets: BTreeSet<&str> = job
        .env
        .iter()
        .filter(|v| matches!(v.value, EnvValue::Secret { .. }))
        .map(|v| v.name.as_str())
        .collect();
    let mut seen = BTreeSet::new();
    let mut names = Vec::new();
    for (k, _) in task_env {
        if seen.insert(k.clone()) {
            names.push(k.clone());
        }
    }
    let mut inherited: Vec<&str> = parent_env
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| forwarded(k) || secrets.contains(k))
        .collect();
    inherited.sort_unstable();
    for k in inherited {
        if seen.insert(k.to_string()) {
            names.push(k.to_string());
        }
    }
    names
}

/// One task's `ENGINE run` line.
pub(crate) struct DockerTask<'a> {
    pub(crate) engine: &'a Path,
    pub(crate) image: &'a str,
    pub(crate) container_name: &'a str,
    pub(crate) job: &'a JobSpec,
    pub(crate) args: &'a [String],
    pub(crate) env_names: &'a [String],
    /// Mounted read-only at the same path and used as the working directory.
    pub(crate) workdir: &'a Path,
    pub(crate) adc: Option<&'a AdcMount>,
}

impl DockerTask<'_> {
    pub(crate) fn argv(&self) -> Vec<String> {
        let workdir = self.workdir.display().to_string();
        let mut argv = vec![
            self.engine.display().to_string(),
            "run".into(),
            "--rm".into(),
            "--name".into(),
            self.container_name.into(),
            // Emulators on this machine listen on loopback.
            "--network".into(),
            "host".into(),
            "--cpus".into(),
            format!("{}", self.job.cpu.millis as f64 / 1000.0),
            "--memory".into(),
            format!("{}b", self.job.memory.bytes),
            "--volume".into(),
            format!("{workdir}:{workdir}:ro"),
            "--workdir".into(),
            workdir,
        ];
        if let Some(adc) = self.adc {
            argv.extend([
                "--volume".into(),
                format!("{}:{ADC_IN_CONTAINER}:ro", adc.path.display()),
                "-e".into(),
                format!("GOOGLE_APPLICATION_CREDENTIALS={ADC_IN_CONTAINER}"),
                "--user".into(),
                format!("{}:{}", adc.uid, adc.gid),
            ]);
        }
        for name in self.env_names {
            argv.push("-e".into());
            argv.push(name.clone());
        }
        if let Some(entry) = self.job.command.first() {
            argv.push("--entrypoint".into());
            argv.push(entry.clone());
        }
        argv.push(self.image.into());
        argv.extend(self.job.command.iter().skip(1).cloned());
        argv.extend(self.args.iter().cloned());
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;

    fn job(extra: &str) -> JobSpec {
        let text = format!("[[jobs]]\nname = \"extract\"\nimage = \"img:1\"\n{extra}");
        Spec::parse(&text, Path::new("jobs.toml"), Path::new("."))
            .unwrap()
            .jobs
            .remove(0)
    }

    fn pairs(names: &[&str]) -> Vec<(String, String)> {
        names.iter().map(|n| (n.to_string(), "v".into())).collect()
    }

    #[test]
    fn argv_mounts_the_workdir_and_passes_env_by_name_only() {
        let j = job("command = [\"sluice\"]\nargs = [\"load\"]\ncpu = 2\nmemory = \"1Gi\"\n");
        let names = vec!["TOKEN".to_string()];
        let task = DockerTask {
            engine: Path::new("docker"),
            image: "img:1",
            container_name: "c1",
            job: &j,
            args: &j.args,
            env_names: &names,
            workdir: Path::new("/src/repo"),
            adc: None,
        };
        assert_eq!(
            task.argv().join(" "),
            "docker run --rm --name c1 --network host --cpus 2 --memory 1073741824b \
             --volume /src/repo:/src/repo:ro --workdir /src/repo -e TOKEN \
             --entrypoint sluice img:1 load"
        );
        let adc = AdcMount {
            path: "/home/me/.config/gcloud/application_default_credentials.json".into(),
            uid: 1000,
            gid: 1001,
        };
        let with_adc = DockerTask {
            adc: Some(&adc),
            ..task
        };
        assert_eq!(
            with_adc.argv().join(" "),
            "docker run --rm --name c1 --network host --cpus 2 --memory 1073741824b \
             --volume /src/repo:/src/repo:ro --workdir /src/repo \
             --volume /home/me/.config/gcloud/application_default_credentials.json:/var/run/sluice/adc.json:ro \
             -e GOOGLE_APPLICATION_CREDENTIALS=/var/run/sluice/adc.json --user 1000:1001 -e TOKEN \
             --entrypoint sluice img:1 load"
        );
    }

    #[test]
    fn adc_is_found_where_gcloud_puts_it_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("application_default_credentials.json");
        std::fs::write(&file, "{}").unwrap();
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let dir_text = dir.path().display().to_string();
        let found = AdcMount::locate(&env(&[("CLOUDSDK_CONFIG", &dir_text)])).unwrap();
        assert_eq!(found.path, file);
        let explicit = AdcMount::locate(&env(&[
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                &file.display().to_string(),
            ),
            ("HOME", "/nowhere"),
        ]))
        .unwrap();
        assert_eq!(explicit.path, file);
        let err = AdcMount::locate(&env(&[("HOME", "/nowhere")])).unwrap_err();
        assert!(
            err.contains("/nowhere/.config/gcloud/application_default_credentials.json")
                && err.contains("gcloud auth application-default login"),
            "{err}"
        );
    }

    #[test]
    fn inherited_variables_follow_the_rule() {
        for name in [
            "STORAGE_EMULATOR_HOST",
            "BIGQUERY_EMULATOR_HOST",
            "SLUICE_DEST",
            "DBT_PROFILES_DIR",
            "GOOGLE_CLOUD_PROJECT",
            "RUST_LOG",
            "https_proxy",
        ] {
            assert!(forwarded(name), "{name} must reach the container");
        }
        for name in [
            "PATH",
            "HOME",
            "VIRTUAL_ENV",
            "LANG",
            "SSL_CERT_FILE",
            "SLUICE_BIN",
            "SLUICE_DBT_BIN",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "XSLUICE_DEST",
        ] {
            assert!(!forwarded(name), "{name} must not reach the container");
        }
    }

    #[test]
    fn names_cover_task_env_inherited_and_secrets_once() {
        let j = job("secrets = { API_TOKEN = \"tok\", UNSET_SECRET = \"u\" }\n");
        let task_env = pairs(&["RUST_LOG", "CLOUD_RUN_TASK_INDEX"]);
        let parent = pairs(&[
            "PATH",
            "STORAGE_EMULATOR_HOST",
            "API_TOKEN",
            "RUST_LOG",
            "SLUICE_DBT_BIN",
            "OTHER",
        ]);
        assert_eq!(
            env_names(&task_env, &parent, &j),
            vec![
                "RUST_LOG",
                "CLOUD_RUN_TASK_INDEX",
                "API_TOKEN",
                "STORAGE_EMULATOR_HOST"
            ]
        );
    }
}
