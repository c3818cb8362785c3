//! Rows carrying their hash, ordered by it: the record type of weft's arrangements.
//!
//! Differential dataflow sorts every update it arranges (joins, reductions, distinct, the
//! tables and the views' outputs), and merges sorted runs again and again as batches grow. An
//! arrangement needs *a* total order consistent with equality, not SQL's: comparing two rows
//! value by value (enum dispatch, `memcmp` for text, and the next column whenever the first ties,
//! as join keys usually do) made sorting the largest cost of a bulk load. A [`HashedRow`]
//! computes a 64-bit hash once and compares by it first, so nearly every comparison is one
//! integer comparison; rows are compared only when their hashes are equal. The same hash routes
//! the row between workers, so exchanging does not hash it again.
//!
//! The hash is `foldhash` with a fixed seed: the same row has the same hash in every worker and
//! every process of a cluster, which exchanging requires. Its order is not a persistent format.

use crate::value::Row;
use std::cmp::Ordering;
use std::hash::{BuildHasher, Hash, Hasher};

/// A row and its hash; ordered by hash, then by the row.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct HashedRow {
    hash: u64,
    row: Row,
}

impl HashedRow {
    /// Hashes `row`.
    pub fn new(row: Row) -> HashedRow {
        HashedRow { hash: foldhash::quality::FixedState::with_seed(0x77ef7).hash_one(&row), row }
    }

    /// The row.
    pub fn row(&self) -> &Row {
        &self.row
    }

    /// The row, giving up the hash.
    pub fn into_row(self) -> Row {
        self.row
    }
}

impl PartialEq for HashedRow {
    fn eq(&self, other: &HashedRow) -> bool {
        self.hash == other.hash && self.row == other.row
    }
}

impl Eq for HashedRow {}

impl PartialOrd for HashedRow {
    fn partial_cmp(&self, other: &HashedRow) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HashedRow {
    fn cmp(&self, other: &HashedRow) -> Ordering {
        self.hash.cmp(&other.hash).then_with(|| self.row.cmp(&other.row))
    }
}

/// Records whose order starts with a 64-bit hash they carry, so a sort can compare hashes
/// before it compares records.
pub trait Prehashed {
    /// The hash the record's order compares first.
    fn prehash(&self) -> u64;
}

impl Prehashed for HashedRow {
    fn prehash(&self) -> u64 {
        self.hash
    }
}

impl Prehashed for () {
    fn prehash(&self) -> u64 {
        0
    }
}

/// Hashes a [`HashedRow`] by the hash it carries: hash maps of hashed rows never hash a row
/// again.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrehashedState;

/// The hasher of [`PrehashedState`]: keeps the one `u64` written to it.
#[derive(Default)]
pub struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is expected; anything else is mixed in rather than lost.
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 ^= hash;
    }
}

impl BuildHasher for PrehashedState {
    type Hasher = PrehashedHasher;
    fn build_hasher(&self) -> PrehashedHasher {
        PrehashedHasher(0)
    }
}

impl Hash for HashedRow {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    #[test]
    fn equal_rows_have_equal_hashes_and_order_is_total() {
        let rows = [
            vec![Value::Int(1), Value::Text("a".into())],
            vec![Value::Int(1), Value::Text("b".into())],
            vec![Value::Null],
            vec![Value::float(-0.0)],
            vec![Value::float(0.0)],
        ];
        let hashed: Vec<HashedRow> = rows.iter().cloned().map(HashedRow::new).collect();
        assert_eq!(hashed[3], hashed[4], "-0.0 and 0.0 are one value");
        assert_ne!(hashed[0], hashed[1]);
        for left in &hashed {
            for right in &hashed {
                assert_eq!(left.cmp(right) == Ordering::Equal, left.row() == right.row());
                assert_eq!(left.cmp(right), right.cmp(left).reverse());
            }
        }
    }
}
