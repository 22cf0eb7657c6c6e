//! Scrubbing known secret values from text that leaves the process (re-emitted log lines,
//! uploaded artifacts). dbt already scrubs `DBT_ENV_SECRET_` values itself; this is the second
//! line of defence, so a dbt bug or an odd code path cannot leak the token we handed it.

/// What a secret is replaced with.
pub const MASK: &str = "*****";
/// Shorter values are not scrubbed: replacing every `dummy` or `true` would garble logs, and a
/// value that short is no secret (the emulators' placeholder token is one).
pub const MIN_SECRET_LEN: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<Vec<u8>>,
}

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .map(|s| s.as_bytes().to_vec())
            .collect();
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret masked.
    pub fn redact<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        if self.secrets.iter().all(|s| !contains(text.as_bytes(), s)) {
            return std::borrow::Cow::Borrowed(text);
        }
        let bytes = self.redact_bytes(text.as_bytes());
        // Secrets are whole UTF-8 strings and so is the mask: the result is still UTF-8.
        std::borrow::Cow::Owned(String::from_utf8(bytes).expect("masking keeps UTF-8 valid"))
    }

    fn redact_bytes(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        'outer: while i < input.len() {
            for secret in &self.secrets {
                if input[i..].starts_with(secret) {
                    out.extend_from_slice(MASK.as_bytes());
                    i += secret.len();
                    continue 'outer;
                }
            }
            out.push(input[i]);
            i += 1;
        }
        out
    }

    /// A scrubber for a byte stream cut into arbitrary chunks.
    pub fn stream(&self) -> StreamRedactor<'_> {
        StreamRedactor {
            redactor: self,
            carry: Vec::new(),
        }
    }

    fn longest(&self) -> usize {
        self.secrets.first().map_or(0, Vec::len)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Masks secrets that may straddle chunk boundaries: it holds back the last `longest - 1` bytes
/// of each chunk until the next one shows whether they start a secret.
pub struct StreamRedactor<'r> {
    redactor: &'r Redactor,
    carry: Vec<u8>,
}

impl StreamRedactor<'_> {
    /// Feeds a chunk; returns the bytes that are final.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.redactor.is_empty() {
            return chunk.to_vec();
        }
        self.carry.extend_from_slice(chunk);
        let hold = self.redactor.longest() - 1;
        if self.carry.len() <= hold {
            return Vec::new();
        }
        // Only bytes whose every possible match lies inside `carry` can be decided now. Scan
        // a prefix, but let a match that starts in it run past its end.
        let decide = self.carry.len() - hold;
        let mut out = Vec::with_capacity(decide);
        let mut i = 0;
        'outer: while i < decide {
            for secret in &self.redactor.secrets {
                if self.carry[i..].starts_with(secret) {
                    out.extend_from_slice(MASK.as_bytes());
                    i += secret.len();
                    continue 'outer;
                }
            }
            out.push(self.carry[i]);
            i += 1;
        }
        self.carry.drain(..i);
        out
    }

    /// The held-back tail, scrubbed, at end of stream.
    pub fn finish(self) -> Vec<u8> {
        self.redactor.redact_bytes(&self.carry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_and_skips_short_values() {
        let r = Redactor::new(["ya29.secret-token", "dummy"]);
        assert_eq!(
            r.redact("a ya29.secret-token b ya29.secret-tokenya29.secret-token dummy"),
            "a ***** b ********** dummy"
        );
        assert!(matches!(r.redact("clean"), std::borrow::Cow::Borrowed(_)));
        assert!(Redactor::new(["short"]).is_empty());
    }

    #[test]
    fn longest_secret_wins() {
        let r = Redactor::new(["abcdefgh", "abcdefgh-and-more"]);
        assert_eq!(r.redact("x abcdefgh-and-more y"), "x ***** y");
    }

    #[test]
    fn stream_matches_whole_text_for_every_chunking() {
        let r = Redactor::new(["SECRET-VALUE-1", "another-secret"]);
        let text =
            b"startSECRET-VALUE-1mid another-secretSECRET-VALUE-1 SECRET-VALUE- end another-secre";
        let expected = r.redact(std::str::from_utf8(text).unwrap()).into_owned();
        for size in 1..text.len() + 1 {
            let mut s = r.stream();
            let mut out = Vec::new();
            for chunk in text.chunks(size) {
                out.extend(s.push(chunk));
            }
            out.extend(s.finish());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "chunk size {size}"
            );
        }
    }

    #[test]
    fn stream_without_secrets_passes_through() {
        let r = Redactor::new([]);
        let mut s = r.stream();
        assert_eq!(s.push(b"abc"), b"abc");
        assert!(s.finish().is_empty());
    }
}
