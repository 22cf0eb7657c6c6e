//! Stream open data (HTTP files, Socrata SODA pages, local files) into object storage,
//! optionally converting CSV to Parquet.
//!
//! ```text
//! plan (flags, manifest, Socrata counts) -> take_share -> per item, `--concurrency` at once:
//!   source (HTTP GET with retries and Range resumption | local file)
//!     -> bounded channel -> blocking thread: decode (plain | gzip | zip members)
//!     -> convert (passthrough | CSV -> Arrow -> Parquet on a second thread)
//!     -> ObjectSink -> upload task -> atomic commit
//!   -> item receipt
//! -> task manifest (`_manifests/task-00003.json`)
//! ```
//!
//! Every stage holds a bounded amount of data; nothing is staged to disk (Cloud Run's disk is
//! RAM). Object names are deterministic, so a retried task rewrites exactly the same keys, and
//! a retry of the same execution skips items whose receipts show them done. See
//! `docs/extract.md`.

#![warn(unreachable_pub)]

mod config;
mod convert;
mod decode;
mod error;
mod execution_date;
mod journal;
mod manifest_writer;
mod naming;
mod pin;
mod pipeline;
mod plan;
mod progress;
mod receipt;
mod redact;
mod run;
mod sink;
mod source;
mod state;

pub use config::{
    BadRows, Compression, CsvOptions, Encoding, ExtractConfig, HttpOptions, OutputFormat,
    ParquetOptions, PartitionSpec, ProgressMode, ProgressOptions, SocrataOptions, parse_encoding,
    parse_rate,
};
pub use error::{ExtractError, FailedItem, MAX_LISTED_FAILURES};
pub use run::{BeforeVerify, TaskHooks, TaskOutcome, run, run_with_hooks};
pub use sluice_manifest::{ItemRecord, ItemStatus, ObjectRecord, TaskManifest};

/// Building blocks that only the fuzz targets (`fuzz/`) and this crate's integration tests
/// reach into: the CSV record reader, type inference, the streaming zip reader, planning and
/// object naming. Not a supported API; it changes with the implementation.
#[doc(hidden)]
pub mod internals {
    pub use crate::convert::columns::{BatchBuilder, ColumnType, NullMarkers, Problem};
    pub use crate::convert::records::{Dialect, Flaw, RecordReader, Records};
    pub use crate::convert::schema::infer;
    pub use crate::decode::zip::ZipStream;
    pub use crate::naming::identity_hash;
    pub use crate::plan::plan;
    pub use crate::source::WorkItem;
    pub use crate::source::http::HttpClient;
}
