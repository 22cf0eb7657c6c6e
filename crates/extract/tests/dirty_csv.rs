//! Dirty CSV end to end (issue 13): broken quoting, leading zeros, invalid UTF-8 in the
//! inference sample, CR-only lines and a BOM, served by a real HTTP server, converted to
//! Parquet in a local directory and read back with the parquet crate.

mod common;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use bytes::Bytes;
use common::{config, object, run, run_ok, task};
use sluice_extract::{BadRows, ExtractError, OutputFormat};
use sluice_testkit::{ServedFile, TestServer, read_parquet};

const UNTERMINATED: &str = "id,comment\n1,ok\n2,\"unterminated\n3,lost row\n4,another lost row\n";

fn parquet_config(
    dest: &std::path::Path,
    url: String,
    bad_rows: BadRows,
) -> sluice_extract::ExtractConfig {
    let mut cfg = config(dest);
    cfg.urls = vec![url];
    cfg.format = OutputFormat::Parquet;
    cfg.bad_rows = bad_rows;
    cfg
}

fn rejects(dest: &std::path::Path, key: &str) -> Vec<serde_json::Value> {
    String::from_utf8(object(dest, key))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Column `col` of every batch, as text.
fn strings(batches: &[arrow::array::RecordBatch], col: usize) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b.column(col).as_string::<i32>();
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn an_unterminated_quote_fails_the_item_naming_where_the_record_starts() {
    let server = TestServer::start();
    let url = server.serve("open.csv", ServedFile::new(UNTERMINATED));
    // Quarantine too: the quote swallowed lines 4-5, most likely rows; one reject would hide
    // them, so the item fails either way and writes nothing.
    for bad_rows in [BadRows::Fail, BadRows::Quarantine] {
        let dir = tempfile::tempdir().unwrap();
        let err = run(
            parquet_config(dir.path(), url.clone(), bad_rows),
            &task(0, 1),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, ExtractError::ItemsFailed { failed: 1, .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("{url}: line 3 (byte offset 16): the quote opened in column 2 (comment) is never closed")),
            "{text}"
        );
        assert!(text.contains("swallowing lines 4-5"), "{text}");
        assert!(!dir.path().join("open/open-00000.parquet").exists());
        assert!(!dir.path().join("open/open-00000.rejects.jsonl").exists());
        let manifest: serde_json::Value =
            serde_json::from_slice(&object(dir.path(), "_manifests/task-00000.json")).unwrap();
        assert_eq!(manifest["complete"], false);
    }
}

#[tokio::test]
async fn a_quote_left_open_on_the_last_line_is_one_quarantined_row() {
    let server = TestServer::start();
    let csv = "id,comment\n1,ok\n2,\"open\n";
    let url = server.serve("last.csv", ServedFile::new(csv));
    let dir = tempfile::tempdir().unwrap();
    let outcome = run_ok(parquet_config(dir.path(), url.clone(), BadRows::Quarantine)).await;
    let o = &outcome.manifest.items[0].objects[0];
    assert_eq!((o.rows, o.rejected_rows), (Some(1), 1));
    let lines = rejects(dir.path(), "last/last-00000.rejects.jsonl");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["line"], 3);
    assert_eq!(lines[0]["offset"], 16);
    assert_eq!(lines[0]["fields"], serde_json::json!(["2", "open\n"]));
    assert!(
        lines[0]["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("never closed before the end of input"),
        "{}",
        lines[0]
    );
    let (_, batches, _) = read_parquet(Bytes::from(object(dir.path(), &o.name)));
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(ids, [1]);

    // With --bad-rows fail the same file fails, naming line 3.
    let dir = tempfile::tempdir().unwrap();
    let err = run(
        parquet_config(dir.path(), url.clone(), BadRows::Fail),
        &task(0, 1),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 3 (byte offset 16)"), "{err}");
}

#[tokio::test]
async fn leading_zeros_survive_as_text() {
    let server = TestServer::start();
    let url = server.serve("codes.csv", ServedFile::new("zip,fips,n\n02134,01001,7\n"));
    let dir = tempfile::tempdir().unwrap();
    let outcome = run_ok(parquet_config(dir.path(), url, BadRows::Fail)).await;
    let o = &outcome.manifest.items[0].objects[0];
    let types: Vec<String> = o
        .columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.column_type.clone())
        .collect();
    assert_eq!(types, ["STRING", "STRING", "INT64"]);
    let (schema, batches, _) = read_parquet(Bytes::from(object(dir.path(), &o.name)));
    assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
    assert_eq!(strings(&batches, 0), [Some("02134".to_string())]);
    assert_eq!(strings(&batches, 1), [Some("01001".to_string())]);
    assert_eq!(batches[0].column(2).as_primitive::<Int64Type>().value(0), 7);
}

#[tokio::test]
async fn invalid_utf8_in_the_inference_sample_is_a_bad_row_not_a_failed_item() {
    let server = TestServer::start();
    // Latin-1 "café" on line 3, well inside the sample.
    let mut csv = b"id,name\n1,tea\n2,caf\xe9\n3,\"multi\nline\"\n".to_vec();
    csv.extend_from_slice(b"4,ok\n");
    let url = server.serve("latin.csv", ServedFile::new(csv));
    let dir = tempfile::tempdir().unwrap();
    let outcome = run_ok(parquet_config(dir.path(), url.clone(), BadRows::Quarantine)).await;
    let o = &outcome.manifest.items[0].objects[0];
    assert_eq!((o.rows, o.rejected_rows), (Some(3), 1));
    let lines = rejects(dir.path(), "latin/latin-00000.rejects.jsonl");
    assert_eq!(
        (lines[0]["line"].as_u64(), lines[0]["offset"].as_u64()),
        (Some(3), Some(14))
    );
    assert_eq!(lines[0]["errors"][0]["error"], "invalid UTF-8");
    assert_eq!(lines[0]["errors"][0]["column"], "name");
    // The exact bytes, for a row that is not text.
    assert_eq!(
        lines[0]["fields_base64"],
        serde_json::json!(["Mg==", "Y2Fm6Q=="])
    );
    let (_, batches, _) = read_parquet(Bytes::from(object(dir.path(), &o.name)));
    assert_eq!(
        strings(&batches, 1),
        [
            Some("tea".into()),
            Some("multi\nline".into()),
            Some("ok".into())
        ]
    );

    let dir = tempfile::tempdir().unwrap();
    let err = run(
        parquet_config(dir.path(), url.clone(), BadRows::Fail),
        &task(0, 1),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!(
            "{url}: line 3 (byte offset 14): column 2 (name) is not valid UTF-8"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn cr_only_lines_a_bom_and_text_after_a_closing_quote() {
    let server = TestServer::start();
    let csv = b"\xef\xbb\xbfid,note\r1,\"a\rb\"\r2,\"say \"hi\"\"\r3,plain\r".to_vec();
    let url = server.serve("mac.csv", ServedFile::new(csv));
    let dir = tempfile::tempdir().unwrap();
    let outcome = run_ok(parquet_config(dir.path(), url, BadRows::Quarantine)).await;
    let o = &outcome.manifest.items[0].objects[0];
    let names: Vec<&str> = o
        .columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["id", "note"]);
    assert_eq!((o.rows, o.rejected_rows), (Some(2), 1));
    let (_, batches, _) = read_parquet(Bytes::from(object(dir.path(), &o.name)));
    assert_eq!(
        strings(&batches, 1),
        [Some("a\rb".into()), Some("plain".into())]
    );
    let lines = rejects(dir.path(), "mac/mac-00000.rejects.jsonl");
    // Lines count lone CRs; offsets start after the BOM (the text stage removes it).
    assert_eq!(
        (lines[0]["line"].as_u64(), lines[0]["offset"].as_u64()),
        (Some(4), Some(16))
    );
    assert!(
        lines[0]["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("text follows the closing quote of column 2 (note)"),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn a_wrong_field_count_names_the_line_the_record_starts_on() {
    let server = TestServer::start();
    let url = server.serve(
        "ragged.csv",
        ServedFile::new("id,note\n1,\"multi\nline\nvalue\",extra\n2,ok\n"),
    );
    let dir = tempfile::tempdir().unwrap();
    let err = run(
        parquet_config(dir.path(), url.clone(), BadRows::Fail),
        &task(0, 1),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!(
            "{url}: line 2 (byte offset 8): expected 2 fields (as in the header), found 3"
        )),
        "{err}"
    );
}
