//! Glob listing with the wildcards of `gcloud storage` (and `gsutil`): list the literal prefix
//! once, then match each key against the pattern.
//!
//! The rules (checked against `gcloud storage ls` on fake-gcs-server by
//! `tests/gcloud_globs.rs`; `docs/storage.md` lists where gcloud itself is odd):
//!
//! - `*` matches any characters within one `/`-separated segment;
//! - `**` matches any characters across segments, wherever it stands (`raw/**.parquet`,
//!   `raw/a**b`, `**a.csv`); a `**` that is a whole segment followed by `/` (`raw/**/x.csv`,
//!   `**/x.csv`) also matches zero directories (`raw/x.csv`, `x.csv`);
//! - three or more `*` in a row are one `*` (gcloud compresses them the same way);
//! - `?` matches one character but `/`; `[abc]`, `[a-z]`, `[!a-z]` one character (but `/`) in
//!   or not in the set, `]` first in the set is a member, a `[` without a closing `]` is itself;
//! - everything else is literal, including `{`, `}` and `\` (gcloud has no braces or escapes;
//!   `[*]` matches a literal `*`).

use crate::{ObjectMeta, ObjectStore, Result, StorageError};

/// One piece of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`
    Any,
    /// `[...]`
    Class(Class),
    /// `*`: a run of characters without `/`.
    Star,
    /// `**` inside a segment or at the end: any run of characters.
    DoubleStar,
    /// `**/` as a whole segment is `ZeroDirs` + `Dirs`: reads nothing, and may skip `Dirs`
    /// (zero directories).
    ZeroDirs,
    /// The rest of `**/`: any run of characters ending in `/`, so it can only be left by
    /// reading a `/`.
    Dirs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Class {
    negated: bool,
    /// Inclusive ranges; a single character is `(c, c)`. A reversed range holds nothing.
    ranges: Vec<(char, char)>,
}

impl Class {
    fn matches(&self, c: char) -> bool {
        c != '/' && self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

/// A compiled glob.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    /// Compiles `pattern`. Every string is a pattern (an unclosed `[` is a literal), so this
    /// cannot fail; [`list_glob`] refuses the patterns that can name no object.
    pub(crate) fn new(pattern: &str) -> Self {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    let run = chars[i..].iter().take_while(|&&c| c == '*').count();
                    let starts_segment = i == 0 || chars[i - 1] == '/';
                    let before_slash = chars.get(i + run) == Some(&'/');
                    i += run;
                    if run == 2 && starts_segment && before_slash {
                        tokens.extend([Token::ZeroDirs, Token::Dirs]);
                        i += 1; // the `/` belongs to `Dirs`
                    } else if run == 2 {
                        tokens.push(Token::DoubleStar);
                    } else {
                        tokens.push(Token::Star);
                    }
                    continue;
                }
                '?' => tokens.push(Token::Any),
                '[' => {
                    if let Some((class, end)) = parse_class(&chars, i) {
                        tokens.push(Token::Class(class));
                        i = end + 1;
                        continue;
                    }
                    tokens.push(Token::Char('['));
                }
                c => tokens.push(Token::Char(c)),
            }
            i += 1;
        }
        Self { tokens }
    }

    /// Whether `key` matches: a simulation of the pattern's automaton, one pass over the key
    /// (no backtracking, so no pattern makes matching slow).
    pub(crate) fn is_match(&self, key: &str) -> bool {
        let n = self.tokens.len();
        let mut current = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        current[0] = true;
        self.close(&mut current);
        for c in key.chars() {
            next.fill(false);
            for (pos, token) in self.tokens.iter().enumerate() {
                if !current[pos] {
                    continue;
                }
                match token {
                    Token::Char(l) => next[pos + 1] |= *l == c,
                    Token::Any => next[pos + 1] |= c != '/',
                    Token::Class(class) => next[pos + 1] |= class.matches(c),
                    Token::Star => next[pos] |= c != '/',
                    Token::DoubleStar => next[pos] = true,
                    Token::ZeroDirs => {}
                    Token::Dirs => {
                        next[pos] = true;
                        next[pos + 1] |= c == '/';
                    }
                }
            }
            self.close(&mut next);
            if !next.contains(&true) {
                return false;
            }
            std::mem::swap(&mut current, &mut next);
        }
        current[n]
    }

    /// Adds the positions reachable without reading a character: past every `*` and `**`
    /// (each may match nothing), into and past a `**/` (zero directories). One forward pass
    /// suffices: these moves only go forward.
    fn close(&self, states: &mut [bool]) {
        for (pos, token) in self.tokens.iter().enumerate() {
            if !states[pos] {
                continue;
            }
            match token {
                Token::Star | Token::DoubleStar => states[pos + 1] = true,
                Token::ZeroDirs => {
                    states[pos + 1] = true;
                    states[pos + 2] = true;
                }
                _ => {}
            }
        }
    }
}

/// `[...]` starting at `chars[open]`, fnmatch's way (what gcloud uses): `!` first negates,
/// a `]` right after `[` or `[!` is a member, `a-z` is a range. `None` without a closing `]`.
/// Returns the class and the index of its `]`.
fn parse_class(chars: &[char], open: usize) -> Option<(Class, usize)> {
    let mut j = open + 1;
    let negated = chars.get(j) == Some(&'!');
    if negated {
        j += 1;
    }
    let first = j;
    if chars.get(j) == Some(&']') {
        j += 1;
    }
    let close = j + chars.get(j..)?.iter().position(|&c| c == ']')?;
    let members = &chars[first..close];
    let mut ranges = Vec::new();
    let mut k = 0;
    while k < members.len() {
        if k + 2 < members.len() && members[k + 1] == '-' {
            ranges.push((members[k], members[k + 2]));
            k += 3;
        } else {
            ranges.push((members[k], members[k]));
            k += 1;
        }
    }
    Some((Class { negated, ranges }, close))
}

/// Whether `c` starts glob syntax at `chars[i]` (a `[` only when it opens a class).
fn starts_glob(chars: &[char], i: usize) -> bool {
    match chars[i] {
        '*' | '?' => true,
        '[' => parse_class(chars, i).is_some(),
        _ => false,
    }
}

/// The part of `pattern` before its first wildcard: every match starts with it, so it is the
/// prefix to list (the longest one that is safe).
pub(crate) fn literal_prefix(pattern: &str) -> &str {
    let chars: Vec<char> = pattern.chars().collect();
    match (0..chars.len()).find(|&i| starts_glob(&chars, i)) {
        Some(at) => {
            let bytes: usize = chars[..at].iter().map(|c| c.len_utf8()).sum();
            &pattern[..bytes]
        }
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

/// Patterns that can name no object: gcloud lists a directory for them, and a load that reads
/// nothing because of it is a surprise better stopped early.
fn check(store: &dyn ObjectStore, pattern: &str) -> Result<()> {
    let reason = if pattern.is_empty() {
        "names the whole bucket or directory, not objects: add `/**` to read every object in it"
    } else if pattern.ends_with('/') {
        "ends in `/`, so it names directories, not objects: add `**` to read every object below"
    } else {
        return Ok(());
    };
    Err(StorageError::InvalidLocation {
        url: store.url_of(pattern),
        reason: format!("bad glob pattern: {reason}"),
    })
}

pub(crate) async fn list_glob(store: &dyn ObjectStore, pattern: &str) -> Result<Vec<ObjectMeta>> {
    check(store, pattern)?;
    let compiled = Pattern::new(pattern);
    let listed = store.list(literal_prefix(pattern)).await?;
    Ok(listed
        .into_iter()
        .filter(|meta| compiled.is_match(&meta.key))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_bases() {
        assert_eq!(glob_base("raw/**/*.parquet"), "raw/");
        assert_eq!(glob_base("raw/**.parquet"), "raw/");
        assert_eq!(glob_base("raw/part-*.csv"), "raw/");
        assert_eq!(glob_base("*.csv"), "");
        assert_eq!(glob_base("raw/exact.csv"), "raw/");
        assert_eq!(glob_base("raw/[x/y/*.csv"), "raw/[x/y/");
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix("raw/2024/*.csv"), "raw/2024/");
        assert_eq!(literal_prefix("raw/part-*"), "raw/part-");
        assert_eq!(literal_prefix("**/x"), "");
        assert_eq!(literal_prefix("a/[0-9]"), "a/");
        assert_eq!(literal_prefix("a/b?"), "a/b");
        assert_eq!(literal_prefix("exact/key"), "exact/key");
        // Not wildcards in gcloud, so not here: the prefix runs on past them.
        assert_eq!(literal_prefix("a/b{c,d}*"), "a/b{c,d}");
        assert_eq!(literal_prefix("a/\\*"), "a/\\");
        // An unclosed `[` is a literal; a closed one is a class.
        assert_eq!(literal_prefix("a/[b/c*"), "a/[b/c");
        assert_eq!(literal_prefix("a/[]]x"), "a/");
        assert_eq!(literal_prefix("é/ü*"), "é/ü");
    }

    fn matches(pattern: &str, key: &str) -> bool {
        Pattern::new(pattern).is_match(key)
    }

    #[test]
    fn star_stays_in_a_segment() {
        assert!(matches("raw/*.csv", "raw/a.csv"));
        assert!(matches("raw/*.csv", "raw/.csv"));
        assert!(!matches("raw/*.csv", "raw/sub/a.csv"));
        assert!(!matches("raw/*.csv", "raw/a.csv.gz"));
        assert!(matches("raw/*/*.csv", "raw/x/a.csv"));
        assert!(!matches("raw/*/*.csv", "raw/a.csv"));
        assert!(matches("*", "top"));
        assert!(!matches("*", "raw/top"));
    }

    #[test]
    fn double_star_crosses_segments_anywhere() {
        assert!(matches("raw/**.parquet", "raw/a/b/c.parquet"));
        assert!(matches("raw/**.parquet", "raw/c.parquet"));
        assert!(!matches("raw/**.parquet", "rawx/c.parquet"));
        assert!(matches("**.parquet", "c.parquet"));
        assert!(matches("**a.parquet", "raw/xa.parquet"));
        assert!(matches("raw/a**b", "raw/ab"));
        assert!(matches("raw/a**b", "raw/a/x/b"));
        assert!(!matches("raw/a**b", "raw/a/x/b/c"));
        assert!(matches("raw/x**/c.parquet", "raw/x/y/c.parquet"));
        assert!(!matches("raw/x**/c.parquet", "raw/c.parquet"));
        assert!(matches("raw/**", "raw/x/y/z"));
        assert!(matches("**", "a/b"));
    }

    #[test]
    fn double_star_segment_matches_zero_directories() {
        assert!(matches("raw/**/a.csv", "raw/a.csv"));
        assert!(matches("raw/**/a.csv", "raw/x/y/a.csv"));
        assert!(!matches("raw/**/a.csv", "raw/xa.csv"));
        assert!(matches("**/a.csv", "a.csv"));
        assert!(matches("**/a.csv", "x/a.csv"));
        assert!(!matches("**/a.csv", "xa.csv"));
        // `**/` reads whole directories: once inside, only a `/` leads out.
        assert!(!matches("raw/**/a.csv", "raw/x/ya.csv"));
        assert!(!matches("raw/**/?.csv", "raw/xy.csv"));
        assert!(matches("raw/**/?.csv", "raw/x/y.csv"));
        assert!(matches("**/**/a.csv", "a.csv"));
        // Each `**/` on its own (gcloud only manages all-or-nothing here).
        assert!(matches("raw/**/x/**/d.csv", "raw/x/y/d.csv"));
        assert!(matches("raw/**/x/**/d.csv", "raw/q/x/d.csv"));
        assert!(matches("raw/**/x/**/d.csv", "raw/x/d.csv"));
        // After `**`, `*` still stays in its segment.
        assert!(matches("raw/**/x*.csv", "raw/a/x1.csv"));
        assert!(!matches("raw/**/x*.csv", "raw/x/a.csv"));
    }

    #[test]
    fn three_or_more_stars_are_one() {
        assert!(matches("***.csv", "a.csv"));
        assert!(!matches("***.csv", "raw/a.csv"));
        assert!(!matches("raw/****", "raw/a/b"));
    }

    #[test]
    fn question_marks_and_classes() {
        assert!(matches("raw/data-?.csv", "raw/data-1.csv"));
        assert!(!matches("raw/data-?.csv", "raw/data-10.csv"));
        assert!(!matches("raw?a", "raw/a"));
        assert!(matches("raw/data-[12].csv", "raw/data-2.csv"));
        assert!(!matches("raw/data-[12].csv", "raw/data-3.csv"));
        assert!(matches("raw/[a-c]x", "raw/bx"));
        assert!(!matches("raw/[a-c]x", "raw/dx"));
        assert!(matches("raw/[!a-c]x", "raw/dx"));
        assert!(!matches("raw/[!a-c]x", "raw/ax"));
        assert!(!matches("raw[!a]x", "raw/x"));
        assert!(matches("raw/[]a]", "raw/]"));
        assert!(matches("raw/[*]", "raw/*"));
        assert!(!matches("raw/[*]", "raw/a"));
        // fnmatch: `^` is no negation, just a member.
        assert!(matches("raw/[^a]x", "raw/^x"));
        assert!(!matches("raw/[^a]x", "raw/bx"));
        // A reversed range holds nothing.
        assert!(!matches("raw/[z-a]", "raw/m"));
    }

    #[test]
    fn literals_that_other_globs_treat_specially() {
        assert!(matches("raw/[", "raw/["));
        assert!(matches("raw/[x", "raw/[x"));
        assert!(matches("raw/{a,b}.csv", "raw/{a,b}.csv"));
        assert!(!matches("raw/{a,b}.csv", "raw/a.csv"));
        assert!(matches("raw/back\\s*", "raw/back\\slash"));
        assert!(matches("raw/é*", "raw/été"));
    }

    #[test]
    fn long_keys_and_many_stars_stay_fast() {
        let key = "a".repeat(1000) + "b";
        let pattern = "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*c";
        let started = std::time::Instant::now();
        assert!(!matches(pattern, &key));
        assert!(matches(&pattern.replace('c', "b"), &key));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
