//! Deterministic, disjoint work assignment across the tasks of an execution.
//!
//! Every strategy first sorts the items by their stable key, so the order a listing returned
//! them in never matters, then asks [`owner_of`] which task owns each sorted position.
//! [`take_share`] (one task's share) and [`partition`] (every task's share at once) are both
//! built on that one function, so they can never disagree.
//!
//! Keys are meant to be unique. Duplicate keys still give a disjoint, complete assignment, and
//! the *keys* each task receives still do not depend on input order; but which of two items
//! with the same key lands on which task follows their input order (the sort is stable), so
//! with duplicates only a stable input order makes the assignment of the items themselves
//! reproducible. A warning is logged when duplicates are seen.

use std::str::FromStr;

/// How items are dealt to tasks. Items are always sorted by their stable key first, so the
/// order a listing returned them in never matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShardStrategy {
    /// Task i takes the i-th contiguous run of the sorted list (sizes differ by at most one).
    Contiguous,
    /// Task i takes sorted items i, i+count, i+2*count, ...
    #[default]
    RoundRobin,
    /// Task i takes items whose stable key hashes (FNV-1a 64) to i mod count: an item keeps its
    /// task when other items are added or removed.
    Hash,
}

impl ShardStrategy {
    /// Every strategy, in the order the CLI lists them.
    pub const ALL: [ShardStrategy; 3] = [
        ShardStrategy::Contiguous,
        ShardStrategy::RoundRobin,
        ShardStrategy::Hash,
    ];

    /// The name [`FromStr`] accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            ShardStrategy::Contiguous => "contiguous",
            ShardStrategy::RoundRobin => "round-robin",
            ShardStrategy::Hash => "hash",
        }
    }
}

impl std::fmt::Display for ShardStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ShardStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        ShardStrategy::ALL
            .into_iter()
            .find(|strategy| strategy.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                format!(
                    "unknown shard strategy {s:?}; expected one of: contiguous, round-robin, hash"
                )
            })
    }
}

/// FNV-1a, 64-bit: tiny, stable across Rust versions and platforms (unlike `DefaultHasher`),
/// which is what an assignment that must agree between tasks and releases needs.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The task that owns the item with `key` at `position` of the key-sorted list of `len` items,
/// when the work is split `count` ways. Panics if `count == 0` or `position >= len`.
pub fn owner_of(
    strategy: ShardStrategy,
    key: &[u8],
    position: usize,
    len: usize,
    count: u32,
) -> u32 {
    assert!(count >= 1, "shard count must be at least 1");
    assert!(
        position < len,
        "position {position} out of range for {len} items"
    );
    let count_usize = count as usize;
    let owner = match strategy {
        ShardStrategy::RoundRobin => position % count_usize,
        ShardStrategy::Hash => (fnv1a64(key) % u64::from(count)) as usize,
        ShardStrategy::Contiguous => {
            // The first `long` tasks take `base + 1` items, the rest `base`.
            let base = len / count_usize;
            let long = len % count_usize;
            let long_span = long * (base + 1);
            if position < long_span {
                position / (base + 1)
            } else {
                // base > 0 here: if base were 0, every position would be < long_span = len.
                long + (position - long_span) / base
            }
        }
    };
    owner as u32
}

/// The items task `index` of `count` owns. `key` must be unique and stable per item.
///
/// The share comes back sorted by key. Panics if `count == 0` or `index >= count` (a validated
/// [`TaskContext`](crate::TaskContext) never has either).
pub fn take_share<T, K, F>(
    items: Vec<T>,
    key: F,
    index: u32,
    count: u32,
    strategy: ShardStrategy,
) -> Vec<T>
where
    K: Ord + AsRef<[u8]>,
    F: Fn(&T) -> K,
{
    assert!(count >= 1, "shard count must be at least 1");
    assert!(
        index < count,
        "task index {index} must be less than count {count}"
    );
    assign(items, key, count, strategy)
        .filter_map(|(owner, item)| (owner == index).then_some(item))
        .collect()
}

/// Every task's share at once: element `i` is what [`take_share`] returns for index `i`.
/// Costs one sort instead of `count`; for local runners, planning output and tests.
pub fn partition<T, K, F>(items: Vec<T>, key: F, count: u32, strategy: ShardStrategy) -> Vec<Vec<T>>
where
    K: Ord + AsRef<[u8]>,
    F: Fn(&T) -> K,
{
    assert!(count >= 1, "shard count must be at least 1");
    let mut shares: Vec<Vec<T>> = (0..count).map(|_| Vec::new()).collect();
    for (owner, item) in assign(items, key, count, strategy) {
        shares[owner as usize].push(item);
    }
    shares
}

/// Sorts by key (stably) and pairs each item with its owner, in key order.
fn assign<T, K, F>(
    items: Vec<T>,
    key: F,
    count: u32,
    strategy: ShardStrategy,
) -> impl Iterator<Item = (u32, T)>
where
    K: Ord + AsRef<[u8]>,
    F: Fn(&T) -> K,
{
    // Compute each key once: keys are often formatted strings.
    let mut keyed: Vec<(K, T)> = items.into_iter().map(|item| (key(&item), item)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let duplicates = keyed.windows(2).filter(|w| w[0].0 == w[1].0).count();
    if duplicates > 0 {
        tracing::warn!(
            duplicates,
            items = keyed.len(),
            "shard keys are not unique; duplicates are assigned by input order"
        );
    }
    let len = keyed.len();
    keyed
        .into_iter()
        .enumerate()
        .map(move |(position, (k, item))| {
            (owner_of(strategy, k.as_ref(), position, len, count), item)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("item-{i:04}")).collect()
    }

    #[test]
    fn parses_names_and_lists_valid_ones() {
        assert_eq!("contiguous".parse(), Ok(ShardStrategy::Contiguous));
        assert_eq!("round-robin".parse(), Ok(ShardStrategy::RoundRobin));
        assert_eq!("Hash".parse(), Ok(ShardStrategy::Hash));
        let err = "roundrobin".parse::<ShardStrategy>().unwrap_err();
        assert!(err.contains("\"roundrobin\""), "{err}");
        for s in ShardStrategy::ALL {
            assert!(err.contains(s.as_str()), "{err}");
            assert_eq!(s.to_string().parse(), Ok(s));
        }
        assert_eq!(ShardStrategy::default(), ShardStrategy::RoundRobin);
    }

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn contiguous_runs_and_sizes() {
        let shares = partition(keys(10), |k| k.clone(), 3, ShardStrategy::Contiguous);
        let sizes: Vec<usize> = shares.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4, 3, 3]);
        assert_eq!(shares[0], keys(10)[0..4]);
        assert_eq!(shares[2], keys(10)[7..10]);
        // More tasks than items: the first tasks take one each, the rest nothing.
        let shares = partition(keys(2), |k| k.clone(), 5, ShardStrategy::Contiguous);
        let sizes: Vec<usize> = shares.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 1, 0, 0, 0]);
    }

    #[test]
    fn round_robin_deals_sorted_items() {
        let mut shuffled = keys(7);
        shuffled.reverse();
        let share = take_share(shuffled, |k| k.clone(), 1, 3, ShardStrategy::RoundRobin);
        assert_eq!(share, ["item-0001", "item-0004"]);
    }

    #[test]
    fn hash_owner_is_fnv_mod_count_and_share_is_sorted() {
        let items = keys(50);
        for index in 0..4 {
            let share = take_share(items.clone(), |k| k.clone(), index, 4, ShardStrategy::Hash);
            let expected: Vec<String> = items
                .iter()
                .filter(|k| fnv1a64(k.as_bytes()) % 4 == u64::from(index))
                .cloned()
                .collect();
            assert_eq!(share, expected);
        }
    }

    #[test]
    fn hash_assignment_survives_added_items() {
        let before = keys(100);
        let mut after = before.clone();
        after.extend((0..37).map(|i| format!("new-{i}")));
        let a = partition(before, |k| k.clone(), 7, ShardStrategy::Hash);
        let b = partition(after, |k| k.clone(), 7, ShardStrategy::Hash);
        for (old, new) in a.iter().zip(&b) {
            assert!(old.iter().all(|k| new.contains(k)));
        }
    }

    #[test]
    fn duplicate_keys_follow_input_order() {
        // (key, id): two items share key "b".
        let items = vec![("b", 1), ("a", 0), ("b", 2), ("c", 3)];
        let shares = partition(items, |i| i.0.to_string(), 4, ShardStrategy::RoundRobin);
        assert_eq!(
            shares,
            [
                vec![("a", 0)],
                vec![("b", 1)],
                vec![("b", 2)],
                vec![("c", 3)]
            ]
        );
    }

    #[test]
    #[should_panic(expected = "must be less than count")]
    fn index_out_of_range_panics() {
        take_share(keys(3), |k| k.clone(), 2, 2, ShardStrategy::RoundRobin);
    }
}
