//! Pure function calls and their receipts: the memo table behind `weft invoke`.
//!
//! A call is named by its invocation CID. The first call runs the function and records a
//! receipt, signed by the node, in the log; every later call of the same invocation, also after
//! a restart, is a memo hit that returns the recorded outcome without running anything.
//! Receipts are facts: nothing ever deletes one.

use crate::identity::Identity;
use crate::wal::Record;
use cid::Cid;
use ipld_core::ipld::Ipld;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use weft_engine::content::{self, ContentError, Invocation, Outcome, Receipt};
use weft_engine::Value;
use weft_engine::{ColumnType, Row};
use weft_sql::{RelationProvider, RowSource};

/// A receipt as stored: its CID, its decoded form, its DAG-CBOR bytes and the node's signature
/// over the CID.
#[derive(Clone, Debug)]
pub struct StoredReceipt {
    pub cid: Cid,
    pub receipt: Receipt,
    pub invocation: Invocation,
    pub encoded: Vec<u8>,
    pub signature: Vec<u8>,
    /// When this node first ran the invocation (nanoseconds since the epoch).
    pub first_seen_ns: i64,
}

impl StoredReceipt {
    /// Builds, addresses and signs the receipt of `invocation`.
    pub fn issue(invocation: Invocation, receipt: Receipt, identity: &Identity) -> Result<StoredReceipt, ContentError> {
        let encoded = receipt.encode()?;
        let cid = content::dag_cbor_cid(&encoded);
        let signature = identity.sign(&cid.to_bytes());
        let first_seen_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as i64);
        Ok(StoredReceipt { cid, receipt, invocation, encoded, signature, first_seen_ns })
    }

    /// The log record of this receipt.
    pub fn record(&self) -> Result<Record, ContentError> {
        Ok(Record::Receipt {
            invocation: self.invocation.encode()?,
            receipt: self.encoded.clone(),
            signature: self.signature.clone(),
            first_seen_ns: self.first_seen_ns,
        })
    }

    /// Rebuilds a stored receipt from its logged bytes.
    pub fn decode(
        invocation: &[u8],
        receipt: &[u8],
        signature: Vec<u8>,
        first_seen_ns: i64,
    ) -> Result<StoredReceipt, ContentError> {
        let invocation = Invocation::from_ipld(&content::decode(invocation)?)?;
        let decoded = Receipt::from_ipld(&content::decode(receipt)?)?;
        Ok(StoredReceipt {
            cid: content::dag_cbor_cid(receipt),
            receipt: decoded,
            invocation,
            encoded: receipt.to_vec(),
            signature,
            first_seen_ns,
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

/// Which system relation a [`SystemTable`] shows.
#[derive(Clone, Copy, Debug)]
enum SystemRelation {
    Invocations,
    Receipts,
    MemoStats,
}

/// A read-only relation in the `weft` schema, computed from the memo at scan time.
#[derive(Debug)]
struct SystemTable {
    relation: SystemRelation,
    memo: Arc<RwLock<Memo>>,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memo({} receipts)", self.by_invocation.len())
    }
}

fn text(value: impl Into<String>) -> Value {
    Value::Text(value.into())
}

impl RowSource for SystemTable {
    fn rows(&self) -> Result<Vec<Row>, String> {
        let memo = self.memo.read().map_err(|_| "memo lock poisoned".to_string())?;
        Ok(match self.relation {
            SystemRelation::Invocations => memo
                .receipts()
                .map(|stored| {
                    let args: Vec<serde_json::Value> = stored.invocation.args.iter().map(value_json).collect();
                    vec![
                        text(stored.receipt.ran.to_string()),
                        text("wasm/run"),
                        text(stored.invocation.module.to_string()),
                        text(stored.invocation.function.clone()),
                        text(serde_json::Value::from(args).to_string()),
                        Value::Timestamp(stored.first_seen_ns),
                    ]
                })
                .collect(),
            SystemRelation::Receipts => memo
                .receipts()
                .map(|stored| {
                    let (out, error) = outcome_json(&stored.receipt.out);
                    vec![
                        text(stored.cid.to_string()),
                        text(stored.receipt.ran.to_string()),
                        Value::Bool(error.is_none()),
                        if error.is_none() { text(out.to_string()) } else { Value::Null },
                        error.map_or(Value::Null, Value::Text),
                        Value::Int(stored.receipt.fuel as i64),
                        Value::Int(stored.receipt.duration_us as i64),
                        Value::Int(0),
                        text(stored.receipt.issuer.clone()),
                    ]
                })
                .collect(),
            SystemRelation::MemoStats => vec![vec![
                Value::Int(memo.hits as i64),
                Value::Int(memo.misses as i64),
                Value::Int(memo.by_invocation.len() as i64),
            ]],
        })
    }
}

/// Registers `weft.invocations`, `weft.receipts` and `weft.memo_stats` with the planner.
pub fn register_system_tables(planner: &weft_sql::Planner, memo: &Arc<RwLock<Memo>>) -> Result<(), weft_sql::SqlError> {
    use ColumnType::*;
    type Columns = Vec<(&'static str, ColumnType)>;
    let tables: [(&str, SystemRelation, Columns); 3] = [
        (
            "weft.invocations",
            SystemRelation::Invocations,
            vec![
                ("cid", Text),
                ("op", Text),
                ("module", Text),
                ("func", Text),
                ("args", Text),
                ("first_seen", Timestamp),
            ],
        ),
        (
            "weft.receipts",
            SystemRelation::Receipts,
            vec![
                ("cid", Text),
                ("ran", Text),
                ("ok", Boolean),
                ("out", Text),
                ("error", Text),
                ("fuel", BigInt),
                ("duration_us", BigInt),
                ("worker", BigInt),
                ("issuer", Text),
            ],
        ),
        (
            "weft.memo_stats",
            SystemRelation::MemoStats,
            vec![("hits", BigInt), ("misses", BigInt), ("receipts", BigInt)],
        ),
    ];
    for (name, relation, columns) in tables {
        let columns: Vec<(String, ColumnType)> =
            columns.into_iter().map(|(column, column_type)| (column.to_string(), column_type)).collect();
        let source = Arc::new(SystemTable { relation, memo: memo.clone() });
        let provider =
            RelationProvider::new(RelationProvider::SYSTEM, false, weft_sql::convert::schema_of(&columns), source);
        planner.register(name, Arc::new(provider))?;
    }
    Ok(())
}
