//! CSV records with where they start, read in batches with `csv-core`.
//!
//! `arrow-csv`'s own decoder stops at the first bad record and counts records, not lines, so
//! it can neither quarantine a row nor say on which line of the file a bad value is. This
//! reader does the record splitting (the same `csv-core` state machine `arrow-csv` uses) and
//! keeps, for every record, its field boundaries, its field count, the physical line it starts
//! on and its byte offset, and what is wrong with its framing, if anything ([`Flaw`]). Turning
//! fields into typed Arrow arrays is [`super::columns`]' job.
//!
//! Framing decisions (each tested below; the table is in `docs/extract.md`):
//! - Lines end at LF, CRLF or a lone CR (old Mac exports): each counts as one line break, for
//!   splitting records and for line numbers alike.
//! - Empty lines carry no record and are skipped (counted, see [`RecordReader::blank_lines`]).
//! - A quote inside an unquoted field (`12" ruler`) is a literal character, as in Python's
//!   `csv` and every spreadsheet.
//! - Text after a closing quote (`"ab"c`, typically an unescaped quote inside a quoted field)
//!   is a malformed record: `csv-core` would silently join it to `abc`.
//! - A quoted field still open at the end of input is a malformed record; csv-core would end it
//!   there, swallowing every line after the opening quote into one value.
//! - A record longer than [`MAX_RECORD_BYTES`] fails the item (bounded memory; it is almost
//!   always a quote that is never closed).

use std::cell::RefCell;
use std::io::{self, BufRead};

use csv_core::{ReadRecordResult, Reader, ReaderBuilder};

/// How the CSV is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    pub delimiter: u8,
    pub quote: u8,
    pub escape: Option<u8>,
}

thread_local! {
    /// The csv-core reader the thread's last [`RecordReader`] used, reset, for the next one.
    static SPARE_PARSER: RefCell<Option<(Dialect, Reader)>> = const { RefCell::new(None) };
}

impl Dialect {
    /// A csv-core reader for this dialect, in its start state.
    ///
    /// Building one compiles csv-core's DFA, which costs more than splitting a 2 KB file, and a
    /// conversion needs two (the sample's and the input's), one after the other. So a dropped
    /// [`RecordReader`] leaves its reader, reset, to the next one on the same thread. (A
    /// reader cannot be cloned instead: csv-core's `Clone` for it keeps only part of the DFA.)
    fn reader(&self) -> Reader {
        let spare = SPARE_PARSER
            .try_with(|spare| spare.borrow_mut().take())
            .ok()
            .flatten();
        if let Some((dialect, reader)) = spare
            && dialect == *self
        {
            return reader;
        }
        let mut builder = ReaderBuilder::new();
        builder
            .delimiter(self.delimiter)
            .quote(self.quote)
            .escape(self.escape)
            .double_quote(true);
        builder.build()
    }
}

/// Longest record the reader holds: beyond it the item fails. A record this long is nearly
/// always a quote that is never closed, swallowing the rest of the file; without the bound it
/// would be buffered whole.
pub(crate) const MAX_RECORD_BYTES: usize = 64 << 20;

/// Length of a UTF-8 byte order mark at the start of `head` (3 or 0). The CSV converter drops
/// it before the header; a decoder that transcodes (and removes BOMs itself) leaves none. The
/// reader itself keeps every byte it is given, a BOM included.
pub(crate) fn utf8_bom_len(head: &[u8]) -> usize {
    if head.starts_with(b"\xef\xbb\xbf") {
        3
    } else {
        0
    }
}

/// What is wrong with a record's framing (fields are 0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// Text follows the closing quote of field `field` (`"ab"c`).
    TextAfterQuote { field: usize },
    /// Field `field` opens a quote that is never closed: it runs to the end of input, up to
    /// line `last_line`. `swallowed_lines`: whether it holds line breaks before its trailing
    /// ones, i.e. lines that were most likely rows of their own.
    UnterminatedQuote {
        field: usize,
        last_line: u64,
        swallowed_lines: bool,
    },
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
    /// 0-based byte offset of the record's first byte in the input.
    offset: u64,
    flaw: Option<Flaw>,
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

    /// Physical line (1-based) record `row` starts on.
    pub fn line(&self, row: usize) -> u64 {
        self.meta[row].line
    }

    /// Byte offset (0-based, in the decoded input) of record `row`'s first byte.
    pub fn offset(&self, row: usize) -> u64 {
        self.meta[row].offset
    }

    /// What is wrong with record `row`'s framing, if anything.
    pub fn flaw(&self, row: usize) -> Option<Flaw> {
        self.meta[row].flaw
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

/// Where the reader is in the input, byte by byte as `csv-core` consumes it.
#[derive(Debug)]
struct Position {
    /// Offset of the next byte.
    offset: u64,
    /// Line of the next byte (1-based).
    line: u64,
    /// The last byte was a CR: a LF right after it ends the same line.
    after_cr: bool,
}

/// Line breaks (LF, CRLF, lone CR) in `bytes`.
fn line_breaks(bytes: &[u8]) -> u64 {
    Position {
        offset: 0,
        line: 0,
        after_cr: false,
    }
    .advance(bytes)
}

impl Position {
    fn advance(&mut self, bytes: &[u8]) -> u64 {
        let mut breaks = 0;
        for i in memchr::memchr2_iter(b'\r', b'\n', bytes) {
            let lf_after_cr = bytes[i] == b'\n'
                && if i == 0 {
                    self.after_cr
                } else {
                    bytes[i - 1] == b'\r'
                };
            if !lf_after_cr {
                breaks += 1;
            }
        }
        if let Some(&last) = bytes.last() {
            self.after_cr = last == b'\r';
        }
        self.line += breaks;
        self.offset += bytes.len() as u64;
        breaks
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    FieldStart,
    Unquoted,
    Quoted,
    /// After the escape character inside a quoted field.
    Escaped,
    /// After a quote inside a quoted field: the closing one, or the first of a doubled pair.
    QuoteInQuoted,
}

/// Follows the quoting of the bytes `csv-core` consumes, to see what it does not report: text
/// after a closing quote, and a quote still open at the end. Mirrors csv-core's transitions
/// (`csv_core::reader::Reader::transition_nfa`) but jumps between the bytes that matter.
#[derive(Debug)]
struct QuoteTracker {
    dialect: Dialect,
    state: QuoteState,
    field: usize,
    flaw: Option<Flaw>,
}

impl QuoteTracker {
    fn begin_record(&mut self) {
        self.state = QuoteState::FieldStart;
        self.field = 0;
        self.flaw = None;
    }

    fn in_quotes(&self) -> bool {
        matches!(self.state, QuoteState::Quoted | QuoteState::Escaped)
    }

    fn feed(&mut self, bytes: &[u8]) {
        let Dialect {
            delimiter,
            quote,
            escape,
        } = self.dialect;
        let is_break = |b: u8| b == b'\r' || b == b'\n';
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                QuoteState::FieldStart => {
                    let b = bytes[i];
                    i += 1;
                    self.state = if b == quote {
                        QuoteState::Quoted
                    } else if b == delimiter {
                        self.field += 1;
                        QuoteState::FieldStart
                    } else if is_break(b) {
                        QuoteState::FieldStart
                    } else {
                        QuoteState::Unquoted
                    };
                }
                QuoteState::Unquoted => {
                    match memchr::memchr3(delimiter, b'\r', b'\n', &bytes[i..]) {
                        Some(j) => {
                            if bytes[i + j] == delimiter {
                                self.field += 1;
                            }
                            i += j + 1;
                            self.state = QuoteState::FieldStart;
                        }
                        None => i = bytes.len(),
                    }
                }
                QuoteState::Quoted => {
                    let found = match escape {
                        Some(e) => memchr::memchr2(quote, e, &bytes[i..]),
                        None => memchr::memchr(quote, &bytes[i..]),
                    };
                    match found {
                        Some(j) => {
                            self.state = if bytes[i + j] == quote {
                                QuoteState::QuoteInQuoted
                            } else {
                                QuoteState::Escaped
                            };
                            i += j + 1;
                        }
                        None => i = bytes.len(),
                    }
                }
                QuoteState::Escaped => {
                    i += 1;
                    self.state = QuoteState::Quoted;
                }
                QuoteState::QuoteInQuoted => {
                    let b = bytes[i];
                    i += 1;
                    self.state = if b == quote {
                        QuoteState::Quoted
                    } else if b == delimiter {
                        self.field += 1;
                        QuoteState::FieldStart
                    } else if is_break(b) {
                        QuoteState::FieldStart
                    } else {
                        if self.flaw.is_none() {
                            self.flaw = Some(Flaw::TextAfterQuote { field: self.field });
                        }
                        QuoteState::Unquoted
                    };
                }
            }
        }
    }
}

/// What the reader follows in the bytes csv-core consumes.
#[derive(Debug)]
struct Tracker {
    position: Position,
    /// Line and offset of the record being read, once its first byte has been consumed.
    record_start: Option<(u64, u64)>,
    quotes: QuoteTracker,
    blank_lines: u64,
}

impl Tracker {
    /// Follows the bytes csv-core consumed: positions, the start of the next record, quoting.
    fn consumed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        if self.record_start.is_none() {
            // Line breaks before a record's first byte: the end of the previous record's CRLF,
            // or empty lines, which csv-core skips.
            let skip = rest
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            self.blank_lines += self.position.advance(&rest[..skip]);
            rest = &rest[skip..];
            if rest.is_empty() {
                return;
            }
            self.record_start = Some((self.position.line, self.position.offset));
            self.quotes.begin_record();
        }
        self.position.advance(rest);
        self.quotes.feed(rest);
    }
}

/// Reads records from a buffered source.
pub struct RecordReader<R> {
    input: R,
    /// Present until the reader is dropped (then it goes back to [`SPARE_PARSER`]).
    parser: Option<Reader>,
    tracker: Tracker,
    max_record_bytes: usize,
    /// csv-core has been called: see [`Self::read_batch_inner`] on its BOM handling.
    started: bool,
    /// The input ended and csv-core has been told.
    ended: bool,
    /// Records returned so far.
    records: u64,
}

impl<R> Drop for RecordReader<R> {
    fn drop(&mut self) {
        if let Some(mut parser) = self.parser.take() {
            parser.reset();
            let dialect = self.tracker.quotes.dialect;
            // During thread exit the slot may be gone: the reader is just dropped then.
            let _ = SPARE_PARSER.try_with(|spare| *spare.borrow_mut() = Some((dialect, parser)));
        }
    }
}

/// Initial guess of bytes per record, for buffer sizing.
const RECORD_BYTES_GUESS: usize = 128;

/// Field bytes a record buffer starts with (it grows as needed).
const INITIAL_DATA_BYTES: usize = 64 * 1024;

/// Field ends a record buffer starts with (it grows as needed).
const INITIAL_FIELD_ENDS: usize = 4096;

impl<R: BufRead> RecordReader<R> {
    pub fn new(input: R, dialect: Dialect) -> Self {
        RecordReader {
            input,
            parser: Some(dialect.reader()),
            tracker: Tracker {
                position: Position {
                    offset: 0,
                    line: 1,
                    after_cr: false,
                },
                record_start: None,
                quotes: QuoteTracker {
                    dialect,
                    state: QuoteState::FieldStart,
                    field: 0,
                    flaw: None,
                },
                blank_lines: 0,
            },
            max_record_bytes: MAX_RECORD_BYTES,
            started: false,
            ended: false,
            records: 0,
        }
    }

    /// Offsets count from `offset` (the bytes before `input` that were dropped, e.g. a BOM).
    pub fn starting_at(mut self, offset: u64) -> Self {
        self.tracker.position.offset = offset;
        self
    }

    /// Overrides [`MAX_RECORD_BYTES`] (tests).
    pub fn with_max_record_bytes(mut self, max: usize) -> Self {
        self.max_record_bytes = max;
        self
    }

    /// Empty lines skipped so far (they hold no record).
    pub fn blank_lines(&self) -> u64 {
        self.tracker.blank_lines
    }

    /// Appends up to `max` records to `out` (cleared first); returns how many were read. Zero
    /// means the end of input.
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
        // Buffers start small and double when csv-core fills them (below), then keep their
        // size for the next batches: a 2 KB file does not pay for zeroing (and faulting in)
        // the megabyte a full batch of `max` records may need.
        let want_data = (max * RECORD_BYTES_GUESS).clamp(4096, INITIAL_DATA_BYTES);
        if out.data.len() < want_data {
            out.data.resize(want_data, 0);
        }
        let want_ends = (max * 4 + 64).min(INITIAL_FIELD_ENDS);
        if out.ends.len() < want_ends {
            out.ends.resize(want_ends, 0);
        }
        let mut record_data_start = 0usize;
        let mut record_first_end = 0usize;
        let mut in_record_fields = 0usize;
        while out.meta.len() < max {
            let mut input = self.input.fill_buf()?;
            if input.is_empty() && sample {
                // Sample mode: what is buffered is all there is; leave a partial record.
                self.ended = true;
                break;
            }
            if !self.started && !input.is_empty() {
                // csv-core drops a UTF-8 BOM in its first call, but only when that call sees
                // all 3 bytes: how much happens to be buffered would decide what the first
                // field holds, and where records start. One byte first turns that off; the
                // converter drops a BOM itself ([`utf8_bom_len`]).
                input = &input[..1];
                self.started = true;
            }
            let parser = self.parser.as_mut().expect("taken only on drop");
            let (result, nin, nout, nend) = parser.read_record(
                input,
                &mut out.data[out.data_len..],
                &mut out.ends[out.ends_len..],
            );
            let input_was_empty = input.is_empty();
            self.tracker.consumed(&input[..nin]);
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
                    let held = out.data_len - record_data_start;
                    if held >= self.max_record_bytes {
                        let (line, offset) = self.tracker.record_start.unwrap_or((0, 0));
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "line {line} (byte offset {offset}): the record starting there \
                                 is longer than {} MiB; most likely a quote that is never \
                                 closed",
                                self.max_record_bytes >> 20
                            ),
                        ));
                    }
                    let grow = out.data.len().max(4096);
                    out.data.resize(out.data.len() + grow, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let grow = out.ends.len().max(64);
                    out.ends.resize(out.ends.len() + grow, 0);
                }
                ReadRecordResult::Record => {
                    let t = &mut self.tracker;
                    let (line, offset) = t
                        .record_start
                        .take()
                        .unwrap_or((t.position.line, t.position.offset));
                    let mut flaw = t.quotes.flaw.take();
                    if input_was_empty && t.quotes.in_quotes() {
                        let field_start = if in_record_fields > 1 {
                            out.ends[out.ends_len - 2]
                        } else {
                            record_data_start
                        };
                        let value = &out.data[field_start..out.data_len];
                        let trimmed_len = value.len()
                            - value
                                .iter()
                                .rev()
                                .take_while(|&&b| b == b'\r' || b == b'\n')
                                .count();
                        // The value holds the raw bytes after the quote: its line breaks are the
                        // input's, and the fields before it hold none.
                        let swallowed = line_breaks(&value[..trimmed_len]);
                        flaw = Some(Flaw::UnterminatedQuote {
                            field: t.quotes.field,
                            last_line: line + swallowed,
                            swallowed_lines: swallowed > 0,
                        });
                    }
                    out.meta.push(RecordMeta {
                        first_end: record_first_end,
                        fields: in_record_fields,
                        data_start: record_data_start,
                        line,
                        offset,
                        flaw,
                    });
                    self.records += 1;
                    record_data_start = out.data_len;
                    record_first_end = out.ends_len;
                    in_record_fields = 0;
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

    /// (line, offset, flaw, fields) of every record, read through a `buffer`-byte buffer in
    /// batches of `batch`.
    type Row = (u64, u64, Option<Flaw>, Vec<String>);

    fn read_with(text: &[u8], dialect: Dialect, buffer: usize, batch: usize) -> Vec<Row> {
        let mut reader =
            RecordReader::new(std::io::BufReader::with_capacity(buffer, text), dialect);
        let mut records = Records::default();
        let mut out = Vec::new();
        while reader.read_batch(&mut records, batch).unwrap() > 0 {
            for r in 0..records.len() {
                out.push((
                    records.line(r),
                    records.offset(r),
                    records.flaw(r),
                    records.record_strings(r),
                ));
            }
        }
        out
    }

    #[test]
    fn readers_of_other_dialects_on_one_thread_split_their_own_way() {
        // Each reader comes from the thread's last built one when the dialect matches: a
        // reader left mid-record, or built for another dialect, must not leak into the next.
        let fields = |d: Dialect, text: &[u8]| -> Vec<Vec<String>> {
            read_with(text, d, 4096, 100)
                .into_iter()
                .map(|(_, _, _, f)| f)
                .collect()
        };
        let semicolon = Dialect {
            delimiter: b';',
            quote: b'\'',
            escape: Some(b'\\'),
        };
        for _ in 0..2 {
            let mut cut = RecordReader::new(&b"a,\"open"[..], dialect());
            cut.read_sample_batch(&mut Records::default(), 10).unwrap();
            assert_eq!(fields(dialect(), b"a;b,'c,d'\n"), [vec!["a;b", "'c", "d'"]]);
            assert_eq!(fields(semicolon, b"a,b;'c;\\'d'\n"), [vec!["a,b", "c;'d"]]);
        }
    }

    /// [`read_with`] through 1-, 5- and 4096-byte buffers, which must all agree.
    fn read_all(text: &[u8], batch: usize) -> Vec<Row> {
        let whole = read_with(text, dialect(), 4096, batch);
        for buffer in [1, 5] {
            assert_eq!(
                read_with(text, dialect(), buffer, batch),
                whole,
                "{buffer}-byte buffer: {:?}",
                String::from_utf8_lossy(text)
            );
        }
        whole
    }

    fn strings(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn fields_lines_and_offsets_with_quotes_blank_lines_and_crlf() {
        let text = b"id,name,note\r\n1,\"Smith, J\",plain\r\n\r\n2,\"multi\nline\nnote\",x\n3,\"say \"\"hi\"\"\",12\" ruler\n4,,last";
        let rows = read_all(text, 2);
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0], (1, 0, None, strings(&["id", "name", "note"])));
        assert_eq!(rows[1], (2, 14, None, strings(&["1", "Smith, J", "plain"])));
        // Line 3 is blank.
        assert_eq!((rows[2].0, rows[2].1), (4, 36));
        assert_eq!(rows[2].3[1], "multi\nline\nnote");
        // A quote inside an unquoted field is a literal character.
        assert_eq!(
            rows[3],
            (7, 58, None, strings(&["3", "say \"hi\"", "12\" ruler"]))
        );
        assert_eq!(rows[4], (8, 83, None, strings(&["4", "", "last"])));
        for row in &rows {
            assert_eq!(text[row.1 as usize], row.3[0].as_bytes()[0]);
        }
    }

    #[test]
    fn lines_count_lf_crlf_and_lone_cr_as_one_break_each() {
        // (text, lines the records start on)
        let cases: [(&[u8], &[u64]); 7] = [
            (b"a\n\"x\ny\"\nb\n", &[1, 2, 4]),
            (b"a\n\n\n\"x\n\ny\"\r\nb", &[1, 4, 7]),
            // Old Mac exports: CR only.
            (b"a\r\"x\ry\"\rb\r", &[1, 2, 4]),
            (b"a\r\n\"x\r\ny\"\r\nb\r\n", &[1, 2, 4]),
            // Mixed, and a CR LF split over two reads.
            (b"a\r\rb\n\r\nc\r\n\nd", &[1, 3, 5, 7]),
            (b"\"\n\n\",b\nc,\"\n\"\n", &[1, 4]),
            (b"\n\r\n\ra", &[4]),
        ];
        for (text, lines) in cases {
            let got: Vec<u64> = read_all(text, 2).iter().map(|r| r.0).collect();
            assert_eq!(got, lines, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn cr_only_files_split_into_records() {
        let rows = read_all(b"id,name\r1,a\r2,\"b\rc\"\r3,d", 10);
        let fields: Vec<Vec<String>> = rows.iter().map(|r| r.3.clone()).collect();
        assert_eq!(
            fields,
            [
                strings(&["id", "name"]),
                strings(&["1", "a"]),
                strings(&["2", "b\rc"]),
                strings(&["3", "d"]),
            ]
        );
        let lines: Vec<u64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(lines, [1, 2, 3, 5]);
    }

    #[test]
    fn an_unterminated_quote_is_a_flaw_at_the_line_it_opens() {
        let text = b"id,comment\n1,ok\n2,\"unterminated\n3,lost row\n4,another lost row\n";
        let rows = read_all(text, 10);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1], (2, 11, None, strings(&["1", "ok"])));
        let (line, offset, flaw, fields) = &rows[2];
        assert_eq!((*line, *offset), (3, 16));
        assert_eq!(&text[16..18], b"2,");
        assert_eq!(
            *flaw,
            Some(Flaw::UnterminatedQuote {
                field: 1,
                last_line: 5,
                swallowed_lines: true
            })
        );
        // The whole rest of the input, as csv-core read it.
        assert_eq!(fields[1], "unterminated\n3,lost row\n4,another lost row\n");

        // Opened on the last line: nothing else swallowed (with or without a final newline).
        for text in [&b"a,b\n1,\"x\n"[..], b"a,b\n1,\"x", b"a,b\n1,\"x\r\n\r\n"] {
            let rows = read_all(text, 10);
            assert_eq!(
                rows[1].2,
                Some(Flaw::UnterminatedQuote {
                    field: 1,
                    last_line: 2,
                    swallowed_lines: false
                }),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        // A field that closes its quote at the very end is fine.
        assert_eq!(read_all(b"a,\"b\nc\"", 10)[0].2, None);
        // An escape character right before the end leaves the quote open.
        let escaped = Dialect {
            escape: Some(b'\\'),
            ..dialect()
        };
        let rows = read_with(b"a,\"b\\\"", escaped, 3, 10);
        assert!(matches!(
            rows[0].2,
            Some(Flaw::UnterminatedQuote { field: 1, .. })
        ));
        let rows = read_with(b"\"a\\\"b\",c\n", escaped, 3, 10);
        assert_eq!(rows[0].3, strings(&["a\"b", "c"]));
        assert_eq!(rows[0].2, None);
    }

    #[test]
    fn text_after_a_closing_quote_is_a_flaw() {
        let text = b"a,b\n\"ab\"c,d\n1,\"x\"\"y\"\nz,\"He said \"hi\" twice\"\n\"ok\",\"\"\n";
        let rows = read_all(text, 10);
        assert_eq!(rows[1].2, Some(Flaw::TextAfterQuote { field: 0 }));
        // What csv-core makes of it: the quote is gone, hence the flaw.
        assert_eq!(rows[1].3, strings(&["abc", "d"]));
        assert_eq!(rows[2].2, None);
        assert_eq!(rows[2].3, strings(&["1", "x\"y"]));
        assert_eq!(rows[3].2, Some(Flaw::TextAfterQuote { field: 1 }));
        assert_eq!(rows[4], (5, 44, None, strings(&["ok", ""])));
    }

    #[test]
    fn nul_bytes_trailing_delimiters_and_ragged_records_are_kept_as_read() {
        let rows = read_all(b"a,b,c\n1,2\n1,2,3,4\nx\0y,,\n5,6,\n", 10);
        let counts: Vec<usize> = rows.iter().map(|r| r.3.len()).collect();
        assert_eq!(counts, [3, 2, 4, 3, 3]);
        assert_eq!(rows[3].3, strings(&["x\0y", "", ""]));
        assert_eq!(rows[4].3, strings(&["5", "6", ""]));
        assert!(rows.iter().all(|r| r.2.is_none()));
    }

    #[test]
    fn blank_lines_are_skipped_and_counted() {
        let text = b"\n\na\r\n\r\nb\n\n";
        let mut reader = RecordReader::new(&text[..], dialect());
        let mut records = Records::default();
        assert_eq!(reader.read_batch(&mut records, 10).unwrap(), 2);
        assert_eq!((records.line(0), records.line(1)), (3, 5));
        assert_eq!(reader.read_batch(&mut records, 10).unwrap(), 0);
        assert_eq!(reader.blank_lines(), 4);
    }

    #[test]
    fn the_reader_keeps_a_bom_whatever_the_buffer_size() {
        let rows = read_all(b"\xef\xbb\xbf\"a\",b\n", 10);
        assert_eq!(rows[0].3, ["\u{feff}\"a\"", "b"]);
    }

    #[test]
    fn a_byte_order_mark_is_recognised_and_offsets_can_start_after_it() {
        assert_eq!(utf8_bom_len(b"\xef\xbb\xbfa,b"), 3);
        assert_eq!(utf8_bom_len(b"\xef\xbba,b"), 0);
        assert_eq!(utf8_bom_len(b""), 0);
        let mut reader = RecordReader::new(&b"a\nb\n"[..], dialect()).starting_at(3);
        let mut records = Records::default();
        reader.read_batch(&mut records, 10).unwrap();
        assert_eq!((records.offset(0), records.offset(1)), (3, 5));
    }

    #[test]
    fn a_record_longer_than_the_limit_fails_naming_where_it_starts() {
        let mut text = b"a\nb\n\"".to_vec();
        text.extend(std::iter::repeat_n(b'x', 100_000));
        let mut reader = RecordReader::new(&text[..], dialect()).with_max_record_bytes(50_000);
        let mut records = Records::default();
        let err = reader.read_batch(&mut records, 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().starts_with("line 3 (byte offset 4): "),
            "{err}"
        );
    }

    #[test]
    fn many_fields_and_long_values_grow_buffers() {
        let long = "x".repeat(100_000);
        let wide = (0..500)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let text = format!("{long},{wide}\n");
        let rows = read_with(text.as_bytes(), dialect(), 4096, 1);
        assert_eq!(rows[0].3.len(), 501);
        assert_eq!(rows[0].3[0], long);
        assert_eq!(rows[0].3[500], "499");
    }

    #[test]
    fn sample_mode_leaves_a_cut_record() {
        let text = b"a,b\n1,\"open quote\n2,3";
        let mut reader = RecordReader::new(&text[..], dialect());
        let mut records = Records::default();
        assert_eq!(reader.read_sample_batch(&mut records, 100).unwrap(), 1);
    }
}
