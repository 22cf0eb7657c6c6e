//! Issue 13, "unique, stable object names": every source (URL with its query, zip member path)
//! gets objects of its own, read back with a real Parquet reader; keys do not move when the
//! source list changes; a key two sources would share fails the item instead of overwriting;
//! and the end-of-task check catches an object deleted or replaced after its commit, in a
//! local directory and in fake-gcs-server.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::{config, keys, object, run, run_ok, task};
use sluice_extract::internals::{HttpClient, plan};
use sluice_extract::{ExtractConfig, ItemStatus, OutputFormat, TaskHooks, TaskManifest};
use sluice_runtime::CancellationToken;
use sluice_storage::{StoreConfig, WriteOptions};
use sluice_testkit::{ServedFile, TestServer, read_parquet, zip};

/// Every cell of a Parquet object as text, row by row.
fn parquet_rows(data: Vec<u8>) -> Vec<Vec<String>> {
    let (_, batches, _) = read_parquet(data);
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| {
                arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &Default::default())
                    .unwrap()
            })
            .collect();
        for r in 0..batch.num_rows() {
            rows.push(formatters.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    rows
}

fn table(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect()
}

/// Data objects the manifest lists, by the member (or source URL) they came from.
fn objects_by_source(manifest: &TaskManifest) -> BTreeMap<String, String> {
    manifest
        .items
        .iter()
        .flat_map(|i| {
            i.objects.iter().map(move |o| {
                let source = match &o.member {
                    Some(m) => format!("{}!{m}", i.source.url),
                    None => i.source.url.clone(),
                };
                (source, o.name.clone())
            })
        })
        .collect()
}

#[tokio::test]
async fn one_file_with_two_queries_gives_two_objects_with_their_own_rows() {
    let server = TestServer::start();
    let y2023 = server.serve(
        "bom.csv?year=2023",
        ServedFile::new("id,year\n1,2023\n2,2023\n"),
    );
    let y2024 = server.serve(
        "bom.csv?year=2024",
        ServedFile::new("id,year\n3,2024\n4,2024\n"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.format = OutputFormat::Parquet;
    cfg.urls = vec![y2023.clone(), y2024.clone()];
    let outcome = run_ok(cfg).await;

    assert_eq!(outcome.manifest.totals.objects, 2);
    assert_eq!(outcome.manifest.totals.rows, 4);
    let by_source = objects_by_source(&outcome.manifest);
    assert_eq!(by_source.len(), 2, "{by_source:?}");
    assert_ne!(by_source[&y2023], by_source[&y2024]);
    assert!(by_source[&y2023].starts_with("bom/bom-"), "{by_source:?}");
    assert_eq!(
        parquet_rows(object(dir.path(), &by_source[&y2023])),
        table(&[&["1", "2023"], &["2", "2023"]])
    );
    assert_eq!(
        parquet_rows(object(dir.path(), &by_source[&y2024])),
        table(&[&["3", "2024"], &["4", "2024"]])
    );
    let data: Vec<String> = keys(dir.path())
        .into_iter()
        .filter(|k| !k.starts_with("_manifests"))
        .collect();
    assert_eq!(data.len(), 2, "{data:?}");
}

/// A zip member: path, CSV body, the rows a Parquet reader must see.
type Member = (
    &'static str,
    &'static str,
    &'static [&'static [&'static str]],
);

#[tokio::test]
async fn zip_members_that_render_alike_get_objects_of_their_own() {
    let server = TestServer::start();
    let pairs: [(&str, [Member; 2]); 3] = [
        (
            "ext.zip",
            [
                ("x.csv", "id,v\n1,comma\n", &[&["1", "comma"]]),
                (
                    "x.tsv",
                    "id\tv\n2\ttab\n3\ttab\n",
                    &[&["2", "tab"], &["3", "tab"]],
                ),
            ],
        ),
        (
            "dirs.zip",
            [
                ("a/b.csv", "id,v\n4,nested\n", &[&["4", "nested"]]),
                ("a_b.csv", "id,v\n5,flat\n", &[&["5", "flat"]]),
            ],
        ),
        (
            "spaces.zip",
            [
                ("A B.csv", "id,v\n6,space\n", &[&["6", "space"]]),
                ("A_B.csv", "id,v\n7,underscore\n", &[&["7", "underscore"]]),
            ],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.format = OutputFormat::Parquet;
    let mut expected = BTreeMap::new();
    for (archive, members) in &pairs {
        let built = zip(&members
            .iter()
            .map(|(name, body, _)| (*name, body.as_bytes(), true, false))
            .collect::<Vec<_>>());
        let url = server.serve(archive, ServedFile::new(built));
        for (name, _, rows) in members {
            expected.insert(format!("{url}!{name}"), table(rows));
        }
        cfg.urls.push(url);
    }
    let outcome = run_ok(cfg).await;

    let by_source = objects_by_source(&outcome.manifest);
    assert_eq!(
        by_source.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    let distinct: std::collections::BTreeSet<&String> = by_source.values().collect();
    assert_eq!(distinct.len(), 6, "{by_source:?}");
    for (source, rows) in &expected {
        assert_eq!(
            &parquet_rows(object(dir.path(), &by_source[source])),
            rows,
            "{source} -> {}",
            by_source[source]
        );
    }
    assert_eq!(outcome.manifest.totals.rows, 7);
}

async fn names(config: &ExtractConfig) -> BTreeMap<String, String> {
    let client = HttpClient::new(&Default::default(), Default::default()).unwrap();
    plan(config, &client, &StoreConfig::default())
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.display.clone(), i.shard_key()))
        .collect()
}

#[tokio::test]
async fn keys_are_the_same_every_time_and_do_not_move_when_a_source_is_added() {
    let mut cfg = ExtractConfig::new("/tmp/unused");
    cfg.urls = vec![
        "https://h.example/bom.csv?year=2023".into(),
        "https://h.example/2023/data.csv".into(),
        "https://h.example/2024/data.csv".into(),
        "https://h.example/rides.csv.gz".into(),
    ];
    let first = names(&cfg).await;
    assert_eq!(first, names(&cfg).await);
    assert_eq!(first["https://h.example/rides.csv.gz"], "rides/rides");
    let distinct: std::collections::BTreeSet<&String> = first.values().collect();
    assert_eq!(distinct.len(), 4, "{first:?}");

    // An unrelated source, and another query of the same file: nobody else's key moves (a
    // query URL is hashed from the start, not only once a sibling appears).
    let mut more = cfg.clone();
    more.urls.push("https://h.example/other.csv".into());
    more.urls.push("https://h.example/bom.csv?year=2024".into());
    let second = names(&more).await;
    for (source, key) in &first {
        assert_eq!(&second[source], key, "{source}");
    }
    assert_ne!(
        second["https://h.example/bom.csv?year=2024"],
        second["https://h.example/bom.csv?year=2023"]
    );
}

#[tokio::test]
async fn secrets_are_no_part_of_a_key() {
    let with_token = |token: &str| {
        let mut cfg = ExtractConfig::new("/tmp/unused");
        cfg.urls = vec![format!(
            "https://h.example/bom.csv?year=2024&$$app_token={token}"
        )];
        cfg
    };
    let shown = "https://h.example/bom.csv?year=2024&$$app_token=REDACTED";
    let a = names(&with_token("SECRET1")).await;
    let b = names(&with_token("OTHER2")).await;
    // A rotated token is the same source: same key; and the token is in no name.
    assert_eq!(a[shown], b[shown]);
    assert!(a[shown].starts_with("bom/bom-"), "{a:?}");
    assert!(!a[shown].contains("SECRET1"));
    // The hash is of the identity without the token.
    let mut plain = ExtractConfig::new("/tmp/unused");
    plain.urls = vec!["https://h.example/bom.csv?year=2024".into()];
    assert_eq!(
        names(&plain).await["https://h.example/bom.csv?year=2024"],
        a[shown]
    );
}

#[tokio::test]
async fn sources_that_would_share_a_key_are_usage_errors() {
    let client = HttpClient::new(&Default::default(), Default::default()).unwrap();
    let mut cfg = ExtractConfig::new("/tmp/unused");
    cfg.urls = vec!["https://h/a.csv?x=1".into(), "https://h/a.csv?x=1".into()];
    let err = plan(&cfg, &client, &StoreConfig::default())
        .await
        .unwrap_err();
    assert!(err.is_config(), "{err}");
    assert!(err.to_string().contains("listed twice"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.toml");
    std::fs::write(
        &manifest,
        "[[source]]\nname = \"trips\"\nurl = \"https://h/2023.csv\"\n\
         [[source]]\nname = \"trips\"\nurl = \"https://h/2024.csv\"\n",
    )
    .unwrap();
    let mut cfg = ExtractConfig::new("/tmp/unused");
    cfg.manifest = Some(manifest.display().to_string());
    let err = plan(&cfg, &client, &StoreConfig::default())
        .await
        .unwrap_err();
    assert!(err.is_config(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("https://h/2023.csv") && msg.contains("https://h/2024.csv"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_member_that_lands_on_another_items_key_fails_without_overwriting() {
    let server = TestServer::start();
    // Member `a.csv` of `z.zip` and the file `z.a.csv` both render as `z.a`: the plan cannot
    // know (members appear while the archive streams), the task's key claims do.
    let archive = server.serve(
        "z.zip",
        ServedFile::new(zip(&[("a.csv", b"v\nfrom the zip\n", true, false)])),
    );
    let plain = server.serve("z.a.csv", ServedFile::new("v\nfrom the file\n"));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.dataset = Some("d".into());
    cfg.concurrency = 1;
    cfg.urls = vec![archive.clone(), plain.clone()];
    let err = run(cfg, &task(0, 1)).await.unwrap_err().to_string();
    assert!(err.contains("1 of 2 items failed"), "{err}");
    assert!(err.contains("d/z.a-00000.csv"), "{err}");
    assert!(err.contains(&format!("{archive}!a.csv")), "{err}");
    assert!(err.contains(&plain), "{err}");
    // Items run in key order with --concurrency 1: the zip's member came first and is intact.
    assert_eq!(object(dir.path(), "d/z.a-00000.csv"), b"v\nfrom the zip\n");
    let manifest: serde_json::Value =
        serde_json::from_slice(&object(dir.path(), "_manifests/task-00000.json")).unwrap();
    assert_eq!(manifest["complete"], false);
}

/// What the hook does to the first object the manifest will list.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    Delete,
    Replace,
}

/// Runs one Parquet item into `dest`, tampers with its object between the commit and the
/// end-of-task check through the real store, and returns the task's error and manifest.
async fn tampered_run(
    dest: &str,
    store_config: StoreConfig,
    tamper: Tamper,
) -> (String, TaskManifest, String) {
    let server = TestServer::start();
    let url = server.serve("t.csv", ServedFile::new("id,v\n1,a\n2,b\n"));
    let mut cfg = config(Path::new(dest));
    cfg.format = OutputFormat::Parquet;
    cfg.urls = vec![url];
    let hook_config = store_config.clone();
    let hook_dest = dest.to_string();
    let tampered = Arc::new(std::sync::Mutex::new(String::new()));
    let seen = tampered.clone();
    let hooks = TaskHooks {
        before_verify: Some(Arc::new(move |objects| {
            let config = hook_config.clone();
            let dest = hook_dest.clone();
            let seen = seen.clone();
            Box::pin(async move {
                let (store, _) = sluice_storage::open(&dest, &config).await.unwrap();
                let key = objects[0].name.clone();
                match tamper {
                    Tamper::Delete => store.delete(&key).await.unwrap(),
                    Tamper::Replace => {
                        sluice_storage::write_bytes(
                            store.as_ref(),
                            &key,
                            Bytes::from_static(b"not the committed Parquet"),
                            WriteOptions::default(),
                        )
                        .await
                        .unwrap();
                    }
                }
                *seen.lock().unwrap() = store.url_of(&key);
            })
        })),
    };
    let err = sluice_extract::run_with_hooks(
        cfg,
        &task(0, 1),
        store_config.clone(),
        CancellationToken::new(),
        hooks,
    )
    .await
    .unwrap_err()
    .to_string();
    let (store, prefix) = sluice_storage::open(dest, &store_config).await.unwrap();
    let key = sluice_storage::join_key(&prefix, "_manifests/task-00000.json");
    let manifest: TaskManifest = serde_json::from_slice(
        &sluice_storage::read_to_bytes(store.as_ref(), &key, 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    let url = tampered.lock().unwrap().clone();
    (err, manifest, url)
}

fn assert_check_failed(err: &str, manifest: &TaskManifest, url: &str, found: &str) {
    assert!(!url.is_empty());
    assert!(err.contains("1 of 1 item failed"), "{err}");
    assert!(err.contains("end-of-task check"), "{err}");
    assert!(err.contains(url), "{err}");
    assert!(err.contains("the manifest records size"), "{err}");
    assert!(err.contains(found), "{err}");
    assert!(!manifest.complete);
    assert_eq!(manifest.items[0].status, ItemStatus::Failed);
    assert!(manifest.items[0].objects.is_empty());
}

#[tokio::test]
async fn end_of_task_check_catches_a_deleted_or_replaced_object_in_a_local_dir() {
    for (tamper, found) in [
        (Tamper::Delete, "the store has no such object"),
        (Tamper::Replace, "the store has size 25"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().display().to_string();
        let (err, manifest, url) = tampered_run(&dest, StoreConfig::default(), tamper).await;
        assert_check_failed(&err, &manifest, &url, found);
    }
}

#[tokio::test]
async fn end_of_task_check_catches_a_deleted_or_replaced_object_in_gcs() {
    let gcs = sluice_testkit::FakeGcs::start().unwrap();
    gcs.create_bucket("lake").unwrap();
    let store_config = StoreConfig {
        gcs_emulator_host: Some(gcs.endpoint()),
        ..StoreConfig::default()
    };
    for (i, (tamper, found)) in [
        (Tamper::Delete, "the store has no such object"),
        (Tamper::Replace, "the store has size 25, generation"),
    ]
    .into_iter()
    .enumerate()
    {
        let dest = format!("gs://lake/run{i}");
        let (err, manifest, url) = tampered_run(&dest, store_config.clone(), tamper).await;
        assert_check_failed(&err, &manifest, &url, found);
        assert!(url.starts_with("gs://lake/"), "{url}");
    }
}

#[tokio::test]
async fn end_of_task_check_passes_untouched_objects() {
    let server = TestServer::start();
    let url = server.serve("t.csv", ServedFile::new("id,v\n1,a\n2,b\n"));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.format = OutputFormat::Parquet;
    cfg.urls = vec![url];
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let hooks = TaskHooks {
        before_verify: Some(Arc::new(move |objects| {
            counted.fetch_add(objects.len(), std::sync::atomic::Ordering::SeqCst);
            Box::pin(async {})
        })),
    };
    let outcome = sluice_extract::run_with_hooks(
        cfg,
        &task(0, 1),
        StoreConfig::default(),
        CancellationToken::new(),
        hooks,
    )
    .await
    .unwrap();
    assert!(outcome.manifest.complete);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}
