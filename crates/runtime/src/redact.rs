//! Keeping secrets out of logs, errors, object metadata, manifests and uploaded artifacts: the
//! one redactor for every crate.
//!
//! Two kinds of protection, used together:
//!
//! - **By shape**: a URL's userinfo password and the values of query parameters whose name says
//!   "secret" (`$$app_token` for Socrata, `X-Amz-Signature` / `X-Goog-Signature` for signed
//!   URLs, `key=` for API keys, `access_token`...), and the values of headers such as
//!   `Authorization` or `X-App-Token` ([`redact_url`], [`is_sensitive_header`]). Over-matching
//!   a name only costs some log detail; under-matching leaks.
//! - **By value**: text that may echo a secret we know (a server's error body, dbt's log
//!   lines, its artifacts) goes through a [`Redactor`] holding the known values.
//!
//! # One rule: every known value of 4 bytes or more becomes `REDACTED`
//!
//! Before this module extract masked values of 4+ bytes as `REDACTED` and dbt masked values of
//! 8+ bytes as `*****`. The merged rule takes the shorter minimum because leaking is worse than
//! a garbled log line: a 6-character password in a URL's userinfo is realistic, and 8 would have
//! let it through. Below 4 bytes masking every occurrence (`1`, `ab`, `yes`) would shred
//! ordinary text while protecting nothing a credential is made of. The mask is `REDACTED`, the
//! word extract's manifests, logs and docs already showed users (`?token=REDACTED`), and the
//! same word [`crate::Secret`] prints.

use std::borrow::Cow;

/// What a secret is replaced with.
pub const MASK: &str = "REDACTED";

/// Known secret values shorter than this are not masked in free text (see the module docs).
/// URL and header redaction by shape masks values of any length.
pub const MIN_SECRET_LEN: usize = 4;

/// Whether a query parameter or header name (already percent-decoded, any case) names a
/// secret. The union of the lists extract and dbt kept before they were merged.
fn is_sensitive_name(name: &str) -> bool {
    let name = name.trim_start_matches('$').to_ascii_lowercase();
    const EXACT: [&str; 4] = ["sig", "code", "pwd", "jwt"];
    const CONTAINS: [&str; 8] = [
        // token, app_token, $$app_token, access_token, refresh_token, x-app-token
        "token",
        // secret, client_secret
        "secret",
        // password, passwd
        "passw",
        // signature, x-amz-signature, x-goog-signature
        "signature",
        // x-amz-credential, x-goog-credential, credentials
        "credential",
        // auth, authorization, proxy-authorization, x-auth-...
        "auth",
        // key, api_key, apikey, x-api-key, x-goog-api-key
        "key",
        // session, sessionid
        "session",
    ];
    EXACT.contains(&name.as_str()) || CONTAINS.iter().any(|c| name.contains(c))
}

/// Whether a query parameter name, as written in a URL (percent-encoded), names a secret.
pub fn is_secret_query_param(raw_name: &str) -> bool {
    is_sensitive_name(&percent_decode(raw_name))
}

/// Whether an HTTP header's value must not be logged.
pub fn is_sensitive_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(lower.as_str(), "cookie" | "set-cookie") || is_sensitive_name(&lower)
}

/// A header value as it may be logged: [`MASK`] for sensitive headers, else the value.
pub fn redact_header<'v>(name: &str, value: &'v str) -> &'v str {
    if is_sensitive_header(name) {
        MASK
    } else {
        value
    }
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') && !s.contains('+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The URL with secret query values, the password of any userinfo and the fragment replaced.
/// Works on text (no re-encoding), so what is logged looks like what was configured.
pub fn redact_url(url: &str) -> String {
    let (before_fragment, _) = url.split_once('#').unwrap_or((url, ""));
    let (base, query) = match before_fragment.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (before_fragment, None),
    };
    let mut out = redact_userinfo(base);
    if let Some(query) = query {
        out.push('?');
        let parts: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_query_param(name) => format!("{name}={MASK}"),
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out
}

fn redact_userinfo(base: &str) -> String {
    let Some(scheme_end) = base.find("://") else {
        return base.to_string();
    };
    let authority_start = scheme_end + 3;
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let authority = &base[authority_start..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!(
                "{}{user}:{MASK}@{host}{}",
                &base[..authority_start],
                &base[authority_end..]
            )
        }
        None => base.to_string(),
    }
}

/// The secret values inside a URL (sensitive query values, as written and percent-decoded, and
/// the userinfo password), for a [`Redactor`] of text that may echo them.
pub fn url_secrets(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    let before_fragment = url.split_once('#').map_or(url, |(u, _)| u);
    let base = match before_fragment.split_once('?') {
        Some((base, query)) => {
            for pair in query.split('&') {
                if let Some((name, value)) = pair.split_once('=')
                    && is_secret_query_param(name)
                    && !value.is_empty()
                {
                    secrets.push(value.to_string());
                    let decoded = percent_decode(value).into_owned();
                    if decoded != value {
                        secrets.push(decoded);
                    }
                }
            }
            base
        }
        None => before_fragment,
    };
    if let Some(pw) = userinfo_password(base) {
        secrets.push(pw);
    }
    secrets
}

fn userinfo_password(base: &str) -> Option<String> {
    let rest = &base[base.find("://")? + 3..];
    let authority = rest.split('/').next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, pw) = userinfo.split_once(':')?;
    (!pw.is_empty()).then(|| pw.to_string())
}

/// Every `http://` / `https://` URL inside `text` passed through [`redact_url`].
fn redact_urls_in_text(text: &str) -> Cow<'_, str> {
    let find = |s: &str| match (s.find("http://"), s.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if find(text).is_none() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find(rest) {
        out.push_str(&rest[..start]);
        let url_len = rest[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')'))
            .unwrap_or(rest.len() - start);
        out.push_str(&redact_url(&rest[start..start + url_len]));
        rest = &rest[start + url_len..];
    }
    out.push_str(rest);
    if out == text {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(out)
    }
}

/// Masks known secret values (and secrets in URLs by shape) in text that leaves the process.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is masked whole.
    secrets: Vec<Vec<u8>>,
}

impl Redactor {
    /// A redactor for these values; values shorter than [`MIN_SECRET_LEN`] are ignored.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .map(|s| s.as_bytes().to_vec())
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    /// No known values (URLs in text are still redacted by shape).
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every known value masked and every URL in it redacted.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let masked = if self.secrets.iter().any(|s| contains(text.as_bytes(), s)) {
            // Secrets are whole UTF-8 strings and so is the mask: the result is still UTF-8.
            Cow::Owned(
                String::from_utf8(self.redact_bytes(text.as_bytes()))
                    .expect("masking keeps UTF-8 valid"),
            )
        } else {
            Cow::Borrowed(text)
        };
        match masked {
            Cow::Borrowed(text) => redact_urls_in_text(text),
            Cow::Owned(text) => Cow::Owned(redact_urls_in_text(&text).into_owned()),
        }
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

    /// A scrubber for a byte stream cut into arbitrary chunks (uploaded files). It masks known
    /// values only: a URL cannot be delimited reliably across arbitrary binary chunks.
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

/// `text` with every known secret (of [`MIN_SECRET_LEN`] bytes or more) and every URL in it
/// redacted. For server-provided text (error bodies can echo a token) and third-party errors.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    Redactor::new(secrets.iter().map(String::as_str))
        .redact(text)
        .into_owned()
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
    fn redacts_secret_query_values_and_keeps_the_rest() {
        assert_eq!(
            redact_url(
                "https://data.city.gov/resource/abcd-1234.csv?$limit=10&$$app_token=SECRET&$order=:id"
            ),
            "https://data.city.gov/resource/abcd-1234.csv?$limit=10&$$app_token=REDACTED&$order=:id"
        );
        assert_eq!(
            redact_url(
                "https://s3.example/b/o.csv?X-Amz-Credential=AK%2F1&X-Amz-Signature=abc&x=1#frag"
            ),
            "https://s3.example/b/o.csv?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&x=1"
        );
        assert_eq!(
            redact_url("https://h/x?api_key=1&key=2&sig=3&access_token=4&%24%24app_token=5"),
            "https://h/x?api_key=REDACTED&key=REDACTED&sig=REDACTED&access_token=REDACTED&%24%24app_token=REDACTED"
        );
        assert_eq!(
            redact_url("https://user:pa55@host:8080/p?q=1"),
            "https://user:REDACTED@host:8080/p?q=1"
        );
        assert_eq!(redact_url("/local/file.csv"), "/local/file.csv");
        assert_eq!(redact_url("https://h/a.csv"), "https://h/a.csv");
    }

    #[test]
    fn the_union_of_both_lists() {
        // Every name either crate redacted before the merge, as a query parameter...
        for name in [
            "token",
            "app_token",
            "$$app_token",
            "%24%24app_token",
            "access_token",
            "refresh_token",
            "key",
            "api_key",
            "apikey",
            "signature",
            "X-Goog-Signature",
            "X-Amz-Credential",
            "client_secret",
            "password",
            "passwd",
            "pwd",
            "sig",
            "code",
            "jwt",
            "auth",
            "sessionid",
        ] {
            assert!(is_secret_query_param(name), "{name}");
            assert_eq!(
                redact_url(&format!("https://h/p?{name}=v&limit=5")),
                format!("https://h/p?{name}={MASK}&limit=5")
            );
        }
        // ...and as a header.
        for name in [
            "Authorization",
            "Proxy-Authorization",
            "X-App-Token",
            "x-api-key",
            "X-Goog-Api-Key",
            "Cookie",
            "Set-Cookie",
        ] {
            assert!(is_sensitive_header(name), "{name}");
            assert_eq!(redact_header(name, "Bearer ya29.x"), MASK);
        }
        for name in ["Content-Type", "ETag", "Range", "User-Agent"] {
            assert!(!is_sensitive_header(name), "{name}");
            assert_eq!(redact_header(name, "text/csv"), "text/csv");
        }
        for name in ["limit", "$order", "offset", "format", "year"] {
            assert!(!is_secret_query_param(name), "{name}");
        }
    }

    #[test]
    fn finds_url_secrets_and_scrubs_text() {
        let url = "https://u:pw1234@h/x?$$app_token=tok%2Fen99&limit=5";
        let secrets = url_secrets(url);
        assert!(secrets.contains(&"tok%2Fen99".to_string()));
        assert!(secrets.contains(&"tok/en99".to_string()));
        assert!(secrets.contains(&"pw1234".to_string()));
        assert_eq!(url_secrets("https://u:pw1234@h/x"), ["pw1234"]);
        let text =
            format!("server said: bad token tok/en99 for {url} (see https://h/y?token=zzzz)");
        let scrubbed = scrub(&text, &secrets);
        assert!(!scrubbed.contains("tok/en99"), "{scrubbed}");
        assert!(!scrubbed.contains("tok%2Fen99"), "{scrubbed}");
        assert!(!scrubbed.contains("zzzz"), "{scrubbed}");
        assert!(!scrubbed.contains("pw1234"), "{scrubbed}");
        assert!(scrubbed.contains("limit=5"), "{scrubbed}");
    }

    #[test]
    fn masks_every_occurrence_of_four_bytes_or_more() {
        let r = Redactor::new(["ya29.secret-token", "pw12", "abc"]);
        assert_eq!(
            r.redact("a ya29.secret-token b ya29.secret-tokenya29.secret-token pw12 abc"),
            "a REDACTED b REDACTEDREDACTED REDACTED abc"
        );
        assert!(matches!(r.redact("clean"), Cow::Borrowed(_)));
        assert!(Redactor::new(["abc", ""]).is_empty());
        // URLs in text are redacted by shape even with no known values.
        assert_eq!(
            Redactor::default().redact("GET https://h/x?key=k1&n=2 failed"),
            "GET https://h/x?key=REDACTED&n=2 failed"
        );
    }

    #[test]
    fn longest_secret_wins() {
        let r = Redactor::new(["abcdefgh", "abcdefgh-and-more"]);
        assert_eq!(r.redact("x abcdefgh-and-more y"), "x REDACTED y");
    }

    #[test]
    fn stream_matches_whole_text_for_every_chunking() {
        let r = Redactor::new(["SECRET-VALUE-1", "another-secret", "pw12"]);
        let text = b"startSECRET-VALUE-1mid another-secretSECRET-VALUE-1 SECRET-VALUE- pw1 pw12 end another-secre";
        let expected = r.redact(std::str::from_utf8(text).unwrap()).into_owned();
        assert!(!expected.contains("pw12"), "{expected}");
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
