//! Source manifests: the list of things to extract, in one of three shapes.
//!
//! Plain text, one URL (or path) per line, `#` comments:
//! ```text
//! https://example.org/a.csv
//! https://example.org/b.csv.gz   # trailing comments are fine
//! ```
//! TOML:
//! ```toml
//! [[source]]
//! name = "rides"
//! url = "https://example.org/rides.zip"
//! format = "parquet"
//! dataset = "mobility"
//! options = { members = ["*.csv"], null_values = ["", "N/A"] }
//!
//! [[source]]
//! kind = "socrata"
//! url = "https://data.city.gov/resource/abcd-1234"
//! ```
//! JSON: an array of such entries (or of URL strings), or `{"sources": [...]}`.

use serde::Deserialize;

use crate::config::{OutputFormat, SourceOptions};
use crate::error::{ExtractError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EntryKind {
    /// An HTTP(S) URL, a `file://` URL or a local path.
    #[default]
    Url,
    /// A Socrata SODA resource (`https://HOST/resource/ID`), pulled in pages.
    Socrata,
}

/// One source as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceEntry {
    /// Stable name used in object keys and shard keys; default: from the URL.
    #[serde(default)]
    pub name: Option<String>,
    pub url: String,
    #[serde(default)]
    pub kind: EntryKind,
    /// Output format for this source; default: `--format`.
    #[serde(default)]
    pub format: Option<OutputFormat>,
    /// Dataset (directory / table) for this source; default: `--dataset`, else the name.
    #[serde(default)]
    pub dataset: Option<String>,
    #[serde(default)]
    pub options: SourceOptions,
}

impl SourceEntry {
    pub(crate) fn url(url: impl Into<String>) -> Self {
        SourceEntry {
            name: None,
            url: url.into(),
            kind: EntryKind::Url,
            format: None,
            dataset: None,
            options: SourceOptions::default(),
        }
    }

    pub(crate) fn socrata(url: impl Into<String>) -> Self {
        SourceEntry {
            kind: EntryKind::Socrata,
            ..SourceEntry::url(url)
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonEntry {
    Url(String),
    Entry(Box<SourceEntry>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonManifest {
    List(Vec<JsonEntry>),
    Object { sources: Vec<JsonEntry> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlManifest {
    #[serde(alias = "sources")]
    source: Vec<SourceEntry>,
}

/// Parses a manifest; `origin` (its path or URL, redacted) names it in errors and its extension
/// picks the format (`.toml`, `.json`; otherwise the content decides).
pub(crate) fn parse(text: &str, origin: &str) -> Result<Vec<SourceEntry>> {
    let lower = origin.to_ascii_lowercase();
    let lower = lower.split(['?', '#']).next().unwrap_or_default();
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let err = |what: &str, e: &dyn std::fmt::Display| {
        ExtractError::Config(format!("manifest {origin}: invalid {what}: {e}"))
    };
    let entries = if lower.ends_with(".toml")
        || (!lower.ends_with(".json") && trimmed.starts_with("[["))
    {
        let manifest: TomlManifest = toml::from_str(trimmed).map_err(|e| err("TOML", &e))?;
        manifest.source
    } else if lower.ends_with(".json") || trimmed.starts_with('[') || trimmed.starts_with('{') {
        let manifest: JsonManifest = serde_json::from_str(trimmed).map_err(|e| err("JSON", &e))?;
        let list = match manifest {
            JsonManifest::List(list) | JsonManifest::Object { sources: list } => list,
        };
        list.into_iter()
            .map(|e| match e {
                JsonEntry::Url(url) => SourceEntry::url(url),
                JsonEntry::Entry(entry) => *entry,
            })
            .collect()
    } else {
        trimmed
            .lines()
            .map(|line| line.split_once(" #").map_or(line, |(l, _)| l).trim())
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(SourceEntry::url)
            .collect()
    };
    for (i, entry) in entries.iter().enumerate() {
        if entry.url.trim().is_empty() {
            return Err(ExtractError::Config(format!(
                "manifest {origin}: entry {} has an empty url",
                i + 1
            )));
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines() {
        let entries = parse(
            "# sources\nhttps://h/a.csv\n\n  https://h/b.csv.gz  # second\n/data/c.csv\n",
            "list.txt",
        )
        .unwrap();
        let urls: Vec<&str> = entries.iter().map(|e| e.url.as_str()).collect();
        assert_eq!(
            urls,
            ["https://h/a.csv", "https://h/b.csv.gz", "/data/c.csv"]
        );
        assert!(
            entries
                .iter()
                .all(|e| e.kind == EntryKind::Url && e.name.is_none())
        );
    }

    #[test]
    fn toml_entries() {
        let entries = parse(
            r#"
[[source]]
name = "rides"
url = "https://h/rides.zip"
format = "parquet"
dataset = "mobility"
options = { members = ["*.csv"], null_values = ["", "N/A"], delimiter = ";" }

[[source]]
kind = "socrata"
url = "https://data.city.gov/resource/abcd-1234"
"#,
            "sources.toml",
        )
        .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name.as_deref(), Some("rides"));
        assert_eq!(entries[0].format, Some(OutputFormat::Parquet));
        assert_eq!(
            entries[0].options.members.as_deref(),
            Some(&["*.csv".to_string()][..])
        );
        assert_eq!(entries[0].options.delimiter.as_deref(), Some(";"));
        assert_eq!(entries[1].kind, EntryKind::Socrata);
    }

    #[test]
    fn json_entries_and_errors() {
        let entries = parse(
            r#"{"sources": ["https://h/a.csv", {"name": "b", "url": "https://h/b.csv", "format": "passthrough"}]}"#,
            "m.json",
        )
        .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].format, Some(OutputFormat::Passthrough));
        let err = parse(r#"[{"url": "https://h/a", "colour": "red"}]"#, "m.json").unwrap_err();
        assert!(err.is_config());
        assert!(err.to_string().contains("m.json"), "{err}");
        let err = parse("[[source]]\nurl = 3\n", "m.toml").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
