//! The streamed task manifest and the journal parts: what extract writes item by item parses
//! to the same manifest as the one-piece form, and parts round-trip.

use sluice_manifest::{
    JOURNAL_PART_KIND, JournalPart, ManifestError, ManifestStream, TaskManifest, Totals,
};

const TASK: &[u8] = include_bytes!("fixtures/task-00000.json");
const URL: &str = "gs://bkt/raw/_manifests/task-00000.json";

#[test]
fn a_streamed_manifest_parses_to_the_same_manifest() {
    let manifest = TaskManifest::parse(TASK, URL).unwrap();
    let header = TaskManifest {
        items: Vec::new(),
        ..manifest.clone()
    };
    let (mut stream, mut out) = ManifestStream::begin(&header);
    let mut totals = Totals::default();
    for item in &manifest.items {
        stream.item(item, &mut out);
        totals.add(item);
    }
    assert_eq!(totals, manifest.totals);
    out.extend(stream.finish(&manifest.finished_at, manifest.complete, &totals));
    assert_eq!(TaskManifest::parse(&out, URL).unwrap(), manifest);
    // Compact: one line, smaller than the pretty form.
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    assert!(out.len() < TASK.len());
}

#[test]
fn a_streamed_manifest_without_items_parses() {
    let manifest = TaskManifest::parse(TASK, URL).unwrap();
    let header = TaskManifest {
        items: Vec::new(),
        complete: false,
        ..manifest
    };
    let (stream, mut out) = ManifestStream::begin(&header);
    out.extend(stream.finish("2026-11-28T06:00:00Z", false, &Totals::default()));
    let parsed = TaskManifest::parse(&out, URL).unwrap();
    assert!(parsed.items.is_empty());
    assert!(!parsed.complete);
    assert_eq!(parsed.finished_at, "2026-11-28T06:00:00Z");
}

#[test]
fn journal_parts_round_trip_and_refuse_other_kinds() {
    let manifest = TaskManifest::parse(TASK, URL).unwrap();
    let part = JournalPart::new(3, 1, 7, manifest.items.clone());
    let bytes = part.to_bytes();
    let url = "gs://bkt/raw/_manifests/executions/x/task-00003/a001-00007.json";
    let parsed = JournalPart::parse(&bytes, url).unwrap();
    assert_eq!(parsed, part);
    assert_eq!(parsed.kind, JOURNAL_PART_KIND);
    // A task manifest is not a journal part.
    match JournalPart::parse(TASK, url) {
        Err(ManifestError::UnknownKind { kind, .. }) => {
            assert_eq!(kind, "sluice.extract.task-manifest")
        }
        other => panic!("expected UnknownKind, got {other:?}"),
    }
}
