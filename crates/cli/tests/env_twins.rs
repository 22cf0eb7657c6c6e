//! Per-command env names (issue 15), through the real `sluice` binary. The issue's failure:
//! `SLUICE_SCHEMA=extract.toml` in a jobs.toml `[defaults].env` reached `sluice load` too,
//! which read the TOML as a BigQuery JSON schema and exited 2.

mod extract_support;

use std::path::Path;

use extract_support::{sluice, text};
use sluice_testkit::{BigQueryEmulator, FakeGcs};

const BUCKET: &str = "lake";
const PROJECT: &str = "twins-project";

fn write_cities(dir: &Path) -> String {
    let mut csv = String::from("city,population\n");
    for i in 0..12 {
        csv.push_str(&format!("city{i},{}\n", 1000 + i));
    }
    std::fs::write(dir.join("cities.csv"), csv).unwrap();
    format!("file://{}", dir.join("cities.csv").display())
}

/// The issue's scenario with the new names: one env shared by the extract and the load job
/// (what `[defaults].env` gives every job) carries extract's TOML schema and format. Extract
/// applies them; load ignores them and loads; nothing is deprecated, so nothing warns. The
/// same env with the old shared name makes load exit 2 as before, but the log now says why.
#[test]
fn a_shared_extract_schema_no_longer_reaches_load() {
    let gcs = FakeGcs::start().expect("fake-gcs-server");
    gcs.create_bucket(BUCKET).expect("bucket");
    let bq = BigQueryEmulator::start(PROJECT, &gcs.root()).expect("bqemulator");
    let dir = tempfile::tempdir().unwrap();
    let cities = write_cities(dir.path());
    // Extract's schema override: population as text (the inference would say INT64).
    let schema = dir.path().join("extract.toml");
    std::fs::write(&schema, "[columns]\npopulation = \"string\"\n").unwrap();
    let shared = |old_names: bool| {
        let (format, schema_name) = if old_names {
            ("SLUICE_FORMAT", "SLUICE_SCHEMA")
        } else {
            ("SLUICE_EXTRACT_FORMAT", "SLUICE_EXTRACT_SCHEMA")
        };
        vec![
            ("STORAGE_EMULATOR_HOST", gcs.endpoint()),
            ("BIGQUERY_EMULATOR_HOST", bq.endpoint()),
            (format, "parquet".to_string()),
            (schema_name, schema.display().to_string()),
        ]
    };
    let extract = |env: &[(&str, String)]| {
        sluice()
            .args(["extract", "--url", &cities])
            .args([
                "--dest",
                &format!("gs://{BUCKET}/raw"),
                "--partition",
                "dt=2026-12-01",
            ])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap()
    };
    let load = |env: &[(&str, String)]| {
        sluice()
            .args([
                "load",
                "--manifests",
                &format!("gs://{BUCKET}/raw/_manifests/"),
            ])
            .args([
                "--table",
                &format!("{PROJECT}.raw.{{dataset}}"),
                "--write",
                "truncate",
            ])
            // bqemulator reads `dt=` directories as Hive partitions (docs/local-stack.md).
            .args([
                "--hive-partitioning",
                "--create-dataset",
                "--location",
                "US",
            ])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap()
    };

    let env = shared(false);
    let out = extract(&env);
    assert!(out.status.success(), "extract: {}", text(&out));
    let out = load(&env);
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(0), "load: {logs}");
    assert!(!logs.contains("deprecated"), "{logs}");
    assert_eq!(
        bq.query_scalar_i64("select count(*) from raw.cities")
            .unwrap(),
        12
    );
    // Extract read its schema (population is a string in the Parquet, so in the table).
    let (status, table) = bq
        .rest(
            "GET",
            &format!("/bigquery/v2/projects/{PROJECT}/datasets/raw/tables/cities"),
            None,
        )
        .unwrap();
    assert_eq!(status, 200, "{table}");
    let table: serde_json::Value = serde_json::from_str(&table).unwrap();
    let population = table["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "population")
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(population["type"], "STRING", "{table}");

    // The old shared name still reaches load for this release (load reads it as its own
    // --schema and refuses it), and the warning names the variable and its replacement.
    let out = load(&shared(true));
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(2), "{logs}");
    assert!(
        logs.contains("SLUICE_SCHEMA is deprecated")
            && logs.contains("read it as SLUICE_LOAD_SCHEMA"),
        "{logs}"
    );
}

fn load_usage(env: &[(&str, &str)]) -> String {
    let out = sluice()
        .args(["load", "--source", "gs://b/raw/*.csv", "--table", "p.ds.t"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(2), "{env:?}: {logs}");
    logs
}

const CSV_NEEDS_SCHEMA: &str = "CSV loads need --schema FILE or --autodetect";

/// `SLUICE_LOAD_FORMAT` is read; the old `SLUICE_FORMAT` is read only when it is unset, with
/// one warning; with both set the new one wins and the warning says so.
#[test]
fn load_format_by_its_own_name_and_the_old_one_with_a_warning() {
    let logs = load_usage(&[("SLUICE_LOAD_FORMAT", "csv")]);
    assert!(logs.contains(CSV_NEEDS_SCHEMA), "{logs}");
    assert!(!logs.contains("deprecated"), "{logs}");

    let logs = load_usage(&[("SLUICE_FORMAT", "csv")]);
    assert!(logs.contains(CSV_NEEDS_SCHEMA), "{logs}");
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("SLUICE_FORMAT is deprecated"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(
        warnings[0].contains("\"WARNING\"") && warnings[0].contains("SLUICE_LOAD_FORMAT"),
        "{logs}"
    );

    let logs = load_usage(&[("SLUICE_FORMAT", "parquet"), ("SLUICE_LOAD_FORMAT", "csv")]);
    assert!(logs.contains(CSV_NEEDS_SCHEMA), "{logs}");
    assert!(
        logs.contains("SLUICE_LOAD_FORMAT is set too and wins, SLUICE_FORMAT is ignored"),
        "{logs}"
    );

    // Extract's name does not reach load: load stays Parquet and refuses the JSON schema
    // given by its own name for it (a different refusal than the CSV one).
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("bq.json");
    std::fs::write(&schema, r#"[{"name": "city", "type": "STRING"}]"#).unwrap();
    let logs = load_usage(&[
        ("SLUICE_EXTRACT_FORMAT", "csv"),
        ("SLUICE_LOAD_SCHEMA", schema.to_str().unwrap()),
    ]);
    assert!(logs.contains("Parquet loads take their schema"), "{logs}");
}

/// Extract reads `SLUICE_EXTRACT_FORMAT`, not load's name; the old name works with a warning.
#[test]
fn extract_format_by_its_own_name_and_the_old_one_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let cities = write_cities(dir.path());
    let run = |out_dir: &str, env: &[(&str, &str)]| {
        let dest = dir.path().join(out_dir);
        let out = sluice()
            .args(["extract", "--url", &cities, "--dataset", "d"])
            .arg("--dest")
            .arg(&dest)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let logs = text(&out);
        assert_eq!(out.status.code(), Some(0), "{env:?}: {logs}");
        let written: Vec<String> = std::fs::read_dir(dest.join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        (written, logs)
    };
    let (written, logs) = run("new", &[("SLUICE_EXTRACT_FORMAT", "parquet")]);
    assert_eq!(written, ["cities-00000.parquet"], "{logs}");
    assert!(!logs.contains("deprecated"), "{logs}");

    let (written, _) = run("other", &[("SLUICE_LOAD_FORMAT", "csv")]);
    assert_eq!(written, ["cities-00000.csv"]);

    let (written, logs) = run("old", &[("SLUICE_FORMAT", "parquet")]);
    assert_eq!(written, ["cities-00000.parquet"], "{logs}");
    assert!(
        logs.contains("SLUICE_FORMAT is deprecated")
            && logs.contains("read it as SLUICE_EXTRACT_FORMAT"),
        "{logs}"
    );
}

/// `--help` names the per-command variables, also when an old name is set (the fallback
/// must not leak into the help text).
#[test]
fn help_shows_the_new_names() {
    for (command, prefix) in [("extract", "SLUICE_EXTRACT_"), ("load", "SLUICE_LOAD_")] {
        let out = sluice()
            .args([command, "--help"])
            .env("SLUICE_FORMAT", "parquet")
            .env("SLUICE_SCHEMA", "x.toml")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let help = String::from_utf8_lossy(&out.stdout);
        for name in [
            "FORMAT",
            "SCHEMA",
            "CONCURRENCY",
            "SHARD_STRATEGY",
            "ENCODING",
        ] {
            assert!(
                help.contains(&format!("{prefix}{name}")),
                "{command}: {name}: {help}"
            );
            // A rendered env name ends in `]` (values are hidden) or `=`.
            for end in ["]", "="] {
                let old = format!("SLUICE_{name}{end}");
                assert!(!help.contains(&old), "{command}: {old} in {help}");
            }
        }
    }
}
