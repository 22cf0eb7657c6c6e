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

pub mod config;
pub mod convert;
pub mod decode;
pub mod error;
pub mod execution_date;
pub mod naming;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod receipt;
pub mod redact;
pub mod run;
pub mod sink;
pub mod source;

#[cfg(feature = "testing")]
pub mod testing;

pub use config::{
    BadRows, Compression, CsvOptions, ExtractConfig, HttpOptions, OutputFormat, ParquetOptions,
    PartitionSpec, ProgressMode, ProgressOptions, Secret, SocrataOptions,
};
pub use error::ExtractError;
pub use receipt::{ItemRecord, ItemStatus, ObjectRecord, TaskManifest};
pub use run::{BeforeVerify, TaskHooks, TaskOutcome, run, run_with_hooks};
