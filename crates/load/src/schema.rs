//! BigQuery table schemas: derived from Parquet footers, read from `bq`-style schema files, and
//! checked for agreement across the files of one load job.
//!
//! Why derive the schema ourselves instead of letting BigQuery read it: BigQuery takes a
//! Parquet load's schema from the *last* file it reads, so files whose types drifted load
//! differently depending on order, and an append whose types differ from the table fails late
//! with a generic message. Sending an explicit schema computed from every file's footer makes
//! the table's types a decision we make (and check) up front.

use std::collections::BTreeSet;
use std::fmt;

use parquet::basic::{ConvertedType, LogicalType, Repetition, Type as PhysicalType};
use parquet::schema::types::Type;
use serde::{Deserialize, Serialize};

/// `NULLABLE`, `REQUIRED` or `REPEATED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Mode {
    Nullable,
    Required,
    Repeated,
}

impl Mode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Nullable => "NULLABLE",
            Mode::Required => "REQUIRED",
            Mode::Repeated => "REPEATED",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One column of a BigQuery schema, as the REST API spells it (`TableFieldSchema`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    /// Canonical legacy type name (`INTEGER`, `FLOAT`, `BOOLEAN`, `RECORD`, ...): the names
    /// BigQuery itself returns, so comparisons with an existing table's schema are exact.
    #[serde(rename = "type")]
    pub field_type: String,
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Field {
    pub fn new(name: impl Into<String>, field_type: &str, mode: Mode) -> Self {
        Field {
            name: name.into(),
            field_type: field_type.to_string(),
            mode,
            fields: Vec::new(),
            description: None,
        }
    }

    /// `INTEGER`, `REPEATED STRING`, `RECORD<a INTEGER, b STRING>`: for error messages.
    pub(crate) fn describe_type(&self) -> String {
        let base = if self.fields.is_empty() {
            self.field_type.clone()
        } else {
            let inner: Vec<String> = self
                .fields
                .iter()
                .map(|f| format!("{} {}", f.name, f.describe_type()))
                .collect();
            format!("{}<{}>", self.field_type, inner.join(", "))
        };
        match self.mode {
            Mode::Nullable => base,
            mode => format!("{mode} {base}"),
        }
    }
}

/// Which Parquet decimal conversions a schema needs (`decimalTargetTypes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum DecimalTarget {
    Numeric,
    BigNumeric,
}

impl DecimalTarget {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DecimalTarget::Numeric => "NUMERIC",
            DecimalTarget::BigNumeric => "BIGNUMERIC",
        }
    }
}

/// A BigQuery schema derived from one Parquet footer, plus the load options it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParquetSchema {
    pub(crate) fields: Vec<Field>,
    /// Non-empty when a column is a DECIMAL: BigQuery only converts decimals to the target
    /// types listed in `decimalTargetTypes` (default NUMERIC alone).
    pub(crate) decimal_targets: BTreeSet<DecimalTarget>,
    /// A LIST column is present: without `parquetOptions.enableListInference` BigQuery loads a
    /// LIST as a RECORD wrapping a repeated `list.element`, not as a REPEATED column.
    pub(crate) list_inference: bool,
    /// An ENUM column is present: without `parquetOptions.enumAsString` BigQuery loads it as BYTES.
    pub(crate) enum_as_string: bool,
}

/// A column the mapping cannot handle, with its dotted path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column `{column}`: {reason}")]
pub struct ColumnError {
    pub column: String,
    pub reason: String,
}

fn column_error(path: &str, reason: impl Into<String>) -> ColumnError {
    ColumnError {
        column: path.to_string(),
        reason: reason.into(),
    }
}

/// Maps a Parquet file schema (the footer's root group) to a BigQuery schema, following
/// BigQuery's own Parquet conversion rules:
///
/// - REQUIRED -> `REQUIRED`, OPTIONAL -> `NULLABLE`; LIST (any of the spec's encodings) and bare
///   repeated fields -> `REPEATED` of the element type; groups -> `RECORD`.
/// - STRING/ENUM -> `STRING`, JSON -> `JSON`, other byte arrays -> `BYTES`.
/// - INT32/INT64 (any integer annotation) -> `INTEGER`; FLOAT/DOUBLE/FLOAT16 -> `FLOAT`.
/// - DATE -> `DATE`; TIME -> `TIME`; TIMESTAMP with `isAdjustedToUTC` (and the legacy
///   TIMESTAMP_MILLIS/MICROS and INT96) -> `TIMESTAMP`; TIMESTAMP without it -> `DATETIME`.
/// - DECIMAL(p, s) -> `NUMERIC` when `s <= 9` and `p - s <= 29`, else `BIGNUMERIC` when
///   `s <= 38` and `p - s <= 38`, else an error.
///
/// Unsupported: MAP, nested lists, UNKNOWN (always-null), VARIANT. Those fail naming the column
/// rather than letting BigQuery guess.
pub(crate) fn from_parquet(root: &Type) -> Result<ParquetSchema, ColumnError> {
    let mut out = ParquetSchema {
        fields: Vec::new(),
        decimal_targets: BTreeSet::new(),
        list_inference: false,
        enum_as_string: false,
    };
    for child in root.get_fields() {
        let field = convert(child, child.name(), &mut out)?;
        out.fields.push(field);
    }
    if out.fields.is_empty() {
        return Err(column_error("", "the Parquet schema has no columns"));
    }
    validate_names(&out.fields, "")?;
    Ok(out)
}

fn repetition(t: &Type) -> Repetition {
    let info = t.get_basic_info();
    if info.has_repetition() {
        info.repetition()
    } else {
        Repetition::REQUIRED
    }
}

fn is_list(t: &Type) -> bool {
    let info = t.get_basic_info();
    matches!(info.logical_type_ref(), Some(LogicalType::List))
        || info.converted_type() == ConvertedType::LIST
}

fn is_map(t: &Type) -> bool {
    let info = t.get_basic_info();
    matches!(info.logical_type_ref(), Some(LogicalType::Map))
        || matches!(
            info.converted_type(),
            ConvertedType::MAP | ConvertedType::MAP_KEY_VALUE
        )
}

fn convert(t: &Type, path: &str, out: &mut ParquetSchema) -> Result<Field, ColumnError> {
    match repetition(t) {
        // A bare repeated field (no LIST wrapper) is a list of its own type.
        Repetition::REPEATED => {
            let mut element = convert_value(t, path, out)?;
            element.mode = Mode::Repeated;
            out.list_inference = true;
            Ok(element)
        }
        rep => {
            let mut field = if t.is_group() && is_list(t) {
                convert_list(t, path, out)?
            } else {
                convert_value(t, path, out)?
            };
            if field.mode != Mode::Repeated {
                field.mode = if rep == Repetition::REQUIRED {
                    Mode::Required
                } else {
                    Mode::Nullable
                };
            }
            Ok(field)
        }
    }
}

/// The element of a LIST group, per the Parquet spec's backward-compatibility rules.
fn convert_list(t: &Type, path: &str, out: &mut ParquetSchema) -> Result<Field, ColumnError> {
    let children = t.get_fields();
    let [repeated] = children else {
        return Err(column_error(
            path,
            "LIST group must have exactly one repeated child",
        ));
    };
    if repetition(repeated) != Repetition::REPEATED {
        return Err(column_error(path, "LIST group's child is not repeated"));
    }
    // Two-level encodings: the repeated field is the element itself.
    let legacy_element = repeated.is_primitive()
        || repeated.get_fields().len() > 1
        || repeated.name() == "array"
        || repeated.name() == format!("{}_tuple", t.name());
    let element_type: &Type = if legacy_element {
        repeated
    } else {
        &repeated.get_fields()[0]
    };
    if (element_type.is_group() && is_list(element_type))
        || (!legacy_element && repetition(element_type) == Repetition::REPEATED)
    {
        return Err(column_error(
            path,
            "nested lists (a list of lists) are not supported: BigQuery has no ARRAY<ARRAY<..>>",
        ));
    }
    let element = convert_value(element_type, path, out)?;
    out.list_inference = true;
    Ok(Field {
        name: t.name().to_string(),
        field_type: element.field_type,
        mode: Mode::Repeated,
        fields: element.fields,
        description: None,
    })
}

/// The type of one value, ignoring its repetition (the caller sets the mode).
fn convert_value(t: &Type, path: &str, out: &mut ParquetSchema) -> Result<Field, ColumnError> {
    let name = path.rsplit('.').next().unwrap_or(path);
    let name = if t.name().is_empty() { name } else { t.name() };
    if t.is_group() {
        if is_map(t) {
            return Err(column_error(
                path,
                "MAP columns are not supported; write them as a list of key/value structs",
            ));
        }
        if is_list(t) {
            // Reached only for a LIST inside a bare repeated field.
            return Err(column_error(
                path,
                "nested lists (a list of lists) are not supported: BigQuery has no ARRAY<ARRAY<..>>",
            ));
        }
        let mut fields = Vec::with_capacity(t.get_fields().len());
        for child in t.get_fields() {
            let child_path = format!("{path}.{}", child.name());
            fields.push(convert(child, &child_path, out)?);
        }
        if fields.is_empty() {
            return Err(column_error(path, "struct has no fields"));
        }
        return Ok(Field {
            name: name.to_string(),
            field_type: "RECORD".into(),
            mode: Mode::Nullable,
            fields,
            description: None,
        });
    }
    let field_type = primitive_type(t, path, out)?;
    Ok(Field::new(name, field_type, Mode::Nullable))
}

fn decimal_type(
    precision: i32,
    scale: i32,
    path: &str,
    out: &mut ParquetSchema,
) -> Result<&'static str, ColumnError> {
    let integer_digits = precision - scale;
    let target = if scale <= 9 && integer_digits <= 29 {
        DecimalTarget::Numeric
    } else if scale <= 38 && integer_digits <= 38 {
        DecimalTarget::BigNumeric
    } else {
        return Err(column_error(
            path,
            format!(
                "DECIMAL({precision}, {scale}) fits neither NUMERIC (scale <= 9, precision - scale <= 29) \
                 nor BIGNUMERIC (scale <= 38, precision - scale <= 38)"
            ),
        ));
    };
    out.decimal_targets.insert(target);
    Ok(target.as_str())
}

fn primitive_type(
    t: &Type,
    path: &str,
    out: &mut ParquetSchema,
) -> Result<&'static str, ColumnError> {
    let info = t.get_basic_info();
    let physical = t.get_physical_type();
    if let Some(logical) = info.logical_type_ref() {
        return match logical {
            LogicalType::String => Ok("STRING"),
            LogicalType::Enum => {
                out.enum_as_string = true;
                Ok("STRING")
            }
            LogicalType::Json => Ok("JSON"),
            LogicalType::Bson | LogicalType::Uuid => Ok("BYTES"),
            LogicalType::Decimal(d) => decimal_type(d.precision, d.scale, path, out),
            LogicalType::Date => Ok("DATE"),
            LogicalType::Time(_) => Ok("TIME"),
            LogicalType::Timestamp(ts) if ts.is_adjusted_to_u_t_c => Ok("TIMESTAMP"),
            LogicalType::Timestamp(_) => Ok("DATETIME"),
            LogicalType::Integer(_) => Ok("INTEGER"),
            LogicalType::Float16 => Ok("FLOAT"),
            LogicalType::Geometry { .. } | LogicalType::Geography { .. } => Ok("GEOGRAPHY"),
            LogicalType::Unknown => Err(column_error(
                path,
                "has the UNKNOWN (always null) logical type, which BigQuery cannot load; \
                 give the column a real type when writing the file",
            )),
            other => Err(column_error(
                path,
                format!("unsupported Parquet logical type {other:?}"),
            )),
        };
    }
    match info.converted_type() {
        ConvertedType::UTF8 => return Ok("STRING"),
        ConvertedType::ENUM => {
            out.enum_as_string = true;
            return Ok("STRING");
        }
        ConvertedType::JSON => return Ok("JSON"),
        ConvertedType::BSON => return Ok("BYTES"),
        ConvertedType::DECIMAL => {
            return decimal_type(t.get_precision(), t.get_scale(), path, out);
        }
        ConvertedType::DATE => return Ok("DATE"),
        ConvertedType::TIME_MILLIS | ConvertedType::TIME_MICROS => return Ok("TIME"),
        // The legacy annotations predate isAdjustedToUTC and always meant UTC instants.
        ConvertedType::TIMESTAMP_MILLIS | ConvertedType::TIMESTAMP_MICROS => {
            return Ok("TIMESTAMP");
        }
        ConvertedType::INT_8
        | ConvertedType::INT_16
        | ConvertedType::INT_32
        | ConvertedType::INT_64
        | ConvertedType::UINT_8
        | ConvertedType::UINT_16
        | ConvertedType::UINT_32
        | ConvertedType::UINT_64 => return Ok("INTEGER"),
        ConvertedType::INTERVAL => {
            return Err(column_error(path, "INTERVAL columns are not supported"));
        }
        _ => {}
    }
    Ok(match physical {
        PhysicalType::BOOLEAN => "BOOLEAN",
        PhysicalType::INT32 | PhysicalType::INT64 => "INTEGER",
        // INT96 is the Impala/Hive/Spark legacy timestamp; BigQuery reads it as TIMESTAMP.
        PhysicalType::INT96 => "TIMESTAMP",
        PhysicalType::FLOAT | PhysicalType::DOUBLE => "FLOAT",
        PhysicalType::BYTE_ARRAY | PhysicalType::FIXED_LEN_BYTE_ARRAY => "BYTES",
    })
}

/// Column names BigQuery reserves (case-insensitive prefixes).
const RESERVED_PREFIXES: [&str; 6] = [
    "_TABLE_",
    "_FILE_",
    "_PARTITION",
    "_ROW_TIMESTAMP",
    "__ROOT__",
    "_COLIDENTIFIER",
];

/// BigQuery rejects these names; catching them here names the column and file up front.
pub(crate) fn validate_names(fields: &[Field], parent: &str) -> Result<(), ColumnError> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for field in fields {
        let path = if parent.is_empty() {
            field.name.clone()
        } else {
            format!("{parent}.{}", field.name)
        };
        if field.name.is_empty() {
            return Err(column_error(&path, "empty column name"));
        }
        if field.name.len() > 300 {
            return Err(column_error(
                &path,
                "column name longer than BigQuery's 300 characters",
            ));
        }
        let upper = field.name.to_ascii_uppercase();
        if parent.is_empty()
            && let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| upper.starts_with(**p))
        {
            return Err(column_error(
                &path,
                format!("BigQuery reserves column names starting with {prefix}"),
            ));
        }
        // BigQuery column names are case-insensitive: `Id` and `id` collide.
        if !seen.insert(field.name.to_lowercase()) {
            return Err(column_error(
                &path,
                "duplicate column name (BigQuery column names are case-insensitive)",
            ));
        }
        validate_names(&field.fields, &path)?;
    }
    Ok(())
}

/// Canonical legacy name for a type written in a schema file (`INT64` -> `INTEGER`, ...), or
/// `None` if BigQuery has no such type.
pub(crate) fn canonical_type(name: &str) -> Option<&'static str> {
    Some(match name.trim().to_ascii_uppercase().as_str() {
        "STRING" => "STRING",
        "BYTES" => "BYTES",
        "INTEGER" | "INT64" => "INTEGER",
        "FLOAT" | "FLOAT64" => "FLOAT",
        "BOOLEAN" | "BOOL" => "BOOLEAN",
        "TIMESTAMP" => "TIMESTAMP",
        "DATE" => "DATE",
        "TIME" => "TIME",
        "DATETIME" => "DATETIME",
        "NUMERIC" | "DECIMAL" => "NUMERIC",
        "BIGNUMERIC" | "BIGDECIMAL" => "BIGNUMERIC",
        "GEOGRAPHY" => "GEOGRAPHY",
        "JSON" => "JSON",
        "RECORD" | "STRUCT" => "RECORD",
        "INTERVAL" => "INTERVAL",
        "RANGE" => "RANGE",
        _ => return None,
    })
}

/// The shape of a field in a `bq` schema file: mode optional, any case.
#[derive(Deserialize)]
struct FileField {
    name: String,
    #[serde(rename = "type")]
    field_type: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    fields: Vec<FileField>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SchemaFile {
    Fields(Vec<FileField>),
    Wrapped { fields: Vec<FileField> },
}

/// Parses a schema file in the format `bq load --schema` and `bq show --schema` use: a JSON
/// array of `{name, type, mode?, fields?, description?}` (or an object with `fields`).
pub fn parse_schema_file(text: &str) -> Result<Vec<Field>, String> {
    let parsed: SchemaFile =
        serde_json::from_str(text).map_err(|e| format!("not a BigQuery JSON schema: {e}"))?;
    let raw = match parsed {
        SchemaFile::Fields(f) | SchemaFile::Wrapped { fields: f } => f,
    };
    fn convert(raw: Vec<FileField>, parent: &str) -> Result<Vec<Field>, String> {
        raw.into_iter()
            .map(|f| {
                let path = if parent.is_empty() {
                    f.name.clone()
                } else {
                    format!("{parent}.{}", f.name)
                };
                let field_type = canonical_type(&f.field_type).ok_or_else(|| {
                    format!("column `{path}`: unknown type {:?}", f.field_type)
                })?;
                let mode = match f.mode.as_deref().map(str::to_ascii_uppercase).as_deref() {
                    None | Some("NULLABLE") => Mode::Nullable,
                    Some("REQUIRED") => Mode::Required,
                    Some("REPEATED") => Mode::Repeated,
                    Some(other) => return Err(format!("column `{path}`: unknown mode {other:?}")),
                };
                if (field_type == "RECORD") == f.fields.is_empty() {
                    return Err(format!(
                        "column `{path}`: RECORD columns need `fields`, other types must not have them"
                    ));
                }
                Ok(Field {
                    name: f.name,
                    field_type: field_type.to_string(),
                    mode,
                    fields: convert(f.fields, &path)?,
                    description: f.description,
                })
            })
            .collect()
    }
    let fields = convert(raw, "")?;
    if fields.is_empty() {
        return Err("the schema has no columns".into());
    }
    validate_names(&fields, "").map_err(|e| e.to_string())?;
    Ok(fields)
}

/// How two files' schemas differ, at the first column where they do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Disagreement {
    pub(crate) column: String,
    pub(crate) detail: String,
}

/// [`merge`] for the lattice's joins (`widen.rs`): exact agreement of names, order, nesting.
pub(crate) fn merge_fields(
    merged: &mut [Field],
    other: &[Field],
    parent: &str,
) -> Result<(), Disagreement> {
    merge(merged, other, parent)
}

/// Merges the schema of another file of the same job into `merged`. Names, order and types must
/// match exactly (BigQuery matches Parquet columns by name, but an order change or a type change
/// between files of one dataset is drift worth stopping for). Modes may differ between REQUIRED
/// and NULLABLE: the merged column is NULLABLE, which loads both files without loss.
fn merge(merged: &mut [Field], other: &[Field], parent: &str) -> Result<(), Disagreement> {
    let path_of = |name: &str| {
        if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}.{name}")
        }
    };
    for (i, mine) in merged.iter_mut().enumerate() {
        let Some(theirs) = other.get(i) else {
            return Err(Disagreement {
                column: path_of(&mine.name),
                detail: "column is missing".into(),
            });
        };
        if mine.name != theirs.name {
            let detail = if other.iter().any(|f| f.name == mine.name) {
                format!(
                    "columns are in a different order (position {} holds `{}`)",
                    i + 1,
                    theirs.name
                )
            } else {
                format!(
                    "column is missing (position {} holds `{}`)",
                    i + 1,
                    theirs.name
                )
            };
            return Err(Disagreement {
                column: path_of(&mine.name),
                detail,
            });
        }
        let path = path_of(&mine.name);
        let mode_ok = match (mine.mode, theirs.mode) {
            (a, b) if a == b => true,
            (Mode::Repeated, _) | (_, Mode::Repeated) => false,
            _ => {
                mine.mode = Mode::Nullable;
                true
            }
        };
        if mine.field_type != theirs.field_type || !mode_ok {
            return Err(Disagreement {
                column: path,
                detail: format!(
                    "type {} differs from {}",
                    theirs.describe_type(),
                    mine.describe_type()
                ),
            });
        }
        merge(&mut mine.fields, &theirs.fields, &path)?;
    }
    if let Some(extra) = other.get(merged.len()) {
        return Err(Disagreement {
            column: path_of(&extra.name),
            detail: "extra column".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::schema::parser::parse_message_type;

    fn schema(message: &str) -> Result<ParquetSchema, ColumnError> {
        from_parquet(&parse_message_type(message).expect("valid message type"))
    }

    fn types(s: &ParquetSchema) -> Vec<String> {
        s.fields
            .iter()
            .map(|f| format!("{} {}", f.name, f.describe_type()))
            .collect()
    }

    #[test]
    fn primitive_types_and_modes() {
        let s = schema(
            "message m {
                required int64 id;
                optional binary name (STRING);
                optional binary raw;
                optional boolean ok;
                optional int32 small (INTEGER(16, true));
                optional int32 day (DATE);
                optional int64 t (TIME(MICROS, false));
                optional int64 at (TIMESTAMP(MICROS, true));
                optional int64 local (TIMESTAMP(MILLIS, false));
                optional int64 legacy (TIMESTAMP_MICROS);
                optional int96 impala;
                optional double score;
                optional float ratio;
                optional binary doc (JSON);
                optional fixed_len_byte_array(16) uid (UUID);
            }",
        )
        .unwrap();
        assert_eq!(
            types(&s),
            [
                "id REQUIRED INTEGER",
                "name STRING",
                "raw BYTES",
                "ok BOOLEAN",
                "small INTEGER",
                "day DATE",
                "t TIME",
                "at TIMESTAMP",
                "local DATETIME",
                "legacy TIMESTAMP",
                "impala TIMESTAMP",
                "score FLOAT",
                "ratio FLOAT",
                "doc JSON",
                "uid BYTES",
            ]
        );
        assert!(s.decimal_targets.is_empty());
        assert!(!s.list_inference);
    }

    #[test]
    fn decimals_pick_numeric_or_bignumeric() {
        let s = schema(
            "message m {
                optional int64 a (DECIMAL(18, 2));
                optional fixed_len_byte_array(16) b (DECIMAL(38, 9));
                optional fixed_len_byte_array(16) c (DECIMAL(38, 10));
                optional fixed_len_byte_array(16) d (DECIMAL(38, 0));
            }",
        )
        .unwrap();
        assert_eq!(
            types(&s),
            ["a NUMERIC", "b NUMERIC", "c BIGNUMERIC", "d BIGNUMERIC"]
        );
        assert_eq!(
            s.decimal_targets.iter().copied().collect::<Vec<_>>(),
            [DecimalTarget::Numeric, DecimalTarget::BigNumeric]
        );
    }

    #[test]
    fn decimal_too_wide_for_bignumeric_names_column() {
        // Precision 76 with scale 38 passes; scale 39 cannot be represented.
        let err = schema("message m { optional fixed_len_byte_array(32) x (DECIMAL(76, 39)); }")
            .unwrap_err();
        assert_eq!(err.column, "x");
        assert!(err.reason.contains("DECIMAL(76, 39)"), "{err}");
    }

    #[test]
    fn lists_in_every_encoding_become_repeated() {
        let s = schema(
            "message m {
                optional group tags (LIST) { repeated group list { optional binary element (STRING); } }
                required group nums (LIST) { repeated int32 element; }
                optional group legacy (LIST) { repeated group array { optional binary s (STRING); } }
                repeated int64 bare;
                optional group pts (LIST) {
                    repeated group list { optional group element { required double x; optional double y; } }
                }
            }",
        )
        .unwrap();
        assert_eq!(
            types(&s),
            [
                "tags REPEATED STRING",
                "nums REPEATED INTEGER",
                "legacy REPEATED RECORD<s STRING>",
                "bare REPEATED INTEGER",
                "pts REPEATED RECORD<x REQUIRED FLOAT, y FLOAT>",
            ]
        );
        assert!(s.list_inference);
    }

    #[test]
    fn structs_nest() {
        let s = schema(
            "message m { optional group addr { required binary city (UTF8); optional int32 zip; } }",
        )
        .unwrap();
        assert_eq!(
            types(&s),
            ["addr RECORD<city REQUIRED STRING, zip INTEGER>"]
        );
    }

    #[test]
    fn unsupported_shapes_name_the_column() {
        let nested = schema(
            "message m { optional group outer (LIST) { repeated group list {
                optional group element (LIST) { repeated group list { optional int32 element; } } } } }",
        )
        .unwrap_err();
        assert_eq!(nested.column, "outer");
        assert!(nested.reason.contains("nested lists"), "{nested}");

        let map = schema(
            "message m { optional group attrs (MAP) { repeated group key_value {
                required binary key (STRING); optional int32 value; } } }",
        )
        .unwrap_err();
        assert_eq!(map.column, "attrs");
        assert!(map.reason.contains("MAP"), "{map}");
    }

    #[test]
    fn enums_need_enum_as_string() {
        let s = schema("message m { optional binary color (ENUM); }").unwrap();
        assert_eq!(types(&s), ["color STRING"]);
        assert!(s.enum_as_string);
    }

    #[test]
    fn case_insensitive_duplicates_and_reserved_names_fail() {
        let dup = schema("message m { optional int32 Id; optional int32 id; }").unwrap_err();
        assert_eq!(dup.column, "id");
        assert!(dup.reason.contains("case-insensitive"), "{dup}");
        let reserved = schema("message m { optional int32 _PARTITIONTIME; }").unwrap_err();
        assert!(reserved.reason.contains("_PARTITION"), "{reserved}");
    }

    #[test]
    fn schema_file_accepts_bq_format_and_aliases() {
        let fields = parse_schema_file(
            r#"[{"name":"id","type":"int64","mode":"required"},
                {"name":"amount","type":"NUMERIC"},
                {"name":"item","type":"STRUCT","mode":"REPEATED","fields":[{"name":"sku","type":"STRING"}]}]"#,
        )
        .unwrap();
        let described: Vec<String> = fields
            .iter()
            .map(|f| format!("{} {}", f.name, f.describe_type()))
            .collect();
        assert_eq!(
            described,
            [
                "id REQUIRED INTEGER",
                "amount NUMERIC",
                "item REPEATED RECORD<sku STRING>"
            ]
        );
        let wrapped = parse_schema_file(r#"{"fields":[{"name":"a","type":"STRING"}]}"#).unwrap();
        assert_eq!(wrapped[0].field_type, "STRING");
        let err = parse_schema_file(r#"[{"name":"a","type":"VARCHAR"}]"#).unwrap_err();
        assert!(err.contains("`a`") && err.contains("VARCHAR"), "{err}");
        let err = parse_schema_file(r#"[{"name":"a","type":"RECORD"}]"#).unwrap_err();
        assert!(err.contains("RECORD columns need"), "{err}");
    }

    #[test]
    fn merge_relaxes_modes_and_reports_drift() {
        let a = schema("message m { required int64 id; optional binary s (STRING); }").unwrap();
        let b = schema("message m { optional int32 id; optional binary s (STRING); }").unwrap();
        let mut merged = a.fields.clone();
        merge(&mut merged, &b.fields, "").unwrap();
        assert_eq!(merged[0].mode, Mode::Nullable);
        assert_eq!(merged[0].field_type, "INTEGER");

        let c = schema("message m { required int64 id; optional double s; }").unwrap();
        let err = merge(&mut a.fields.clone(), &c.fields, "").unwrap_err();
        assert_eq!(err.column, "s");
        assert_eq!(err.detail, "type FLOAT differs from STRING");

        let d = schema("message m { optional binary s (STRING); required int64 id; }").unwrap();
        let err = merge(&mut a.fields.clone(), &d.fields, "").unwrap_err();
        assert_eq!(err.column, "id");
        assert!(err.detail.contains("different order"), "{}", err.detail);

        let e = schema(
            "message m { required int64 id; optional binary s (STRING); optional int32 x; }",
        )
        .unwrap();
        let err = merge(&mut a.fields.clone(), &e.fields, "").unwrap_err();
        assert_eq!(
            (err.column.as_str(), err.detail.as_str()),
            ("x", "extra column")
        );

        let nested_a = schema("message m { optional group g { optional int32 x; } }").unwrap();
        let nested_b =
            schema("message m { optional group g { optional binary x (STRING); } }").unwrap();
        let err = merge(&mut nested_a.fields.clone(), &nested_b.fields, "").unwrap_err();
        assert_eq!(err.column, "g.x");
    }
}
