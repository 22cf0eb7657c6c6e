//! Reads a Parquet file's footer with ranged reads: never the whole object.
//!
//! A Parquet file ends with `<metadata><4-byte little-endian metadata length>PAR1`. One read
//! of the last [`TAIL_GUESS`] bytes usually holds the whole footer; a larger footer takes a
//! second read of exactly the missing part.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use parquet::file::metadata::{FooterTail, ParquetMetaData, ParquetMetaDataReader};
use sluice_storage::ObjectStore;

use crate::errors::LoadError;

/// First read: the last 64 KiB (footers of files with a few dozen columns fit easily).
pub const TAIL_GUESS: u64 = 64 * 1024;
/// Refuse footers larger than this (a corrupt length would otherwise ask for gigabytes).
pub const MAX_FOOTER: u64 = 64 * 1024 * 1024;
/// `PAR1` + 4-byte length + `PAR1`: the smallest possible file.
const MIN_FILE: u64 = 12;

async fn read_range(
    store: &dyn ObjectStore,
    key: &str,
    range: std::ops::Range<u64>,
) -> Result<Bytes, LoadError> {
    let mut stream = store.read(key, Some(range.clone())).await?;
    let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    if out.len() as u64 != range.end - range.start {
        return Err(LoadError::Footer {
            url: store.url_of(key),
            reason: format!(
                "asked for bytes {}..{}, got {} bytes (object changed while reading?)",
                range.start,
                range.end,
                out.len()
            ),
        });
    }
    Ok(out.freeze())
}

/// Decodes the footer of the `size`-byte object at `key`.
pub async fn read_metadata(
    store: &dyn ObjectStore,
    key: &str,
    size: u64,
) -> Result<ParquetMetaData, LoadError> {
    let url = store.url_of(key);
    let fail = |reason: String| LoadError::Footer {
        url: url.clone(),
        reason,
    };
    if size < MIN_FILE {
        return Err(fail(format!(
            "{size} bytes is too small to be a Parquet file"
        )));
    }
    let tail_len = size.min(TAIL_GUESS);
    let tail = read_range(store, key, size - tail_len..size).await?;
    let last8: [u8; 8] = tail[tail.len() - 8..]
        .try_into()
        .expect("tail holds at least 8 bytes");
    let footer =
        FooterTail::try_new(&last8).map_err(|e| fail(format!("{e} (not a Parquet file?)")))?;
    if footer.is_encrypted_footer() {
        return Err(fail(
            "the footer is encrypted; BigQuery cannot load encrypted Parquet".into(),
        ));
    }
    let meta_len = footer.metadata_length() as u64;
    if meta_len > MAX_FOOTER || meta_len + 8 + 4 > size {
        return Err(fail(format!(
            "footer length {meta_len} does not fit a {size}-byte file (truncated or not Parquet)"
        )));
    }
    let metadata: Bytes = if meta_len + 8 <= tail_len {
        let end = tail.len() - 8;
        tail.slice(end - meta_len as usize..end)
    } else {
        read_range(store, key, size - 8 - meta_len..size - 8).await?
    };
    ParquetMetaDataReader::decode_metadata(&metadata).map_err(|e| fail(e.to_string()))
}
