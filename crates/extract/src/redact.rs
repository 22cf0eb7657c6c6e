//! Keeping secrets out of logs, errors, object metadata and manifests.
//!
//! Open-data URLs often carry credentials in the query (`$$app_token=...` for Socrata,
//! `X-Amz-Signature` / `X-Goog-Signature` for signed URLs, `key=` for API keys). Every URL
//! that leaves this crate in text goes through [`redact_url`]; server-provided text goes
//! through [`scrub`] with the secrets we know.

use std::borrow::Cow;

const REDACTED: &str = "REDACTED";

/// Whether a query parameter name (already percent-decoded, any case) names a secret.
/// Over-matching only costs some log detail; under-matching leaks.
fn is_sensitive_param(name: &str) -> bool {
    let name = name.trim_start_matches('$').to_ascii_lowercase();
    const EXACT: [&str; 4] = ["sig", "code", "pwd", "jwt"];
    const CONTAINS: [&str; 8] = [
        "token",
        "secret",
        "passw",
        "signature",
        "credential",
        "auth",
        "key",
        "session",
    ];
    EXACT.contains(&name.as_str()) || CONTAINS.iter().any(|c| name.contains(c))
}

/// Whether a query parameter name, as written in a URL (percent-encoded), names a secret.
pub fn is_secret_query_param(raw_name: &str) -> bool {
    is_sensitive_param(&percent_decode(raw_name))
}

/// Whether an HTTP header's value may be logged.
pub fn is_sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "authorization"
        || name == "proxy-authorization"
        || name == "cookie"
        || name == "set-cookie"
        || is_sensitive_param(&name)
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
                Some((name, _)) if is_sensitive_param(&percent_decode(name)) => {
                    format!("{name}={REDACTED}")
                }
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
                "{}{user}:{REDACTED}@{host}{}",
                &base[..authority_start],
                &base[authority_end..]
            )
        }
        None => base.to_string(),
    }
}

/// The secret values inside a URL (sensitive query values, userinfo password), for [`scrub`].
pub fn url_secrets(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    let before_fragment = url.split_once('#').map_or(url, |(u, _)| u);
    if let Some((base, query)) = before_fragment.split_once('?') {
        for pair in query.split('&') {
            if let Some((name, value)) = pair.split_once('=')
                && is_sensitive_param(&percent_decode(name))
                && !value.is_empty()
            {
                secrets.push(value.to_string());
                let decoded = percent_decode(value).into_owned();
                if decoded != value {
                    secrets.push(decoded);
                }
            }
        }
        if let Some(pw) = userinfo_password(base) {
            secrets.push(pw);
        }
    } else if let Some(pw) = userinfo_password(before_fragment) {
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

/// `text` with every occurrence of every (non-trivial) secret replaced, and every URL in it
/// redacted. For server-provided text (error bodies can echo a token) and third-party error
/// messages.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        // Very short "secrets" would shred ordinary text; real tokens are long.
        if secret.len() >= 4 {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    redact_urls_in_text(&out)
}

fn redact_urls_in_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("http://").or_else(|| rest.find("https://")) {
        // Take the earliest of the two schemes.
        let start = match (rest.find("http://"), rest.find("https://")) {
            (Some(a), Some(b)) => a.min(b),
            _ => start,
        };
        out.push_str(&rest[..start]);
        let url_len = rest[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')'))
            .unwrap_or(rest.len() - start);
        out.push_str(&redact_url(&rest[start..start + url_len]));
        rest = &rest[start + url_len..];
    }
    out.push_str(rest);
    out
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
    fn finds_url_secrets_and_scrubs_text() {
        let url = "https://u:pw1234@h/x?$$app_token=tok%2Fen99&limit=5";
        let secrets = url_secrets(url);
        assert!(secrets.contains(&"tok%2Fen99".to_string()));
        assert!(secrets.contains(&"tok/en99".to_string()));
        assert!(secrets.contains(&"pw1234".to_string()));
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
    fn sensitive_headers() {
        assert!(is_sensitive_header("X-App-Token"));
        assert!(is_sensitive_header("Authorization"));
        assert!(is_sensitive_header("x-api-key"));
        assert!(!is_sensitive_header("Content-Type"));
        assert!(!is_sensitive_header("ETag"));
    }
}
