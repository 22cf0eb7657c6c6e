//! A project on a read-only filesystem (a baked image layer mounted read-only, a GCS FUSE
//! volume) that declares packages: `sluice dbt` runs `dbt deps` on a private copy and builds.
//!
//! The read-only mount is real: the run happens inside `unshare --mount` with the project
//! bind-mounted read-only over itself, which needs root (CI and these machines run as root).
//! Where that is not allowed the test fails under `CI=true` and says SKIPPED elsewhere
//! (`sluice_testkit::skip_unless_ci`).

mod dbt_support;

use std::path::Path;
use std::process::Command;

use dbt_support::{DATASET, Stack, dbt_project, events, find, nodes_with_status, text};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// Runs `inner` in a private mount namespace where `dir` is read-only.
fn with_read_only(dir: &Path, inner: &Command) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind -o ro \"$RO_DIR\" \"$RO_DIR\" && exec \"$@\"")
        .arg("sh")
        .arg(inner.get_program())
        .args(inner.get_args())
        .env("RO_DIR", dir);
    for (name, value) in inner.get_envs() {
        match value {
            Some(value) => cmd.env(name, value),
            None => cmd.env_remove(name),
        };
    }
    cmd
}

/// Whether a private mount namespace with a read-only bind mount can be made here; the error
/// says why not (unshare missing, or its exit status and stderr).
fn can_make_read_only_mounts() -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("d=$(mktemp -d) && mount --bind -o ro \"$d\" \"$d\" && ! touch \"$d/x\" 2>/dev/null; rc=$?; umount \"$d\" 2>/dev/null; rmdir \"$d\"; exit $rc")
        .output()
        .map_err(|e| format!("running unshare: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "unshare --mount with a read-only bind mount needs root ({}: {})",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

#[test]
fn read_only_project_with_packages_runs_deps_on_a_copy() {
    if let Err(reason) = can_make_read_only_mounts() {
        sluice_testkit::skip_unless_ci(
            "read_only_project_with_packages_runs_deps_on_a_copy",
            &reason,
        );
        return;
    }
    let stack = Stack::start();
    let root = tempfile::tempdir().unwrap();
    // A local package, so `dbt deps` needs no network.
    let package = root.path().join("sluice_helpers");
    std::fs::create_dir_all(package.join("macros")).unwrap();
    std::fs::write(
        package.join("dbt_project.yml"),
        "name: sluice_helpers\nversion: \"1.0.0\"\nconfig-version: 2\nmacro-paths: [\"macros\"]\n",
    )
    .unwrap();
    std::fs::write(
        package.join("macros/double.sql"),
        "{% macro double(x) %}({{ x }} * 2){% endmacro %}\n",
    )
    .unwrap();
    let project = root.path().join("project");
    copy_dir(&dbt_project(), &project);
    std::fs::write(
        project.join("packages.yml"),
        format!("packages:\n  - local: {}\n", package.display()),
    )
    .unwrap();
    std::fs::write(
        project.join("models/staging/stg_doubled.sql"),
        "select name, {{ sluice_helpers.double('horsepower') }} as doubled_hp\nfrom {{ ref('stg_cars') }}\n",
    )
    .unwrap();

    let scratch = tempfile::tempdir().unwrap();
    let mut inner = stack.sluice_dbt_for(scratch.path(), &project);
    inner.args(["--", "run", "--select", "stg_cars", "stg_doubled"]);
    let out = with_read_only(&project, &inner).output().unwrap();
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(0), "{logs}");
    let ev = events(&out);
    assert!(
        find(&ev, "project directory is read-only").is_some(),
        "{logs}"
    );
    assert!(find(&ev, "installing dbt packages").is_some(), "{logs}");
    assert!(
        find(&ev, "Installed from <local").is_some(),
        "dbt deps ran: {logs}"
    );
    assert_eq!(
        nodes_with_status(&ev, "success"),
        [
            "model.sluice_test.stg_cars",
            "model.sluice_test.stg_doubled"
        ],
        "{logs}"
    );
    let max = stack
        .bq
        .query_scalar_i64(&format!(
            "select max(doubled_hp) from {DATASET}.stg_doubled"
        ))
        .unwrap();
    assert_eq!(max, 440);
    // Nothing was written into the project.
    for absent in ["dbt_packages", "package-lock.yml", "target", "logs"] {
        assert!(
            !project.join(absent).exists(),
            "{absent} written into the project"
        );
    }
}
