//! Strict, lossless readings of CSV text as typed values.
//!
//! Type inference may only pick a type when every sampled value converts *without losing
//! anything*: `02134` as INT64 would drop its zero for good, `12345678901234567890` as FLOAT64
//! would change its digits. These parsers accept exactly the text whose typed value says the same
//! as the text (see each function), and nothing else; inferred columns are converted with them
//! too, so a value after the sample that would lose information is a bad row, never a silent
//! change. Declared types (schema file, Socrata) use the lenient parsers in [`super::columns`].

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

/// `-?(0|[1-9][0-9]*)` within INT64, not `-0`: the text is exactly the integer's rendering.
pub(crate) fn int64(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    let canonical = match digits {
        [] => false,
        [b'0'] => b.len() == 1,
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
    };
    if canonical { s.parse().ok() } else { None }
}

/// A decimal number (`-1.5`, `.5`, `2.50`, `6.02e23`) whose FLOAT64 holds exactly the decimal
/// value written, in the sense that the shortest text reading back to the same FLOAT64 denotes
/// the same number (`0.1` is fine; `0.30000000000000001` and `1e400` are not). Refused:
/// a leading `+`, leading zeros (`01.5`; `0.5` is fine), `inf`/`NaN`, surrounding space, and
/// integers without `.`/exponent that do not fit INT64 (those are identifiers, not floats).
pub(crate) fn float64(s: &str) -> Option<f64> {
    let number = Decimal::parse(s)?;
    if !number.has_point_or_exponent && int64(s).is_none() {
        return None;
    }
    let value: f64 = s.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    // Up to 15 significant digits always survive a round trip through a normal FLOAT64.
    let significant = number.significant_digits();
    let normal = if value == 0.0 {
        significant == 0
    } else {
        (1e-300..1e300).contains(&value.abs())
    };
    if significant <= 15 && normal {
        return Some(value);
    }
    let shortest = format!("{value:e}");
    (Decimal::parse(&shortest)?.value() == number.value()).then_some(value)
}

/// `true`/`false`, `True`/`False`, `TRUE`/`FALSE`: what writers produce for booleans. `1`/`0`
/// stay integers and `y`/`n`, `t`/`f`, `yes`/`no` stay text (they are as often codes).
pub(crate) fn bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// `YYYY-MM-DD` with a real date from year 0001 (BigQuery's DATE range); days since 1970-01-01.
pub(crate) fn date(s: &str) -> Option<i32> {
    let d = naive_date(s.as_bytes())?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    i32::try_from(d.signed_duration_since(epoch).num_days()).ok()
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|+00:00]`, microseconds since the epoch, UTC. Refused
/// because they would lose something: offsets other than UTC (the offset itself), fractions
/// finer than microseconds (unless the extra digits are zeros), leap seconds.
pub(crate) fn timestamp_micros(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    let date = naive_date(&b[..10])?;
    let (h, m, sec) = (two(&b[11..13])?, two(&b[14..16])?, two(&b[17..19])?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0u32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 || frac[6.min(n)..n].iter().any(|&c| c != b'0') {
            return None;
        }
        for i in 0..6 {
            micros = micros * 10
                + frac
                    .get(i)
                    .filter(|_| i < n)
                    .map_or(0, |c| u32::from(c - b'0'));
        }
        rest = &frac[n..];
    }
    if !matches!(rest, b"" | b"Z" | b"+00:00") {
        return None;
    }
    // `None` for hour 24, minute or second 60 (chrono takes leap seconds only as micros).
    let time = NaiveTime::from_hms_micro_opt(h, m, sec, micros)?;
    Some(NaiveDateTime::new(date, time).and_utc().timestamp_micros())
}

fn two(b: &[u8]) -> Option<u32> {
    match b {
        [x @ b'0'..=b'9', y @ b'0'..=b'9'] => Some(u32::from(x - b'0') * 10 + u32::from(y - b'0')),
        _ => None,
    }
}

fn naive_date(b: &[u8]) -> Option<NaiveDate> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = two(&b[0..2])? * 100 + two(&b[2..4])?;
    let (month, day) = (two(&b[5..7])?, two(&b[8..10])?);
    if year == 0 {
        return None;
    }
    NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)
}

/// A decimal as written: sign, digits before and after the point, exponent.
#[derive(Debug, PartialEq, Eq)]
struct Decimal<'a> {
    negative: bool,
    int: &'a [u8],
    frac: &'a [u8],
    exp: i64,
    has_point_or_exponent: bool,
}

impl<'a> Decimal<'a> {
    /// `-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?` with no leading zeros before the point.
    fn parse(s: &'a str) -> Option<Decimal<'a>> {
        let b = s.as_bytes();
        let (negative, b) = match b.strip_prefix(b"-") {
            Some(rest) => (true, rest),
            None => (false, b),
        };
        let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let (int, mut rest) = b.split_at(int_len);
        if int.len() > 1 && int[0] == b'0' {
            return None;
        }
        let mut frac: &[u8] = &[];
        let mut has_point_or_exponent = false;
        if let Some(after) = rest.strip_prefix(b".") {
            let n = after.iter().take_while(|c| c.is_ascii_digit()).count();
            frac = &after[..n];
            rest = &after[n..];
            has_point_or_exponent = true;
        }
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let mut exp = 0i64;
        if let Some(after) = rest.strip_prefix(b"e").or_else(|| rest.strip_prefix(b"E")) {
            let (exp_negative, digits) = match after {
                [b'-', d @ ..] => (true, d),
                [b'+', d @ ..] => (false, d),
                d => (false, d),
            };
            if digits.is_empty() || digits.len() > 6 || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let magnitude = digits
                .iter()
                .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
            exp = if exp_negative { -magnitude } else { magnitude };
            rest = &[];
            has_point_or_exponent = true;
        }
        if !rest.is_empty() {
            return None;
        }
        Some(Decimal {
            negative,
            int,
            frac,
            exp,
            has_point_or_exponent,
        })
    }

    fn digits(&self) -> impl DoubleEndedIterator<Item = u8> + Clone + '_ {
        self.int.iter().chain(self.frac).copied()
    }

    /// Significant digits: without leading and trailing zeros (0 for zero).
    fn significant_digits(&self) -> usize {
        let total = self.int.len() + self.frac.len();
        let leading = self.digits().take_while(|&d| d == b'0').count();
        if leading == total {
            return 0;
        }
        let trailing = self.digits().rev().take_while(|&d| d == b'0').count();
        total - leading - trailing
    }

    /// The value as sign, significant digits and the power of ten they are scaled by
    /// (`2.50` and `25e-1` are the same).
    fn value(&self) -> (bool, Vec<u8>, i64) {
        let mut digits: Vec<u8> = self.digits().skip_while(|&d| d == b'0').collect();
        let mut exp = self.exp - self.frac.len() as i64;
        while digits.last() == Some(&b'0') {
            digits.pop();
            exp += 1;
        }
        if digits.is_empty() {
            exp = 0;
        }
        (self.negative, digits, exp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_keep_every_digit() {
        for (text, want) in [
            ("0", Some(0)),
            ("-7", Some(-7)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            // Leading zeros are part of the value (ZIP, FIPS codes).
            ("02134", None),
            ("00", None),
            ("-01", None),
            ("-0", None),
            ("+5", None),
            (" 5", None),
            ("5 ", None),
            ("9223372036854775808", None),
            ("", None),
            ("-", None),
            ("1_000", None),
        ] {
            assert_eq!(int64(text), want, "{text:?}");
        }
    }

    #[test]
    fn floats_only_when_the_value_survives() {
        for (text, want) in [
            ("1.5", Some(1.5)),
            ("-0.25", Some(-0.25)),
            ("0.1", Some(0.1)),
            ("2.50", Some(2.5)),
            (".5", Some(0.5)),
            ("5.", Some(5.0)),
            ("6.02e23", Some(6.02e23)),
            ("1E-5", Some(1e-5)),
            ("1e+3", Some(1000.0)),
            ("3", Some(3.0)),
            ("0.0", Some(0.0)),
            ("1.7976931348623157e308", Some(f64::MAX)),
            ("0.30000000000000004", Some(0.30000000000000004)),
            // 17 significant digits that a FLOAT64 cannot hold.
            ("0.30000000000000001", None),
            ("9007199254740993.0", None),
            ("1e400", None),
            ("1e-400", None),
            ("NaN", None),
            ("inf", None),
            ("-Infinity", None),
            ("+1.5", None),
            ("01.5", None),
            ("00.5", None),
            (" 1.5", None),
            ("1.5.1", None),
            ("1e", None),
            (".", None),
            ("-.", None),
            ("1,5", None),
            // Integers beyond INT64 are identifiers, never floats.
            ("12345678901234567890", None),
            ("100000000000000000000", None),
            ("100000000000000000000.0", Some(1e20)),
        ] {
            assert_eq!(float64(text), want, "{text:?}");
        }
        // Signed zero keeps its sign.
        assert!(float64("-0.0").unwrap().is_sign_negative());
    }

    #[test]
    fn booleans_dates_and_timestamps_are_strict() {
        assert_eq!(bool("TRUE"), Some(true));
        assert_eq!(bool("False"), Some(false));
        for text in ["1", "0", "t", "yes", "Y", "tRUE", " true"] {
            assert_eq!(bool(text), None, "{text:?}");
        }
        assert_eq!(date("1970-01-02"), Some(1));
        assert_eq!(date("2024-02-29"), Some(19782));
        for text in [
            "2023-02-29",
            "0000-01-01",
            "2024-1-01",
            "2024/01/01",
            "20240101",
            " 2024-01-01",
        ] {
            assert_eq!(date(text), None, "{text:?}");
        }
        let at = 1_704_103_200_000_000; // 2024-01-01T10:00:00Z
        for (text, want) in [
            ("2024-01-01T10:00:00", Some(at)),
            ("2024-01-01 10:00:00", Some(at)),
            ("2024-01-01T10:00:00Z", Some(at)),
            ("2024-01-01T10:00:00+00:00", Some(at)),
            ("2024-01-01T10:00:00.5", Some(at + 500_000)),
            ("2024-01-01T10:00:00.123456", Some(at + 123_456)),
            ("2024-01-01T10:00:00.123456000Z", Some(at + 123_456)),
            // Finer than a microsecond, an offset, a leap second: something would be lost.
            ("2024-01-01T10:00:00.1234567", None),
            ("2024-01-01T10:00:00+02:00", None),
            ("2024-01-01T10:00:00-05:00", None),
            ("2016-12-31T23:59:60Z", None),
            ("2024-01-01T24:00:00", None),
            ("2024-01-01T10:00", None),
            ("2024-01-01T10:00:00.", None),
            ("2024-01-01", None),
            ("2024-01-01T10:00:00 ", None),
        ] {
            assert_eq!(timestamp_micros(text), want, "{text:?}");
        }
    }
}
