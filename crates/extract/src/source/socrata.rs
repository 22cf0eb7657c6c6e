//! Socrata SODA datasets, pulled as consistent pages of CSV.
//!
//! **What is pulled.** The user's `$select` (or `*`) plus the system fields `:id`,
//! `:updated_at`, `:created_at`, which arrive as ordinary columns `_socrata_id` (STRING),
//! `_socrata_updated_at`, `_socrata_created_at` (TIMESTAMP in Parquet): SODA hides them unless
//! selected, and without them an updated row pulled again has no key to deduplicate by. The
//! header line is renamed as it streams ([`super::socrata_page`]), for passthrough CSV too.
//! The user's `$where` is kept and combined with Sluice's window as `(user) AND (window)`;
//! `$limit`, `$offset`, `$order` in the URL are dropped (paging is ours). A `$select` with
//! aggregates, `$group`, `$having` or `$query` cannot be paged by row and is a usage error.
//!
//! **The window.** With a `since` (an exclusive lower bound on `:updated_at`) the window is
//! `:updated_at > since`, else the whole dataset. Planning asks once, in one query, for
//! `count(*)` and `max(:updated_at)` of the window: the maximum becomes the upper bound `U`,
//! the count `C` is the count under `window AND :updated_at <= U` (one query, one snapshot).
//! Every page carries `:updated_at <= U`; `U` is the high-water mark the pull covers
//! ([`sluice_manifest::CursorRecord::to`]) and the next incremental run's `since`. Bounds are
//! written in SoQL's floating timestamp form `YYYY-MM-DDTHH:MM:SS.mmm` (UTC).
//!
//! **Why keyset pages, not offsets.** On Socrata an update gives a row a new `:updated_at`,
//! later than every existing one, so past `U`: during an execution rows only *leave* the
//! window (updated or deleted), and inserts never enter it. Pages are ranges of the key
//! `(:updated_at, :id)` in that order: page k is
//! `window AND :updated_at <= U AND (u,id) >= (u_k,id_k) AND (u,id) < (u_{k+1},id_{k+1})`,
//! written out as `(:updated_at > 'u' OR (:updated_at = 'u' AND :id >= 'id'))`. A row that
//! stays in the window keeps its key, so it is in exactly one page whenever that page is read;
//! a row that leaves may be missing (the next run's window has it, with its new values). With
//! `$offset` pages instead, a row leaving during the run shifts every later row one place
//! forward, and the row at a page boundary is silently lost.
//!
//! The boundaries `(u_k, id_k)` are the keys at ranks `k*L` (`$select=:updated_at,:id&$order=
//! :updated_at,:id&$limit=1&$offset=k*L`), read from the last to the first: since rows only
//! leave, each page then holds at most `L` rows (the higher boundary was read no later than
//! the lower one), so pages are requested with `$limit=L+1`, and a page that comes back with
//! more than `L` rows fails (it grew, which cannot happen legitimately: the plan is not what
//! the service holds).
//!
//! **One plan per execution.** Every task of an array job must read the same pages, so the
//! plan (since, `U`, `C`, boundaries, column types) is pinned per execution
//! ([`super::socrata_pin`]); later tasks and retries read it instead of planning again.
//!
//! Limits: a row updated during planning with exactly `U` as its time (same millisecond)
//! could be missed by this run and, with `since = U` next, by the next one (`--lag`
//! re-reads a safety window); deletes are never seen by an incremental pull.
//!
//! The CSV endpoint is used for data: JSON would turn every value into a string and drop
//! nulls. With Parquet output a `$limit=0` probe reads the columns' declared types
//! (`X-SODA2-Fields` / `X-SODA2-Types`) so every page gets the same schema.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::SocrataOptions;
use crate::error::{ExtractError, Result};
use crate::source::http::{HttpClient, HttpTarget, SourceVersion};
pub(crate) use crate::source::socrata_query::SocrataResource;
use crate::source::socrata_query::{
    SYSTEM_FIELDS, and_all, literal, normalize_timestamp, written_name,
};

/// Upper bound for the count, boundary and probe responses.
const SMALL_RESPONSE: usize = 1024 * 1024;
/// The order of keyset pages.
const KEY_ORDER: &str = ":updated_at,:id";

/// One page of a planned Socrata pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SocrataPage {
    pub number: u64,
    /// The page's nominal first rank (`number * limit`); the page is a keyset range.
    pub offset: u64,
    /// At most this many rows (`$limit` is one more, to notice a page that grew).
    pub limit: u64,
    /// Full URL (may carry `$$app_token`).
    pub url: String,
}

/// A key of the page order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Boundary {
    /// `:updated_at`, floating form.
    pub updated_at: String,
    pub id: String,
}

/// What planning a Socrata resource fixed: everything the pages are built from. Pinned per
/// execution as is (`socrata_pin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SocrataPlan {
    /// The exclusive lower bound of the window (`None`: everything).
    pub since: Option<String>,
    /// `max(:updated_at)` of the window (floating form); `None` when it is empty.
    pub upper: Option<String>,
    /// Rows in the window up to `upper` when planned.
    pub rows: u64,
    pub page_size: u64,
    /// Keys at ranks `page_size`, `2 * page_size`, ... (ascending).
    pub boundaries: Vec<Boundary>,
    /// `X-SODA2-Truth-Last-Modified` (else `Last-Modified`) of the count query.
    pub truth: Option<String>,
    /// Written column name -> SODA type, when the service said (Parquet output).
    pub types: Option<Vec<(String, String)>>,
}

impl SocrataPlan {
    /// `window AND :updated_at <= U`: what every page reads from, clause by clause.
    fn bounded(&self, resource: &SocrataResource) -> Vec<Option<String>> {
        let mut clauses = window_clauses(resource, self.since.as_deref());
        clauses.push(
            self.upper
                .as_ref()
                .map(|u| format!(":updated_at <= {}", literal(u))),
        );
        clauses
    }

    /// A synthetic validator for `--skip-existing`: the dataset's last modification, the
    /// window and its count. Any change plans again.
    pub(crate) fn version(&self, resource: &SocrataResource) -> SourceVersion {
        SourceVersion {
            etag: self.truth.as_ref().map(|t| {
                format!(
                    "soda:{t}:rows={}:page={}:where={}",
                    self.rows,
                    self.page_size,
                    and_all(&self.bounded(resource)).unwrap_or_default()
                )
            }),
            last_modified: self.truth.clone(),
            size: None,
        }
    }

    /// The pages: keyset ranges between consecutive boundaries.
    pub(crate) fn pages(&self, resource: &SocrataResource) -> Vec<SocrataPage> {
        if self.upper.is_none() {
            return Vec::new();
        }
        let bounded = self.bounded(resource);
        (0..=self.boundaries.len())
            .map(|k| {
                let lower = k
                    .checked_sub(1)
                    .map(|i| &self.boundaries[i])
                    .map(|b| key_clause(b, ">", ">="));
                let upper = self.boundaries.get(k).map(|b| key_clause(b, "<", "<"));
                let mut clauses = bounded.clone();
                clauses.extend([lower, upper]);
                let where_ = and_all(&clauses).unwrap_or_default();
                let params = [
                    ("$select", resource.select_list()),
                    ("$where", where_),
                    ("$order", KEY_ORDER.to_string()),
                    ("$limit", (self.page_size + 1).to_string()),
                ];
                SocrataPage {
                    number: k as u64,
                    offset: k as u64 * self.page_size,
                    limit: self.page_size,
                    url: resource.url("csv", &params),
                }
            })
            .collect()
    }
}

/// `(u, id) OP (b.u, b.id)` for a lexicographic comparison: `strict` on `:updated_at`, `tie`
/// on `:id`.
fn key_clause(b: &Boundary, strict: &str, tie: &str) -> String {
    let u = literal(&b.updated_at);
    format!(
        ":updated_at {strict} {u} OR (:updated_at = {u} AND :id {tie} {})",
        literal(&b.id)
    )
}

/// `(user where) AND (:updated_at > since)`, clause by clause.
fn window_clauses(resource: &SocrataResource, since: Option<&str>) -> Vec<Option<String>> {
    vec![
        resource.where_.clone(),
        since.map(|s| format!(":updated_at > {}", literal(s))),
    ]
}

fn unexpected(target: &HttpTarget, what: &str, body: &[u8]) -> ExtractError {
    ExtractError::Transport {
        url: target.display().to_string(),
        detail: format!(
            "unexpected {what} response: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
        transient: false,
    }
}

/// Fixes the window, its upper bound and count, the page boundaries and (when asked) the
/// column types. `since` is the window's exclusive lower bound on `:updated_at`.
pub(crate) async fn plan(
    client: &HttpClient,
    base_target: &HttpTarget,
    resource: &SocrataResource,
    options: &SocrataOptions,
    since: Option<&str>,
    want_types: bool,
) -> Result<SocrataPlan> {
    let page_size = options.page_size.max(1);
    let shown = crate::redact::redact_url(&resource.base);
    let window = and_all(&window_clauses(resource, since));
    let mut params = vec![(
        "$select",
        "count(*) AS row_count, max(:updated_at) AS max_updated_at".to_string(),
    )];
    if let Some(w) = &window {
        params.push(("$where", w.clone()));
    }
    let target = base_target.derive(&resource.url("json", &params))?;
    let (body, headers) = client.get_small(&target, SMALL_RESPONSE).await?;
    let (rows, max) = parse_stats(&body).ok_or_else(|| unexpected(&target, "count", &body))?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let truth = header("x-soda2-truth-last-modified").or_else(|| header("last-modified"));
    let mut plan = SocrataPlan {
        since: since.map(str::to_string),
        upper: None,
        rows,
        page_size,
        boundaries: Vec::new(),
        truth,
        types: None,
    };
    let upper = match max {
        Some(m) if rows > 0 => normalize_timestamp(&m)
            .ok_or_else(|| unexpected(&target, "max(:updated_at)", m.as_bytes()))?,
        _ => {
            tracing::info!(
                resource = %shown,
                since = since.unwrap_or(""),
                "Socrata {shown}: no rows in the window{}; nothing to pull",
                since.map(|s| format!(" (:updated_at > {s})")).unwrap_or_default()
            );
            plan.rows = 0;
            return Ok(plan);
        }
    };
    plan.upper = Some(upper);
    let bounded = and_all(&plan.bounded(resource)).unwrap_or_default();

    // Last boundary first: see the module docs for why that bounds every page by L rows.
    let pages = rows.div_ceil(page_size);
    let mut boundaries = Vec::new();
    for k in (1..pages).rev() {
        let params = [
            ("$select", KEY_ORDER.to_string()),
            ("$where", bounded.clone()),
            ("$order", KEY_ORDER.to_string()),
            ("$limit", "1".to_string()),
            ("$offset", (k * page_size).to_string()),
        ];
        let target = base_target.derive(&resource.url("json", &params))?;
        let (body, _) = client.get_small(&target, SMALL_RESPONSE).await?;
        match parse_boundary(&body) {
            Some(Some(b)) => boundaries.push(b),
            // Rows left the window since the count: fewer pages.
            Some(None) => {}
            None => return Err(unexpected(&target, "page boundary", &body)),
        }
    }
    boundaries.reverse();
    plan.boundaries = boundaries;

    if want_types {
        let params = [
            ("$select", resource.select_list()),
            ("$where", bounded),
            ("$limit", "0".to_string()),
        ];
        let probe = base_target.derive(&resource.url("csv", &params))?;
        let (_, probe_headers) = client.get_small(&probe, SMALL_RESPONSE).await?;
        plan.types = parse_field_types(&probe_headers);
    }
    Ok(plan)
}

/// `[{"row_count":"123","max_updated_at":"2026-01-05T10:00:00.000Z"}]` (SODA renders numbers
/// as strings; an empty window has no max).
fn parse_stats(body: &[u8]) -> Option<(u64, Option<String>)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let first = value.as_array()?.first()?.as_object()?;
    let rows = match first.get("row_count")? {
        Value::String(s) => s.trim().parse().ok()?,
        Value::Number(n) => n.as_u64()?,
        _ => return None,
    };
    let max = first
        .get("max_updated_at")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some((rows, max))
}

/// `[{":updated_at": "...", ":id": "row-..."}]`, or `[]` past the end.
fn parse_boundary(body: &[u8]) -> Option<Option<Boundary>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let Some(first) = value.as_array()?.first() else {
        return Some(None);
    };
    let updated_at = normalize_timestamp(first.get(":updated_at")?.as_str()?)?;
    let id = first.get(":id")?.as_str()?.to_string();
    Some(Some(Boundary { updated_at, id }))
}

/// The columns as written, with their SODA types; the system fields' types are Sluice's
/// whatever the service calls them (`meta_data` on older endpoints).
fn parse_field_types(headers: &reqwest::header::HeaderMap) -> Option<Vec<(String, String)>> {
    let list = |name: &str| -> Option<Vec<String>> {
        serde_json::from_str(headers.get(name)?.to_str().ok()?).ok()
    };
    let fields = list("x-soda2-fields")?;
    let types = list("x-soda2-types")?;
    (fields.len() == types.len()).then(|| {
        fields
            .into_iter()
            .zip(types)
            .map(
                |(field, soda_type)| match SYSTEM_FIELDS.iter().find(|(f, _, _)| *f == field) {
                    Some((_, ours, t)) => (ours.to_string(), t.to_string()),
                    None => (written_name(&field).to_string(), soda_type),
                },
            )
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(boundaries: &[(&str, &str)]) -> SocrataPlan {
        SocrataPlan {
            since: Some("2026-01-01T00:00:00.000".into()),
            upper: Some("2026-01-09T00:00:00.000".into()),
            rows: 25,
            page_size: 10,
            boundaries: boundaries
                .iter()
                .map(|(u, id)| Boundary {
                    updated_at: u.to_string(),
                    id: id.to_string(),
                })
                .collect(),
            truth: None,
            types: None,
        }
    }

    #[test]
    fn pages_are_keyset_ranges_between_boundaries() {
        let resource =
            SocrataResource::parse("https://h/resource/a-b?$where=boro='BK'&$select=name").unwrap();
        let plan = plan_of(&[
            ("2026-01-03T00:00:00.000", "row-x"),
            ("2026-01-05T00:00:00.000", "row-y"),
        ]);
        let pages = plan.pages(&resource);
        assert_eq!(pages.len(), 3);
        let decoded: Vec<String> = pages
            .iter()
            .map(|p| {
                let q = p.url.split_once('?').unwrap().1;
                q.replace("%20", " ")
                    .replace("%27", "'")
                    .replace("%3E", ">")
                    .replace("%3C", "<")
                    .replace("%3D", "=")
            })
            .collect();
        let common = "$select=name, :id, :updated_at, :created_at&$where=(boro='BK') AND (:updated_at > '2026-01-01T00:00:00.000') AND (:updated_at <= '2026-01-09T00:00:00.000')";
        assert_eq!(
            decoded[0],
            format!(
                "{common} AND (:updated_at < '2026-01-03T00:00:00.000' OR (:updated_at = '2026-01-03T00:00:00.000' AND :id < 'row-x'))&$order=:updated_at,:id&$limit=11"
            )
        );
        assert_eq!(
            decoded[1],
            format!(
                "{common} AND (:updated_at > '2026-01-03T00:00:00.000' OR (:updated_at = '2026-01-03T00:00:00.000' AND :id >= 'row-x')) AND (:updated_at < '2026-01-05T00:00:00.000' OR (:updated_at = '2026-01-05T00:00:00.000' AND :id < 'row-y'))&$order=:updated_at,:id&$limit=11"
            )
        );
        assert!(
            decoded[2].contains("AND :id >= 'row-y'))&$order"),
            "{}",
            decoded[2]
        );
        assert_eq!(
            (pages[2].number, pages[2].offset, pages[2].limit),
            (2, 20, 10)
        );
    }

    #[test]
    fn an_empty_window_has_no_pages() {
        let resource = SocrataResource::parse("https://h/resource/a-b").unwrap();
        let mut plan = plan_of(&[]);
        plan.upper = None;
        assert!(plan.pages(&resource).is_empty());
    }

    #[test]
    fn parses_stats_and_boundaries() {
        assert_eq!(
            parse_stats(br#"[{"row_count":"12","max_updated_at":"2026-01-05T10:00:00.000Z"}]"#),
            Some((12, Some("2026-01-05T10:00:00.000Z".into())))
        );
        assert_eq!(parse_stats(br#"[{"row_count":"0"}]"#), Some((0, None)));
        assert_eq!(parse_stats(br#"{"error":true}"#), None);
        assert_eq!(parse_boundary(b"[]"), Some(None));
        assert_eq!(
            parse_boundary(br#"[{":updated_at":"2026-01-05T10:00:00.000Z",":id":"row-a"}]"#),
            Some(Some(Boundary {
                updated_at: "2026-01-05T10:00:00.000".into(),
                id: "row-a".into()
            }))
        );
        assert_eq!(parse_boundary(br#"[{":id":"row-a"}]"#), None);
    }

    #[test]
    fn system_field_types_are_renamed_and_fixed() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "x-soda2-fields",
            r#"["zip",":id",":updated_at",":created_at"]"#.parse().unwrap(),
        );
        headers.insert(
            "x-soda2-types",
            r#"["text","meta_data","meta_data","fixed_timestamp"]"#
                .parse()
                .unwrap(),
        );
        let types = parse_field_types(&headers).unwrap();
        assert_eq!(
            types,
            [
                ("zip".to_string(), "text".to_string()),
                ("_socrata_id".into(), "text".into()),
                ("_socrata_updated_at".into(), "fixed_timestamp".into()),
                ("_socrata_created_at".into(), "fixed_timestamp".into()),
            ]
        );
    }
}
