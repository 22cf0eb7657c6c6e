//! Typed Arrow columns from CSV records, with every value that does not fit reported by row
//! and column instead of failing the whole batch.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::compute::kernels::cast_utils::{Parser, string_to_datetime};
use arrow::datatypes::{
    DataType, Date32Type, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit,
};

use super::lossless;
use super::records::{Flaw, Records};

/// The column types Sluice writes: the ones BigQuery maps one-to-one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    String,
    Int64,
    Float64,
    Bool,
    Date,
    /// Microseconds since the epoch, UTC (BigQuery `TIMESTAMP`). Values with an offset are
    /// converted to UTC; values without one are taken as UTC.
    Timestamp,
}

impl ColumnType {
    pub fn data_type(self) -> DataType {
        match self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// The BigQuery-style name used in messages and manifests.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::String => "STRING",
            ColumnType::Int64 => "INT64",
            ColumnType::Float64 => "FLOAT64",
            ColumnType::Bool => "BOOL",
            ColumnType::Date => "DATE",
            ColumnType::Timestamp => "TIMESTAMP",
        }
    }

    /// Parses a type name from a schema file (BigQuery, SQL and Arrow spellings).
    pub fn parse(name: &str) -> Option<ColumnType> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "string" | "str" | "text" | "utf8" | "varchar" => ColumnType::String,
            "int" | "int64" | "integer" | "bigint" | "long" => ColumnType::Int64,
            "float" | "float64" | "double" | "real" | "number" => ColumnType::Float64,
            "bool" | "boolean" => ColumnType::Bool,
            "date" | "date32" => ColumnType::Date,
            "timestamp" | "datetime" | "timestamptz" => ColumnType::Timestamp,
            _ => return None,
        })
    }

    /// A hint shown with a bad value.
    pub fn expected_form(self) -> &'static str {
        match self {
            ColumnType::String => "text",
            ColumnType::Int64 => "a whole number",
            ColumnType::Float64 => "a number",
            ColumnType::Bool => "true/false",
            ColumnType::Date => "YYYY-MM-DD",
            ColumnType::Timestamp => "an ISO-8601 timestamp",
        }
    }
}

/// One column of the output schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub column_type: ColumnType,
    /// Values convert only when nothing is lost ([`super::lossless`]): set for inferred types,
    /// so a value after the sample such as `0123` in an INT64 column is a bad row rather than
    /// `123`. Declared types (schema file, Socrata) parse leniently: the user chose them.
    pub lossless: bool,
}

pub(crate) fn arrow_schema(columns: &[Column]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.column_type.data_type(), true))
            .collect::<Vec<_>>(),
    ))
}

/// Which field values mean NULL. Exact byte comparison: a handful of short markers, checked
/// far faster than a regex per field.
#[derive(Debug, Clone)]
pub struct NullMarkers {
    values: Vec<Vec<u8>>,
}

impl NullMarkers {
    pub fn new(values: &[String]) -> Self {
        NullMarkers {
            values: values.iter().map(|v| v.as_bytes().to_vec()).collect(),
        }
    }

    #[inline]
    pub fn is_null(&self, field: &[u8]) -> bool {
        self.values.iter().any(|v| v.as_slice() == field)
    }

    pub fn values(&self) -> impl Iterator<Item = &[u8]> {
        self.values.iter().map(Vec::as_slice)
    }
}

/// Why a row cannot be written as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The record has a different number of fields than the header.
    FieldCount { row: usize, found: usize },
    /// A value does not parse as its column's type.
    BadValue { row: usize, col: usize },
    /// A value is not valid UTF-8.
    InvalidUtf8 { row: usize, col: usize },
    /// A value holds a NUL byte: binary or UTF-16 data, never text a table should get.
    NulByte { row: usize, col: usize },
    /// The record's quoting is broken ([`Records::flaw`]).
    Malformed { row: usize, flaw: Flaw },
}

impl Problem {
    pub fn row(&self) -> usize {
        match self {
            Problem::FieldCount { row, .. }
            | Problem::BadValue { row, .. }
            | Problem::InvalidUtf8 { row, .. }
            | Problem::NulByte { row, .. }
            | Problem::Malformed { row, .. } => *row,
        }
    }

    /// Whether the item must fail even with `--bad-rows quarantine`: a quote left open at the
    /// end of input that swallowed line breaks. The lines after it were most likely rows; one
    /// reject holding them all would hide them in a count of 1, so the item fails instead.
    pub fn fails_item(&self) -> bool {
        matches!(
            self,
            Problem::Malformed {
                flaw: Flaw::UnterminatedQuote {
                    swallowed_lines: true,
                    ..
                },
                ..
            }
        )
    }
}

/// Drops leading and trailing ASCII whitespace (space, tab, LF, FF, CR), byte-wise.
fn trim_ascii(s: &str) -> &str {
    s.trim_ascii()
}

fn parse_bool(s: &str) -> Option<bool> {
    // Case-insensitive without allocating a lowercased copy per value.
    let s = trim_ascii(s);
    let is = |words: &[&str]| words.iter().any(|w| s.eq_ignore_ascii_case(w));
    if is(&["true", "t", "yes", "y", "1"]) {
        Some(true)
    } else if is(&["false", "f", "no", "n", "0"]) {
        Some(false)
    } else {
        None
    }
}

fn parse_timestamp_micros(s: &str) -> Option<i64> {
    string_to_datetime(&chrono::Utc, trim_ascii(s))
        .ok()
        .map(|d| d.timestamp_micros())
}

/// Builds record batches for one schema.
pub struct BatchBuilder {
    columns: Vec<Column>,
    schema: SchemaRef,
    nulls: NullMarkers,
}

/// A batch plus the problems found while building it. Rows with problems are *not* in
/// `batch` (they were filtered out); `kept` maps batch rows back to record rows.
pub struct Built {
    pub batch: RecordBatch,
    pub problems: Vec<Problem>,
}

impl BatchBuilder {
    pub fn new(columns: Vec<Column>, nulls: NullMarkers) -> Self {
        let schema = arrow_schema(&columns);
        BatchBuilder {
            columns,
            schema,
            nulls,
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Builds the batch for `records`, skipping the first `skip` (a header).
    pub fn build(&self, records: &Records, skip: usize) -> Built {
        let rows = records.len().saturating_sub(skip);
        let width = self.columns.len();
        let mut problems = Vec::new();
        // Rows whose shape is wrong get nulls everywhere and are dropped below.
        let mut shape_ok = vec![true; rows];
        for (i, ok) in shape_ok.iter_mut().enumerate() {
            if let Some(flaw) = records.flaw(i + skip) {
                *ok = false;
                problems.push(Problem::Malformed { row: i, flaw });
                continue;
            }
            let found = records.fields(i + skip);
            if found != width {
                *ok = false;
                problems.push(Problem::FieldCount { row: i, found });
            }
        }
        // UTF-8 is checked once for the whole batch rather than field by field (which cost
        // about a fifth of the typing time): when all field bytes together are valid, a field
        // is valid exactly when it starts and ends on character boundaries.
        let text = std::str::from_utf8(records.data()).ok();
        // NULs are rare: look for them field by field only when the batch has one.
        let has_nul = memchr::memchr(0, records.data()).is_some();
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter()
            .enumerate()
            .map(|(col, column)| {
                self.build_column(
                    records,
                    text,
                    has_nul,
                    skip,
                    rows,
                    col,
                    column,
                    &shape_ok,
                    &mut problems,
                )
            })
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .expect("arrays are built to the schema");
        if problems.is_empty() {
            return Built { batch, problems };
        }
        problems.sort_by_key(|p| p.row());
        let mut keep = vec![true; rows];
        for p in &problems {
            keep[p.row()] = false;
        }
        let mask = arrow::array::BooleanArray::from(keep);
        let batch = arrow::compute::filter_record_batch(&batch, &mask)
            .expect("filtering a batch by a mask of its length");
        Built { batch, problems }
    }

    #[allow(clippy::too_many_arguments)]
    fn build_column(
        &self,
        records: &Records,
        text: Option<&str>,
        has_nul: bool,
        skip: usize,
        rows: usize,
        col: usize,
        column: &Column,
        shape_ok: &[bool],
        problems: &mut Vec<Problem>,
    ) -> ArrayRef {
        // The value of row `i` as text, or `None` for NULL (also for malformed rows, which are
        // dropped later). Invalid UTF-8 is reported and written as NULL.
        macro_rules! each_value {
            ($builder:ident, |$s:ident| $parse:expr) => {{
                for i in 0..rows {
                    if !shape_ok[i] {
                        $builder.append_null();
                        continue;
                    }
                    let range = records.field_range(i + skip, col);
                    let raw = &records.data()[range.clone()];
                    if self.nulls.is_null(raw) {
                        $builder.append_null();
                        continue;
                    }
                    // `get` is `None` off character boundaries (or for an empty field in the
                    // middle of a character): the field-by-field check decides then.
                    let checked = match text.and_then(|t| t.get(range)) {
                        Some(s) => Ok(s),
                        None => std::str::from_utf8(raw),
                    };
                    let Ok($s) = checked else {
                        problems.push(Problem::InvalidUtf8 { row: i, col });
                        $builder.append_null();
                        continue;
                    };
                    if has_nul && memchr::memchr(0, raw).is_some() {
                        problems.push(Problem::NulByte { row: i, col });
                        $builder.append_null();
                        continue;
                    }
                    match $parse {
                        Some(v) => $builder.append_value(v),
                        None => {
                            problems.push(Problem::BadValue { row: i, col });
                            $builder.append_null();
                        }
                    }
                }
                Arc::new($builder.finish()) as ArrayRef
            }};
        }
        let lossless = column.lossless;
        match column.column_type {
            ColumnType::String => {
                let mut b = StringBuilder::with_capacity(
                    rows,
                    records.data_bytes() / self.columns.len().max(1),
                );
                each_value!(b, |s| Some(s))
            }
            ColumnType::Int64 => {
                let mut b = Int64Builder::with_capacity(rows);
                if lossless {
                    each_value!(b, |s| lossless::int64(s))
                } else {
                    each_value!(b, |s| Int64Type::parse(trim_ascii(s)))
                }
            }
            ColumnType::Float64 => {
                let mut b = Float64Builder::with_capacity(rows);
                if lossless {
                    each_value!(b, |s| lossless::float64(s))
                } else {
                    each_value!(b, |s| Float64Type::parse(trim_ascii(s)))
                }
            }
            ColumnType::Bool => {
                let mut b = BooleanBuilder::with_capacity(rows);
                if lossless {
                    each_value!(b, |s| lossless::bool(s))
                } else {
                    each_value!(b, |s| parse_bool(s))
                }
            }
            ColumnType::Date => {
                let mut b = Date32Builder::with_capacity(rows);
                if lossless {
                    each_value!(b, |s| lossless::date(s))
                } else {
                    each_value!(b, |s| Date32Type::parse(trim_ascii(s)))
                }
            }
            ColumnType::Timestamp => {
                let mut b = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
                if lossless {
                    each_value!(b, |s| lossless::timestamp_micros(s))
                } else {
                    each_value!(b, |s| parse_timestamp_micros(s))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::records::{Dialect, RecordReader};
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::TimestampMicrosecondType;

    fn records(text: &str) -> Records {
        let mut reader = RecordReader::new(
            text.as_bytes(),
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

    fn col(name: &str, t: ColumnType) -> Column {
        Column {
            name: name.into(),
            column_type: t,
            lossless: false,
        }
    }

    #[test]
    fn builds_typed_columns_with_nulls() {
        let builder = BatchBuilder::new(
            vec![
                col("id", ColumnType::Int64),
                col("x", ColumnType::Float64),
                col("ok", ColumnType::Bool),
                col("d", ColumnType::Date),
                col("ts", ColumnType::Timestamp),
                col("s", ColumnType::String),
            ],
            NullMarkers::new(&["".into(), "NA".into()]),
        );
        let recs = records(
            "id,x,ok,d,ts,s\n1, 2.5 ,true,2024-02-29,2024-01-01T10:00:00+02:00,a\n\
             NA,,F,,2024-01-01 08:00:00.123456,NA\n",
        );
        let built = builder.build(&recs, 1);
        assert!(built.problems.is_empty(), "{:?}", built.problems);
        let b = &built.batch;
        assert_eq!(b.num_rows(), 2);
        let id = b.column(0).as_primitive::<Int64Type>();
        assert_eq!((id.value(0), id.is_null(1)), (1, true));
        assert_eq!(b.column(1).as_primitive::<Float64Type>().value(0), 2.5);
        let ok = b.column(2).as_boolean();
        assert!(ok.value(0) && !ok.value(1));
        assert_eq!(b.column(3).null_count(), 1);
        let ts = b.column(4).as_primitive::<TimestampMicrosecondType>();
        // 10:00 at +02:00 is 08:00 UTC: both rows are 2024-01-01T08:00 UTC.
        assert_eq!(ts.value(0), 1_704_096_000_000_000);
        assert_eq!(ts.value(1), 1_704_096_000_123_456);
        assert_eq!(b.column(5).null_count(), 1);
        assert_eq!(
            b.schema().field(4).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
    }

    #[test]
    fn reports_bad_values_and_shapes_and_drops_those_rows() {
        let builder = BatchBuilder::new(
            vec![
                col("id", ColumnType::Int64),
                col("name", ColumnType::String),
            ],
            NullMarkers::new(&["".into()]),
        );
        let recs = records("1,a\nx,b\n3\n4,d\n5,e,extra\n");
        let built = builder.build(&recs, 0);
        assert_eq!(
            built.problems,
            [
                Problem::BadValue { row: 1, col: 0 },
                Problem::FieldCount { row: 2, found: 1 },
                Problem::FieldCount { row: 4, found: 3 },
            ]
        );
        let ids = built.batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values().to_vec(), [1, 4]);
    }

    #[test]
    fn utf8_is_checked_per_field_even_when_the_batch_is_valid_as_a_whole() {
        let builder = BatchBuilder::new(
            vec![
                col("a", ColumnType::String),
                col("b", ColumnType::String),
                col("c", ColumnType::String),
            ],
            NullMarkers::new(&["NA".into()]),
        );
        // Row 2 splits "é" (C3 A9) over two fields with an empty one between: the bytes of
        // the batch, back to back, are valid UTF-8, the first and last fields are not.
        let mut text = "a,b,c\nné,ü€,😀\n".as_bytes().to_vec();
        text.extend_from_slice(b"\xc3,,\xa9\nx,,y\n");
        let mut reader = RecordReader::new(
            &text[..],
            Dialect {
                delimiter: b',',
                quote: b'"',
                escape: None,
            },
        );
        let mut recs = Records::default();
        reader.read_batch(&mut recs, 100).unwrap();
        assert!(std::str::from_utf8(recs.data()).is_ok());
        let built = builder.build(&recs, 1);
        assert_eq!(
            built.problems,
            [
                Problem::InvalidUtf8 { row: 1, col: 0 },
                Problem::InvalidUtf8 { row: 1, col: 2 },
            ]
        );
        let b = &built.batch;
        assert_eq!(b.num_rows(), 2);
        let strings = |c: usize| {
            let a = b.column(c).as_string::<i32>();
            (0..a.len())
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(strings(0), ["né", "x"]);
        assert_eq!(strings(1), ["ü€", ""]);
        assert_eq!(strings(2), ["😀", "y"]);

        // A batch that is not valid as a whole still types its valid fields.
        let mut reader = RecordReader::new(
            &b"a,b,c\nok,\xff,fine\n"[..],
            Dialect {
                delimiter: b',',
                quote: b'"',
                escape: None,
            },
        );
        reader.read_batch(&mut recs, 100).unwrap();
        let built = builder.build(&recs, 1);
        assert_eq!(built.problems, [Problem::InvalidUtf8 { row: 0, col: 1 }]);
        assert_eq!(built.batch.num_rows(), 0);
    }

    #[test]
    fn inferred_columns_refuse_values_that_would_lose_something() {
        let lossless = |name: &str, t| Column {
            lossless: true,
            ..col(name, t)
        };
        let builder = BatchBuilder::new(
            vec![
                lossless("i", ColumnType::Int64),
                lossless("f", ColumnType::Float64),
                lossless("b", ColumnType::Bool),
                lossless("d", ColumnType::Date),
                lossless("t", ColumnType::Timestamp),
            ],
            NullMarkers::new(&["".into()]),
        );
        let recs = records(
            "i,f,b,d,t\n\
             7,0.5,TRUE,2024-01-01,2024-01-01T10:00:00Z\n\
             0123,1.5,true,2024-01-01,2024-01-01T10:00:00Z\n\
             1, 1.5 ,true,2024-01-01,2024-01-01T10:00:00Z\n\
             1,0.30000000000000001,true,2024-01-01,2024-01-01T10:00:00Z\n\
             1,1.5,1,2024-01-01,2024-01-01T10:00:00Z\n\
             1,1.5,true,2024-1-1,2024-01-01T10:00:00Z\n\
             1,1.5,true,2024-01-01,2024-01-01T10:00:00+02:00\n\
             ,,,,\n",
        );
        let built = builder.build(&recs, 1);
        let bad: Vec<(usize, usize)> = built
            .problems
            .iter()
            .map(|p| match p {
                Problem::BadValue { row, col } => (*row, *col),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(bad, [(1, 0), (2, 1), (3, 1), (4, 2), (5, 3), (6, 4)]);
        assert_eq!(built.batch.num_rows(), 2);
        assert_eq!(
            built.batch.column(0).as_primitive::<Int64Type>().value(0),
            7
        );
        // The same values with a declared (lenient) INT64: `0123` is the number 123.
        let lenient = BatchBuilder::new(vec![col("i", ColumnType::Int64)], NullMarkers::new(&[]));
        let built = lenient.build(
            &records(
                "i
0123
 +5 
",
            ),
            1,
        );
        assert!(built.problems.is_empty());
        let ids = built.batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values().to_vec(), [123, 5]);
    }

    #[test]
    fn nul_bytes_and_broken_quoting_are_problems_of_their_row() {
        let builder = BatchBuilder::new(
            vec![col("a", ColumnType::String), col("b", ColumnType::Int64)],
            NullMarkers::new(&[]),
        );
        let recs = records("a\0x,1\nok,2\n\"q\"z,3\nlast,\"4\n5\n");
        let built = builder.build(&recs, 0);
        assert_eq!(
            built.problems,
            [
                Problem::NulByte { row: 0, col: 0 },
                Problem::Malformed {
                    row: 2,
                    flaw: Flaw::TextAfterQuote { field: 0 }
                },
                Problem::Malformed {
                    row: 3,
                    flaw: Flaw::UnterminatedQuote {
                        field: 1,
                        last_line: 5,
                        swallowed_lines: true
                    }
                },
            ]
        );
        assert!(!built.problems[0].fails_item() && !built.problems[1].fails_item());
        assert!(built.problems[2].fails_item());
        assert_eq!(built.batch.num_rows(), 1);
        assert_eq!(built.batch.column(0).as_string::<i32>().value(0), "ok");
    }

    #[test]
    fn booleans_and_trimming() {
        for (text, want) in [
            ("TRUE", Some(true)),
            (" Yes\t", Some(true)),
            ("\r\n1", Some(true)),
            ("f", Some(false)),
            ("No", Some(false)),
            ("0 ", Some(false)),
            ("tru", None),
            ("yess", None),
            ("", None),
            ("\u{a0}true", None),
        ] {
            assert_eq!(parse_bool(text), want, "{text:?}");
        }
        assert_eq!(trim_ascii(" \t\x0c x y\r\n"), "x y");
        assert_eq!(trim_ascii("\u{a0}x\u{2003}"), "\u{a0}x\u{2003}");
    }

    #[test]
    fn parses_type_names() {
        assert_eq!(ColumnType::parse("INTEGER"), Some(ColumnType::Int64));
        assert_eq!(ColumnType::parse("Timestamp"), Some(ColumnType::Timestamp));
        assert_eq!(ColumnType::parse("decimal"), None);
    }
}
