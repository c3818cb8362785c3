//! Pure function calls and their receipts: the memo table behind `weft invoke`.
//!
//! A call is named by its invocation CID. The first call runs the function and records a
//! receipt, signed by the node, in the log; every later call of the same invocation, also after
//! a restart, is a memo hit that returns the recorded outcome without running anything.
//! Receipts are facts: nothing ever deletes one.

use crate::identity::Identity;
use cid::Cid;
use ipld_core::ipld::Ipld;
use std::collections::HashMap;
use weft_engine::content::{self, ContentError, Invocation, Outcome, Receipt};
use weft_engine::Value;

/// A receipt as stored: its CID, its decoded form, its DAG-CBOR bytes and the node's signature
/// over the CID.
#[derive(Clone, Debug)]
pub struct StoredReceipt {
    pub cid: Cid,
    pub receipt: Receipt,
    pub invocation: Invocation,
    pub encoded: Vec<u8>,
    pub signature: Vec<u8>,
}

impl StoredReceipt {
    /// Builds, addresses and signs the receipt of `invocation`.
    pub fn issue(invocation: Invocation, receipt: Receipt, identity: &Identity) -> Result<StoredReceipt, ContentError> {
        let encoded = receipt.encode()?;
        let cid = content::dag_cbor_cid(&encoded);
        let signature = identity.sign(&cid.to_bytes());
        Ok(StoredReceipt { cid, receipt, invocation, encoded, signature })
    }

    /// Rebuilds a stored receipt from its logged bytes.
    pub fn decode(invocation: &[u8], receipt: &[u8], signature: Vec<u8>) -> Result<StoredReceipt, ContentError> {
        let invocation = Invocation::from_ipld(&content::decode(invocation)?)?;
        let decoded = Receipt::from_ipld(&content::decode(receipt)?)?;
        Ok(StoredReceipt {
            cid: content::dag_cbor_cid(receipt),
            receipt: decoded,
            invocation,
            encoded: receipt.to_vec(),
            signature,
        })
    }
}

/// Every receipt this node holds, by invocation and by receipt CID, with hit and miss counts.
#[derive(Default)]
pub struct Memo {
    by_invocation: HashMap<Cid, StoredReceipt>,
    invocation_of_receipt: HashMap<Cid, Cid>,
    pub hits: u64,
    pub misses: u64,
}

impl Memo {
    /// The receipt of an invocation, if it ran before.
    pub fn lookup(&self, invocation: &Cid) -> Option<&StoredReceipt> {
        self.by_invocation.get(invocation)
    }

    /// A receipt by its own CID.
    pub fn receipt(&self, cid: &Cid) -> Option<&StoredReceipt> {
        self.by_invocation.get(self.invocation_of_receipt.get(cid)?)
    }

    /// Records a receipt.
    pub fn insert(&mut self, stored: StoredReceipt) {
        self.invocation_of_receipt.insert(stored.cid, stored.receipt.ran);
        self.by_invocation.insert(stored.receipt.ran, stored);
    }

    /// Every stored receipt.
    pub fn receipts(&self) -> impl Iterator<Item = &StoredReceipt> {
        self.by_invocation.values()
    }
}

/// A weft value as JSON.
pub fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) | Value::Timestamp(i) => (*i).into(),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Text(text) => text.clone().into(),
        Value::Bytes(bytes) => bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>().into(),
    }
}

/// IPLD as DAG-JSON: links as `{"/": cid}`, bytes as `{"/": {"bytes": base64}}`.
pub fn dag_json(ipld: &Ipld) -> serde_json::Value {
    use serde_json::json;
    match ipld {
        Ipld::Null => serde_json::Value::Null,
        Ipld::Bool(b) => (*b).into(),
        Ipld::Integer(i) => match i64::try_from(*i) {
            Ok(small) => small.into(),
            Err(_) => i.to_string().into(),
        },
        Ipld::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number),
        Ipld::String(text) => text.clone().into(),
        Ipld::Bytes(bytes) => {
            let encoded = cid::multibase::encode(cid::multibase::Base::Base64, bytes);
            json!({"/": {"bytes": encoded.trim_start_matches('m')}})
        }
        Ipld::List(items) => items.iter().map(dag_json).collect::<Vec<_>>().into(),
        Ipld::Map(map) => map.iter().map(|(key, value)| (key.clone(), dag_json(value))).collect(),
        Ipld::Link(cid) => json!({"/": cid.to_string()}),
    }
}

/// The outcome as the value `weft invoke` prints under `out` (or the error message).
pub fn outcome_json(outcome: &Outcome) -> (serde_json::Value, Option<String>) {
    match outcome {
        Outcome::Ok(value) => (value_json(value), None),
        Outcome::Error(message) => (serde_json::Value::Null, Some(message.clone())),
    }
}
