//! Durations as people write them in `jobs.toml` and on the command line (`30m`, `1h30m`,
//! `600s`), and as the Admin API wants them (`"600s"`).
//!
//! Hand-rolled rather than `humantime`: task timeouts are whole seconds, and accepting months,
//! fractions or bare numbers would invite misreadings (is `90` seconds or minutes?).

use std::time::Duration;

/// Parses `<int><unit>` groups, units `h`, `m`, `s` and `ms`, e.g. `1h30m`, `45s`, `250ms`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration (expected e.g. 30m, 1h30m, 600s)".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "{text:?} is not a duration (expected e.g. 30m, 1h30m, 600s)"
            ));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "h" => value.checked_mul(3600).map(Duration::from_secs),
            "m" => value.checked_mul(60).map(Duration::from_secs),
            "s" => Some(Duration::from_secs(value)),
            "ms" => Some(Duration::from_millis(value)),
            "" => {
                return Err(format!(
                    "{text:?} has no unit (write e.g. {value}s or {value}m)"
                ));
            }
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?} (use h, m, s or ms)"
                ));
            }
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| format!("{text:?}: duration too large"))?;
    }
    Ok(total)
}

/// The Admin API's `google-duration` form: seconds with an `s` suffix (`"1800s"`, `"0.250s"`).
pub fn to_api(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let frac = format!("{:09}", d.subsec_nanos());
        format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
    }
}

/// Short human form for summaries: `1h02m03s`, `4m05s`, `12.3s`.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!(
            "{}h{:02}m{:02}s",
            secs / 3600,
            (secs % 3600) / 60,
            secs % 60
        )
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_groups() {
        assert_eq!(parse("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse(" 600s ").unwrap(), Duration::from_secs(600));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
    }

    #[test]
    fn rejects_ambiguous_or_unknown() {
        assert!(parse("90").unwrap_err().contains("no unit"));
        assert!(parse("3d").unwrap_err().contains("unknown unit"));
        assert!(parse("").is_err());
        assert!(parse("m").is_err());
        assert!(parse("1.5h").is_err());
        assert!(parse("99999999999999999999s").is_err());
    }

    #[test]
    fn api_form() {
        assert_eq!(to_api(Duration::from_secs(600)), "600s");
        assert_eq!(to_api(Duration::from_millis(1500)), "1.5s");
        assert_eq!(to_api(Duration::from_millis(250)), "0.25s");
    }

    #[test]
    fn human_form() {
        assert_eq!(human(Duration::from_secs(3723)), "1h02m03s");
        assert_eq!(human(Duration::from_secs(245)), "4m05s");
        assert_eq!(human(Duration::from_millis(12_340)), "12.3s");
    }
}
