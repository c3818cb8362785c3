//! Pure function calls and their receipts: the memo table behind `weft invoke`.
//!
//! A call is named by its invocation CID. The first call runs the function and records a
//! receipt, signed by the node, in the log; every later call of the same invocation, also after
//! a restart, is a memo hit that returns the recorded outcome without running anything.
//! Receipts are facts: nothing ever deletes one.

use crate::identity::Proof;
use crate::signer::{batch_record, digests_of, PendingReceipt, SignedReceipts, Signer};
use crate::wal::Record;
use cid::Cid;
use ipld_core::ipld::Ipld;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use weft_engine::content::{self, ContentError, Digest, Invocation, Outcome, Receipt};
use weft_engine::hashed_row::HashedRow;
use weft_engine::value::SmolStr;
use weft_engine::Value;
use weft_engine::{ColumnType, Row};
use weft_sql::{RelationProvider, RowSource};

/// A receipt as a caller sees it: its CID, its decoded form, its DAG-CBOR bytes, its invocation
/// and, once the statement that issued it ends, the node's signature proof. Built on demand
/// from the memo's compact [`Entry`].
#[derive(Clone, Debug)]
pub struct StoredReceipt {
    pub cid: Cid,
    pub receipt: Receipt,
    pub invocation: Invocation,
    pub encoded: Vec<u8>,
    pub proof: Option<ReceiptProof>,
    /// When this node first ran the invocation (nanoseconds since the epoch).
    pub first_seen_ns: i64,
    /// The timely worker that ran it (0 outside dataflows).
    pub worker: u32,
}

/// A receipt's signature proof: its own (as read from a log written before receipts were
/// logged in signed batches), or its place in a signed batch.
#[derive(Clone, Debug)]
pub enum ReceiptProof {
    /// A complete proof.
    Own(Box<Proof>),
    /// Leaf `index` of a signed batch.
    InBatch { batch: Arc<crate::identity::SignedBatch>, index: u32 },
}

impl ReceiptProof {
    /// The complete proof (rebuilt from the batch: one pass over it).
    pub fn proof(&self) -> Proof {
        match self {
            ReceiptProof::Own(proof) => proof.as_ref().clone(),
            ReceiptProof::InBatch { batch, index } => batch.proof(*index as usize),
        }
    }
}

impl StoredReceipt {
    /// The complete proof, if the receipt is signed.
    pub fn signed_proof(&self) -> Result<Proof, ContentError> {
        self.proof
            .as_ref()
            .map(ReceiptProof::proof)
            .ok_or_else(|| ContentError::Encoding("receipt is not signed yet".into()))
    }
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos() as i64)
}

/// What the memo keeps of one invocation and its receipt: the call (function and arguments:
/// the memo key), its outcome and metadata, and the digests of the two CIDs (their only
/// variable part) once computed. The receipt's bytes are not kept: they are canonical, so they
/// are written again whenever someone asks for them.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The invocation CID's digest, computed with the receipt's, off the call path (the same
    /// function and arguments always make the same invocation, so the call is the memo key).
    pub invocation: Option<Digest>,
    /// The receipt CID's digest, once the receipt is signed.
    pub receipt: Option<Digest>,
    /// Index of the module and export in the memo's functions.
    pub function: u32,
    pub run: Run,
    /// Index of the issuer's did in the memo's issuers.
    pub issuer: u32,
    pub proof: Option<ReceiptProof>,
}

/// One call as it ran: its arguments and outcome, the fuel and time it took, when and where.
/// The memo's entries, the signer's pending receipts and the log's receipts all carry one.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Run {
    pub args: Box<[Value]>,
    pub out: Outcome,
    pub fuel: u64,
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

/// A memo hash table's hash of a digest: its first eight bytes (digests are uniform).
fn digest_hash(digest: &Digest) -> u64 {
    u64::from_le_bytes(digest[..8].try_into().expect("eight bytes"))
}

/// A memo hash table's hash of a call: the hash of its arguments as a row (see
/// [`HashedRow::hash_of`]) with the function's index folded into the tag's low bits.
///
/// A dataflow reads a table in the order of its rows' hashes, so a function of a table's whole
/// row (or of its one column) is called in the order of this hash, and the memo's index, whose
/// probes start at the tag scaled to the table, is then read front to back instead of at random:
/// on a memo larger than the caches that one miss per call was a sixth of a memo hit's cost. The
/// index only changes the tag's low bits, so calls of different functions on the same arguments
/// lie side by side but are told apart by their tags.
fn call_hash(function: u32, args: &[Value]) -> u64 {
    HashedRow::hash_of(args) ^ (u64::from(function) << 33)
}

/// A hash index of memo entries: an open-addressing table of 64-bit slots, each the high half
/// of its entry's hash (the tag) beside the entry's index, probed linearly from a position taken
/// from the tag. A probe reads one slot array (hashbrown's control bytes and slots lie apart, two
/// cache misses per probe on a large memo), growing never reads the entries again, and most
/// mismatches are rejected without reading them.
#[derive(Default)]
struct EntryIndex {
    /// `tag << 32 | index`, or 0 for an empty slot (tags are odd, so no full slot is 0). The
    /// length is zero or a power of two.
    slots: Vec<u64>,
    len: usize,
}

impl EntryIndex {
    /// The tag of a hash: its high half, made odd.
    fn tag(hash: u64) -> u64 {
        (hash >> 32) | 1
    }

    /// Where a tag's probe starts: the tag scaled to the table's length.
    fn start(tag: u64, length: usize) -> usize {
        ((tag * length as u64) >> 32) as usize
    }

    /// The index of the entry with `hash` that `matches`.
    fn find(&self, hash: u64, mut matches: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let tag = EntryIndex::tag(hash);
        let mask = self.slots.len() - 1;
        let mut position = EntryIndex::start(tag, self.slots.len());
        loop {
            let slot = self.slots[position];
            if slot == 0 {
                return None;
            }
            if slot >> 32 == tag && matches(slot as u32) {
                return Some(slot as u32);
            }
            position = (position + 1) & mask;
        }
    }

    /// Adds entry `index` with `hash`.
    ///
    /// The table grows when three quarters full, and also when an insertion had to probe far
    /// from a home taken by another tag while the table is not yet [`EntryIndex::SPARSEST`]
    /// times larger than its entries. Hashes inserted in ascending order (a table read in hash
    /// order, calling a function on each row) all have homes in the low part of a table sized
    /// for the entries so far, and would pile up into one run that every later insertion walks:
    /// such a table grows to the size of the whole ascending sequence instead.
    fn insert(&mut self, hash: u64, index: u32) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let tag = EntryIndex::tag(hash);
        let probed = self.place(tag << 32 | u64::from(index));
        self.len += 1;
        if probed > EntryIndex::LONG_PROBE
            && self.slots.len() < EntryIndex::SPARSEST * self.len
            && self.slots[EntryIndex::start(tag, self.slots.len())] >> 32 != tag
        {
            self.grow();
        }
    }

    /// Probes longer than this many slots make the table grow (see [`EntryIndex::insert`]).
    const LONG_PROBE: usize = 32;
    /// The most slots per entry that growing on long probes may reach.
    const SPARSEST: usize = 1024;

    /// Makes room for `additional` more entries without growing for them one doubling at a
    /// time.
    fn reserve(&mut self, additional: usize) {
        let mut length = self.slots.len();
        while (self.len + additional) * 4 > length * 3 {
            length = (length * 2).max(16);
        }
        if length > self.slots.len() {
            self.resize(length);
        }
    }

    /// Doubles the table.
    fn grow(&mut self) {
        self.resize((self.slots.len() * 2).max(16));
    }

    /// Moves the entries to a table of `length` slots (a power of two).
    fn resize(&mut self, length: usize) {
        let old = std::mem::replace(&mut self.slots, vec![0; length]);
        for slot in old.into_iter().filter(|slot| *slot != 0) {
            self.place(slot);
        }
    }

    /// Stores `slot` at the first free position from its home, returning how many full slots
    /// it stepped over.
    fn place(&mut self, slot: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut position = EntryIndex::start(slot >> 32, self.slots.len());
        let mut probed = 0;
        while self.slots[position] != 0 {
            position = (position + 1) & mask;
            probed += 1;
        }
        self.slots[position] = slot;
        probed
    }
}

/// Entries per chunk of the memo's storage: growing never moves recorded entries.
const CHUNK_ENTRIES: usize = 1 << 13;

/// A called function: its module and export, and the template of its invocations.
#[derive(Debug)]
pub struct CalledFunction {
    pub module: Cid,
    pub export: String,
    pub template: content::InvocationTemplate,
}

/// Every receipt this node holds, indexed by call (function and arguments: the memo key, which
/// determines the invocation CID) and by receipt CID, with hit and miss counts. Entries are only
/// ever appended: an entry's index names it for good.
#[derive(Default)]
pub struct Memo {
    chunks: Vec<Vec<Entry>>,
    entry_count: usize,
    by_call: EntryIndex,
    by_receipt: EntryIndex,
    functions: Vec<Arc<CalledFunction>>,
    /// Dids of the nodes that issued receipts (this node's, and any found in an old log).
    issuers: Vec<Arc<str>>,
    /// Calls answered from a recorded receipt.
    pub hits: AtomicU64,
    /// Calls that ran.
    pub misses: AtomicU64,
}

impl Memo {
    /// The index of function `export` of `module`, added if new.
    pub fn function_index(&mut self, module: Cid, export: &str) -> Result<u32, ContentError> {
        if let Some(index) = self.find_function(&module, export) {
            return Ok(index);
        }
        let template = content::InvocationTemplate::new(module, export)?;
        self.functions.push(Arc::new(CalledFunction { module, export: export.to_string(), template }));
        Ok((self.functions.len() - 1) as u32)
    }

    /// The index of function `export` of `module`, if it was ever called.
    fn find_function(&self, module: &Cid, export: &str) -> Option<u32> {
        self.functions.iter().position(|called| called.module == *module && called.export == export).map(|i| i as u32)
    }

    /// The index of issuer `did`, added if new.
    pub fn issuer_index(&mut self, did: &str) -> u32 {
        match self.issuers.iter().position(|issuer| &**issuer == did) {
            Some(index) => index as u32,
            None => {
                self.issuers.push(did.into());
                (self.issuers.len() - 1) as u32
            }
        }
    }

    /// The entry recording the call of `function` on `args`, if any.
    pub fn find_call(&self, function: u32, args: &[Value]) -> Option<u32> {
        self.by_call.find(call_hash(function, args), |index| {
            let entry = self.entry(index);
            entry.function == function && *entry.run.args == *args
        })
    }

    fn find_receipt(&self, digest: &Digest) -> Option<u32> {
        self.by_receipt.find(digest_hash(digest), |index| self.entry(index).receipt.as_ref() == Some(digest))
    }

    /// The entry recording the call of `function` on `args`, counted as a memo hit.
    pub fn recall_entry(&self, function: u32, args: &[Value]) -> Option<u32> {
        let index = self.find_call(function, args)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(index)
    }

    /// The recorded outcome of calling `function` on `args`, counted as a memo hit.
    pub fn recall_call(&self, function: u32, args: &[Value]) -> Option<&Outcome> {
        Some(&self.entry(self.recall_entry(function, args)?).run.out)
    }

    /// A receipt by its own CID.
    pub fn receipt(&self, cid: &Cid) -> Option<Result<StoredReceipt, ContentError>> {
        Some(self.stored(self.find_receipt(&content::digest_of(cid)?)?))
    }

    /// Counts a call that had to run.
    pub fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Records an entry, returning its index (the existing entry's, if the call is already
    /// recorded: receipts are facts, the first one stays).
    pub fn record(&mut self, entry: Entry) -> u32 {
        if let Some(index) = self.find_call(entry.function, &entry.run.args) {
            return index;
        }
        let index = self.entry_count as u32;
        let (invocation, receipt) = (entry.invocation, entry.receipt);
        let hash = call_hash(entry.function, &entry.run.args);
        if self.chunks.last().is_none_or(|chunk| chunk.len() == CHUNK_ENTRIES) {
            self.chunks.push(Vec::with_capacity(CHUNK_ENTRIES));
        }
        self.chunks.last_mut().expect("a chunk with room").push(entry);
        self.entry_count += 1;
        self.by_call.insert(hash, index);
        if let (Some(invocation), Some(receipt)) = (invocation, receipt) {
            self.index_digests(index, invocation, receipt);
        }
        index
    }

    /// Sets and indexes entry `index`'s digests (once per entry: when its receipt is signed,
    /// or when it is replayed signed).
    fn index_digests(&mut self, index: u32, invocation: Digest, receipt: Digest) {
        let entry = self.entry_mut(index);
        entry.invocation = Some(invocation);
        entry.receipt = Some(receipt);
        self.by_receipt.insert(digest_hash(&receipt), index);
    }

    /// Entry `index`.
    pub fn entry(&self, index: u32) -> &Entry {
        &self.chunks[index as usize / CHUNK_ENTRIES][index as usize % CHUNK_ENTRIES]
    }

    fn entry_mut(&mut self, index: u32) -> &mut Entry {
        &mut self.chunks[index as usize / CHUNK_ENTRIES][index as usize % CHUNK_ENTRIES]
    }

    /// Every entry, in the order recorded.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.chunks.iter().flatten()
    }

    /// The invocation CID of an entry (computed if it is not signed yet).
    pub fn invocation_cid_of(&self, entry: &Entry) -> Result<Cid, ContentError> {
        match &entry.invocation {
            Some(digest) => Ok(content::cid_of_digest(digest)),
            None => self.functions[entry.function as usize].template.cid(&entry.run.args),
        }
    }

    /// The module and export an entry calls.
    pub fn function_of(&self, entry: &Entry) -> (&Cid, &str) {
        let called = &self.functions[entry.function as usize];
        (&called.module, &called.export)
    }

    /// The did that issued an entry's receipt.
    pub fn issuer_of(&self, entry: &Entry) -> &str {
        &self.issuers[entry.issuer as usize]
    }

    /// The receipt of an entry.
    pub fn receipt_of(&self, entry: &Entry) -> Result<Receipt, ContentError> {
        Ok(entry.run.receipt(self.invocation_cid_of(entry)?, self.issuer_of(entry)))
    }

    /// The receipt CID of an entry (computed if it is not signed yet).
    pub fn receipt_cid_of(&self, entry: &Entry) -> Result<Cid, ContentError> {
        match &entry.receipt {
            Some(digest) => Ok(content::cid_of_digest(digest)),
            None => Ok(content::dag_cbor_cid(&self.receipt_of(entry)?.encode()?)),
        }
    }

    /// Entry `index` as a [`StoredReceipt`].
    pub fn stored(&self, index: u32) -> Result<StoredReceipt, ContentError> {
        let entry = self.entry(index);
        let receipt = self.receipt_of(entry)?;
        let encoded = receipt.encode()?;
        let (module, function) = self.function_of(entry);
        Ok(StoredReceipt {
            cid: content::dag_cbor_cid(&encoded),
            invocation: Invocation { module: *module, function: function.to_string(), args: entry.run.args.to_vec() },
            receipt,
            encoded,
            proof: entry.proof.clone(),
            first_seen_ns: entry.run.first_seen_ns,
            worker: entry.run.worker,
        })
    }

    /// The function with index `function`.
    pub fn function(&self, function: u32) -> &Arc<CalledFunction> {
        &self.functions[function as usize]
    }

    /// The issuer with index `issuer`.
    pub fn issuer(&self, issuer: u32) -> &Arc<str> {
        &self.issuers[issuer as usize]
    }

    /// What signing entry `index`'s receipt needs.
    pub fn pending(&self, index: u32) -> PendingReceipt {
        let entry = self.entry(index);
        PendingReceipt {
            index,
            function: self.function(entry.function).clone(),
            issuer: self.issuer(entry.issuer).clone(),
            run: entry.run.clone(),
        }
    }

    /// Attaches signed batches: each entry's proof and CIDs (their frames are the caller's to
    /// log, see [`crate::signer::take_frames`]).
    pub fn attach(&mut self, signed: Vec<SignedReceipts>) {
        // One growth for all: indexing ten million receipts otherwise re-places the index's
        // slots at every doubling.
        self.by_receipt.reserve(signed.iter().map(|signed| signed.indices.len()).sum());
        for signed in signed {
            for (position, (index, (invocation, receipt))) in signed.indices.iter().zip(&signed.digests).enumerate() {
                self.entry_mut(*index).proof =
                    Some(ReceiptProof::InBatch { batch: signed.batch.clone(), index: position as u32 });
                self.index_digests(*index, *invocation, *receipt);
            }
        }
    }

    /// Records a logged batch (replay): its entries, with proofs from the batch rebuilt from
    /// their receipt CIDs.
    pub fn replay_batch(&mut self, batch: LoggedBatch) -> Result<(), ContentError> {
        let functions: Vec<u32> = batch
            .functions
            .iter()
            .map(|(module, export)| {
                let module = Cid::try_from(module.as_slice()).map_err(|error| ContentError::InvalidCid {
                    text: format!("{module:02x?}"),
                    message: error.to_string(),
                })?;
                self.function_index(module, export)
            })
            .collect::<Result<_, ContentError>>()?;
        let issuer = self.issuer_index(&batch.issuer);
        let leaves: Vec<Vec<u8>> =
            batch.receipts.iter().map(|logged| content::cid_of_digest(&logged.receipt).to_bytes()).collect();
        let signed = Arc::new(crate::identity::SignedBatch::from_signature(&leaves, batch.signature));
        for (position, logged) in batch.receipts.into_iter().enumerate() {
            let function = *functions
                .get(logged.function as usize)
                .ok_or_else(|| ContentError::Encoding(format!("logged receipt names function {}", logged.function)))?;
            self.record(Entry {
                invocation: Some(logged.invocation),
                receipt: Some(logged.receipt),
                function,
                run: logged.run,
                issuer,
                proof: Some(ReceiptProof::InBatch { batch: signed.clone(), index: position as u32 }),
            });
        }
        Ok(())
    }

    /// Records a receipt logged on its own (by versions before batches were logged).
    pub fn replay_single(
        &mut self,
        invocation: &[u8],
        receipt: &[u8],
        proof: Proof,
        first_seen_ns: i64,
        worker: u32,
    ) -> Result<(), ContentError> {
        let decoded_invocation = Invocation::from_ipld(&content::decode(invocation)?)?;
        let decoded = Receipt::from_ipld(&content::decode(receipt)?)?;
        let function = self.function_index(decoded_invocation.module, &decoded_invocation.function)?;
        let issuer = self.issuer_index(&decoded.issuer);
        self.record(Entry {
            invocation: Some(content::sha3_digest(invocation)),
            receipt: Some(content::sha3_digest(receipt)),
            function,
            run: Run {
                args: decoded_invocation.args.into_boxed_slice(),
                out: decoded.out,
                fuel: decoded.fuel,
                duration_us: decoded.duration_us,
                first_seen_ns,
                worker,
            },
            issuer,
            proof: Some(ReceiptProof::Own(Box::new(proof))),
        });
        Ok(())
    }

    /// Log records holding every signed receipt (for a snapshot): each signed batch again as
    /// one record, and each receipt with its own proof as before.
    pub fn snapshot_records(&self) -> Result<Vec<Record>, ContentError> {
        let mut records = Vec::new();
        let mut batches: HashMap<*const crate::identity::SignedBatch, Vec<(u32, u32)>> = HashMap::new();
        let mut order = Vec::new();
        for (index, entry) in self.entries().enumerate() {
            match &entry.proof {
                Some(ReceiptProof::InBatch { batch, index: leaf }) => {
                    let members = batches.entry(Arc::as_ptr(batch)).or_default();
                    if members.is_empty() {
                        order.push((Arc::as_ptr(batch), batch.clone()));
                    }
                    members.push((*leaf, index as u32));
                }
                Some(ReceiptProof::Own(proof)) => {
                    let stored = self.stored(index as u32)?;
                    records.push(Record::Receipt {
                        invocation: stored.invocation.encode()?,
                        receipt: stored.encoded,
                        proof: proof.as_ref().clone(),
                        first_seen_ns: entry.run.first_seen_ns,
                        worker: entry.run.worker,
                    });
                }
                None => {}
            }
        }
        for (pointer, batch) in order {
            let mut members = batches.remove(&pointer).unwrap_or_default();
            members.sort_unstable();
            let mut pending = Vec::with_capacity(members.len());
            let mut digests = Vec::with_capacity(members.len());
            for (_, index) in members {
                let receipt = self.pending(index);
                digests.push(match self.entry(index) {
                    Entry { invocation: Some(invocation), receipt: Some(receipt), .. } => (*invocation, *receipt),
                    _ => digests_of(std::slice::from_ref(&receipt))?[0],
                });
                pending.push(receipt);
            }
            records.push(batch_record(pending, &digests, batch.signature())?);
        }
        Ok(records)
    }

    /// The number of receipts.
    pub fn len(&self) -> usize {
        self.entry_count
    }

    /// Whether the memo holds no receipt.
    pub fn is_empty(&self) -> bool {
        self.entry_count == 0
    }
}

/// Receipts signed (and logged) together: one signature per this many.
pub const RECEIPTS_PER_BATCH: usize = 4096;

/// One signed batch of receipts as logged: the signature over the Merkle root of the receipt
/// CIDs (in order), the functions called, and each receipt's fields. The root and every proof
/// are rebuilt from the receipts when the log is read.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoggedBatch {
    pub issuer: String,
    pub signature: Vec<u8>,
    /// `(module CID bytes, export)`.
    pub functions: Vec<(Vec<u8>, String)>,
    pub receipts: Vec<LoggedReceipt>,
}

impl LoggedBatch {
    /// The batch as bincode with variable-length integers (see [`Record::CompactReceipts`]).
    pub fn encode(&self) -> Result<Vec<u8>, ContentError> {
        use bincode::Options;
        bincode::DefaultOptions::new()
            .serialize(self)
            .map_err(|error| ContentError::Encoding(format!("a receipt batch for the log: {error}")))
    }

    /// A batch written by [`LoggedBatch::encode`].
    pub fn decode(bytes: &[u8]) -> Result<LoggedBatch, ContentError> {
        use bincode::Options;
        bincode::DefaultOptions::new()
            .deserialize(bytes)
            .map_err(|error| ContentError::Encoding(format!("a logged receipt batch: {error}")))
    }
}

/// One receipt of a [`LoggedBatch`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoggedReceipt {
    pub invocation: Digest,
    pub receipt: Digest,
    /// Index into the batch's functions.
    pub function: u32,
    pub run: Run,
}

/// A weft value as JSON.
pub fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) | Value::Timestamp(i) => (*i).into(),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Text(text) => text.as_str().into(),
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
    Functions,
    Invocations,
    Receipts,
    MemoStats,
}

/// A read-only relation in the `weft` schema, computed from the memo at scan time.
#[derive(Debug)]
struct SystemTable {
    relation: SystemRelation,
    memo: Arc<RwLock<Memo>>,
    functions: Arc<RwLock<FunctionCatalog>>,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memo({} receipts)", self.entry_count)
    }
}

fn text(value: impl Into<SmolStr>) -> Value {
    Value::Text(value.into())
}

impl RowSource for SystemTable {
    fn rows(&self) -> Result<Vec<Row>, String> {
        let memo = self.memo.read().map_err(|_| "memo lock poisoned".to_string())?;
        Ok(match self.relation {
            SystemRelation::Functions => self
                .functions
                .read()
                .map_err(|_| "function catalog lock poisoned".to_string())?
                .values()
                .map(|definition| {
                    vec![
                        text(definition.name.clone()),
                        text(crate::functions::module_cid_of(&definition.source).to_string()),
                        text(definition.export.clone()),
                        text(definition.signature_text()),
                    ]
                })
                .collect(),
            SystemRelation::Invocations => memo
                .entries()
                .map(|entry| {
                    let (module, function) = memo.function_of(entry);
                    let args: Vec<serde_json::Value> = entry.run.args.iter().map(value_json).collect();
                    Ok(vec![
                        text(memo.invocation_cid_of(entry)?.to_string()),
                        text("wasm/run"),
                        text(module.to_string()),
                        text(function),
                        text(serde_json::Value::from(args).to_string()),
                        Value::Timestamp(entry.run.first_seen_ns),
                    ])
                })
                .collect::<Result<_, ContentError>>()
                .map_err(|error| error.to_string())?,
            SystemRelation::Receipts => memo
                .entries()
                .map(|entry| {
                    let (out, error) = outcome_json(&entry.run.out);
                    Ok(vec![
                        text(memo.receipt_cid_of(entry)?.to_string()),
                        text(memo.invocation_cid_of(entry)?.to_string()),
                        Value::Bool(error.is_none()),
                        if error.is_none() { text(out.to_string()) } else { Value::Null },
                        error.map_or(Value::Null, |error| Value::Text(error.into())),
                        Value::Int(entry.run.fuel as i64),
                        Value::Int(entry.run.duration_us as i64),
                        Value::Int(i64::from(entry.run.worker)),
                        text(memo.issuer_of(entry)),
                    ])
                })
                .collect::<Result<_, ContentError>>()
                .map_err(|error| error.to_string())?,
            SystemRelation::MemoStats => vec![vec![
                Value::Int(memo.hits.load(Ordering::Relaxed) as i64),
                Value::Int(memo.misses.load(Ordering::Relaxed) as i64),
                Value::Int(memo.len() as i64),
            ]],
        })
    }
}

/// Registers `weft.functions`, `weft.invocations`, `weft.receipts` and `weft.memo_stats`.
pub fn register_system_tables(
    planner: &weft_sql::Planner,
    memo: &Arc<RwLock<Memo>>,
    functions: &Arc<RwLock<FunctionCatalog>>,
) -> Result<(), weft_sql::SqlError> {
    use ColumnType::*;
    type Columns = Vec<(&'static str, ColumnType)>;
    let tables: [(&str, SystemRelation, Columns); 4] = [
        (
            "weft.functions",
            SystemRelation::Functions,
            vec![("name", Text), ("module", Text), ("export", Text), ("signature", Text)],
        ),
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
        let source = Arc::new(SystemTable { relation, memo: memo.clone(), functions: functions.clone() });
        let provider =
            RelationProvider::new(RelationProvider::SYSTEM, false, weft_sql::convert::schema_of(&columns), source);
        planner.register(name, Arc::new(provider))?;
    }
    Ok(())
}

/// Defined functions by name.
pub type FunctionCatalog = std::collections::BTreeMap<String, FunctionDefinition>;

/// `CREATE FUNCTION name(types) RETURNS type LANGUAGE wasm AS 'file' [EXPORT 'f']
/// [WITH (fuel = n, memory_mb = n)] [ON ERROR NULL]`, with the module's bytes (so a restart
/// needs no file).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FunctionDefinition {
    pub name: String,
    pub source: Vec<u8>,
    pub export: String,
    pub params: Vec<ColumnType>,
    pub result: ColumnType,
    pub fuel: u64,
    pub memory_bytes: usize,
    pub on_error_null: bool,
}

impl FunctionDefinition {
    /// `(BIGINT, TEXT) -> TEXT`.
    pub fn signature_text(&self) -> String {
        let params: Vec<&str> = self.params.iter().map(|param| param.sql_name()).collect();
        format!("({}) -> {}", params.join(", "), self.result.sql_name())
    }
}

/// The module CID of WAT or Wasm source (of the binary; the CID of the text if it is not WAT).
pub fn module_cid_of(source: &[u8]) -> Cid {
    match wat::parse_bytes(source) {
        Ok(binary) => content::module_cid(&binary),
        Err(_) => content::module_cid(source),
    }
}

/// A defined Wasm function, called from views and queries: each distinct invocation runs at
/// most once; its receipt is recorded in the memo and queued for the log.
pub struct WasmFunction {
    pub definition: FunctionDefinition,
    pub module: Arc<weft_wasm::LoadedModule>,
    pub runtime: Arc<weft_wasm::Runtime>,
    pub memo: Arc<RwLock<Memo>>,
    /// Signs the receipts of the calls that run.
    pub signer: Arc<Signer>,
    /// This function's index in the memo's functions, and the function.
    pub function_index: u32,
    pub function: Arc<CalledFunction>,
    /// This node's index in the memo's issuers, and its did.
    pub issuer_index: u32,
    pub issuer: Arc<str>,
    /// Held while a missed invocation runs, so two workers never run the same one.
    pub running: Mutex<()>,
}

impl std::fmt::Debug for WasmFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WasmFunction({})", self.definition.name)
    }
}

impl weft_engine::functions::Callable for WasmFunction {
    fn call(&self, args: &[Value]) -> Result<Value, weft_engine::EvalError> {
        if args.iter().any(Value::is_null) {
            return Ok(Value::Null);
        }
        let definition = &self.definition;
        let recall = || self.memo.read().expect("memo lock").recall_call(self.function_index, args).cloned();
        if let Some(out) = recall() {
            return self.finish(out, args);
        }
        let _running = self.running.lock().expect("running lock");
        // Another worker may have run it while this one waited.
        if let Some(out) = recall() {
            return self.finish(out, args);
        }
        let signature = weft_wasm::Signature { params: definition.params.clone(), result: definition.result };
        let limits = weft_wasm::Limits { fuel: definition.fuel, memory_bytes: definition.memory_bytes };
        let (out, fuel, duration_us) =
            match self.runtime.call(&self.module, &definition.export, &signature, args, limits) {
                Ok(output) => (Outcome::Ok(output.value), output.fuel, output.duration_us),
                Err(error) => (Outcome::Error(error.to_string()), 0, 0),
            };
        // A receipt must be encodable: DAG-CBOR has no NaN or infinity, and every argument is
        // part of the invocation.
        if let Some(value) = std::iter::once(&out)
            .filter_map(|out| match out {
                Outcome::Ok(value) => Some(value),
                Outcome::Error(_) => None,
            })
            .chain(args)
            .find(|value| matches!(value, Value::Float(float) if !float.is_finite()))
        {
            return Err(weft_engine::EvalError(format!(
                "function {}: {value:?} cannot be recorded in a receipt (DAG-CBOR has no NaN or infinity)",
                definition.name
            )));
        }
        let run = Run {
            args: args.into(),
            out: out.clone(),
            fuel,
            duration_us,
            first_seen_ns: now_ns(),
            worker: weft_engine::dataflow::current_worker().unwrap_or(0) as u32,
        };
        let entry = Entry {
            invocation: None,
            receipt: None,
            function: self.function_index,
            run: run.clone(),
            issuer: self.issuer_index,
            proof: None,
        };
        {
            // Handed to the signer under the memo's lock: an entry without a receipt is always
            // waiting in the signer, so `Database::invoke` can have it signed by finishing it.
            let mut memo = self.memo.write().expect("memo lock");
            memo.count_miss();
            let index = memo.record(entry);
            self.signer.push(PendingReceipt {
                index,
                function: self.function.clone(),
                issuer: self.issuer.clone(),
                run,
            });
        }
        self.finish(out, args)
    }
}

impl WasmFunction {
    /// The value of an outcome, or the call's error naming
    /// the function and the invocation CID.
    fn finish(&self, out: Outcome, args: &[Value]) -> Result<Value, weft_engine::EvalError> {
        match out {
            Outcome::Ok(value) => Ok(value),
            Outcome::Error(_) if self.definition.on_error_null => Ok(Value::Null),
            Outcome::Error(message) => {
                let cid = self.function.template.cid(args).map(|cid| cid.to_string()).unwrap_or_default();
                Err(weft_engine::EvalError(format!("function {}: {message} (invocation {cid})", self.definition.name)))
            }
        }
    }
}

/// Splits SQL text into statements at semicolons outside quotes and comments.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(open) => {
                current.push(c);
                if c == open {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    current.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            current.push('\n');
                            break;
                        }
                    }
                }
                ';' => {
                    if !current.trim().is_empty() {
                        statements.push(current.trim().to_string());
                    }
                    current.clear();
                }
                c => current.push(c),
            },
        }
    }
    if !current.trim().is_empty() {
        statements.push(current.trim().to_string());
    }
    statements
}

/// The text up to the closing `quote` (a doubled quote is one quote character), consumed.
fn quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, quote: char) -> Option<String> {
    let mut text = String::new();
    loop {
        match chars.next()? {
            c if c == quote && chars.peek() == Some(&quote) => {
                chars.next();
                text.push(quote);
            }
            c if c == quote => return Some(text),
            c => text.push(c),
        }
    }
}

/// Words, quoted strings and punctuation of a function statement.
pub(crate) fn tokens(sql: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            // A string: `'` and its text (quotes doubled inside are one quote).
            chars.next();
            tokens.push(format!("'{}", quoted(&mut chars, '\'').ok_or("unterminated string")?));
        } else if c == '"' {
            // A quoted identifier stays one token, quotes included, its case kept.
            chars.next();
            tokens.push(format!("\"{}\"", quoted(&mut chars, '"').ok_or("unterminated quoted identifier")?));
        } else if c.is_alphanumeric() || c == '_' || c == '.' {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_alphanumeric() || c == '_' || c == '.' {
                    word.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(word);
        } else {
            tokens.push(c.to_string());
            chars.next();
        }
    }
    Ok(tokens)
}

/// A parsed function statement.
pub enum FunctionStatement {
    Create { definition: FunctionDefinition, path: String, or_replace: bool },
    Drop { name: String, if_exists: bool },
}

pub(crate) fn column_type_named(word: &str) -> Result<ColumnType, String> {
    Ok(match word.to_ascii_uppercase().as_str() {
        "BIGINT" | "INT" | "INTEGER" | "INT8" => ColumnType::BigInt,
        "DOUBLE" | "FLOAT" | "FLOAT8" | "REAL" => ColumnType::Double,
        "TEXT" | "VARCHAR" => ColumnType::Text,
        "BYTEA" => ColumnType::Bytea,
        "BOOLEAN" | "BOOL" => ColumnType::Boolean,
        "TIMESTAMP" => ColumnType::Timestamp,
        other => return Err(format!("unknown type {other}")),
    })
}

/// Parses `CREATE [OR REPLACE] FUNCTION ...` or `DROP FUNCTION [IF EXISTS] name`; `None` when
/// the statement is something else.
pub fn parse_function_statement(sql: &str) -> Option<Result<FunctionStatement, String>> {
    let tokens = tokens(sql).ok()?;
    let upper: Vec<String> = tokens.iter().map(|token| token.to_ascii_uppercase()).collect();
    let word = |index: usize| upper.get(index).map(String::as_str).unwrap_or("");
    match (word(0), word(1), word(2), word(3)) {
        ("DROP", "FUNCTION", "IF", "EXISTS") => {
            Some(Ok(FunctionStatement::Drop { name: tokens.get(4)?.to_lowercase(), if_exists: true }))
        }
        ("DROP", "FUNCTION", ..) => {
            Some(Ok(FunctionStatement::Drop { name: tokens.get(2)?.to_lowercase(), if_exists: false }))
        }
        ("CREATE", "FUNCTION", ..) => Some(parse_create(&tokens, &upper, 2, false)),
        ("CREATE", "OR", "REPLACE", "FUNCTION") => Some(parse_create(&tokens, &upper, 4, true)),
        _ => None,
    }
}

fn parse_create(
    tokens: &[String],
    upper: &[String],
    start: usize,
    or_replace: bool,
) -> Result<FunctionStatement, String> {
    let mut at = start;
    let next = |at: &mut usize| -> Result<(String, String), String> {
        let token = tokens.get(*at).cloned().ok_or("unexpected end of CREATE FUNCTION")?;
        let upper = upper[*at].clone();
        *at += 1;
        Ok((token, upper))
    };
    let expect = |at: &mut usize, word: &str| -> Result<(), String> {
        let (_, found) = next(at)?;
        if found == word {
            Ok(())
        } else {
            Err(format!("expected {word}, found {found}"))
        }
    };
    let string = |at: &mut usize, what: &str| -> Result<String, String> {
        let (token, _) = next(at)?;
        token.strip_prefix('\'').map(str::to_string).ok_or(format!("expected a quoted {what}"))
    };
    let (name, _) = next(&mut at)?;
    let name = name.to_lowercase();
    expect(&mut at, "(")?;
    let mut params = Vec::new();
    loop {
        let (token, upper_token) = next(&mut at)?;
        match upper_token.as_str() {
            ")" => break,
            "," => continue,
            _ => params.push(column_type_named(&token)?),
        }
    }
    expect(&mut at, "RETURNS")?;
    let result = column_type_named(&next(&mut at)?.0)?;
    expect(&mut at, "LANGUAGE")?;
    let (_, language) = next(&mut at)?;
    if language != "WASM" {
        return Err(format!("LANGUAGE {language} is not supported (use LANGUAGE wasm)"));
    }
    expect(&mut at, "AS")?;
    let path = string(&mut at, "module path")?;
    let mut definition = FunctionDefinition {
        export: name.clone(),
        name,
        source: Vec::new(),
        params,
        result,
        fuel: weft_wasm::Limits::default().fuel,
        memory_bytes: weft_wasm::Limits::default().memory_bytes,
        on_error_null: false,
    };
    while at < tokens.len() {
        let (_, clause) = next(&mut at)?;
        match clause.as_str() {
            "EXPORT" => definition.export = string(&mut at, "export name")?,
            "WITH" => {
                expect(&mut at, "(")?;
                loop {
                    let (key, upper_key) = next(&mut at)?;
                    match upper_key.as_str() {
                        ")" => break,
                        "," => continue,
                        _ => {
                            expect(&mut at, "=")?;
                            let (value, _) = next(&mut at)?;
                            let number: u64 =
                                value.parse().map_err(|_| format!("{key} needs a number, got {value}"))?;
                            match upper_key.as_str() {
                                "FUEL" => definition.fuel = number,
                                "MEMORY_MB" => definition.memory_bytes = (number as usize) << 20,
                                _ => return Err(format!("unknown option {key} (use fuel or memory_mb)")),
                            }
                        }
                    }
                }
            }
            "ON" => {
                expect(&mut at, "ERROR")?;
                expect(&mut at, "NULL")?;
                definition.on_error_null = true;
            }
            other => return Err(format!("unexpected {other} in CREATE FUNCTION")),
        }
    }
    Ok(FunctionStatement::Create { definition, path, or_replace })
}

#[cfg(test)]
mod tests {
    use super::EntryIndex;

    #[test]
    fn entry_index_finds_every_entry_through_growth_and_collisions() {
        let mut index = EntryIndex::default();
        assert_eq!(index.find(7, |_| true), None);
        // Hashes chosen so many share a tag (high half) or a start position.
        let hash = |entry: u32| -> u64 { (u64::from(entry % 97) << 40) | u64::from(entry) };
        for entry in 0..5_000u32 {
            index.insert(hash(entry), entry);
            if entry == 2_500 {
                index.reserve(10_000);
                assert!(index.slots.len() * 3 >= 12_501 * 4);
            }
        }
        for entry in 0..5_000u32 {
            assert_eq!(index.find(hash(entry), |found| found == entry), Some(entry));
        }
        // A hash present with a different entry, and hashes never inserted, are not found.
        assert_eq!(index.find(hash(3), |found| found == 4), None);
        assert_eq!(index.find(u64::MAX, |_| true), None);
        assert!(index.slots.len().is_power_of_two() && index.len * 4 <= index.slots.len() * 3);
    }

    /// How far each entry lies from its home.
    fn distances(index: &EntryIndex) -> Vec<usize> {
        let mask = index.slots.len() - 1;
        (0..index.slots.len())
            .filter(|position| index.slots[*position] != 0)
            .map(|position| {
                (position.wrapping_sub(EntryIndex::start(index.slots[position] >> 32, index.slots.len()))) & mask
            })
            .collect()
    }

    #[test]
    fn entry_index_stays_short_under_ascending_hashes() {
        // The first eighth of an ascending run of hashes (a table read in hash order) would
        // otherwise pile up at the front of a table sized for the entries so far.
        let run = 400_000u64;
        let count = run / 8;
        let mut index = EntryIndex::default();
        for entry in 0..count {
            index.insert(entry * (u64::MAX / run), entry as u32);
        }
        for entry in 0..count {
            assert_eq!(index.find(entry * (u64::MAX / run), |found| found == entry as u32), Some(entry as u32));
        }
        let distances = distances(&index);
        let longest = distances.iter().max().copied().unwrap_or(0);
        let total: usize = distances.iter().sum();
        assert!(longest <= 2 * EntryIndex::LONG_PROBE, "an entry lies {longest} slots from its home");
        assert!(total < count as usize, "entries lie {total} slots from their homes in all");
        assert!(index.slots.len() <= 4 * run as usize, "{} slots for a run of {run}", index.slots.len());
    }
}
