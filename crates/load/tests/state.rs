//! The incremental state (`{dest}/_state/{dataset}.json`, `docs/state.md`) on fake-gcs-server
//! and bqemulator: load advances it only after the table's load succeeded, never backwards,
//! a rerun changes nothing, and loads racing on it all end in the max.

mod support;

use sluice_load::{Input, WriteMode};
use sluice_manifest::{
    CursorRecord, ItemStatus, SourceVersion, StateFile, TaskManifest, compare_marks,
};
use sluice_testkit::BigQueryEmulator;
use support::{BUCKET, Gcs, bq_count, config, simple_parquet, task};

const PROJECT: &str = "test-project";
const STATE: &str = "raw/_state/city.json";

fn emulator(gcs: &Gcs) -> BigQueryEmulator {
    let bq = BigQueryEmulator::start(PROJECT, &gcs.server.root()).expect("bqemulator");
    let (status, body) = bq
        .rest(
            "POST",
            &format!("/bigquery/v2/projects/{PROJECT}/datasets"),
            Some(&serde_json::json!({"datasetReference": {"projectId": PROJECT, "datasetId": "raw"}})),
        )
        .expect("create dataset");
    assert_eq!(status, 200, "{body}");
    bq
}

/// One source of the manifest: its name, its cursor window and its objects (keys, rows).
struct Src<'a> {
    name: &'a str,
    column: Option<&'a str>,
    to: Option<&'a str>,
    etag: Option<&'a str>,
    status: ItemStatus,
    objects: Vec<(String, i64)>,
}

/// Writes the objects and one task manifest (the shared types, from a real extract's
/// manifest) under `{run}/_manifests/`, with `dest` = `gs://lake/raw`, dataset `city`.
async fn extract_run(gcs: &Gcs, run: &str, execution: &str, sources: Vec<Src<'_>>) -> Input {
    let mut manifest = TaskManifest::parse(
        include_bytes!("../../manifest/tests/fixtures/task-00000.json"),
        "fixture",
    )
    .unwrap();
    let item_template = manifest.items[0].clone();
    let object_template = item_template.objects[0].clone();
    manifest.items.clear();
    let mut first_id = 0;
    for src in sources {
        let mut item = item_template.clone();
        item.key = format!("city/{}", src.name);
        item.name = src.name.into();
        item.dataset = "city".into();
        item.status = src.status;
        item.execution = Some(execution.into());
        item.source.version = SourceVersion {
            etag: src.etag.map(str::to_string),
            ..SourceVersion::default()
        };
        item.source.cursor = Some(CursorRecord {
            state_key: format!("city/{}", src.name),
            column: src.column.map(str::to_string),
            from: None,
            to: src.to.map(str::to_string),
            read_rows: None,
            filtered_rows: None,
        });
        item.objects.clear();
        for (key, rows) in src.objects {
            let generation = gcs.put(&key, simple_parquet(first_id, rows as usize)).await;
            first_id += rows;
            item.objects.push(sluice_manifest::ObjectRecord {
                name: key.clone(),
                url: format!("gs://{BUCKET}/{key}"),
                dataset: "city".into(),
                generation: Some(generation),
                rows: Some(rows as u64),
                ..object_template.clone()
            });
        }
        manifest.items.push(item);
    }
    manifest.complete = manifest
        .items
        .iter()
        .all(|i| i.status != ItemStatus::Failed);
    manifest.execution = Some(execution.into());
    manifest.task_index = 0;
    manifest.task_count = 1;
    manifest.dest = format!("gs://{BUCKET}/raw");
    manifest.planned_items = None;
    gcs.put(
        &format!("{run}/_manifests/task-00000.json"),
        manifest.to_bytes().into(),
    )
    .await;
    Input::Manifests(format!("gs://{BUCKET}/{run}/_manifests/"))
}

async fn state(gcs: &Gcs) -> Option<(StateFile, i64)> {
    let (store, _) = sluice_storage::open(&format!("gs://{BUCKET}"), &gcs.store)
        .await
        .unwrap();
    let meta = store.head(STATE).await.unwrap()?;
    let bytes = sluice_storage::read_to_bytes(store.as_ref(), STATE, 1 << 20)
        .await
        .unwrap();
    let url = store.url_of(STATE);
    Some((
        StateFile::parse(&bytes, &url).unwrap(),
        meta.generation.unwrap(),
    ))
}

fn permits<'a>(to: &'a str, key: &str) -> Src<'a> {
    Src {
        name: "permits",
        column: Some("_socrata_updated_at"),
        to: Some(to),
        etag: None,
        status: ItemStatus::Extracted,
        objects: vec![(key.to_string(), 3)],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_advances_after_a_successful_load_and_never_backwards() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    let table = format!("{PROJECT}.raw.{{dataset}}");
    let load = |input: Input| {
        // Truncate: bqemulator does not answer 409 on a reused job id, so an append rerun
        // would load twice there (fake_bigquery.rs covers that); the state is what is tested.
        let mut c = config(input, &table, &gcs, &emu.endpoint());
        c.write = WriteMode::Truncate;
        async move {
            let mut task = task(0, 1);
            task.execution = Some("load-1".into());
            sluice_load::run(&c, &task, &Default::default()).await
        }
    };

    let day1 = extract_run(
        &gcs,
        "day1",
        "extract-1",
        vec![
            permits("2026-11-30T12:00:00.000", "raw/city/permits-1.parquet"),
            Src {
                name: "zones",
                column: None,
                to: None,
                etag: Some("\"v1\""),
                status: ItemStatus::Extracted,
                objects: vec![("raw/city/zones-1.parquet".into(), 2)],
            },
        ],
    )
    .await;
    assert!(state(&gcs).await.is_none());
    load(day1.clone()).await.expect("day 1 loads");
    assert_eq!(bq_count(&emu.endpoint(), PROJECT, "raw.city"), 5);
    let (after_day1, generation) = state(&gcs).await.expect("state written after the load");
    let p = &after_day1.sources["city/permits"];
    assert_eq!(p.mark.as_deref(), Some("2026-11-30T12:00:00.000"));
    assert_eq!(p.column.as_deref(), Some("_socrata_updated_at"));
    assert_eq!(p.extracted_by.as_deref(), Some("extract-1"));
    assert_eq!(p.advanced_by.as_deref(), Some("load-1"));
    let z = &after_day1.sources["city/zones"];
    assert_eq!(z.mark, None);
    assert_eq!(
        z.source_version.as_ref().and_then(|v| v.etag.as_deref()),
        Some("\"v1\"")
    );

    // A rerun (a retried task) loads nothing new and leaves the file as it is.
    load(day1).await.expect("rerun");
    assert_eq!(bq_count(&emu.endpoint(), PROJECT, "raw.city"), 5);
    assert_eq!(
        state(&gcs).await.unwrap().1,
        generation,
        "rerun rewrote the state"
    );

    // Older data (an old execution loaded late) never moves the mark back.
    let old = extract_run(
        &gcs,
        "old",
        "extract-0",
        vec![permits(
            "2026-11-01T00:00:00.000",
            "raw/city/permits-0.parquet",
        )],
    )
    .await;
    load(old).await.expect("old loads");
    let (after_old, _) = state(&gcs).await.unwrap();
    assert_eq!(
        after_old.sources["city/permits"].mark.as_deref(),
        Some("2026-11-30T12:00:00.000")
    );

    // Day 2 moves it forward; the file's new version replaces the old one.
    let day2 = extract_run(
        &gcs,
        "day2",
        "extract-2",
        vec![
            permits("2026-12-01T12:00:00.000", "raw/city/permits-2.parquet"),
            Src {
                name: "zones",
                column: None,
                to: None,
                etag: Some("\"v2\""),
                status: ItemStatus::Extracted,
                objects: vec![("raw/city/zones-2.parquet".into(), 1)],
            },
        ],
    )
    .await;
    load(day2).await.expect("day 2 loads");
    let (after_day2, _) = state(&gcs).await.unwrap();
    assert_eq!(
        after_day2.sources["city/permits"].mark.as_deref(),
        Some("2026-12-01T12:00:00.000")
    );
    assert_eq!(
        after_day2.sources["city/permits"].extracted_by.as_deref(),
        Some("extract-2")
    );
    assert_eq!(
        after_day2.sources["city/zones"]
            .source_version
            .as_ref()
            .and_then(|v| v.etag.as_deref()),
        Some("\"v2\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_is_not_written_when_the_load_fails_or_is_not_asked_for() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    let table = format!("{PROJECT}.raw.{{dataset}}");
    let input = extract_run(
        &gcs,
        "day1",
        "extract-1",
        vec![permits(
            "2026-11-30T12:00:00.000",
            "raw/city/permits-1.parquet",
        )],
    )
    .await;

    // --no-state: the load happens, the state does not move.
    let mut c = config(input.clone(), &table, &gcs, &emu.endpoint());
    c.no_state = true;
    sluice_load::run(&c, &task(0, 1), &Default::default())
        .await
        .expect("load without state");
    assert_eq!(bq_count(&emu.endpoint(), PROJECT, "raw.city"), 3);
    assert!(state(&gcs).await.is_none(), "--no-state wrote the state");

    // A failed load job (WRITE_EMPTY into a table with rows): no state.
    let mut c = config(input, &table, &gcs, &emu.endpoint());
    c.write = WriteMode::Empty;
    sluice_load::run(&c, &task(0, 1), &Default::default())
        .await
        .expect_err("WRITE_EMPTY into a table with rows fails");
    assert!(state(&gcs).await.is_none(), "a failed load wrote the state");

    // A source with a failed item never advances (here the whole manifest is refused).
    let failed = extract_run(
        &gcs,
        "day2",
        "extract-2",
        vec![
            permits("2026-12-01T12:00:00.000", "raw/city/permits-2.parquet"),
            Src {
                status: ItemStatus::Failed,
                objects: vec![],
                ..permits("2026-12-01T12:00:00.000", "")
            },
        ],
    )
    .await;
    let c = config(failed, &table, &gcs, &emu.endpoint());
    let _ = sluice_load::run(&c, &task(0, 1), &Default::default()).await;
    assert!(
        state(&gcs).await.is_none(),
        "a failed item advanced the state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_racing_on_the_state_file_end_in_the_max() {
    let gcs = Gcs::start();
    let emu = emulator(&gcs);
    // Three executions' manifests, each advancing both sources to a different mark; they
    // load into three tables (so BigQuery does not serialise them) and race on one file.
    let marks = [
        "2026-11-28T00:00:00.000",
        "2026-11-30T00:00:00.000",
        "2026-11-29T00:00:00.000",
    ];
    let mut inputs = Vec::new();
    for (i, mark) in marks.iter().enumerate() {
        let sources = ["permits", "inspections"]
            .into_iter()
            .map(|name| Src {
                name,
                column: Some("_socrata_updated_at"),
                to: Some(mark),
                etag: None,
                status: ItemStatus::Extracted,
                objects: vec![(format!("raw/city/{name}-{i}.parquet"), 1)],
            })
            .collect();
        inputs.push(extract_run(&gcs, &format!("run{i}"), &format!("extract-{i}"), sources).await);
    }
    let runs = inputs.into_iter().enumerate().map(|(i, input)| {
        let c = config(
            input,
            &format!("{PROJECT}.raw.city_{i}"),
            &gcs,
            &emu.endpoint(),
        );
        async move { sluice_load::run(&c, &task(0, 1), &Default::default()).await }
    });
    for result in futures::future::join_all(runs).await {
        result.expect("every load succeeds");
    }
    let (state, _) = state(&gcs).await.unwrap();
    let max = marks
        .iter()
        .copied()
        .max_by(|a, b| compare_marks(a, b))
        .unwrap();
    for key in ["city/permits", "city/inspections"] {
        assert_eq!(
            state.sources[key].mark.as_deref(),
            Some(max),
            "{key}: {state:?}"
        );
    }
}
