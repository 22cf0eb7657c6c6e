//! Reading a zip archive front to back, without the central directory.
//!
//! A zip's index (the central directory) sits at its end, so a normal reader needs random
//! access: the whole file on disk or in memory, which Cloud Run would charge as RAM. Instead
//! this reader walks the *local file headers* that precede each member's data, as they stream
//! by, and stops at the central directory.
//!
//! Supported: stored (method 0) and deflated (method 8) members; zip64 sizes; members written
//! with a trailing data descriptor (flag bit 3, common from streaming writers such as Java's
//! `ZipOutputStream`) when deflated, because a deflate stream marks its own end. Every member's
//! CRC-32 and size are checked.
//!
//! Limits (each is a clear error naming the member): encrypted members; other methods
//! (deflate64, bzip2, lzma, zstd, xz); *stored* members with a data descriptor (their length is
//! only written after the data, so the end cannot be found without the central directory);
//! split archives. A member deleted from an archive by rewriting only the central directory
//! would still be read: the local headers are the only truth available when streaming.

use std::io::{self, BufRead, Read, Take};

use flate2::bufread::DeflateDecoder;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIR: u32 = 0x0605_4b50;
const ZIP64_END_OF_CENTRAL_DIR: u32 = 0x0606_4b50;
const DATA_DESCRIPTOR: u32 = 0x0807_4b50;
const ARCHIVE_EXTRA_DATA: u32 = 0x0806_4b50;

/// A member's local header, as far as streaming needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHeader {
    /// Path inside the archive (`dir/file.csv`).
    pub name: String,
    /// 0-based position among all entries (directories included).
    pub index: usize,
    pub method: u16,
    pub crc32: u32,
    /// `None` when deferred to a data descriptor.
    pub compressed_size: Option<u64>,
    pub uncompressed_size: Option<u64>,
    pub has_descriptor: bool,
    pub zip64: bool,
}

impl MemberHeader {
    pub fn is_dir(&self) -> bool {
        self.name.ends_with('/')
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn method_name(method: u16) -> String {
    match method {
        9 => "deflate64".into(),
        12 => "bzip2".into(),
        14 => "lzma".into(),
        93 => "zstd".into(),
        95 => "xz".into(),
        98 => "ppmd".into(),
        99 => "AES encryption".into(),
        m => format!("method {m}"),
    }
}

fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_le_bytes(b))
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Walks a zip archive's members in order.
pub struct ZipStream<R: BufRead> {
    inner: R,
    next_index: usize,
    /// The member whose data has not been fully consumed yet.
    pending: Option<MemberHeader>,
    finished: bool,
}

impl<R: BufRead> ZipStream<R> {
    pub fn new(inner: R) -> Self {
        ZipStream {
            inner,
            next_index: 0,
            pending: None,
            finished: false,
        }
    }

    /// The next member's header, `None` after the last one. An unread previous member is
    /// skipped first.
    pub fn next_member(&mut self) -> io::Result<Option<MemberHeader>> {
        if let Some(previous) = self.pending.take() {
            self.skip(&previous)?;
        }
        if self.finished {
            return Ok(None);
        }
        let mut signature = match read_u32(&mut self.inner) {
            Ok(sig) => sig,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.next_index == 0 => {
                return Err(invalid(
                    "not a zip archive: input ends before the first header".into(),
                ));
            }
            Err(e) => return Err(e),
        };
        if self.next_index == 0 && signature == DATA_DESCRIPTOR {
            // A split-archive marker before the first header: single-segment archives only.
            signature = read_u32(&mut self.inner)?;
        }
        match signature {
            LOCAL_HEADER => {}
            CENTRAL_HEADER | END_OF_CENTRAL_DIR | ZIP64_END_OF_CENTRAL_DIR => {
                // The index: every member has been seen. The rest is not needed.
                self.finished = true;
                return Ok(None);
            }
            ARCHIVE_EXTRA_DATA => {
                return Err(invalid(
                    "zip archive uses central-directory encryption (unsupported)".into(),
                ));
            }
            other => {
                return Err(invalid(format!(
                    "corrupt zip: expected a local file header after entry {}, found signature {other:#010x}",
                    self.next_index
                )));
            }
        }
        let _version = read_u16(&mut self.inner)?;
        let flags = read_u16(&mut self.inner)?;
        let method = read_u16(&mut self.inner)?;
        let _time = read_u16(&mut self.inner)?;
        let _date = read_u16(&mut self.inner)?;
        let crc32 = read_u32(&mut self.inner)?;
        let csize32 = read_u32(&mut self.inner)?;
        let usize32 = read_u32(&mut self.inner)?;
        let name_len = read_u16(&mut self.inner)? as usize;
        let extra_len = read_u16(&mut self.inner)? as usize;
        let mut name = vec![0u8; name_len];
        self.inner.read_exact(&mut name)?;
        let mut extra = vec![0u8; extra_len];
        self.inner.read_exact(&mut extra)?;
        // Bit 11 says UTF-8; older archives use CP437, whose ASCII subset is what file names
        // almost always are. Lossy is good enough for a name.
        let name = String::from_utf8_lossy(&name).into_owned();

        let mut csize = u64::from(csize32);
        let mut usize_ = u64::from(usize32);
        let mut zip64 = false;
        let mut rest = &extra[..];
        while rest.len() >= 4 {
            let id = u16::from_le_bytes([rest[0], rest[1]]);
            let len = u16::from_le_bytes([rest[2], rest[3]]) as usize;
            let data = &rest[4..(4 + len).min(rest.len())];
            if id == 0x0001 {
                zip64 = true;
                let mut fields = data.chunks_exact(8).map(|c| {
                    u64::from_le_bytes(c.try_into().expect("chunks_exact yields 8 bytes"))
                });
                if usize32 == u32::MAX {
                    usize_ = fields.next().unwrap_or(usize_);
                }
                if csize32 == u32::MAX {
                    csize = fields.next().unwrap_or(csize);
                }
            }
            rest = &rest[(4 + len).min(rest.len())..];
        }

        let index = self.next_index;
        self.next_index += 1;
        if flags & 0x0001 != 0 {
            return Err(invalid(format!(
                "zip member {name:?} is encrypted (unsupported)"
            )));
        }
        if method != 0 && method != 8 {
            return Err(invalid(format!(
                "zip member {name:?} uses {} compression (only stored and deflate are supported)",
                method_name(method)
            )));
        }
        let has_descriptor = flags & 0x0008 != 0;
        if has_descriptor && method == 0 && !(csize == 0 && name.ends_with('/')) {
            return Err(invalid(format!(
                "zip member {name:?} is stored with a trailing data descriptor: its length is \
                 only known from the central directory, so it cannot be streamed"
            )));
        }
        let header = MemberHeader {
            name,
            index,
            method,
            crc32,
            compressed_size: (!has_descriptor).then_some(csize),
            uncompressed_size: (!has_descriptor).then_some(usize_),
            has_descriptor,
            zip64,
        };
        self.pending = Some(header.clone());
        Ok(Some(header))
    }

    /// A reader over the current member's uncompressed bytes. At its end the CRC-32 and size
    /// are checked and any data descriptor is consumed.
    pub fn reader(&mut self) -> io::Result<MemberReader<'_, R>> {
        let header = self
            .pending
            .take()
            .ok_or_else(|| invalid("no zip member is pending".into()))?;
        let body = match (header.method, header.compressed_size) {
            (0, Some(size)) => Body::Stored((&mut self.inner).take(size)),
            (8, Some(size)) => Body::Deflate(DeflateDecoder::new((&mut self.inner).take(size))),
            (8, None) => Body::DeflateToEnd(DeflateDecoder::new(&mut self.inner)),
            _ => Body::Stored((&mut self.inner).take(0)),
        };
        Ok(MemberReader {
            body,
            header,
            crc: crc32fast::Hasher::new(),
            size: 0,
            done: false,
        })
    }

    fn skip(&mut self, header: &MemberHeader) -> io::Result<()> {
        match (header.has_descriptor, header.compressed_size) {
            // Known length: skip the raw bytes without inflating them.
            (false, Some(size)) => {
                let skipped = io::copy(&mut (&mut self.inner).take(size), &mut io::sink())?;
                if skipped < size {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("zip member {:?} is truncated", header.name),
                    ));
                }
                Ok(())
            }
            _ => {
                self.pending = Some(header.clone());
                let mut reader = self.reader()?;
                io::copy(&mut reader, &mut io::sink())?;
                Ok(())
            }
        }
    }
}

enum Body<'a, R: BufRead> {
    Stored(Take<&'a mut R>),
    Deflate(DeflateDecoder<Take<&'a mut R>>),
    DeflateToEnd(DeflateDecoder<&'a mut R>),
}

/// See [`ZipStream::reader`].
pub struct MemberReader<'a, R: BufRead> {
    body: Body<'a, R>,
    header: MemberHeader,
    crc: crc32fast::Hasher,
    size: u64,
    done: bool,
}

impl<R: BufRead> MemberReader<'_, R> {
    pub fn header(&self) -> &MemberHeader {
        &self.header
    }

    fn finish(&mut self) -> io::Result<()> {
        let name = &self.header.name;
        let (crc, size) = match &mut self.body {
            Body::Stored(take) => {
                if take.limit() > 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("zip member {name:?} is truncated"),
                    ));
                }
                (self.header.crc32, self.header.uncompressed_size)
            }
            Body::Deflate(decoder) => {
                // Anything between the end of the deflate stream and the declared size.
                io::copy(decoder.get_mut(), &mut io::sink())?;
                (self.header.crc32, self.header.uncompressed_size)
            }
            Body::DeflateToEnd(decoder) => {
                let inner = decoder.get_mut();
                let mut first = read_u32(inner)?;
                if first == DATA_DESCRIPTOR {
                    first = read_u32(inner)?;
                }
                let usize_ = if self.header.zip64 {
                    let _csize = read_u64(inner)?;
                    read_u64(inner)?
                } else {
                    let _csize = read_u32(inner)?;
                    u64::from(read_u32(inner)?)
                };
                (first, Some(usize_))
            }
        };
        let actual = std::mem::take(&mut self.crc).finalize();
        if actual != crc {
            return Err(invalid(format!(
                "zip member {name:?}: CRC-32 mismatch (archive says {crc:08x}, data is {actual:08x})"
            )));
        }
        if let Some(expected) = size
            && expected != self.size
        {
            return Err(invalid(format!(
                "zip member {name:?}: size mismatch (archive says {expected}, data is {})",
                self.size
            )));
        }
        Ok(())
    }
}

impl<R: BufRead> Read for MemberReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = match &mut self.body {
            Body::Stored(r) => r.read(buf),
            Body::Deflate(r) => r.read(buf),
            Body::DeflateToEnd(r) => r.read(buf),
        }
        .map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidInput || e.kind() == io::ErrorKind::InvalidData {
                invalid(format!(
                    "zip member {:?}: corrupt deflate data: {e}",
                    self.header.name
                ))
            } else {
                e
            }
        })?;
        if n == 0 {
            self.done = true;
            self.finish()?;
            return Ok(0);
        }
        self.crc.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::DeflateEncoder;
    use std::io::Write;

    /// Builds a zip the way streaming writers do. `descriptor`: sizes after the data.
    pub(crate) fn build_zip(members: &[(&str, &[u8], u16, bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data, method, descriptor) in members {
            let compressed = if *method == 8 {
                let mut enc = DeflateEncoder::new(Vec::new(), Compression::default());
                enc.write_all(data).unwrap();
                enc.finish().unwrap()
            } else {
                data.to_vec()
            };
            let crc = crc32fast::hash(data);
            out.extend_from_slice(&LOCAL_HEADER.to_le_bytes());
            out.extend_from_slice(&20u16.to_le_bytes());
            let flags: u16 = if *descriptor { 0x0808 } else { 0x0800 };
            out.extend_from_slice(&flags.to_le_bytes());
            out.extend_from_slice(&method.to_le_bytes());
            out.extend_from_slice(&[0u8; 4]);
            let (c, cs, us) = if *descriptor {
                (0, 0, 0)
            } else {
                (crc, compressed.len() as u32, data.len() as u32)
            };
            out.extend_from_slice(&c.to_le_bytes());
            out.extend_from_slice(&cs.to_le_bytes());
            out.extend_from_slice(&us.to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&compressed);
            if *descriptor {
                out.extend_from_slice(&DATA_DESCRIPTOR.to_le_bytes());
                out.extend_from_slice(&crc.to_le_bytes());
                out.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
                out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            }
        }
        // A central directory stub: the reader stops at its signature.
        out.extend_from_slice(&CENTRAL_HEADER.to_le_bytes());
        out.extend_from_slice(&[0u8; 42]);
        out
    }

    fn read_all(zip: &[u8]) -> io::Result<Vec<(String, Vec<u8>)>> {
        let mut stream = ZipStream::new(io::BufReader::with_capacity(7, zip));
        let mut out = Vec::new();
        while let Some(header) = stream.next_member()? {
            let mut data = Vec::new();
            stream.reader()?.read_to_end(&mut data)?;
            out.push((header.name, data));
        }
        Ok(out)
    }

    #[test]
    fn reads_stored_deflated_and_descriptor_members() {
        let big: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let zip = build_zip(&[
            ("a.csv", b"x,y\n1,2\n", 0, false),
            ("dir/", b"", 0, false),
            ("b.csv", &big, 8, false),
            ("c.csv", b"q\n1\n2\n", 8, true),
        ]);
        let members = read_all(&zip).unwrap();
        let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.csv", "dir/", "b.csv", "c.csv"]);
        assert_eq!(members[0].1, b"x,y\n1,2\n");
        assert_eq!(members[2].1, big);
        assert_eq!(members[3].1, b"q\n1\n2\n");
    }

    #[test]
    fn skips_unread_members() {
        let zip = build_zip(&[
            ("a.csv", b"aaaa", 8, false),
            ("b.csv", b"bbbb", 8, true),
            ("c.csv", b"cccc", 0, false),
        ]);
        let mut stream = ZipStream::new(&zip[..]);
        let mut last = Vec::new();
        while let Some(h) = stream.next_member().unwrap() {
            if h.name == "c.csv" {
                stream.reader().unwrap().read_to_end(&mut last).unwrap();
            }
        }
        assert_eq!(last, b"cccc");
    }

    #[test]
    fn detects_corruption_and_unsupported_members() {
        let mut zip = build_zip(&[("a.csv", b"hello world", 0, false)]);
        let pos = zip.windows(5).position(|w| w == b"hello").unwrap();
        zip[pos] = b'J';
        let err = read_all(&zip).unwrap_err();
        assert!(err.to_string().contains("CRC-32 mismatch"), "{err}");

        let zip = build_zip(&[("s.csv", b"abc", 0, true)]);
        let err = read_all(&zip).unwrap_err();
        assert!(err.to_string().contains("cannot be streamed"), "{err}");

        let mut zip = build_zip(&[("b.bin", b"abc", 0, false)]);
        zip[8] = 12; // method: bzip2
        let err = read_all(&zip).unwrap_err();
        assert!(err.to_string().contains("bzip2"), "{err}");

        let err = read_all(b"not a zip at all").unwrap_err();
        assert!(err.to_string().contains("corrupt zip"), "{err}");

        let zip = build_zip(&[("t.csv", b"0123456789", 0, false)]);
        let truncated = &zip[..zip.len() - 50];
        assert!(read_all(truncated).is_err());
    }
}
