//! Deterministic, disjoint work assignment across the tasks of an execution.

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

impl FromStr for ShardStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let _ = s;
        todo!()
    }
}

/// The items task `index` of `count` owns. `key` must be unique and stable per item.
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
    let _ = (items, key, index, count, strategy);
    todo!()
}
