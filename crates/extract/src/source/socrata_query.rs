//! The SoQL Sluice sends to Socrata: the configured resource (with the user's own `$select`,
//! `$where` and filters), the system fields it adds, and the literals of its windows.

use crate::error::{ExtractError, Result};

/// Socrata's system fields, selected into the data under names BigQuery accepts.
pub(crate) const SYSTEM_FIELDS: [(&str, &str, &str); 3] = [
    (":id", "_socrata_id", "text"),
    (":updated_at", "_socrata_updated_at", "fixed_timestamp"),
    (":created_at", "_socrata_created_at", "fixed_timestamp"),
];

/// The column of the written data that carries the incremental cursor.
pub(crate) const CURSOR_COLUMN: &str = "_socrata_updated_at";

/// The names of the columns as written: `:id` -> `_socrata_id`, others unchanged.
pub(crate) fn written_name(field: &str) -> &str {
    SYSTEM_FIELDS
        .iter()
        .find(|(soda, _, _)| *soda == field)
        .map_or(field, |(_, ours, _)| ours)
}

/// `https://HOST/resource/ID` plus the query parameters the user added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SocrataResource {
    /// `https://HOST/resource/ID` (no extension, no query).
    pub base: String,
    pub id: String,
    /// Parameters sent on every request as given (`$$app_token=...`, simple filters, `$q`).
    pub extra_query: Vec<String>,
    /// The user's `$select`, decoded; the system fields are appended to it.
    pub select: Option<String>,
    /// The user's `$where`, decoded; combined with Sluice's window as `(user) AND (window)`.
    pub where_: Option<String>,
    /// Every kept parameter, raw, in order: what names the source (`naming`).
    pub identity_query: Vec<String>,
}

impl SocrataResource {
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let shown = crate::redact::redact_url(url);
        let bad = |why: &str| {
            ExtractError::Config(format!(
                "Socrata resource {shown}: {why} (expected https://HOST/resource/ID)"
            ))
        };
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let base = base.trim_end_matches('/');
        let (host_part, id) = base
            .rsplit_once("/resource/")
            .ok_or_else(|| bad("no /resource/ segment"))?;
        if !(host_part.starts_with("https://") || host_part.starts_with("http://")) {
            return Err(bad("not an http(s) URL"));
        }
        let id = id
            .trim_end_matches(".json")
            .trim_end_matches(".csv")
            .to_string();
        if id.is_empty() || id.contains('/') {
            return Err(bad("missing dataset id"));
        }
        let mut resource = SocrataResource {
            base: format!("{host_part}/resource/{id}"),
            id,
            extra_query: Vec::new(),
            select: None,
            where_: None,
            identity_query: Vec::new(),
        };
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = param.split_once('=').unwrap_or((param, ""));
            let name = percent_decode(raw_name).to_ascii_lowercase();
            match name.as_str() {
                // Paging is ours: a pasted browser URL's paging would cut the pull short.
                "$limit" | "$offset" | "$order" => {
                    tracing::debug!(
                        resource = %shown,
                        "Socrata {shown}: dropping {name} from the URL (Sluice pages by \
                         :updated_at, :id itself)"
                    );
                    continue;
                }
                "$group" | "$having" | "$query" => {
                    return Err(ExtractError::Config(format!(
                        "Socrata resource {shown}: {name} cannot be paged incrementally by \
                         :updated_at, :id; extract it as a plain --url instead"
                    )));
                }
                "$select" => {
                    let select = percent_decode(raw_value);
                    if let Some(function) = aggregate_in(&select) {
                        return Err(ExtractError::Config(format!(
                            "Socrata resource {shown}: $select uses the aggregate {function}(), \
                             which cannot be paged incrementally by :updated_at, :id; extract it \
                             as a plain --url instead"
                        )));
                    }
                    resource.select = Some(select);
                }
                "$where" => resource.where_ = Some(percent_decode(raw_value)),
                _ => resource.extra_query.push(param.to_string()),
            }
            resource.identity_query.push(param.to_string());
        }
        Ok(resource)
    }

    /// The columns every data request selects: the user's (or `*`) and the system fields.
    pub(crate) fn select_list(&self) -> String {
        let user = self.select.as_deref().unwrap_or("*").trim();
        let present: Vec<String> = split_top_level(user)
            .iter()
            .map(|item| item.trim().to_ascii_lowercase())
            .collect();
        let mut list = user.to_string();
        for (field, _, _) in SYSTEM_FIELDS {
            if !present.iter().any(|p| p == field) {
                list.push_str(", ");
                list.push_str(field);
            }
        }
        list
    }

    /// `https://HOST/resource/ID.{ext}?{extra}&{params}`.
    pub(crate) fn url(&self, ext: &str, params: &[(&str, String)]) -> String {
        let mut parts: Vec<String> = self.extra_query.clone();
        parts.extend(
            params
                .iter()
                .map(|(k, v)| format!("{k}={}", encode_query_value(v))),
        );
        format!("{}.{ext}?{}", self.base, parts.join("&"))
    }
}

/// `a AND b AND ...` of the present clauses, each parenthesised.
pub(crate) fn and_all(clauses: &[Option<String>]) -> Option<String> {
    let present: Vec<String> = clauses.iter().flatten().map(|c| format!("({c})")).collect();
    (!present.is_empty()).then(|| present.join(" AND "))
}

/// A SoQL string literal.
pub(crate) fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Socrata timestamps (`2026-01-05T10:00:00.000Z`, or floating) in SoQL's floating form
/// `YYYY-MM-DDTHH:MM:SS.mmm`, UTC: the form of the window bounds in `$where` and in the
/// manifest. Digits past the millisecond are kept (Socrata has none), so equality holds.
pub(crate) fn normalize_timestamp(value: &str) -> Option<String> {
    let value = value.trim();
    let naive = match chrono::DateTime::parse_from_rfc3339(value) {
        Ok(t) => t.naive_utc(),
        Err(_) => chrono::NaiveDateTime::parse_from_str(
            value.trim_end_matches('Z'),
            "%Y-%m-%dT%H:%M:%S%.f",
        )
        .ok()?,
    };
    let millis = naive.format("%Y-%m-%dT%H:%M:%S%.3f").to_string();
    if naive.and_utc().timestamp_subsec_nanos() % 1_000_000 == 0 {
        Some(millis)
    } else {
        Some(naive.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
    }
}

/// The first aggregate function called in a `$select`, if any.
fn aggregate_in(select: &str) -> Option<String> {
    const AGGREGATES: [&str; 7] = [
        "count",
        "sum",
        "avg",
        "min",
        "max",
        "stddev_pop",
        "stddev_samp",
    ];
    let bytes = select.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = select[start..i].to_ascii_lowercase();
            let preceded_by_colon = start > 0 && bytes[start - 1] == b':';
            let mut j = i;
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            if !preceded_by_colon
                && bytes.get(j) == Some(&b'(')
                && AGGREGATES.contains(&word.as_str())
            {
                return Some(word);
            }
        } else if bytes[i] == b'\'' {
            // Skip string literals.
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                i += 1;
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    None
}

/// Splits a `$select` at commas outside parentheses and string literals.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    for (i, c) in text.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Percent-decodes a query component (`+` is a space, as in forms).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = hex {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a SoQL value, leaving the characters SoQL uses readable in logs.
pub(crate) fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:$(),*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resources_and_keeps_the_users_select_and_where() {
        let r = SocrataResource::parse(
            "https://data.city.gov/resource/abcd-1234.json?$$app_token=T&$limit=5&boro=BK\
             &%24select=name,%20cost&$where=cost%20%3E%2010&$order=name",
        )
        .unwrap();
        assert_eq!(r.base, "https://data.city.gov/resource/abcd-1234");
        assert_eq!(r.id, "abcd-1234");
        assert_eq!(r.extra_query, ["$$app_token=T", "boro=BK"]);
        assert_eq!(r.select.as_deref(), Some("name, cost"));
        assert_eq!(r.where_.as_deref(), Some("cost > 10"));
        assert_eq!(
            r.identity_query,
            [
                "$$app_token=T",
                "boro=BK",
                "%24select=name,%20cost",
                "$where=cost%20%3E%2010"
            ]
        );
        assert_eq!(r.select_list(), "name, cost, :id, :updated_at, :created_at");
        assert!(SocrataResource::parse("https://data.city.gov/api/views/abcd").is_err());
        assert!(SocrataResource::parse("ftp://h/resource/x").is_err());
        let url = r.url(
            "csv",
            &[("$where", ":updated_at > '2024-01-01T00:00:00'".into())],
        );
        assert_eq!(
            url,
            "https://data.city.gov/resource/abcd-1234.csv?$$app_token=T&boro=BK&$where=:updated_at%20%3E%20%272024-01-01T00:00:00%27"
        );
    }

    #[test]
    fn system_fields_are_added_once() {
        let r = SocrataResource::parse("https://h/resource/a?$select=:id,name").unwrap();
        assert_eq!(r.select_list(), ":id,name, :updated_at, :created_at");
        let r = SocrataResource::parse("https://h/resource/a").unwrap();
        assert_eq!(r.select_list(), "*, :id, :updated_at, :created_at");
    }

    #[test]
    fn aggregates_and_groups_are_usage_errors_naming_the_url() {
        for url in [
            "https://h/resource/a?$select=boro,count(*)",
            "https://h/resource/a?$select=MAX%20(cost)",
            "https://h/resource/a?$group=boro",
            "https://h/resource/a?$query=SELECT%20*",
        ] {
            let err = SocrataResource::parse(url).unwrap_err();
            assert!(err.is_config(), "{url}");
            assert!(err.to_string().contains("https://h/resource/a"), "{err}");
        }
        // Not aggregates: a column named like one, a string, a system field.
        for select in ["max_cost", "upper(name)", "'count(' AS c", ":updated_at"] {
            let url = format!(
                "https://h/resource/a?$select={}",
                encode_query_value(select)
            );
            assert!(SocrataResource::parse(&url).is_ok(), "{select}");
        }
    }

    #[test]
    fn timestamps_normalise_to_the_floating_form() {
        assert_eq!(
            normalize_timestamp("2026-01-05T10:00:00.000Z").as_deref(),
            Some("2026-01-05T10:00:00.000")
        );
        assert_eq!(
            normalize_timestamp("2026-01-05T12:00:00+02:00").as_deref(),
            Some("2026-01-05T10:00:00.000")
        );
        assert_eq!(
            normalize_timestamp("2026-01-05T10:00:00.5").as_deref(),
            Some("2026-01-05T10:00:00.500")
        );
        assert_eq!(
            normalize_timestamp("2026-01-05T10:00:00.123456Z").as_deref(),
            Some("2026-01-05T10:00:00.123456")
        );
        assert_eq!(normalize_timestamp("yesterday"), None);
    }

    #[test]
    fn clauses_combine_with_and() {
        assert_eq!(
            and_all(&[
                Some("a = 1 OR b = 2".into()),
                None,
                Some(":updated_at > 'x'".into())
            ])
            .as_deref(),
            Some("(a = 1 OR b = 2) AND (:updated_at > 'x')")
        );
        assert_eq!(and_all(&[None]), None);
        assert_eq!(literal("O'Hare"), "'O''Hare'");
        assert_eq!(written_name(":updated_at"), "_socrata_updated_at");
        assert_eq!(written_name("zip"), "zip");
    }
}
