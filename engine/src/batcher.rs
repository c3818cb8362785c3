//! A batcher that sorts its updates once, when a batch is extracted.
//!
//! Differential dataflow's default batcher sorts small chunks as updates arrive and merges them
//! pairwise into ever longer runs, so a bulk load of n rows moves every update about log2(n / 100)
//! times through freshly allocated chunks. weft closes a timestamp right after feeding it (every
//! commit), so nothing is gained by merging early: [`SortBatcher`] appends updates to one vector
//! and, at extraction, sorts it in place by the records' precomputed hashes ([`Prehashed`]),
//! restores the exact `Ord` order where two different records share a hash (a linear check that
//! sorts again only then), consolidates, and hands the ready prefix to the batch builder.
//! Measured with `cargo bench --bench incremental` (see the README).

use crate::dataflow::Time;
use crate::hashed_row::Prehashed;
use differential_dataflow::batcher::merge::Sealer;
use differential_dataflow::batcher::{Batcher, Extract};
use differential_dataflow::difference::Semigroup;
use differential_dataflow::logging::Logger;
use std::marker::PhantomData;
use timely::progress::frontier::{Antichain, AntichainRef};

/// One update of an arrangement: `((key, value), time, diff)`.
type Update<K, V, R> = ((K, V), Time, R);

/// A [`Batcher`] of `((key, value), time, diff)` updates that sorts at extraction; `S` builds the
/// batch from the sorted, consolidated updates.
pub struct SortBatcher<K, V, R, S> {
    /// The containers as they arrived (kept whole: appending them to one vector as they come
    /// would copy every update again each time the vector doubles).
    chunks: Vec<Vec<Update<K, V, R>>>,
    frontier: Antichain<Time>,
    sealer: PhantomData<S>,
}

impl<K, V, R, S> SortBatcher<K, V, R, S> {
    /// An empty batcher (the signature `arrange` expects of a batcher's constructor).
    pub fn new(_logger: Option<Logger>, _operator: usize) -> Self {
        SortBatcher { chunks: Vec::new(), frontier: Antichain::new(), sealer: PhantomData }
    }
}

impl<K, V, R, S> Batcher<Vec<((K, V), Time, R)>> for SortBatcher<K, V, R, S>
where
    K: Ord + Prehashed,
    V: Ord + Prehashed,
    R: Semigroup,
    S: Sealer<Vec<((K, V), Time, R)>>,
{
    fn insert(&mut self, container: &mut Vec<((K, V), Time, R)>) {
        if !container.is_empty() {
            self.chunks.push(std::mem::take(container));
        }
    }
}

impl<K, V, R, S> Extract for SortBatcher<K, V, R, S>
where
    K: Ord + Prehashed,
    V: Ord + Prehashed,
    R: Semigroup,
    S: Sealer<Vec<((K, V), Time, R)>>,
{
    type Time = Time;
    type Output = S::Output;

    fn extract<'a>(&'a mut self, upper: AntichainRef<'_, Time>) -> (Option<S::Output>, AntichainRef<'a, Time>) {
        // Nothing ready (the frontier moved, but not past these updates' times): leave the chunks
        // as they are rather than sorting and copying them now and again at the next call.
        let earliest = self.chunks.iter().flatten().map(|(_, time, _)| *time).min();
        if let Some(earliest) = earliest.filter(|earliest| upper.less_equal(earliest)) {
            self.frontier.clear();
            self.frontier.insert(earliest);
            return (None, self.frontier.borrow());
        }
        let mut updates = match self.chunks.len() {
            0 | 1 => self.chunks.pop().unwrap_or_default(),
            _ => {
                let mut updates = Vec::with_capacity(self.chunks.iter().map(Vec::len).sum());
                for mut chunk in self.chunks.drain(..) {
                    updates.append(&mut chunk);
                }
                updates
            }
        };
        sort(&mut updates);
        consolidate_sorted(&mut updates);
        // Updates at or after `upper` stay (rare: weft closes each timestamp as it feeds it).
        let ready = if updates.iter().all(|(_, time, _)| !upper.less_equal(time)) {
            updates
        } else {
            let (ready, kept): (Vec<_>, Vec<_>) = updates.into_iter().partition(|(_, time, _)| !upper.less_equal(time));
            self.chunks.push(kept);
            ready
        };
        self.frontier.clear();
        if let Some(earliest) = self.chunks.iter().flatten().map(|(_, time, _)| *time).min() {
            self.frontier.insert(earliest);
        }
        let batch = if ready.is_empty() { None } else { S::seal(&mut vec![ready]) };
        (batch, self.frontier.borrow())
    }
}

/// Sorts `updates` by `((key, value), time)`.
fn sort<K: Ord + Prehashed, V: Ord + Prehashed, R>(updates: &mut [((K, V), Time, R)]) {
    // Hashes decide almost every comparison; rows are compared only on equal hashes.
    updates.sort_unstable_by(|left, right| {
        let ((left_key, left_value), left_time, _) = left;
        let ((right_key, right_value), right_time, _) = right;
        (left_key.prehash(), left_value.prehash(), left_time)
            .cmp(&(right_key.prehash(), right_value.prehash(), right_time))
            .then_with(|| (&left.0, left_time).cmp(&(&right.0, right_time)))
    });
    // Two different keys with one hash order by key before value: only then is the order above
    // not `Ord`'s, and a stable sort of nearly sorted data is cheap.
    let ordered = |left: &((K, V), Time, R), right: &((K, V), Time, R)| (&left.0, left.1) <= (&right.0, right.1);
    if !updates.is_sorted_by(ordered) {
        updates.sort_by(|left, right| (&left.0, left.1).cmp(&(&right.0, right.1)));
    }
}

/// Adds up the diffs of equal `(data, time)` pairs of sorted `updates` and drops zeros.
fn consolidate_sorted<D: Eq, R: Semigroup>(updates: &mut Vec<(D, Time, R)>) {
    let mut write = 0;
    for read in 0..updates.len() {
        if write > 0 && updates[write - 1].0 == updates[read].0 && updates[write - 1].1 == updates[read].1 {
            let (written, unread) = updates.split_at_mut(read);
            written[write - 1].2.plus_equals(&unread[0].2);
        } else {
            if write > 0 && updates[write - 1].2.is_zero() {
                write -= 1;
            }
            updates.swap(write, read);
            write += 1;
        }
    }
    if write > 0 && updates[write - 1].2.is_zero() {
        write -= 1;
    }
    updates.truncate(write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consolidation_adds_equal_updates_and_drops_zeros() {
        let mut updates = vec![(1, 0, 1isize), (1, 0, -1), (2, 0, 1), (2, 0, 2), (2, 1, 1), (3, 0, -1), (3, 0, 1)];
        consolidate_sorted(&mut updates);
        assert_eq!(updates, vec![(2, 0, 3), (2, 1, 1)]);
    }

    /// A key whose hash is always the same: its order is its number's.
    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct Colliding(u32);
    impl Prehashed for Colliding {
        fn prehash(&self) -> u64 {
            7
        }
    }
    /// A value whose hash reverses its order.
    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct Reversed(u32);
    impl Prehashed for Reversed {
        fn prehash(&self) -> u64 {
            u64::MAX - self.0 as u64
        }
    }

    #[test]
    fn sorting_restores_ord_when_different_keys_share_a_hash() {
        let mut updates: Vec<((Colliding, Reversed), Time, isize)> =
            (0..20).map(|index| ((Colliding(index % 3), Reversed(index)), (index % 2) as Time, 1)).collect();
        let mut expected = updates.clone();
        expected.sort_by(|left, right| (&left.0, left.1).cmp(&(&right.0, right.1)));
        sort(&mut updates);
        assert_eq!(updates, expected);
    }

    #[test]
    fn sorting_matches_ord() {
        use crate::hashed_row::HashedRow;
        use crate::value::Value;
        let row = |text: &str| HashedRow::new(vec![Value::Text(text.into())]);
        let mut updates: Vec<((HashedRow, HashedRow), Time, isize)> = Vec::new();
        for (index, key) in ["b", "a", "c", "a", "b"].iter().enumerate() {
            updates.push(((row(key), row(&index.to_string())), (index % 2) as Time, 1));
        }
        let mut expected = updates.clone();
        expected.sort_by(|left, right| (&left.0, left.1).cmp(&(&right.0, right.1)));
        sort(&mut updates);
        assert_eq!(updates, expected);
    }
}
