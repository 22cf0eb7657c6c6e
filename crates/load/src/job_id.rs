//! Deterministic BigQuery job ids.
//!
//! A load job's id is a pure function of what the job does, so a retried task (Cloud Run runs
//! the same task index again after a crash) submits the *same* id. BigQuery refuses a second job
//! with an id it has seen (409 duplicate), which turns "did my previous attempt's job run?" into
//! a lookup: get that job and follow it instead of loading the same objects twice.
//!
//! Shape: `sluice_load_<dataset>_<table>[_<partition>]_<hash>[_a<N>]`
//!
//! - `<dataset>_<table>_<partition>`: the destination, sanitised to `[A-Za-z0-9_]` and cut to
//!   [`MAX_READABLE`] characters; only there for people reading job lists.
//! - `<hash>`: the first 32 hex digits (128 bits) of SHA-256 over the job's identity: the full
//!   destination including project and partition decorator, every load option that changes the
//!   result (format, dispositions, schema, partitioning, clustering, CSV options, ...) and the
//!   sorted source objects *with their generations*. A new generation of an object is new data
//!   and gets a new id; the same objects and options always get the same id.
//! - `_a<N>`: added only when the job under the previous id *failed* (a failed load job
//!   writes nothing, so submitting again under the next suffix cannot duplicate data).
//!
//! BigQuery allows letters, digits, `_` and `-`, up to 1,024 characters; ids here stay under 200.

use sha2::{Digest, Sha256};

/// Every id starts with this, so Sluice's jobs are easy to find in job lists.
pub(crate) const PREFIX: &str = "sluice_load";
/// Cap on the human-readable destination part.
pub(crate) const MAX_READABLE: usize = 120;
/// Hex digits of the identity hash kept in the id.
pub(crate) const HASH_HEX_DIGITS: usize = 32;

/// The hex SHA-256 of `identity`, cut to [`HASH_HEX_DIGITS`].
pub(crate) fn identity_hash(identity: &[u8]) -> String {
    let digest = Sha256::digest(identity);
    let mut hex = hex::encode(digest);
    hex.truncate(HASH_HEX_DIGITS);
    hex
}

/// `[A-Za-z0-9_]` only; runs of anything else become one `_`.
pub(crate) fn sanitise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out
}

/// The id for attempt 0: `sluice_load_<readable>_<hash>`. `readable_parts` are the dataset,
/// table and (when present) partition decorator.
pub(crate) fn base_id(readable_parts: &[&str], identity: &[u8]) -> String {
    let mut readable = sanitise(
        &readable_parts
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("_"),
    );
    let trimmed = readable.trim_matches('_');
    if trimmed.len() != readable.len() {
        readable = trimmed.to_string();
    }
    // ASCII only after sanitising, so byte truncation is a char boundary.
    readable.truncate(MAX_READABLE);
    let hash = identity_hash(identity);
    if readable.is_empty() {
        format!("{PREFIX}_{hash}")
    } else {
        format!("{PREFIX}_{readable}_{hash}")
    }
}

/// The id of another job of the same load: `sluice_<kind>_<readable>_<hash>` for the base id
/// `sluice_load_<readable>_<hash>`, e.g. the MERGE (`merge`) and the lineage row (`lineage`) of
/// a load. Same inputs, same ids; the kinds keep them apart.
pub(crate) fn derived_id(base: &str, kind: &str) -> String {
    match base.strip_prefix(PREFIX) {
        Some(rest) => format!("sluice_{kind}{rest}"),
        None => format!("sluice_{kind}_{base}"),
    }
}

/// The staging table of a merge: `_sluice_stage_<table>_<hash>`, with the hash of the load's
/// base id, so a retried task loads into (and finds) the same table. The leading `_` keeps it
/// out of the way in table lists.
pub(crate) fn staging_table(table: &str, base: &str) -> String {
    let hash = base.rsplit('_').next().unwrap_or(base);
    let mut readable = sanitise(table);
    readable.truncate(MAX_READABLE);
    format!("_sluice_stage_{readable}_{hash}")
}

/// The id of the given attempt: the base id for attempt 0, `<base>_a<N>` after that.
pub(crate) fn attempt_id(base: &str, attempt: u32) -> String {
    if attempt == 0 {
        base.to_string()
    } else {
        format!("{base}_a{attempt}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether BigQuery accepts `id` as a job id.
    fn is_valid(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= 1024
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }

    #[test]
    fn shape_is_readable_and_stable() {
        let id = base_id(&["raw", "trips", "20240101"], b"identity");
        assert!(id.starts_with("sluice_load_raw_trips_20240101_"), "{id}");
        let hash = id.rsplit('_').next().unwrap();
        assert_eq!(hash.len(), HASH_HEX_DIGITS);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
        // Same identity, same id; any change, a different id.
        assert_eq!(id, base_id(&["raw", "trips", "20240101"], b"identity"));
        assert_ne!(id, base_id(&["raw", "trips", "20240101"], b"identity2"));
        assert!(is_valid(&id));
    }

    #[test]
    fn known_hash_vector() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(identity_hash(b"abc"), "ba7816bf8f01cfea414140de5dae2223");
    }

    #[test]
    fn sanitises_and_bounds_the_readable_part() {
        let id = base_id(&["my-data.set", "tbl €", ""], b"x");
        assert!(id.starts_with("sluice_load_my_data_set_tbl_"), "{id}");
        assert!(is_valid(&id), "{id}");
        let long = "t".repeat(5000);
        let id = base_id(&["ds", &long], b"x");
        assert!(id.len() <= PREFIX.len() + 1 + MAX_READABLE + 1 + HASH_HEX_DIGITS);
        assert!(is_valid(&id));
        assert_eq!(
            base_id(&["€"], b"x"),
            format!("{PREFIX}_{}", identity_hash(b"x"))
        );
    }

    #[test]
    fn attempts_add_a_suffix_after_the_first() {
        assert_eq!(attempt_id("b", 0), "b");
        assert_eq!(attempt_id("b", 1), "b_a1");
        assert_eq!(attempt_id("b", 12), "b_a12");
    }

    #[test]
    fn derived_ids_share_the_hash() {
        let base = base_id(&["raw", "trips"], b"x");
        let hash = identity_hash(b"x");
        assert_eq!(
            derived_id(&base, "merge"),
            format!("sluice_merge_raw_trips_{hash}")
        );
        assert_eq!(derived_id("other", "lineage"), "sluice_lineage_other");
        assert_eq!(
            staging_table("trips-2024", &base),
            format!("_sluice_stage_trips_2024_{hash}")
        );
        assert!(is_valid(&derived_id(&base, "lineage")));
    }

    #[test]
    fn validity_rules() {
        assert!(!is_valid(""));
        assert!(!is_valid("a.b"));
        assert!(!is_valid(&"a".repeat(1025)));
        assert!(is_valid("a-b_C9"));
    }
}
