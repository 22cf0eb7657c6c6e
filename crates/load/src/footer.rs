//! Reads a Parquet file's footer with ranged reads: never the whole object.
//!
//! A Parquet file ends with `<metadata><4-byte little-endian metadata length>PAR1`. One read
//! of the last [`TAIL_GUESS`] bytes usually holds the whole footer; a larger footer takes a
//! second read of exactly the missing part.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use parquet::errors::ParquetError;
use parquet::file::metadata::{FooterTail, ParquetMetaData, ParquetMetaDataReader};
use sluice_storage::{ObjectStore, StorageError};

/// First read: the last 64 KiB (footers of files with a few dozen columns fit easily).
const TAIL_GUESS: u64 = 64 * 1024;
/// Refuse footers larger than this (a corrupt length would otherwise ask for gigabytes).
const MAX_FOOTER: u64 = 64 * 1024 * 1024;
/// `PAR1` + 4-byte length + `PAR1`: the smallest possible file.
const MIN_FILE: u64 = 12;

/// Why a footer could not be read. The caller names the object.
#[derive(Debug, thiserror::Error)]
pub enum FooterError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("asked for bytes {start}..{end}, got {got} bytes (object changed while reading?)")]
    ShortRead { start: u64, end: u64, got: usize },
    #[error("{size} bytes is too small to be a Parquet file")]
    TooSmall { size: u64 },
    #[error("not a Parquet file?")]
    NotParquet(#[source] ParquetError),
    #[error("the footer is encrypted; BigQuery cannot load encrypted Parquet")]
    Encrypted,
    #[error("footer length {length} does not fit a {size}-byte file (truncated or not Parquet)")]
    BadLength { length: u64, size: u64 },
    #[error("undecodable metadata")]
    Decode(#[source] ParquetError),
}

async fn read_range(
    store: &dyn ObjectStore,
    key: &str,
    range: std::ops::Range<u64>,
) -> Result<Bytes, FooterError> {
    let mut stream = store.read(key, Some(range.clone())).await?;
    let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    if out.len() as u64 != range.end - range.start {
        return Err(FooterError::ShortRead {
            start: range.start,
            end: range.end,
            got: out.len(),
        });
    }
    Ok(out.freeze())
}

/// Decodes the footer of the `size`-byte object at `key`.
pub(crate) async fn read_metadata(
    store: &dyn ObjectStore,
    key: &str,
    size: u64,
) -> Result<ParquetMetaData, FooterError> {
    if size < MIN_FILE {
        return Err(FooterError::TooSmall { size });
    }
    let tail_len = size.min(TAIL_GUESS);
    let tail = read_range(store, key, size - tail_len..size).await?;
    let last8: [u8; 8] = tail[tail.len() - 8..]
        .try_into()
        .expect("tail holds at least 8 bytes");
    let footer = FooterTail::try_new(&last8).map_err(FooterError::NotParquet)?;
    if footer.is_encrypted_footer() {
        return Err(FooterError::Encrypted);
    }
    let meta_len = footer.metadata_length() as u64;
    if meta_len > MAX_FOOTER || meta_len + 8 + 4 > size {
        return Err(FooterError::BadLength {
            length: meta_len,
            size,
        });
    }
    let metadata: Bytes = if meta_len + 8 <= tail_len {
        let end = tail.len() - 8;
        tail.slice(end - meta_len as usize..end)
    } else {
        read_range(store, key, size - 8 - meta_len..size - 8).await?
    };
    ParquetMetaDataReader::decode_metadata(&metadata).map_err(FooterError::Decode)
}
