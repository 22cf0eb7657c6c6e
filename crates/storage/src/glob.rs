//! Glob listing: list the literal prefix once, then match keys with `globset`.

use globset::{GlobBuilder, GlobMatcher};

use crate::{ObjectMeta, ObjectStore, Result, StorageError};

/// Characters that start glob syntax (`\` too: an escaped character is treated as the end of
/// the literal part, which only makes the listed prefix shorter, never wrong).
const GLOB_CHARS: &[char] = &['*', '?', '[', '{', '\\'];

/// The part of `pattern` before its first glob character: every match starts with it, so it
/// is the prefix to list.
pub(crate) fn literal_prefix(pattern: &str) -> &str {
    match pattern.find(GLOB_CHARS) {
        Some(at) => &pattern[..at],
        None => pattern,
    }
}

/// The directory every match of `pattern` lies under: its literal prefix up to the last `/`
/// (`raw/**/*.parquet` -> `raw/`, `*.csv` -> ``). What paths below a glob are relative to.
pub fn glob_base(pattern: &str) -> &str {
    let literal = literal_prefix(pattern);
    match literal.rfind('/') {
        Some(i) => &literal[..=i],
        None => "",
    }
}

/// `*`, `?` and `[...]` stay within one `/`-separated segment; `**` crosses them.
pub(crate) fn compile(store: &dyn ObjectStore, pattern: &str) -> Result<GlobMatcher> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|e| StorageError::InvalidLocation {
            url: store.url_of(pattern),
            reason: format!("bad glob pattern: {e}"),
        })
}

pub(crate) async fn list_glob(store: &dyn ObjectStore, pattern: &str) -> Result<Vec<ObjectMeta>> {
    let matcher = compile(store, pattern)?;
    let listed = store.list(literal_prefix(pattern)).await?;
    Ok(listed
        .into_iter()
        .filter(|meta| matcher.is_match(&meta.key))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_bases() {
        assert_eq!(glob_base("raw/**/*.parquet"), "raw/");
        assert_eq!(glob_base("raw/part-*.csv"), "raw/");
        assert_eq!(glob_base("*.csv"), "");
        assert_eq!(glob_base("raw/exact.csv"), "raw/");
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix("raw/2024/*.csv"), "raw/2024/");
        assert_eq!(literal_prefix("raw/part-*"), "raw/part-");
        assert_eq!(literal_prefix("**/x"), "");
        assert_eq!(literal_prefix("a/b{c,d}"), "a/b");
        assert_eq!(literal_prefix("a/[0-9]"), "a/");
        assert_eq!(literal_prefix("a/b?"), "a/b");
        assert_eq!(literal_prefix("a/\\*"), "a/");
        assert_eq!(literal_prefix("exact/key"), "exact/key");
    }

    fn matches(pattern: &str, key: &str) -> bool {
        GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .unwrap()
            .compile_matcher()
            .is_match(key)
    }

    #[test]
    fn star_stays_in_a_segment_double_star_crosses() {
        assert!(matches("raw/*.csv", "raw/a.csv"));
        assert!(!matches("raw/*.csv", "raw/sub/a.csv"));
        assert!(matches("raw/**/*.csv", "raw/sub/a.csv"));
        assert!(matches("raw/**/*.csv", "raw/a.csv"));
        assert!(matches("raw/**", "raw/x/y/z"));
        assert!(!matches("raw/*.csv", "raw/a.csv.gz"));
        assert!(matches("raw/\\*.csv", "raw/*.csv"));
        assert!(!matches("raw/\\*.csv", "raw/a.csv"));
    }
}
