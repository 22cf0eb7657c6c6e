//! The environment dbt runs with, built in one place so it can be read and tested.
//!
//! dbt inherits this process's environment (models read `env_var()`, ADC reads
//! `GOOGLE_APPLICATION_CREDENTIALS`, the metadata server needs nothing) with these changes:
//!
//! - `DBT_PROJECT_DIR`, `DBT_PROFILES_DIR`: the resolved project and profiles directories. Env
//!   rather than flags so they reach every subcommand (`deps`, `ls`, the user's command) without
//!   rewriting argv; an explicit `--profiles-dir` in the user's dbt args still wins.
//! - `DBT_TARGET_PATH`, `DBT_LOG_PATH`: a fresh private directory per run. Always, not only on
//!   read-only filesystems: a fresh target dir means the run_results.json we summarise and upload
//!   is this run's, never a stale one from an earlier attempt baked into the image.
//! - `DBT_LOG_FORMAT=json`, `DBT_LOG_FORMAT_FILE=json`, `DBT_USE_COLORS(_FILE)=false`: machine-
//!   readable events on stdout and in dbt.log.
//! - `DBT_SEND_ANONYMOUS_USAGE_STATS=false`: a batch job should not phone home, and the tracker
//!   writes `~/.dbt/.user.yml`, which fails on a read-only home. `--send-anonymous-usage-stats`
//!   in the dbt args turns it back on.
//! - the `DBT_ENV_SECRET_...` token of an `oauth-secrets` profile.
//! - with a generated profile, `DBT_PROFILE` and `DBT_TARGET` are removed: they would select a
//!   profile or target the generated file does not have.

use std::ffi::OsString;
use std::path::Path;

use crate::config::Secret;

/// Variables set for every dbt invocation of a run.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChildEnv {
    set: Vec<(String, OsString)>,
    secrets: Vec<(String, Secret)>,
    remove: Vec<String>,
}

/// Where one run keeps things.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paths<'a> {
    pub project_dir: &'a Path,
    pub profiles_dir: &'a Path,
    pub target_dir: &'a Path,
    pub log_dir: &'a Path,
}

impl ChildEnv {
    pub(crate) fn new(paths: Paths<'_>, generated_profile: bool) -> Self {
        let mut env = ChildEnv::default();
        env.put("DBT_PROJECT_DIR", paths.project_dir.as_os_str());
        env.put("DBT_PROFILES_DIR", paths.profiles_dir.as_os_str());
        env.put("DBT_TARGET_PATH", paths.target_dir.as_os_str());
        env.put("DBT_LOG_PATH", paths.log_dir.as_os_str());
        env.put("DBT_LOG_FORMAT", "json");
        env.put("DBT_LOG_FORMAT_FILE", "json");
        env.put("DBT_USE_COLORS", "false");
        env.put("DBT_USE_COLORS_FILE", "false");
        env.put("DBT_SEND_ANONYMOUS_USAGE_STATS", "false");
        if generated_profile {
            env.remove = vec!["DBT_PROFILE".into(), "DBT_TARGET".into()];
        }
        env
    }

    fn put(&mut self, name: &str, value: impl Into<OsString>) {
        self.set.push((name.to_string(), value.into()));
    }

    /// Adds a variable whose value must never be logged.
    pub(crate) fn add_secret(&mut self, name: impl Into<String>, value: Secret) {
        self.secrets.push((name.into(), value));
    }

    /// The non-secret variables set, in order (what the tests inspect; `apply` sets them).
    #[cfg(test)]
    pub(crate) fn vars(&self) -> impl Iterator<Item = (&str, &std::ffi::OsStr)> {
        self.set.iter().map(|(k, v)| (k.as_str(), v.as_os_str()))
    }

    /// Names of the secret variables (never their values).
    #[cfg(test)]
    pub(crate) fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.secrets.iter().map(|(k, _)| k.as_str())
    }

    /// Secret values, for scrubbing them from output.
    pub(crate) fn secret_values(&self) -> impl Iterator<Item = &str> {
        self.secrets.iter().map(|(_, v)| v.expose())
    }

    #[cfg(test)]
    pub(crate) fn removed(&self) -> &[String] {
        &self.remove
    }

    /// Applies the changes to a command that otherwise inherits this process's environment.
    pub(crate) fn apply(&self, command: &mut tokio::process::Command) {
        for name in &self.remove {
            command.env_remove(name);
        }
        for (name, value) in &self.set {
            command.env(name, value);
        }
        for (name, value) in &self.secrets {
            command.env(name, value.expose());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths<'static> {
        Paths {
            project_dir: Path::new("/srv/project"),
            profiles_dir: Path::new("/tmp/run/profiles"),
            target_dir: Path::new("/tmp/run/target"),
            log_dir: Path::new("/tmp/run/logs"),
        }
    }

    #[test]
    fn sets_paths_and_machine_readable_output() {
        let env = ChildEnv::new(paths(), true);
        let vars: Vec<(String, String)> = env
            .vars()
            .map(|(k, v)| (k.to_string(), v.to_string_lossy().into_owned()))
            .collect();
        let get = |name: &str| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("DBT_PROJECT_DIR"), Some("/srv/project"));
        assert_eq!(get("DBT_PROFILES_DIR"), Some("/tmp/run/profiles"));
        assert_eq!(get("DBT_TARGET_PATH"), Some("/tmp/run/target"));
        assert_eq!(get("DBT_LOG_PATH"), Some("/tmp/run/logs"));
        assert_eq!(get("DBT_LOG_FORMAT"), Some("json"));
        assert_eq!(get("DBT_USE_COLORS"), Some("false"));
        assert_eq!(get("DBT_SEND_ANONYMOUS_USAGE_STATS"), Some("false"));
        assert_eq!(env.removed(), ["DBT_PROFILE", "DBT_TARGET"]);
        assert!(ChildEnv::new(paths(), false).removed().is_empty());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let mut env = ChildEnv::new(paths(), true);
        env.add_secret("DBT_ENV_SECRET_X", Secret::new("hunter2-hunter2"));
        assert!(!format!("{env:?}").contains("hunter2"));
        assert_eq!(env.secret_names().collect::<Vec<_>>(), ["DBT_ENV_SECRET_X"]);
        assert_eq!(env.secret_values().collect::<Vec<_>>(), ["hunter2-hunter2"]);
    }

    #[tokio::test]
    async fn applied_to_a_real_child() {
        let mut env = ChildEnv::new(paths(), true);
        env.add_secret("DBT_ENV_SECRET_X", Secret::new("s3cr3t-value"));
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.args([
            "-c",
            "echo \"$DBT_TARGET_PATH|$DBT_ENV_SECRET_X|${DBT_PROFILE-unset}|$KEEP_ME\"",
        ])
        .env("DBT_PROFILE", "stale")
        .env("KEEP_ME", "inherited");
        env.apply(&mut cmd);
        let out = cmd.output().await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "/tmp/run/target|s3cr3t-value|unset|inherited"
        );
    }
}
