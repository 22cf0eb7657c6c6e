//! A Socrata source whose count query fails (a dead portal) while the extract plans: the other
//! sources of the execution are still extracted and loaded (issue 15). The failure is pinned
//! for the execution, so both tasks plan the same item list (one failed item for the dead
//! source, the live ones split as usual), agree on `planned_items`, and a retry of the task
//! does not ask the dead portal again. Load loads the complete tables and names the dead one.

mod process_support;

use std::process::Output;

use process_support::{csv, sluice, text};

use sluice_testkit::{BigQueryEmulator, FakeGcs, ServedFile, Soda, TestServer};

const BUCKET: &str = "lake";
const PROJECT: &str = "demo-project";

fn manifest(gcs: &FakeGcs, index: u32) -> serde_json::Value {
    let key = format!("raw/_manifests/task-{index:05}.json");
    serde_json::from_slice(&gcs.download(BUCKET, &key).expect(&key)).expect("manifest JSON")
}

#[test]
fn a_socrata_source_that_cannot_be_planned_fails_alone() {
    let gcs = FakeGcs::start().expect("fake-gcs-server");
    gcs.create_bucket(BUCKET).expect("bucket");
    let bq = BigQueryEmulator::start(PROJECT, &gcs.root()).expect("bqemulator");
    let server = TestServer::start();
    let cities = server.serve("src/cities.csv", ServedFile::new(csv(25)));
    let soda = Soda::new(&[("permit", "text"), ("cost", "number")]);
    soda.update(|d| {
        for i in 0..12 {
            d.insert(&[&format!("P-{i:03}"), &(i * 10).to_string()]);
            d.tick();
        }
    });
    let permits = server.soda("perm-1ts", &soda);
    // No such resource: every request, the count query first, gets a 404.
    let dead = server.url("resource/dead-0000");
    let dead_requests = || server.requests_to("resource/dead-0000.json").len();

    let dest = format!("gs://{BUCKET}/raw");
    let args = [
        "extract",
        "--url",
        &cities,
        "--socrata",
        &permits,
        "--socrata",
        &dead,
        "--dest",
        &dest,
        "--format",
        "parquet",
        "--socrata-page-size",
        "5",
    ];
    let env = |index: u32, attempt: u32| {
        vec![
            ("STORAGE_EMULATOR_HOST", gcs.endpoint()),
            ("BIGQUERY_EMULATOR_HOST", bq.endpoint()),
            ("CLOUD_RUN_EXECUTION", "extract-e1".to_string()),
            ("CLOUD_RUN_TASK_INDEX", index.to_string()),
            ("CLOUD_RUN_TASK_COUNT", "2".to_string()),
            ("CLOUD_RUN_TASK_ATTEMPT", attempt.to_string()),
        ]
    };
    let task0 = sluice(&args, &env(0, 0));
    let asked = dead_requests();
    assert!(asked >= 1, "task 0 planned the dead source");
    let task1 = sluice(&args, &env(1, 0));
    assert_eq!(
        dead_requests(),
        asked,
        "task 1 reads the execution's verdict instead of asking the dead portal again"
    );

    // Both tasks planned the same items: one failed item stands for the dead source.
    let (m0, m1) = (manifest(&gcs, 0), manifest(&gcs, 1));
    assert_eq!(m0["planned_items"], m1["planned_items"], "{m0}\n{m1}");
    let planned = m0["planned_items"].as_object().unwrap();
    assert_eq!(
        planned.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        1 + 3 + 1,
        "cities, 3 pages of 5 permits, the dead source: {planned:?}"
    );
    let failed: Vec<(u32, serde_json::Value)> = [(0, &m0), (1, &m1)]
        .into_iter()
        .flat_map(|(index, m)| {
            m["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["status"] == "failed")
                .map(move |i| (index, i.clone()))
        })
        .collect();
    assert_eq!(failed.len(), 1, "exactly one failed item: {failed:?}");
    let (owner, item) = &failed[0];
    let cause = item["error"].as_str().unwrap();
    assert!(
        item["key"].as_str().unwrap().contains("dead")
            && cause.contains("planning the Socrata pull")
            && cause.contains("HTTP 404"),
        "{item}"
    );
    let (owner_out, other_out) = if *owner == 0 {
        (&task0, &task1)
    } else {
        (&task1, &task0)
    };
    assert_eq!(
        owner_out.status.code(),
        Some(1),
        "the task holding the failed item exits 1: {}",
        text(owner_out)
    );
    assert!(
        text(owner_out).contains("dead"),
        "its error names the source: {}",
        text(owner_out)
    );
    assert!(
        other_out.status.success(),
        "the other task did all of its share: {}",
        text(other_out)
    );

    // Cloud Run retries the failing task: the verdict holds, the portal is not asked again.
    let retry = sluice(&args, &env(*owner, 1));
    assert_eq!(retry.status.code(), Some(1), "{}", text(&retry));
    assert_eq!(dead_requests(), asked);

    // Load: the complete tables load, the dead source's table does not exist, exit 1 names it.
    let load = sluice(
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
        &[
            ("STORAGE_EMULATOR_HOST", gcs.endpoint()),
            ("BIGQUERY_EMULATOR_HOST", bq.endpoint()),
        ],
    );
    let out: &Output = &load;
    assert_eq!(load.status.code(), Some(1), "load: {}", text(out));
    let dead_dataset = item["dataset"].as_str().unwrap();
    assert!(
        text(out).contains(&format!("{PROJECT}.raw.{dead_dataset}")),
        "load names the skipped table: {}",
        text(out)
    );
    let count = |table: &str| {
        bq.query_scalar_i64(&format!("select count(*) from raw.{table}"))
            .unwrap_or_else(|e| panic!("count raw.{table}: {e:#}"))
    };
    assert_eq!(count("cities"), 25);
    let permits_dataset = planned
        .keys()
        .find(|d| d.contains("perm"))
        .expect("the permits dataset");
    assert_eq!(count(permits_dataset), 12);
    let (status, _) = bq
        .rest(
            "GET",
            &format!("/bigquery/v2/projects/{PROJECT}/datasets/raw/tables/{dead_dataset}"),
            None,
        )
        .unwrap();
    assert_eq!(status, 404, "the dead source's table must not exist");
}
