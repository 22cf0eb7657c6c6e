//! The private per-run directory (profiles, target, logs) and, for read-only projects that
//! need `dbt deps`, a writable copy of the project.
//!
//! Why copy: dbt-core 1.11 installs packages into the project's `packages-install-path` and
//! writes `package-lock.yml` into the project root; neither can be redirected by env (there is
//! no `DBT_PACKAGES_INSTALL_PATH` in dbt-core unless the project's dbt_project.yml reads one
//! through `env_var()`). A dbt project is small text, so a copy costs little even on Cloud
//! Run's in-memory filesystem. Projects baked into an image with packages already installed
//! (`dbt deps` at build time, the recommended setup) are never copied.

use std::path::{Path, PathBuf};

use crate::DbtError;

/// The private directory of one run, removed (with the generated profile) when dropped.
#[derive(Debug)]
pub(crate) struct RunDir {
    dir: tempfile::TempDir,
}

impl RunDir {
    /// Creates `scratch/sluice-dbt-XXXX` (mode 0700) with `target/` and `logs/` inside.
    pub(crate) fn create(scratch: &Path) -> Result<Self, DbtError> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-dbt-")
            .tempdir_in(scratch)
            .map_err(|err| DbtError::io("create a private directory in", scratch, err))?;
        // tempfile creates directories with the umask's mode (often 0755); the profile inside
        // may name a key file, and dbt's logs hold SQL: owner only.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
                .map_err(|err| DbtError::io("restrict permissions of", dir.path(), err))?;
        }
        let run = RunDir { dir };
        for sub in [run.target_dir(), run.log_dir()] {
            std::fs::create_dir(&sub).map_err(|err| DbtError::io("create", &sub, err))?;
        }
        Ok(run)
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn target_dir(&self) -> PathBuf {
        self.path().join("target")
    }

    pub(crate) fn log_dir(&self) -> PathBuf {
        self.path().join("logs")
    }

    pub(crate) fn profiles_dir(&self) -> PathBuf {
        self.path().join("profiles")
    }

    pub(crate) fn project_copy_dir(&self) -> PathBuf {
        self.path().join("project")
    }
}

/// Whether this process may create files in `dir` (false on a read-only mount even for root,
/// which permission bits alone would not tell).
pub(crate) fn is_writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::access(path.as_ptr(), libc::W_OK) == 0 }
}

/// Copies the project tree `src` to `dst`, leaving out `skip` (paths relative to `src`: build
/// output, logs, installed packages) and `.git`. Symlinks are copied as symlinks.
pub(crate) fn copy_project(src: &Path, dst: &Path, skip: &[PathBuf]) -> Result<(), DbtError> {
    std::fs::create_dir_all(dst).map_err(|err| DbtError::io("create", dst, err))?;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let from_dir = src.join(&rel);
        let entries =
            std::fs::read_dir(&from_dir).map_err(|err| DbtError::io("read", &from_dir, err))?;
        for entry in entries {
            let entry = entry.map_err(|err| DbtError::io("read", &from_dir, err))?;
            let rel_path = rel.join(entry.file_name());
            if rel_path == Path::new(".git") || skip.iter().any(|s| s == &rel_path) {
                continue;
            }
            let from = entry.path();
            let to = dst.join(&rel_path);
            let kind = entry
                .file_type()
                .map_err(|err| DbtError::io("inspect", &from, err))?;
            if kind.is_symlink() {
                let target = std::fs::read_link(&from)
                    .map_err(|err| DbtError::io("read link", &from, err))?;
                std::os::unix::fs::symlink(&target, &to)
                    .map_err(|err| DbtError::io("create link", &to, err))?;
            } else if kind.is_dir() {
                std::fs::create_dir(&to).map_err(|err| DbtError::io("create", &to, err))?;
                stack.push(rel_path);
            } else {
                std::fs::copy(&from, &to).map_err(|err| DbtError::io("copy", &from, err))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn run_dir_is_private_and_removed_on_drop() {
        let scratch = tempfile::tempdir().unwrap();
        let run = RunDir::create(scratch.path()).unwrap();
        let path = run.path().to_path_buf();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(run.target_dir().is_dir() && run.log_dir().is_dir());
        assert!(is_writable(&path));
        drop(run);
        assert!(!path.exists());
    }

    #[test]
    fn missing_scratch_names_it() {
        let err = RunDir::create(Path::new("/nonexistent/scratch"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/scratch"), "{err}");
    }

    #[test]
    fn copies_project_without_build_output() {
        let src = tempfile::tempdir().unwrap();
        let p = src.path();
        for (file, text) in [
            ("dbt_project.yml", "name: x"),
            ("models/staging/a.sql", "select 1"),
            ("target/manifest.json", "{}"),
            ("dbt_packages/pkg/x.sql", ""),
            (".git/HEAD", "ref"),
        ] {
            std::fs::create_dir_all(p.join(file).parent().unwrap()).unwrap();
            std::fs::write(p.join(file), text).unwrap();
        }
        std::os::unix::fs::symlink("staging/a.sql", p.join("models/link.sql")).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let out = dst.path().join("copy");
        copy_project(
            p,
            &out,
            &[PathBuf::from("target"), PathBuf::from("dbt_packages")],
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("models/staging/a.sql")).unwrap(),
            "select 1"
        );
        assert_eq!(
            std::fs::read_link(out.join("models/link.sql")).unwrap(),
            Path::new("staging/a.sql")
        );
        assert!(out.join("dbt_project.yml").is_file());
        for absent in ["target", "dbt_packages", ".git"] {
            assert!(!out.join(absent).exists(), "{absent} was copied");
        }
    }

    #[test]
    fn not_writable_when_missing() {
        assert!(!is_writable(Path::new("/nonexistent/dir")));
    }
}
