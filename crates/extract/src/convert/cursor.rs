//! `--cursor COL` (with `--since auto`): of a CSV file, write only the rows whose column COL
//! is after the stored mark minus `--lag` (`docs/state.md`, "Files with a cursor column").
//!
//! The mark is stored as text; it is parsed into the column's inferred (or declared) type, so
//! `9 < 10` and `2026-01-02 > 2025-12-31T23:00:00` compare as values, and every typed Arrow
//! batch is filtered with the comparison kernels (`COL > lower`). Rows whose COL is null cannot
//! be placed in a window: a full pull (no mark) keeps them, an incremental pull drops them and
//! says how many. The largest COL value seen (over all rows read, not just those written) is
//! the item's `cursor.to`, which `load` stores as the new mark once the rows are loaded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Float64Array, Int64Array, RecordBatch, Scalar,
    StringArray, TimestampMicrosecondArray,
};
use arrow::compute::kernels::cast_utils::string_to_datetime;
use arrow::compute::kernels::cmp::gt;
use arrow::compute::{filter_record_batch, max, max_string};
use arrow::datatypes::{Date32Type, Float64Type, Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, NaiveDate};
use sluice_manifest::{CursorRecord, compare_marks};

use super::columns::{Column, ColumnType};
use super::lossless;
use crate::error::{ExtractError, Result};

const MICROS_PER_DAY: u128 = 86_400_000_000;

/// What the plan knows about an item's cursor: the column, the stored mark and where it came
/// from (for messages).
#[derive(Debug, Clone, PartialEq)]
pub struct CursorSpec {
    pub column: String,
    /// The stored mark (`None`: no entry yet, a full pull).
    pub mark: Option<String>,
    pub lag: Duration,
    /// The state file the mark was read from (`gs://b/raw/_state/city.json`).
    pub state_url: String,
    /// The source's key in it (`city/zones`).
    pub state_key: String,
}

/// A cursor value of one of the types a cursor column can have.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(i64),
    Float(f64),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since the epoch, UTC.
    Timestamp(i64),
    Text(String),
}

impl Value {
    /// The text stored in manifests and the state file. Timestamps always carry six fraction
    /// digits and `Z`, so marks of one column compare as text too (`compare_marks`).
    fn render(&self) -> String {
        match self {
            Value::Int(v) => v.to_string(),
            Value::Float(v) => v.to_string(),
            Value::Date(days) => date_of(*days).map_or_else(|| days.to_string(), |d| d.to_string()),
            Value::Timestamp(micros) => DateTime::from_timestamp_micros(*micros).map_or_else(
                || micros.to_string(),
                |t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            ),
            Value::Text(s) => s.clone(),
        }
    }

    /// A one-element array of the column's Arrow type, for the comparison kernel.
    fn scalar(&self) -> Scalar<ArrayRef> {
        let array: ArrayRef = match self {
            Value::Int(v) => Arc::new(Int64Array::from(vec![*v])),
            Value::Float(v) => Arc::new(Float64Array::from(vec![*v])),
            Value::Date(v) => Arc::new(Date32Array::from(vec![*v])),
            Value::Timestamp(v) => {
                Arc::new(TimestampMicrosecondArray::from(vec![*v]).with_timezone("UTC"))
            }
            Value::Text(v) => Arc::new(StringArray::from(vec![v.as_str()])),
        };
        Scalar::new(array)
    }

    fn is_greater(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a > b,
            (Value::Float(a), Value::Float(b)) => a > b,
            (Value::Date(a), Value::Date(b)) => a > b,
            (Value::Timestamp(a), Value::Timestamp(b)) => a > b,
            (Value::Text(a), Value::Text(b)) => a > b,
            // One column has one type; a mixed pair cannot happen within one conversion.
            _ => false,
        }
    }
}

fn date_of(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_signed(chrono::Duration::days(days.into()))
}

/// Reads a stored mark as a value of `ty`; `None` if it is not one. Lenient on form (the mark
/// may have been written by hand, or by a source's own rendering): surrounding space, `T` or a
/// space between date and time, any offset (converted to UTC).
fn parse_mark(text: &str, ty: ColumnType) -> Option<Value> {
    let t = text.trim();
    match ty {
        ColumnType::Int64 => t.parse().ok().map(Value::Int),
        ColumnType::Float64 => t
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Value::Float),
        ColumnType::Date => lossless::date(t).map(Value::Date),
        ColumnType::Timestamp => string_to_datetime(&chrono::Utc, t)
            .ok()
            .map(|d| Value::Timestamp(d.timestamp_micros())),
        ColumnType::String => Some(Value::Text(text.to_string())),
        ColumnType::Bool => None,
    }
}

/// The filter of one conversion (one CSV member): built once its schema is known.
#[derive(Debug)]
pub(crate) struct CursorFilter {
    index: usize,
    column_type: ColumnType,
    /// Rows must be after this (`mark - lag`); `None`: a full pull, every row is kept.
    lower: Option<(Value, Scalar<ArrayRef>)>,
    /// Largest COL value read.
    max: Option<Value>,
    /// Rows read (after bad rows were set aside) and rows dropped by the cursor.
    read: u64,
    dropped: u64,
    /// Of the dropped rows, those whose COL was null.
    null_dropped: u64,
}

/// What one conversion's filter did, for the object record and the item's cursor record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CursorOutcome {
    /// The lower bound used (`mark - lag` rendered in the column's type); `None`: full pull.
    pub from: Option<String>,
    /// The largest COL value read; `None` when every value was null (or there were no rows).
    pub max: Option<String>,
    pub read: u64,
    /// Rows not written because their COL was not after `from` (or null).
    pub filtered: u64,
}

impl CursorFilter {
    /// The filter for a CSV whose columns are `columns`. Errors (exit 2) name the source, the
    /// column, and for a bad mark the state file and the value.
    pub(crate) fn new(spec: &CursorSpec, columns: &[Column], src: &str) -> Result<CursorFilter> {
        let col = &spec.column;
        let Some(index) = columns.iter().position(|c| c.name == *col) else {
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            return Err(ExtractError::Config(format!(
                "{src}: --cursor {col}: no such column (the file's columns: {})",
                names.join(", ")
            )));
        };
        let column_type = columns[index].column_type;
        if column_type == ColumnType::Bool {
            return Err(ExtractError::Config(format!(
                "{src}: --cursor {col}: the column is BOOL; a cursor column must be an \
                 integer, number, date, timestamp or text"
            )));
        }
        let timeline = matches!(column_type, ColumnType::Date | ColumnType::Timestamp);
        if !spec.lag.is_zero() && !timeline {
            return Err(ExtractError::Config(format!(
                "--lag {}: applies to date and timestamp cursors, and --cursor {col} of {src} \
                 is {} (use --lag 0s)",
                humantime_secs(spec.lag),
                column_type.name()
            )));
        }
        let lower = match &spec.mark {
            None => None,
            Some(mark) => {
                let value = parse_mark(mark, column_type).ok_or_else(|| {
                    ExtractError::Config(format!(
                        "state {}: source {}: the stored mark {mark:?} of --cursor {col} is not \
                         a {} value, the column's type in {src} (fix or delete the entry; \
                         docs/state.md)",
                        spec.state_url,
                        spec.state_key,
                        column_type.name()
                    ))
                })?;
                let lowered = minus_lag(value, spec.lag).ok_or_else(|| {
                    ExtractError::Config(format!(
                        "--lag {}: reaches outside the {} range from the stored mark {mark:?}",
                        humantime_secs(spec.lag),
                        column_type.name()
                    ))
                })?;
                let scalar = lowered.scalar();
                Some((lowered, scalar))
            }
        };
        Ok(CursorFilter {
            index,
            column_type,
            lower,
            max: None,
            read: 0,
            dropped: 0,
            null_dropped: 0,
        })
    }

    /// The rows of `batch` after the lower bound (all of them on a full pull); tracks the
    /// largest COL value over every row of it.
    pub(crate) fn apply(&mut self, batch: RecordBatch, src: &str) -> Result<RecordBatch> {
        let rows = batch.num_rows() as u64;
        self.read += rows;
        let column = batch.column(self.index).clone();
        if let Some(batch_max) = column_max(&column, self.column_type)
            && self.max.as_ref().is_none_or(|m| batch_max.is_greater(m))
        {
            self.max = Some(batch_max);
        }
        let Some((_, scalar)) = &self.lower else {
            return Ok(batch);
        };
        let arrow_error = |e: arrow::error::ArrowError| ExtractError::Encode {
            source_name: src.to_string(),
            detail: format!("--cursor filter: {e}"),
        };
        // Null COL gives a null in the mask, and `filter` drops null as false.
        let mask = gt(&column, scalar).map_err(arrow_error)?;
        let kept = filter_record_batch(&batch, &mask).map_err(arrow_error)?;
        self.dropped += rows - kept.num_rows() as u64;
        self.null_dropped += column.null_count() as u64;
        Ok(kept)
    }

    /// What the filter did; warns when rows were dropped for a null COL.
    pub(crate) fn finish(self, spec: &CursorSpec, src: &str) -> CursorOutcome {
        if self.null_dropped > 0 {
            tracing::warn!(
                source = %src,
                column = %spec.column,
                rows = self.null_dropped,
                "{src}: {} rows with no value in --cursor {} were left out (they cannot be \
                 placed after the mark; a full pull includes them)",
                self.null_dropped,
                spec.column
            );
        }
        CursorOutcome {
            from: self.lower.as_ref().map(|(v, _)| v.render()),
            max: self.max.as_ref().map(Value::render),
            read: self.read,
            filtered: self.dropped,
        }
    }
}

/// `mark - lag` in the mark's type: timestamps by the exact duration; dates by whole days,
/// rounded up (`--lag 1d` on a date mark re-reads the mark's day, `2h` does too). Other types
/// have no lag (refused before this is called with a non-zero one).
fn minus_lag(value: Value, lag: Duration) -> Option<Value> {
    if lag.is_zero() {
        return Some(value);
    }
    match value {
        Value::Timestamp(t) => {
            let micros = i64::try_from(lag.as_micros()).ok()?;
            t.checked_sub(micros).map(Value::Timestamp)
        }
        Value::Date(d) => {
            let days = i32::try_from(lag.as_micros().div_ceil(MICROS_PER_DAY)).ok()?;
            d.checked_sub(days).map(Value::Date)
        }
        other => Some(other),
    }
}

fn column_max(column: &ArrayRef, ty: ColumnType) -> Option<Value> {
    match ty {
        ColumnType::Int64 => max::<Int64Type>(column.as_primitive()).map(Value::Int),
        ColumnType::Float64 => max::<Float64Type>(column.as_primitive()).map(Value::Float),
        ColumnType::Date => max::<Date32Type>(column.as_primitive()).map(Value::Date),
        ColumnType::Timestamp => {
            max::<TimestampMicrosecondType>(column.as_primitive()).map(Value::Timestamp)
        }
        ColumnType::String => max_string(column.as_string::<i32>()).map(|s| Value::Text(s.into())),
        ColumnType::Bool => None,
    }
}

/// `90s`, `2h`: a lag as the user would have typed it.
fn humantime_secs(lag: Duration) -> String {
    let secs = lag.as_secs();
    match secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The cursor of one item across its members (a zip may hold several CSVs): the lowest lower
/// bound and the highest value seen. Filled by the conversions, read when the item commits.
#[derive(Debug)]
pub(crate) struct CursorTracker {
    pub spec: Arc<CursorSpec>,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    from: Option<String>,
    max: Option<String>,
    read: u64,
    filtered: u64,
}

impl CursorTracker {
    pub(crate) fn new(spec: Arc<CursorSpec>) -> CursorTracker {
        CursorTracker {
            spec,
            seen: Mutex::new(Seen::default()),
        }
    }

    pub(crate) fn add(&self, outcome: &CursorOutcome) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let lower = |a: &String, b: &String| compare_marks(a, b).is_le();
        seen.from = match (seen.from.take(), &outcome.from) {
            (Some(a), Some(b)) => Some(if lower(&a, b) { a } else { b.clone() }),
            (a, b) => a.or(b.clone()),
        };
        seen.max = match (seen.max.take(), &outcome.max) {
            (Some(a), Some(b)) => Some(if lower(b, &a) { a } else { b.clone() }),
            (a, b) => a.or(b.clone()),
        };
        seen.read += outcome.read;
        seen.filtered += outcome.filtered;
    }

    /// The item's cursor record: `from` the lower bound (`None`: full pull), `to` the largest
    /// value read, never below the stored mark (a file that shrank does not move it back; `load`
    /// takes the max anyway).
    pub(crate) fn record(&self, state_key: &str) -> CursorRecord {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let to = match (&seen.max, &self.spec.mark) {
            (Some(max), Some(mark)) if compare_marks(max, mark).is_lt() => Some(mark.clone()),
            (Some(max), _) => Some(max.clone()),
            (None, mark) => mark.clone(),
        };
        CursorRecord {
            state_key: state_key.to_string(),
            column: Some(self.spec.column.clone()),
            from: if self.spec.mark.is_some() {
                seen.from.clone()
            } else {
                None
            },
            to,
            read_rows: Some(seen.read),
            filtered_rows: Some(seen.filtered),
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn spec(column: &str, mark: Option<&str>, lag_secs: u64) -> CursorSpec {
        CursorSpec {
            column: column.into(),
            mark: mark.map(str::to_string),
            lag: Duration::from_secs(lag_secs),
            state_url: "gs://b/raw/_state/d.json".into(),
            state_key: "d/s".into(),
        }
    }

    fn columns(ty: ColumnType) -> Vec<Column> {
        vec![
            Column {
                name: "id".into(),
                column_type: ColumnType::Int64,
                lossless: true,
            },
            Column {
                name: "c".into(),
                column_type: ty,
                lossless: true,
            },
        ]
    }

    fn batch(ty: ColumnType, values: ArrayRef) -> RecordBatch {
        let n = values.len();
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("c", ty.data_type(), true),
        ]);
        let ids: ArrayRef = Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>()));
        RecordBatch::try_new(Arc::new(schema), vec![ids, values]).unwrap()
    }

    use arrow::datatypes::DataType;

    fn ids(b: &RecordBatch) -> Vec<i64> {
        b.column(0).as_primitive::<Int64Type>().values().to_vec()
    }

    fn run(ty: ColumnType, spec: &CursorSpec, values: ArrayRef) -> (Vec<i64>, CursorOutcome) {
        let mut f = CursorFilter::new(spec, &columns(ty), "s.csv").unwrap();
        let kept = f.apply(batch(ty, values), "s.csv").unwrap();
        (ids(&kept), f.finish(spec, "s.csv"))
    }

    #[test]
    fn integers_compare_as_numbers_not_text() {
        let values: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(8),
            Some(9),
            Some(10),
            None,
            Some(100),
        ]));
        let (kept, out) = run(ColumnType::Int64, &spec("c", Some("9"), 0), values.clone());
        assert_eq!(kept, vec![2, 4]);
        assert_eq!(out.from.as_deref(), Some("9"));
        assert_eq!(out.max.as_deref(), Some("100"));
        assert_eq!((out.read, out.filtered), (5, 3));
        // A full pull keeps everything, nulls included.
        let (kept, out) = run(ColumnType::Int64, &spec("c", None, 0), values);
        assert_eq!(kept, vec![0, 1, 2, 3, 4]);
        assert_eq!((out.from, out.filtered), (None, 0));
    }

    #[test]
    fn floats_dates_timestamps_and_text() {
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![1.5, 2.25, 10.0]));
        let (kept, out) = run(ColumnType::Float64, &spec("c", Some("2"), 0), floats);
        assert_eq!((kept, out.max.as_deref()), (vec![1, 2], Some("10")));

        let day = |s: &str| lossless::date(s).unwrap();
        let dates: ArrayRef = Arc::new(Date32Array::from(vec![
            day("2026-11-29"),
            day("2026-11-30"),
            day("2026-12-01"),
        ]));
        let (kept, out) = run(
            ColumnType::Date,
            &spec("c", Some("2026-11-30"), 0),
            dates.clone(),
        );
        assert_eq!((kept, out.max.as_deref()), (vec![2], Some("2026-12-01")));
        // A lag of part of a day takes a whole day off a date mark.
        let (kept, out) = run(
            ColumnType::Date,
            &spec("c", Some("2026-11-30"), 7200),
            dates,
        );
        assert_eq!(
            (kept, out.from.as_deref()),
            (vec![1, 2], Some("2026-11-29"))
        );

        let ts = |s: &str| lossless::timestamp_micros(s).unwrap();
        let times: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![
                ts("2026-11-30T10:00:00"),
                ts("2026-11-30T11:30:00"),
                ts("2026-11-30T12:00:00.000001"),
            ])
            .with_timezone("UTC"),
        );
        let (kept, out) = run(
            ColumnType::Timestamp,
            &spec("c", Some("2026-11-30 12:00:00"), 0),
            times.clone(),
        );
        assert_eq!(kept, vec![2]);
        assert_eq!(out.max.as_deref(), Some("2026-11-30T12:00:00.000001Z"));
        // With an offset, converted to UTC; a one hour lag re-reads 11:30.
        let (kept, out) = run(
            ColumnType::Timestamp,
            &spec("c", Some("2026-11-30T13:00:00+01:00"), 3600),
            times,
        );
        assert_eq!(kept, vec![1, 2]);
        assert_eq!(out.from.as_deref(), Some("2026-11-30T11:00:00.000000Z"));

        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a9"),
            None,
            Some("b1"),
            Some("a10"),
        ]));
        let (kept, out) = run(ColumnType::String, &spec("c", Some("a9"), 0), text);
        assert_eq!((kept, out.max.as_deref()), (vec![2], Some("b1")));
        assert_eq!(out.filtered, 3);
    }

    #[test]
    fn bad_mark_missing_column_and_lag_on_numbers_are_errors() {
        let err = CursorFilter::new(
            &spec("c", Some("yesterday"), 0),
            &columns(ColumnType::Date),
            "s.csv",
        )
        .unwrap_err()
        .to_string();
        for part in [
            "gs://b/raw/_state/d.json",
            "d/s",
            "--cursor c",
            "\"yesterday\"",
            "DATE",
            "s.csv",
        ] {
            assert!(err.contains(part), "{part} not in {err}");
        }
        let err = CursorFilter::new(&spec("nope", None, 0), &columns(ColumnType::Int64), "s.csv")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s.csv") && err.contains("--cursor nope") && err.contains("id, c"),
            "{err}"
        );
        let err = CursorFilter::new(
            &spec("c", Some("5"), 3600),
            &columns(ColumnType::Int64),
            "s.csv",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--lag 1h") && err.contains("INT64"), "{err}");
        assert!(
            CursorFilter::new(&spec("c", None, 0), &columns(ColumnType::Bool), "s.csv").is_err()
        );
    }

    #[test]
    fn the_record_spans_members_and_never_goes_below_the_mark() {
        let t = CursorTracker::new(Arc::new(spec("c", Some("50"), 0)));
        t.add(&CursorOutcome {
            from: Some("50".into()),
            max: Some("9".into()),
            read: 1,
            filtered: 1,
        });
        // A file whose values all lie below the mark: `to` stays at the mark.
        assert_eq!(t.record("d/s").to.as_deref(), Some("50"));
        t.add(&CursorOutcome {
            from: Some("50".into()),
            max: Some("120".into()),
            read: 2,
            filtered: 0,
        });
        let r = t.record("d/s");
        assert_eq!(
            (r.from.as_deref(), r.to.as_deref(), r.column.as_deref()),
            (Some("50"), Some("120"), Some("c"))
        );
        let full = CursorTracker::new(Arc::new(spec("c", None, 0)));
        full.add(&CursorOutcome {
            from: None,
            max: None,
            read: 0,
            filtered: 0,
        });
        assert_eq!(
            (full.record("d/s").from, full.record("d/s").to),
            (None, None)
        );
    }
}
