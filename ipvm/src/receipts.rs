//! Receipts as the log keeps them: one run of a call ([`Run`]), the functions runs name
//! ([`CalledFunction`]), and the signed batches they are logged in ([`LoggedRuns`], and the older
//! [`LoggedBatch`]), encoded compactly. Plain data: the memo, the signer and the log all use it,
//! and it uses none of them.

use crate::invocation::{self, ContentError, Digest, Outcome, Receipt};
use cid::Cid;
use weft_ir::Value;

/// One call as it ran: its arguments and outcome, the fuel and time it took, when and where.
/// The memo's entries, the signer's pending receipts and the log's receipts all carry one.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Run {
    /// The arguments.
    pub args: Box<[Value]>,
    /// What the call returned.
    pub out: Outcome,
    /// Fuel it used.
    pub fuel: u64,
    /// How long it took, in microseconds.
    pub duration_us: u64,
    /// When this node first ran the invocation (nanoseconds since the epoch).
    pub first_seen_ns: i64,
    /// The timely worker that ran it (0 outside dataflows).
    pub worker: u32,
}

impl Run {
    /// The receipt of this run of the invocation `ran`, issued by `issuer`.
    pub fn receipt(&self, ran: Cid, issuer: &str) -> Receipt {
        Receipt {
            ran,
            out: self.out.clone(),
            fuel: self.fuel,
            duration_us: self.duration_us,
            issuer: issuer.to_string(),
        }
    }
}

/// A called function: its module and export, and the template of its invocations.
#[derive(Debug)]
pub struct CalledFunction {
    /// The module's CID.
    pub module: Cid,
    /// The exported function.
    pub export: String,
    /// Its invocations, encoded but for their arguments.
    pub template: invocation::InvocationTemplate,
}

/// A logged module CID.
pub fn logged_module(bytes: &[u8]) -> Result<Cid, ContentError> {
    Cid::try_from(bytes)
        .map_err(|error| ContentError::InvalidCid { text: format!("{bytes:02x?}"), message: error.to_string() })
}

/// A logged receipt's function: `position` in its batch's `functions`.
pub fn logged_function<T>(functions: &[T], position: u32) -> Result<&T, ContentError> {
    functions
        .get(position as usize)
        .ok_or_else(|| ContentError::Encoding(format!("logged receipt names function {position}")))
}

/// Receipts signed (and logged) together: one signature per this many.
pub const RECEIPTS_PER_BATCH: usize = 4096;

/// One signed batch of receipts as logged: the signature over the Merkle root of the receipt
/// CIDs (in order), the functions called, and each receipt's fields. The root and every proof
/// are rebuilt from the receipts when the log is read.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoggedBatch {
    /// The did of the node that signed the batch.
    pub issuer: String,
    /// Its signature over the Merkle root of the receipt CIDs.
    pub signature: Vec<u8>,
    /// `(module CID bytes, export)`.
    pub functions: Vec<(Vec<u8>, String)>,
    /// The receipts, in leaf order.
    pub receipts: Vec<LoggedReceipt>,
}

impl LoggedBatch {
    /// The batch as bincode with variable-length integers (see the log's compact receipts record).
    pub fn encode(&self) -> Result<Vec<u8>, ContentError> {
        compact_encode(self)
    }

    /// A batch written by [`LoggedBatch::encode`].
    pub fn decode(bytes: &[u8]) -> Result<LoggedBatch, ContentError> {
        compact_decode(bytes)
    }
}

/// A logged value as bincode with variable-length integers.
fn compact_encode(value: &impl serde::Serialize) -> Result<Vec<u8>, ContentError> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .serialize(value)
        .map_err(|error| ContentError::Encoding(format!("a receipt batch for the log: {error}")))
}

/// A value written by [`compact_encode`].
fn compact_decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ContentError> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .deserialize(bytes)
        .map_err(|error| ContentError::Encoding(format!("a logged receipt batch: {error}")))
}

/// One signed batch of receipts as logged now (the log's receipt runs record): the signature over the
/// Merkle root of the receipt CIDs (in order), the functions called, and each receipt's run
/// with the position of its function. The CIDs are not logged: they follow from the runs (the
/// receipt's bytes are canonical), so reading the log computes them again, and a batch costs
/// about 27 bytes per receipt instead of 91.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoggedRuns {
    /// The did of the node that signed the batch.
    pub issuer: String,
    /// Its signature over the Merkle root of the receipt CIDs.
    pub signature: Vec<u8>,
    /// `(module CID bytes, export)`.
    pub functions: Vec<(Vec<u8>, String)>,
    /// Each receipt's run, with the position of its function, in leaf order.
    pub runs: Vec<(u32, Run)>,
}

impl LoggedRuns {
    /// The batch as bincode with variable-length integers.
    pub fn encode(&self) -> Result<Vec<u8>, ContentError> {
        compact_encode(self)
    }

    /// A batch written by [`LoggedRuns::encode`].
    pub fn decode(bytes: &[u8]) -> Result<LoggedRuns, ContentError> {
        compact_decode(bytes)
    }
}

/// One receipt of a [`LoggedBatch`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoggedReceipt {
    /// The invocation CID's digest.
    pub invocation: Digest,
    /// The receipt CID's digest.
    pub receipt: Digest,
    /// Index into the batch's functions.
    pub function: u32,
    /// The call as it ran.
    pub run: Run,
}
