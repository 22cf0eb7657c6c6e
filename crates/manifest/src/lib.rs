//! The JSON contract between `sluice extract` and `sluice load`, in one place.
//!
//! extract writes an item *receipt* (`_manifests/items/...json`) per item and a *task manifest*
//! (`_manifests/task-00003.json`) per task; load reads the task manifests (or a plain
//! [`ObjectList`] written by something else). Both sides go through the types here, so the kind
//! strings, the version and the field names exist once; `tests/format.rs` guards the format
//! against a manifest extract really wrote. The shapes are documented in `docs/extract.md`.
//!
//! Parsing reads `kind` and `version` before the shape, so a document of another kind or a
//! newer version is refused by name rather than with whatever field the newer format renamed.

#![warn(unreachable_pub)]

mod list;
mod records;
mod state;
mod stream;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use list::{ListedObject, ObjectList};
pub use records::{
    ColumnRecord, ColumnValues, CursorRecord, ItemRecord, ItemStatus, ObjectRecord, PageRecord,
    Receipt, RejectsRecord, SourceRecord, SourceVersion, TaskManifest, Totals,
};
pub use state::{STATE_KIND, STATE_VERSION, SourceState, StateFile, compare_marks};
pub use stream::{JOURNAL_PART_KIND, JournalPart, ManifestStream};

/// The `kind` of a task manifest.
pub const TASK_MANIFEST_KIND: &str = "sluice.extract.task-manifest";
/// The `kind` of an item receipt.
pub const RECEIPT_KIND: &str = "sluice.extract.item-receipt";
/// The one format version this build writes and reads (task manifests and receipts share it).
pub const FORMAT_VERSION: u32 = 1;

/// A manifest or receipt that cannot be used. Every variant names the document's URL.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or JSON of the wrong shape (serde's message names the field and position).
    #[error("manifest {url}: not a valid {what}: {source}")]
    Json {
        url: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("manifest {url}: unknown kind {kind:?} (this sluice reads {expected:?})")]
    UnknownKind {
        url: String,
        kind: String,
        expected: &'static str,
    },
    #[error(
        "manifest {url}: version {version} is not supported (this sluice reads version {FORMAT_VERSION})"
    )]
    UnsupportedVersion { url: String, version: String },
    /// A field that parsed but breaks a rule of the format.
    #[error("manifest {url}: field `{field}`: {reason}")]
    Field {
        url: String,
        field: String,
        reason: String,
    },
}

impl ManifestError {
    fn field(url: &str, field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
        ManifestError::Field {
            url: url.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// What a manifest prefix may hold: extract's task manifest, or a plain object list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyManifest {
    Task(Box<TaskManifest>),
    Objects(ObjectList),
}

/// Parses `bytes` (read from `url`) as a task manifest when it has a `kind`, else as a plain
/// [`ObjectList`].
pub fn parse_any(bytes: &[u8], url: &str) -> Result<AnyManifest, ManifestError> {
    let header = header(bytes, url, "task manifest or object list")?;
    if header.kind.is_none() {
        return ObjectList::parse(bytes, url).map(AnyManifest::Objects);
    }
    TaskManifest::parse(bytes, url).map(|m| AnyManifest::Task(Box::new(m)))
}

impl TaskManifest {
    /// Parses and checks a task manifest: its kind, its version, its shape, and that
    /// `task_index` is one of `task_count` tasks.
    pub fn parse(bytes: &[u8], url: &str) -> Result<TaskManifest, ManifestError> {
        let what = "task manifest";
        check_kind_and_version(&header(bytes, url, what)?, url, TASK_MANIFEST_KIND)?;
        let manifest: TaskManifest = typed(bytes, url, what)?;
        if manifest.task_count == 0 {
            return Err(ManifestError::field(
                url,
                "task_count",
                "must be at least 1",
            ));
        }
        if manifest.task_index >= manifest.task_count {
            return Err(ManifestError::field(
                url,
                "task_index",
                format!(
                    "{} is not below task_count {}",
                    manifest.task_index, manifest.task_count
                ),
            ));
        }
        check_objects(&manifest.items, url, "items")?;
        Ok(manifest)
    }

    /// The bytes extract stores: pretty JSON and a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        pretty(self)
    }
}

impl Receipt {
    /// A receipt for `item`, under this build's kind and version.
    pub fn new(item: ItemRecord) -> Receipt {
        Receipt {
            kind: RECEIPT_KIND.to_string(),
            version: FORMAT_VERSION,
            item,
        }
    }

    /// Parses and checks an item receipt (kind, version, shape).
    pub fn parse(bytes: &[u8], url: &str) -> Result<Receipt, ManifestError> {
        let what = "item receipt";
        check_kind_and_version(&header(bytes, url, what)?, url, RECEIPT_KIND)?;
        let receipt: Receipt = typed(bytes, url, what)?;
        check_objects(std::slice::from_ref(&receipt.item), url, "")?;
        Ok(receipt)
    }

    /// The bytes extract stores: pretty JSON and a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        pretty(self)
    }
}

/// `kind` and `version`, read before the rest.
struct Header {
    kind: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

fn header(bytes: &[u8], url: &str, what: &'static str) -> Result<Header, ManifestError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
            url: url.to_string(),
            what,
            source,
        })?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(ManifestError::field(
            url,
            "(top level)",
            "not a JSON object",
        ));
    };
    Ok(Header {
        kind: map.remove("kind"),
        version: map.remove("version"),
    })
}

fn check_kind_and_version(
    header: &Header,
    url: &str,
    expected: &'static str,
) -> Result<(), ManifestError> {
    match &header.kind {
        Some(serde_json::Value::String(kind)) if kind == expected => {}
        Some(serde_json::Value::String(kind)) => {
            return Err(ManifestError::UnknownKind {
                url: url.to_string(),
                kind: kind.clone(),
                expected,
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
        Some(v) if v.as_u64() == Some(u64::from(FORMAT_VERSION)) => Ok(()),
        Some(v) => Err(ManifestError::UnsupportedVersion {
            url: url.to_string(),
            version: v.to_string(),
        }),
        None => Err(ManifestError::field(url, "version", "missing")),
    }
}

fn typed<T: DeserializeOwned>(
    bytes: &[u8],
    url: &str,
    what: &'static str,
) -> Result<T, ManifestError> {
    serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
        url: url.to_string(),
        what,
        source,
    })
}

/// Every object (and rejects object) names itself: load turns `url` into a load job's source.
fn check_objects(items: &[ItemRecord], url: &str, path: &str) -> Result<(), ManifestError> {
    for (i, item) in items.iter().enumerate() {
        let at = if path.is_empty() {
            String::new()
        } else {
            format!("{path}[{i}].")
        };
        for (j, object) in item.objects.iter().enumerate() {
            if object.url.is_empty() {
                return Err(ManifestError::field(
                    url,
                    format!("{at}objects[{j}].url"),
                    "empty",
                ));
            }
            if object.rejects.as_ref().is_some_and(|r| r.url.is_empty()) {
                return Err(ManifestError::field(
                    url,
                    format!("{at}objects[{j}].rejects.url"),
                    "empty",
                ));
            }
        }
    }
    Ok(())
}

fn pretty<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs (strings, integers, options, vectors) cannot fail.
    let mut body = serde_json::to_vec_pretty(value).expect("manifest records serialise");
    body.push(b'\n');
    body
}
