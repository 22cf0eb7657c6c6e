//! Configuration mistakes exit 2 with a message naming the problem; `--help` lists the env
//! twins.

mod extract_support;

use extract_support::{sluice, text};

fn usage(args: &[&str]) -> String {
    let out = sluice().arg("extract").args(args).output().unwrap();
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {logs}");
    logs
}

#[test]
fn configuration_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().to_str().unwrap();
    assert!(usage(&["--dest", dest]).contains("nothing to extract"));
    assert!(usage(&["--dest", dest, "--url", "ftp://h/a.csv"]).contains("unsupported scheme"));
    assert!(
        usage(&["--dest", "s3://bucket/x", "--url", "https://h/a.csv"])
            .contains("unsupported scheme")
    );
    assert!(
        usage(&["--dest", dest, "--url", "x", "--partition", "dt=28-11-2026"])
            .contains("YYYY-MM-DD")
    );
    assert!(
        usage(&["--dest", dest, "--url", "x", "--format", "csv"])
            .contains("passthrough or parquet")
    );
    assert!(
        usage(&["--dest", dest, "--url", "x", "--delimiter", ";;"]).contains("one ASCII character")
    );
    let missing = dir.path().join("nope.toml");
    assert!(
        usage(&["--dest", dest, "--manifest", missing.to_str().unwrap()]).contains("nope.toml")
    );
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"[{"url": "https://h/a.csv", "colour": 1}]"#).unwrap();
    assert!(usage(&["--dest", dest, "--manifest", bad.to_str().unwrap()]).contains("bad.json"));
}

/// `--upload-chunk-mib` (a global option: before or after the subcommand) and its env twin
/// take a whole number of MiB from 1 to 1024; anything else is a usage error naming both.
#[test]
fn upload_chunk_mib_must_be_a_whole_number_of_mib() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().to_str().unwrap();
    for bad in ["0", "1.5", "16MiB", "-3", "2048"] {
        let flag = format!("--upload-chunk-mib={bad}");
        let logs = usage(&["--dest", dest, "--url", "x", &flag]);
        assert!(
            logs.contains("expected a whole number of MiB from 1 to 1024")
                && logs.contains("SLUICE_UPLOAD_CHUNK_MIB"),
            "{bad}: {logs}"
        );
    }
    let out = sluice()
        .args(["extract", "--dest", dest, "--url", "x"])
        .env("SLUICE_UPLOAD_CHUNK_MIB", "zero")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("whole number of MiB"), "{}", text(&out));

    // Valid values work in either position.
    let src = dir.path().join("a.csv");
    std::fs::write(&src, "x\n1\n").unwrap();
    for args in [
        vec!["--upload-chunk-mib", "1", "extract"],
        vec!["extract", "--upload-chunk-mib", "64"],
    ] {
        let out = sluice()
            .args(&args)
            .args(["--url", src.to_str().unwrap(), "--dest"])
            .arg(dir.path().join("out"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }
}

#[test]
fn every_flag_has_an_env_twin() {
    let out = sluice().args(["extract", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for env in [
        "SLUICE_URL",
        "SLUICE_MANIFEST",
        "SLUICE_SOCRATA",
        "SLUICE_DEST",
        "SLUICE_DATASET",
        "SLUICE_EXTRACT_FORMAT",
        "SLUICE_PARTITION",
        "SLUICE_EXTRACT_CONCURRENCY",
        "SLUICE_BAD_ROWS",
        "SLUICE_SKIP_EXISTING",
        "SLUICE_SINCE",
        "SLUICE_EXTRACT_SCHEMA",
        "SLUICE_PARQUET_COMPRESSION",
        "SLUICE_UPLOAD_CHUNK_MIB",
    ] {
        assert!(help.contains(env), "{env} missing from --help");
    }
}

#[test]
fn env_alone_configures_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    std::fs::write(&a, "x\n1\n").unwrap();
    std::fs::write(&b, "x\n2\n").unwrap();
    let out = sluice()
        .arg("extract")
        .env("SLUICE_URL", format!("{} {}", a.display(), b.display()))
        .env("SLUICE_DEST", dir.path().join("out"))
        .env("SLUICE_DATASET", "d")
        .env("SLUICE_PARTITION", "dt=2026-11-28")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for name in ["a", "b"] {
        assert!(
            dir.path()
                .join(format!("out/d/dt=2026-11-28/{name}-00000.csv"))
                .exists()
        );
    }
}

/// Zero or negative durations, zero rates and unknown encodings are usage errors naming the
/// flag (issue 13): `--read-timeout 0s` used to be accepted and fail 25 s later as a network
/// error.
#[test]
fn zero_durations_rates_and_unknown_encodings_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().to_str().unwrap();
    for flag in [
        "--connect-timeout",
        "--read-timeout",
        "--retry-budget",
        "--progress-interval",
        "--item-timeout",
        "--min-rate-window",
    ] {
        for bad in ["0s", "0", "-5s", "0ms"] {
            let arg = format!("{flag}={bad}");
            let logs = usage(&["--dest", dest, "--url", "x", &arg]);
            assert!(logs.contains(flag), "{arg}: {logs}");
        }
    }
    for bad in ["0", "0B/s", "-1KiB/s", "fast"] {
        let arg = format!("--min-rate={bad}");
        let logs = usage(&["--dest", dest, "--url", "x", &arg]);
        assert!(logs.contains("--min-rate"), "{arg}: {logs}");
    }
    let logs = usage(&["--dest", dest, "--url", "x", "--encoding", "klingon"]);
    assert!(
        logs.contains("--encoding")
            && logs.contains("klingon")
            && logs.contains("latin1")
            && logs.contains("utf-16le"),
        "{logs}"
    );
    // The env twins are checked the same way.
    for (name, value) in [
        ("SLUICE_READ_TIMEOUT", "0s"),
        ("SLUICE_ITEM_TIMEOUT", "0"),
        ("SLUICE_MIN_RATE", "0"),
        ("SLUICE_EXTRACT_ENCODING", "nope"),
        // The deprecated shared name still works for a release.
        ("SLUICE_ENCODING", "nope"),
    ] {
        let out = sluice()
            .args(["extract", "--dest", dest, "--url", "x"])
            .env(name, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {}", text(&out));
    }
    let out = sluice().args(["extract", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for env in [
        "SLUICE_ACCEPT_ANY_CONTENT",
        "SLUICE_EXTRACT_ENCODING",
        "SLUICE_ITEM_TIMEOUT",
        "SLUICE_MIN_RATE",
        "SLUICE_MIN_RATE_WINDOW",
    ] {
        assert!(help.contains(env), "{env} missing from --help");
    }
}
