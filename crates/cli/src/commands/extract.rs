//! `sluice extract`: flags/env -> typed config -> `sluice_extract`.
//!
//! Every flag has a `SLUICE_...` twin so a Cloud Run job can be configured through env alone.
//! Flags that take several values (`--url`, `--socrata`) accept them whitespace-separated in
//! one env value. The Socrata app token is read from `SLUICE_SOCRATA_APP_TOKEN` (or
//! `SOCRATA_APP_TOKEN`) only: a flag would show it in `ps` and in execution overrides.

use std::io::IsTerminal;

use sluice_extract::{
    BadRows, Compression, Encoding, ExtractConfig, OutputFormat, PartitionSpec, ProgressMode,
    parse_encoding, parse_rate,
};
use sluice_runtime::duration::parse as parse_duration;
use sluice_runtime::duration::parse_positive as parse_positive_duration;
use sluice_runtime::{ExitCode, Secret, ShardStrategy};

use crate::context::{Context, UsageError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A source URL (http, https, file://) or local path; repeatable. Each is one work item.
    #[arg(long = "url", env = "SLUICE_URL", value_name = "URL")]
    urls: Vec<String>,

    /// A source list: one URL per line, or TOML/JSON entries with name, url, kind, format,
    /// dataset, options. A local path, file://, http(s):// or gs:// URL.
    #[arg(long, env = "SLUICE_MANIFEST", value_name = "FILE")]
    manifest: Option<String>,

    /// A Socrata SODA resource (https://HOST/resource/ID); repeatable. Its pages are the
    /// work items. App token: env SLUICE_SOCRATA_APP_TOKEN or SOCRATA_APP_TOKEN.
    #[arg(long, env = "SLUICE_SOCRATA", value_name = "URL")]
    socrata: Vec<String>,

    /// Socrata: only rows with :updated_at after this floating timestamp (2026-11-01T00:00:00).
    /// `auto`: per source from the state load keeps in {dest}/_state/ (Socrata: after the
    /// stored mark; files: skipped while unchanged); first run = full pull (docs/state.md).
    #[arg(long, env = "SLUICE_SINCE", value_name = "TIMESTAMP|auto")]
    since: Option<String>,

    /// With --since auto: re-read this much before each stored mark (10m, 2h, 1d).
    #[arg(long, env = "SLUICE_EXTRACT_LAG", default_value = "0s", value_parser = parse_duration)]
    lag: std::time::Duration,

    /// With --since auto and --format parquet: of each CSV file that changed, write only the
    /// rows whose column COL is after the stored mark (minus --lag); load then stores max(COL)
    /// as the new mark (docs/state.md).
    #[arg(long, env = "SLUICE_EXTRACT_CURSOR", value_name = "COL")]
    cursor: Option<String>,

    /// Socrata: rows per page ($limit); one object per page.
    #[arg(long, env = "SLUICE_SOCRATA_PAGE_SIZE", default_value_t = 50_000)]
    socrata_page_size: u64,

    /// Where to write: gs://bucket/prefix, file:///dir or a local directory.
    #[arg(long, env = "SLUICE_DEST", value_name = "URL")]
    dest: String,

    /// Dataset name: the directory under --dest (and the table `load` fills). Default: each
    /// source's name.
    #[arg(long, env = "SLUICE_DATASET", value_name = "NAME")]
    dataset: Option<String>,

    /// passthrough (bytes as decoded) or parquet (CSV converted).
    #[arg(long, env = "SLUICE_EXTRACT_FORMAT", default_value = "passthrough")]
    format: OutputFormat,

    /// Hive partition segment: dt=YYYY-MM-DD, or dt=today for the execution's UTC date (pinned
    /// by the first task of the execution, so retries and late tasks agree).
    #[arg(long, env = "SLUICE_PARTITION", value_name = "KEY=VALUE")]
    partition: Option<PartitionSpec>,

    /// Items processed at once by this task.
    #[arg(long, env = "SLUICE_EXTRACT_CONCURRENCY", default_value_t = 4)]
    concurrency: usize,

    /// A value that does not fit the schema: fail, or quarantine the row to a
    /// .rejects.jsonl object next to the output.
    #[arg(long, env = "SLUICE_BAD_ROWS", default_value = "fail")]
    bad_rows: BadRows,

    /// With quarantine: fail an item once more rows than this were rejected.
    #[arg(long, env = "SLUICE_MAX_BAD_ROWS", value_name = "N")]
    max_bad_rows: Option<u64>,

    /// Skip sources whose ETag / Last-Modified match what was recorded when their objects
    /// were written (checked with HEAD, no download).
    #[arg(long, env = "SLUICE_SKIP_EXISTING")]
    skip_existing: bool,

    /// Finished items recorded per task journal part (one object each); a crash makes the
    /// retry redo at most this many items (or 30 s of work).
    #[arg(long, env = "SLUICE_JOURNAL_PART_ITEMS", value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    journal_part_items: u32,

    /// How items are dealt to tasks: contiguous, round-robin or hash.
    #[arg(
        long,
        env = "SLUICE_EXTRACT_SHARD_STRATEGY",
        default_value = "round-robin"
    )]
    shard_strategy: ShardStrategy,

    /// Write gzip/zip sources as served instead of decompressing them (passthrough only).
    #[arg(long, env = "SLUICE_KEEP_COMPRESSED")]
    keep_compressed: bool,

    /// CSV field delimiter (default: "," or tab for .tsv).
    #[arg(long, env = "SLUICE_CSV_DELIMITER", value_name = "CHAR")]
    delimiter: Option<String>,

    /// CSV quote character.
    #[arg(
        long,
        env = "SLUICE_CSV_QUOTE",
        default_value = "\"",
        value_name = "CHAR"
    )]
    quote: String,

    /// CSV escape character (e.g. \), in addition to doubled quotes.
    #[arg(long, env = "SLUICE_CSV_ESCAPE", value_name = "CHAR")]
    escape: Option<String>,

    /// The CSV has no header row (columns are named column_1, column_2, ...).
    #[arg(long, env = "SLUICE_CSV_NO_HEADER")]
    no_header: bool,

    /// Comma-separated values read as NULL ("" included by a leading comma).
    #[arg(
        long,
        env = "SLUICE_NULL_VALUES",
        default_value = ",NA,NULL",
        value_name = "LIST"
    )]
    null_values: String,

    /// Rows sampled to infer column types.
    #[arg(long, env = "SLUICE_INFER_ROWS", default_value_t = 10_000)]
    infer_rows: usize,

    /// Schema override (JSON or TOML: column -> type), a path or URL.
    #[arg(long, env = "SLUICE_EXTRACT_SCHEMA", value_name = "FILE")]
    schema: Option<String>,

    /// Parquet compression: zstd, zstd:LEVEL, snappy or none.
    #[arg(long, env = "SLUICE_PARQUET_COMPRESSION", default_value = "zstd")]
    compression: Compression,

    /// Largest Parquet row group, in rows.
    #[arg(long, env = "SLUICE_ROW_GROUP_ROWS", default_value_t = 1_000_000)]
    row_group_rows: usize,

    /// Largest Parquet row group, in MiB (estimated encoded size; held in memory until
    /// written).
    #[arg(long, env = "SLUICE_ROW_GROUP_MIB", default_value_t = 32)]
    row_group_mib: usize,

    /// TCP connect timeout (500ms, 30s, 2m).
    #[arg(long, env = "SLUICE_CONNECT_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    connect_timeout: std::time::Duration,

    /// Longest wait for the next bytes of a response before it is resumed or retried.
    #[arg(long, env = "SLUICE_READ_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration)]
    read_timeout: std::time::Duration,

    /// Attempts per request (the first included).
    #[arg(long, env = "SLUICE_MAX_ATTEMPTS", default_value_t = 8)]
    max_attempts: u32,

    /// Time budget for retrying one request.
    #[arg(long, env = "SLUICE_RETRY_BUDGET", default_value = "5m", value_parser = parse_positive_duration)]
    retry_budget: std::time::Duration,

    /// Progress: auto (bars on a terminal, log lines otherwise), log, bar or off.
    #[arg(long, env = "SLUICE_PROGRESS", default_value = "auto")]
    progress: String,

    /// How often progress log lines are written.
    #[arg(long, env = "SLUICE_PROGRESS_INTERVAL", default_value = "5s", value_parser = parse_positive_duration)]
    progress_interval: std::time::Duration,

    // Issue 13: not data, encodings, bounded time.
    /// Store whatever a source serves: no not-data check (by default an HTML page or a JSON
    /// error body where a data file was expected fails the item after retries).
    #[arg(long, env = "SLUICE_ACCEPT_ANY_CONTENT")]
    accept_any_content: bool,

    /// Source text encoding, a WHATWG label (latin1, windows-1252, utf-16le, shift_jis...):
    /// transcoded to UTF-8 for Parquet and passthrough. A byte order mark wins. Default UTF-8.
    #[arg(long, env = "SLUICE_EXTRACT_ENCODING", value_name = "LABEL", value_parser = parse_encoding)]
    encoding: Option<&'static Encoding>,

    /// Deadline for one item: all its attempts, retries and resumptions (30s, 10m, 2h).
    #[arg(long, env = "SLUICE_ITEM_TIMEOUT", default_value = "2h", value_parser = parse_positive_duration)]
    item_timeout: std::time::Duration,

    /// Least transfer rate over --min-rate-window of waiting for body bytes (1KiB/s, 500B/s).
    #[arg(long, env = "SLUICE_MIN_RATE", default_value = "1KiB/s", value_name = "RATE", value_parser = parse_rate)]
    min_rate: u64,

    /// The window --min-rate is averaged over.
    #[arg(long, env = "SLUICE_MIN_RATE_WINDOW", default_value = "60s", value_parser = parse_positive_duration)]
    min_rate_window: std::time::Duration,
}

fn one_char(flag: &str, value: &str) -> anyhow::Result<u8> {
    match value {
        "\\t" | "tab" | "\t" => Ok(b'\t'),
        v if v.len() == 1 => Ok(v.as_bytes()[0]),
        _ => Err(UsageError(format!(
            "--{flag} must be one ASCII character, not {value:?}"
        ))
        .into()),
    }
}

/// Values of a repeatable flag whose env twin may hold several, whitespace-separated.
fn split_values(values: Vec<String>) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(str::to_string)
        .collect()
}

fn config(args: Args, context: &Context) -> anyhow::Result<ExtractConfig> {
    let mut config = ExtractConfig::new(args.dest);
    config.urls = split_values(args.urls);
    config.manifest = args.manifest;
    config.socrata = split_values(args.socrata);
    match args.since.as_deref().map(str::trim) {
        Some(auto) if auto.eq_ignore_ascii_case("auto") => config.since_auto = true,
        _ => config.socrata_options.since = args.since,
    }
    config.lag = args.lag;
    config.cursor = args.cursor.filter(|c| !c.trim().is_empty());
    config.socrata_options.page_size = args.socrata_page_size.max(1);
    config.socrata_options.app_token = ["SLUICE_SOCRATA_APP_TOKEN", "SOCRATA_APP_TOKEN"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .map(|token| Secret::new(token.trim()));
    config.dataset = args.dataset;
    config.format = args.format;
    config.partition = args.partition;
    config.concurrency = args.concurrency.max(1);
    config.bad_rows = args.bad_rows;
    config.max_bad_rows = args.max_bad_rows;
    config.skip_existing = args.skip_existing;
    config.journal_part_items = args.journal_part_items as usize;
    config.shard_strategy = args.shard_strategy;
    config.decompress = !args.keep_compressed;
    config.csv.delimiter = args
        .delimiter
        .as_deref()
        .map(|d| one_char("delimiter", d))
        .transpose()?;
    config.csv.quote = one_char("quote", &args.quote)?;
    config.csv.escape = args
        .escape
        .as_deref()
        .map(|e| one_char("escape", e))
        .transpose()?;
    config.csv.has_header = !args.no_header;
    config.csv.null_values = args.null_values.split(',').map(str::to_string).collect();
    config.csv.infer_rows = args.infer_rows.max(1);
    config.csv.schema_file = args.schema;
    config.parquet.compression = args.compression;
    config.parquet.row_group_rows = args.row_group_rows.max(1);
    config.parquet.row_group_bytes = args.row_group_mib.max(1) * 1024 * 1024;
    config.http.connect_timeout = args.connect_timeout;
    config.http.read_timeout = args.read_timeout;
    config.http.retry.max_attempts = args.max_attempts.max(1);
    config.http.retry.max_elapsed = args.retry_budget;
    config.progress.interval = args.progress_interval;
    config.csv.accept_any_content = args.accept_any_content;
    config.csv.encoding = args.encoding;
    config.http.item_timeout = args.item_timeout;
    config.http.min_rate = args.min_rate;
    config.http.min_rate_window = args.min_rate_window;
    config.progress.mode = match args.progress.to_ascii_lowercase().as_str() {
        // Bars only for a person at a terminal; Cloud Run and log collectors get log lines.
        "auto" if context.task.job.is_none() && std::io::stderr().is_terminal() => {
            ProgressMode::Bar
        }
        "auto" | "log" => ProgressMode::Log,
        "bar" => ProgressMode::Bar,
        "off" => ProgressMode::Off,
        other => {
            return Err(UsageError(format!(
                "--progress {other:?}: expected auto, log, bar or off"
            ))
            .into());
        }
    };
    Ok(config)
}

pub async fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    let config = config(args, context)?;
    sluice_extract::run(
        config,
        &context.task,
        context.store_config(),
        context.cancel(),
    )
    .await
    // The error's own ExitStatus decides the exit code (context::exit_code_of).
    .map_err(anyhow::Error::new)?;
    Ok(ExitCode::Ok)
}
