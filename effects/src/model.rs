//! The effect value and its content address.
//!
//! An effect is `{stream, connector, resource, ability, payload}`. Its CID is CIDv1, dag-cbor
//! codec, sha3-256 multihash over the canonical DAG-CBOR encoding of that map, the same naming
//! weft uses for invocations and receipts. The CID is the effect's idempotency key: a connector
//! that has seen it once never applies it again. A mutation payload is a [`Batch`]: one sink's
//! changes at one point of its sequence, so two equal batches at different points differ.

use cid::Cid;
use ipld_core::ipld::Ipld;
use multihash_codetable::{Code, MultihashDigest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

/// The dag-cbor multicodec.
const DAG_CBOR_CODEC: u64 = 0x71;

/// Which ordered stream an effect travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// Reads of the world; may run concurrently with each other and with mutations.
    Query,
    /// Changes to the world; ordered per resource and applied exactly once.
    Mutation,
}

impl Stream {
    /// `query` or `mutation`.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Query => "query",
            Stream::Mutation => "mutation",
        }
    }
}

/// One SQL value as connectors see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Datum {
    /// SQL NULL.
    Null,
    /// BOOLEAN.
    Bool(bool),
    /// BIGINT.
    Int(i64),
    /// DOUBLE.
    Float(f64),
    /// TEXT.
    Text(String),
    /// BYTEA.
    Bytes(Vec<u8>),
    /// TIMESTAMP, nanoseconds since the Unix epoch (UTC, no zone).
    Timestamp(i64),
}

impl PartialEq for Datum {
    fn eq(&self, other: &Datum) -> bool {
        match (self, other) {
            (Datum::Float(a), Datum::Float(b)) => a.to_bits() == b.to_bits(),
            (Datum::Null, Datum::Null) => true,
            (Datum::Bool(a), Datum::Bool(b)) => a == b,
            (Datum::Int(a), Datum::Int(b)) | (Datum::Timestamp(a), Datum::Timestamp(b)) => a == b,
            (Datum::Text(a), Datum::Text(b)) => a == b,
            (Datum::Bytes(a), Datum::Bytes(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Datum {}

impl Hash for Datum {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Datum::Null => {}
            Datum::Bool(b) => b.hash(state),
            Datum::Int(i) | Datum::Timestamp(i) => i.hash(state),
            Datum::Float(f) => f.to_bits().hash(state),
            Datum::Text(text) => text.hash(state),
            Datum::Bytes(bytes) => bytes.hash(state),
        }
    }
}

impl Datum {
    /// The value as IPLD data (timestamps as integer nanoseconds).
    pub fn to_ipld(&self) -> Ipld {
        match self {
            Datum::Null => Ipld::Null,
            Datum::Bool(b) => Ipld::Bool(*b),
            Datum::Int(i) | Datum::Timestamp(i) => Ipld::Integer(i128::from(*i)),
            Datum::Float(f) => Ipld::Float(*f),
            Datum::Text(text) => Ipld::String(text.clone()),
            Datum::Bytes(bytes) => Ipld::Bytes(bytes.clone()),
        }
    }
}

/// A column's type, as connectors need it to write or read values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnKind {
    /// BOOLEAN.
    Bool,
    /// BIGINT.
    Int,
    /// DOUBLE.
    Float,
    /// TEXT.
    Text,
    /// BYTEA.
    Bytes,
    /// TIMESTAMP.
    Timestamp,
}

/// A named, typed column of a sink's or source's rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// The column's type.
    pub kind: ColumnKind,
}

/// One row's change in multiplicity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// +n inserts the row n times, -n deletes it n times.
    pub diff: i64,
    /// The row's values, in the sink's column order.
    pub row: Vec<Datum>,
}

/// A mutation payload: the changes of one sink at one point of its sequence, retractions first,
/// each group sorted by key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The sink that produced the batch.
    pub sink: String,
    /// The sink's incarnation (its creation time, ns): a sink dropped and created again under
    /// the same name starts a new sequence with new keys.
    pub epoch: u64,
    /// The batch's place in the sink's order (0, 1, 2, ... with no gaps).
    pub sequence: u64,
    /// The engine timestamp the changes happened at (informational: restarts renumber it).
    pub timestamp: u64,
    /// The changes.
    pub changes: Vec<Change>,
}

impl Batch {
    fn to_ipld(&self) -> Ipld {
        let changes = self
            .changes
            .iter()
            .map(|change| {
                Ipld::List(vec![
                    Ipld::Integer(i128::from(change.diff)),
                    Ipld::List(change.row.iter().map(Datum::to_ipld).collect()),
                ])
            })
            .collect();
        Ipld::Map(BTreeMap::from([
            ("sink".to_string(), Ipld::String(self.sink.clone())),
            ("epoch".to_string(), Ipld::Integer(i128::from(self.epoch))),
            ("sequence".to_string(), Ipld::Integer(i128::from(self.sequence))),
            ("changes".to_string(), Ipld::List(changes)),
        ]))
    }
}

/// A managed effect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// The stream it travels on.
    pub stream: Stream,
    /// The connector that executes it: `postgres`, `http`, `files`.
    pub connector: String,
    /// What it reads or changes, e.g. `postgres://127.0.0.1:5432/app/user_stats` (never a secret).
    pub resource: String,
    /// What it does to the resource: `crud/update`, `http/post`, `files/write`, `files/read`, ...
    pub ability: String,
    /// The data it carries.
    pub payload: Batch,
}

impl Effect {
    /// The effect as an IPLD map.
    pub fn to_ipld(&self) -> Ipld {
        Ipld::Map(BTreeMap::from([
            ("stream".to_string(), Ipld::String(self.stream.name().to_string())),
            ("connector".to_string(), Ipld::String(self.connector.clone())),
            ("resource".to_string(), Ipld::String(self.resource.clone())),
            ("ability".to_string(), Ipld::String(self.ability.clone())),
            ("payload".to_string(), self.payload.to_ipld()),
        ]))
    }

    /// The canonical DAG-CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        serde_ipld_dagcbor::to_vec(&self.to_ipld()).expect("IPLD values always encode")
    }

    /// The effect's CID: its idempotency key.
    pub fn cid(&self) -> Cid {
        Cid::new_v1(DAG_CBOR_CODEC, Code::Sha3_256.digest(&self.encode()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effect(sequence: u64, rows: &[i64]) -> Effect {
        Effect {
            stream: Stream::Mutation,
            connector: "files".into(),
            resource: "out.jsonl".into(),
            ability: "files/write".into(),
            payload: Batch {
                sink: "s".into(),
                epoch: 1,
                sequence,
                timestamp: 7,
                changes: rows.iter().map(|value| Change { diff: 1, row: vec![Datum::Int(*value)] }).collect(),
            },
        }
    }

    #[test]
    fn the_cid_names_the_content_and_its_place_but_not_the_timestamp() {
        let first = effect(0, &[1, 2]);
        assert_eq!(first.cid(), effect(0, &[1, 2]).cid());
        assert_ne!(first.cid(), effect(1, &[1, 2]).cid(), "the same changes later are another effect");
        assert_ne!(first.cid(), effect(0, &[1, 3]).cid());
        let mut recreated = effect(0, &[1, 2]);
        recreated.payload.epoch = 2;
        assert_ne!(first.cid(), recreated.cid(), "a sink created again has new keys");
        let mut renumbered = effect(0, &[1, 2]);
        renumbered.payload.timestamp = 99;
        assert_eq!(first.cid(), renumbered.cid(), "a restart renumbers timestamps; keys must not move");
        let text = first.cid().to_string();
        assert!(text.starts_with("bafyrmi"), "dag-cbor + sha3-256 CIDs print as bafyrmi...: {text}");
    }

    #[test]
    fn floats_compare_by_bits() {
        assert_eq!(Datum::Float(f64::NAN), Datum::Float(f64::NAN));
        assert_ne!(Datum::Int(1), Datum::Timestamp(1));
    }
}
