//! The format guard: what extract writes is what load reads, byte for byte.
//!
//! `fixtures/task-00000.json` and `fixtures/receipt.json` are a task manifest and an item
//! receipt a real `sluice extract` run wrote (see `fixtures/README.md` for the command). If a
//! change to the record types alters a single byte of what extract would write for them, or
//! stops them parsing, these tests fail: manifests already in buckets must keep loading.

use sluice_manifest::{
    AnyManifest, ColumnRecord, FORMAT_VERSION, ItemRecord, ItemStatus, ManifestError, ObjectList,
    ObjectRecord, PageRecord, RECEIPT_KIND, Receipt, RejectsRecord, SourceRecord, SourceVersion,
    TASK_MANIFEST_KIND, TaskManifest, Totals, parse_any,
};

const TASK: &[u8] = include_bytes!("fixtures/task-00000.json");
const RECEIPT: &[u8] = include_bytes!("fixtures/receipt.json");
const URL: &str = "gs://bkt/raw/_manifests/task-00000.json";

fn edited(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    edit(&mut value);
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn what_extract_wrote_parses_and_writes_back_byte_for_byte() {
    let manifest = TaskManifest::parse(TASK, URL).unwrap();
    assert_eq!(manifest.kind, TASK_MANIFEST_KIND);
    assert_eq!(manifest.version, FORMAT_VERSION);
    assert!(manifest.complete);
    assert!(!manifest.items.is_empty());
    assert!(manifest.items.iter().all(|i| !i.objects.is_empty()));
    assert_eq!(manifest.totals, Totals::from_items(&manifest.items));
    assert_eq!(
        String::from_utf8(manifest.to_bytes()).unwrap(),
        String::from_utf8(TASK.to_vec()).unwrap()
    );

    let receipt = Receipt::parse(RECEIPT, "gs://bkt/raw/_manifests/items/x.json").unwrap();
    assert_eq!(receipt.kind, RECEIPT_KIND);
    assert_eq!(
        String::from_utf8(receipt.to_bytes()).unwrap(),
        String::from_utf8(RECEIPT.to_vec()).unwrap()
    );
    // The receipt is one of the manifest's items, under its own kind and version.
    assert!(manifest.items.iter().any(|i| i.key == receipt.item.key));
}

/// Every optional part filled in (rejects, columns, Socrata page, source version), written
/// with the types and parsed back.
#[test]
fn round_trip_through_the_types() {
    let object = ObjectRecord {
        name: "raw/city/dt=2026-11-28/permits-000012.parquet".into(),
        url: "gs://bkt/raw/city/dt=2026-11-28/permits-000012.parquet".into(),
        dataset: "city".into(),
        partition: Some("dt=2026-11-28".into()),
        format: "parquet".into(),
        content_type: "application/vnd.apache.parquet".into(),
        size: 52311,
        generation: Some(1_795_848_898_770_723),
        crc32c: Some("1a2b3c4d".into()),
        sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        rows: Some(1000),
        rejected_rows: 2,
        member: Some("permits.csv".into()),
        page: Some(12),
        columns: Some(vec![ColumnRecord {
            name: "id".into(),
            column_type: "INT64".into(),
            values: None,
        }]),
        row_groups: Some(1),
        rejects: Some(RejectsRecord {
            name: "raw/city/dt=2026-11-28/permits-000012.rejects.jsonl".into(),
            url: "gs://bkt/raw/city/dt=2026-11-28/permits-000012.rejects.jsonl".into(),
            size: 310,
            generation: Some(1_795_848_898_770_724),
            crc32c: None,
            sha256: "00".repeat(32),
            rows: 2,
        }),
    };
    let item = ItemRecord {
        key: "city/permits/000012".into(),
        name: "permits".into(),
        dataset: "city".into(),
        source: SourceRecord {
            kind: "socrata".into(),
            url: "https://data.example.org/resource/abcd-1234.csv?$$app_token=REDACTED".into(),
            version: SourceVersion {
                etag: Some("\"abc\"".into()),
                last_modified: None,
                size: Some(1234),
            },
            bytes: 1234,
            page: Some(PageRecord {
                number: 12,
                offset: 12000,
                limit: 1000,
                dataset_rows: 20000,
            }),
            cursor: None,
        },
        status: ItemStatus::Extracted,
        error: None,
        objects: vec![object],
        resumes: 1,
        attempts: 2,
        execution: Some("extract-x7k2p".into()),
        finished_at: "2026-11-28T06:03:11+00:00".into(),
    };
    let manifest = TaskManifest {
        kind: TASK_MANIFEST_KIND.into(),
        version: FORMAT_VERSION,
        job: Some("extract".into()),
        execution: Some("extract-x7k2p".into()),
        task_index: 3,
        task_count: 7,
        attempt: 1,
        dest: "gs://bkt/raw".into(),
        partition: Some("dt=2026-11-28".into()),
        started_at: "2026-11-28T06:00:00+00:00".into(),
        finished_at: "2026-11-28T06:03:12+00:00".into(),
        complete: true,
        planned_items: None,
        totals: Totals::from_items(std::slice::from_ref(&item)),
        items: vec![item.clone()],
    };
    let bytes = manifest.to_bytes();
    assert_eq!(TaskManifest::parse(&bytes, URL).unwrap(), manifest);
    assert_eq!(
        parse_any(&bytes, URL).unwrap(),
        AnyManifest::Task(Box::new(manifest))
    );
    let receipt = Receipt::new(item);
    assert_eq!(
        Receipt::parse(&receipt.to_bytes(), "gs://bkt/r.json").unwrap(),
        receipt
    );
}

#[test]
fn another_kind_or_version_is_refused_by_name() {
    let err = TaskManifest::parse(&edited(TASK, |v| v["version"] = 2.into()), URL).unwrap_err();
    assert!(
        matches!(err, ManifestError::UnsupportedVersion { .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("manifest {URL}: version 2 is not supported (this sluice reads version 1)")
    );
    let err = TaskManifest::parse(&edited(TASK, |v| v["version"] = "1".into()), URL).unwrap_err();
    assert!(
        err.to_string().contains("version \"1\" is not supported"),
        "{err}"
    );

    let err = TaskManifest::parse(
        &edited(TASK, |v| {
            v["kind"] = "sluice.extract.task-manifest-v2".into()
        }),
        URL,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "manifest {URL}: unknown kind \"sluice.extract.task-manifest-v2\" \
             (this sluice reads \"sluice.extract.task-manifest\")"
        )
    );
    // A receipt is not a task manifest, and the other way round.
    let err = TaskManifest::parse(RECEIPT, URL).unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown kind \"sluice.extract.item-receipt\""),
        "{err}"
    );
    let err = Receipt::parse(TASK, URL).unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown kind \"sluice.extract.task-manifest\""),
        "{err}"
    );

    let err = TaskManifest::parse(
        &edited(TASK, |v| {
            v.as_object_mut().unwrap().remove("version");
        }),
        URL,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("manifest {URL}: field `version`: missing")
    );
    // Without a kind it is not a task manifest; parse_any takes it for an object list.
    let err = TaskManifest::parse(
        &edited(TASK, |v| {
            v.as_object_mut().unwrap().remove("kind");
        }),
        URL,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("manifest {URL}: field `kind`: missing")
    );
}

#[test]
fn shape_errors_name_the_manifest_and_the_field() {
    let err = TaskManifest::parse(
        &edited(TASK, |v| {
            v.as_object_mut().unwrap().remove("dest");
        }),
        URL,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("manifest {URL}: not a valid task manifest")),
        "{text}"
    );
    assert!(text.contains("missing field `dest`"), "{text}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "serde's error is kept as the source"
    );

    let err = TaskManifest::parse(&edited(TASK, |v| v["task_index"] = 9.into()), URL).unwrap_err();
    assert!(
        err.to_string()
            .contains("field `task_index`: 9 is not below task_count"),
        "{err}"
    );
    let err = TaskManifest::parse(
        &edited(TASK, |v| v["items"][0]["objects"][0]["url"] = "".into()),
        URL,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("field `items[0].objects[0].url`: empty"),
        "{err}"
    );
    let err = TaskManifest::parse(b"[1, 2]", URL).unwrap_err();
    assert!(err.to_string().contains("not a JSON object"), "{err}");
    let err = parse_any(b"{not json", URL).unwrap_err();
    assert!(matches!(err, ManifestError::Json { .. }), "{err}");
}

#[test]
fn plain_object_lists_take_other_writers_spellings() {
    let list = br#"{"objects":[
        {"url":"gs://bkt/raw/city/a.parquet","generation":"17","size":10,"dataset":"city"},
        {"key":"city/b.parquet","generation":18,"bytes":"20"},
        {"uri":"gs://bkt/raw/c.parquet"}],
       "dataset":"fallback"}"#;
    let AnyManifest::Objects(ObjectList { objects }) = parse_any(list, URL).unwrap() else {
        panic!("not an object list");
    };
    assert_eq!(objects.len(), 3);
    assert_eq!(objects[0].generation, Some(17));
    assert_eq!(objects[0].size, Some(10));
    assert_eq!(objects[0].dataset.as_deref(), Some("city"));
    assert_eq!(objects[1].url, "city/b.parquet");
    assert_eq!(objects[1].size, Some(20));
    assert_eq!(objects[1].dataset.as_deref(), Some("fallback"));
    assert_eq!(objects[2].url, "gs://bkt/raw/c.parquet");
    assert_eq!(objects[2].generation, None);

    let err = ObjectList::parse(br#"{"objects":[{"size":1},{}]}"#, URL).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("manifest {URL}: field `objects[0]`: has neither `url` nor `key`")
    );
    let err = ObjectList::parse(
        br#"{"objects":[{"url":"a"},{"url":"b","generation":"x"}]}"#,
        URL,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("manifest {URL}: field `objects[1].generation`: \"x\" is not an integer")
    );
    let err = ObjectList::parse(br#"{"objects":[{"url":"a","size":-1}]}"#, URL).unwrap_err();
    assert!(
        err.to_string().contains("`objects[0].size`: negative"),
        "{err}"
    );
    let err = parse_any(b"[]", URL).unwrap_err();
    assert!(err.to_string().contains("not a JSON object"), "{err}");
}
