//! Socrata SODA datasets, pulled as pages of CSV.
//!
//! The plan: one `$select=count(*)` (with the same `$where`) fixes the row count, so every task
//! computes the same pages `$order=:id&$limit=L&$offset=p*L`; each page is a work item and an
//! object of its own. With Parquet output a `$limit=0` probe reads the dataset's column types
//! (`X-SODA2-Fields` / `X-SODA2-Types`) so every page gets the same schema instead of one
//! inferred from its own rows (pages inferring differently would break BigQuery appends).
//! The CSV endpoint is used for data: JSON would turn every value into a string and drop nulls.
//!
//! Consistency: `$order=:id` keeps pages stable while the dataset does not change. Rows
//! added or updated during an execution can shift offsets; pull incrementally with `--since`
//! (`:updated_at > '...'`) or at quiet times.

use serde_json::Value;

use crate::config::SocrataOptions;
use crate::error::{ExtractError, Result};
use crate::source::http::{HttpClient, HttpTarget, SourceVersion};

/// Upper bound for the count and probe responses.
const SMALL_RESPONSE: usize = 1024 * 1024;

/// `https://HOST/resource/ID` plus any query parameters the user added (kept on every request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SocrataResource {
    /// `https://HOST/resource/ID` (no extension, no query).
    pub base: String,
    pub id: String,
    /// Extra query parameters from the configured URL, raw (`$$app_token=...`, filters).
    pub extra_query: Vec<String>,
}

impl SocrataResource {
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| {
            ExtractError::Config(format!(
                "Socrata resource {}: {why} (expected https://HOST/resource/ID)",
                crate::redact::redact_url(url)
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
        // Paging parameters are ours; drop them if the user pasted a browser URL.
        let extra_query = query
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let name = p.split('=').next().unwrap_or_default().to_ascii_lowercase();
                let name = name.replace("%24", "$");
                !matches!(name.as_str(), "$limit" | "$offset" | "$order" | "$select")
            })
            .map(str::to_string)
            .collect();
        Ok(SocrataResource {
            base: format!("{host_part}/resource/{id}"),
            id,
            extra_query,
        })
    }

    fn url(&self, ext: &str, params: &[(&str, String)]) -> String {
        let mut parts: Vec<String> = self.extra_query.clone();
        parts.extend(
            params
                .iter()
                .map(|(k, v)| format!("{k}={}", encode_query_value(v))),
        );
        format!("{}.{ext}?{}", self.base, parts.join("&"))
    }
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

/// One page of a planned Socrata pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SocrataPage {
    pub number: u64,
    pub offset: u64,
    pub limit: u64,
    /// Full URL (may carry `$$app_token`).
    pub url: String,
}

/// What planning a Socrata resource found.
#[derive(Debug, Clone)]
pub(crate) struct SocrataPlan {
    pub rows: u64,
    pub pages: Vec<SocrataPage>,
    /// Identifies the dataset content the pages were planned against.
    pub version: SourceVersion,
    /// Column name -> SODA type (`text`, `number`, `floating_timestamp`, ...), when the
    /// service said.
    pub types: Option<Vec<(String, String)>>,
}

fn where_clause(options: &SocrataOptions) -> Option<String> {
    options
        .since
        .as_ref()
        .map(|since| format!(":updated_at > '{}'", since.replace('\'', "''")))
}

/// Counts rows, reads column types (when asked) and lays out the pages.
pub(crate) async fn plan(
    client: &HttpClient,
    base_target: &HttpTarget,
    resource: &SocrataResource,
    options: &SocrataOptions,
    want_types: bool,
) -> Result<SocrataPlan> {
    let page_size = options.page_size.max(1);
    let where_ = where_clause(options);
    let mut count_params = vec![("$select", "count(*)".to_string())];
    if let Some(w) = &where_ {
        count_params.push(("$where", w.clone()));
    }
    let count_target = base_target.derive(&resource.url("json", &count_params))?;
    let (body, headers) = client.get_small(&count_target, SMALL_RESPONSE).await?;
    let rows = parse_count(&body).ok_or_else(|| ExtractError::Transport {
        url: count_target.display().to_string(),
        detail: format!(
            "unexpected count response: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
        transient: false,
    })?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let truth = header("x-soda2-truth-last-modified").or_else(|| header("last-modified"));
    // A synthetic validator: the dataset's last modification, the row count and the query
    // shape. Any change re-plans every page, which is right: offsets shift.
    let version = SourceVersion {
        etag: truth.as_ref().map(|t| {
            format!(
                "soda:{t}:rows={rows}:page={page_size}:where={}",
                where_.as_deref().unwrap_or("")
            )
        }),
        last_modified: truth,
        size: None,
    };

    let types = if want_types {
        let mut probe_params = vec![("$limit", "0".to_string())];
        if let Some(w) = &where_ {
            probe_params.push(("$where", w.clone()));
        }
        let probe = base_target.derive(&resource.url("csv", &probe_params))?;
        let (_, probe_headers) = client.get_small(&probe, SMALL_RESPONSE).await?;
        parse_field_types(&probe_headers)
    } else {
        None
    };

    let pages = (0..rows.div_ceil(page_size))
        .map(|number| {
            let offset = number * page_size;
            let mut params = vec![
                ("$order", ":id".to_string()),
                ("$limit", page_size.to_string()),
                ("$offset", offset.to_string()),
            ];
            if let Some(w) = &where_ {
                params.push(("$where", w.clone()));
            }
            SocrataPage {
                number,
                offset,
                limit: page_size,
                url: resource.url("csv", &params),
            }
        })
        .collect();
    Ok(SocrataPlan {
        rows,
        pages,
        version,
        types,
    })
}

/// `[{"count":"123"}]` (SODA returns numbers as strings; older APIs name it `count_1`).
fn parse_count(body: &[u8]) -> Option<u64> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let first = value.as_array()?.first()?.as_object()?;
    let (_, v) = first.iter().next()?;
    match v {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn parse_field_types(headers: &reqwest::header::HeaderMap) -> Option<Vec<(String, String)>> {
    let list = |name: &str| -> Option<Vec<String>> {
        serde_json::from_str(headers.get(name)?.to_str().ok()?).ok()
    };
    let fields = list("x-soda2-fields")?;
    let types = list("x-soda2-types")?;
    (fields.len() == types.len()).then(|| fields.into_iter().zip(types).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resources() {
        let r = SocrataResource::parse(
            "https://data.city.gov/resource/abcd-1234.json?$$app_token=T&$limit=5&boro=BK",
        )
        .unwrap();
        assert_eq!(r.base, "https://data.city.gov/resource/abcd-1234");
        assert_eq!(r.id, "abcd-1234");
        assert_eq!(r.extra_query, ["$$app_token=T", "boro=BK"]);
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
    fn parses_counts() {
        assert_eq!(parse_count(br#"[{"count":"12345"}]"#), Some(12345));
        assert_eq!(parse_count(br#"[{"count_1":7}]"#), Some(7));
        assert_eq!(parse_count(br#"{"error":true}"#), None);
        assert_eq!(parse_count(b"[]"), None);
    }
}
