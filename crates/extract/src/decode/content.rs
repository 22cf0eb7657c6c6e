//! The not-data check: an HTML page (a portal's maintenance or login page) or a JSON error
//! body served with `200` where a data file was expected must fail the item, not be stored as
//! the data. Decided from the `Content-Type` (HTTP only) and the first bytes of the body; only
//! a small prefix ([`SNIFF_BYTES`]) is ever looked at.

use super::is_csv_like;
use crate::config::OutputFormat;

/// How much of a body the sniffer looks at (and the HTTP source buffers for it).
pub(crate) const SNIFF_BYTES: usize = 1024;
/// How many characters of the body a not-data message quotes.
const SNIPPET_CHARS: usize = 80;

/// What an item (or zip member) is expected to hold, which decides what is "not data".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// CSV-like (`.csv`, `.tsv`, ..., or no extension converted to Parquet): markup (HTML,
    /// XML) and JSON documents are not data.
    Table,
    /// Any other file (`.json`, `.xml`, `.pdf`, no extension): only an HTML page is not data.
    /// No extension counts here even in passthrough, so an extension-less JSON API still works.
    Data,
    /// `--accept-any-content`, or the source is itself HTML (`.html`): no check.
    Anything,
}

impl Expect {
    pub fn new(data_ext: &str, format: OutputFormat, accept_any_content: bool) -> Expect {
        if accept_any_content || matches!(data_ext, "html" | "htm" | "xhtml" | "shtml") {
            Expect::Anything
        } else if is_csv_like(data_ext) && (!data_ext.is_empty() || format == OutputFormat::Parquet)
        {
            Expect::Table
        } else {
            Expect::Data
        }
    }

    fn expected(self, data_ext: &str) -> String {
        match (self, data_ext) {
            (Expect::Table, "") => "CSV data".to_string(),
            (Expect::Table, ext) => format!("CSV data (.{ext})"),
            (_, "") => "a data file".to_string(),
            (_, ext) => format!("a .{ext} file"),
        }
    }
}

/// The `Content-Type` essence, lowercased (`text/html; charset=utf-8` -> `text/html`).
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn kind_of_content_type(expect: Expect, content_type: &str) -> Option<&'static str> {
    let essence = essence(content_type);
    if essence == "text/html" || essence == "application/xhtml+xml" {
        return Some("an HTML page");
    }
    if expect == Expect::Table {
        if essence == "application/json" || essence.ends_with("+json") {
            return Some("a JSON document");
        }
        if essence == "text/xml" || essence == "application/xml" || essence.ends_with("+xml") {
            return Some("an XML document");
        }
    }
    None
}

/// The body after a UTF-8 byte order mark and leading ASCII whitespace.
fn content_start(prefix: &[u8]) -> &[u8] {
    let body = prefix.strip_prefix(b"\xef\xbb\xbf").unwrap_or(prefix);
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    &body[start..]
}

fn starts_with_ignore_case(data: &[u8], pattern: &[u8]) -> bool {
    data.len() >= pattern.len() && data[..pattern.len()].eq_ignore_ascii_case(pattern)
}

fn kind_of_body(expect: Expect, prefix: &[u8]) -> Option<&'static str> {
    let body = content_start(prefix);
    const HTML: [&[u8]; 6] = [
        b"<!doctype html",
        b"<html",
        b"<head",
        b"<body",
        b"<title",
        b"<meta",
    ];
    if HTML.iter().any(|p| starts_with_ignore_case(body, p)) {
        return Some("an HTML page");
    }
    if expect != Expect::Table {
        return None;
    }
    // No CSV header starts with a tag (`<?xml`, `<!--`, `<Error>`) or a JSON object: these
    // are error pages and API error bodies (Socrata: `{"error":true,"message":...}`).
    match body {
        [b'<', next, ..] if next.is_ascii_alphabetic() || matches!(next, b'!' | b'?' | b'/') => {
            Some("markup (HTML/XML)")
        }
        [b'{', rest @ ..] => {
            let rest = content_start(rest);
            matches!(rest.first(), Some(b'"' | b'}')).then_some("a JSON document")
        }
        [b'[', rest @ ..] => {
            let rest = content_start(rest);
            matches!(rest.first(), Some(b'{')).then_some("a JSON document")
        }
        _ => None,
    }
}

/// A one-line, printable quote of the body's start.
pub(crate) fn snippet(prefix: &[u8]) -> String {
    let text = String::from_utf8_lossy(content_start(prefix));
    let mut out = String::new();
    let mut last_space = false;
    let mut truncated = false;
    for (count, c) in text.chars().enumerate() {
        if count >= SNIPPET_CHARS {
            truncated = true;
            break;
        }
        if c.is_whitespace() || c.is_control() {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
        } else {
            out.push(c);
            last_space = false;
        }
    }
    if truncated {
        out.push_str("...");
    }
    out
}

/// Why these bytes (and content type) are not data for `expect`, as a message; `None` when
/// they may be data. `data_ext` only words the message.
pub(crate) fn not_data(
    expect: Expect,
    data_ext: &str,
    content_type: Option<&str>,
    prefix: &[u8],
) -> Option<String> {
    if expect == Expect::Anything {
        return None;
    }
    let kind = content_type
        .and_then(|ct| kind_of_content_type(expect, ct))
        .or_else(|| kind_of_body(expect, prefix))?;
    let served_as = content_type
        .map(|ct| format!("Content-Type {ct}, "))
        .unwrap_or_default();
    Some(format!(
        "not data: got {kind} where {} was expected ({served_as}body starts \"{}\"); \
         if this source really serves such content, use --accept-any-content",
        expect.expected(data_ext),
        snippet(prefix)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &[u8] =
        b"\n  <!DOCTYPE html>\n<html><head><title>Down for maintenance</title></head><body>\
        We will be back shortly. We will be back shortly. We will be back shortly.</body></html>";

    #[test]
    fn expectations_follow_extension_format_and_flag() {
        use OutputFormat::*;
        assert_eq!(Expect::new("csv", Passthrough, false), Expect::Table);
        assert_eq!(Expect::new("tsv", Passthrough, false), Expect::Table);
        assert_eq!(Expect::new("", Passthrough, false), Expect::Data);
        assert_eq!(Expect::new("", Parquet, false), Expect::Table);
        assert_eq!(Expect::new("json", Passthrough, false), Expect::Data);
        // Parquet refuses a .json member as a usage error of its own, before reading it.
        assert_eq!(Expect::new("json", Parquet, false), Expect::Data);
        assert_eq!(Expect::new("html", Passthrough, false), Expect::Anything);
        assert_eq!(Expect::new("csv", Parquet, true), Expect::Anything);
    }

    #[test]
    fn html_is_not_data_by_content_type_or_body() {
        let msg = not_data(Expect::Table, "csv", Some("text/html; charset=UTF-8"), PAGE).unwrap();
        assert!(msg.contains("an HTML page"), "{msg}");
        assert!(
            msg.contains("Content-Type text/html; charset=UTF-8"),
            "{msg}"
        );
        assert!(msg.contains("CSV data (.csv)"), "{msg}");
        assert!(
            msg.contains("body starts \"<!DOCTYPE html> <html><head><title>Down for maintenance"),
            "{msg}"
        );
        assert!(
            msg.contains("...") && msg.contains("--accept-any-content"),
            "{msg}"
        );
        // Served as text/csv, or with no type at all: the body decides.
        assert!(not_data(Expect::Table, "csv", Some("text/csv"), PAGE).is_some());
        assert!(not_data(Expect::Data, "json", None, b"\xef\xbb\xbf<HTML>").is_some());
        assert!(not_data(Expect::Data, "zip", Some("application/xhtml+xml"), b"PK").is_some());
        assert!(not_data(Expect::Anything, "csv", Some("text/html"), PAGE).is_none());
    }

    #[test]
    fn json_and_xml_bodies_are_not_tables() {
        let socrata = br#"{"error":true,"message":"Service temporarily unavailable"}"#;
        let msg = not_data(Expect::Table, "csv", None, socrata).unwrap();
        assert!(msg.contains("a JSON document"), "{msg}");
        assert!(msg.contains("Service temporarily unavailable"), "{msg}");
        assert!(not_data(Expect::Table, "csv", None, b" [ {\"a\": 1}]").is_some());
        assert!(
            not_data(
                Expect::Table,
                "csv",
                None,
                b"<?xml version=\"1.0\"?><Error>"
            )
            .is_some()
        );
        assert!(not_data(Expect::Table, "csv", Some("application/json"), b"a,b\n").is_some());
        // The same bodies are fine where they are the data.
        assert!(not_data(Expect::Data, "json", Some("application/json"), socrata).is_none());
        assert!(not_data(Expect::Data, "xml", Some("text/xml"), b"<?xml ?><a/>").is_none());
    }

    #[test]
    fn csv_that_merely_looks_odd_is_data() {
        for body in [
            &b"id,name\n1,x\n"[..],
            b"<5,>10\n1,2\n",
            b"{a},b\n",
            b"[1],[2]\n",
            b"\"<html>\",b\n",
            b"",
            b"\x1f\x8b\x08\x00",
            b"PK\x03\x04",
        ] {
            assert_eq!(not_data(Expect::Table, "csv", Some("text/csv"), body), None);
        }
    }

    #[test]
    fn snippets_are_one_printable_line() {
        assert_eq!(snippet(b"a\r\n\tb\x00\x07c"), "a b c");
        assert_eq!(snippet(&[b'x'; 100]).len(), 83);
        assert_eq!(snippet(b"caf\xc3\xa9 \xff"), "caf\u{e9} \u{fffd}");
    }
}
