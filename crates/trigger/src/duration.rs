//! Durations as summaries show them. Parsing
//! (`jobs.toml`, flags) is `sluice_runtime::duration`'s, the same as every Sluice command:
//! humantime syntax (`30m`, `1h30m`, `600s`) and a bare number of seconds. Cloud Run's own
//! limits (whole seconds, 1 s to 168 h for a task timeout) are checked where the spec is read.

use std::time::Duration;

/// Short human form for summaries: `1h02m03s`, `4m05s`, `12.3s`.
pub(crate) fn human(d: Duration) -> String {
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
    fn human_form() {
        assert_eq!(human(Duration::from_secs(3723)), "1h02m03s");
        assert_eq!(human(Duration::from_secs(245)), "4m05s");
        assert_eq!(human(Duration::from_millis(12_340)), "12.3s");
    }
}
