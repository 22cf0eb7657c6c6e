//! The CSV record splitter (`convert::records`). Invariants, for any bytes and dialect:
//! - reading through a 1..16-byte buffer in small batches gives exactly what one big read gives;
//! - records start at strictly increasing offsets, on a byte that is not a line break, on the
//!   line an independent count of LF / CRLF / lone CR before that offset gives;
//! - only a record holding a quote can have a quoting flaw, and an unterminated quote can only
//!   be the last record;
//! - without quotes, a record's fields joined by the delimiter are the input bytes from its
//!   offset up to a line break or the end;
//! - records without flaws survive a round trip: quoting every field and reading the result
//!   gives the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_extract::internals::{Dialect, Flaw, RecordReader, Records};

#[derive(Debug, PartialEq, Eq)]
struct Rec {
    line: u64,
    offset: u64,
    flaw: Option<Flaw>,
    fields: Vec<Vec<u8>>,
}

fn read(text: &[u8], dialect: Dialect, buffer: usize, batch: usize) -> Vec<Rec> {
    let mut reader =
        RecordReader::new(std::io::BufReader::with_capacity(buffer, text), dialect);
    let mut records = Records::default();
    let mut out = Vec::new();
    while reader.read_batch(&mut records, batch).expect("in-memory input") > 0 {
        for r in 0..records.len() {
            out.push(Rec {
                line: records.line(r),
                offset: records.offset(r),
                flaw: records.flaw(r),
                fields: (0..records.fields(r))
                    .map(|c| records.field(r, c).to_vec())
                    .collect(),
            });
        }
    }
    out
}

/// Line breaks as an editor counts them: LF, CRLF and a lone CR are one each.
fn breaks(bytes: &[u8]) -> u64 {
    let mut n = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\r' || (b == b'\n' && (i == 0 || bytes[i - 1] != b'\r')) {
            n += 1;
        }
    }
    n
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let delimiter = [b',', b';', b'\t', b'|'][usize::from(data[0] & 3)];
    let escape = (data[0] & 4 != 0).then_some(b'\\');
    let batch = 1 + usize::from(data[0] >> 3) % 8;
    let buffer = 1 + usize::from(data[1]) % 16;
    let text = &data[2..];
    let dialect = Dialect {
        delimiter,
        quote: b'"',
        escape,
    };
    let whole = read(text, dialect, 1 << 16, 1 << 16);
    assert_eq!(read(text, dialect, buffer, batch), whole);

    let mut previous: Option<usize> = None;
    for (i, r) in whole.iter().enumerate() {
        let at = usize::try_from(r.offset).unwrap();
        assert!(at < text.len(), "{r:?}");
        assert!(text[at] != b'\r' && text[at] != b'\n', "{r:?}");
        if let Some(p) = previous {
            assert!(at > p, "{r:?}");
        } else {
            assert!(text[..at].iter().all(|&b| b == b'\r' || b == b'\n'));
        }
        previous = Some(at);
        assert_eq!(r.line, 1 + breaks(&text[..at]), "{r:?}");
        if r.flaw.is_some() {
            assert!(text[at..].contains(&b'"'), "{r:?}");
        }
        if matches!(r.flaw, Some(Flaw::UnterminatedQuote { .. })) {
            assert_eq!(i, whole.len() - 1, "{r:?}");
        }
    }

    if !text.contains(&b'"') {
        for r in &whole {
            let at = usize::try_from(r.offset).unwrap();
            let joined = r.fields.join(&[delimiter][..]);
            assert_eq!(&text[at..at + joined.len()], &joined[..], "{r:?}");
            assert!(matches!(text.get(at + joined.len()), None | Some(b'\r' | b'\n')));
        }
    }

    let clean: Vec<&Rec> = whole.iter().filter(|r| r.flaw.is_none()).collect();
    let mut quoted = Vec::new();
    for r in &clean {
        for (j, field) in r.fields.iter().enumerate() {
            if j > 0 {
                quoted.push(delimiter);
            }
            quoted.push(b'"');
            for &b in field {
                if b == b'"' {
                    quoted.push(b'"');
                }
                quoted.push(b);
            }
            quoted.push(b'"');
        }
        quoted.extend_from_slice(b"\r\n");
    }
    let again = read(&quoted, Dialect { escape: None, ..dialect }, 7, 3);
    assert_eq!(again.len(), clean.len());
    for (a, r) in again.iter().zip(&clean) {
        assert_eq!(a.fields, r.fields);
        assert_eq!(a.flaw, None);
    }
});
