//! The schema a CSV is converted with: inferred from a bounded sample of records, then
//! overridden by Socrata's declared column types and by a schema file.
//!
//! Inference never loses information: a column gets a type other than STRING only when every
//! non-NULL sampled value converts to it losslessly ([`super::lossless`]), trying INT64, then
//! FLOAT64, BOOL, DATE, TIMESTAMP. Anything else (leading zeros, integers beyond INT64, floats a
//! FLOAT64 cannot hold, offsets, mixed kinds, columns with no values) stays STRING.
//!
//! Precedence (later wins): inference < Socrata `X-SODA2-Types` < schema file.
//!
//! Schema file (JSON or TOML), either a map
//! ```toml
//! [columns]
//! zip = "string"
//! amount = "float64"
//! ```
//! or BigQuery's JSON schema form `[{"name": "zip", "type": "STRING"}, ...]`. Columns not
//! listed keep their inferred type; listing a column the CSV does not have is an error (a typo
//! would otherwise be silently ignored).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::columns::{Column, ColumnType, NullMarkers};
use super::lossless;
use super::records::{Flaw, Records};
use crate::error::{ExtractError, Result};

/// Column types forced by a schema file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaOverride {
    /// Where it came from (for messages).
    pub origin: String,
    pub columns: BTreeMap<String, ColumnType>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SchemaFile {
    Map { columns: BTreeMap<String, String> },
    BigQuery(Vec<BigQueryField>),
    Fields { fields: Vec<BigQueryField> },
}

#[derive(Deserialize)]
struct BigQueryField {
    name: String,
    #[serde(rename = "type", alias = "data_type")]
    column_type: String,
}

impl SchemaOverride {
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let bad = |e: String| ExtractError::Config(format!("schema file {origin}: {e}"));
        let trimmed = text.trim_start_matches('\u{feff}').trim_start();
        let lower = origin.to_ascii_lowercase();
        let json = || serde_json::from_str::<SchemaFile>(trimmed);
        let toml = || toml::from_str::<SchemaFile>(trimmed);
        let file: SchemaFile = if lower.ends_with(".json") {
            json().map_err(|e| bad(format!("invalid JSON: {e}")))?
        } else if lower.ends_with(".toml") {
            toml().map_err(|e| bad(format!("invalid TOML: {e}")))?
        } else {
            // `[columns]` is TOML, `[{"name":...}]` is JSON: try JSON first.
            match json() {
                Ok(file) => file,
                Err(json_err) => toml().map_err(|toml_err| {
                    bad(format!("neither JSON ({json_err}) nor TOML ({toml_err})"))
                })?,
            }
        };
        let pairs: Vec<(String, String)> = match file {
            SchemaFile::Map { columns } => columns.into_iter().collect(),
            SchemaFile::BigQuery(fields) | SchemaFile::Fields { fields } => fields
                .into_iter()
                .map(|f| (f.name, f.column_type))
                .collect(),
        };
        let mut columns = BTreeMap::new();
        for (name, type_name) in pairs {
            let t = ColumnType::parse(&type_name).ok_or_else(|| {
                bad(format!(
                    "column {name:?}: unknown type {type_name:?} (expected string, int64, \
                     float64, bool, date or timestamp)"
                ))
            })?;
            columns.insert(name, t);
        }
        Ok(SchemaOverride {
            origin: origin.to_string(),
            columns,
        })
    }
}

/// Maps a Socrata SODA type onto ours. `number` (arbitrary precision) becomes FLOAT64: always
/// loadable, exact for integers up to 2^53; force INT64 with a schema file where that is wrong.
pub(crate) fn soda_type(soda: &str) -> ColumnType {
    match soda {
        "number" | "double" | "money" | "percent" => ColumnType::Float64,
        "checkbox" | "boolean" => ColumnType::Bool,
        "floating_timestamp" | "fixed_timestamp" | "calendar_date" | "date" => {
            ColumnType::Timestamp
        }
        _ => ColumnType::String,
    }
}

/// Unique, non-empty column names: an empty header becomes `column_N`, a repeated one gets
/// `_2`, `_3`... (BigQuery rejects duplicates).
pub(crate) fn unique_names(headers: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    headers
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            let base = if h.trim().is_empty() {
                format!("column_{}", i + 1)
            } else {
                h
            };
            let mut name = base.clone();
            let mut n = 2;
            while !seen.insert(name.to_ascii_lowercase()) {
                name = format!("{base}_{n}");
                n += 1;
            }
            name
        })
        .collect()
}

/// The types a value can be read as without loss, one bit each in [`CANDIDATES`] order.
const CANDIDATES: [ColumnType; 5] = [
    ColumnType::Int64,
    ColumnType::Float64,
    ColumnType::Bool,
    ColumnType::Date,
    ColumnType::Timestamp,
];
const ALL: u8 = (1 << CANDIDATES.len()) - 1;

/// Of the types in `mask`, those `value` converts to losslessly.
fn lossless_types(value: &str, mask: u8) -> u8 {
    let mut out = 0;
    for (bit, t) in CANDIDATES.iter().enumerate() {
        if mask & (1 << bit) == 0 {
            continue;
        }
        let ok = match t {
            ColumnType::Int64 => lossless::int64(value).is_some(),
            ColumnType::Float64 => lossless::float64(value).is_some(),
            ColumnType::Bool => lossless::bool(value).is_some(),
            ColumnType::Date => lossless::date(value).is_some(),
            ColumnType::Timestamp => lossless::timestamp_micros(value).is_some(),
            ColumnType::String => true,
        };
        if ok {
            out |= 1 << bit;
        }
    }
    out
}

/// The type inference gives a column whose values all read losslessly as the types in `mask`.
fn pick(mask: u8, seen: bool) -> ColumnType {
    if !seen {
        return ColumnType::String;
    }
    CANDIDATES
        .iter()
        .enumerate()
        .find(|(bit, _)| mask & (1 << bit) != 0)
        .map_or(ColumnType::String, |(_, t)| *t)
}

/// The header's names: they must be text, or no column could be named right.
fn header_names(sample: &Records, src: &str) -> Result<Vec<String>> {
    let bad = |detail: String| ExtractError::BadRecord {
        source_name: src.to_string(),
        line: sample.line(0),
        offset: sample.offset(0),
        detail: format!("header: {detail}"),
    };
    if let Some(flaw) = sample.flaw(0) {
        return Err(bad(match flaw {
            Flaw::TextAfterQuote { field } => {
                format!("text after the closing quote of column {}", field + 1)
            }
            Flaw::UnterminatedQuote { field, .. } => format!(
                "the quote opened in column {} is never closed (the whole input is one header)",
                field + 1
            ),
        }));
    }
    (0..sample.fields(0))
        .map(|col| {
            let raw = sample.field(0, col);
            match std::str::from_utf8(raw) {
                Ok(name) if !name.contains('\0') => Ok(name.to_string()),
                Ok(_) => Err(bad(format!(
                    "column {} name holds a NUL byte (UTF-16 data? set the input's encoding)",
                    col + 1
                ))),
                Err(_) => Err(bad(format!(
                    "column {} name {:?} is not valid UTF-8 (Latin-1 or Windows-1252 data? set \
                     the input's encoding)",
                    col + 1,
                    String::from_utf8_lossy(raw)
                ))),
            }
        })
        .collect()
}

/// Infers the schema from `sample` (the first records of the input, the header first when
/// `has_header`). Records that will be bad rows (broken quoting, a different field count,
/// invalid UTF-8 or a NUL byte in a value) say nothing about types and are passed over; they
/// are reported when the rows are converted. Fails only for a header that cannot name columns.
pub fn infer(
    sample: &Records,
    has_header: bool,
    nulls: &NullMarkers,
    src: &str,
) -> Result<Vec<Column>> {
    if sample.is_empty() {
        return Ok(Vec::new());
    }
    let names = if has_header {
        unique_names(header_names(sample, src)?)
    } else {
        (1..=sample.fields(0))
            .map(|i| format!("column_{i}"))
            .collect()
    };
    let width = names.len();
    let mut masks = vec![ALL; width];
    let mut seen = vec![false; width];
    for row in usize::from(has_header)..sample.len() {
        if sample.flaw(row).is_some() || sample.fields(row) != width {
            continue;
        }
        for (col, (mask, seen)) in masks.iter_mut().zip(seen.iter_mut()).enumerate() {
            let raw = sample.field(row, col);
            if nulls.is_null(raw) || raw.contains(&0) {
                continue;
            }
            let Ok(value) = std::str::from_utf8(raw) else {
                continue;
            };
            *seen = true;
            if *mask != 0 {
                *mask = lossless_types(value, *mask);
            }
        }
    }
    Ok(names
        .into_iter()
        .zip(masks.into_iter().zip(seen))
        .map(|(name, (mask, seen))| Column {
            name,
            column_type: pick(mask, seen),
            lossless: true,
        })
        .collect())
}

/// `id:INT64, zip:STRING, ...` for the log; declared (overridden) types are marked.
pub(crate) fn describe(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| {
            let declared = if c.lossless { "" } else { " (declared)" };
            format!("{}:{}{declared}", c.name, c.column_type.name())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Applies Socrata hints and a schema file to inferred columns.
pub(crate) fn apply_overrides(
    mut columns: Vec<Column>,
    soda_types: Option<&[(String, String)]>,
    file: Option<&SchemaOverride>,
) -> Result<Vec<Column>> {
    if let Some(types) = soda_types {
        let by_name: BTreeMap<&str, &str> = types
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        for column in &mut columns {
            if let Some(t) = by_name.get(column.name.as_str()) {
                column.column_type = soda_type(t);
                column.lossless = false;
            }
        }
    }
    if let Some(file) = file {
        for (name, t) in &file.columns {
            let Some(position) = columns.iter().position(|c| &c.name == name) else {
                let available: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                return Err(ExtractError::Config(format!(
                    "schema file {}: column {name:?} is not in the data (columns: {})",
                    file.origin,
                    available.join(", ")
                )));
            };
            columns[position].column_type = *t;
            columns[position].lossless = false;
        }
    }
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use super::super::records::{Dialect, RecordReader};
    use super::*;

    fn records(text: &[u8]) -> Records {
        let mut reader = RecordReader::new(
            text,
            Dialect {
                delimiter: b',',
                quote: b'"',
                escape: None,
            },
        );
        let mut records = Records::default();
        reader.read_batch(&mut records, 1000).unwrap();
        records
    }

    fn nulls() -> NullMarkers {
        NullMarkers::new(&["".into(), "NA".into(), "NULL".into()])
    }

    fn types(text: &[u8]) -> Vec<(String, ColumnType)> {
        infer(&records(text), true, &nulls(), "t.csv")
            .unwrap()
            .into_iter()
            .map(|c| {
                assert!(c.lossless);
                (c.name, c.column_type)
            })
            .collect()
    }

    fn column(name: &str, t: ColumnType) -> Column {
        Column {
            name: name.into(),
            column_type: t,
            lossless: true,
        }
    }

    #[test]
    fn infers_types_and_fixes_names() {
        let sample = b"id,price,flag,day,at,name,,name,empty\n\
            1,2.5,true,2024-01-01,2024-01-01T00:00:00.000,a,x,y,\n\
            2,NA,false,2024-01-02,2024-01-02 10:00:00,b,x,y,NULL\n";
        let got = types(sample);
        let want = [
            ("id", ColumnType::Int64),
            ("price", ColumnType::Float64),
            ("flag", ColumnType::Bool),
            ("day", ColumnType::Date),
            ("at", ColumnType::Timestamp),
            ("name", ColumnType::String),
            ("column_7", ColumnType::String),
            ("name_2", ColumnType::String),
            ("empty", ColumnType::String),
        ];
        assert_eq!(got, want.map(|(n, t)| (n.to_string(), t)).to_vec());
    }

    #[test]
    fn inference_keeps_every_digit_and_character() {
        // (values of one column, the type they must get)
        let cases: &[(&[&str], ColumnType)] = &[
            // ZIP and FIPS codes.
            (&["02134", "01001"], ColumnType::String),
            (&["02134", "12345"], ColumnType::String),
            (&["0", "10", "-3"], ColumnType::Int64),
            (&["0.5", "0", "-0.25"], ColumnType::Float64),
            (&["1", "2.5"], ColumnType::Float64),
            // Beyond INT64: text, never float.
            (&["9223372036854775807", "1"], ColumnType::Int64),
            (&["9223372036854775808", "1"], ColumnType::String),
            (&["12345678901234567890123"], ColumnType::String),
            (&["1.5", "12345678901234567890"], ColumnType::String),
            // Floats a FLOAT64 cannot hold, non-finite spellings.
            (&["0.1", "0.30000000000000001"], ColumnType::String),
            (&["1.5", "1e400"], ColumnType::String),
            (&["1.5", "NaN"], ColumnType::String),
            (&["inf", "-inf"], ColumnType::String),
            (&["+1", "+2"], ColumnType::String),
            (&[" 1", "2"], ColumnType::String),
            // 1/0 are numbers, not booleans; y/n and yes/no are text.
            (&["1", "0"], ColumnType::Int64),
            (&["true", "FALSE", "True"], ColumnType::Bool),
            (&["true", "1"], ColumnType::String),
            (&["y", "n"], ColumnType::String),
            (&["yes", "no"], ColumnType::String),
            (&["2024-01-01", "2024-02-29"], ColumnType::Date),
            (&["2024-01-01", "2023-02-29"], ColumnType::String),
            (&["2024-01-01", "2024-01-01T00:00:00"], ColumnType::String),
            (
                &["2024-01-01T10:00:00Z", "2024-01-01 10:00:00.123456"],
                ColumnType::Timestamp,
            ),
            // An offset or nanoseconds would be lost.
            (
                &["2024-01-01T10:00:00Z", "2024-01-01T10:00:00+02:00"],
                ColumnType::String,
            ),
            (&["2024-01-01T10:00:00.123456789"], ColumnType::String),
            (&["NA", ""], ColumnType::String),
        ];
        for (values, want) in cases {
            let mut text = String::from("c\n");
            for v in *values {
                text.push_str(&format!("\"{v}\"\n"));
            }
            let got = types(text.as_bytes());
            assert_eq!(got[0].1, *want, "{values:?}");
        }
    }

    #[test]
    fn bad_records_in_the_sample_do_not_fail_or_steer_inference() {
        // Invalid UTF-8, a NUL, a ragged record and broken quoting: all bad rows later.
        let sample = b"id,name\n1,a\n\xff,b\n2\0,c\n3,d,extra\n\"4\"x,e\n5,\xe9t\xe9\n";
        let got = types(sample);
        assert_eq!(
            got,
            [
                ("id".to_string(), ColumnType::Int64),
                ("name".to_string(), ColumnType::String)
            ]
        );
    }

    #[test]
    fn a_header_that_cannot_name_columns_fails_naming_its_line() {
        for (text, want) in [
            (
                &b"id,caf\xe9\n1,2\n"[..],
                "column 2 name \"caf\u{fffd}\" is not valid UTF-8",
            ),
            (b"i\0d\0\n", "NUL byte"),
            (b"\"id\"x,b\n", "text after the closing quote of column 1"),
            (b"id,\"b\n1,2\n", "never closed"),
        ] {
            let err = infer(&records(text), true, &nulls(), "t.csv").unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with("t.csv: line 1 (byte offset 0): header: "),
                "{msg}"
            );
            assert!(msg.contains(want), "{msg}");
        }
        // Without a header, the same bytes are just values.
        let cols = infer(&records(b"caf\xe9,1\n"), false, &nulls(), "t.csv").unwrap();
        assert_eq!(cols[0].name, "column_1");
        assert_eq!(cols[1].column_type, ColumnType::Int64);
    }

    #[test]
    fn headers_with_empty_and_duplicate_names_and_header_only_files() {
        let got = types(b"a,,A,a,\n");
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "column_2", "A_2", "a_3", "column_5"]);
        assert!(got.iter().all(|(_, t)| *t == ColumnType::String));
        assert_eq!(
            describe(&[
                column("id", ColumnType::Int64),
                Column {
                    lossless: false,
                    ..column("zip", ColumnType::String)
                }
            ]),
            "id:INT64, zip:STRING (declared)"
        );
    }

    #[test]
    fn overrides_apply_in_order() {
        let cols = vec![
            column("zip", ColumnType::Int64),
            column("n", ColumnType::Int64),
            column("when", ColumnType::String),
        ];
        let soda = vec![
            ("n".to_string(), "number".to_string()),
            ("when".into(), "floating_timestamp".into()),
        ];
        let file = SchemaOverride::parse("[columns]\nzip = \"STRING\"\n", "s.toml").unwrap();
        let out = apply_overrides(cols.clone(), Some(&soda), Some(&file)).unwrap();
        let types: Vec<(ColumnType, bool)> =
            out.iter().map(|c| (c.column_type, c.lossless)).collect();
        assert_eq!(
            types,
            [
                (ColumnType::String, false),
                (ColumnType::Float64, false),
                (ColumnType::Timestamp, false)
            ]
        );

        let bq =
            SchemaOverride::parse(r#"[{"name": "zipp", "type": "STRING"}]"#, "s.json").unwrap();
        let err = apply_overrides(cols, None, Some(&bq)).unwrap_err();
        assert!(err.is_config());
        assert!(
            err.to_string().contains("\"zipp\" is not in the data"),
            "{err}"
        );
        let err = SchemaOverride::parse(r#"{"columns": {"a": "decimal"}}"#, "s.json").unwrap_err();
        assert!(err.to_string().contains("unknown type"), "{err}");
    }
}
