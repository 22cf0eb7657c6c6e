//! Converters: what is written for one decoded member.
//!
//! - passthrough: the bytes, unchanged ([`passthrough`]);
//! - CSV -> Parquet ([`parquet`]; small inputs on one thread, [`inline`]), built from
//!   [`records`] (CSV records with line numbers), [`schema`] (inference and overrides),
//!   [`columns`] (typed Arrow arrays) and [`batches`] (bad rows and the way to the encoder).

pub(crate) mod batches;
pub(crate) mod columns;
pub(crate) mod cursor;
pub(crate) mod inline;
pub(crate) mod lossless;
pub(crate) mod parquet;
pub(crate) mod records;
pub(crate) mod schema;
pub(crate) mod values;

use std::io::Read;

use crate::decode::ChannelReader;
use crate::error::{ExtractError, Result};
use crate::sink::{Committed, ObjectSink};

/// Read size for decoded (gzip/zip) passthrough.
const COPY_BUFFER: usize = 256 * 1024;

/// Copies a decoded stream into `sink` and commits it.
pub(crate) fn passthrough(
    input: &mut dyn Read,
    mut sink: ObjectSink,
    source_name: &str,
) -> Result<Committed> {
    let mut buffer = vec![0u8; COPY_BUFFER];
    loop {
        let n = match input.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e, source_name)),
        };
        sink.write_all_bytes(&buffer[..n])?;
    }
    sink.commit()
}

/// Copies the raw channel into `sink` without re-buffering (no decoding needed).
pub(crate) fn passthrough_chunks(
    input: &mut ChannelReader,
    mut sink: ObjectSink,
    source_name: &str,
) -> Result<Committed> {
    while let Some(chunk) = input.next_chunk().map_err(|e| read_error(e, source_name))? {
        sink.write_bytes(chunk)?;
    }
    sink.commit()
}

/// An error out of the decoding `Read` chain: either the source's own error (network,
/// cancellation) carried through, or a decoding problem named after the source.
pub(crate) fn read_error(err: std::io::Error, source_name: &str) -> ExtractError {
    ExtractError::from_io(err, |e| ExtractError::Decode {
        source_name: source_name.to_string(),
        detail: e.to_string(),
    })
}
