//! Day after day (issue 15) through the real binaries, on fake-gcs-server + bqemulator + a
//! SODA server on loopback: day 1 is a full pull merged into a new table; the source then
//! updates some rows and adds others; day 2 (`--since auto`) pulls only the changes and the
//! merge leaves the table equal to the source, value for value, with no duplicate keys; day 3
//! finds nothing new and load succeeds without `--allow-empty`. Every
//! task is retried at every step and nothing changes; the stored mark never runs ahead of what
//! was loaded.

mod process_support;

use process_support::{sluice, task_env, text};

use sluice_testkit::{BigQueryEmulator, FakeGcs, Soda, TestServer};

const BUCKET: &str = "lake";
const PROJECT: &str = "demo-project";
const TABLE: &str = "raw.permits";
const STATE: &str = "raw/_state/permits.json";

struct Day<'a> {
    gcs: &'a FakeGcs,
    bq: &'a BigQueryEmulator,
    resource: &'a str,
    date: &'a str,
}

impl Day<'_> {
    fn env(&self, job: &str, index: u32, count: u32, attempt: u32) -> Vec<(&'static str, String)> {
        task_env(
            &self.gcs.endpoint(),
            &self.bq.endpoint(),
            job,
            self.date,
            (index, count, attempt),
        )
    }

    /// Two extract tasks, each run twice (the second run is Cloud Run's retry).
    fn extract(&self) {
        let partition = format!("dt={}", self.date);
        let dest = format!("gs://{BUCKET}/raw");
        let args = [
            "extract",
            "--socrata",
            self.resource,
            "--since",
            "auto",
            "--dataset",
            "permits",
            "--dest",
            &dest,
            "--format",
            "parquet",
            "--partition",
            &partition,
            "--socrata-page-size",
            "10",
        ];
        for attempt in 0..2 {
            for index in 0..2 {
                let out = sluice(&args, &self.env("extract", index, 2, attempt));
                assert!(
                    out.status.success(),
                    "{} extract task {index} attempt {attempt}: {}",
                    self.date,
                    text(&out)
                );
            }
        }
    }

    /// Two load tasks merging on the Socrata row id, each run twice.
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
            "_socrata_id",
            "--hive-partitioning",
            "--create-dataset",
            "--location",
            "US",
        ];
        for attempt in 0..2 {
            for index in 0..2 {
                let out = sluice(&args, &self.env("load", index, 2, attempt));
                assert!(
                    out.status.success(),
                    "{} load task {index} attempt {attempt}: {}",
                    self.date,
                    text(&out)
                );
            }
        }
    }
}

/// `(id, permit, cost, updated_at)` of every row in the source, sorted by id.
fn source_rows(soda: &Soda) -> Vec<Vec<Option<String>>> {
    let mut rows: Vec<Vec<Option<String>>> = soda
        .rows()
        .into_iter()
        .map(|r| {
            let mut row = vec![Some(r.id.clone())];
            row.extend(r.values.iter().cloned());
            row
        })
        .collect();
    rows.sort();
    rows
}

fn table_rows(bq: &BigQueryEmulator) -> Vec<Vec<Option<String>>> {
    let mut rows = bq
        .query_rows(&format!(
            "select _socrata_id, permit, cast(cost as string) from {TABLE}"
        ))
        .expect("query the table");
    // Numbers come back as BigQuery renders them; compare as the source wrote them.
    for row in &mut rows {
        if let Some(Some(cost)) = row.get_mut(2)
            && let Some(stripped) = cost.strip_suffix(".0")
        {
            *cost = stripped.to_string();
        }
    }
    rows.sort();
    rows
}

fn stored_mark(gcs: &FakeGcs) -> Option<(String, String)> {
    let bytes = gcs.download(BUCKET, STATE).ok()?;
    let state: serde_json::Value = serde_json::from_slice(&bytes).expect("state file is JSON");
    assert_eq!(state["kind"], "sluice.state", "{state}");
    let sources = state["sources"].as_object().expect("sources");
    assert_eq!(sources.len(), 1, "{state}");
    let (key, entry) = sources.iter().next().unwrap();
    let mark = entry["mark"].as_str().unwrap_or_else(|| panic!("{state}"));
    Some((key.clone(), mark.to_string()))
}

fn max_updated_at(soda: &Soda) -> String {
    soda.rows()
        .iter()
        .map(|r| r.updated_at.trim_end_matches('Z').to_string())
        .max()
        .unwrap()
}

#[test]
fn day_two_pulls_only_the_changes_and_the_table_equals_the_source() {
    let gcs = FakeGcs::start().expect("fake-gcs-server");
    gcs.create_bucket(BUCKET).expect("bucket");
    let bq = BigQueryEmulator::start(PROJECT, &gcs.root()).expect("bqemulator");
    let server = TestServer::start();
    let soda = Soda::new(&[("permit", "text"), ("cost", "number")]);
    soda.update(|d| {
        for i in 0..35 {
            d.insert(&[&format!("P-{i:03}"), &(i * 10).to_string()]);
            d.tick();
        }
    });
    let resource = server.soda("perm-1ts", &soda);

    // Day 1: a full pull (no state yet), merged into a new table.
    let day1 = Day {
        gcs: &gcs,
        bq: &bq,
        resource: &resource,
        date: "2026-12-01",
    };
    day1.extract();
    assert_eq!(
        stored_mark(&gcs),
        None,
        "extract alone must not advance the state"
    );
    day1.load();
    assert_eq!(table_rows(&bq), source_rows(&soda), "day 1 table = source");
    assert_eq!(
        bq.query_scalar_i64(&format!("select count(*) from {TABLE}"))
            .unwrap(),
        35
    );
    let (key, mark1) = stored_mark(&gcs).expect("state after day 1's load");
    assert!(key.starts_with("permits/perm"), "state key {key}");
    assert_eq!(mark1, max_updated_at(&soda));

    // The source changes: 4 rows updated, 6 added.
    soda.update(|d| {
        for i in [3, 11, 20, 34] {
            let id = d.find("permit", &format!("P-{i:03}")).unwrap();
            d.set(&id, "cost", &(i * 1000 + 1).to_string());
        }
        for i in 35..41 {
            d.insert(&[&format!("P-{i:03}"), &(i * 10).to_string()]);
        }
    });
    let pages_before = soda.requests().iter().filter(|r| r.is_page()).count();

    // Day 2: only the 10 changed rows are pulled (one page of 10), then merged.
    let day2 = Day {
        gcs: &gcs,
        bq: &bq,
        resource: &resource,
        date: "2026-12-02",
    };
    day2.extract();
    let day2_pages: Vec<_> = soda
        .requests()
        .into_iter()
        .filter(|r| r.is_page())
        .skip(pages_before)
        .collect();
    assert!(!day2_pages.is_empty());
    for page in &day2_pages {
        let where_ = page.param("$where").unwrap_or_default();
        assert!(
            where_.contains(&format!(":updated_at > '{mark1}'")),
            "day 2 page outside the window: {where_}"
        );
    }
    assert_eq!(
        stored_mark(&gcs).map(|(_, m)| m),
        Some(mark1.clone()),
        "the state must not run ahead of what was loaded"
    );
    let rows_day2 = gcs
        .list(BUCKET, "raw/permits/dt=2026-12-02/")
        .expect("list day 2")
        .len();
    assert_eq!(rows_day2, 1, "one page of changes on day 2");
    day2.load();

    assert_eq!(table_rows(&bq), source_rows(&soda), "day 2 table = source");
    assert_eq!(
        bq.query_scalar_i64(&format!("select count(*) from {TABLE}"))
            .unwrap(),
        41
    );
    assert_eq!(
        bq.query_scalar_i64(&format!("select count(distinct _socrata_id) from {TABLE}"))
            .unwrap(),
        41,
        "no duplicate keys"
    );
    let (_, mark2) = stored_mark(&gcs).expect("state after day 2");
    assert_eq!(mark2, max_updated_at(&soda));
    assert!(mark2 > mark1);
    // One lineage row per table load, retries included: day 1 and day 2.
    assert_eq!(
        bq.query_scalar_i64("select count(*) from raw._sluice_loads")
            .unwrap(),
        2
    );

    // Day 3: nothing changed at the source. Extract finds an empty window and load succeeds
    // without --allow-empty (a quiet day is not an error); nothing moves.
    let day3 = Day {
        gcs: &gcs,
        bq: &bq,
        resource: &resource,
        date: "2026-12-03",
    };
    day3.extract();
    assert!(
        gcs.list(BUCKET, "raw/permits/dt=2026-12-03/")
            .expect("list day 3")
            .is_empty(),
        "nothing to write on a quiet day"
    );
    day3.load();
    assert_eq!(table_rows(&bq), source_rows(&soda), "day 3 table = source");
    assert_eq!(stored_mark(&gcs).map(|(_, m)| m), Some(mark2));
    assert_eq!(
        bq.query_scalar_i64("select count(*) from raw._sluice_loads")
            .unwrap(),
        2,
        "no load, no lineage row"
    );
}
