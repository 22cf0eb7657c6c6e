//! Errors. Every message names what it failed on: the source (URL redacted), the object, the
//! line/column/value. [`ExtractError::retry_decision`] says whether redoing the item can help.

use std::time::Duration;

use sluice_runtime::{ExitCode, ExitStatus, RetryDecision};
use sluice_storage::StorageError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Bad flags, manifest or schema file: exit 2, retrying will not help.
    #[error("{0}")]
    Config(String),

    /// The server answered with an error status.
    #[error("{url}: HTTP {status}{}", message_suffix(.message))]
    Http {
        url: String,
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },

    /// No usable answer (connect, reset, timeout, truncated body).
    #[error("{url}: {detail}")]
    Transport {
        url: String,
        detail: String,
        /// Connection problems are transient; protocol violations are not.
        transient: bool,
    },

    /// The source changed between a dropped transfer and its resumption (ETag / Last-Modified
    /// no longer match, or the server ignored `If-Range`): the item starts over.
    #[error("{url}: source changed while resuming at byte {offset}; restarting the item")]
    SourceChanged { url: String, offset: u64 },

    /// A local input file could not be read.
    #[error("{path}: {source}")]
    LocalIo {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// Corrupt or unsupported compressed input.
    #[error("{source_name}: {detail}")]
    Decode { source_name: String, detail: String },

    /// A value that does not fit the schema (with `--bad-rows fail`).
    #[error("{0}")]
    BadValue(Box<BadValue>),

    /// A CSV record that cannot be read as a row (wrong field count, invalid UTF-8, broken
    /// quoting). `line` and `offset` are where the record starts.
    #[error("{source_name}: line {line} (byte offset {offset}): {detail}")]
    BadRecord {
        source_name: String,
        line: u64,
        /// 0-based, in the decoded input.
        offset: u64,
        detail: String,
    },

    #[error("{source_name}: {rejected} rows quarantined, more than --max-bad-rows {limit}")]
    TooManyBadRows {
        source_name: String,
        rejected: u64,
        limit: u64,
    },

    #[error("{0}")]
    Storage(#[from] StorageError),

    /// Parquet/Arrow encoding failed (a bug or resource problem, not bad input).
    #[error("{source_name}: writing Parquet: {detail}")]
    Encode { source_name: String, detail: String },

    #[error("cancelled")]
    Cancelled,

    /// Some items of the task's share failed. The others were still done (one dead source
    /// does not stop the rest) and the task manifest records both; this names every failure.
    #[error(
        "{failed} of {total} {} failed ({}the task manifest {manifest} records every item):{}",
        if *.total == 1 { "item" } else { "items" },
        if *.failed < *.total { "the others are done; " } else { "" },
        list_failed(.items, *.failed)
    )]
    ItemsFailed {
        failed: usize,
        total: usize,
        /// The task manifest that records them (`complete: false`).
        manifest: String,
        /// The failed items, at most [`MAX_LISTED_FAILURES`] of them.
        items: Vec<FailedItem>,
    },

    #[error("{0}")]
    Internal(String),

    /// [`ExtractError::Config`] caused by another error (a file that cannot be read, a URL
    /// that does not parse), kept as the source.
    #[error("{context}: {source}")]
    ConfigSource {
        context: String,
        #[source]
        source: BoxError,
    },

    /// [`ExtractError::Internal`] caused by another error (serialising, a thread that died,
    /// a client that cannot be built), kept as the source.
    #[error("{context}: {source}")]
    InternalSource {
        context: String,
        #[source]
        source: BoxError,
    },

    /// Two outputs of one task would get the same object key: refused before the second one
    /// writes anything.
    #[error(
        "{key}: both {first} and {second} would be written to this object; refusing to overwrite \
         (give the sources distinct `name`s or datasets in a manifest)"
    )]
    KeyCollision {
        key: String,
        first: String,
        second: String,
    },

    /// The end-of-task check found an object that is not what the manifest records.
    #[error("{url}: the manifest records {recorded}, the store has {found}")]
    ObjectChanged {
        url: String,
        recorded: String,
        found: String,
    },

    // Issue 13: not data, and bounded time.
    /// The source sent something that is not the data (an HTML page, a JSON error body)
    /// where data was expected. Transient when it came from a server (portals serve
    /// maintenance pages), so the request is retried; final after that.
    #[error("{source_name}: {detail}")]
    NotData {
        source_name: String,
        detail: String,
        transient: bool,
    },

    /// A transfer limit fired (`--min-rate` over `--min-rate-window`, or `--item-timeout`):
    /// final for the item, so a slow source cannot hold a task for long.
    #[error("{source_name}: {detail}")]
    TooSlow {
        source_name: String,
        /// The flag that fired.
        limit: &'static str,
        detail: String,
    },
}

/// Where a value that does not fit the schema is, and what it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{source_name}: line {line} (byte offset {offset}), column {column_index} ({column}): value {value:?} is not a valid {expected}{}",
    hint_suffix(.hint)
)]
pub struct BadValue {
    pub source_name: String,
    /// Where the record starts: physical line and 0-based byte offset in the decoded input.
    pub line: u64,
    pub offset: u64,
    pub column: String,
    /// 1-based.
    pub column_index: usize,
    pub value: String,
    pub expected: String,
    pub hint: Option<String>,
}

/// How many failed items [`ExtractError::ItemsFailed`] names; a task of thousands of pages
/// whose portal is down would otherwise print thousands of lines. The manifest has them all.
pub const MAX_LISTED_FAILURES: usize = 20;

/// One failed item, as the task's exit error names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedItem {
    /// The shard key (`dataset/name` or `dataset/name/000012`).
    pub key: String,
    /// The source, redacted.
    pub url: String,
    /// Why it failed (item errors name their source already, usually).
    pub cause: String,
}

impl std::fmt::Display for FailedItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Most causes start with the URL; saying it twice makes the list hard to read.
        if self.cause.contains(&self.url) {
            write!(f, "{}: {}", self.key, self.cause)
        } else {
            write!(f, "{} ({}): {}", self.key, self.url, self.cause)
        }
    }
}

fn list_failed(items: &[FailedItem], failed: usize) -> String {
    let mut out = String::new();
    for item in items {
        out.push_str("\n  ");
        out.push_str(&item.to_string());
    }
    if failed > items.len() {
        out.push_str(&format!(
            "\n  ... and {} more (the task manifest lists every one)",
            failed - items.len()
        ));
    }
    out
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
}

impl ExtractError {
    /// Whether redoing the item (a fresh download) may succeed.
    pub fn retry_decision(&self) -> RetryDecision {
        match self {
            ExtractError::Http {
                status,
                retry_after,
                ..
            } => match (
                sluice_runtime::retry::classify_http_status(*status, None),
                retry_after,
            ) {
                (RetryDecision::Stop, _) => RetryDecision::Stop,
                (_, Some(wait)) => RetryDecision::RetryAfter(*wait),
                (decision, None) => decision,
            },
            ExtractError::Transport { transient, .. } => {
                if *transient {
                    RetryDecision::Retry
                } else {
                    RetryDecision::Stop
                }
            }
            ExtractError::SourceChanged { .. } => RetryDecision::Retry,
            ExtractError::NotData {
                transient: true, ..
            } => RetryDecision::Retry,
            _ => RetryDecision::Stop,
        }
    }

    /// Configuration problems map to exit code 2.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            ExtractError::Config(_) | ExtractError::ConfigSource { .. }
        )
    }

    /// A configuration problem caused by `source`.
    pub fn config_source(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        ExtractError::ConfigSource {
            context: context.into(),
            source: source.into(),
        }
    }

    /// An internal failure caused by `source`.
    pub fn internal_source(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        ExtractError::InternalSource {
            context: context.into(),
            source: source.into(),
        }
    }

    /// A failure of the source itself (HTTP status, connection, an answer that is not what
    /// the protocol promises), as opposed to our configuration, storage or a cancellation:
    /// what isolates one source from the others.
    pub fn is_source_failure(&self) -> bool {
        matches!(
            self,
            ExtractError::Http { .. }
                | ExtractError::Transport { .. }
                | ExtractError::Decode { .. }
                | ExtractError::SourceChanged { .. }
        )
    }

    pub fn is_cancelled(&self) -> bool {
        matches!(
            self,
            ExtractError::Cancelled | ExtractError::Storage(StorageError::Cancelled { .. })
        )
    }

    /// Wraps this error into an `io::Error` so it can cross `Read`/`Write` boundaries, and be
    /// recovered whole by [`ExtractError::from_io`].
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }

    /// Recovers an error wrapped by [`ExtractError::into_io`], or wraps a plain I/O error.
    pub fn from_io(
        err: std::io::Error,
        context: impl FnOnce(std::io::Error) -> ExtractError,
    ) -> Self {
        if err
            .get_ref()
            .is_some_and(|inner| inner.is::<ExtractError>())
        {
            match err
                .into_inner()
                .map(|inner| inner.downcast::<ExtractError>())
            {
                Some(Ok(inner)) => *inner,
                _ => ExtractError::Internal("lost an error crossing an I/O boundary".into()),
            }
        } else {
            context(err)
        }
    }
}

/// Bad flags, manifests and schema files are the user's to fix (exit 2); a storage error
/// decides for itself (a missing bucket is a usage error); everything else failed the task.
impl ExitStatus for ExtractError {
    fn exit_code(&self) -> ExitCode {
        match self {
            ExtractError::Config(_) | ExtractError::ConfigSource { .. } => ExitCode::Usage,
            ExtractError::Storage(storage) => storage.exit_code(),
            ExtractError::Http { .. }
            | ExtractError::Transport { .. }
            | ExtractError::SourceChanged { .. }
            | ExtractError::LocalIo { .. }
            | ExtractError::Decode { .. }
            | ExtractError::BadValue(_)
            | ExtractError::BadRecord { .. }
            | ExtractError::TooManyBadRows { .. }
            | ExtractError::Encode { .. }
            | ExtractError::Cancelled
            // Each failed item is logged; the task failed (as before this rule existed).
            | ExtractError::ItemsFailed { .. }
            | ExtractError::Internal(_)
            | ExtractError::InternalSource { .. }
            | ExtractError::KeyCollision { .. }
            | ExtractError::ObjectChanged { .. }
            | ExtractError::NotData { .. }
            | ExtractError::TooSlow { .. } => ExitCode::TaskFailed,
        }
    }
}

pub(crate) type Result<T, E = ExtractError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let http = |status, retry_after| ExtractError::Http {
            url: "u".into(),
            status,
            retry_after,
            message: String::new(),
        };
        assert_eq!(http(503, None).retry_decision(), RetryDecision::Retry);
        assert_eq!(
            http(429, Some(Duration::from_secs(3))).retry_decision(),
            RetryDecision::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(http(404, None).retry_decision(), RetryDecision::Stop);
        assert_eq!(
            http(403, Some(Duration::from_secs(3))).retry_decision(),
            RetryDecision::Stop
        );
        let bad = ExtractError::BadValue(Box::new(BadValue {
            source_name: "https://h/a.csv".into(),
            line: 7,
            offset: 130,
            column: "amount".into(),
            column_index: 3,
            value: "12,5".into(),
            expected: "INT64".into(),
            hint: None,
        }));
        assert_eq!(bad.retry_decision(), RetryDecision::Stop);
        assert_eq!(
            bad.to_string(),
            "https://h/a.csv: line 7 (byte offset 130), column 3 (amount): value \"12,5\" is not a valid INT64"
        );
    }

    #[test]
    fn items_failed_names_each_failure_up_to_the_cap() {
        let item = |i: usize| FailedItem {
            key: format!("d/s{i}"),
            url: format!("https://h/s{i}.csv"),
            cause: if i == 0 {
                "https://h/s0.csv: HTTP 404".into()
            } else {
                "connection refused".into()
            },
        };
        let failed = MAX_LISTED_FAILURES + 5;
        let e = ExtractError::ItemsFailed {
            failed,
            total: 40,
            manifest: "gs://b/raw/_manifests/task-00000.json".into(),
            items: (0..MAX_LISTED_FAILURES).map(item).collect(),
        };
        let text = e.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "25 of 40 items failed (the others are done; the task manifest \
             gs://b/raw/_manifests/task-00000.json records every item):"
        );
        // A cause that names its URL is not told the URL again; one that does not is.
        assert_eq!(lines[1], "  d/s0: https://h/s0.csv: HTTP 404");
        assert_eq!(lines[2], "  d/s1 (https://h/s1.csv): connection refused");
        assert_eq!(lines.len(), 1 + MAX_LISTED_FAILURES + 1, "{text}");
        assert_eq!(
            lines[MAX_LISTED_FAILURES + 1],
            "  ... and 5 more (the task manifest lists every one)"
        );
        assert_eq!(e.exit_code(), ExitCode::TaskFailed);
    }

    #[test]
    fn survives_io_round_trip() {
        let io = ExtractError::SourceChanged {
            url: "u".into(),
            offset: 5,
        }
        .into_io();
        let back = ExtractError::from_io(io, |e| ExtractError::Internal(e.to_string()));
        assert!(matches!(
            back,
            ExtractError::SourceChanged { offset: 5, .. }
        ));
        let plain = std::io::Error::other("disk on fire");
        let wrapped = ExtractError::from_io(plain, |e| ExtractError::Internal(e.to_string()));
        assert_eq!(wrapped.to_string(), "disk on fire");
    }

    #[test]
    fn exit_codes_and_kept_sources() {
        use std::error::Error as _;
        assert_eq!(
            ExtractError::Config("x".into()).exit_code(),
            ExitCode::Usage
        );
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = ExtractError::config_source("cannot read /m.toml", io);
        assert_eq!(e.exit_code(), ExitCode::Usage);
        assert!(e.is_config());
        assert!(e.to_string().starts_with("cannot read /m.toml: "), "{e}");
        assert!(e.source().is_some_and(|s| s.is::<std::io::Error>()));
        let setup = ExtractError::Storage(StorageError::Setup {
            url: "gs://b".into(),
            problem: "bucket gs://b does not exist".into(),
        });
        assert_eq!(setup.exit_code(), ExitCode::Usage);
        let not_found = ExtractError::Storage(StorageError::NotFound {
            url: "gs://b/o".into(),
        });
        assert_eq!(not_found.exit_code(), ExitCode::TaskFailed);
        assert_eq!(
            ExtractError::internal_source("pipeline thread", std::io::Error::other("gone"))
                .exit_code(),
            ExitCode::TaskFailed
        );
        assert_eq!(ExtractError::Cancelled.exit_code(), ExitCode::TaskFailed);
    }
}
