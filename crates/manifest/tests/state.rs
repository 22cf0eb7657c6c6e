//! The state file (`_state/{dataset}.json`): written and read back through the types, and
//! refused by name when a field is wrong.

use sluice_manifest::{STATE_KIND, STATE_VERSION, SourceState, SourceVersion, StateFile};

const URL: &str = "gs://bkt/raw/_state/city.json";

fn sample() -> StateFile {
    let mut state = StateFile::new("city");
    state.sources.insert(
        "city/permits".into(),
        SourceState {
            column: Some("_socrata_updated_at".into()),
            mark: Some("2026-11-30T12:00:00.000".into()),
            source_version: None,
            extracted_by: Some("extract-x7k2p".into()),
            advanced_by: Some("load-4f9q".into()),
            advanced_at: "2026-12-01T06:10:00.123+00:00".into(),
        },
    );
    state.sources.insert(
        "city/zones".into(),
        SourceState {
            column: None,
            mark: None,
            source_version: Some(SourceVersion {
                etag: Some("\"abc\"".into()),
                last_modified: Some("Mon, 30 Nov 2026 10:00:00 GMT".into()),
                size: Some(1234),
            }),
            extracted_by: None,
            advanced_by: None,
            advanced_at: "2026-12-01T06:10:00Z".into(),
        },
    );
    state
}

fn edited(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
    edit(&mut value);
    serde_json::to_vec(&value).unwrap()
}

fn error(bytes: &[u8]) -> String {
    StateFile::parse(bytes, URL).unwrap_err().to_string()
}

#[test]
fn round_trip_and_the_bytes_people_read() {
    let state = sample();
    let bytes = state.to_bytes();
    assert_eq!(StateFile::parse(&bytes, URL).unwrap(), state);
    let text = String::from_utf8(bytes).unwrap();
    // Pretty, with a final newline, empty fields left out, in a stable order.
    assert!(text.ends_with("}\n"), "{text}");
    assert!(
        text.starts_with(
            "{\n  \"kind\": \"sluice.state\",\n  \"version\": 1,\n  \"dataset\": \"city\",\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("\"mark\": \"2026-11-30T12:00:00.000\""),
        "{text}"
    );
    assert!(!text.contains("null"), "{text}");
    assert!(text.find("city/permits").unwrap() < text.find("city/zones").unwrap());
    assert_eq!(state.kind, STATE_KIND);
    assert_eq!(state.version, STATE_VERSION);
    // An empty state is valid too.
    let empty = StateFile::new("d");
    assert_eq!(StateFile::parse(&empty.to_bytes(), URL).unwrap(), empty);
}

#[test]
fn bad_fields_are_named() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "not a valid state file"),
        (
            edited(|v| v["kind"] = "sluice.extract.task-manifest".into()),
            "unknown kind \"sluice.extract.task-manifest\"",
        ),
        (
            edited(|v| {
                v.as_object_mut().unwrap().remove("kind");
            }),
            "field `kind`: missing",
        ),
        (
            edited(|v| v["version"] = 2.into()),
            "field `version`: 2 is not supported",
        ),
        (
            edited(|v| v["dataset"] = "".into()),
            "field `dataset`: empty",
        ),
        (
            edited(|v| {
                let entry = v["sources"]["city/permits"].clone();
                v["sources"]["other/permits"] = entry;
            }),
            "field `sources.\"other/permits\"`: is not a source of dataset \"city\"",
        ),
        (
            edited(|v| {
                v["sources"]["city/permits"]
                    .as_object_mut()
                    .unwrap()
                    .remove("mark");
            }),
            "field `sources.\"city/permits\"`: has neither `mark` nor `source_version`",
        ),
        (
            edited(|v| v["sources"]["city/permits"]["mark"] = "".into()),
            "field `sources.\"city/permits\".mark`: empty",
        ),
        (
            edited(|v| v["sources"]["city/zones"]["advanced_at"] = "yesterday".into()),
            "field `sources.\"city/zones\".advanced_at`: \"yesterday\" is not an RFC 3339 timestamp",
        ),
        (
            edited(|v| v["sources"]["city/zones"]["source_version"]["size"] = "big".into()),
            "not a valid state file",
        ),
    ];
    for (bytes, expected) in cases {
        let text = error(&bytes);
        assert!(text.starts_with(&format!("manifest {URL}: ")), "{text}");
        assert!(text.contains(expected), "expected {expected:?} in {text}");
    }
}
