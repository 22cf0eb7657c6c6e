//! A Socrata SODA 2.1 endpoint for tests, served by [`crate::TestServer`] at
//! `/resource/{id}.csv` and `/resource/{id}.json` ([`crate::TestServer::soda`]).
//!
//! It implements the part of SoQL a client of Socrata relies on, and refuses the rest:
//!
//! - `$select`: `*`, columns, the system fields `:id`, `:created_at`, `:updated_at`, the
//!   aggregates `count(*)`, `max(f)`, `min(f)`, each with an optional `AS alias`. Aggregates
//!   cannot be mixed with plain columns (there is no `$group`).
//! - `$where`: `=`, `!=`/`<>`, `<`, `<=`, `>`, `>=` between a field and a string or number
//!   literal, `IS [NOT] NULL`, `AND`, `OR`, `NOT`, parentheses. Values compare by the field's
//!   type: numbers as numbers, timestamps as instants (a literal without a zone is UTC), `:id`
//!   by the row's internal number (the text form is deliberately scrambled, so a client that
//!   compares ids as text itself gets a different order than the server's).
//! - `$order` (several fields, `ASC`/`DESC`), `$limit` (1000 when absent, as SODA 2.0/2.1),
//!   `$offset`; simple filters (`column=value`); `$$app_token`.
//! - System fields are hidden unless selected; `X-SODA2-Fields` / `X-SODA2-Types` name and
//!   type the columns of the response as Socrata does (`:id` is `row_identifier`, the two
//!   timestamps `fixed_timestamp`, rendered `2026-01-05T00:00:00.000Z`);
//!   `X-SODA2-Truth-Last-Modified` is the last change of the data.
//! - CSV quotes every field, like Socrata; JSON renders numbers as strings and leaves nulls
//!   out.
//! - Anything else (`$group`, `$q`, functions, unknown parameters or columns, type
//!   mismatches) is HTTP 400 with a SODA-shaped error body
//!   (`{"code":"query.compiler.malformed","error":true,"message":...}`), so a query the
//!   server does not understand fails loudly instead of returning the wrong rows.
//!
//! The data changes the way Socrata's does ([`Soda::update`]): every write of one call shares
//! one new `:updated_at`, later than every existing one; deletes remove rows. A hook
//! ([`Soda::before_request`]) can change the data between two requests of one run. Every
//! request is recorded ([`Soda::requests`]) with its decoded parameters and app token.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// The first transaction's time: 2026-01-01T00:00:00Z.
const EPOCH_MS: i64 = 1_767_225_600_000;
/// SODA's default `$limit`.
const DEFAULT_LIMIT: usize = 1000;

type Hook = Box<dyn FnMut(&SodaRequest, &mut SodaData) + Send>;
/// Status, headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// One dataset; cheap to clone (all clones share the data). See the module docs.
#[derive(Clone)]
pub struct Soda {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    data: SodaData,
    app_token: Option<String>,
    requests: Vec<SodaRequest>,
    hook: Option<Hook>,
}

/// The rows of a [`Soda`] dataset, as the closures of [`Soda::update`] see them.
pub struct SodaData {
    columns: Vec<(String, String)>,
    rows: Vec<Row>,
    next_row: u64,
    /// The time writes get now (ms since the Unix epoch).
    clock: i64,
    /// Every id ever issued, deleted rows' included (a client may still name them).
    ids: HashMap<String, u64>,
    last_modified: i64,
}

#[derive(Debug, Clone)]
struct Row {
    number: u64,
    id: String,
    created: i64,
    updated: i64,
    values: Vec<Option<String>>,
}

/// A row as the test sees it: system fields rendered as Socrata renders them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SodaRow {
    pub id: String,
    pub created_at: String,
    pub updated_at: String,
    pub values: Vec<Option<String>>,
}

/// One request to the dataset, as the server saw and answered it.
#[derive(Debug, Clone)]
pub struct SodaRequest {
    /// Path and query as sent.
    pub uri: String,
    /// `csv` or `json`.
    pub format: String,
    /// The query parameters, percent-decoded, in order.
    pub params: Vec<(String, String)>,
    /// The `X-App-Token` header, if any.
    pub app_token: Option<String>,
    /// The status answered (set after the answer is computed; 0 in a hook).
    pub status: u16,
}

impl SodaRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A data page: ordered rows of the dataset, not an aggregate or a `$limit=0` probe.
    pub fn is_page(&self) -> bool {
        self.format == "csv" && self.param("$limit") != Some("0")
    }
}

impl Soda {
    /// A dataset with these `(name, SODA type)` columns and no rows.
    pub fn new(columns: &[(&str, &str)]) -> Soda {
        Soda {
            inner: Arc::new(Mutex::new(Inner {
                data: SodaData {
                    columns: columns
                        .iter()
                        .map(|(n, t)| (n.to_string(), t.to_string()))
                        .collect(),
                    rows: Vec::new(),
                    next_row: 1,
                    clock: EPOCH_MS,
                    ids: HashMap::new(),
                    last_modified: EPOCH_MS,
                },
                app_token: None,
                requests: Vec::new(),
                hook: None,
            })),
        }
    }

    /// Requests without this app token (header or `$$app_token`) get 403.
    pub fn require_app_token(self, token: &str) -> Soda {
        self.lock().app_token = Some(token.to_string());
        self
    }

    /// Changes the data in one transaction: every row written gets the same new
    /// `:updated_at`, later than every existing one (call [`SodaData::tick`] for another).
    pub fn update<R>(&self, change: impl FnOnce(&mut SodaData) -> R) -> R {
        let mut inner = self.lock();
        inner.data.begin();
        change(&mut inner.data)
    }

    /// Runs `hook` before every request is answered, with the data to change (as in
    /// [`Soda::update`]; the request's `status` is still 0).
    pub fn before_request(&self, hook: impl FnMut(&SodaRequest, &mut SodaData) + Send + 'static) {
        self.lock().hook = Some(Box::new(hook));
    }

    /// The live rows in `:id` order.
    pub fn rows(&self) -> Vec<SodaRow> {
        self.lock().data.rows()
    }

    /// The requests answered so far.
    pub fn requests(&self) -> Vec<SodaRequest> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers one request: status, headers, body.
    pub(crate) fn respond(&self, format: &str, uri: &str, app_token: Option<&str>) -> Answer {
        let query = uri.split_once('?').map(|(_, q)| q).unwrap_or("");
        let mut request = SodaRequest {
            uri: uri.to_string(),
            format: format.to_string(),
            params: url::form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            app_token: app_token.map(str::to_string),
            status: 0,
        };
        let mut inner = self.lock();
        if let Some(mut hook) = inner.hook.take() {
            inner.data.begin();
            hook(&request, &mut inner.data);
            inner.hook = Some(hook);
        }
        let token_ok = match &inner.app_token {
            None => true,
            Some(t) => {
                request.app_token.as_deref() == Some(t.as_str())
                    || request.param("$$app_token") == Some(t.as_str())
            }
        };
        let answer = if !token_ok {
            error(
                403,
                "authentication_required",
                "Invalid app_token specified",
            )
        } else {
            match answer_query(&inner.data, &request) {
                Ok(answer) => answer,
                Err(message) => error(400, "query.compiler.malformed", &message),
            }
        };
        request.status = answer.0;
        inner.requests.push(request);
        answer
    }
}

fn error(status: u16, code: &str, message: &str) -> Answer {
    let body = serde_json::json!({
        "code": code,
        "error": true,
        "message": message,
        "data": {},
    });
    (
        status,
        vec![(
            "content-type".into(),
            "application/json;charset=utf-8".into(),
        )],
        body.to_string().into_bytes(),
    )
}

impl SodaData {
    /// Starts a new transaction: later writes get a time after every existing one.
    fn begin(&mut self) {
        let latest = self.rows.iter().map(|r| r.updated).max().unwrap_or(0);
        self.clock = self.clock.max(latest) + 1000;
    }

    /// A new `:updated_at` for the writes that follow (one second later).
    pub fn tick(&mut self) {
        self.begin();
    }

    /// The time writes get now, as Socrata renders it.
    pub fn now(&self) -> String {
        render_fixed(self.clock)
    }

    fn column(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("the dataset has no column {name:?}"))
    }

    fn row_mut(&mut self, id: &str) -> &mut Row {
        self.rows
            .iter_mut()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no live row {id}"))
    }

    /// Inserts a row (values in column order; `""` is null); returns its `:id`.
    pub fn insert(&mut self, values: &[&str]) -> String {
        let at = self.clock;
        self.insert_at_ms(at, values)
    }

    /// Inserts a row created and updated at `at` (ISO 8601; without a zone it is UTC).
    pub fn insert_at(&mut self, at: &str, values: &[&str]) -> String {
        let at = parse_instant(at).unwrap_or_else(|| panic!("not a timestamp: {at:?}"));
        self.clock = self.clock.max(at);
        self.insert_at_ms(at, values)
    }

    fn insert_at_ms(&mut self, at: i64, values: &[&str]) -> String {
        assert_eq!(
            values.len(),
            self.columns.len(),
            "a row needs one value per column ({:?})",
            self.columns
        );
        let number = self.next_row;
        self.next_row += 1;
        let id = row_id(number);
        self.ids.insert(id.clone(), number);
        self.rows.push(Row {
            number,
            id: id.clone(),
            created: at,
            updated: at,
            values: values
                .iter()
                .map(|v| (!v.is_empty()).then(|| v.to_string()))
                .collect(),
        });
        self.last_modified = self.last_modified.max(at);
        id
    }

    /// Sets one value of a row (`""` is null); the row's `:updated_at` becomes now.
    pub fn set(&mut self, id: &str, column: &str, value: &str) {
        let index = self.column(column);
        let at = self.clock;
        let row = self.row_mut(id);
        row.values[index] = (!value.is_empty()).then(|| value.to_string());
        row.updated = at;
        self.last_modified = self.last_modified.max(at);
    }

    /// Deletes a row.
    pub fn delete(&mut self, id: &str) {
        let before = self.rows.len();
        self.rows.retain(|r| r.id != id);
        assert!(self.rows.len() < before, "no live row {id}");
        self.last_modified = self.last_modified.max(self.clock);
    }

    /// The `:id` of the first live row whose `column` is `value`.
    pub fn find(&self, column: &str, value: &str) -> Option<String> {
        let index = self.column(column);
        self.rows
            .iter()
            .find(|r| r.values[index].as_deref() == Some(value))
            .map(|r| r.id.clone())
    }

    /// The live rows in `:id` order.
    pub fn rows(&self) -> Vec<SodaRow> {
        let mut rows = self.rows.clone();
        rows.sort_by_key(|r| r.number);
        rows.into_iter()
            .map(|r| SodaRow {
                id: r.id,
                created_at: render_fixed(r.created),
                updated_at: render_fixed(r.updated),
                values: r.values,
            })
            .collect()
    }
}

/// Socrata-like row ids (`row-xxxx.xxxx_xxxx`) whose text order is not their number order.
fn row_id(number: u64) -> String {
    const ALPHABET: &[u8] = b"23456789abcdefghijkmnpqrstuvwxyz";
    let mut x = number.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) & ((1u64 << 60) - 1);
    let mut chars = Vec::new();
    for _ in 0..12 {
        chars.push(ALPHABET[(x & 31) as usize] as char);
        x >>= 5;
    }
    let s: String = chars.into_iter().collect();
    format!("row-{}.{}_{}", &s[0..4], &s[4..8], &s[8..12])
}

fn render_fixed(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .expect("time in range")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn render_http_date(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .expect("time in range")
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// An ISO 8601 timestamp or date; without a zone it is UTC (as SoQL reads literals).
fn parse_instant(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc().timestamp_millis());
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
    }
    None
}

// ---- SoQL: tokens, expressions, evaluation ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Op(String),
    LParen,
    RParen,
    Comma,
    Star,
}

fn tokenize(text: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '*' => {
                out.push(Tok::Star);
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated string literal in {text:?}")),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&c) => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(s));
            }
            '=' | '<' | '>' | '!' => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let op = if ["<=", ">=", "!=", "<>"].contains(&two.as_str()) {
                    two
                } else if c == '!' {
                    return Err(format!("unexpected '!' in {text:?}"));
                } else {
                    c.to_string()
                };
                i += op.len();
                out.push(Tok::Op(op));
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                out.push(Tok::Num(chars[start..i].iter().collect()));
            }
            c if c.is_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character {other:?} in {text:?}")),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Column(usize),
    Id,
    Created,
    Updated,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(Field, Cmp, Key),
    IsNull(Field, bool),
}

/// A comparable value: what a field holds, or a literal coerced to the field's type.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Num(f64),
    Text(String),
    Time(i64),
    Bool(bool),
    Id(u64),
}

impl Key {
    fn compare(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Num(a), Key::Num(b)) => a.total_cmp(b),
            (Key::Text(a), Key::Text(b)) => a.cmp(b),
            (Key::Time(a), Key::Time(b)) => a.cmp(b),
            (Key::Bool(a), Key::Bool(b)) => a.cmp(b),
            (Key::Id(a), Key::Id(b)) => a.cmp(b),
            // Never mixed: literals are coerced to the field's type when parsed.
            _ => Ordering::Equal,
        }
    }
}

fn is_keyword(tok: Option<&Tok>, word: &str) -> bool {
    matches!(tok, Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(word))
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    data: &'a SodaData,
    text: &'a str,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, data: &'a SodaData) -> Result<Self, String> {
        Ok(Parser {
            toks: tokenize(text)?,
            pos: 0,
            data,
            text,
        })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn done(&self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(format!("unexpected {t:?} in {:?}", self.text)),
        }
    }

    fn field(&mut self) -> Result<Field, String> {
        match self.next() {
            Some(Tok::Ident(name)) => field_named(self.data, &name),
            other => Err(format!(
                "expected a field, found {other:?} in {:?}",
                self.text
            )),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while is_keyword(self.peek(), "or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.primary()?;
        while is_keyword(self.peek(), "and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.primary()?));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let inner = self.or()?;
            if self.next() != Some(Tok::RParen) {
                return Err(format!("missing ')' in {:?}", self.text));
            }
            return Ok(inner);
        }
        if is_keyword(self.peek(), "not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.primary()?)));
        }
        let field = self.field()?;
        if is_keyword(self.peek(), "is") {
            self.pos += 1;
            let negated = is_keyword(self.peek(), "not");
            if negated {
                self.pos += 1;
            }
            if !is_keyword(self.peek(), "null") {
                return Err(format!("expected NULL after IS in {:?}", self.text));
            }
            self.pos += 1;
            return Ok(Expr::IsNull(field, !negated));
        }
        let cmp = match self.next() {
            Some(Tok::Op(op)) => match op.as_str() {
                "=" => Cmp::Eq,
                "!=" | "<>" => Cmp::Ne,
                "<" => Cmp::Lt,
                "<=" => Cmp::Le,
                ">" => Cmp::Gt,
                ">=" => Cmp::Ge,
                _ => return Err(format!("unsupported operator {op} in {:?}", self.text)),
            },
            other => {
                return Err(format!(
                    "expected a comparison, found {other:?} in {:?} (the test server supports \
                     field OP literal, IS [NOT] NULL, AND, OR, NOT)",
                    self.text
                ));
            }
        };
        let literal = match self.next() {
            Some(Tok::Str(s)) => Literal::Str(s),
            Some(Tok::Num(n)) => Literal::Num(n),
            other => {
                return Err(format!(
                    "expected a literal, found {other:?} in {:?}",
                    self.text
                ));
            }
        };
        Ok(Expr::Compare(
            field,
            cmp,
            coerce(self.data, field, &literal)?,
        ))
    }
}

enum Literal {
    Str(String),
    Num(String),
}

fn field_named(data: &SodaData, name: &str) -> Result<Field, String> {
    match name {
        ":id" => Ok(Field::Id),
        ":created_at" => Ok(Field::Created),
        ":updated_at" => Ok(Field::Updated),
        _ => data
            .columns
            .iter()
            .position(|(n, _)| n == name)
            .map(Field::Column)
            .ok_or_else(|| format!("No such column: {name}")),
    }
}

fn field_type(data: &SodaData, field: Field) -> &str {
    match field {
        Field::Column(i) => &data.columns[i].1,
        Field::Id => "row_identifier",
        Field::Created | Field::Updated => "fixed_timestamp",
    }
}

fn field_name(data: &SodaData, field: Field) -> String {
    match field {
        Field::Column(i) => data.columns[i].0.clone(),
        Field::Id => ":id".into(),
        Field::Created => ":created_at".into(),
        Field::Updated => ":updated_at".into(),
    }
}

fn is_time_type(t: &str) -> bool {
    matches!(
        t,
        "floating_timestamp" | "fixed_timestamp" | "calendar_date"
    )
}

/// A text value of a field as a comparable key (`None`: null or unreadable).
fn key_of(t: &str, text: &str) -> Option<Key> {
    match t {
        "number" | "double" | "money" | "percent" => text.trim().parse().ok().map(Key::Num),
        "checkbox" => text.parse().ok().map(Key::Bool),
        t if is_time_type(t) => parse_instant(text).map(Key::Time),
        _ => Some(Key::Text(text.to_string())),
    }
}

fn coerce(data: &SodaData, field: Field, literal: &Literal) -> Result<Key, String> {
    let t = field_type(data, field);
    let name = field_name(data, field);
    let mismatch = |what: &str| format!("Type mismatch: {name} is {t}, the literal {what} is not");
    match (t, literal) {
        ("row_identifier", Literal::Str(s)) => data
            .ids
            .get(s)
            .copied()
            .map(Key::Id)
            .ok_or_else(|| format!("invalid row identifier {s:?}")),
        ("number" | "double" | "money" | "percent", Literal::Num(n) | Literal::Str(n)) => n
            .parse()
            .map(Key::Num)
            .map_err(|_| mismatch(&format!("{n:?}"))),
        (t, Literal::Str(s)) if is_time_type(t) => parse_instant(s)
            .map(Key::Time)
            .ok_or_else(|| mismatch(&format!("{s:?}"))),
        ("checkbox", Literal::Str(s)) => s.parse().map(Key::Bool).map_err(|_| mismatch(s)),
        ("text" | "url", Literal::Str(s)) => Ok(Key::Text(s.clone())),
        (_, Literal::Num(n)) => Err(mismatch(n)),
        (_, Literal::Str(s)) => Err(mismatch(&format!("{s:?}"))),
    }
}

fn row_key(data: &SodaData, row: &Row, field: Field) -> Option<Key> {
    match field {
        Field::Id => Some(Key::Id(row.number)),
        Field::Created => Some(Key::Time(row.created)),
        Field::Updated => Some(Key::Time(row.updated)),
        Field::Column(i) => key_of(&data.columns[i].1, row.values[i].as_deref()?),
    }
}

fn row_text(row: &Row, field: Field) -> Option<String> {
    match field {
        Field::Id => Some(row.id.clone()),
        Field::Created => Some(render_fixed(row.created)),
        Field::Updated => Some(render_fixed(row.updated)),
        Field::Column(i) => row.values[i].clone(),
    }
}

fn eval(data: &SodaData, row: &Row, expr: &Expr) -> bool {
    match expr {
        Expr::And(a, b) => eval(data, row, a) && eval(data, row, b),
        Expr::Or(a, b) => eval(data, row, a) || eval(data, row, b),
        Expr::Not(a) => !eval(data, row, a),
        Expr::IsNull(field, null) => row_text(row, *field).is_none() == *null,
        Expr::Compare(field, cmp, literal) => {
            let Some(value) = row_key(data, row, *field) else {
                return false;
            };
            let o = value.compare(literal);
            match cmp {
                Cmp::Eq => o == Ordering::Equal,
                Cmp::Ne => o != Ordering::Equal,
                Cmp::Lt => o == Ordering::Less,
                Cmp::Le => o != Ordering::Greater,
                Cmp::Gt => o == Ordering::Greater,
                Cmp::Ge => o != Ordering::Less,
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Select {
    Field(Field, String),
    Count(String),
    Max(Field, String),
    Min(Field, String),
}

fn parse_select(text: &str, data: &SodaData) -> Result<Vec<Select>, String> {
    let mut p = Parser::new(text, data)?;
    let mut out = Vec::new();
    loop {
        let item = match p.next() {
            Some(Tok::Star) => {
                out.extend(
                    (0..data.columns.len())
                        .map(|i| Select::Field(Field::Column(i), data.columns[i].0.clone())),
                );
                None
            }
            Some(Tok::Ident(name)) if p.peek() == Some(&Tok::LParen) => {
                p.pos += 1;
                let lower = name.to_ascii_lowercase();
                let item = match lower.as_str() {
                    "count" => {
                        if p.next() != Some(Tok::Star) {
                            return Err(format!("only count(*) is supported, in {text:?}"));
                        }
                        Select::Count("count".to_string())
                    }
                    "max" | "min" => {
                        let f = p.field()?;
                        let alias =
                            format!("{lower}_{}", field_name(data, f).trim_start_matches(':'));
                        if lower == "max" {
                            Select::Max(f, alias)
                        } else {
                            Select::Min(f, alias)
                        }
                    }
                    _ => {
                        return Err(format!(
                            "function {name} is not supported by the test server"
                        ));
                    }
                };
                if p.next() != Some(Tok::RParen) {
                    return Err(format!("missing ')' in {text:?}"));
                }
                Some(item)
            }
            Some(Tok::Ident(name)) => {
                let f = field_named(data, &name)?;
                Some(Select::Field(f, name))
            }
            other => return Err(format!("unexpected {other:?} in $select {text:?}")),
        };
        if let Some(mut item) = item {
            if is_keyword(p.peek(), "as") {
                p.pos += 1;
                let Some(Tok::Ident(alias)) = p.next() else {
                    return Err(format!("expected an alias after AS in {text:?}"));
                };
                match &mut item {
                    Select::Field(_, a)
                    | Select::Count(a)
                    | Select::Max(_, a)
                    | Select::Min(_, a) => *a = alias,
                }
            }
            out.push(item);
        }
        match p.next() {
            None => break,
            Some(Tok::Comma) => continue,
            Some(t) => return Err(format!("unexpected {t:?} in $select {text:?}")),
        }
    }
    Ok(out)
}

fn parse_order(text: &str, data: &SodaData) -> Result<Vec<(Field, bool)>, String> {
    let mut p = Parser::new(text, data)?;
    let mut out = Vec::new();
    loop {
        let f = p.field()?;
        let desc = if is_keyword(p.peek(), "desc") {
            p.pos += 1;
            true
        } else {
            if is_keyword(p.peek(), "asc") {
                p.pos += 1;
            }
            false
        };
        out.push((f, desc));
        match p.next() {
            None => break,
            Some(Tok::Comma) => continue,
            Some(t) => return Err(format!("unexpected {t:?} in $order {text:?}")),
        }
    }
    Ok(out)
}

/// The query of one request, parsed against the data.
struct Query {
    select: Vec<Select>,
    filter: Vec<Expr>,
    order: Vec<(Field, bool)>,
    limit: usize,
    offset: usize,
}

fn parse_query(data: &SodaData, request: &SodaRequest) -> Result<Query, String> {
    let mut query = Query {
        select: (0..data.columns.len())
            .map(|i| Select::Field(Field::Column(i), data.columns[i].0.clone()))
            .collect(),
        filter: Vec::new(),
        order: Vec::new(),
        limit: DEFAULT_LIMIT,
        offset: 0,
    };
    for (name, value) in &request.params {
        match name.as_str() {
            "$select" => query.select = parse_select(value, data)?,
            "$where" => {
                let mut p = Parser::new(value, data)?;
                let expr = p.or()?;
                p.done()?;
                query.filter.push(expr);
            }
            "$order" => query.order = parse_order(value, data)?,
            "$limit" => {
                query.limit = value
                    .parse()
                    .map_err(|_| format!("$limit must be a whole number, not {value:?}"))?
            }
            "$offset" => {
                query.offset = value
                    .parse()
                    .map_err(|_| format!("$offset must be a whole number, not {value:?}"))?
            }
            "$$app_token" => {}
            n if n.starts_with('$') => {
                return Err(format!("the test server does not support {n}"));
            }
            column => {
                let field = field_named(data, column)?;
                let key = coerce(data, field, &Literal::Str(value.clone()))?;
                query.filter.push(Expr::Compare(field, Cmp::Eq, key));
            }
        }
    }
    Ok(query)
}

/// A response table: column names and types, then rows of optional text.
type Table = (Vec<(String, String)>, Vec<Vec<Option<String>>>);

fn run_query(data: &SodaData, query: &Query) -> Result<Table, String> {
    let mut rows: Vec<&Row> = data
        .rows
        .iter()
        .filter(|r| query.filter.iter().all(|e| eval(data, r, e)))
        .collect();
    let aggregates = query
        .select
        .iter()
        .filter(|s| !matches!(s, Select::Field(..)))
        .count();
    if aggregates > 0 && aggregates < query.select.len() {
        return Err("aggregates mixed with plain columns need $group, which the test server does not support".into());
    }
    if aggregates > 0 {
        let mut columns = Vec::new();
        let mut values = Vec::new();
        for s in &query.select {
            match s {
                Select::Count(alias) => {
                    columns.push((alias.clone(), "number".to_string()));
                    values.push(Some(rows.len().to_string()));
                }
                Select::Max(f, alias) | Select::Min(f, alias) => {
                    let best = rows
                        .iter()
                        .filter_map(|r| Some((row_key(data, r, *f)?, r)))
                        .reduce(|a, b| {
                            let o = b.0.compare(&a.0);
                            let better = if matches!(s, Select::Max(..)) {
                                o == Ordering::Greater
                            } else {
                                o == Ordering::Less
                            };
                            if better { b } else { a }
                        });
                    columns.push((alias.clone(), field_type(data, *f).to_string()));
                    values.push(best.and_then(|(_, r)| row_text(r, *f)));
                }
                Select::Field(..) => unreachable!("counted above"),
            }
        }
        return Ok((columns, vec![values]));
    }
    rows.sort_by(|a, b| {
        for (f, desc) in &query.order {
            let o = match (row_key(data, a, *f), row_key(data, b, *f)) {
                (Some(x), Some(y)) => x.compare(&y),
                (None, None) => Ordering::Equal,
                // Nulls last in ascending order.
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
            };
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.number.cmp(&b.number)
    });
    let columns = query
        .select
        .iter()
        .map(|s| match s {
            Select::Field(f, alias) => (alias.clone(), field_type(data, *f).to_string()),
            _ => unreachable!("no aggregates here"),
        })
        .collect();
    let out = rows
        .into_iter()
        .skip(query.offset)
        .take(query.limit)
        .map(|r| {
            query
                .select
                .iter()
                .map(|s| match s {
                    Select::Field(f, _) => row_text(r, *f),
                    _ => None,
                })
                .collect()
        })
        .collect();
    Ok((columns, out))
}

fn csv_field(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\"\""))
}

fn answer_query(data: &SodaData, request: &SodaRequest) -> Result<Answer, String> {
    let query = parse_query(data, request)?;
    let (columns, rows) = run_query(data, &query)?;
    let body = match request.format.as_str() {
        "csv" => {
            let mut body = String::new();
            let line = |fields: Vec<String>| fields.join(",") + "\n";
            body.push_str(&line(columns.iter().map(|(n, _)| csv_field(n)).collect()));
            for row in &rows {
                body.push_str(&line(
                    row.iter()
                        .map(|v| v.as_deref().map(csv_field).unwrap_or_default())
                        .collect(),
                ));
            }
            body
        }
        "json" => {
            let objects: Vec<serde_json::Value> = rows
                .iter()
                .map(|row| {
                    let mut object = serde_json::Map::new();
                    for ((name, t), value) in columns.iter().zip(row) {
                        let Some(value) = value else { continue };
                        let value = match t.as_str() {
                            "checkbox" => serde_json::Value::Bool(value == "true"),
                            _ => serde_json::Value::String(value.clone()),
                        };
                        object.insert(name.clone(), value);
                    }
                    serde_json::Value::Object(object)
                })
                .collect();
            serde_json::to_string_pretty(&objects).expect("JSON")
        }
        other => return Err(format!("unknown format .{other}")),
    };
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let types: Vec<&str> = columns.iter().map(|(_, t)| t.as_str()).collect();
    let content_type = if request.format == "csv" {
        "text/csv; charset=UTF-8"
    } else {
        "application/json;charset=utf-8"
    };
    let headers = vec![
        ("content-type".into(), content_type.into()),
        (
            "x-soda2-fields".into(),
            serde_json::to_string(&names).expect("JSON"),
        ),
        (
            "x-soda2-types".into(),
            serde_json::to_string(&types).expect("JSON"),
        ),
        (
            "x-soda2-truth-last-modified".into(),
            render_http_date(data.last_modified),
        ),
        ("last-modified".into(), render_http_date(data.last_modified)),
    ];
    Ok((200, headers, body.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permits() -> Soda {
        let soda = Soda::new(&[
            ("n", "number"),
            ("zip", "text"),
            ("issued", "floating_timestamp"),
        ]);
        soda.update(|d| {
            for i in 0..6 {
                d.insert(&[
                    &i.to_string(),
                    &format!("0{}", 2100 + i),
                    "2025-03-01T08:00:00.000",
                ]);
                if i % 2 == 1 {
                    d.tick();
                }
            }
        });
        soda
    }

    fn get(
        soda: &Soda,
        format: &str,
        query: &[(&str, &str)],
    ) -> (u16, HashMap<String, String>, String) {
        let encoded: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        let (status, headers, body) =
            soda.respond(format, &format!("/resource/x.{format}?{encoded}"), None);
        (
            status,
            headers.into_iter().collect(),
            String::from_utf8(body).unwrap(),
        )
    }

    fn column(body: &str, index: usize) -> Vec<String> {
        body.lines()
            .skip(1)
            .map(|l| {
                l.split(',')
                    .nth(index)
                    .unwrap()
                    .trim_matches('"')
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn system_fields_are_hidden_unless_selected_and_typed_as_socrata_types_them() {
        let soda = permits();
        let (status, headers, body) = get(&soda, "csv", &[]);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body.lines().next(), Some(r#""n","zip","issued""#));
        assert_eq!(headers["x-soda2-fields"], r#"["n","zip","issued"]"#);
        let (_, headers, body) = get(
            &soda,
            "csv",
            &[("$select", "zip, :id, :updated_at, :created_at")],
        );
        assert_eq!(
            body.lines().next(),
            Some(r#""zip",":id",":updated_at",":created_at""#)
        );
        assert_eq!(
            headers["x-soda2-types"],
            r#"["text","row_identifier","fixed_timestamp","fixed_timestamp"]"#
        );
        assert_eq!(column(&body, 2)[0], "2026-01-01T00:00:01.000Z");
        assert!(column(&body, 1)[0].starts_with("row-"));
        assert_eq!(body.lines().count(), 7);
    }

    #[test]
    fn where_compares_by_type_and_combines_with_and_or_and_parentheses() {
        let soda = permits();
        let (_, _, body) = get(
            &soda,
            "csv",
            &[("$where", "n >= 2 AND (n < 4 OR zip = '02105')")],
        );
        assert_eq!(column(&body, 0), ["2", "3", "5"]);
        // Number order, not text order: "10" > "9".
        let (_, _, body) = get(&soda, "csv", &[("$where", "n > '1'")]);
        assert_eq!(column(&body, 0), ["2", "3", "4", "5"]);
        // Rows 0-1 share the first transaction's time, 2-3 the second's.
        let (_, _, body) = get(
            &soda,
            "csv",
            &[(
                "$where",
                ":updated_at > '2026-01-01T00:00:01.000' AND :updated_at <= '2026-01-01T00:00:02Z'",
            )],
        );
        assert_eq!(column(&body, 0), ["2", "3"]);
        let (_, _, body) = get(
            &soda,
            "csv",
            &[("$where", "NOT (n != 1)"), ("zip", "02101")],
        );
        assert_eq!(column(&body, 0), ["1"]);
    }

    #[test]
    fn order_limit_offset_and_keyset_on_updated_at_and_id() {
        let soda = permits();
        let (_, _, body) = get(
            &soda,
            "csv",
            &[("$order", "n DESC"), ("$limit", "2"), ("$offset", "1")],
        );
        assert_eq!(column(&body, 0), ["4", "3"]);
        // The id order is the server's, whatever the text of the ids.
        let (_, _, body) = get(
            &soda,
            "json",
            &[
                ("$select", ":updated_at, :id, n"),
                ("$order", ":updated_at, :id"),
                ("$limit", "1"),
                ("$offset", "2"),
            ],
        );
        let third: serde_json::Value = serde_json::from_str(&body).unwrap();
        let (u, id) = (
            third[0][":updated_at"].as_str().unwrap(),
            third[0][":id"].as_str().unwrap(),
        );
        assert_eq!(third[0]["n"], "2");
        let keyset = format!("(:updated_at > '{u}' OR (:updated_at = '{u}' AND :id >= '{id}'))");
        let (_, _, body) = get(
            &soda,
            "csv",
            &[("$where", keyset.as_str()), ("$order", ":updated_at, :id")],
        );
        assert_eq!(column(&body, 0), ["2", "3", "4", "5"]);
        let ids: Vec<String> = soda.rows().into_iter().map(|r| r.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_ne!(
            ids, sorted,
            "id text order must differ from the server's order"
        );
    }

    #[test]
    fn aggregates_count_and_max() {
        let soda = permits();
        let (status, headers, body) = get(
            &soda,
            "json",
            &[
                ("$select", "count(*) AS n, max(:updated_at) AS u"),
                ("$where", "n < 3"),
            ],
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v[0]["n"], "3");
        assert_eq!(v[0]["u"], "2026-01-01T00:00:02.000Z");
        assert_eq!(headers["x-soda2-types"], r#"["number","fixed_timestamp"]"#);
        let (_, _, body) = get(
            &soda,
            "json",
            &[
                ("$select", "count(*), max(:updated_at)"),
                ("$where", "n > 100"),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"count": "0"}]),
            "null max is left out"
        );
    }

    #[test]
    fn the_default_limit_is_1000() {
        let soda = Soda::new(&[("n", "number")]);
        soda.update(|d| {
            for i in 0..1005 {
                d.insert(&[&i.to_string()]);
            }
        });
        let (_, _, body) = get(&soda, "csv", &[]);
        assert_eq!(body.lines().count(), 1001);
    }

    #[test]
    fn updates_move_rows_past_every_updated_at_and_deletes_remove_them() {
        let soda = permits();
        let before = soda.rows();
        let max_before = before.iter().map(|r| r.updated_at.clone()).max().unwrap();
        soda.update(|d| {
            let id = d.find("n", "1").unwrap();
            d.set(&id, "zip", "99999");
            let gone = d.find("n", "2").unwrap();
            d.delete(&gone);
            d.insert(&["6", "02106", ""]);
        });
        let after = soda.rows();
        assert_eq!(after.len(), 6);
        let updated = after
            .iter()
            .find(|r| r.values[0].as_deref() == Some("1"))
            .unwrap();
        assert!(updated.updated_at > max_before);
        assert_eq!(updated.created_at, before[1].created_at);
        let inserted = after.last().unwrap();
        assert_eq!(
            inserted.updated_at, updated.updated_at,
            "one transaction, one time"
        );
        assert_eq!(inserted.values[2], None);
        let (_, headers, _) = get(&soda, "csv", &[]);
        assert_eq!(
            headers["x-soda2-truth-last-modified"],
            "Thu, 01 Jan 2026 00:00:05 GMT"
        );
    }

    #[test]
    fn what_it_does_not_understand_is_a_400_with_a_soda_error() {
        let soda = permits();
        for query in [
            vec![("$group", "zip")],
            vec![("$where", "n > 1 AND")],
            vec![("$where", "upper(zip) = 'A'")],
            vec![("$where", "nope = 1")],
            vec![("$where", "zip > 3")],
            vec![("$where", ":id = 'row-nope'")],
            vec![("$select", "zip, count(*)")],
            vec![("$q", "text")],
            vec![("$limit", "ten")],
            vec![("nope", "1")],
        ] {
            let (status, _, body) = get(&soda, "csv", &query);
            assert_eq!(status, 400, "{query:?}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"], true);
            assert_eq!(v["code"], "query.compiler.malformed");
            assert!(v["message"].as_str().unwrap().len() > 5, "{body}");
        }
    }

    #[test]
    fn tokens_hooks_and_recording() {
        let soda = permits().require_app_token("T0K");
        let (status, _, _) = get(&soda, "csv", &[]);
        assert_eq!(status, 403);
        let (status, _, _) = soda.respond("csv", "/resource/x.csv", Some("T0K"));
        assert_eq!(status, 200);
        soda.before_request(|request, data| {
            if request.is_page() {
                let id = data.find("n", "0").unwrap();
                data.delete(&id);
            }
        });
        let (status, _, body) = soda.respond("csv", "/resource/x.csv?%24limit=10", Some("T0K"));
        assert_eq!(status, 200);
        assert_eq!(
            column(std::str::from_utf8(&body).unwrap(), 0),
            ["1", "2", "3", "4", "5"]
        );
        let requests = soda.requests();
        assert_eq!(requests.len(), 3);
        assert_eq!(requests[0].status, 403);
        assert_eq!(requests[2].param("$limit"), Some("10"));
        assert_eq!(requests[2].app_token.as_deref(), Some("T0K"));
    }
}
