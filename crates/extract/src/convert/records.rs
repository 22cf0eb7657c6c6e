//! CSV records with their line numbers, read in batches with `csv-core`.
//!
//! `arrow-csv`'s own decoder stops at the first bad record and counts records, not lines, so
//! it can neither quarantine a row nor say on which line of the file a bad value is. This
//! reader does the record splitting (the same `csv-core` state machine `arrow-csv` uses) and
//! keeps, for every record, its field boundaries, its field count and the physical line it
//! starts on, counting newlines inside quoted fields. Turning fields into typed Arrow arrays is
//! [`super::columns`]' job.

use std::io::{self, BufRead};

use csv_core::{ReadRecordResult, Reader, ReaderBuilder};

/// How the CSV is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    pub delimiter: u8,
    pub quote: u8,
    pub escape: Option<u8>,
}

impl Dialect {
    fn reader(&self) -> Reader {
        let mut builder = ReaderBuilder::new();
        builder
            .delimiter(self.delimiter)
            .quote(self.quote)
            .escape(self.escape)
            .double_quote(true);
        builder.build()
    }
}

#[derive(Debug, Clone, Copy)]
struct RecordMeta {
    /// Index of the record's first field end in `ends`.
    first_end: usize,
    fields: usize,
    /// Where the record's data starts in `data`.
    data_start: usize,
    /// 1-based physical line the record starts on.
    line: u64,
}

/// A batch of records: all field bytes in one buffer.
#[derive(Debug, Default)]
pub struct Records {
    data: Vec<u8>,
    data_len: usize,
    /// Absolute end offsets in `data` of every field of every record.
    ends: Vec<usize>,
    ends_len: usize,
    meta: Vec<RecordMeta>,
}

impl Records {
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    pub fn clear(&mut self) {
        self.data_len = 0;
        self.ends_len = 0;
        self.meta.clear();
    }

    /// Number of fields of record `row`.
    pub fn fields(&self, row: usize) -> usize {
        self.meta[row].fields
    }

    /// Line record `row` starts on.
    pub fn line(&self, row: usize) -> u64 {
        self.meta[row].line
    }

    /// Field `col` of record `row` (`col < fields(row)`).
    #[inline]
    pub fn field(&self, row: usize, col: usize) -> &[u8] {
        &self.data[self.field_range(row, col)]
    }

    /// Where field `col` of record `row` is in [`Self::data`].
    #[inline]
    pub fn field_range(&self, row: usize, col: usize) -> std::ops::Range<usize> {
        let m = &self.meta[row];
        let start = if col == 0 {
            m.data_start
        } else {
            self.ends[m.first_end + col - 1]
        };
        start..self.ends[m.first_end + col]
    }

    /// The field bytes of every record, back to back (what [`Self::field_range`] indexes).
    pub fn data(&self) -> &[u8] {
        &self.data[..self.data_len]
    }

    /// Every field of record `row`, lossily as text (for rejects and messages).
    pub fn record_strings(&self, row: usize) -> Vec<String> {
        (0..self.fields(row))
            .map(|c| String::from_utf8_lossy(self.field(row, c)).into_owned())
            .collect()
    }

    /// Bytes of field data held (for sizing).
    pub fn data_bytes(&self) -> usize {
        self.data_len
    }
}

/// Reads records from a buffered source.
pub struct RecordReader<R> {
    input: R,
    parser: Reader,
    /// Newlines consumed so far.
    newlines: u64,
    last_byte: u8,
    /// The input ended and csv-core has been told.
    ended: bool,
    /// Records returned so far.
    records: u64,
}

/// Initial guess of bytes per record, for buffer sizing.
const RECORD_BYTES_GUESS: usize = 128;

impl<R: BufRead> RecordReader<R> {
    pub fn new(input: R, dialect: Dialect) -> Self {
        RecordReader {
            input,
            parser: dialect.reader(),
            newlines: 0,
            last_byte: 0,
            ended: false,
            records: 0,
        }
    }

    /// Records read so far.
    pub fn records_read(&self) -> u64 {
        self.records
    }

    /// Whether the input is exhausted.
    pub fn at_end(&self) -> bool {
        self.ended
    }

    /// Appends up to `max` records to `out` (cleared first); returns how many were read. Zero
    /// means the end of input. With `stop_at_input_end`, a record cut off by the end of the
    /// *available* input is left unread instead of being completed by an end-of-input (used
    /// to count the complete records in a sample).
    pub fn read_batch(&mut self, out: &mut Records, max: usize) -> io::Result<usize> {
        self.read_batch_inner(out, max, false)
    }

    fn read_batch_inner(
        &mut self,
        out: &mut Records,
        max: usize,
        sample: bool,
    ) -> io::Result<usize> {
        out.clear();
        if self.ended {
            return Ok(0);
        }
        let want_data = (max * RECORD_BYTES_GUESS).max(4096);
        if out.data.len() < want_data {
            out.data.resize(want_data, 0);
        }
        if out.ends.len() < max * 4 + 64 {
            out.ends.resize(max * 4 + 64, 0);
        }
        let mut record_data_start = 0usize;
        let mut record_first_end = 0usize;
        let mut in_record_fields = 0usize;
        // Newlines consumed since the previous record ended.
        let mut record_newlines = 0u64;
        while out.meta.len() < max {
            let input = self.input.fill_buf()?;
            if input.is_empty() && sample {
                // Sample mode: what is buffered is all there is; leave a partial record.
                self.ended = true;
                break;
            }
            let (result, nin, nout, nend) = self.parser.read_record(
                input,
                &mut out.data[out.data_len..],
                &mut out.ends[out.ends_len..],
            );
            if nin > 0 {
                let consumed = &input[..nin];
                let newlines = memchr::memchr_iter(b'\n', consumed).count() as u64;
                self.newlines += newlines;
                record_newlines += newlines;
                self.last_byte = consumed[nin - 1];
            }
            let input_was_empty = input.is_empty();
            self.input.consume(nin);
            // csv-core reports field ends relative to the start of the record.
            for end in &mut out.ends[out.ends_len..out.ends_len + nend] {
                *end += record_data_start;
            }
            out.data_len += nout;
            out.ends_len += nend;
            in_record_fields += nend;
            match result {
                ReadRecordResult::InputEmpty => {
                    if input_was_empty {
                        // csv-core was told the input ended; the next call returns End.
                        continue;
                    }
                }
                ReadRecordResult::OutputFull => {
                    let grow = out.data.len().max(4096);
                    out.data.resize(out.data.len() + grow, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let grow = out.ends.len().max(64);
                    out.ends.resize(out.ends.len() + grow, 0);
                }
                ReadRecordResult::Record => {
                    // Newlines inside the record's (quoted) fields. None when no newline was
                    // read since the last record, or only the one that just ended this record
                    // (most records): then the fields need not be scanned again.
                    let inner_newlines = if record_newlines == 0
                        || (record_newlines == 1 && self.last_byte == b'\n' && !input_was_empty)
                    {
                        0
                    } else {
                        let data = &out.data[record_data_start..out.data_len];
                        memchr::memchr_iter(b'\n', data).count() as u64
                    };
                    let last_line = if self.last_byte == b'\n' {
                        self.newlines
                    } else {
                        self.newlines + 1
                    };
                    out.meta.push(RecordMeta {
                        first_end: record_first_end,
                        fields: in_record_fields,
                        data_start: record_data_start,
                        line: last_line.saturating_sub(inner_newlines).max(1),
                    });
                    self.records += 1;
                    record_data_start = out.data_len;
                    record_first_end = out.ends_len;
                    in_record_fields = 0;
                    record_newlines = 0;
                }
                ReadRecordResult::End => {
                    self.ended = true;
                    break;
                }
            }
        }
        Ok(out.meta.len())
    }

    /// Like [`Self::read_batch`], but stops at the end of what the input has buffered, so only
    /// complete records are counted (sample mode).
    pub fn read_sample_batch(&mut self, out: &mut Records, max: usize) -> io::Result<usize> {
        self.read_batch_inner(out, max, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialect() -> Dialect {
        Dialect {
            delimiter: b',',
            quote: b'"',
            escape: None,
        }
    }

    fn read_all(text: &[u8], batch: usize) -> Vec<(u64, Vec<String>)> {
        let mut reader = RecordReader::new(std::io::BufReader::with_capacity(5, text), dialect());
        let mut records = Records::default();
        let mut out = Vec::new();
        while reader.read_batch(&mut records, batch).unwrap() > 0 {
            for r in 0..records.len() {
                out.push((records.line(r), records.record_strings(r)));
            }
        }
        out
    }

    #[test]
    fn fields_and_lines_with_quotes_blank_lines_and_crlf() {
        let text = b"id,name,note\r\n1,\"Smith, J\",plain\r\n\r\n2,\"multi\nline\nnote\",x\n3,\"say \"\"hi\"\"\",12\" ruler\n4,,last";
        let rows = read_all(text, 2);
        assert_eq!(rows.len(), 5);
        assert_eq!(
            rows[0],
            (1, vec!["id".into(), "name".into(), "note".into()])
        );
        assert_eq!(
            rows[1],
            (2, vec!["1".into(), "Smith, J".into(), "plain".into()])
        );
        // Line 3 is blank.
        assert_eq!(rows[2].0, 4);
        assert_eq!(rows[2].1[1], "multi\nline\nnote");
        assert_eq!(
            rows[3],
            (
                7,
                vec!["3".into(), "say \"hi\"".into(), "12\" ruler".into()]
            )
        );
        assert_eq!(rows[4], (8, vec!["4".into(), "".into(), "last".into()]));
    }

    #[test]
    fn lines_with_quoted_newlines_blank_lines_and_unterminated_ends() {
        // (text, lines the records start on), read with a 5-byte buffer and whole.
        let cases: [(&[u8], &[u64]); 6] = [
            (b"a\n\"x\ny\"\nb\n", &[1, 2, 4]),
            (b"a\n\n\n\"x\n\ny\"\r\nb", &[1, 4, 7]),
            (b"a\r\"x\ny\"\rb\r", &[1, 1, 2]),
            (b"a\n\"x\ny", &[1, 2]),
            // An unterminated quote that ends in a newline: the record's start is counted from
            // the end of input, as before.
            (b"a\n\"x\n", &[1, 1]),
            (b"\"\n\n\",b\nc,\"\n\"\n", &[1, 4]),
        ];
        for (text, lines) in cases {
            for buffer in [5, 4096] {
                let mut reader =
                    RecordReader::new(std::io::BufReader::with_capacity(buffer, text), dialect());
                let mut records = Records::default();
                let mut got = Vec::new();
                while reader.read_batch(&mut records, 2).unwrap() > 0 {
                    got.extend((0..records.len()).map(|r| records.line(r)));
                }
                assert_eq!(got, lines, "{:?}", String::from_utf8_lossy(text));
            }
        }
    }

    #[test]
    fn ragged_records_keep_their_field_counts() {
        let rows = read_all(b"a,b,c\n1,2\n1,2,3,4\n", 10);
        let counts: Vec<usize> = rows.iter().map(|r| r.1.len()).collect();
        assert_eq!(counts, [3, 2, 4]);
    }

    #[test]
    fn many_fields_and_long_values_grow_buffers() {
        let long = "x".repeat(100_000);
        let wide = (0..500)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let text = format!("{long},{wide}\n");
        let rows = read_all(text.as_bytes(), 1);
        assert_eq!(rows[0].1.len(), 501);
        assert_eq!(rows[0].1[0], long);
        assert_eq!(rows[0].1[500], "499");
    }

    #[test]
    fn sample_mode_leaves_a_cut_record() {
        let text = b"a,b\n1,\"open quote\n2,3";
        let mut reader = RecordReader::new(&text[..], dialect());
        let mut records = Records::default();
        assert_eq!(reader.read_sample_batch(&mut records, 100).unwrap(), 1);
    }
}
