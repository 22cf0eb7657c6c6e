//! The bytes of one Socrata page on their way to the converter: the header line's system
//! field names become Sluice's (`:id` -> `_socrata_id`, ...), so passthrough CSV and Parquet
//! carry the same column names, and records are counted so a page with more rows than
//! planned fails instead of being written (see `socrata`'s module docs: it cannot happen
//! unless the plan no longer matches the service).

use std::io::{self, Read};

use crate::source::socrata_query::written_name;

/// A header line longer than this is not a SODA header.
const MAX_HEADER: usize = 1024 * 1024;

pub(crate) struct PageReader<R> {
    inner: R,
    /// The renamed header while it is handed out; then empty.
    header: Vec<u8>,
    header_pos: usize,
    header_done: bool,
    /// Counting state after the header: inside a quoted field, and whether the current
    /// record has any byte yet.
    quoted: bool,
    open_record: bool,
    rows: u64,
    limit: u64,
    source: String,
}

impl<R: Read> PageReader<R> {
    pub(crate) fn new(inner: R, limit: u64, source: &str) -> Self {
        PageReader {
            inner,
            header: Vec::new(),
            header_pos: 0,
            header_done: false,
            quoted: false,
            open_record: false,
            rows: 0,
            limit,
            source: source.to_string(),
        }
    }

    /// Reads and renames the header line (everything up to the first newline outside quotes).
    fn read_header(&mut self) -> io::Result<()> {
        let mut raw = Vec::new();
        let mut quoted = false;
        let mut byte = [0u8; 1];
        loop {
            if self.inner.read(&mut byte)? == 0 {
                break;
            }
            raw.push(byte[0]);
            match byte[0] {
                b'"' => quoted = !quoted,
                b'\n' if !quoted => break,
                _ => {}
            }
            if raw.len() > MAX_HEADER {
                return Err(io::Error::other(format!(
                    "{}: the first line is longer than {MAX_HEADER} bytes; not a SODA CSV header",
                    self.source
                )));
            }
        }
        self.header = rename_header(&raw);
        self.header_done = true;
        Ok(())
    }

    fn count(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'"' => {
                    self.quoted = !self.quoted;
                    self.open_record = true;
                }
                b'\n' if !self.quoted => {
                    self.rows += 1;
                    self.open_record = false;
                }
                b'\r' if !self.quoted => {}
                _ => self.open_record = true,
            }
        }
    }

    fn check_end(&mut self) -> io::Result<()> {
        if self.open_record {
            self.rows += 1;
            self.open_record = false;
        }
        if self.rows > self.limit {
            return Err(io::Error::other(format!(
                "{}: the page returned {} rows, more than the {} planned: the dataset no longer \
                 matches this execution's plan (rows entered the pinned window); run the \
                 extract again as a new execution",
                self.source, self.rows, self.limit
            )));
        }
        Ok(())
    }
}

impl<R: Read> Read for PageReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.header_done {
            self.read_header()?;
        }
        if self.header_pos < self.header.len() {
            let n = buf.len().min(self.header.len() - self.header_pos);
            buf[..n].copy_from_slice(&self.header[self.header_pos..self.header_pos + n]);
            self.header_pos += n;
            return Ok(n);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.check_end()?;
            return Ok(0);
        }
        self.count(&buf[..n]);
        Ok(n)
    }
}

/// The header line with `:id`, `:updated_at`, `:created_at` renamed; quoting kept as sent.
fn rename_header(line: &[u8]) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(line) else {
        return line.to_vec();
    };
    let body = text.trim_end_matches(['\r', '\n']);
    let ending = &text[body.len()..];
    let mut out = String::with_capacity(text.len() + 32);
    let mut field = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let flush = |field: &mut String, quoted: bool, out: &mut String| {
        let name = written_name(field);
        if quoted {
            out.push('"');
            out.push_str(&name.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(name);
        }
        field.clear();
    };
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => {
                in_quotes = !in_quotes;
                quoted = true;
            }
            ',' if !in_quotes => {
                flush(&mut field, quoted, &mut out);
                out.push(',');
                quoted = false;
            }
            c => field.push(c),
        }
    }
    flush(&mut field, quoted, &mut out);
    out.push_str(ending);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &str, limit: u64) -> io::Result<String> {
        let mut out = String::new();
        PageReader::new(input.as_bytes(), limit, "https://h/resource/x.csv")
            .read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn renames_system_fields_in_the_header_only() {
        let input =
            "\"zip\",\":id\",\":updated_at\",\":created_at\"\r\n\"0\",\":id\",\"a\",\"b\"\r\n";
        assert_eq!(
            read_all(input, 5).unwrap(),
            "\"zip\",\"_socrata_id\",\"_socrata_updated_at\",\"_socrata_created_at\"\r\n\"0\",\":id\",\"a\",\"b\"\r\n"
        );
        assert_eq!(read_all("a,:id\n1,2", 5).unwrap(), "a,_socrata_id\n1,2");
        assert_eq!(read_all("", 5).unwrap(), "");
    }

    #[test]
    fn counts_records_not_lines_and_fails_a_page_that_grew() {
        let page = "\"n\",\"note\"\n\"1\",\"two\nlines\"\n\"2\",\"x\"\n\"3\",\"y\"";
        assert!(read_all(page, 3).is_ok());
        let err = read_all(page, 2).unwrap_err().to_string();
        assert!(
            err.contains("returned 3 rows, more than the 2 planned"),
            "{err}"
        );
        assert!(err.contains("https://h/resource/x.csv"), "{err}");
        assert!(read_all("\"n\"\n", 0).is_ok());
    }
}
