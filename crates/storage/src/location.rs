//! Parsing the locations users type: `gs://bucket[/prefix]`, `file:///abs/dir`, or a plain
//! (absolute or relative) path. Also the key rules both backends enforce.

use std::path::PathBuf;

use crate::{Result, StorageError};

/// Where a store lives, as parsed from a user's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `gs://bucket/prefix`: `prefix` is `""` for the bucket root and keeps a trailing `/`
    /// if the user wrote one (`gs://b/raw/` -> `"raw/"`).
    Gcs { bucket: String, prefix: String },
    /// A local directory (made absolute against the current directory, not resolved: symlinks
    /// and `..` are left to the OS).
    Local { root: PathBuf },
}

fn invalid(url: &str, reason: impl Into<String>) -> StorageError {
    StorageError::InvalidLocation {
        url: url.to_string(),
        reason: reason.into(),
    }
}

impl Location {
    pub fn parse(url: &str) -> Result<Location> {
        if url.is_empty() {
            return Err(invalid(url, "empty location"));
        }
        if let Some(rest) = url.strip_prefix("gs://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            validate_bucket(url, bucket)?;
            if prefix.starts_with('/') {
                return Err(invalid(
                    url,
                    "prefix starts with '/' (double slash after the bucket name)",
                ));
            }
            if !prefix.is_empty() {
                validate_gcs_name(url, prefix)?;
            }
            return Ok(Location::Gcs {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        if url.starts_with("file:") {
            return parse_file_url(url);
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(invalid(
                url,
                format!(
                    "unsupported scheme {scheme:?} (expected gs://bucket[/prefix], file:///dir or a local path)"
                ),
            ));
        }
        let path = std::path::absolute(url)
            .map_err(|e| invalid(url, format!("cannot make the path absolute: {e}")))?;
        Ok(Location::Local { root: path })
    }
}

fn parse_file_url(url: &str) -> Result<Location> {
    if !url.starts_with("file://") {
        return Err(invalid(
            url,
            "file URLs need an absolute path: file:///abs/dir",
        ));
    }
    let parsed = url::Url::parse(url).map_err(|e| invalid(url, e.to_string()))?;
    match parsed.host_str() {
        None | Some("") | Some("localhost") => {}
        Some(host) => {
            return Err(invalid(
                url,
                format!(
                    "file URL names host {host:?}; only local paths are supported (file:///abs/dir)"
                ),
            ));
        }
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid(url, "file URL must not have a query or fragment"));
    }
    let root = parsed
        .to_file_path()
        .map_err(|()| invalid(url, "not a local absolute path"))?;
    Ok(Location::Local { root })
}

/// Cloud Storage bucket naming rules (the subset that matters for catching typos): 3-63
/// characters (up to 222 with dots, each dot-separated part at most 63), lowercase letters,
/// digits, `-`, `_` and `.`, starting and ending with a letter or digit.
fn validate_bucket(url: &str, bucket: &str) -> Result<()> {
    if bucket.is_empty() {
        return Err(invalid(
            url,
            "empty bucket name (expected gs://bucket[/prefix])",
        ));
    }
    if let Some(bad) = bucket
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')))
    {
        return Err(invalid(
            url,
            format!(
                "bucket name {bucket:?} contains {bad:?}; allowed: lowercase letters, digits, '-', '_', '.'"
            ),
        ));
    }
    let max = if bucket.contains('.') { 222 } else { 63 };
    if bucket.len() < 3 || bucket.len() > max {
        return Err(invalid(
            url,
            format!("bucket name {bucket:?} must be 3 to {max} characters long"),
        ));
    }
    if bucket
        .split('.')
        .any(|part| part.is_empty() || part.len() > 63)
    {
        return Err(invalid(
            url,
            format!("bucket name {bucket:?}: each dot-separated part must be 1 to 63 characters"),
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(bucket.chars().next()) || !alnum(bucket.chars().last()) {
        return Err(invalid(
            url,
            format!("bucket name {bucket:?} must start and end with a letter or digit"),
        ));
    }
    Ok(())
}

/// Cloud Storage object naming rules: 1-1024 bytes of UTF-8, no CR/LF, not `.` or `..`.
pub(crate) fn validate_gcs_name(url: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid(url, "empty object name"));
    }
    if name.len() > 1024 {
        return Err(invalid(url, "object name longer than 1024 bytes"));
    }
    if name.contains(['\r', '\n']) {
        return Err(invalid(
            url,
            "object name contains a carriage return or line feed",
        ));
    }
    if name == "." || name == ".." {
        return Err(invalid(url, "object name must not be '.' or '..'"));
    }
    Ok(())
}

/// Marker in the names of the local backend's in-progress temp files.
pub(crate) const LOCAL_TMP_MARKER: &str = ".sluice-tmp-";
/// Suffix of the local backend's metadata sidecars.
pub(crate) const LOCAL_META_SUFFIX: &str = ".sluice-meta.json";

/// Whether a file name is one of the local backend's own hidden files (temp or sidecar).
pub(crate) fn is_local_internal_name(name: &str) -> bool {
    name.starts_with('.') && (name.contains(LOCAL_TMP_MARKER) || name.ends_with(LOCAL_META_SUFFIX))
}

/// Local keys are `/`-separated relative paths that stay under the root: no empty, `.` or `..`
/// segments, no NUL, and no names the backend reserves for its own temp and sidecar files.
pub(crate) fn validate_local_key(url: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(invalid(url, "empty key"));
    }
    if key.contains('\0') {
        return Err(invalid(url, "key contains a NUL byte"));
    }
    for segment in key.split('/') {
        match segment {
            "" => {
                return Err(invalid(
                    url,
                    "key has an empty path segment (leading, trailing or double '/')",
                ));
            }
            "." | ".." => return Err(invalid(url, "key has a '.' or '..' path segment")),
            s if is_local_internal_name(s) => {
                return Err(invalid(
                    url,
                    format!("key segment {s:?} is reserved for Sluice's temp/metadata files"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Joins a store prefix (as returned by [`crate::open`]) and a relative name with exactly one
/// `/` between them; an empty prefix yields the name.
pub fn join_key(prefix: &str, name: &str) -> String {
    let name = name.trim_start_matches('/');
    if prefix.is_empty() {
        name.to_string()
    } else if prefix.ends_with('/') {
        format!("{prefix}{name}")
    } else {
        format!("{prefix}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(url: &str) -> String {
        match Location::parse(url) {
            Err(StorageError::InvalidLocation { url: u, reason }) => {
                assert_eq!(u, url);
                reason
            }
            other => panic!("{url}: expected InvalidLocation, got {other:?}"),
        }
    }

    #[test]
    fn gcs_urls() {
        let gcs = |b: &str, p: &str| Location::Gcs {
            bucket: b.into(),
            prefix: p.into(),
        };
        assert_eq!(
            Location::parse("gs://my-bucket").unwrap(),
            gcs("my-bucket", "")
        );
        assert_eq!(
            Location::parse("gs://my-bucket/").unwrap(),
            gcs("my-bucket", "")
        );
        assert_eq!(
            Location::parse("gs://b_1.example.com/raw/2024/").unwrap(),
            gcs("b_1.example.com", "raw/2024/")
        );
        assert_eq!(
            Location::parse("gs://abc/a b/ü.csv").unwrap(),
            gcs("abc", "a b/ü.csv")
        );
    }

    #[test]
    fn bad_gcs_urls_say_why() {
        assert!(reason("gs://").contains("empty bucket"));
        assert!(reason("gs:///x").contains("empty bucket"));
        assert!(reason("gs://My-Bucket/x").contains("'M'"));
        assert!(reason("gs://bu cket").contains("' '"));
        assert!(reason("gs://ab").contains("3 to 63"));
        assert!(reason(&format!("gs://{}", "a".repeat(64))).contains("3 to 63"));
        assert!(reason("gs://-abc").contains("start and end"));
        assert!(reason("gs://abc-").contains("start and end"));
        assert!(reason("gs://a..b").contains("dot-separated"));
        assert!(reason("gs://abc//x").contains("double slash"));
        assert!(reason("gs://abc/x\ny").contains("line feed"));
    }

    #[test]
    fn other_schemes_are_refused() {
        assert!(reason("s3://bucket/key").contains("unsupported scheme \"s3\""));
        assert!(reason("https://example.com/x").contains("\"https\""));
        assert!(reason("").contains("empty"));
    }

    #[test]
    fn file_urls_and_paths() {
        assert_eq!(
            Location::parse("file:///tmp/out").unwrap(),
            Location::Local {
                root: "/tmp/out".into()
            }
        );
        assert_eq!(
            Location::parse("file://localhost/tmp/a%20b").unwrap(),
            Location::Local {
                root: "/tmp/a b".into()
            }
        );
        assert_eq!(
            Location::parse("/var/data").unwrap(),
            Location::Local {
                root: "/var/data".into()
            }
        );
        let rel = Location::parse("out/dir").unwrap();
        let Location::Local { root } = rel else {
            panic!()
        };
        assert!(root.is_absolute());
        assert!(root.ends_with("out/dir"));
        assert!(reason("file://otherhost/x").contains("otherhost"));
        assert!(reason("file:relative").contains("absolute"));
        assert!(reason("file:///x?y=1").contains("query"));
    }

    #[test]
    fn local_keys() {
        let ok = |k: &str| validate_local_key("u", k).is_ok();
        assert!(ok("a"));
        assert!(ok("dir/sub/file.parquet"));
        assert!(ok(".hidden"));
        assert!(!ok(""));
        assert!(!ok("/abs"));
        assert!(!ok("a//b"));
        assert!(!ok("a/"));
        assert!(!ok("../escape"));
        assert!(!ok("a/./b"));
        assert!(!ok("dir/.x.sluice-tmp-123"));
        assert!(!ok(".x.sluice-meta.json"));
        assert!(is_local_internal_name(".data.csv.sluice-meta.json"));
        assert!(!is_local_internal_name("data.csv.sluice-meta.json"));
    }

    #[test]
    fn joins_keys() {
        assert_eq!(join_key("", "a.csv"), "a.csv");
        assert_eq!(join_key("raw", "a.csv"), "raw/a.csv");
        assert_eq!(join_key("raw/", "a.csv"), "raw/a.csv");
        assert_eq!(join_key("raw/", "/a.csv"), "raw/a.csv");
    }
}
