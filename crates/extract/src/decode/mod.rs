//! Decoding: what the source bytes are (plain, gzip, zip) and the blocking reader the rest of
//! the pipeline pulls from; whether they are data at all ([`content`]); and their text
//! encoding ([`encoding`], to UTF-8).
//!
//! The async side (HTTP body, local file) pushes `Bytes` chunks into a small bounded channel;
//! [`ChannelReader`] is the `Read`/`BufRead` end a blocking thread decodes from. Nothing here
//! holds more than a chunk or two.

pub(crate) mod content;
pub(crate) mod encoding;
pub(crate) mod zip;

use std::io::{BufRead, Read};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::ExtractError;

/// Chunks buffered between the network and the decoder.
pub(crate) const CHANNEL_CHUNKS: usize = 16;

pub(crate) type ChunkSender = mpsc::Sender<Result<Bytes, ExtractError>>;

/// The chunk that marks a complete input.
pub(crate) const END_OF_STREAM: Bytes = Bytes::new();

fn unexpected_close() -> std::io::Error {
    ExtractError::Cancelled.into_io()
}

/// The blocking, buffered end of the source channel. An error sent by the producer comes out
/// of `read` as an `io::Error` wrapping the original [`ExtractError`]
/// (see [`ExtractError::from_io`]).
///
/// The producer must end the stream with an empty chunk ([`END_OF_STREAM`]). A channel that
/// closes without it (the producer was cancelled or died) is an error, never a short but
/// "complete" input: that is what keeps a cut-off download from being committed.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, ExtractError>>,
    current: Bytes,
    done: bool,
}

impl ChannelReader {
    pub(crate) fn channel() -> (ChunkSender, ChannelReader) {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        (
            tx,
            ChannelReader {
                rx,
                current: Bytes::new(),
                done: false,
            },
        )
    }

    /// The first `n` bytes (fewer at the end of input) without consuming them: merges small
    /// leading chunks so format sniffing sees enough.
    pub(crate) fn peek(&mut self, n: usize) -> std::io::Result<&[u8]> {
        while self.current.len() < n && !self.done {
            match self.rx.blocking_recv() {
                Some(Ok(next)) if next.is_empty() => self.done = true,
                Some(Ok(next)) => {
                    let mut merged = Vec::with_capacity(self.current.len() + next.len());
                    merged.extend_from_slice(&self.current);
                    merged.extend_from_slice(&next);
                    self.current = Bytes::from(merged);
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Err(e.into_io());
                }
                None => return Err(unexpected_close()),
            }
        }
        Ok(&self.current[..self.current.len().min(n)])
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.current.is_empty() && !self.done {
            match self.rx.blocking_recv() {
                Some(Ok(next)) if next.is_empty() => self.done = true,
                Some(Ok(next)) => self.current = next,
                Some(Err(e)) => {
                    self.done = true;
                    return Err(e.into_io());
                }
                None => return Err(unexpected_close()),
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, amt: usize) {
        let _ = self.current.split_to(amt.min(self.current.len()));
    }
}

impl ChannelReader {
    /// The next chunk as `Bytes` (zero-copy passthrough), `None` at the end.
    pub(crate) fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        self.fill_buf()?;
        if self.current.is_empty() {
            return Ok(None);
        }
        Ok(Some(std::mem::take(&mut self.current)))
    }
}

/// What the source bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Container {
    Plain,
    Gzip,
    Zip,
}

impl Container {
    /// Magic bytes decide; the file extension only matters when there are too few bytes to
    /// tell (a server may also have transparently decompressed a `.gz`).
    pub(crate) fn sniff(head: &[u8], compression_ext: &str) -> Container {
        if head.starts_with(&[0x1f, 0x8b]) {
            Container::Gzip
        } else if head.starts_with(b"PK\x03\x04")
            || head.starts_with(b"PK\x05\x06")
            || (head.len() < 4 && compression_ext == "zip")
        {
            Container::Zip
        } else {
            Container::Plain
        }
    }
}

/// Whether a file extension looks like delimited text that can be converted.
pub(crate) fn is_csv_like(ext: &str) -> bool {
    matches!(ext, "" | "csv" | "tsv" | "txt" | "dat" | "psv" | "tab")
}

/// The default delimiter for an extension.
pub(crate) fn default_delimiter(ext: &str) -> u8 {
    match ext {
        "tsv" | "tab" => b'\t',
        "psv" => b'|',
        _ => b',',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic_before_extensions() {
        assert_eq!(Container::sniff(&[0x1f, 0x8b, 8, 0], ""), Container::Gzip);
        assert_eq!(Container::sniff(b"PK\x03\x04rest", "gz"), Container::Zip);
        assert_eq!(Container::sniff(b"a,b,c\n", "gz"), Container::Plain);
        assert_eq!(Container::sniff(b"", "zip"), Container::Zip);
    }

    #[test]
    fn channel_reader_peeks_and_reads_across_chunks() {
        let (tx, mut reader) = ChannelReader::channel();
        let producer = std::thread::spawn(move || {
            for part in [&b"P"[..], b"K", b"\x03\x04abc", b"def"] {
                tx.blocking_send(Ok(Bytes::copy_from_slice(part))).unwrap();
            }
            tx.blocking_send(Err(ExtractError::Cancelled)).unwrap();
        });
        // (the producer ends with an error here, so no end marker)
        assert_eq!(reader.peek(4).unwrap(), b"PK\x03\x04");
        let mut out = [0u8; 7];
        reader.read_exact(&mut out).unwrap();
        assert_eq!(&out, b"PK\x03\x04abc");
        let mut rest = Vec::new();
        let err = reader.read_to_end(&mut rest).unwrap_err();
        assert_eq!(rest, b"def");
        let err = ExtractError::from_io(err, |e| ExtractError::Internal(e.to_string()));
        assert!(err.is_cancelled());
        producer.join().unwrap();
    }

    #[test]
    fn a_closed_channel_without_the_end_marker_is_an_error() {
        let (tx, mut reader) = ChannelReader::channel();
        tx.blocking_send(Ok(Bytes::from_static(b"partial")))
            .unwrap();
        drop(tx);
        let mut out = Vec::new();
        assert!(reader.read_to_end(&mut out).is_err());

        let (tx, mut reader) = ChannelReader::channel();
        tx.blocking_send(Ok(Bytes::from_static(b"whole"))).unwrap();
        tx.blocking_send(Ok(END_OF_STREAM)).unwrap();
        drop(tx);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"whole");
    }
}
