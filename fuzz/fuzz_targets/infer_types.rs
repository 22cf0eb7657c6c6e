//! Type inference (`convert::schema::infer`) and the typed columns built with its result
//! (`convert::columns`). For any CSV bytes, read without a header:
//! - typing the sampled records never finds a value that does not fit its inferred type (only
//!   record problems: broken quoting, field counts, invalid UTF-8, NUL bytes);
//! - every value written re-renders to exactly its text: STRING as is, INT64 with the same
//!   digits, FLOAT64 the same decimal number, BOOL the same word, DATE and TIMESTAMP the same
//!   date, time and fraction in the text's own shape. NULL markers come out NULL.
#![no_main]

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    Date32Type, Float64Type, Int64Type, TimestampMicrosecondType,
};
use chrono::{DateTime, NaiveDate};
use libfuzzer_sys::fuzz_target;
use sluice_extract::internals::{
    BatchBuilder, ColumnType, Dialect, NullMarkers, Problem, RecordReader, Records, infer,
};

/// A decimal's sign, significant digits and power of ten, written independently of the
/// converter's own parser. `None` for text that is not a plain decimal.
fn decimal(s: &str) -> Option<(bool, String, i64)> {
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i64>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if !(int.chars().chain(frac.chars())).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let all = format!("{int}{frac}");
    let trimmed_end = all.trim_end_matches('0');
    let exp = exp - frac.len() as i64 + (all.len() - trimmed_end.len()) as i64;
    let digits = trimmed_end.trim_start_matches('0').to_string();
    Some(if digits.is_empty() {
        (negative, digits, 0)
    } else {
        (negative, digits, exp)
    })
}

/// A timestamp rendered back in the shape of `text` (separator, fraction length, suffix).
fn render_timestamp(micros: i64, text: &str) -> String {
    let at = DateTime::from_timestamp_micros(micros).expect("in range").naive_utc();
    let sep = &text[10..11];
    let mut out = format!("{}{sep}{}", at.format("%Y-%m-%d"), at.format("%H:%M:%S"));
    let rest = &text[19..];
    let (fraction, suffix) = match rest.strip_prefix('.') {
        Some(f) => {
            let n = f.bytes().take_while(u8::is_ascii_digit).count();
            (Some(n), &f[n..])
        }
        None => (None, rest),
    };
    if let Some(n) = fraction {
        let sub = format!("{:06}", at.and_utc().timestamp_subsec_micros());
        let digits: String = sub.chars().chain(std::iter::repeat('0')).take(n).collect();
        out.push('.');
        out.push_str(&digits);
    }
    out.push_str(suffix);
    out
}

fuzz_target!(|data: &[u8]| {
    let dialect = Dialect {
        delimiter: b',',
        quote: b'"',
        escape: None,
    };
    let mut reader = RecordReader::new(data, dialect);
    let mut records = Records::default();
    reader.read_batch(&mut records, 1 << 16).expect("in-memory input");
    if records.is_empty() {
        return;
    }
    let nulls = NullMarkers::new(&["".into(), "NA".into()]);
    let columns = infer(&records, false, &nulls, "fuzz").expect("no header, no header error");
    let builder = BatchBuilder::new(columns.clone(), nulls.clone());
    let built = builder.build(&records, 0);
    let mut bad = vec![false; records.len()];
    for p in &built.problems {
        assert!(!matches!(p, Problem::BadValue { .. }), "{p:?} {columns:?}");
        bad[p.row()] = true;
    }
    let kept: Vec<usize> = (0..records.len()).filter(|&r| !bad[r]).collect();
    assert_eq!(built.batch.num_rows(), kept.len());
    for (col, column) in columns.iter().enumerate() {
        let array = built.batch.column(col);
        for (i, &row) in kept.iter().enumerate() {
            let raw = records.field(row, col);
            if nulls.is_null(raw) {
                assert!(array.is_null(i));
                continue;
            }
            let text = std::str::from_utf8(raw).expect("kept rows are UTF-8");
            assert!(array.is_valid(i), "{text:?} as {column:?}");
            match column.column_type {
                ColumnType::String => assert_eq!(array.as_string::<i32>().value(i), text),
                ColumnType::Int64 => {
                    assert_eq!(array.as_primitive::<Int64Type>().value(i).to_string(), text)
                }
                ColumnType::Float64 => {
                    let v = array.as_primitive::<Float64Type>().value(i);
                    assert!(v.is_finite());
                    let shortest = format!("{v:e}");
                    assert_eq!(decimal(&shortest), decimal(text), "{text:?} -> {v:e}");
                    assert!(decimal(text).is_some());
                }
                ColumnType::Bool => {
                    let v = array.as_boolean().value(i);
                    assert!(text.eq_ignore_ascii_case(if v { "true" } else { "false" }));
                }
                ColumnType::Date => {
                    let days = array.as_primitive::<Date32Type>().value(i);
                    let date = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()
                        + chrono::Duration::days(i64::from(days));
                    assert_eq!(date.format("%Y-%m-%d").to_string(), text);
                }
                ColumnType::Timestamp => {
                    let micros = array.as_primitive::<TimestampMicrosecondType>().value(i);
                    assert_eq!(render_timestamp(micros, text), text);
                }
            }
        }
    }
});
