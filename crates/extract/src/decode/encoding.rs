//! The text stage: source text -> UTF-8, streaming, between decompression and conversion.
//!
//! - A byte order mark decides by itself (UTF-8, UTF-16LE, UTF-16BE) and is removed; it wins
//!   over `--encoding`, as in the WHATWG decode algorithm: a BOM is a statement about these
//!   bytes, a flag is a guess that may cover many sources.
//! - UTF-8 (no BOM, no label, or `--encoding utf-8`): the bytes pass unchanged. Invalid UTF-8
//!   is left for the converter to report as a bad row; nothing is replaced.
//! - Any other encoding is transcoded with `encoding_rs`, whose decoder keeps a sequence that
//!   is split across reads. A sequence that is malformed in that encoding fails the item with
//!   its line and byte offset rather than becoming U+FFFD: replacing would change the data.
//!
//! Memory: one 64 KiB output buffer (plus at most 3 bytes held while looking for a BOM).

use std::io::{self, BufRead, Read};

use encoding_rs::{Decoder, DecoderResult, Encoding, UTF_8};

use crate::error::ExtractError;

const OUTPUT_BUFFER: usize = 64 * 1024;
/// Longer than any malformed sequence `encoding_rs` reports.
const TAIL: usize = 8;

/// A `BufRead` of UTF-8 over a `BufRead` of text in some encoding.
pub(crate) struct TextReader<R> {
    inner: R,
    source_name: String,
    encoding: &'static Encoding,
    bom: bool,
    /// `None`: UTF-8, bytes pass through.
    decoder: Option<Decoder>,
    /// Bytes read while looking for a BOM that turned out to be content.
    head: Vec<u8>,
    head_pos: usize,
    /// The last input bytes decoded, to quote a malformed sequence split across reads.
    tail: Vec<u8>,
    out: Box<[u8]>,
    out_pos: usize,
    out_len: usize,
    /// Source bytes fed to the decoder so far (BOM included): error offsets.
    offset: u64,
    /// Newlines produced so far: error lines.
    newlines: u64,
    finished: bool,
}

impl<R: BufRead> TextReader<R> {
    /// Looks for a BOM (reading at most 3 bytes), then decodes as the BOM says, else as
    /// `label`, else UTF-8.
    pub(crate) fn new(
        mut inner: R,
        label: Option<&'static Encoding>,
        source_name: &str,
    ) -> io::Result<Self> {
        let mut head = Vec::new();
        let first = inner.fill_buf()?;
        let (encoding, bom_len) = if first.len() >= 3 || first.is_empty() {
            let found = Encoding::for_bom(first);
            if let Some((_, len)) = found {
                inner.consume(len);
            }
            found.map_or((None, 0), |(e, len)| (Some(e), len))
        } else {
            // A tiny first chunk: gather up to 3 bytes so a BOM split across reads is seen.
            while head.len() < 3 {
                let buf = inner.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                let take = buf.len().min(3 - head.len());
                head.extend_from_slice(&buf[..take]);
                inner.consume(take);
            }
            match Encoding::for_bom(&head) {
                Some((e, len)) => (Some(e), len),
                None => (None, 0),
            }
        };
        let bom = encoding.is_some();
        let encoding = encoding.or(label).unwrap_or(UTF_8);
        let decoder = (encoding != UTF_8).then(|| encoding.new_decoder_without_bom_handling());
        // A BOM found in `head` is skipped there; one found in `inner` was consumed.
        let head_pos = if head.is_empty() { 0 } else { bom_len };
        Ok(TextReader {
            inner,
            source_name: source_name.to_string(),
            encoding,
            bom,
            decoder,
            head,
            head_pos,
            tail: Vec::with_capacity(2 * TAIL),
            out: vec![0; OUTPUT_BUFFER].into_boxed_slice(),
            out_pos: 0,
            out_len: 0,
            offset: bom_len as u64,
            newlines: 0,
            finished: false,
        })
    }

    /// The encoding the source is read as.
    pub(crate) fn encoding(&self) -> &'static Encoding {
        self.encoding
    }

    /// Whether the bytes are changed on the way (transcoded, or a BOM removed).
    pub(crate) fn transforms(&self) -> bool {
        self.decoder.is_some() || self.bom
    }

    fn malformed(&self, at: u64, bytes: &[u8]) -> io::Error {
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
        ExtractError::Decode {
            source_name: self.source_name.clone(),
            detail: format!(
                "line {}, byte offset {at}: bytes {} are not valid {} text \
                 (check --encoding / options.encoding)",
                self.newlines + 1,
                if hex.is_empty() {
                    "(an incomplete sequence at the end)".to_string()
                } else {
                    hex.join(" ")
                },
                self.encoding.name()
            ),
        }
        .into_io()
    }

    /// Decodes the next piece of input into `out`.
    fn decode_more(&mut self) -> io::Result<()> {
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(());
        };
        while self.out_pos == self.out_len && !self.finished {
            let from_head = self.head_pos < self.head.len();
            let input: &[u8] = if from_head {
                &self.head[self.head_pos..]
            } else {
                self.inner.fill_buf()?
            };
            let last = input.is_empty();
            let (result, read, written) =
                decoder.decode_to_utf8_without_replacement(input, &mut self.out, last);
            let bad_bytes = match result {
                DecoderResult::Malformed(bad, extra) => {
                    // The sequence may have begun in an earlier read: look in `tail` too.
                    let mut seen = self.tail.clone();
                    seen.extend_from_slice(&input[..read]);
                    let end = seen.len().saturating_sub(extra as usize);
                    let start = end.saturating_sub(bad as usize);
                    Some((read, extra, bad, seen[start..end].to_vec()))
                }
                _ => None,
            };
            let keep = read.min(TAIL);
            self.tail.extend_from_slice(&input[read - keep..read]);
            let excess = self.tail.len().saturating_sub(TAIL);
            self.tail.drain(..excess);
            if from_head {
                self.head_pos += read;
            } else {
                self.inner.consume(read);
            }
            self.newlines += memchr::memchr_iter(b'\n', &self.out[..written]).count() as u64;
            self.out_pos = 0;
            self.out_len = written;
            match (result, bad_bytes) {
                (DecoderResult::Malformed(..), Some((read, extra, bad, bytes))) => {
                    let at = (self.offset + read as u64).saturating_sub(extra as u64 + bad as u64);
                    return Err(self.malformed(at, &bytes));
                }
                (DecoderResult::InputEmpty, _) if last => self.finished = true,
                _ => {}
            }
            self.offset += read as u64;
        }
        Ok(())
    }
}

impl<R: BufRead> BufRead for TextReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.decoder.is_none() {
            if self.head_pos < self.head.len() {
                return Ok(&self.head[self.head_pos..]);
            }
            return self.inner.fill_buf();
        }
        self.decode_more()?;
        Ok(&self.out[self.out_pos..self.out_len])
    }

    fn consume(&mut self, amt: usize) {
        if self.decoder.is_none() {
            let in_head = self.head.len() - self.head_pos;
            if in_head > 0 {
                self.head_pos += amt.min(in_head);
            } else {
                self.inner.consume(amt);
            }
            return;
        }
        self.out_pos = (self.out_pos + amt).min(self.out_len);
    }
}

impl<R: BufRead> Read for TextReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its data `step` bytes at a time, like a network trickling in.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let got = self.fill_buf()?;
            let n = got.len().min(buf.len());
            buf[..n].copy_from_slice(&got[..n]);
            self.consume(n);
            Ok(n)
        }
    }

    impl BufRead for Trickle {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            let end = (self.pos + self.step).min(self.data.len());
            Ok(&self.data[self.pos..end])
        }
        fn consume(&mut self, amt: usize) {
            self.pos += amt;
        }
    }

    fn decode(data: &[u8], label: Option<&'static Encoding>, step: usize) -> io::Result<Vec<u8>> {
        let input = Trickle {
            data: data.to_vec(),
            pos: 0,
            step,
        };
        let mut reader = TextReader::new(input, label, "https://h/a.csv")?;
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        Ok(out)
    }

    fn utf16le(text: &str, bom: bool) -> Vec<u8> {
        let mut out = if bom { vec![0xFF, 0xFE] } else { Vec::new() };
        out.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        out
    }

    #[test]
    fn latin1_and_windows_1252_become_utf8() {
        let latin1 = b"name,city\nJos\xe9,M\xfcnchen\nStra\xdfe,\xc0\n";
        for step in [1, 2, 7, 4096] {
            let out = decode(latin1, Some(encoding_rs::WINDOWS_1252), step).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "name,city\nJosé,München\nStraße,À\n"
            );
        }
        let cp1252 = b"price,quote\n\x80 5,\x93hi\x94\n";
        let out = decode(cp1252, Some(encoding_rs::WINDOWS_1252), 1).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "price,quote\n€ 5,“hi”\n");
    }

    #[test]
    fn multibyte_sequences_split_across_reads_survive() {
        let text = "id,v\n1,日本語テキスト\n2,€😀\n";
        let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode("id,v\n1,日本語テキスト\n");
        for step in 1..=5 {
            let out = decode(&utf16le(text, false), Some(encoding_rs::UTF_16LE), step).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), text, "step {step}");
            let out = decode(&sjis, Some(encoding_rs::SHIFT_JIS), step).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "id,v\n1,日本語テキスト\n",
                "step {step}"
            );
        }
    }

    #[test]
    fn a_bom_selects_the_encoding_and_is_removed() {
        let text = "a,b\nü,ß\n";
        for step in [1, 2, 64] {
            // UTF-16LE by its BOM alone, and over a conflicting label.
            for label in [None, Some(encoding_rs::WINDOWS_1252)] {
                let out = decode(&utf16le(text, true), label, step).unwrap();
                assert_eq!(String::from_utf8(out).unwrap(), text);
            }
            let mut be = vec![0xFE, 0xFF];
            be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
            assert_eq!(decode(&be, None, step).unwrap(), text.as_bytes());
            let mut utf8 = b"\xef\xbb\xbf".to_vec();
            utf8.extend_from_slice(text.as_bytes());
            for label in [None, Some(encoding_rs::WINDOWS_1252)] {
                assert_eq!(decode(&utf8, label, step).unwrap(), text.as_bytes());
            }
        }
    }

    #[test]
    fn utf8_passes_unchanged_even_when_invalid() {
        let data = b"a,b\n\xff\xfe-not-a-bom-here,x\nok,\xc3\n";
        for step in [1, 3, 100] {
            assert_eq!(decode(data, None, step).unwrap(), data);
            assert_eq!(
                decode(data, Some(encoding_rs::UTF_8), step).unwrap(),
                data.to_vec()
            );
        }
        // Short inputs: nothing, or fewer bytes than a BOM.
        assert_eq!(decode(b"", None, 1).unwrap(), b"");
        assert_eq!(
            decode(b"a", Some(encoding_rs::WINDOWS_1252), 1).unwrap(),
            b"a"
        );
        assert_eq!(decode(b"\xef\xbb", None, 1).unwrap(), b"\xef\xbb");
    }

    #[test]
    fn malformed_input_fails_with_line_and_offset() {
        // Shift_JIS: 0x81 must be followed by a trail byte; 0x20 is not one.
        let data = b"id,v\n1,ok\n2,\x81 bad\n";
        for step in [1, 2, 100] {
            let err = decode(data, Some(encoding_rs::SHIFT_JIS), step).unwrap_err();
            let err = ExtractError::from_io(err, |e| ExtractError::Internal(e.to_string()));
            let msg = err.to_string();
            assert!(
                msg.starts_with("https://h/a.csv: line 3, byte offset 12: bytes 81"),
                "step {step}: {msg}"
            );
            assert!(msg.contains("Shift_JIS"), "{msg}");
        }
        // UTF-16 with an odd byte at the end.
        let mut odd = utf16le("a,b\n", false);
        odd.push(b'x');
        let err = decode(&odd, Some(encoding_rs::UTF_16LE), 3).unwrap_err();
        assert!(err.to_string().contains("UTF-16LE"), "{err}");
    }
}
