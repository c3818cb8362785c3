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
//!
//! A large batch (a bulk load, a view's first build: millions of updates) is scattered as it
//! arrives into `BUCKETS` buckets by the top bits of its keys' hashes, in fixed-size chunks.
//! The containers it arrived in are then freed at once and reused by the allocator for the next
//! ones, instead of all being held until extraction and copied into one vector as large again:
//! on the virtual machines weft is measured on, touching fresh memory costs more than copying it
//! (about a microsecond per 4 KiB page), so this halves the memory a large batch touches. At
//! extraction each bucket in turn is gathered into one scratch vector, sorted there (in cache)
//! and copied back into the chunks it came from; the buckets, in order, are the sorted chain
//! (a [`Prehashed`] record is ordered by its hash first).

use crate::hashed_row::Prehashed;
use crate::Time;
use differential_dataflow::batcher::merge::Sealer;
use differential_dataflow::batcher::{Batcher, Extract};
use differential_dataflow::difference::Semigroup;
use differential_dataflow::logging::Logger;
use std::marker::PhantomData;
use timely::progress::frontier::{Antichain, AntichainRef};

/// One update of an arrangement: `((key, value), time, diff)`.
type Update<K, V, R> = ((K, V), Time, R);

/// Buckets of a large batch (a power of two).
const BUCKETS: usize = 256;
/// Updates per chunk of a bucket.
const BUCKET_CHUNK: usize = 1024;
/// Updates held from which a batch is scattered into buckets as it arrives.
const BUCKETED_FROM: usize = 1 << 16;

/// A [`Batcher`] of `((key, value), time, diff)` updates that sorts at extraction; `S` builds the
/// batch from the sorted, consolidated updates.
pub struct SortBatcher<K, V, R, S> {
    /// The containers as they arrived (kept whole: appending them to one vector as they come
    /// would copy every update again each time the vector doubles), while few updates are held.
    chunks: Vec<Vec<Update<K, V, R>>>,
    /// Updates in `chunks`.
    held: usize,
    /// Once [`BUCKETED_FROM`] updates are held, every update by the top bits of its key's hash:
    /// each bucket a list of chunks of [`BUCKET_CHUNK`] updates (empty otherwise).
    buckets: Vec<Vec<Vec<Update<K, V, R>>>>,
    frontier: Antichain<Time>,
    sealer: PhantomData<S>,
}

impl<K, V, R, S> SortBatcher<K, V, R, S> {
    /// An empty batcher (the signature `arrange` expects of a batcher's constructor).
    pub fn new(_logger: Option<Logger>, _operator: usize) -> Self {
        SortBatcher {
            chunks: Vec::new(),
            held: 0,
            buckets: Vec::new(),
            frontier: Antichain::new(),
            sealer: PhantomData,
        }
    }
}

impl<K: Prehashed, V, R, S> SortBatcher<K, V, R, S> {
    /// Moves `updates` into their buckets.
    fn scatter(&mut self, updates: impl Iterator<Item = Update<K, V, R>>) {
        for update in updates {
            let bucket = &mut self.buckets[(update.0 .0.prehash() >> (64 - BUCKETS.trailing_zeros())) as usize];
            match bucket.last_mut() {
                Some(chunk) if chunk.len() < BUCKET_CHUNK => chunk.push(update),
                _ => {
                    let mut chunk = Vec::with_capacity(BUCKET_CHUNK);
                    chunk.push(update);
                    bucket.push(chunk);
                }
            }
        }
    }

    /// Every update held, whether in chunks or in buckets.
    fn all(&self) -> impl Iterator<Item = &Update<K, V, R>> {
        self.chunks.iter().chain(self.buckets.iter().flatten()).flatten()
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
        if container.is_empty() {
            return;
        }
        if !self.buckets.is_empty() {
            self.scatter(container.drain(..));
            return;
        }
        self.held += container.len();
        self.chunks.push(std::mem::take(container));
        if self.held >= BUCKETED_FROM {
            self.buckets = (0..BUCKETS).map(|_| Vec::new()).collect();
            for mut chunk in std::mem::take(&mut self.chunks) {
                self.scatter(chunk.drain(..));
            }
            self.held = 0;
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
        let earliest = self.all().map(|(_, time, _)| *time).min();
        if let Some(earliest) = earliest.filter(|earliest| upper.less_equal(earliest)) {
            self.frontier.clear();
            self.frontier.insert(earliest);
            return (None, self.frontier.borrow());
        }
        let (chain, kept) = if self.buckets.is_empty() {
            let mut updates = match self.chunks.len() {
                0 | 1 => self.chunks.pop().unwrap_or_default(),
                _ => {
                    let mut updates = Vec::with_capacity(self.held);
                    for mut chunk in self.chunks.drain(..) {
                        updates.append(&mut chunk);
                    }
                    updates
                }
            };
            sort(&mut updates);
            consolidate_sorted(&mut updates);
            let (ready, kept) = split_ready(updates, upper);
            (vec![ready], kept)
        } else {
            self.extract_buckets(upper)
        };
        self.held = kept.len();
        if !kept.is_empty() {
            self.chunks.push(kept);
        }
        self.frontier.clear();
        if let Some(earliest) = self.all().map(|(_, time, _)| *time).min() {
            self.frontier.insert(earliest);
        }
        let mut chain: Vec<_> = chain.into_iter().filter(|chunk| !chunk.is_empty()).collect();
        let batch = if chain.is_empty() { None } else { S::seal(&mut chain) };
        (batch, self.frontier.borrow())
    }
}

impl<K: Ord + Prehashed, V: Ord + Prehashed, R: Semigroup, S> SortBatcher<K, V, R, S> {
    /// Sorts and consolidates the buckets one at a time: the chain of ready updates (each
    /// bucket's copied back into the chunks it came from) and the updates not yet ready.
    #[allow(clippy::type_complexity)]
    fn extract_buckets(&mut self, upper: AntichainRef<'_, Time>) -> (Vec<Vec<Update<K, V, R>>>, Vec<Update<K, V, R>>) {
        let mut chain = Vec::new();
        let mut kept = Vec::new();
        let mut scratch = Vec::new();
        for bucket in std::mem::take(&mut self.buckets) {
            let mut free = Vec::with_capacity(bucket.len());
            for mut chunk in bucket {
                scratch.append(&mut chunk);
                free.push(chunk);
            }
            sort(&mut scratch);
            consolidate_sorted(&mut scratch);
            let (mut ready, mut later) = split_ready(std::mem::take(&mut scratch), upper);
            kept.append(&mut later);
            let mut drained = ready.drain(..);
            while drained.len() > 0 {
                let mut chunk = free.pop().expect("no more updates out of a bucket than went in");
                chunk.extend(drained.by_ref().take(BUCKET_CHUNK));
                chain.push(chunk);
            }
            drop(drained);
            // Empty, and as large as a bucket: the next one is gathered into it.
            scratch = ready;
        }
        (chain, kept)
    }
}

/// Splits sorted `updates` into those before `upper` (ready) and the rest, kept in order (rare:
/// weft closes each timestamp as it feeds it).
#[allow(clippy::type_complexity)]
fn split_ready<D, R>(
    updates: Vec<(D, Time, R)>,
    upper: AntichainRef<'_, Time>,
) -> (Vec<(D, Time, R)>, Vec<(D, Time, R)>) {
    if updates.iter().all(|(_, time, _)| !upper.less_equal(time)) {
        (updates, Vec::new())
    } else {
        updates.into_iter().partition(|(_, time, _)| !upper.less_equal(time))
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

    /// A number with a hash, ordered by the hash first (as [`Prehashed`] records are).
    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct Spread(u64, u64);
    impl Prehashed for Spread {
        fn prehash(&self) -> u64 {
            self.0
        }
    }
    fn spread(number: u64) -> Spread {
        Spread(number.wrapping_mul(0x9e37_79b9_7f4a_7c15), number)
    }
    type SpreadUpdate = ((Spread, ()), Time, isize);

    /// Seals a chain into the one vector of its updates, in order.
    struct Concatenate;
    impl Sealer<Vec<SpreadUpdate>> for Concatenate {
        type Output = Vec<SpreadUpdate>;
        fn seal(chain: &mut Vec<Vec<SpreadUpdate>>) -> Option<Self::Output> {
            Some(chain.drain(..).flatten().collect())
        }
    }

    /// What a batcher extracts (before `upper`) from `containers`, and the frontier it is left with.
    fn extracted(containers: &[Vec<SpreadUpdate>], upper: Time) -> (Vec<SpreadUpdate>, Vec<Time>) {
        let mut batcher: SortBatcher<Spread, (), isize, Concatenate> = SortBatcher::new(None, 0);
        for container in containers {
            batcher.insert(&mut container.clone());
        }
        let upper = Antichain::from_elem(upper);
        let (batch, frontier) = batcher.extract(upper.borrow());
        (batch.unwrap_or_default(), frontier.to_vec())
    }

    #[test]
    fn large_batches_are_bucketed_and_come_out_sorted_and_consolidated() {
        // Many containers of keys drawn from a range with repeats, at two times, one of them not
        // ready; some updates cancel.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let containers: Vec<Vec<SpreadUpdate>> = (0..300)
            .map(|_| {
                (0..1000)
                    .map(|_| {
                        ((spread(next() % 50_000), ()), (next() % 2) as Time, if next() % 3 == 0 { -1 } else { 1 })
                    })
                    .collect()
            })
            .collect();
        assert!(containers.iter().map(Vec::len).sum::<usize>() > BUCKETED_FROM);
        let mut expected: Vec<SpreadUpdate> = containers.iter().flatten().cloned().collect();
        sort(&mut expected);
        consolidate_sorted(&mut expected);
        expected.retain(|(_, time, _)| *time < 1);
        let (batch, frontier) = extracted(&containers, 1);
        assert_eq!(batch, expected);
        assert_eq!(frontier, vec![1], "the updates at time 1 stay");
        // A batch too small to be bucketed comes out the same way.
        let (small, _) = extracted(&containers[..3], 2);
        let mut expected: Vec<_> = containers[..3].iter().flatten().cloned().collect();
        sort(&mut expected);
        consolidate_sorted(&mut expected);
        assert_eq!(small, expected);
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
