//! The schema a CSV is converted with: inferred from a bounded sample with `arrow-csv`, then
//! overridden by Socrata's declared column types and by a schema file.
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
use std::io::Cursor;

use arrow::csv::reader::Format;
use serde::Deserialize;

use super::columns::{Column, ColumnType};
use super::records::Dialect;
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
pub fn soda_type(soda: &str) -> ColumnType {
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
pub fn unique_names(headers: Vec<String>) -> Vec<String> {
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

/// Infers the schema from `sample` (the first `complete_records` records of the input,
/// header included when `has_header`).
pub fn infer(
    sample: &[u8],
    complete_records: usize,
    dialect: Dialect,
    has_header: bool,
    null_values: &[String],
) -> Result<Vec<Column>> {
    let alternatives: Vec<String> = null_values.iter().map(|v| regex::escape(v)).collect();
    let null_regex = regex::Regex::new(&format!("^(?:{})$", alternatives.join("|")))
        .map_err(|e| ExtractError::Config(format!("null markers: {e}")))?;
    let mut format = Format::default()
        .with_header(has_header)
        .with_delimiter(dialect.delimiter)
        .with_quote(dialect.quote)
        .with_null_regex(null_regex)
        // Ragged rows must not break inference: they are reported row by row later.
        .with_truncated_rows(true);
    if let Some(escape) = dialect.escape {
        format = format.with_escape(escape);
    }
    let data_records = complete_records.saturating_sub(usize::from(has_header));
    let (schema, _) = format
        .infer_schema(Cursor::new(sample), Some(data_records))
        .map_err(|e| ExtractError::Decode {
            source_name: String::new(),
            detail: format!("cannot infer a schema: {e}"),
        })?;
    let names = unique_names(schema.fields().iter().map(|f| f.name().clone()).collect());
    Ok(schema
        .fields()
        .iter()
        .zip(names)
        .map(|(field, name)| Column {
            name,
            column_type: ColumnType::from_inferred(field.data_type()),
        })
        .collect())
}

/// Applies Socrata hints and a schema file to inferred columns.
pub fn apply_overrides(
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
        }
    }
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialect() -> Dialect {
        Dialect {
            delimiter: b',',
            quote: b'"',
            escape: None,
        }
    }

    #[test]
    fn infers_types_and_fixes_names() {
        let sample = b"id,price,flag,day,at,name,,name,empty\n\
            1,2.5,true,2024-01-01,2024-01-01T00:00:00.000,a,x,y,\n\
            2,NA,false,2024-01-02,2024-01-02 10:00:00,b,x,y,NULL\n";
        let cols = infer(
            sample,
            3,
            dialect(),
            true,
            &["".into(), "NA".into(), "NULL".into()],
        )
        .unwrap();
        let got: Vec<(&str, ColumnType)> = cols
            .iter()
            .map(|c| (c.name.as_str(), c.column_type))
            .collect();
        assert_eq!(
            got,
            [
                ("id", ColumnType::Int64),
                ("price", ColumnType::Float64),
                ("flag", ColumnType::Bool),
                ("day", ColumnType::Date),
                ("at", ColumnType::Timestamp),
                ("name", ColumnType::String),
                ("column_7", ColumnType::String),
                ("name_2", ColumnType::String),
                ("empty", ColumnType::String),
            ]
        );
    }

    #[test]
    fn overrides_apply_in_order() {
        let cols = vec![
            Column {
                name: "zip".into(),
                column_type: ColumnType::Int64,
            },
            Column {
                name: "n".into(),
                column_type: ColumnType::Int64,
            },
            Column {
                name: "when".into(),
                column_type: ColumnType::String,
            },
        ];
        let soda = vec![
            ("n".to_string(), "number".to_string()),
            ("when".into(), "floating_timestamp".into()),
        ];
        let file = SchemaOverride::parse("[columns]\nzip = \"STRING\"\n", "s.toml").unwrap();
        let out = apply_overrides(cols.clone(), Some(&soda), Some(&file)).unwrap();
        let types: Vec<ColumnType> = out.iter().map(|c| c.column_type).collect();
        assert_eq!(
            types,
            [
                ColumnType::String,
                ColumnType::Float64,
                ColumnType::Timestamp
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
