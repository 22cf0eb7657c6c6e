//! The streaming zip reader (`decode::zip`). Two modes, by the first byte:
//! - arbitrary bytes: errors are fine; a member read to its end without error must have the
//!   size and CRC-32 its local header declares (when the header declares them);
//! - archives built from the input (stored or deflated members, with or without a data
//!   descriptor): every member comes back with its exact name and bytes, in order.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use sluice_extract::internals::ZipStream;

fn arbitrary(data: &[u8], skip_odd: bool) {
    let mut zip = ZipStream::new(data);
    for n in 0..1000 {
        let header = match zip.next_member() {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => return,
        };
        if skip_odd && n % 2 == 1 {
            continue;
        }
        let Ok(mut reader) = zip.reader() else { return };
        let mut out = Vec::new();
        if reader.read_to_end(&mut out).is_err() {
            return;
        }
        if let Some(size) = header.uncompressed_size {
            assert_eq!(out.len() as u64, size, "{header:?}");
        }
        if !header.has_descriptor {
            assert_eq!(crc32fast::hash(&out), header.crc32, "{header:?}");
        }
    }
}

fn round_trip(data: &[u8]) {
    // Members: [flags, length, bytes...]; flags bit 0 deflate, bit 1 data descriptor (only
    // with deflate: a stored member with a descriptor cannot be streamed, by design).
    let mut members: Vec<(String, Vec<u8>, bool, bool)> = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 && members.len() < 16 {
        let (flags, len) = (rest[0], usize::from(rest[1]) * 4);
        rest = &rest[2..];
        let take = len.min(rest.len());
        let deflate = flags & 1 != 0;
        let descriptor = deflate && flags & 2 != 0;
        let name = if flags & 4 != 0 {
            format!("dir{}/m{}.csv", members.len(), members.len())
        } else {
            format!("m{}.csv", members.len())
        };
        members.push((name, rest[..take].to_vec(), deflate, descriptor));
        rest = &rest[take..];
    }
    let spec: Vec<(&str, &[u8], bool, bool)> = members
        .iter()
        .map(|(n, d, z, s)| (n.as_str(), d.as_slice(), *z, *s))
        .collect();
    let archive = sluice_testkit::zip(&spec);
    // Through a small buffer too: member boundaries fall anywhere in a read.
    let mut zip = ZipStream::new(std::io::BufReader::with_capacity(7, &archive[..]));
    for (name, bytes, _, _) in &members {
        let header = zip.next_member().expect("own archive").expect("a member");
        assert_eq!(&header.name, name);
        let mut out = Vec::new();
        zip.reader()
            .expect("a reader")
            .read_to_end(&mut out)
            .expect("member bytes");
        assert_eq!(&out, bytes, "{name}");
    }
    assert!(zip.next_member().expect("central directory").is_none());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => arbitrary(rest, false),
        1 => arbitrary(rest, true),
        _ => round_trip(rest),
    }
});
