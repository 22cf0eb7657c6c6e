//! Property tests: for every strategy and task counts across 1..=10,000, the shares of all
//! tasks are pairwise disjoint, together are exactly the input (as a multiset), and do not
//! depend on the order the input arrived in.
//!
//! All `count` shares come from `partition`, which is built on the same `assign`/`owner_of`
//! path as `take_share`; `take_share` itself is checked against it for every index when the
//! count is small and for the edge and sampled indices when it is large (calling it 10,000
//! times per case would sort the list 10,000 times and blow the time budget).

use proptest::prelude::*;
use sluice_runtime::shard::{ShardStrategy, partition, take_share};
use std::collections::BTreeMap;

/// An item with a possibly duplicated key and a unique id, so the test can tell apart items
/// that share a key.
type Item = (String, u32);

fn key(item: &Item) -> String {
    item.0.clone()
}

fn counts() -> impl Strategy<Value = u32> {
    prop_oneof![Just(1u32), Just(10_000u32), 1..=16u32, 1..=10_000u32,]
}

/// Item lists of 0..2000 with keys drawn from a range that sometimes produces duplicates, plus
/// a shuffled copy of the same list.
fn item_lists() -> impl Strategy<Value = (Vec<Item>, Vec<Item>)> {
    (0usize..2000, 1u32..100_000)
        .prop_flat_map(|(len, key_space)| prop::collection::vec(0..key_space, len))
        .prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                // Lexicographic, not numeric, order: "k-10" sorts before "k-9".
                .map(|(id, k)| (format!("k-{k}"), id as u32))
                .collect::<Vec<Item>>()
        })
        .prop_flat_map(|items| (Just(items.clone()), Just(items).prop_shuffle()))
}

fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn keys_of(share: &[Item]) -> Vec<String> {
    share.iter().map(|i| i.0.clone()).collect()
}

fn check(items: &[Item], shuffled: &[Item], count: u32, strategy: ShardStrategy, probe: u32) {
    let shares = partition(items.to_vec(), key, count, strategy);
    let shares_shuffled = partition(shuffled.to_vec(), key, count, strategy);
    assert_eq!(shares.len(), count as usize);

    // Coverage + disjointness: every id appears in exactly one share, and the union is the
    // input multiset (ids are unique, so "exactly once" is both properties at once).
    let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
    for (task, share) in shares.iter().enumerate() {
        for item in share {
            if let Some(prev) = seen.insert(item.1, task as u32) {
                panic!("{strategy}: item {item:?} in task {prev} and task {task}");
            }
        }
    }
    let union: Vec<Item> = shares.iter().flatten().cloned().collect();
    assert_eq!(sorted(&union), sorted(items), "{strategy}: union != input");

    // Input order independence. The keys each task gets never depend on it; the items do only
    // when keys are duplicated (documented: duplicates follow input order).
    let unique_keys = {
        let mut k = keys_of(items);
        k.sort();
        k.dedup();
        k.len() == items.len()
    };
    for (a, b) in shares.iter().zip(&shares_shuffled) {
        assert_eq!(
            keys_of(a),
            keys_of(b),
            "{strategy}: keys depend on input order"
        );
        if unique_keys {
            assert_eq!(a, b, "{strategy}: share depends on input order");
        }
    }

    // Each share is sorted by key.
    for share in &shares {
        assert!(share.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    // Balance for the positional strategies.
    if strategy != ShardStrategy::Hash {
        let min = shares.iter().map(Vec::len).min().unwrap();
        let max = shares.iter().map(Vec::len).max().unwrap();
        assert!(max - min <= 1, "{strategy}: sizes {min}..{max}");
    }

    // take_share agrees with partition: every index for small counts, edges + a probe otherwise.
    let indices: Vec<u32> = if count <= 16 {
        (0..count).collect()
    } else {
        vec![0, count - 1, probe % count]
    };
    for index in indices {
        let share = take_share(shuffled.to_vec(), key, index, count, strategy);
        if unique_keys {
            assert_eq!(share, shares[index as usize], "{strategy}: task {index}");
        } else {
            assert_eq!(keys_of(&share), keys_of(&shares[index as usize]));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn shares_are_disjoint_complete_and_order_independent(
        count in counts(),
        (items, shuffled) in item_lists(),
        probe in any::<u32>(),
    ) {
        for strategy in ShardStrategy::ALL {
            check(&items, &shuffled, count, strategy, probe);
        }
    }
}

/// The edges, exhaustively over a few list sizes, independent of proptest's sampling.
#[test]
fn edge_counts_and_sizes() {
    for count in [1u32, 2, 9_999, 10_000] {
        for len in [0usize, 1, 2, 9_999, 10_000, 10_001] {
            let items: Vec<Item> = (0..len).map(|i| (format!("o/{i:07}"), i as u32)).collect();
            let mut shuffled = items.clone();
            shuffled.reverse();
            for strategy in ShardStrategy::ALL {
                check(&items, &shuffled, count, strategy, 7);
            }
        }
    }
}
