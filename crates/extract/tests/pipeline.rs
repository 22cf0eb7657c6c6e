//! Decode and convert end to end against a real HTTP server and a local-directory store:
//! passthrough, gzip, zip members, CSV -> Parquet read back, bad rows, manifests.

mod common;

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use bytes::Bytes;
use common::{config, keys, object, run, run_ok, task, typed_csv};
use sluice_extract::{BadRows, ExtractError, ItemStatus, OutputFormat, PartitionSpec};
use sluice_testkit::{ServedFile, TestServer, gzip, read_parquet, zip};

#[tokio::test]
async fn passthrough_is_byte_identical_and_named_deterministically() {
    let server = TestServer::start();
    let body = typed_csv(500);
    let url = server.serve("data/rides.csv", ServedFile::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    cfg.dataset = Some("city".into());
    cfg.partition = Some("dt=2026-11-28".parse::<PartitionSpec>().unwrap());
    let outcome = run_ok(cfg).await;

    let key = "city/dt=2026-11-28/rides-00000.csv";
    assert_eq!(object(dir.path(), key), body.as_bytes());
    let item = &outcome.manifest.items[0];
    assert_eq!(item.status, ItemStatus::Extracted);
    let o = &item.objects[0];
    assert_eq!(o.name, key);
    assert_eq!(o.size, body.len() as u64);
    assert_eq!(o.format, "passthrough");
    assert_eq!(o.rows, None);
    assert_eq!(o.partition.as_deref(), Some("dt=2026-11-28"));
    use sha2::Digest;
    assert_eq!(o.sha256, hex::encode(sha2::Sha256::digest(body.as_bytes())));
    assert_eq!(
        o.crc32c,
        Some(format!("{:08x}", crc32c::crc32c(body.as_bytes())))
    );
    assert!(item.source.version.etag.is_some());
    assert_eq!(item.source.bytes, body.len() as u64);

    // The task manifest and the task journal are where `load` and retries look; no receipt
    // per item (that is only for `--skip-existing`).
    let manifest: serde_json::Value =
        serde_json::from_slice(&object(dir.path(), "_manifests/task-00000.json")).unwrap();
    assert_eq!(manifest["kind"], "sluice.extract.task-manifest");
    assert_eq!(manifest["complete"], true);
    assert_eq!(manifest["task_count"], 1);
    assert_eq!(manifest["items"][0]["objects"][0]["name"], key);
    assert_eq!(manifest["totals"]["objects"], 1);
    let part: serde_json::Value = serde_json::from_slice(&object(
        dir.path(),
        "_manifests/executions/extract-test-exec1/task-00000/a000-00000.json",
    ))
    .unwrap();
    assert_eq!(part["kind"], "sluice.extract.journal-part");
    assert_eq!(part["items"][0]["execution"], "extract-test-exec1");
    assert_eq!(part["items"][0]["objects"][0]["sha256"], o.sha256);
    assert!(!dir.path().join("_manifests/items").exists());
}

#[tokio::test]
async fn gzip_by_magic_and_extension_and_zip_members_are_decoded() {
    let server = TestServer::start();
    let a = typed_csv(300);
    let b = "x,y\n1,2\n3,4\n".to_string();
    let c = typed_csv(50);
    let gz = server.serve("in/a.csv.gz", ServedFile::new(gzip(a.as_bytes())));
    // No extension: the magic bytes decide.
    let gz_noext = server.serve("in/blob", ServedFile::new(gzip(b.as_bytes())));
    let archive = zip(&[
        ("docs/", b"", false, false),
        ("first.csv", b.as_bytes(), false, false),
        ("nested/second.csv", a.as_bytes(), true, false),
        // Written by a streaming writer: sizes after the data.
        ("third.csv", c.as_bytes(), true, true),
        ("README.txt", b"ignore me", true, false),
    ]);
    let zipped = server.serve("in/bundle.zip", ServedFile::new(archive));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    let manifest = dir.path().join("sources.json");
    std::fs::write(
        &manifest,
        serde_json::json!([
            gz,
            {"name": "b", "url": gz_noext},
            {"url": zipped, "options": {"members": ["*.csv"]}},
        ])
        .to_string(),
    )
    .unwrap();
    cfg.manifest = Some(manifest.display().to_string());
    let dest = dir.path().join("out");
    cfg.dest = dest.display().to_string();
    let outcome = run_ok(cfg).await;

    assert_eq!(object(&dest, "a/a-00000.csv"), a.as_bytes());
    assert_eq!(object(&dest, "b/b-00000.bin"), b.as_bytes());
    assert_eq!(object(&dest, "bundle/bundle.first-00000.csv"), b.as_bytes());
    // A member in a directory: `/` is not kept, so the name carries the path's hash.
    let nested = format!(
        "bundle/bundle.nested_second-{}-00000.csv",
        sluice_extract::internals::identity_hash("nested/second.csv")
    );
    assert_eq!(object(&dest, &nested), a.as_bytes());
    assert_eq!(object(&dest, "bundle/bundle.third-00000.csv"), c.as_bytes());
    let data_keys: Vec<String> = keys(&dest)
        .into_iter()
        .filter(|k| !k.starts_with("_manifests"))
        .collect();
    assert_eq!(data_keys.len(), 5, "{data_keys:?}");
    let zip_item = outcome
        .manifest
        .items
        .iter()
        .find(|i| i.name == "bundle")
        .unwrap();
    let members: Vec<Option<&str>> = zip_item
        .objects
        .iter()
        .map(|o| o.member.as_deref())
        .collect();
    assert_eq!(
        members,
        [
            Some("first.csv"),
            Some("nested/second.csv"),
            Some("third.csv")
        ]
    );
}

#[tokio::test]
async fn keep_compressed_copies_bytes_as_served() {
    let server = TestServer::start();
    let gz = gzip(typed_csv(10).as_bytes());
    let url = server.serve("a.csv.gz", ServedFile::new(gz.clone()));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    cfg.decompress = false;
    run_ok(cfg).await;
    assert_eq!(object(dir.path(), "a/a-00000.csv.gz"), gz);
}

#[tokio::test]
async fn csv_to_parquet_reads_back_with_types_nulls_and_rows() {
    let server = TestServer::start();
    let rows = 20_000;
    let url = server.serve(
        "typed.csv.gz",
        ServedFile::new(gzip(typed_csv(rows).as_bytes())),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    cfg.format = OutputFormat::Parquet;
    cfg.csv.batch_rows = 3000;
    cfg.parquet.row_group_rows = 7000;
    let outcome = run_ok(cfg).await;

    let o = &outcome.manifest.items[0].objects[0];
    assert_eq!(o.name, "typed/typed-00000.parquet");
    assert_eq!(o.rows, Some(rows as u64));
    assert_eq!(o.row_groups, Some(3));
    let columns: Vec<(String, String)> = o
        .columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| (c.name.clone(), c.column_type.clone()))
        .collect();
    assert_eq!(
        columns,
        [
            ("id".into(), "INT64".into()),
            ("price".into(), "FLOAT64".into()),
            ("ok".into(), "BOOL".into()),
            ("day".into(), "DATE".into()),
            ("at".into(), "TIMESTAMP".into()),
            ("name".into(), "STRING".into()),
        ]
    );

    let data = Bytes::from(object(dir.path(), &o.name));
    let (schema, batches, metadata) = read_parquet(data);
    assert_eq!(schema.field(0).data_type(), &DataType::Int64);
    assert_eq!(
        schema.field(4).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(metadata.num_row_groups(), 3);
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(total, rows);
    let price_nulls: usize = batches.iter().map(|b| b.column(1).null_count()).sum();
    assert_eq!(price_nulls, rows / 10);
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(ids, (0..rows as i64).collect::<Vec<_>>());
    let first = &batches[0];
    assert_eq!(first.column(1).as_primitive::<Float64Type>().value(1), 1.25);
    assert_eq!(first.column(5).as_string::<i32>().value(3), "two\nlines 3");
    assert_eq!(first.column(5).as_string::<i32>().value(2), "quote \"2\"");
    let ts = first.column(4).as_primitive::<TimestampMicrosecondType>();
    // Row 1: 2024-01-02T01:30:00Z.
    assert_eq!(ts.value(1), 1_704_159_000_000_000);
    // The footer says where the data came from.
    let kv = metadata.file_metadata().key_value_metadata().unwrap();
    assert!(
        kv.iter().any(|k| k.key == "sluice.source"
            && k.value.as_deref() == Some(&server.url("typed.csv.gz")[..])),
        "{kv:?}"
    );
}

#[tokio::test]
async fn a_bad_value_fails_with_source_line_column_and_value() {
    let server = TestServer::start();
    let mut csv = typed_csv(100);
    // After the inference sample: the last record gets an id that is not an integer. Its line
    // counts the newlines inside earlier quoted names.
    csv.push_str("oops,1.5,true,2024-01-01,2024-01-01T00:00:00Z,last\n");
    let url = server.serve("bad.csv", ServedFile::new(csv.clone()));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url.clone()];
    cfg.format = OutputFormat::Parquet;
    cfg.csv.infer_rows = 50;
    let err = run(cfg, &task(0, 1)).await.unwrap_err();
    let text = err.to_string();
    let line = csv.lines().count();
    let offset = csv.rfind("oops").unwrap();
    assert!(text.contains(&url), "{text}");
    assert!(
        text.contains(&format!(
            "line {line} (byte offset {offset}), column 1 (id)"
        )),
        "{text}"
    );
    assert!(text.contains("\"oops\""), "{text}");
    assert!(text.contains("INT64"), "{text}");
    // Nothing was committed for the failed item, but the manifest says what happened.
    assert!(!dir.path().join("bad/bad-00000.parquet").exists());
    let manifest: serde_json::Value =
        serde_json::from_slice(&object(dir.path(), "_manifests/task-00000.json")).unwrap();
    assert_eq!(manifest["complete"], false);
    assert_eq!(manifest["items"][0]["status"], "failed");
    assert!(matches!(err, ExtractError::ItemsFailed { failed: 1, .. }));
}

#[tokio::test]
async fn quarantine_writes_rejects_next_to_the_output_and_counts_them() {
    let server = TestServer::start();
    let csv =
        "id,amount,when\n1,10,2024-01-01\n2,x,2024-01-02\n3,30\n4,40,2024-13-45\n5,50,2024-01-05\n";
    let url = server.serve("q.csv", ServedFile::new(csv));
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    std::fs::write(
        &schema,
        r#"[{"name": "amount", "type": "INTEGER"}, {"name": "when", "type": "DATE"}]"#,
    )
    .unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url.clone()];
    cfg.format = OutputFormat::Parquet;
    cfg.bad_rows = BadRows::Quarantine;
    cfg.csv.schema_file = Some(schema.display().to_string());
    let outcome = run_ok(cfg).await;

    let o = &outcome.manifest.items[0].objects[0];
    assert_eq!(o.rows, Some(2));
    assert_eq!(o.rejected_rows, 3);
    let rejects = o.rejects.as_ref().unwrap();
    assert_eq!(rejects.name, "q/q-00000.rejects.jsonl");
    assert_eq!(rejects.rows, 3);
    let lines: Vec<serde_json::Value> = String::from_utf8(object(dir.path(), &rejects.name))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["line"], 3);
    assert_eq!(lines[0]["source"], url);
    assert_eq!(lines[0]["errors"][0]["column"], "amount");
    assert_eq!(lines[0]["errors"][0]["value"], "x");
    assert_eq!(lines[0]["errors"][0]["expected"], "INT64");
    assert_eq!(
        lines[0]["fields"],
        serde_json::json!(["2", "x", "2024-01-02"])
    );
    assert_eq!(lines[1]["line"], 4);
    assert!(
        lines[1]["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("expected 3 fields, found 2")
    );
    assert_eq!(lines[2]["errors"][0]["column"], "when");
    let (_, batches, _) = read_parquet(Bytes::from(object(dir.path(), &o.name)));
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(ids, [1, 5]);
    assert_eq!(outcome.manifest.totals.rejected_rows, 3);

    // Over the limit, the item fails.
    let dir2 = tempfile::tempdir().unwrap();
    let mut cfg = config(dir2.path());
    cfg.urls = vec![url];
    cfg.format = OutputFormat::Parquet;
    cfg.bad_rows = BadRows::Quarantine;
    cfg.max_bad_rows = Some(1);
    cfg.csv.schema_file = Some(schema.display().to_string());
    let err = run(cfg, &task(0, 1)).await.unwrap_err();
    assert!(
        err.to_string().contains("more than --max-bad-rows 1"),
        "{err}"
    );
}

#[tokio::test]
async fn empty_and_header_only_inputs() {
    let server = TestServer::start();
    let empty = server.serve("empty.csv", ServedFile::new(Bytes::new()));
    let header = server.serve("header.csv", ServedFile::new("a,b\n"));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![empty, header];
    cfg.format = OutputFormat::Parquet;
    let outcome = run_ok(cfg).await;
    let by_name = |n: &str| {
        outcome
            .manifest
            .items
            .iter()
            .find(|i| i.name == n)
            .unwrap()
            .clone()
    };
    assert!(by_name("empty").objects.is_empty());
    let h = by_name("header");
    assert_eq!(h.objects[0].rows, Some(0));
    let (schema, _, _) = read_parquet(Bytes::from(object(
        dir.path(),
        "header/header-00000.parquet",
    )));
    assert_eq!(schema.fields().len(), 2);
}

#[tokio::test]
async fn parquet_from_a_non_csv_member_is_refused_clearly() {
    let server = TestServer::start();
    let url = server.serve("x.json", ServedFile::new("{\"a\": 1}"));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.urls = vec![url];
    cfg.format = OutputFormat::Parquet;
    let err = run(cfg, &task(0, 1)).await.unwrap_err();
    assert!(err.to_string().contains("does not look like CSV"), "{err}");
}

#[tokio::test]
async fn local_files_and_file_urls() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.tsv");
    std::fs::write(&input, "a\tb\n1\tx\n2\ty\n").unwrap();
    let dest = dir.path().join("out");
    let mut cfg = config(&dest);
    cfg.urls = vec![format!("file://{}", input.display())];
    cfg.format = OutputFormat::Parquet;
    let outcome = run_ok(cfg).await;
    let o = &outcome.manifest.items[0].objects[0];
    assert_eq!(o.rows, Some(2));
    assert_eq!(outcome.manifest.items[0].source.kind, "file");
    let (schema, _, _) = read_parquet(Bytes::from(object(&dest, &o.name)));
    assert_eq!(schema.field(1).name(), "b");
    let _ = Arc::new(());
}
