//! Rows carrying their hash, packed into a few bytes, ordered by the hash: the record type of
//! weft's arrangements.
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
//! The row itself is stored *packed*: its values encoded one after another into bytes (a tag,
//! then a zigzag varint, the eight bytes of a double, or a length and the text's or bytes'
//! contents), held inline when they fit in 30 bytes, as most keys and narrow rows do, and in one
//! boxed slice otherwise. A `Vec<Value>` row is a separate allocation of 32 bytes per value:
//! arrangements of a million rows spent much of a load allocating, faulting in and freeing
//! those, and every comparison of two equal hashes read two rows scattered across the heap.
//! Packed rows compare as bytes (equal values encode to equal bytes: doubles are already
//! canonical, see [`Value::float`]) and are decoded where an operator needs values.
//!
//! The hash is `foldhash` with a fixed seed over the packed bytes: the same row has the same hash
//! in every worker and every process of a cluster, which exchanging requires. Neither the hash,
//! the order nor the packing is a persistent format.

use crate::value::{Row, SmolStr, Value};
use serde::de::{Deserializer, Error as _, SeqAccess, Visitor};
use serde::ser::Serializer;
use std::cmp::Ordering;
use std::hash::{BuildHasher, Hash, Hasher};

/// Packed rows of at most this many bytes are stored inline.
const INLINE_BYTES: usize = 30;

/// The tags that start each packed value.
mod tag {
    pub const NULL: u8 = 0;
    pub const FALSE: u8 = 1;
    pub const TRUE: u8 = 2;
    pub const INT: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const TEXT: u8 = 5;
    pub const BYTES: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
}

/// The bytes of a packed row: inline when short, boxed otherwise (never boxed when they fit).
#[derive(Clone)]
enum Packed {
    Inline { len: u8, bytes: [u8; INLINE_BYTES] },
    Boxed(Box<[u8]>),
}

impl Packed {
    #[inline]
    fn from_bytes(bytes: &[u8]) -> Packed {
        if bytes.len() <= INLINE_BYTES {
            let mut inline = [0; INLINE_BYTES];
            inline[..bytes.len()].copy_from_slice(bytes);
            Packed::Inline { len: bytes.len() as u8, bytes: inline }
        } else {
            Packed::Boxed(bytes.into())
        }
    }

    #[inline]
    fn as_bytes(&self) -> &[u8] {
        match self {
            Packed::Inline { len, bytes } => &bytes[..*len as usize],
            Packed::Boxed(bytes) => bytes,
        }
    }
}

/// Packs values one by one into a row's bytes, on the stack while they fit inline.
pub struct RowPacker {
    len: usize,
    inline: [u8; INLINE_BYTES],
    spilled: Vec<u8>,
    has_null: bool,
}

impl Default for RowPacker {
    fn default() -> RowPacker {
        RowPacker::new()
    }
}

impl RowPacker {
    /// An empty row.
    pub fn new() -> RowPacker {
        RowPacker { len: 0, inline: [0; INLINE_BYTES], spilled: Vec::new(), has_null: false }
    }

    #[inline]
    fn extend(&mut self, data: &[u8]) {
        if self.spilled.is_empty() {
            if self.len + data.len() <= INLINE_BYTES {
                self.inline[self.len..self.len + data.len()].copy_from_slice(data);
                self.len += data.len();
                return;
            }
            self.spilled.reserve(2 * INLINE_BYTES + data.len());
            self.spilled.extend_from_slice(&self.inline[..self.len]);
        }
        self.spilled.extend_from_slice(data);
    }

    #[inline]
    fn varint(&mut self, mut value: u64) {
        let mut buffer = [0u8; 10];
        let mut length = 0;
        loop {
            let low = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                buffer[length] = low;
                length += 1;
                break;
            }
            buffer[length] = low | 0x80;
            length += 1;
        }
        self.extend(&buffer[..length]);
    }

    #[inline]
    fn tagged_integer(&mut self, tag: u8, value: i64) {
        self.extend(&[tag]);
        self.varint(((value << 1) ^ (value >> 63)) as u64);
    }

    #[inline]
    fn tagged_bytes(&mut self, tag: u8, data: &[u8]) {
        self.extend(&[tag]);
        self.varint(data.len() as u64);
        self.extend(data);
    }

    /// Appends one value.
    #[inline]
    pub fn push(&mut self, value: &Value) {
        match value {
            Value::Null => {
                self.has_null = true;
                self.extend(&[tag::NULL]);
            }
            Value::Bool(false) => self.extend(&[tag::FALSE]),
            Value::Bool(true) => self.extend(&[tag::TRUE]),
            Value::Int(integer) => self.tagged_integer(tag::INT, *integer),
            Value::Timestamp(nanos) => self.tagged_integer(tag::TIMESTAMP, *nanos),
            Value::Float(double) => {
                self.extend(&[tag::FLOAT]);
                self.extend(&double.to_bits().to_le_bytes());
            }
            Value::Text(text) => self.tagged_bytes(tag::TEXT, text.as_bytes()),
            Value::Bytes(bytes) => self.tagged_bytes(tag::BYTES, bytes),
        }
    }

    /// Appends the value of `row` whose packed bytes lie at `span` (see
    /// [`HashedRow::value_spans`]), as bytes.
    #[inline]
    pub fn push_packed(&mut self, row: &HashedRow, span: (usize, usize)) {
        let bytes = &row.packed.as_bytes()[span.0..span.1];
        self.has_null |= bytes[0] == tag::NULL;
        self.extend(bytes);
    }

    /// Whether some value pushed so far is NULL.
    pub fn has_null(&self) -> bool {
        self.has_null
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        if self.spilled.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }

    /// The packed row with its hash.
    #[inline]
    pub fn finish(self) -> HashedRow {
        HashedRow::from_packed_bytes(self.bytes())
    }

    /// The hash the packed row will have, without building it.
    #[inline]
    pub fn hash(&self) -> u64 {
        hash_of_packed(self.bytes())
    }
}

/// The values of a packed row, decoded one by one.
pub struct Values<'a> {
    bytes: &'a [u8],
}

impl<'a> Values<'a> {
    #[inline]
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(*first)
    }

    #[inline]
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    #[inline]
    fn integer(&mut self) -> Option<i64> {
        let zigzag = self.varint()?;
        Some(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64))
    }

    #[inline]
    fn take(&mut self, length: usize) -> Option<&'a [u8]> {
        let (data, rest) = self.bytes.split_at_checked(length)?;
        self.bytes = rest;
        Some(data)
    }

    #[inline]
    fn slice(&mut self) -> Option<&'a [u8]> {
        let length = usize::try_from(self.varint()?).ok()?;
        self.take(length)
    }

    /// The next value, or `None` if the bytes are not a packed value (an unknown tag, a value
    /// cut short, text that is not UTF-8).
    #[inline]
    fn decode(&mut self) -> Option<Value> {
        Some(match self.byte()? {
            tag::NULL => Value::Null,
            tag::FALSE => Value::Bool(false),
            tag::TRUE => Value::Bool(true),
            tag::INT => Value::Int(self.integer()?),
            tag::TIMESTAMP => Value::Timestamp(self.integer()?),
            tag::FLOAT => Value::Float(f64::from_bits(u64::from_le_bytes(self.take(8)?.try_into().ok()?))),
            tag::TEXT => Value::Text(SmolStr::new(std::str::from_utf8(self.slice()?).ok()?)),
            tag::BYTES => Value::Bytes(self.slice()?.to_vec()),
            _ => return None,
        })
    }

    /// Steps over the next value without decoding it.
    #[inline]
    fn skip_value(&mut self) {
        let skipped = match self.byte() {
            Some(tag::INT | tag::TIMESTAMP) => self.varint().map(drop),
            Some(tag::FLOAT) => self.take(8).map(drop),
            Some(tag::TEXT | tag::BYTES) => self.slice().map(drop),
            Some(_) => Some(()),
            None => None,
        };
        skipped.expect("a well-formed packed row");
    }
}

impl Iterator for Values<'_> {
    type Item = Value;

    #[inline]
    fn next(&mut self) -> Option<Value> {
        if self.bytes.is_empty() {
            return None;
        }
        // Every packed row is built by a `RowPacker` or checked when it arrives from elsewhere.
        Some(self.decode().expect("a well-formed packed row"))
    }
}

/// The hash of a packed row's bytes.
#[inline]
fn hash_of_packed(bytes: &[u8]) -> u64 {
    foldhash::quality::FixedState::with_seed(0x77ef7).hash_one(bytes)
}

/// A packed row and its hash; ordered by hash, then by the packed bytes.
#[derive(Clone)]
pub struct HashedRow {
    hash: u64,
    packed: Packed,
}

impl HashedRow {
    /// Packs and hashes `row`.
    pub fn new(row: Row) -> HashedRow {
        HashedRow::from_values(&row)
    }

    /// Packs and hashes the values of a row given by reference.
    pub fn from_values<'a>(values: impl IntoIterator<Item = &'a Value>) -> HashedRow {
        let mut packer = RowPacker::new();
        values.into_iter().for_each(|value| packer.push(value));
        packer.finish()
    }

    fn from_packed_bytes(bytes: &[u8]) -> HashedRow {
        HashedRow { hash: hash_of_packed(bytes), packed: Packed::from_bytes(bytes) }
    }

    /// The hash of the row made of `values`, as [`HashedRow::from_values`] would compute it,
    /// without building the row: a table's rows are stored in this hash's order, so an index
    /// keyed by it is probed in order when a table is read.
    pub fn hash_of<'a>(values: impl IntoIterator<Item = &'a Value>) -> u64 {
        let mut packer = RowPacker::new();
        values.into_iter().for_each(|value| packer.push(value));
        packer.hash()
    }

    /// The row's values, decoded one by one.
    #[inline]
    pub fn values(&self) -> Values<'_> {
        Values { bytes: self.packed.as_bytes() }
    }

    /// The row, decoded.
    #[inline]
    pub fn to_row(&self) -> Row {
        self.values().collect()
    }

    /// Decodes the row's values onto the end of `row`.
    #[inline]
    pub fn decode_into(&self, row: &mut Row) {
        row.extend(self.values());
    }

    /// Where each value's bytes lie in the packed row, written into `spans` (cleared first).
    pub fn value_spans(&self, spans: &mut Vec<(usize, usize)>) {
        spans.clear();
        let bytes = self.packed.as_bytes();
        let mut values = self.values();
        while !values.bytes.is_empty() {
            let start = bytes.len() - values.bytes.len();
            values.skip_value();
            spans.push((start, bytes.len() - values.bytes.len()));
        }
    }

    /// The row of the values at `columns` (in that order), copied as packed bytes without being
    /// decoded; `spans` are this row's [`value_spans`](HashedRow::value_spans).
    pub fn project(&self, columns: &[usize], spans: &[(usize, usize)]) -> RowPacker {
        let mut packer = RowPacker::new();
        for column in columns {
            packer.push_packed(self, spans[*column]);
        }
        packer
    }

    /// The row, decoded, giving up the hash.
    pub fn into_row(self) -> Row {
        self.to_row()
    }
}

impl Default for HashedRow {
    fn default() -> HashedRow {
        HashedRow::from_packed_bytes(&[])
    }
}

impl std::fmt::Debug for HashedRow {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_list().entries(self.values()).finish()
    }
}

impl PartialEq for HashedRow {
    #[inline]
    fn eq(&self, other: &HashedRow) -> bool {
        self.hash == other.hash && self.packed.as_bytes() == other.packed.as_bytes()
    }
}

impl Eq for HashedRow {}

impl PartialOrd for HashedRow {
    #[inline]
    fn partial_cmp(&self, other: &HashedRow) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HashedRow {
    #[inline]
    fn cmp(&self, other: &HashedRow) -> Ordering {
        self.hash.cmp(&other.hash).then_with(|| self.packed.as_bytes().cmp(other.packed.as_bytes()))
    }
}

/// Exchanged between processes as the packed bytes; the receiver checks them and hashes them
/// again, so a malformed or mislabelled row is an error, never a wrong order or a panic later.
impl serde::Serialize for HashedRow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.packed.as_bytes())
    }
}

impl<'de> serde::Deserialize<'de> for HashedRow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<HashedRow, D::Error> {
        let bytes = BytesBuffer::deserialize(deserializer)?;
        if !well_formed(&bytes.0) {
            return Err(D::Error::custom("malformed packed row"));
        }
        Ok(HashedRow::from_packed_bytes(&bytes.0))
    }
}

/// Whether `bytes` are a sequence of packed values: known tags, complete varints, doubles and
/// lengths within the bytes, UTF-8 text.
fn well_formed(bytes: &[u8]) -> bool {
    let mut values = Values { bytes };
    while !values.bytes.is_empty() {
        if values.decode().is_none() {
            return false;
        }
    }
    true
}

/// Packed bytes read back: from a byte string or a sequence of bytes.
struct BytesBuffer(Vec<u8>);

impl<'de> serde::Deserialize<'de> for BytesBuffer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<BytesBuffer, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = BytesBuffer;
            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("packed row bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<BytesBuffer, E> {
                Ok(BytesBuffer(bytes.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<BytesBuffer, E> {
                Ok(BytesBuffer(bytes))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<BytesBuffer, A::Error> {
                let mut bytes = Vec::new();
                while let Some(byte) = sequence.next_element()? {
                    bytes.push(byte);
                }
                Ok(BytesBuffer(bytes))
            }
        }
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

/// Records whose order starts with a 64-bit hash they carry, so a sort can compare hashes
/// before it compares records.
pub trait Prehashed {
    /// The hash the record's order compares first.
    fn prehash(&self) -> u64;
}

impl Prehashed for HashedRow {
    #[inline]
    fn prehash(&self) -> u64 {
        self.hash
    }
}

impl Prehashed for () {
    #[inline]
    fn prehash(&self) -> u64 {
        0
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
                assert_eq!(left.cmp(right) == Ordering::Equal, left.to_row() == right.to_row());
                assert_eq!(left.cmp(right), right.cmp(left).reverse());
            }
        }
    }

    fn sample_rows() -> Vec<Row> {
        let mut rows = vec![
            Vec::new(),
            vec![Value::Null, Value::Bool(false), Value::Bool(true)],
            vec![Value::Text("".into()), Value::Bytes(Vec::new())],
            vec![Value::Text("héllo, wörld".into()), Value::Bytes(vec![0, 255, 128])],
            vec![Value::Text("x".repeat(200).into()), Value::Int(7)],
            vec![Value::Bytes(vec![9; 300])],
            vec![Value::float(f64::NAN), Value::float(-0.0), Value::float(1e300), Value::float(-2.5)],
            vec![Value::Float(-0.0)],
        ];
        for integer in [0, 1, -1, 63, 64, -64, -65, 127, 128, i64::MAX, i64::MIN, i64::MIN + 1, 1 << 40] {
            rows.push(vec![Value::Int(integer), Value::Timestamp(integer.wrapping_neg())]);
        }
        // Rows around the inline limit, one byte at a time.
        for length in 20..40 {
            rows.push(vec![Value::Text("t".repeat(length).into())]);
        }
        rows
    }

    #[test]
    fn packing_round_trips_every_kind_of_value() {
        for row in sample_rows() {
            let hashed = HashedRow::new(row.clone());
            let decoded = hashed.to_row();
            assert_eq!(decoded.len(), row.len(), "{row:?}");
            for (left, right) in decoded.iter().zip(&row) {
                // Bitwise for doubles: -0.0 built without `Value::float` stays -0.0.
                match (left, right) {
                    (Value::Float(a), Value::Float(b)) => assert_eq!(a.to_bits(), b.to_bits()),
                    _ => assert_eq!(left, right),
                }
            }
            let mut appended = vec![Value::Int(1)];
            hashed.decode_into(&mut appended);
            assert_eq!(appended.len(), row.len() + 1);
            assert_eq!(HashedRow::from_values(&row), hashed);
            // Projected as bytes equals packed from the chosen values.
            let mut spans = Vec::new();
            hashed.value_spans(&mut spans);
            assert_eq!(spans.len(), row.len());
            let columns: Vec<usize> = (0..row.len()).rev().chain(0..row.len().min(1)).collect();
            let projected = hashed.project(&columns, &spans);
            assert_eq!(projected.has_null(), columns.iter().any(|column| row[*column].is_null()));
            assert_eq!(projected.finish(), HashedRow::from_values(columns.iter().map(|column| &row[*column])));
        }
    }

    #[test]
    fn packed_equality_is_value_equality() {
        let rows = sample_rows();
        for left in &rows {
            for right in &rows {
                assert_eq!(
                    HashedRow::new(left.clone()) == HashedRow::new(right.clone()),
                    left == right,
                    "{left:?} {right:?}"
                );
            }
        }
        assert!(!RowPacker::default().has_null());
        let mut packer = RowPacker::new();
        packer.push(&Value::Int(1));
        packer.push(&Value::Null);
        assert!(packer.has_null());
    }

    #[test]
    fn malformed_rows_are_refused() {
        let malformed: [&[u8]; 6] = [
            &[99],
            &[tag::FLOAT, 1, 2],
            &[tag::TEXT, 10, b'a'],
            &[tag::TEXT, 1, 0xff],
            &[tag::INT, 0x80],
            &[tag::BYTES],
        ];
        for bytes in malformed {
            let encoded = bincode::serialize(bytes).expect("serializes");
            assert!(bincode::deserialize::<HashedRow>(&encoded).is_err(), "{bytes:?} accepted");
        }
        let good = HashedRow::from_values(&[Value::Int(-5), Value::Text("ok".into())]);
        let encoded = bincode::serialize(good.packed.as_bytes()).expect("serializes");
        assert_eq!(bincode::deserialize::<HashedRow>(&encoded).expect("well formed"), good);
    }

    #[test]
    fn rows_survive_serialization() {
        for row in sample_rows() {
            let hashed = HashedRow::new(row);
            let bytes = bincode::serialize(&hashed).expect("serializes");
            let back: HashedRow = bincode::deserialize(&bytes).expect("deserializes");
            assert_eq!(back, hashed);
            // Any strict prefix of a non-empty row's bytes is malformed.
            let packed = hashed.packed.as_bytes();
            if let Some(cut) = packed.len().checked_sub(1) {
                let truncated = bincode::serialize(&packed[..cut]).expect("serializes");
                let back: Result<HashedRow, _> = bincode::deserialize(&truncated);
                assert!(back.is_err() || back.is_ok_and(|row| row.values().count() < hashed.values().count()));
            }
            let json = serde_json::to_string(&hashed).expect("serializes as JSON");
            let back: HashedRow = serde_json::from_str(&json).expect("deserializes from JSON");
            assert_eq!(back, hashed);
        }
    }
}
