//! Checks HTTP requests against Google's discovery document for the Cloud Run Admin API v2
//! (`tests/fixtures/run.v2.json`, see the README there): which method a method+path is, its
//! query parameters, and its request body walked through the schema — `$ref`, object
//! `properties` (unknown fields fail), `additionalProperties`, arrays' `items`, the JSON types,
//! the string formats (int64/uint64, google-duration, google-datetime, byte) and `enum`s.
//!
//! Two rules come from the protobuf JSON mapping rather than the document, because Google's
//! servers follow them and the official Rust clients rely on them:
//! - an enum may be sent as its number. Numbers are checked against the enum's declaration
//!   order, which is its numbering for every enum here except `LaunchStage` (numbered
//!   out of order in google/api/launch_stage.proto), whose numbers are listed below.
//!   [`Discovery::validate`] rewrites numbers to names, so the fake stores what a server means.
//! - the `$alt=json;enum-encoding=int` system parameter (the `$`-prefixed spelling of `alt`
//!   plus an enum encoding) is accepted; its `json` part is checked against `alt`'s enum.

use serde_json::{Map, Value};
use std::collections::HashMap;

const DOCUMENT: &str = include_str!("../fixtures/run.v2.json");

/// google.api.LaunchStage numbers (the document lists the names in another order).
const LAUNCH_STAGE_NUMBERS: &[(&str, i64)] = &[
    ("LAUNCH_STAGE_UNSPECIFIED", 0),
    ("UNIMPLEMENTED", 6),
    ("PRELAUNCH", 7),
    ("EARLY_ACCESS", 1),
    ("ALPHA", 2),
    ("BETA", 3),
    ("GA", 4),
    ("DEPRECATED", 5),
];

#[derive(Debug, Clone)]
enum Segment {
    /// `jobs`, or `{jobsId}:run` as (prefix "", var, suffix ":run").
    Literal(String),
    Var {
        prefix: String,
        suffix: String,
    },
}

#[derive(Debug, Clone)]
pub struct Method {
    pub id: String,
    pub http_method: String,
    segments: Vec<Segment>,
    parameters: Map<String, Value>,
    pub request: Option<String>,
    pub response: Option<String>,
}

pub struct Discovery {
    doc: Value,
    methods: Vec<Method>,
}

impl Discovery {
    pub fn load() -> Discovery {
        let doc: Value = serde_json::from_str(DOCUMENT).expect("run.v2.json parses");
        let mut methods = Vec::new();
        collect_methods(&doc["resources"], &mut methods);
        assert!(!methods.is_empty(), "no methods in the discovery document");
        Discovery { doc, methods }
    }

    pub fn revision(&self) -> &str {
        self.doc["revision"].as_str().unwrap_or("?")
    }

    pub fn has_schema(&self, name: &str) -> bool {
        self.doc["schemas"].get(name).is_some()
    }

    /// The method an HTTP method and path (`/v2/projects/...`) call.
    pub fn find_method(&self, http_method: &str, path: &str) -> Option<&Method> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        self.methods.iter().find(|m| {
            m.http_method == http_method
                && m.segments.len() == parts.len()
                && m.segments.iter().zip(&parts).all(|(seg, part)| match seg {
                    Segment::Literal(l) => l == part,
                    Segment::Var { prefix, suffix } => {
                        part.len() > prefix.len() + suffix.len()
                            && part.starts_with(prefix.as_str())
                            && part.ends_with(suffix.as_str())
                            && !part[prefix.len()..part.len() - suffix.len()].contains(':')
                    }
                })
        })
    }

    /// Problems with the query parameters of a call to `m`.
    pub fn validate_query(&self, m: &Method, query: &[(String, String)]) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (k, v) in query {
            *seen.entry(k.as_str()).or_default() += 1;
            if k == "$alt" {
                let (alt, rest) = v.split_once(';').unwrap_or((v.as_str(), ""));
                if let Err(p) = check_param(&self.doc["parameters"]["alt"], "alt", alt) {
                    problems.push(format!("query $alt: {p}"));
                }
                if !(rest.is_empty() || rest == "enum-encoding=int") {
                    problems.push(format!("query $alt: unknown option {rest:?}"));
                }
                continue;
            }
            let spec = m
                .parameters
                .get(k)
                .filter(|p| p["location"] == "query")
                .or_else(|| self.doc["parameters"].get(k));
            match spec {
                None => problems.push(format!(
                    "query parameter {k:?} is not a parameter of {}",
                    m.id
                )),
                Some(spec) => {
                    if let Err(p) = check_param(spec, k, v) {
                        problems.push(format!("query {p}"));
                    }
                }
            }
        }
        for (k, n) in seen {
            let repeated = m.parameters.get(k).is_some_and(|p| p["repeated"] == true);
            if n > 1 && !repeated {
                problems.push(format!("query parameter {k:?} given {n} times"));
            }
        }
        for (k, p) in &m.parameters {
            if p["location"] == "query"
                && p["required"] == true
                && !query.iter().any(|(q, _)| q == k)
            {
                problems.push(format!(
                    "required query parameter {k:?} of {} is missing",
                    m.id
                ));
            }
        }
        problems
    }

    /// Validates `value` against schema `name`, rewriting enum numbers to names in place.
    /// Returns the problems, each with its JSON path.
    pub fn validate(&self, name: &str, value: &mut Value) -> Vec<String> {
        let mut problems = Vec::new();
        let schema = json_ref(name);
        self.check(&schema, value, "$", &mut problems);
        problems
    }

    fn check(&self, schema: &Value, v: &mut Value, path: &str, out: &mut Vec<String>) {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            match self.doc["schemas"].get(r) {
                Some(s) => {
                    let s = s.clone();
                    self.check(&s, v, path, out);
                }
                None => out.push(format!("{path}: unknown schema {r}")),
            }
            return;
        }
        let ty = schema.get("type").and_then(Value::as_str).unwrap_or("any");
        match ty {
            "any" => {}
            "object" => {
                let Some(obj) = v.as_object_mut() else {
                    out.push(format!("{path}: expected an object, got {}", kind(v)));
                    return;
                };
                let props = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties");
                for (k, child) in obj.iter_mut() {
                    let child_path = format!("{path}.{k}");
                    match (props.and_then(|p| p.get(k)), additional) {
                        (Some(s), _) => self.check(s, child, &child_path, out),
                        (None, Some(a)) => self.check(a, child, &child_path, out),
                        (None, None) if props.is_some() => {
                            out.push(format!("{child_path}: unknown field"));
                        }
                        (None, None) => {}
                    }
                }
            }
            "array" => {
                let Some(items) = v.as_array_mut() else {
                    out.push(format!("{path}: expected an array, got {}", kind(v)));
                    return;
                };
                let item_schema = schema.get("items").cloned().unwrap_or(Value::Null);
                for (i, item) in items.iter_mut().enumerate() {
                    self.check(&item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
            "string" => {
                if let Some(values) = schema.get("enum").and_then(Value::as_array) {
                    check_enum(values, v, path, out);
                    return;
                }
                let Some(s) = v.as_str() else {
                    out.push(format!("{path}: expected a string, got {}", kind(v)));
                    return;
                };
                let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
                if let Err(p) = check_format(format, s) {
                    out.push(format!("{path}: {p}"));
                }
            }
            "integer" => {
                let format = schema
                    .get("format")
                    .and_then(Value::as_str)
                    .unwrap_or("int32");
                let ok = match v.as_i64() {
                    Some(n) => match format {
                        "int32" => i32::try_from(n).is_ok(),
                        "uint32" => u32::try_from(n).is_ok(),
                        _ => true,
                    },
                    None => false,
                };
                if !ok {
                    out.push(format!("{path}: expected a {format} integer, got {v}"));
                }
            }
            "number" => {
                if !v.is_number() {
                    out.push(format!("{path}: expected a number, got {}", kind(v)));
                }
            }
            "boolean" => {
                if !v.is_boolean() {
                    out.push(format!("{path}: expected a boolean, got {}", kind(v)));
                }
            }
            other => out.push(format!(
                "{path}: schema type {other:?} not understood by the validator"
            )),
        }
    }
}

fn json_ref(name: &str) -> Value {
    serde_json::json!({ "$ref": name })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_enum(values: &[Value], v: &mut Value, path: &str, out: &mut Vec<String>) {
    let names: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
    match v {
        Value::String(s) => {
            if !names.contains(&s.as_str()) {
                out.push(format!("{path}: {s:?} is not one of {names:?}"));
            }
        }
        Value::Number(n) => {
            let Some(n) = n.as_i64() else {
                out.push(format!("{path}: enum number {n} is not an integer"));
                return;
            };
            let name = if names.contains(&"LAUNCH_STAGE_UNSPECIFIED") {
                LAUNCH_STAGE_NUMBERS
                    .iter()
                    .find(|(_, num)| *num == n)
                    .map(|(name, _)| *name)
            } else {
                usize::try_from(n).ok().and_then(|i| names.get(i).copied())
            };
            match name {
                Some(name) => *v = Value::String(name.to_string()),
                None => out.push(format!("{path}: {n} is not a number of enum {names:?}")),
            }
        }
        other => out.push(format!(
            "{path}: expected an enum name, got {}",
            kind(other)
        )),
    }
}

fn check_format(format: &str, s: &str) -> Result<(), String> {
    match format {
        "int64" => s
            .parse::<i64>()
            .map(|_| ())
            .map_err(|_| format!("{s:?} is not an int64 string")),
        "uint64" => s
            .parse::<u64>()
            .map(|_| ())
            .map_err(|_| format!("{s:?} is not a uint64 string")),
        "google-duration" => {
            let ok = s.strip_suffix('s').is_some_and(|n| {
                let (whole, frac) = n.split_once('.').unwrap_or((n, ""));
                let whole = whole.strip_prefix('-').unwrap_or(whole);
                !whole.is_empty()
                    && whole.bytes().all(|b| b.is_ascii_digit())
                    && frac.len() <= 9
                    && frac.bytes().all(|b| b.is_ascii_digit())
            });
            if ok {
                Ok(())
            } else {
                Err(format!("{s:?} is not a google-duration (e.g. \"600s\")"))
            }
        }
        "google-datetime" => chrono::DateTime::parse_from_rfc3339(s)
            .map(|_| ())
            .map_err(|e| format!("{s:?} is not an RFC 3339 google-datetime: {e}")),
        "byte" => {
            let ok = s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/-_=".contains(&b));
            if ok {
                Ok(())
            } else {
                Err(format!("{s:?} is not base64"))
            }
        }
        _ => Ok(()),
    }
}

fn check_param(spec: &Value, name: &str, value: &str) -> Result<(), String> {
    if let Some(values) = spec.get("enum").and_then(Value::as_array)
        && !values.iter().any(|e| e.as_str() == Some(value))
    {
        return Err(format!("{name}={value:?} is not one of {values:?}"));
    }
    match spec.get("type").and_then(Value::as_str) {
        Some("boolean") if value != "true" && value != "false" => {
            Err(format!("{name}={value:?} is not a boolean"))
        }
        Some("integer") if value.parse::<i32>().is_err() => {
            Err(format!("{name}={value:?} is not an int32"))
        }
        _ => Ok(()),
    }
}

fn collect_methods(resources: &Value, out: &mut Vec<Method>) {
    let Some(resources) = resources.as_object() else {
        return;
    };
    for resource in resources.values() {
        if let Some(methods) = resource.get("methods").and_then(Value::as_object) {
            for m in methods.values() {
                let flat = m["flatPath"].as_str().unwrap_or_default();
                let segments = flat
                    .split('/')
                    .map(|seg| match (seg.find('{'), seg.find('}')) {
                        (Some(open), Some(close)) => Segment::Var {
                            prefix: seg[..open].to_string(),
                            suffix: seg[close + 1..].to_string(),
                        },
                        _ => Segment::Literal(seg.to_string()),
                    })
                    .collect();
                out.push(Method {
                    id: m["id"].as_str().unwrap_or_default().to_string(),
                    http_method: m["httpMethod"].as_str().unwrap_or_default().to_string(),
                    segments,
                    parameters: m["parameters"].as_object().cloned().unwrap_or_default(),
                    request: m["request"]["$ref"].as_str().map(str::to_string),
                    response: m["response"]["$ref"].as_str().map(str::to_string),
                });
            }
        }
        collect_methods(&resource["resources"], out);
    }
}
