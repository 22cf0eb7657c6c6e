//! Deterministic, unique names. An output's key depends only on (dataset, partition, source
//! name, member, chunk number) so a retried task writes exactly the same keys:
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
//!
//! # Unique names
//!
//! A source's *identity* is what it reads: its URL with the query (and without the fragment
//! and secret values, see [`url_identity`]), or its path; a zip member's is its full path in
//! the archive. Readable names drop most of it (directories, extensions, the query, characters
//! outside `[A-Za-z0-9_.-]`), so where a readable name could stand for two identities it gets
//! `-{hash}`: 8 hex digits of FNV-1a 64 of the identity ([`identity_hash`]). The rules, each
//! depending on the source alone unless marked:
//!
//! - A manifest `name` is used as given (sanitized). Two sources with one name in one dataset
//!   are a usage error: the user chose the names.
//! - A name derived from a URL gets the hash when the URL has a query parameter that is not a
//!   secret: `https://h/bom.csv?year=2023` -> `bom-245da827`. Secret values never enter the
//!   identity, so the hash neither leaks nor changes when a token rotates; two URLs differing
//!   only in a secret are the same source (listing it twice is a usage error).
//! - Group rule (for readability): a derived name without a query keeps the bare readable
//!   name unless another source of the plan derives the same name in the same dataset; then
//!   every derived one of them gets the hash (`2023/data.csv`, `2024/data.csv` -> `data-...`).
//!   Adding such a same-named source later renames the first one; name it in a manifest to
//!   pin its key.
//! - A zip member's stem is `{source}.{member path without its extension}` (sanitized), with
//!   the hash of the member path unless that rendering is lossless: no character changed by
//!   sanitizing (no `/`, space, ...), no compression extension, and the dropped extension is
//!   the one the object key restates (passthrough keeps `.csv`/`.tsv`/...; Parquet output
//!   counts only a lower-case `.csv` as restated). So `x.csv` and `x.tsv`, `a/b.csv` and
//!   `a_b.csv`, `A B.csv` and `A_B.csv` never share a key. Members are only known while the
//!   archive streams, so no group rule is possible for them.
//!
//! The plan refuses any two items with the same object stem or receipt key (a usage error
//! naming both sources). What the plan cannot see (zip members against other items) is caught
//! by the task's key claims ([`KeyClaims`]): the second writer of a key fails before it writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::OutputFormat;
use crate::error::{ExtractError, Result};
use crate::redact::{is_secret_query_param, redact_url};

/// Characters kept in names; everything else becomes `_`.
fn keep(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// A name safe in object keys and recognisable: ASCII letters, digits, `_`, `-`, `.`; runs of
/// anything else become one `_`; no leading/trailing punctuation; never empty.
pub(crate) fn sanitize(name: &str) -> String {
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
pub(crate) fn sanitize_dataset(name: &str) -> String {
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
pub(crate) fn split_extensions(file_name: &str) -> (String, String, String) {
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
pub(crate) fn last_segment(url_or_path: &str) -> String {
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
pub(crate) struct Layout {
    /// The store prefix, empty or ending in `/`.
    pub prefix: String,
    /// `dt=2026-11-28`, resolved once per task.
    pub partition: Option<String>,
}

impl Layout {
    pub(crate) fn new(prefix: &str, partition: Option<String>) -> Self {
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
    pub(crate) fn object_key(&self, dataset: &str, stem: &str, chunk: u64, ext: &str) -> String {
        format!("{}{stem}-{chunk:05}.{ext}", self.dir(dataset))
    }

    /// The key of the rejects object that goes with an output.
    pub(crate) fn rejects_key(&self, dataset: &str, stem: &str, chunk: u64) -> String {
        self.object_key(dataset, stem, chunk, "rejects.jsonl")
    }

    /// The key of an item's receipt (what was written from which source version).
    pub(crate) fn receipt_key(&self, dataset: &str, name: &str, chunk: Option<u64>) -> String {
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
    pub(crate) fn task_manifest_key(&self, index: u32) -> String {
        format!("{}_manifests/task-{index:05}.json", self.prefix)
    }
}

/// 8 hex digits identifying `identity` in a name: FNV-1a 64 (the same function that shards
/// items, stable across platforms and releases), low 32 bits.
pub fn identity_hash(identity: &str) -> String {
    format!(
        "{:08x}",
        sluice_runtime::shard::fnv1a64(identity.as_bytes()) as u32
    )
}

/// `{name}-{hash of identity}`.
pub(crate) fn with_identity_hash(name: &str, identity: &str) -> String {
    format!("{name}-{}", identity_hash(identity))
}

/// What a URL reads, for naming: the URL redacted (no fragment, no userinfo password) and
/// without its secret query parameters, which authorise rather than select. Order and
/// spelling of the other parameters are kept: servers may treat them as significant.
pub(crate) fn url_identity(url: &str) -> String {
    let redacted = redact_url(url.trim());
    let Some((base, query)) = redacted.split_once('?') else {
        return redacted;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !is_secret_query_param(pair.split('=').next().unwrap_or_default()))
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// Whether a readable name derived from this identity loses its query (and needs the hash).
pub(crate) fn identity_has_query(identity: &str) -> bool {
    identity.contains('?')
}

/// The stem of a zip member's output: `{source}.{member path without extension}`, sanitized,
/// plus `-{hash of the member path}` unless that is a lossless rendering of the path for an
/// output in `format` (see the module docs).
pub(crate) fn member_stem(source: &str, member_path: &str, format: OutputFormat) -> String {
    let file = member_path.trim_end_matches('/');
    let (dir, base) = file.rsplit_once('/').unwrap_or(("", file));
    let (stem, data_ext, compression) = split_extensions(base);
    let joined = if dir.is_empty() {
        stem
    } else {
        format!("{dir}/{stem}")
    };
    let rendered = sanitize(&joined);
    let ext_restated = compression.is_empty()
        && !data_ext.is_empty()
        && base.ends_with(&format!(".{data_ext}"))
        && match format {
            OutputFormat::Passthrough => true,
            OutputFormat::Parquet => data_ext == "csv",
        };
    if rendered == joined && ext_restated {
        format!("{source}.{rendered}")
    } else {
        format!("{source}.{}", with_identity_hash(&rendered, member_path))
    }
}

/// A 128-bit digest of a key (object, receipt or item key): what a task keeps per key instead
/// of the key itself (claims, the journal's index of reusable items).
pub(crate) fn key_hash(key: &str) -> u128 {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(key.as_bytes());
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

/// The object keys one task has written or is writing, with what each came from: a second,
/// different source for a key fails instead of overwriting the first's object. The same source
/// claiming again (an item redone after a broken transfer) is fine.
///
/// A task may claim hundreds of thousands of keys, so each is kept as a 128-bit digest (a
/// collision is as likely as one of SHA-256's), and each source's name once, shared by all
/// the keys it claims in a row.
#[derive(Debug, Default)]
pub(crate) struct KeyClaims {
    owners: Mutex<Owners>,
}

#[derive(Debug, Default)]
struct Owners {
    by_key: HashMap<u128, Arc<str>>,
    /// The source of the latest claim: an item claims its receipt and objects in a row.
    last: Option<Arc<str>>,
}

impl KeyClaims {
    /// Records that `source` (URL, path, `archive!member`) writes `key`, or fails with both
    /// sources named if another source has claimed it.
    pub(crate) fn claim(&self, key: &str, source: &str) -> Result<()> {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let digest = key_hash(key);
        match owners.by_key.get(&digest) {
            Some(first) if &**first != source => Err(ExtractError::KeyCollision {
                key: key.to_string(),
                first: first.to_string(),
                second: source.to_string(),
            }),
            Some(_) => Ok(()),
            None => {
                let shared = match &owners.last {
                    Some(last) if &**last == source => last.clone(),
                    _ => Arc::<str>::from(source),
                };
                owners.last = Some(shared.clone());
                owners.by_key.insert(digest, shared);
                Ok(())
            }
        }
    }
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
    }

    #[test]
    fn member_stems_are_lossless_or_hashed() {
        use OutputFormat::{Parquet, Passthrough};
        assert_eq!(member_stem("z", "a.csv", Parquet), "z.a");
        assert_eq!(member_stem("z", "a.csv", Passthrough), "z.a");
        assert_eq!(member_stem("z", "a.tsv", Passthrough), "z.a");
        let hashed = |path: &str| format!("-{}", identity_hash(path));
        // Parquet keys end in .parquet: only .csv counts as restated.
        assert_eq!(
            member_stem("z", "x.tsv", Parquet),
            format!("z.x{}", hashed("x.tsv"))
        );
        assert_eq!(
            member_stem("gtfs", "feed/stops.txt", Passthrough),
            format!("gtfs.feed_stops{}", hashed("feed/stops.txt"))
        );
        for (a, b, format) in [
            ("x.csv", "x.tsv", Parquet),
            ("a/b.csv", "a_b.csv", Parquet),
            ("a/b.csv", "a_b.csv", Passthrough),
            ("A B.csv", "A_B.csv", Parquet),
            ("x.csv", "x.CSV", Passthrough),
            ("x.csv", "x.csv.gz", Passthrough),
            ("x", "x.bin", Passthrough),
            ("_x.csv", "x.csv", Parquet),
        ] {
            assert_ne!(
                member_stem("z", a, format),
                member_stem("z", b, format),
                "{a} / {b} ({format})"
            );
        }
    }

    #[test]
    fn url_identities_keep_the_query_but_no_secrets() {
        assert_eq!(
            url_identity("https://h/bom.csv?year=2023#top"),
            "https://h/bom.csv?year=2023"
        );
        assert_eq!(
            url_identity("https://u:pw@h/a.csv?$$app_token=T&b=1&api_key=K"),
            "https://u:REDACTED@h/a.csv?b=1"
        );
        assert_eq!(url_identity("https://h/a.csv?token=T"), "https://h/a.csv");
        assert!(identity_has_query(&url_identity("https://h/a.csv?year=1")));
        assert!(!identity_has_query(&url_identity("https://h/a.csv?key=1")));
        // Stable across releases: existing keys depend on it.
        assert_eq!(
            identity_hash("https://h/2023/data.csv"),
            identity_hash("https://h/2023/data.csv")
        );
        assert_eq!(identity_hash(""), "84222325");
    }

    #[test]
    fn documented_examples() {
        // docs/extract.md, "One key, one source".
        assert_eq!(identity_hash("https://h/bom.csv?year=2023"), "245da827");
        assert_eq!(
            identity_hash(&url_identity("https://h/bom.csv?year=2024&$$app_token=T")),
            "245da30e"
        );
        assert_eq!(identity_hash("https://h/2023/data.csv"), "a9d5f125");
        assert_eq!(identity_hash("https://h/2024/data.csv"), "57028f8e");
        use OutputFormat::Parquet;
        assert_eq!(member_stem("z", "x.tsv", Parquet), "z.x-ffe92064");
        assert_eq!(member_stem("z", "a/b.csv", Parquet), "z.a_b-8f0a54e7");
        assert_eq!(member_stem("z", "A B.csv", Parquet), "z.A_B-39ea8cec");
        assert_eq!(member_stem("z", "X.CSV", Parquet), "z.X-48961985");
    }

    #[test]
    fn claims_refuse_a_second_source_for_one_key() {
        let claims = KeyClaims::default();
        claims.claim("d/a-00000.csv", "https://h/a.csv").unwrap();
        claims.claim("d/a-00000.csv", "https://h/a.csv").unwrap();
        let err = claims
            .claim("d/a-00000.csv", "https://h/z.zip!a.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("https://h/a.csv"), "{err}");
        assert!(err.contains("https://h/z.zip!a.csv"), "{err}");
        assert!(err.contains("d/a-00000.csv"), "{err}");
    }
}
