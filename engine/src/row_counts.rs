//! A multiset of packed rows: the readable copy of a view's contents.
//!
//! A view's output arrives in batches sorted by the rows' hashes (the order of its arrangement).
//! [`RowCounts`] is an open-addressing table whose probe for a row starts at the row's hash
//! scaled to the table's length, so the table is in hash order too: a view's first batch, which
//! can hold millions of rows, fills the table from front to back instead of writing one random
//! place per row (with a general hash map, a cache and TLB miss per row, the largest cost of
//! building a large view after its memo probes). Collisions probe linearly; a removal shifts the
//! rows after it back, so no tombstones accumulate. At most three quarters of the slots are used.

use crate::hashed_row::{HashedRow, Prehashed};

/// Rows with their (never zero) multiplicities.
#[derive(Debug, Default)]
pub struct RowCounts {
    slots: Vec<Option<(HashedRow, isize)>>,
    len: usize,
}

impl RowCounts {
    /// Where the probe for a row with `hash` starts in a table of `length` slots.
    fn home(hash: u64, length: usize) -> usize {
        ((u128::from(hash) * length as u128) >> 64) as usize
    }

    /// The number of distinct rows.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// The rows and their multiplicities, in hash order (up to collisions).
    pub fn iter(&self) -> impl Iterator<Item = (&HashedRow, isize)> {
        self.slots.iter().flatten().map(|(row, count)| (row, *count))
    }

    /// Makes room for `additional` more rows without growing again.
    pub fn reserve(&mut self, additional: usize) {
        let needed = self.len + additional;
        if needed * 4 <= self.slots.len() * 3 {
            return;
        }
        // Twice the slots when growing row by row; exactly enough for a large batch (a view's
        // first batch of ten million rows faults in 640 MB of slots instead of 800).
        let length = (needed * 4 / 3 + 1).max(self.slots.len() * 2).max(8);
        let old = std::mem::replace(&mut self.slots, (0..length).map(|_| None).collect());
        // The old slots are in hash order (up to wrapping), so this refills the table in order.
        for (row, count) in old.into_iter().flatten() {
            let mut position = RowCounts::home(row.prehash(), length);
            while self.slots[position].is_some() {
                position = (position + 1) % length;
            }
            self.slots[position] = Some((row, count));
        }
    }

    /// Adds `diff` to the multiplicity of `row`, inserting or removing it as the count leaves or
    /// reaches zero.
    pub fn add(&mut self, row: &HashedRow, diff: isize) {
        if diff == 0 {
            return;
        }
        self.reserve(1);
        let length = self.slots.len();
        let mut position = RowCounts::home(row.prehash(), length);
        loop {
            match &mut self.slots[position] {
                None => {
                    self.slots[position] = Some((row.clone(), diff));
                    self.len += 1;
                    return;
                }
                Some((stored, count)) if stored == row => {
                    *count += diff;
                    if *count == 0 {
                        self.remove_at(position);
                    }
                    return;
                }
                Some(_) => position = (position + 1) % length,
            }
        }
    }

    /// Empties slot `position` and shifts back the rows after it that may move closer to home.
    fn remove_at(&mut self, mut hole: usize) {
        let length = self.slots.len();
        self.slots[hole] = None;
        self.len -= 1;
        let mut next = (hole + 1) % length;
        while let Some((row, _)) = &self.slots[next] {
            let home = RowCounts::home(row.prehash(), length);
            // Distances travelled from home (cyclically): the row may fill the hole when the hole
            // lies on its probe path, that is, no farther from its home than where it is now.
            let distance = |from: usize, to: usize| (to + length - from) % length;
            if distance(home, hole) < distance(home, next) {
                self.slots[hole] = self.slots[next].take();
                hole = next;
            }
            next = (next + 1) % length;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use std::collections::HashMap;

    /// Rows whose hashes crowd a few homes: long probe runs, wrapping, and shifts on removal.
    #[test]
    fn counts_match_a_hash_map_through_inserts_updates_and_removals() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        let rows: Vec<HashedRow> = (0..400).map(|value| HashedRow::new(vec![Value::Int(value)])).collect();
        let mut counts = RowCounts::default();
        let mut expected: HashMap<usize, isize> = HashMap::new();
        for step in 0..20_000 {
            let index = next(if step % 1000 < 500 { 400 } else { 40 }) as usize;
            let diff = [-2, -1, 1, 2][next(4) as usize];
            counts.add(&rows[index], diff);
            let count = expected.entry(index).or_default();
            *count += diff;
            if *count == 0 {
                expected.remove(&index);
            }
            if step % 997 == 0 {
                counts.reserve(next(300) as usize);
            }
        }
        assert_eq!(counts.len(), expected.len());
        let mut found: Vec<(usize, isize)> = counts
            .iter()
            .map(|(row, count)| (rows.iter().position(|candidate| candidate == row).expect("a known row"), count))
            .collect();
        found.sort();
        let mut wanted: Vec<(usize, isize)> = expected.into_iter().collect();
        wanted.sort();
        assert_eq!(found, wanted);
        assert!(counts.len() * 4 <= counts.slots.len() * 3);
    }

    #[test]
    fn rows_added_in_hash_order_sit_in_hash_order() {
        let mut rows: Vec<HashedRow> = (0..1000).map(|value| HashedRow::new(vec![Value::Int(value)])).collect();
        rows.sort();
        let mut counts = RowCounts::default();
        counts.reserve(rows.len());
        for row in &rows {
            counts.add(row, 1);
        }
        let stored: Vec<u64> = counts.iter().map(|(row, _)| row.prehash()).collect();
        // In order, but for a probe run wrapping past the end to the front: at most one descent.
        let descents = stored.windows(2).filter(|pair| pair[0] > pair[1]).count();
        assert!(descents <= 1, "{descents} descents in the stored hashes");
        assert!(counts.iter().all(|(_, count)| count == 1) && counts.len() == 1000);
    }
}
