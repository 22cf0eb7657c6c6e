//! The forms that let extract hold a bounded number of item records, however many items a task
//! has: journal parts written while the task runs, and a task manifest written item by item.

use serde::{Deserialize, Serialize};

use crate::{FORMAT_VERSION, ItemRecord, ManifestError, TaskManifest, Totals};

/// The `kind` of a journal part.
pub const JOURNAL_PART_KIND: &str = "sluice.extract.journal-part";

/// A batch of finished items of one task attempt
/// (`_manifests/executions/{execution}/task-00003/a001-00007.json`), written as the items
/// finish. A retry of the task reads the parts of earlier attempts to skip what is done (it
/// replaces the per-item receipts), and the end of the task streams every part into the task
/// manifest. Compact JSON: parts are read by machines only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalPart {
    pub kind: String,
    pub version: u32,
    pub task_index: u32,
    pub attempt: u32,
    /// This part's number within its attempt, from 0.
    pub part: u32,
    pub items: Vec<ItemRecord>,
}

impl JournalPart {
    pub fn new(task_index: u32, attempt: u32, part: u32, items: Vec<ItemRecord>) -> JournalPart {
        JournalPart {
            kind: JOURNAL_PART_KIND.to_string(),
            version: FORMAT_VERSION,
            task_index,
            attempt,
            part,
            items,
        }
    }

    /// Parses and checks a journal part (kind, version, shape).
    pub fn parse(bytes: &[u8], url: &str) -> Result<JournalPart, ManifestError> {
        let what = "journal part";
        crate::check_kind_and_version(&crate::header(bytes, url, what)?, url, JOURNAL_PART_KIND)?;
        let part: JournalPart = crate::typed(bytes, url, what)?;
        crate::check_objects(&part.items, url, "items")?;
        Ok(part)
    }

    /// Compact JSON and a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = serde_json::to_vec(self).expect("journal records serialise");
        body.push(b'\n');
        body
    }
}

impl Totals {
    /// Counts one more item (what [`Totals::from_items`] does for a whole list).
    pub fn add(&mut self, item: &ItemRecord) {
        self.add_counts(std::slice::from_ref(item));
    }
}

/// Writes a task manifest one item at a time, in compact JSON, for tasks with too many items
/// to hold: [`Self::begin`] with the header (its `items` are ignored), [`Self::item`] for each
/// item, [`Self::finish`] with what is known only at the end. The result parses with
/// [`TaskManifest::parse`] like any other manifest; the fields known at the end
/// (`finished_at`, `complete`, `totals`) come after `items`, which JSON readers do not mind.
#[derive(Debug, Default)]
pub struct ManifestStream {
    items: usize,
}

impl ManifestStream {
    /// The bytes up to and including `"items":[`.
    pub fn begin(header: &TaskManifest) -> (ManifestStream, Vec<u8>) {
        let value = serde_json::to_value(header).expect("manifest records serialise");
        let serde_json::Value::Object(mut map) = value else {
            unreachable!("a task manifest serialises to an object")
        };
        for late in ["items", "finished_at", "complete", "totals"] {
            map.remove(late);
        }
        let mut out =
            serde_json::to_vec(&serde_json::Value::Object(map)).expect("JSON values serialise");
        // `{...}` -> `{...,"items":[` (or `{"items":[` if the header were empty).
        out.pop();
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(b"\"items\":[");
        (ManifestStream::default(), out)
    }

    /// Appends one item's bytes to `out`.
    pub fn item(&mut self, record: &ItemRecord, out: &mut Vec<u8>) {
        if self.items > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, record).expect("manifest records serialise");
        self.items += 1;
    }

    /// The closing bytes.
    pub fn finish(self, finished_at: &str, complete: bool, totals: &Totals) -> Vec<u8> {
        let mut out = b"],\"finished_at\":".to_vec();
        serde_json::to_writer(&mut out, finished_at).expect("strings serialise");
        out.extend_from_slice(b",\"complete\":");
        out.extend_from_slice(if complete { b"true" } else { b"false" });
        out.extend_from_slice(b",\"totals\":");
        serde_json::to_writer(&mut out, totals).expect("manifest records serialise");
        out.extend_from_slice(b"}\n");
        out
    }
}
