//! Sharding across 1, 3 and 7 tasks covers every work item (URLs and Socrata pages) exactly
//! once, and together the tasks write every object exactly once.

mod common;

use std::collections::BTreeMap;

use common::{config, keys, object, run, task};
use sluice_runtime::ShardStrategy;
use sluice_testkit::{ServedFile, SocrataDataset, TestServer};

fn dataset(rows: usize) -> SocrataDataset {
    SocrataDataset {
        fields: vec![
            ("id".into(), "number".into()),
            ("name".into(), "text".into()),
        ],
        rows: (0..rows)
            .map(|i| vec![i.to_string(), format!("row {i}")])
            .collect(),
        updated_at: (0..rows)
            .map(|i| format!("2026-01-{:02}T00:00:00.000", i % 28 + 1))
            .collect(),
        app_token: None,
        last_modified: "Wed, 04 Sep 2024 17:25:46 GMT".into(),
    }
}

#[tokio::test]
async fn every_item_is_taken_by_exactly_one_task() {
    let server = TestServer::start();
    let urls: Vec<String> = (0..12)
        .map(|i| {
            server.serve(
                &format!("files/f{i:02}.csv"),
                ServedFile::new(format!("n\n{i}\n")),
            )
        })
        .collect();
    let socrata = server.socrata("abcd-1234", dataset(95));
    for strategy in [
        ShardStrategy::RoundRobin,
        ShardStrategy::Contiguous,
        ShardStrategy::Hash,
    ] {
        for count in [1u32, 3, 7] {
            let dir = tempfile::tempdir().unwrap();
            let mut taken: BTreeMap<String, u32> = BTreeMap::new();
            for index in 0..count {
                let mut cfg = config(dir.path());
                cfg.urls = urls.clone();
                cfg.socrata = vec![socrata.clone()];
                cfg.socrata_options.page_size = 10;
                cfg.dataset = Some("d".into());
                cfg.shard_strategy = strategy;
                let outcome = run(cfg, &task(index, count)).await.unwrap();
                assert_eq!(outcome.planned_items, 22);
                // Every task records the whole plan per dataset, not its share (load counts
                // on that to place a missing manifest's items).
                assert_eq!(
                    outcome.manifest.planned_items,
                    Some(BTreeMap::from([("d".to_string(), 22)])),
                    "{strategy} x {count}, task {index}"
                );
                for item in &outcome.manifest.items {
                    *taken.entry(item.key.clone()).or_default() += 1;
                }
            }
            assert_eq!(taken.len(), 22, "{strategy} x {count}: {taken:?}");
            // (Each count writes to its own directory; see the stale-manifest test below.)
            assert!(
                taken.values().all(|&n| n == 1),
                "{strategy} x {count}: {taken:?}"
            );

            // One manifest per task, one object per item, no strays.
            let all = keys(dir.path());
            let manifests: Vec<&String> = all
                .iter()
                .filter(|k| k.starts_with("_manifests/task-"))
                .collect();
            assert_eq!(manifests.len(), count as usize);
            let data: Vec<&String> = all
                .iter()
                .filter(|k| !k.starts_with("_manifests"))
                .collect();
            assert_eq!(data.len(), 22, "{data:?}");
            // The pages hold every row once (in `:updated_at, :id` order; the first two
            // columns are the dataset's, then come the system fields).
            let mut rows = Vec::new();
            for page in 0..10 {
                let text =
                    String::from_utf8(object(dir.path(), &format!("d/abcd-1234-{page:05}.csv")))
                        .unwrap();
                rows.extend(text.lines().skip(1).map(|line| {
                    let fields: Vec<&str> = line.split(',').take(2).collect();
                    fields.join(",").replace('"', "")
                }));
            }
            rows.sort_by_key(|r| r.split(',').next().unwrap().parse::<u32>().unwrap());
            let expected: Vec<String> = (0..95).map(|i| format!("{i},row {i}")).collect();
            assert_eq!(rows, expected);
        }
    }
}

#[tokio::test]
async fn task_zero_removes_manifests_of_tasks_that_no_longer_exist() {
    let server = TestServer::start();
    let urls: Vec<String> = (0..6)
        .map(|i| server.serve(&format!("f{i}.csv"), ServedFile::new(format!("n\n{i}\n"))))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let manifests = |dir: &std::path::Path| -> Vec<String> {
        keys(dir)
            .into_iter()
            .filter(|k| k.starts_with("_manifests/task-"))
            .collect()
    };
    for count in [5u32, 2] {
        for index in 0..count {
            let mut cfg = config(dir.path());
            cfg.urls = urls.clone();
            run(cfg, &task(index, count)).await.unwrap();
        }
    }
    assert_eq!(
        manifests(dir.path()),
        ["_manifests/task-00000.json", "_manifests/task-00001.json"]
    );
}
