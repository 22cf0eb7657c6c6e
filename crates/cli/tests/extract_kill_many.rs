//! SIGKILL (no chance to clean up) mid-way through many small files, then Cloud Run's retry of
//! the task: the retry reuses what the task journal recorded, redoes the rest, and every row
//! arrives exactly once -- each item once in the manifest, each object once, no object on disk
//! that the manifest does not list, every source row in exactly one object.

mod extract_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use extract_support::{sluice, text, visible_files, wait_for};
use sluice_testkit::{ServedFile, TestServer, read_parquet};

const FILES: usize = 300;
const ROWS: usize = 20;
const PART_ITEMS: usize = 20;

fn csv(file: usize) -> String {
    let mut out = String::from("id,label\n");
    for r in 0..ROWS {
        out.push_str(&format!("{},label {r}\n", file * ROWS + r));
    }
    out
}

#[test]
fn sigkill_mid_way_through_many_small_files_then_a_retry_writes_every_row_once() {
    let server = TestServer::start();
    let mut urls = String::new();
    for i in 0..FILES {
        // ~20 ms per file, so the task is still busy when it is killed.
        let file = ServedFile::new(csv(i)).slow(64, Duration::from_millis(5));
        urls.push_str(&server.serve(&format!("f{i:03}.csv"), file));
        urls.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("sources.txt");
    std::fs::write(&list, urls).unwrap();
    let dest = dir.path().join("out");
    let args = [
        "extract",
        "--manifest",
        list.to_str().unwrap(),
        "--dest",
        dest.to_str().unwrap(),
        "--dataset",
        "small",
        "--format",
        "parquet",
        "--concurrency",
        "2",
    ];
    let attempt = |n: &str| {
        let mut command = sluice();
        command
            .args(args)
            .env("SLUICE_JOURNAL_PART_ITEMS", PART_ITEMS.to_string())
            .env("CLOUD_RUN_JOB", "extract")
            .env("CLOUD_RUN_EXECUTION", "extract-k1")
            .env("CLOUD_RUN_TASK_ATTEMPT", n);
        command
    };
    let journal = dest.join("_manifests/executions/extract-k1/task-00000");

    // Logs to a file: a pipe nobody reads would stall the task once full.
    let log = dir.path().join("attempt0.log");
    let mut child = attempt("0")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("attempt0.err")).unwrap())
        .spawn()
        .unwrap();
    // Five parts (100 items) recorded, the task still running: kill it.
    let appeared = wait_for(Duration::from_secs(60), || {
        journal.join("a000-00004.json").exists() || matches!(child.try_wait(), Ok(Some(_)))
    });
    let logs = || {
        std::fs::read_to_string(&log).unwrap_or_default()
            + &std::fs::read_to_string(dir.path().join("attempt0.err")).unwrap_or_default()
    };
    if !appeared || matches!(child.try_wait(), Ok(Some(_))) {
        let _ = child.kill();
        panic!("no journal part appeared while the task ran: {}", logs());
    }
    child.kill().unwrap();
    let killed = child.wait().unwrap();
    assert_eq!(killed.code(), None, "{}", logs());
    assert!(
        !dest.join("_manifests/task-00000.json").exists(),
        "the killed attempt got to its manifest: kill it earlier"
    );
    // The parts (not their hidden metadata sidecars).
    let recorded: usize = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| {
            let part: serde_json::Value =
                serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            part["items"].as_array().unwrap().len()
        })
        .sum();
    assert!((5 * PART_ITEMS..FILES).contains(&recorded), "{recorded}");

    let out = attempt("1").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("_manifests/task-00000.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["complete"], true);
    let items = manifest["items"].as_array().unwrap();
    let keys: Vec<&str> = items.iter().map(|i| i["key"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!((keys.len(), unique.len()), (FILES, FILES));
    // In key order, across the reused records and the redone ones.
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    let mut statuses = BTreeMap::new();
    for item in items {
        *statuses
            .entry(item["status"].as_str().unwrap())
            .or_insert(0usize) += 1;
    }
    assert_eq!(statuses.get("reused"), Some(&recorded), "{statuses:?}");
    assert_eq!(statuses.get("extracted"), Some(&(FILES - recorded)));
    assert_eq!(manifest["totals"]["reused"], recorded);
    assert_eq!(manifest["totals"]["objects"], FILES);
    assert_eq!(manifest["totals"]["rows"], FILES * ROWS);

    // Every object once in the manifest, and nothing on disk that it does not list.
    let listed: Vec<String> = items
        .iter()
        .flat_map(|i| i["objects"].as_array().unwrap().iter())
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect();
    let listed_set: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(listed_set.len(), listed.len());
    let on_disk: BTreeSet<String> = visible_files(&dest)
        .into_iter()
        .filter(|f| !f.starts_with("_manifests/"))
        .collect();
    assert_eq!(on_disk, listed_set);

    // Every source row in exactly one object.
    let mut ids = Vec::new();
    for name in &listed {
        let (_, batches, _) = read_parquet(std::fs::read(dest.join(name)).unwrap());
        for batch in batches {
            // The id column's values, one per line of arrow's Debug form (this crate does
            // not depend on arrow).
            let column = format!("{:?}", batch.column(0));
            assert!(column.starts_with("PrimitiveArray<Int64>"), "{column}");
            let values: Vec<i64> = column
                .lines()
                .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
                .collect();
            assert_eq!(values.len(), batch.num_rows(), "{column}");
            ids.extend(values);
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..(FILES * ROWS) as i64).collect::<Vec<_>>());

    // A reused item was downloaded once in all: the retry did not fetch it again.
    let fetched_once = (0..FILES)
        .filter(|i| {
            server
                .requests_to(&format!("f{i:03}.csv"))
                .iter()
                .filter(|r| r.method == "GET")
                .count()
                == 1
        })
        .count();
    assert!(fetched_once >= recorded, "{fetched_once} < {recorded}");
}
