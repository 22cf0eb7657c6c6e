//! Deterministic names. An output's key depends only on (dataset, partition, source name,
//! member, chunk number) so a retried task writes exactly the same keys:
//!
//! ```text
//! {prefix}{dataset}/[{partition}/]{stem}-{chunk:05}.{ext}
//! {prefix}{dataset}/[{partition}/]{stem}-{chunk:05}.rejects.jsonl     (quarantined rows)
//! {prefix}_manifests/items/{dataset}/[{partition}/]{name}[-{chunk:05}].json   (item receipts)
//! {prefix}_manifests/task-{index:05}.json                           (task manifests)
//! ```
//!
//! `stem` is the source name, plus `.{member}` for a zip member; `chunk` is the page number of
//! a Socrata page and 0 otherwise.

/// Characters kept in names; everything else becomes `_`.
fn keep(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// A name safe in object keys and recognisable: ASCII letters, digits, `_`, `-`, `.`; runs of
/// anything else become one `_`; no leading/trailing punctuation; never empty.
pub fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut last_underscore = false;
    for c in name.chars() {
        if keep(c) {
            out.push(c);
            last_underscore = c == '_';
        } else if !last_underscore {
            out.push('_');
            last_underscore = true;
        }
    }
    let trimmed = out.trim_matches(|c| matches!(c, '_' | '-' | '.'));
    if trimmed.is_empty() {
        "source".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Dataset names become BigQuery table names in `load`: letters, digits, `_` only.
pub fn sanitize_dataset(name: &str) -> String {
    let s: String = sanitize(name)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    s
}

/// Compression suffixes stripped before the data extension is looked at.
const COMPRESSION_EXTS: [&str; 3] = ["gz", "gzip", "zip"];

/// `(stem, data extension, compression extension)` of the last path segment:
/// `a.csv.gz` -> (`a`, `csv`, `gz`), `b.zip` -> (`b`, ``, `zip`), `c` -> (`c`, ``, ``).
pub fn split_extensions(file_name: &str) -> (String, String, String) {
    let mut stem = file_name.to_string();
    let mut compression = String::new();
    if let Some((s, ext)) = stem.rsplit_once('.')
        && COMPRESSION_EXTS.contains(&ext.to_ascii_lowercase().as_str())
        && !s.is_empty()
    {
        compression = ext.to_ascii_lowercase();
        stem = s.to_string();
    }
    let mut data_ext = String::new();
    if let Some((s, ext)) = stem.rsplit_once('.')
        && !s.is_empty()
        && (1..=8).contains(&ext.len())
        && ext.chars().all(|c| c.is_ascii_alphanumeric())
    {
        data_ext = ext.to_ascii_lowercase();
        stem = s.to_string();
    }
    (stem, data_ext, compression)
}

/// The last non-empty path segment of a URL or path (query and fragment ignored).
pub fn last_segment(url_or_path: &str) -> String {
    let no_query = url_or_path.split(['?', '#']).next().unwrap_or(url_or_path);
    let path = match no_query.find("://") {
        Some(i) => {
            let rest = &no_query[i + 3..];
            rest.find('/').map_or("", |j| &rest[j..])
        }
        None => no_query,
    };
    path.rsplit('/')
        .find(|s| !s.is_empty())
        .map(percent_decode_lossy)
        .unwrap_or_default()
}

fn percent_decode_lossy(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where an item's outputs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The store prefix, empty or ending in `/`.
    pub prefix: String,
    /// `dt=2026-11-28`, resolved once per task.
    pub partition: Option<String>,
}

impl Layout {
    pub fn new(prefix: &str, partition: Option<String>) -> Self {
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Layout { prefix, partition }
    }

    fn dir(&self, dataset: &str) -> String {
        match &self.partition {
            Some(p) => format!("{}{dataset}/{p}/", self.prefix),
            None => format!("{}{dataset}/", self.prefix),
        }
    }

    /// The key of an output object.
    pub fn object_key(&self, dataset: &str, stem: &str, chunk: u64, ext: &str) -> String {
        format!("{}{stem}-{chunk:05}.{ext}", self.dir(dataset))
    }

    /// The key of the rejects object that goes with an output.
    pub fn rejects_key(&self, dataset: &str, stem: &str, chunk: u64) -> String {
        self.object_key(dataset, stem, chunk, "rejects.jsonl")
    }

    /// The key of an item's receipt (what was written from which source version).
    pub fn receipt_key(&self, dataset: &str, name: &str, chunk: Option<u64>) -> String {
        let file = match chunk {
            Some(c) => format!("{name}-{c:05}.json"),
            None => format!("{name}.json"),
        };
        match &self.partition {
            Some(p) => format!("{}_manifests/items/{dataset}/{p}/{file}", self.prefix),
            None => format!("{}_manifests/items/{dataset}/{file}", self.prefix),
        }
    }

    /// The key of a task's manifest.
    pub fn task_manifest_key(&self, index: u32) -> String {
        format!("{}_manifests/task-{index:05}.json", self.prefix)
    }
}

/// The stem of a zip member's output: `{source}.{member path without extension}`.
pub fn member_stem(source: &str, member_path: &str) -> String {
    let file = member_path.trim_end_matches('/');
    let (dir, base) = file.rsplit_once('/').unwrap_or(("", file));
    let (stem, _, _) = split_extensions(base);
    let joined = if dir.is_empty() {
        stem
    } else {
        format!("{dir}/{stem}")
    };
    format!("{source}.{}", sanitize(&joined))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes() {
        assert_eq!(
            sanitize("Crimes 2024 (final).csv"),
            "Crimes_2024_final_.csv"
        );
        assert_eq!(sanitize("a//b"), "a_b");
        assert_eq!(sanitize("..."), "source");
        assert_eq!(sanitize("über"), "ber");
        assert_eq!(sanitize_dataset("city-data.v2"), "city_data_v2");
    }

    #[test]
    fn splits_extensions_and_segments() {
        assert_eq!(
            split_extensions("a.csv.gz"),
            ("a".into(), "csv".into(), "gz".into())
        );
        assert_eq!(
            split_extensions("b.zip"),
            ("b".into(), "".into(), "zip".into())
        );
        assert_eq!(split_extensions("c"), ("c".into(), "".into(), "".into()));
        assert_eq!(
            split_extensions("v1.2.tsv"),
            ("v1.2".into(), "tsv".into(), "".into())
        );
        assert_eq!(
            last_segment("https://h.org/data/2024/rides%20q1.csv?$$app_token=x#f"),
            "rides q1.csv"
        );
        assert_eq!(last_segment("https://h.org/data/dir/"), "dir");
        assert_eq!(last_segment("https://h.org"), "");
        assert_eq!(last_segment("/tmp/x/y.csv.gz"), "y.csv.gz");
        assert_eq!(last_segment("file:///tmp/x/y.csv"), "y.csv");
    }

    #[test]
    fn keys_are_deterministic() {
        let l = Layout::new("raw/", Some("dt=2026-11-28".into()));
        assert_eq!(
            l.object_key("city", "rides", 0, "parquet"),
            "raw/city/dt=2026-11-28/rides-00000.parquet"
        );
        assert_eq!(
            l.rejects_key("city", "rides", 12),
            "raw/city/dt=2026-11-28/rides-00012.rejects.jsonl"
        );
        assert_eq!(
            l.receipt_key("city", "rides", Some(3)),
            "raw/_manifests/items/city/dt=2026-11-28/rides-00003.json"
        );
        assert_eq!(l.task_manifest_key(3), "raw/_manifests/task-00003.json");
        let root = Layout::new("", None);
        assert_eq!(root.object_key("d", "s", 0, "csv"), "d/s-00000.csv");
        assert_eq!(
            root.receipt_key("d", "s", None),
            "_manifests/items/d/s.json"
        );
        assert_eq!(member_stem("gtfs", "feed/stops.txt"), "gtfs.feed_stops");
        assert_eq!(member_stem("z", "a.csv"), "z.a");
    }
}
