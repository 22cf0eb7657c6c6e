//! `sluice dbt` configuration errors (exit 2, message naming the fix) and the array-job rule
//! that only task 0 runs an unsharded command. None of these reach BigQuery.

mod dbt_support;

use dbt_support::{dbt_project, events, find, sluice, text};

fn dbt(scratch: &std::path::Path) -> std::process::Command {
    let mut cmd = sluice(scratch);
    cmd.arg("dbt").arg("--project-dir").arg(dbt_project());
    cmd
}

#[test]
fn no_profile_source_is_a_usage_error() {
    let scratch = tempfile::tempdir().unwrap();
    let out = dbt(scratch.path()).output().unwrap();
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(2), "{logs}");
    assert!(
        logs.contains("--bigquery-dataset") && logs.contains("--profiles-dir"),
        "{logs}"
    );
}

#[test]
fn missing_dbt_executable_is_a_usage_error_naming_it() {
    let scratch = tempfile::tempdir().unwrap();
    let out = dbt(scratch.path())
        .args([
            "--dbt-bin",
            "/nonexistent/bin/dbt",
            "--bigquery-dataset",
            "analytics",
        ])
        .output()
        .unwrap();
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(2), "{logs}");
    assert!(logs.contains("/nonexistent/bin/dbt"), "{logs}");
    // The private run dir (with the generated profile) is removed on this path too.
    assert_eq!(
        dbt_support::files_under(scratch.path()),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn wrong_project_dir_names_the_file() {
    let scratch = tempfile::tempdir().unwrap();
    // Without a profile source as well: the project is reported first, not the profile.
    for extra in [&["--bigquery-dataset", "analytics"][..], &[]] {
        let out = sluice(scratch.path())
            .arg("dbt")
            .args(extra)
            .arg("--project-dir")
            .arg(scratch.path())
            .output()
            .unwrap();
        let logs = text(&out);
        assert_eq!(out.status.code(), Some(2), "{logs}");
        assert!(logs.contains("dbt_project.yml"), "{logs}");
        assert!(
            logs.contains(&scratch.path().display().to_string()),
            "{logs}"
        );
        assert!(!logs.contains("no profile"), "{logs}");
    }
}

#[test]
fn select_in_dbt_args_conflicts_with_shard_by() {
    let scratch = tempfile::tempdir().unwrap();
    let out = dbt(scratch.path())
        .args([
            "--bigquery-dataset",
            "analytics",
            "--shard-by",
            "tag:staging",
        ])
        .args(["--", "build", "--select", "stg_cars"])
        .output()
        .unwrap();
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(2), "{logs}");
    assert!(logs.contains("--shard-by"), "{logs}");
}

#[test]
fn keyfile_with_emulator_endpoint_is_rejected() {
    let scratch = tempfile::tempdir().unwrap();
    let out = dbt(scratch.path())
        .args(["--bigquery-dataset", "analytics", "--keyfile", "/k.json"])
        .env("BIGQUERY_EMULATOR_HOST", "127.0.0.1:9050")
        .output()
        .unwrap();
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(2), "{logs}");
    assert!(logs.contains("--keyfile"), "{logs}");
}

#[test]
fn without_shard_by_only_task_0_runs() {
    let scratch = tempfile::tempdir().unwrap();
    // A dbt that cannot start proves task 1 never tries.
    let out = dbt(scratch.path())
        .args([
            "--dbt-bin",
            "/nonexistent/bin/dbt",
            "--bigquery-dataset",
            "analytics",
        ])
        .env("CLOUD_RUN_TASK_INDEX", "1")
        .env("CLOUD_RUN_TASK_COUNT", "3")
        .output()
        .unwrap();
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(0), "{logs}");
    let ev = events(&out);
    let line = find(&ev, "nothing to do").unwrap_or_else(|| panic!("{logs}"));
    assert_eq!(line["severity"], "INFO");
    assert!(
        line["message"].as_str().unwrap().contains("task 0"),
        "{line}"
    );
}
