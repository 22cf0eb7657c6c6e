//! Typed configuration. The binary builds it from flags and `SLUICE_...` env; nothing in this
//! crate reads the process environment.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use encoding_rs::Encoding;
use serde::{Deserialize, Serialize};
use sluice_runtime::{RetryPolicy, ShardStrategy};

/// Everything one `sluice extract` task needs.
#[derive(Debug, Clone)]
pub struct ExtractConfig {
    /// URLs, local paths or `file://` URLs given directly (one work item each).
    pub urls: Vec<String>,
    /// A manifest of sources: a local path, `file://`, `http(s)://` or `gs://` URL.
    pub manifest: Option<String>,
    /// Socrata SODA resources (`https://HOST/resource/ID`); their pages are the work items.
    pub socrata: Vec<String>,
    pub socrata_options: SocrataOptions,
    /// `gs://bucket/prefix`, `file:///dir` or a local directory.
    pub dest: String,
    /// Dataset name (the first path segment under `dest`); per source default: the source name.
    pub dataset: Option<String>,
    pub format: OutputFormat,
    pub partition: Option<PartitionSpec>,
    /// Items processed at once by this task.
    pub concurrency: usize,
    pub bad_rows: BadRows,
    /// Fail the item when more rows than this are quarantined.
    pub max_bad_rows: Option<u64>,
    /// Skip items whose recorded source version (ETag / Last-Modified / size) still matches.
    pub skip_existing: bool,
    /// Finished items recorded per task journal part (`--journal-part-items`): a crash makes
    /// the retry redo at most this many items (or 30 s of work).
    pub journal_part_items: usize,
    /// `--since auto`: per-source windows from the stored state `{dest}/_state/{dataset}.json`
    /// (`docs/state.md`). A literal `--since` (`socrata_options.since`) overrides it.
    pub since_auto: bool,
    /// `--lag`: with `--since auto`, re-read this much before each stored mark.
    pub lag: Duration,
    /// `--cursor COL`: with `--since auto`, write only the CSV rows whose COL is after the
    /// stored mark minus `lag` (files converted to Parquet; `docs/state.md`).
    pub cursor: Option<String>,
    pub shard_strategy: ShardStrategy,
    /// Decompress gzip/zip inputs (default). `false` copies bytes exactly as served.
    pub decompress: bool,
    pub csv: CsvOptions,
    pub parquet: ParquetOptions,
    pub http: HttpOptions,
    pub progress: ProgressOptions,
}

impl ExtractConfig {
    /// A config with defaults for everything but the destination.
    pub fn new(dest: impl Into<String>) -> Self {
        ExtractConfig {
            urls: Vec::new(),
            manifest: None,
            socrata: Vec::new(),
            socrata_options: SocrataOptions::default(),
            dest: dest.into(),
            dataset: None,
            format: OutputFormat::Passthrough,
            partition: None,
            concurrency: 4,
            bad_rows: BadRows::Fail,
            max_bad_rows: None,
            skip_existing: false,
            journal_part_items: 1000,
            since_auto: false,
            lag: Duration::ZERO,
            cursor: None,
            shard_strategy: ShardStrategy::default(),
            decompress: true,
            csv: CsvOptions::default(),
            parquet: ParquetOptions::default(),
            http: HttpOptions::default(),
            progress: ProgressOptions::default(),
        }
    }
}

/// What is written for each source member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// The (decompressed) bytes, unchanged.
    #[default]
    Passthrough,
    /// CSV converted to Parquet.
    Parquet,
}

impl OutputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Passthrough => "passthrough",
            OutputFormat::Parquet => "parquet",
        }
    }
}

impl FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "passthrough" | "raw" => Ok(OutputFormat::Passthrough),
            "parquet" => Ok(OutputFormat::Parquet),
            _ => Err(format!(
                "unknown format {s:?}; expected passthrough or parquet"
            )),
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a row whose value does not fit the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadRows {
    /// Fail the item with an error naming source, line, column and value.
    #[default]
    Fail,
    /// Write the row to a `.rejects.jsonl` object next to the output and count it.
    Quarantine,
}

impl FromStr for BadRows {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fail" => Ok(BadRows::Fail),
            "quarantine" => Ok(BadRows::Quarantine),
            _ => Err(format!(
                "unknown bad-rows policy {s:?}; expected fail or quarantine"
            )),
        }
    }
}

/// A Hive-style partition segment (`dt=2026-11-28`) put between the dataset and the file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    pub key: String,
    pub value: PartitionValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionValue {
    Fixed(String),
    /// The execution's UTC date (`dt=today`): see `execution_date`.
    Today,
}

impl PartitionSpec {
    /// The segment, given what `today` means for this execution.
    pub fn resolve(&self, today: chrono::NaiveDate) -> String {
        match &self.value {
            PartitionValue::Fixed(v) => format!("{}={v}", self.key),
            PartitionValue::Today => format!("{}={}", self.key, today.format("%Y-%m-%d")),
        }
    }
}

impl FromStr for PartitionSpec {
    type Err = String;
    /// `KEY=VALUE`; `dt=today` means the execution's UTC date; a `dt`/`date` value must be
    /// `YYYY-MM-DD`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| format!("partition {s:?} must look like dt=YYYY-MM-DD or dt=today"))?;
        let key_ok = !key.is_empty()
            && key.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !key_ok {
            return Err(format!(
                "partition key {key:?} must be lowercase letters, digits and '_' (e.g. dt)"
            ));
        }
        if value.eq_ignore_ascii_case("today") {
            return Ok(PartitionSpec {
                key: key.to_string(),
                value: PartitionValue::Today,
            });
        }
        if value.is_empty()
            || !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "partition value {value:?} must be non-empty letters, digits, '-', '_' or '.'"
            ));
        }
        if matches!(key, "dt" | "date")
            && chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_err()
        {
            return Err(format!(
                "partition {key}={value}: {key} must be a date YYYY-MM-DD (or `today`)"
            ));
        }
        Ok(PartitionSpec {
            key: key.to_string(),
            value: PartitionValue::Fixed(value.to_string()),
        })
    }
}

/// How CSV is read when converting to Parquet. Every field can be overridden per source in a
/// manifest's `options`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// Field delimiter; `None` = `,` (or tab for `.tsv` sources).
    pub delimiter: Option<u8>,
    pub quote: u8,
    /// An escape character (`\"` style); `None` = RFC 4180 doubled quotes only.
    pub escape: Option<u8>,
    pub has_header: bool,
    /// Values read as NULL (compared exactly, after nothing is trimmed).
    pub null_values: Vec<String>,
    /// Rows sampled to infer the schema.
    pub infer_rows: usize,
    /// Upper bound of the sample kept in memory for inference.
    pub infer_bytes: usize,
    /// A schema override file (JSON or TOML): column -> type.
    pub schema_file: Option<String>,
    /// Rows per Arrow batch.
    pub batch_rows: usize,

    // Text decoding and the not-data check (issue 13). They live here because `item.csv` is
    // what reaches the decode stage for every item, passthrough included.
    /// `--encoding`: the sources' text encoding, transcoded to UTF-8 in the decode stage.
    /// `None` = UTF-8 (bytes as they are). A byte order mark wins over either.
    pub encoding: Option<&'static Encoding>,
    /// `--accept-any-content`: no not-data check (HTML pages, JSON error bodies are written).
    pub accept_any_content: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: None,
            quote: b'"',
            escape: None,
            has_header: true,
            null_values: vec![String::new(), "NA".into(), "NULL".into()],
            infer_rows: 10_000,
            infer_bytes: 8 * 1024 * 1024,
            schema_file: None,
            batch_rows: 8192,
            encoding: None,
            accept_any_content: false,
        }
    }
}

/// Parquet column compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd(i32),
    Snappy,
    None,
}

impl FromStr for Compression {
    type Err = String;
    /// `zstd`, `zstd:LEVEL`, `snappy`, `none`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "zstd" => Ok(Compression::Zstd(1)),
            "snappy" => Ok(Compression::Snappy),
            "none" | "uncompressed" => Ok(Compression::None),
            other => match other.strip_prefix("zstd:").map(str::parse::<i32>) {
                Some(Ok(level)) if (1..=22).contains(&level) => Ok(Compression::Zstd(level)),
                _ => Err(format!(
                    "unknown compression {s:?}; expected zstd, zstd:LEVEL (1-22), snappy or none"
                )),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetOptions {
    pub compression: Compression,
    /// A row group is closed after this many rows...
    pub row_group_rows: usize,
    /// ...or when its estimated encoded size reaches this (it is held in memory until then).
    pub row_group_bytes: usize,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            compression: Compression::Zstd(1),
            row_group_rows: 1_000_000,
            row_group_bytes: 32 * 1024 * 1024,
        }
    }
}

/// The one secret type of the workspace (`Debug`/`Display` print a mask), re-exported where
/// extract's users have always found it.
use sluice_runtime::Secret;

#[derive(Debug, Clone)]
pub struct SocrataOptions {
    /// Sent as `X-App-Token`; never logged.
    pub app_token: Option<Secret>,
    /// Rows per page (`$limit`); each page is one work item and one object.
    pub page_size: u64,
    /// Only rows with `:updated_at` after this (a SoQL floating timestamp, e.g.
    /// `2026-11-01T00:00:00`).
    pub since: Option<String>,
}

impl Default for SocrataOptions {
    fn default() -> Self {
        SocrataOptions {
            app_token: None,
            page_size: 50_000,
            since: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response.
    pub read_timeout: Duration,
    pub retry: RetryPolicy,
    pub user_agent: String,

    // Transfer limits (issue 13): every item ends in bounded time.
    /// `--item-timeout`: one item's deadline, all its attempts and request retries included.
    pub item_timeout: Duration,
    /// `--min-rate`, bytes per second: the least average rate over `min_rate_window` of
    /// time spent waiting for body bytes (connecting and retry backoff do not count).
    pub min_rate: u64,
    /// `--min-rate-window`.
    pub min_rate_window: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            user_agent: concat!("sluice/", env!("CARGO_PKG_VERSION")).to_string(),
            item_timeout: Duration::from_secs(2 * 3600),
            min_rate: 1024,
            min_rate_window: Duration::from_secs(60),
        }
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A log line per active item every `interval`, and one per finished item.
    #[default]
    Log,
    /// An indicatif bar per item on stderr (a terminal), plus the per-item summary lines.
    Bar,
    /// Only the per-item summary lines.
    Off,
}

#[derive(Debug, Clone)]
pub struct ProgressOptions {
    pub mode: ProgressMode,
    pub interval: Duration,
}

impl Default for ProgressOptions {
    fn default() -> Self {
        ProgressOptions {
            mode: ProgressMode::Log,
            interval: Duration::from_secs(5),
        }
    }
}

/// Per-source overrides from a manifest entry's `options` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceOptions {
    pub delimiter: Option<String>,
    pub quote: Option<String>,
    pub escape: Option<String>,
    pub header: Option<bool>,
    pub null_values: Option<Vec<String>>,
    pub infer_rows: Option<usize>,
    /// Schema override file for this source (path or URL).
    pub schema: Option<String>,
    /// Glob(s) selecting zip members (`*.csv`); default: every file member.
    pub members: Option<Vec<String>>,
    /// `false`: keep gzip/zip bytes as served.
    pub decompress: Option<bool>,
    /// The source's text encoding (a WHATWG label), like `--encoding` for this source only.
    pub encoding: Option<String>,
}

// Durations (`--connect-timeout`, `--item-timeout`, ...) are parsed by
// `sluice_runtime::duration`, the one parser every crate shares.

/// Parses a transfer rate, bytes per second: `1KiB/s`, `512B/s`, `2MB/s`, `100` (bytes/s).
/// `K`/`M`/`G` and `KB`/`MB`/`GB` are powers of 1000, `KiB`/`MiB`/`GiB` powers of 1024.
/// Zero is refused: a zero rate cannot detect anything.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("/s")
        .or_else(|| t.strip_suffix("ps"))
        .unwrap_or(t)
        .trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid rate {text:?} (e.g. 1KiB/s, 500B/s, 2MB/s)"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "invalid rate unit in {text:?} (B, KB, KiB, MB, MiB, GB or GiB per second)"
            ));
        }
    };
    let rate = (value * scale).round();
    if !(rate >= 1.0 && rate < u64::MAX as f64) {
        return Err(format!(
            "rate {text:?} must be at least 1 byte per second (e.g. 1KiB/s)"
        ));
    }
    Ok(rate as u64)
}

/// Resolves a WHATWG encoding label (`latin1`, `windows-1252`, `utf-16le`, `shift_jis`...).
/// As on the web, `latin1`/`iso-8859-1`/`ascii` mean windows-1252.
pub fn parse_encoding(label: &str) -> Result<&'static Encoding, String> {
    match Encoding::for_label(label.trim().as_bytes()) {
        // `replacement` decodes everything to U+FFFD: never what a data source means.
        Some(encoding) if encoding != encoding_rs::REPLACEMENT => Ok(encoding),
        _ => Err(format!(
            "unknown encoding {label:?}; expected a WHATWG label such as utf-8, latin1 \
             (= windows-1252), windows-1252, iso-8859-15, utf-16le, utf-16be, shift_jis, \
             euc-kr, gb18030, big5, koi8-r (https://encoding.spec.whatwg.org/#names-and-labels)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_encodings() {
        assert_eq!(parse_rate("1KiB/s"), Ok(1024));
        assert_eq!(parse_rate("1 kib/s"), Ok(1024));
        assert_eq!(parse_rate("2MB/s"), Ok(2_000_000));
        assert_eq!(parse_rate("1.5KiB"), Ok(1536));
        assert_eq!(parse_rate("300"), Ok(300));
        assert_eq!(parse_rate("64kbps"), Ok(64_000));
        for bad in ["0", "0B/s", "0.1B/s", "-1KiB/s", "fast", "1TB/s", ""] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_encoding("latin1"), Ok(encoding_rs::WINDOWS_1252));
        assert_eq!(parse_encoding(" UTF-16LE "), Ok(encoding_rs::UTF_16LE));
        assert_eq!(parse_encoding("shift_jis"), Ok(encoding_rs::SHIFT_JIS));
        let err = parse_encoding("klingon").unwrap_err();
        assert!(
            err.contains("klingon") && err.contains("windows-1252"),
            "{err}"
        );
        assert!(parse_encoding("replacement").is_err());
    }

    #[test]
    fn partitions_parse_and_validate() {
        let p: PartitionSpec = "dt=2026-11-28".parse().unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
        assert_eq!(p.resolve(day), "dt=2026-11-28");
        let today: PartitionSpec = "dt=today".parse().unwrap();
        assert_eq!(today.resolve(day), "dt=2026-01-02");
        assert!("dt=2026-13-01".parse::<PartitionSpec>().is_err());
        assert!("dt=28/11/2026".parse::<PartitionSpec>().is_err());
        assert!("DT=2026-11-28".parse::<PartitionSpec>().is_err());
        assert!("2026-11-28".parse::<PartitionSpec>().is_err());
        assert!("region=eu/west".parse::<PartitionSpec>().is_err());
        assert!("region=eu-west".parse::<PartitionSpec>().is_ok());
    }

    #[test]
    fn compression_and_format_parse() {
        assert_eq!("zstd".parse(), Ok(Compression::Zstd(1)));
        assert_eq!("ZSTD:9".parse(), Ok(Compression::Zstd(9)));
        assert_eq!("snappy".parse(), Ok(Compression::Snappy));
        assert!("zstd:0".parse::<Compression>().is_err());
        assert!("lz4".parse::<Compression>().is_err());
        assert_eq!("Parquet".parse(), Ok(OutputFormat::Parquet));
        assert!("csv".parse::<OutputFormat>().is_err());
        assert_eq!("quarantine".parse(), Ok(BadRows::Quarantine));
    }
}
