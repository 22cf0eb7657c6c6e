//! A growing CSV day after day with `--since auto --cursor updated_at` (issue 15), through the
//! real binaries on fake-gcs-server + bqemulator, the CSV served over HTTP on loopback: day 1
//! is a full pull merged into a new table; the CSV then gets new rows and one row updated
//! (with a later `updated_at`); day 2 writes only those rows and the merge leaves the table
//! equal to the CSV. Day 3 the file changes without anything new (rows reordered): an empty
//! object, loaded as zero rows. Every task runs twice (Cloud Run's retry); the stored mark is
//! `max(updated_at)` after each load and never before it.

mod process_support;

use process_support::{sluice, task_env, text};

use sluice_testkit::{BigQueryEmulator, FakeGcs, ServedFile, TestServer};

const BUCKET: &str = "lake";
const PROJECT: &str = "cursor-project";
const TABLE: &str = "raw.orders";
const STATE: &str = "raw/_state/orders.json";

const DAY1: &str = "\
id,updated_at,amount
1,2026-11-25 10:00:00,10
2,2026-11-26 10:00:00,20
3,2026-11-27 10:00:00,30
4,,40
5,2026-11-29 10:00:00,50
";

const DAY2: &str = "\
id,updated_at,amount
1,2026-11-25 10:00:00,10
2,2026-11-26 10:00:00,20
3,2026-11-30 08:00:00,33
4,,40
5,2026-11-29 10:00:00,50
6,2026-11-29 12:00:00,60
7,2026-11-30 09:00:00,70
";

struct Day<'a> {
    gcs: &'a FakeGcs,
    bq: &'a BigQueryEmulator,
    url: &'a str,
    date: &'a str,
}

impl Day<'_> {
    fn env(&self, job: &str, index: u32, count: u32, attempt: u32) -> Vec<(&'static str, String)> {
        let mut env = task_env(
            &self.gcs.endpoint(),
            &self.bq.endpoint(),
            job,
            self.date,
            (index, count, attempt),
        );
        // The cursor through its env twin, the rest as flags.
        env.push(("SLUICE_EXTRACT_CURSOR", "updated_at".to_string()));
        env
    }

    /// One extract task, run twice (the second run is Cloud Run's retry); the task manifest.
    fn extract(&self) -> serde_json::Value {
        let partition = format!("dt={}", self.date);
        let dest = format!("gs://{BUCKET}/raw");
        let args = [
            "extract",
            "--url",
            self.url,
            "--since",
            "auto",
            "--dataset",
            "orders",
            "--dest",
            &dest,
            "--format",
            "parquet",
            "--partition",
            &partition,
        ];
        for attempt in 0..2 {
            let out = sluice(&args, &self.env("extract", 0, 1, attempt));
            assert!(
                out.status.success(),
                "{} extract attempt {attempt}: {}",
                self.date,
                text(&out)
            );
        }
        let bytes = self
            .gcs
            .download(BUCKET, "raw/_manifests/task-00000.json")
            .expect("task manifest");
        serde_json::from_slice(&bytes).unwrap()
    }

    /// One load task merging on `id`, run twice.
    fn load(&self) {
        let manifests = format!("gs://{BUCKET}/raw/_manifests/");
        let table = format!("{PROJECT}.raw.{{dataset}}");
        let args = [
            "load",
            "--manifests",
            &manifests,
            "--table",
            &table,
            "--write",
            "merge",
            "--key",
            "id",
            "--hive-partitioning",
            "--create-dataset",
            "--location",
            "US",
        ];
        for attempt in 0..2 {
            let out = sluice(&args, &self.env("load", 0, 1, attempt));
            assert!(
                out.status.success(),
                "{} load attempt {attempt}: {}",
                self.date,
                text(&out)
            );
        }
    }
}

/// `(id, updated_at, amount)` of the CSV, as text, sorted by id.
fn csv_rows(csv: &str) -> Vec<Vec<Option<String>>> {
    let mut rows: Vec<Vec<Option<String>>> = csv
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .map(|v| (!v.is_empty()).then(|| v.to_string()))
                .collect()
        })
        .collect();
    rows.sort_by_key(|r| r[0].as_ref().unwrap().parse::<i64>().unwrap());
    rows
}

fn table_rows(bq: &BigQueryEmulator) -> Vec<Vec<Option<String>>> {
    let mut rows = bq
        .query_rows(&format!(
            "select cast(id as string), format_timestamp('%Y-%m-%d %H:%M:%S', updated_at), \
             cast(amount as string) from {TABLE}"
        ))
        .expect("query the table");
    rows.sort_by_key(|r| r[0].as_ref().unwrap().parse::<i64>().unwrap());
    rows
}

/// The stored entry: (mark, column, has a source version).
fn stored(gcs: &FakeGcs) -> Option<(String, String, bool)> {
    let bytes = gcs.download(BUCKET, STATE).ok()?;
    let state: serde_json::Value = serde_json::from_slice(&bytes).expect("state file is JSON");
    let entry = &state["sources"]["orders/orders"];
    assert!(entry.is_object(), "{state}");
    Some((
        entry["mark"]
            .as_str()
            .unwrap_or_else(|| panic!("{state}"))
            .into(),
        entry["column"]
            .as_str()
            .unwrap_or_else(|| panic!("{state}"))
            .into(),
        entry["source_version"].is_object(),
    ))
}

fn rows_written(manifest: &serde_json::Value) -> (u64, u64, u64) {
    let item = &manifest["items"][0];
    let cursor = &item["source"]["cursor"];
    let objects = item["objects"].as_array().expect("objects");
    assert_eq!(objects.len(), 1, "{manifest}");
    (
        objects[0]["rows"].as_u64().unwrap(),
        cursor["read_rows"].as_u64().unwrap(),
        cursor["filtered_rows"].as_u64().unwrap(),
    )
}

#[test]
fn a_growing_csv_day_after_day_by_its_cursor_column() {
    let gcs = FakeGcs::start().expect("fake-gcs-server");
    gcs.create_bucket(BUCKET).expect("bucket");
    let bq = BigQueryEmulator::start(PROJECT, &gcs.root()).expect("bqemulator");
    let server = TestServer::start();
    let url = server.serve("orders.csv", ServedFile::new(DAY1));
    let day = |date| Day {
        gcs: &gcs,
        bq: &bq,
        url: &url,
        date,
    };

    // Day 1: a full pull (no state yet), the row without `updated_at` included.
    let day1 = day("2026-12-01");
    let manifest = day1.extract();
    assert_eq!(rows_written(&manifest), (5, 5, 0));
    assert_eq!(
        stored(&gcs),
        None,
        "extract alone must not advance the state"
    );
    day1.load();
    assert_eq!(table_rows(&bq), csv_rows(DAY1), "day 1 table = CSV");
    let mark1 = "2026-11-29T10:00:00.000000Z".to_string();
    assert_eq!(
        stored(&gcs),
        Some((mark1.clone(), "updated_at".into(), true))
    );

    // Day 2: rows 6 and 7 new, row 3 updated (with a later `updated_at`). Only those 3 rows
    // are written; the merge updates 3 and inserts 6 and 7.
    server.serve("orders.csv", ServedFile::new(DAY2));
    let day2 = day("2026-12-02");
    let manifest = day2.extract();
    assert_eq!(rows_written(&manifest), (3, 7, 4));
    assert_eq!(
        manifest["items"][0]["source"]["cursor"]["from"].as_str(),
        Some(mark1.as_str())
    );
    assert_eq!(
        stored(&gcs).map(|s| s.0),
        Some(mark1.clone()),
        "the state must not run ahead of what was loaded"
    );
    day2.load();
    assert_eq!(table_rows(&bq), csv_rows(DAY2), "day 2 table = CSV");
    assert_eq!(
        bq.query_scalar_i64(&format!("select count(distinct id) from {TABLE}"))
            .unwrap(),
        7,
        "no duplicate keys"
    );
    let mark2 = "2026-11-30T09:00:00.000000Z".to_string();
    assert_eq!(stored(&gcs).map(|s| s.0), Some(mark2.clone()));

    // Day 3: the file changed (rows reordered) but nothing is after the mark: one object
    // with zero rows, loaded as such; the table and the mark stay.
    let mut lines: Vec<&str> = DAY2.lines().collect();
    lines[1..].reverse();
    let day3_csv = lines.join("\n") + "\n";
    server.serve("orders.csv", ServedFile::new(day3_csv.clone()));
    let day3 = day("2026-12-03");
    let manifest = day3.extract();
    assert_eq!(rows_written(&manifest), (0, 7, 7));
    day3.load();
    assert_eq!(table_rows(&bq), csv_rows(&day3_csv), "day 3 table = CSV");
    assert_eq!(stored(&gcs).map(|s| s.0), Some(mark2));
}
