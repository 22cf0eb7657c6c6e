//! `tracing` output: Cloud Logging JSON (one object per line) off a TTY or on Cloud Run, human
//! lines on a TTY.
//!
//! The JSON shape is documented in `docs/runtime.md` and built in [`cloud_json`]; [`capture`]
//! lets tests in any crate collect and parse what was logged.

pub mod capture;
pub mod cloud_json;

use crate::TaskContext;
use std::str::FromStr;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use capture::LogCapture;

/// Filter used when none is given.
pub const DEFAULT_FILTER: &str = "info";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// JSON when stdout is not a TTY or `CLOUD_RUN_JOB` is set, text otherwise.
    #[default]
    Auto,
    Json,
    Text,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Auto => "auto",
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [LogFormat::Auto, LogFormat::Json, LogFormat::Text]
            .into_iter()
            .find(|format| format.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown log format {s:?}; expected one of: auto, json, text"))
    }
}

/// Options the binary resolves from flags/env before calling [`init`].
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub format: LogFormat,
    /// `RUST_LOG`-style directives; `None` means `info`.
    pub filter: Option<String>,
    /// Whether stdout is a terminal (the binary checks; tests pass false).
    pub stdout_is_tty: bool,
    /// Whether `CLOUD_RUN_JOB` is set.
    pub on_cloud_run: bool,
}

/// The concrete output [`LogFormat::Auto`] turns into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedFormat {
    Json,
    Text,
}

/// Picks the output format: an explicit choice wins; `auto` means JSON on Cloud Run or when
/// stdout is not a terminal (a log collector is reading), text for a person at a terminal.
pub fn resolve_format(options: &LogOptions) -> ResolvedFormat {
    match options.format {
        LogFormat::Json => ResolvedFormat::Json,
        LogFormat::Text => ResolvedFormat::Text,
        LogFormat::Auto if options.on_cloud_run || !options.stdout_is_tty => ResolvedFormat::Json,
        LogFormat::Auto => ResolvedFormat::Text,
    }
}

/// The `RUST_LOG`-style filter from `options.filter` (empty or absent: [`DEFAULT_FILTER`]).
pub fn build_filter(options: &LogOptions) -> Result<EnvFilter, String> {
    let directives = options
        .filter
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .unwrap_or(DEFAULT_FILTER);
    EnvFilter::try_new(directives)
        .map_err(|err| format!("invalid log filter {directives:?}: {err}"))
}

/// Installs the global subscriber writing to stdout. Labels come from `task`.
///
/// Fails if the filter does not parse or a global subscriber is already installed.
pub fn init(options: &LogOptions, task: &TaskContext) -> Result<(), String> {
    let filter = build_filter(options)?;
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match resolve_format(options) {
        ResolvedFormat::Json => registry
            .with(cloud_logging_layer(task, std::io::stdout))
            .try_init(),
        ResolvedFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_ansi(options.stdout_is_tty)
                    .with_writer(std::io::stdout),
            )
            .try_init(),
    };
    installed.map_err(|err| format!("cannot install the log subscriber: {err}"))
}

/// A JSON layer writing Cloud Logging LogEntry lines to `writer` (tests use a buffer).
pub fn cloud_logging_layer<S, W>(task: &TaskContext, writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    cloud_json::CloudLoggingLayer::new(task, writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(format: LogFormat, tty: bool, cloud_run: bool) -> LogOptions {
        LogOptions {
            format,
            filter: None,
            stdout_is_tty: tty,
            on_cloud_run: cloud_run,
        }
    }

    #[test]
    fn parses_formats_and_lists_valid_ones() {
        assert_eq!("auto".parse(), Ok(LogFormat::Auto));
        assert_eq!("JSON".parse(), Ok(LogFormat::Json));
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        let err = "yaml".parse::<LogFormat>().unwrap_err();
        assert_eq!(
            err,
            "unknown log format \"yaml\"; expected one of: auto, json, text"
        );
    }

    #[test]
    fn auto_is_json_off_a_tty_or_on_cloud_run() {
        use ResolvedFormat::*;
        assert_eq!(
            resolve_format(&options(LogFormat::Auto, false, false)),
            Json
        );
        assert_eq!(resolve_format(&options(LogFormat::Auto, true, true)), Json);
        assert_eq!(resolve_format(&options(LogFormat::Auto, false, true)), Json);
        assert_eq!(resolve_format(&options(LogFormat::Auto, true, false)), Text);
    }

    #[test]
    fn explicit_format_wins() {
        use ResolvedFormat::*;
        assert_eq!(resolve_format(&options(LogFormat::Text, false, true)), Text);
        assert_eq!(resolve_format(&options(LogFormat::Json, true, false)), Json);
    }

    #[test]
    fn filter_defaults_to_info_and_rejects_garbage() {
        let mut o = options(LogFormat::Json, false, false);
        assert_eq!(build_filter(&o).unwrap().to_string(), "info");
        o.filter = Some("  ".into());
        assert_eq!(build_filter(&o).unwrap().to_string(), "info");
        o.filter = Some("warn,sluice_extract=debug".into());
        assert!(build_filter(&o).is_ok());
        o.filter = Some("sluice=notalevel".into());
        let err = build_filter(&o).unwrap_err();
        assert!(err.contains("\"sluice=notalevel\""), "{err}");
    }
}
