//! The one duration parser for every flag, env value and spec field that takes a duration.
//!
//! Semantics are `humantime`'s (`1h`, `90s`, `1m 30s`, `1h30m`, `250ms`, `1.5h`, `2days`), plus
//! a bare number meaning seconds (`90`, `1.5`): `sluice extract` and `sluice dbt` accepted that
//! before the parsers were merged, and env values already set in job configs must keep working.
//! Before this module there were four parsers that disagreed (`--poll-max 1h` was refused,
//! `sluice-trigger` refused `90`, dbt took only seconds).

use std::time::Duration;

/// A duration that could not be parsed, naming the text and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {text:?}: {reason} (e.g. 250ms, 90s, 1m 30s, 1h; a bare number is seconds)"
)]
pub struct DurationError {
    text: String,
    reason: String,
}

impl DurationError {
    fn new(text: &str, reason: impl Into<String>) -> Self {
        DurationError {
            text: text.to_string(),
            reason: reason.into(),
        }
    }
}

/// Parses a duration: humantime syntax, or a bare (decimal) number of seconds. Zero is allowed.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(DurationError::new(text, "empty"));
    }
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let seconds: f64 = t
            .parse()
            .map_err(|_| DurationError::new(text, "not a number"))?;
        return Duration::try_from_secs_f64(seconds)
            .map_err(|_| DurationError::new(text, "out of range"));
    }
    humantime::parse_duration(t).map_err(|e| DurationError::new(text, e.to_string()))
}

/// [`parse`] for timeouts, limits and intervals, where zero would mean "fail at once" or
/// "spin": zero (or anything that rounds down to it) is refused.
pub fn parse_positive(text: &str) -> Result<Duration, DurationError> {
    let duration = parse(text)?;
    if duration.is_zero() {
        return Err(DurationError::new(text, "must be greater than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn humantime_forms() {
        assert_eq!(parse("1h"), Ok(secs(3600)));
        assert_eq!(parse("90s"), Ok(secs(90)));
        assert_eq!(parse("1m 30s"), Ok(secs(90)));
        assert_eq!(parse("1m30s"), Ok(secs(90)));
        assert_eq!(parse("1h30m"), Ok(secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1.5h"), Ok(secs(5400)));
        assert_eq!(parse("2min"), Ok(secs(120)));
        assert_eq!(parse("2days"), Ok(secs(2 * 86_400)));
        assert_eq!(parse(" 600s "), Ok(secs(600)));
    }

    #[test]
    fn bare_numbers_are_seconds() {
        assert_eq!(parse("90"), Ok(secs(90)));
        assert_eq!(parse("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse(" 7 "), Ok(secs(7)));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "",
            "  ",
            "soon",
            "-1s",
            "1x",
            "3 parsecs",
            "1..5",
            ".",
            "1h-",
            "99999999999999999999h",
            "1e400",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                err.to_string().contains(&format!("{bad:?}")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn positive_refuses_zero() {
        assert_eq!(parse_positive("2h"), Ok(secs(7200)));
        for zero in ["0", "0s", "0ms", "0.0000000001", "0.0"] {
            let err = parse_positive(zero).unwrap_err();
            assert!(
                err.to_string().contains("greater than zero"),
                "{zero}: {err}"
            );
        }
        // Below humantime's 1 ns resolution: refused too, as not representable.
        assert!(parse_positive("0.0000000001s").is_err());
        assert!(parse_positive("-5s").is_err());
    }
}
