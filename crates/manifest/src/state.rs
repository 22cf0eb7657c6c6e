//! The incremental state file, `{dest}/_state/{dataset}.json`: how far each source of one
//! dataset has been pulled *and loaded*. `sluice extract --since auto` reads it to decide what
//! to pull; `sluice load` advances it after a table's load succeeded (`docs/state.md`).
//!
//! One file per dataset, one entry per source under its `state_key` (`dataset/name`, the
//! [`CursorRecord::state_key`](crate::CursorRecord) extract records). Field names here are
//! the on-disk format: change them only by adding `Option`s with `#[serde(default)]` or by
//! bumping [`STATE_VERSION`].

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ManifestError, SourceVersion};

/// The `kind` of a state file.
pub const STATE_KIND: &str = "sluice.state";
/// The state file format this build writes and reads.
pub const STATE_VERSION: u32 = 1;

/// One dataset's state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    pub kind: String,
    pub version: u32,
    /// The extract dataset (the directory under `--dest`), as in the file name.
    pub dataset: String,
    /// Per source, keyed by `state_key` (`dataset/name`).
    #[serde(default)]
    pub sources: BTreeMap<String, SourceState>,
}

/// What is known to be loaded of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    /// The cursor column (`_socrata_updated_at`, a `--cursor` column); `None` for files
    /// tracked by version only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The high-water mark: the largest cursor value loaded (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<String>,
    /// For files: the version (ETag / Last-Modified / size) of the bytes loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<SourceVersion>,
    /// The extract execution whose data moved the mark here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted_by: Option<String>,
    /// The load execution that advanced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced_by: Option<String>,
    /// When it was advanced (RFC 3339, UTC).
    pub advanced_at: String,
}

impl StateFile {
    /// An empty state for `dataset` (what a missing file means).
    pub fn new(dataset: impl Into<String>) -> StateFile {
        StateFile {
            kind: STATE_KIND.to_string(),
            version: STATE_VERSION,
            dataset: dataset.into(),
            sources: BTreeMap::new(),
        }
    }

    /// Parses and checks a state file read from `url`: kind, version, shape, and that every
    /// entry belongs to the file's dataset and says something (a mark or a version).
    pub fn parse(bytes: &[u8], url: &str) -> Result<StateFile, ManifestError> {
        let what = "state file";
        let header = crate::header(bytes, url, what)?;
        match &header.kind {
            Some(serde_json::Value::String(kind)) if kind == STATE_KIND => {}
            Some(serde_json::Value::String(kind)) => {
                return Err(ManifestError::UnknownKind {
                    url: url.to_string(),
                    kind: kind.clone(),
                    expected: STATE_KIND,
                });
            }
            Some(other) => {
                return Err(ManifestError::field(
                    url,
                    "kind",
                    format!("{other} is not a string"),
                ));
            }
            None => return Err(ManifestError::field(url, "kind", "missing")),
        }
        match &header.version {
            Some(v) if v.as_u64() == Some(u64::from(STATE_VERSION)) => {}
            Some(v) => {
                return Err(ManifestError::field(
                    url,
                    "version",
                    format!(
                        "{v} is not supported (this sluice reads state version {STATE_VERSION})"
                    ),
                ));
            }
            None => return Err(ManifestError::field(url, "version", "missing")),
        }
        let state: StateFile = crate::typed(bytes, url, what)?;
        if state.dataset.is_empty() {
            return Err(ManifestError::field(url, "dataset", "empty"));
        }
        let prefix = format!("{}/", state.dataset);
        for (key, entry) in &state.sources {
            let field = |name: &str| format!("sources.{key:?}{name}");
            match key.strip_prefix(&prefix) {
                Some(name) if !name.is_empty() => {}
                _ => {
                    return Err(ManifestError::field(
                        url,
                        field(""),
                        format!(
                            "is not a source of dataset {:?} (expected {prefix}NAME)",
                            state.dataset
                        ),
                    ));
                }
            }
            if entry.mark.is_none() && entry.source_version.is_none() {
                return Err(ManifestError::field(
                    url,
                    field(""),
                    "has neither `mark` nor `source_version`",
                ));
            }
            if entry.mark.as_deref() == Some("") {
                return Err(ManifestError::field(url, field(".mark"), "empty"));
            }
            if !looks_like_rfc3339(&entry.advanced_at) {
                return Err(ManifestError::field(
                    url,
                    field(".advanced_at"),
                    format!("{:?} is not an RFC 3339 timestamp", entry.advanced_at),
                ));
            }
        }
        Ok(state)
    }

    /// The bytes stored: pretty JSON and a final newline (people read these files).
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::pretty(self)
    }
}

/// Orders two cursor marks: numerically when both are numbers (`9` < `10`), otherwise as
/// text after dropping a UTC suffix (`Z`, `+00:00`), which orders ISO 8601 timestamps of any
/// precision (`...:00` < `...:00.5`). `Less` means `a` is older.
pub fn compare_marks(a: &str, b: &str) -> Ordering {
    if let (Ok(x), Ok(y)) = (a.trim().parse::<i128>(), b.trim().parse::<i128>()) {
        return x.cmp(&y);
    }
    if let (Ok(x), Ok(y)) = (a.trim().parse::<f64>(), b.trim().parse::<f64>())
        && x.is_finite()
        && y.is_finite()
    {
        return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    }
    let utc = |s: &'static str, t: &str| -> Option<usize> { t.strip_suffix(s).map(str::len) };
    let strip = |t: &str| -> String {
        let t = t.trim();
        let end = utc("Z", t)
            .or_else(|| utc("z", t))
            .or_else(|| utc("+00:00", t))
            .unwrap_or(t.len());
        // `T` and a space both separate date and time in what sources write.
        t[..end].replacen(' ', "T", 1)
    };
    strip(a).cmp(&strip(b))
}

/// `YYYY-MM-DDTHH:MM:SS...` with an offset: enough to catch a field that is not a timestamp
/// (this crate does not depend on a date library).
fn looks_like_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't' || b[10] == b' ')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (text.ends_with('Z') || text.ends_with('z') || text[19..].contains(['+', '-']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_compare_by_kind() {
        assert_eq!(compare_marks("9", "10"), Ordering::Less);
        assert_eq!(compare_marks("-1", "0"), Ordering::Less);
        assert_eq!(compare_marks("1.5", "10"), Ordering::Less);
        assert_eq!(
            compare_marks("2026-11-30T12:00:00", "2026-11-30T12:00:00.500"),
            Ordering::Less
        );
        assert_eq!(
            compare_marks("2026-11-30T12:00:00.500Z", "2026-11-30T12:00:00Z"),
            Ordering::Greater
        );
        assert_eq!(
            compare_marks("2026-11-30 12:00:00+00:00", "2026-11-30T12:00:00Z"),
            Ordering::Equal
        );
        assert_eq!(compare_marks("2026-01-02", "2025-12-31"), Ordering::Greater);
    }

    #[test]
    fn timestamps_are_recognised() {
        assert!(looks_like_rfc3339("2026-12-01T13:05:00.123456+00:00"));
        assert!(looks_like_rfc3339("2026-12-01T13:05:00Z"));
        assert!(!looks_like_rfc3339("2026-12-01"));
        assert!(!looks_like_rfc3339("yesterday at noon, roughly"));
    }
}
