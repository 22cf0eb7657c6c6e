//! Failure isolation (issue 15) through the real binaries: three CSV sources in three
//! datasets, one of them dead. `sluice extract` does the two good ones and exits 1 naming the
//! dead one; `sluice load --manifests` loads the two complete tables (exact row counts in
//! bqemulator), leaves the third absent and exits 1 naming it; `--on-incomplete skip` exits 0
//! with a warning. A second test runs only one of two extract tasks (the other "died" before
//! writing its manifest): the datasets the present task held still load, thanks to the
//! manifests' `planned_items`.

mod process_support;

use std::process::Output;

use process_support::{csv, lines_with, sluice, text};

use sluice_testkit::{BigQueryEmulator, FakeGcs, ServedFile, TestServer};

const BUCKET: &str = "lake";
const PROJECT: &str = "demo-project";

struct Stack {
    gcs: FakeGcs,
    bq: BigQueryEmulator,
    server: TestServer,
}

impl Stack {
    fn start() -> Stack {
        let gcs = FakeGcs::start().expect("fake-gcs-server");
        gcs.create_bucket(BUCKET).expect("bucket");
        let bq = BigQueryEmulator::start(PROJECT, &gcs.root()).expect("bqemulator");
        Stack {
            gcs,
            bq,
            server: TestServer::start(),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("STORAGE_EMULATOR_HOST", self.gcs.endpoint()),
            ("BIGQUERY_EMULATOR_HOST", self.bq.endpoint()),
        ]
    }

    /// One extract task over `urls` into gs://lake/raw.
    fn extract(&self, urls: &[String], index: u32, count: u32) -> Output {
        let mut args = vec!["extract".to_string()];
        for url in urls {
            args.extend(["--url".to_string(), url.clone()]);
        }
        args.extend(
            [
                "--dest",
                &format!("gs://{BUCKET}/raw"),
                "--format",
                "parquet",
            ]
            .map(String::from),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut env = self.env();
        env.push(("CLOUD_RUN_EXECUTION", "extract-e1".into()));
        env.push(("CLOUD_RUN_TASK_INDEX", index.to_string()));
        env.push(("CLOUD_RUN_TASK_COUNT", count.to_string()));
        sluice(&args, &env)
    }

    fn load(&self, extra_env: &[(&'static str, String)]) -> Output {
        let mut env = self.env();
        env.extend(extra_env.iter().cloned());
        sluice(
            &[
                "load",
                "--manifests",
                &format!("gs://{BUCKET}/raw/_manifests/"),
                "--table",
                &format!("{PROJECT}.raw.{{dataset}}"),
                "--write",
                "truncate",
                "--create-dataset",
                "--location",
                "US",
            ],
            &env,
        )
    }

    fn count(&self, table: &str) -> i64 {
        self.bq
            .query_scalar_i64(&format!("select count(*) from raw.{table}"))
            .unwrap_or_else(|e| panic!("count raw.{table}: {e:#}"))
    }

    fn table_status(&self, table: &str) -> u16 {
        let (status, _) = self
            .bq
            .rest(
                "GET",
                &format!("/bigquery/v2/projects/{PROJECT}/datasets/raw/tables/{table}"),
                None,
            )
            .unwrap();
        status
    }
}

#[test]
fn one_dead_source_does_not_block_the_other_tables() {
    let stack = Stack::start();
    let cities = stack
        .server
        .serve("src/cities.csv", ServedFile::new(csv(25)));
    let rivers = stack
        .server
        .serve("src/rivers.csv", ServedFile::new(csv(2)));
    // Never served: the server answers 404.
    let lakes = stack.server.url("src/lakes.csv");

    let extract = stack.extract(&[cities, lakes.clone(), rivers], 0, 1);
    let out = text(&extract);
    assert_eq!(extract.status.code(), Some(1), "extract: {out}");
    assert!(
        out.contains("1 of 3 items failed") && out.contains("lakes/lakes"),
        "the exit error names the failed item: {out}"
    );
    assert!(
        out.contains(&format!("{lakes}: HTTP 404")),
        "with its URL and cause: {out}"
    );
    // The good sources were written anyway, and the manifest says what the plan held.
    let manifest: serde_json::Value = serde_json::from_slice(
        &stack
            .gcs
            .download(BUCKET, "raw/_manifests/task-00000.json")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["complete"], false, "{manifest}");
    assert_eq!(
        manifest["planned_items"],
        serde_json::json!({"cities": 1, "lakes": 1, "rivers": 1}),
        "{manifest}"
    );
    let statuses: Vec<(String, String)> = manifest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("cities/cities".to_string(), "extracted".to_string()),
            ("lakes/lakes".into(), "failed".into()),
            ("rivers/rivers".into(), "extracted".into()),
        ]
    );

    // Default --on-incomplete fail: the complete tables load, the task exits 1 naming lakes.
    let load = stack.load(&[]);
    let out = text(&load);
    assert_eq!(load.status.code(), Some(1), "load: {out}");
    assert!(
        out.contains("1 table(s) skipped because their extract is incomplete"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{PROJECT}.raw.lakes: dataset lakes: item lakes/lakes failed"
        )) && out.contains("HTTP 404"),
        "the error names the table, the item and the cause: {out}"
    );
    assert!(out.contains("--on-incomplete skip"), "{out}");
    assert_eq!(stack.count("cities"), 25);
    assert_eq!(stack.count("rivers"), 2);
    assert_eq!(stack.table_status("lakes"), 404, "lakes must not exist");
    let mut loaded: Vec<String> = lines_with(&load, "job_id")
        .iter()
        .filter(|l| l.get("outcome").is_some())
        .map(|l| l["table"].as_str().unwrap().to_string())
        .collect();
    loaded.sort();
    assert_eq!(
        loaded,
        [
            format!("{PROJECT}.raw.cities"),
            format!("{PROJECT}.raw.rivers")
        ],
        "{out}"
    );

    // --on-incomplete skip (through its env twin): the same tables, a warning, exit 0. The
    // jobs are the same ones (deterministic ids), so nothing is loaded twice.
    let load = stack.load(&[("SLUICE_LOAD_ON_INCOMPLETE", "skip".into())]);
    let out = text(&load);
    assert_eq!(
        load.status.code(),
        Some(0),
        "load --on-incomplete skip: {out}"
    );
    let warnings: Vec<serde_json::Value> = lines_with(&load, "outcome")
        .into_iter()
        .filter(|l| l["outcome"] == "skipped")
        .collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert_eq!(warnings[0]["table"], format!("{PROJECT}.raw.lakes"));
    assert_eq!(warnings[0]["severity"], "WARNING", "{}", warnings[0]);
    assert!(
        out.contains("1 incomplete table(s) skipped (--on-incomplete skip)"),
        "the summary lists the skipped table: {out}"
    );
    assert_eq!(stack.count("cities"), 25);
    assert_eq!(stack.count("rivers"), 2);
    assert_eq!(stack.table_status("lakes"), 404);

    // A value that is neither is a usage error naming the flag.
    let load = stack.load(&[("SLUICE_LOAD_ON_INCOMPLETE", "maybe".into())]);
    let out = text(&load);
    assert_eq!(load.status.code(), Some(2), "{out}");
    assert!(out.contains("--on-incomplete"), "{out}");
}

#[test]
fn a_missing_task_manifest_blocks_only_the_datasets_its_task_held() {
    let stack = Stack::start();
    let urls: Vec<String> = [("a", 3), ("b", 4), ("c", 5), ("d", 6)]
        .iter()
        .map(|(name, rows)| {
            stack
                .server
                .serve(&format!("src/{name}.csv"), ServedFile::new(csv(*rows)))
        })
        .collect();
    // Task 1 of 2 died before writing its manifest (here: it never ran); task 0 did its share.
    let out = stack.extract(&urls, 0, 2);
    assert!(out.status.success(), "extract task 0: {}", text(&out));
    let manifest: serde_json::Value = serde_json::from_slice(
        &stack
            .gcs
            .download(BUCKET, "raw/_manifests/task-00000.json")
            .unwrap(),
    )
    .unwrap();
    let kept: Vec<String> = manifest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["dataset"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .filter(|d| !kept.iter().any(|k| k == *d))
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        manifest["planned_items"],
        serde_json::json!({"a": 1, "b": 1, "c": 1, "d": 1}),
        "the whole plan, not the share: {manifest}"
    );
    assert!(
        !kept.is_empty() && !lost.is_empty(),
        "hash sharding gives each task part of the 4 items: {manifest}"
    );

    let load = stack.load(&[]);
    let out = text(&load);
    assert_eq!(load.status.code(), Some(1), "load: {out}");
    for (name, rows) in [("a", 3), ("b", 4), ("c", 5), ("d", 6)] {
        if lost.iter().any(|l| l == name) {
            assert_eq!(stack.table_status(name), 404, "{name} must not load: {out}");
            assert!(
                out.contains(&format!(
                    "{PROJECT}.raw.{name}: dataset {name}: 1 of its 1 planned item(s) were in \
                     task manifest(s) never written (task-00001.json)"
                )),
                "{name}: {out}"
            );
        } else {
            assert_eq!(stack.count(name), rows, "{name}: {out}");
        }
    }
}
