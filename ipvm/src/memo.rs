//! The memo: every receipt this node holds, found by call (function and arguments, which
//! determine the invocation CID) and by receipt CID. A call that ran is recorded as a compact
//! entry (its run, its function and issuer by index) and handed to the signer; a signed batch
//! keeps its entries' digests and its signature in one place. Entries are only ever appended.
//!
//! The memo is filled from the log when a database opens ([`Memo::replay_runs`] and the older
//! forms) and written back whole by a snapshot ([`Memo::snapshot`]); it knows no log file.

use crate::identity::Proof;
use crate::invocation::{self, ContentError, Digest, Invocation, Outcome, Receipt};
use crate::receipts::{logged_function, logged_module, CalledFunction, LoggedBatch, LoggedRuns, Run};
use crate::signer::{digests_of, encoded_runs, PendingReceipt, SignedReceipts};
use cid::Cid;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use weft_ir::hashed_row::HashedRow;
use weft_ir::Value;

/// A receipt as a snapshot of the memo gives it to the log.
pub enum SnapshotReceipts {
    /// A signed batch's encoded runs (see [`LoggedRuns`]).
    Runs(Vec<u8>),
    /// A receipt with its own proof (logged so by versions before batches).
    Single {
        /// The invocation's DAG-CBOR.
        invocation: Vec<u8>,
        /// The receipt's DAG-CBOR.
        receipt: Vec<u8>,
        /// The node's signature proof of the receipt.
        proof: Proof,
        /// When the invocation first ran (nanoseconds since the epoch).
        first_seen_ns: i64,
        /// The worker that ran it.
        worker: u32,
    },
}

/// A receipt as a caller sees it: its CID, its decoded form, its DAG-CBOR bytes, its invocation
/// and, once the statement that issued it ends, the node's signature proof. Built on demand
/// from the memo's compact [`MemoEntry`].
#[derive(Clone, Debug)]
pub struct StoredReceipt {
    /// The receipt's CID.
    pub cid: Cid,
    /// The receipt.
    pub receipt: Receipt,
    /// The invocation it is the receipt of.
    pub invocation: Invocation,
    /// The receipt's DAG-CBOR.
    pub encoded: Vec<u8>,
    /// The node's signature proof, once signed.
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
    InBatch {
        /// The batch.
        batch: Arc<crate::identity::SignedBatch>,
        /// The receipt's leaf.
        index: u32,
    },
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
/// the memo key), its outcome and metadata, and, once signed, where its batch keeps the digests
/// of its two CIDs (their only variable part) and its proof. The receipt's bytes are not kept:
/// they are canonical, so they are written again whenever someone asks for them.
#[derive(Clone, Debug)]
pub struct MemoEntry {
    /// Index of the module and export in the memo's functions.
    pub function: u32,
    /// Index of the issuer's did in the memo's issuers.
    pub issuer: u32,
    /// The memo's signed batch holding this entry's receipt, or [`MemoEntry::UNSIGNED`].
    batch: u32,
    /// The receipt's leaf in that batch.
    leaf: u32,
    /// The call as it ran.
    pub run: Run,
}

impl MemoEntry {
    /// The batch of an entry whose receipt is not signed yet.
    const UNSIGNED: u32 = u32::MAX;

    /// An entry for `run` of `function`, issued by `issuer`, not signed yet.
    pub fn new(function: u32, issuer: u32, run: Run) -> MemoEntry {
        MemoEntry { function, issuer, batch: MemoEntry::UNSIGNED, leaf: 0, run }
    }

    /// Whether the entry's receipt is signed.
    pub fn is_signed(&self) -> bool {
        self.batch != MemoEntry::UNSIGNED
    }
}

/// Receipts signed together, as the memo keeps them: their entries and `(invocation, receipt)`
/// digests in leaf order, and the signature. An entry names its batch and leaf, so an entry
/// costs eight bytes for all this instead of a proof and two digests of its own.
struct MemoBatch {
    indices: Vec<u32>,
    digests: Vec<(Digest, Digest)>,
    proof: BatchProof,
}

/// How a [`MemoBatch`] is signed.
enum BatchProof {
    /// One signature over the Merkle root of the receipt CIDs.
    Signed(Arc<crate::identity::SignedBatch>),
    /// A receipt signed on its own (a log written before receipts were signed in batches).
    Own(Box<Proof>),
}

/// The memo's index by receipt CID, built when a receipt is first looked up by its CID (most
/// statements never do): it covers the memo's first `batches` batches.
#[derive(Default)]
struct ReceiptIndex {
    index: EntryIndex,
    batches: usize,
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

/// A call as the memo keys it: a function's index and its arguments, with their hash (computed
/// once per call, however often the memo is searched for it).
#[derive(Clone, Copy, Debug)]
pub struct CallKey<'a> {
    /// The function's index in the memo.
    pub function: u32,
    /// The arguments.
    pub args: &'a [Value],
    hash: u64,
}

impl<'a> CallKey<'a> {
    /// The key of calling function `function` on `args`.
    pub fn new(function: u32, args: &'a [Value]) -> CallKey<'a> {
        CallKey { function, args, hash: call_hash(function, args) }
    }

    /// The call's hash (the memo's key; also how calls are shared out among locks).
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

/// Every receipt this node holds, indexed by call (function and arguments: the memo key, which
/// determines the invocation CID) and by receipt CID, with hit and miss counts. Entries are only
/// ever appended: an entry's index names it for good.
#[derive(Default)]
pub struct Memo {
    chunks: Vec<Vec<MemoEntry>>,
    entry_count: usize,
    by_call: EntryIndex,
    /// Every signed batch, in the order signed (or replayed).
    batches: Vec<MemoBatch>,
    by_receipt: Mutex<ReceiptIndex>,
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
        let template = invocation::InvocationTemplate::new(module, export)?;
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

    /// The entry recording `call`, if any.
    pub fn find_call(&self, call: &CallKey) -> Option<u32> {
        self.by_call.find(call.hash, |index| {
            let entry = self.entry(index);
            entry.function == call.function && *entry.run.args == *call.args
        })
    }

    /// The entry whose receipt CID has `digest`, once signed. The batches signed since the last
    /// such lookup are indexed first.
    fn find_receipt(&self, digest: &Digest) -> Option<u32> {
        let mut by_receipt = self.by_receipt.lock().expect("receipt index");
        let ReceiptIndex { index, batches } = &mut *by_receipt;
        let unindexed = &self.batches[*batches..];
        index.reserve(unindexed.iter().map(|batch| batch.indices.len()).sum());
        for batch in unindexed {
            for (entry, (_, receipt)) in batch.indices.iter().zip(&batch.digests) {
                index.insert(digest_hash(receipt), *entry);
            }
        }
        *batches = self.batches.len();
        index.find(digest_hash(digest), |index| {
            self.digests(self.entry(index)).is_some_and(|(_, receipt)| receipt == digest)
        })
    }

    /// The entry recording `call`, counted as a memo hit.
    pub fn recall_entry(&self, call: &CallKey) -> Option<u32> {
        let index = self.find_call(call)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(index)
    }

    /// The recorded outcome of `call`, counted as a memo hit.
    pub fn recall_call(&self, call: &CallKey) -> Option<&Outcome> {
        Some(&self.entry(self.recall_entry(call)?).run.out)
    }

    /// A receipt by its own CID.
    pub fn receipt(&self, cid: &Cid) -> Option<Result<StoredReceipt, ContentError>> {
        Some(self.stored(self.find_receipt(&invocation::digest_of(cid)?)?))
    }

    /// Counts `hits` calls answered from recorded receipts.
    pub fn count_hits(&self, hits: u64) {
        self.hits.fetch_add(hits, Ordering::Relaxed);
    }

    /// Counts a call that had to run.
    pub fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Records an entry, returning its index and whether it is new (if the call is already
    /// recorded, the existing entry: receipts are facts, the first one stays).
    pub fn record(&mut self, entry: MemoEntry) -> (u32, bool) {
        let hash = call_hash(entry.function, &entry.run.args);
        self.record_hashed(entry, hash, None)
    }

    /// Records the entry of a call with key `call` (see [`CallKey`]) that was not in the memo
    /// when it held `absent_at` entries: the memo is only searched again if entries were
    /// recorded since. Returns the entry's index and whether it is new.
    pub fn record_missed(&mut self, entry: MemoEntry, call: &CallKey, absent_at: usize) -> (u32, bool) {
        debug_assert!(call.function == entry.function && *call.args == *entry.run.args);
        self.record_hashed(entry, call.hash, Some(absent_at))
    }

    fn record_hashed(&mut self, entry: MemoEntry, hash: u64, absent_at: Option<usize>) -> (u32, bool) {
        if absent_at != Some(self.entry_count) {
            if let Some(index) = self.find_call(&CallKey { function: entry.function, args: &entry.run.args, hash }) {
                return (index, false);
            }
        }
        let index = self.entry_count as u32;
        if self.chunks.last().is_none_or(|chunk| chunk.len() == CHUNK_ENTRIES) {
            self.chunks.push(Vec::with_capacity(CHUNK_ENTRIES));
        }
        self.chunks.last_mut().expect("a chunk with room").push(entry);
        self.entry_count += 1;
        self.by_call.insert(hash, index);
        (index, true)
    }

    /// Adds a signed batch: entries `indices` with their `(invocation, receipt)` digests, in
    /// leaf order. An entry already signed keeps its first receipt (a log holds each call once).
    fn add_batch(&mut self, indices: Vec<u32>, digests: Vec<(Digest, Digest)>, proof: BatchProof) {
        let number = self.batches.len() as u32;
        for (leaf, index) in indices.iter().enumerate() {
            let entry = self.entry_mut(*index);
            if !entry.is_signed() {
                entry.batch = number;
                entry.leaf = leaf as u32;
            }
        }
        self.batches.push(MemoBatch { indices, digests, proof });
    }

    /// MemoEntry `index`.
    pub fn entry(&self, index: u32) -> &MemoEntry {
        &self.chunks[index as usize / CHUNK_ENTRIES][index as usize % CHUNK_ENTRIES]
    }

    fn entry_mut(&mut self, index: u32) -> &mut MemoEntry {
        &mut self.chunks[index as usize / CHUNK_ENTRIES][index as usize % CHUNK_ENTRIES]
    }

    /// Every entry, in the order recorded.
    pub fn entries(&self) -> impl Iterator<Item = &MemoEntry> {
        self.chunks.iter().flatten()
    }

    /// The digests of an entry's invocation and receipt CIDs, once it is signed.
    pub fn digests(&self, entry: &MemoEntry) -> Option<&(Digest, Digest)> {
        entry.is_signed().then(|| &self.batches[entry.batch as usize].digests[entry.leaf as usize])
    }

    /// An entry's signature proof, once it is signed.
    pub fn proof_of(&self, entry: &MemoEntry) -> Option<ReceiptProof> {
        if !entry.is_signed() {
            return None;
        }
        Some(match &self.batches[entry.batch as usize].proof {
            BatchProof::Signed(batch) => ReceiptProof::InBatch { batch: batch.clone(), index: entry.leaf },
            BatchProof::Own(proof) => ReceiptProof::Own(proof.clone()),
        })
    }

    /// The invocation CID of an entry (computed if it is not signed yet).
    pub fn invocation_cid_of(&self, entry: &MemoEntry) -> Result<Cid, ContentError> {
        match self.digests(entry) {
            Some((invocation, _)) => Ok(invocation::cid_of_digest(invocation)),
            None => self.functions[entry.function as usize].template.cid(&entry.run.args),
        }
    }

    /// The module and export an entry calls.
    pub fn function_of(&self, entry: &MemoEntry) -> (&Cid, &str) {
        let called = &self.functions[entry.function as usize];
        (&called.module, &called.export)
    }

    /// The did that issued an entry's receipt.
    pub fn issuer_of(&self, entry: &MemoEntry) -> &str {
        &self.issuers[entry.issuer as usize]
    }

    /// The receipt of an entry.
    pub fn receipt_of(&self, entry: &MemoEntry) -> Result<Receipt, ContentError> {
        Ok(entry.run.receipt(self.invocation_cid_of(entry)?, self.issuer_of(entry)))
    }

    /// The receipt CID of an entry (computed if it is not signed yet).
    pub fn receipt_cid_of(&self, entry: &MemoEntry) -> Result<Cid, ContentError> {
        match self.digests(entry) {
            Some((_, receipt)) => Ok(invocation::cid_of_digest(receipt)),
            None => Ok(invocation::dag_cbor_cid(&self.receipt_of(entry)?.encode()?)),
        }
    }

    /// MemoEntry `index` as a [`StoredReceipt`].
    pub fn stored(&self, index: u32) -> Result<StoredReceipt, ContentError> {
        let entry = self.entry(index);
        let receipt = self.receipt_of(entry)?;
        let encoded = receipt.encode()?;
        let (module, function) = self.function_of(entry);
        Ok(StoredReceipt {
            cid: invocation::dag_cbor_cid(&encoded),
            invocation: Invocation { module: *module, function: function.to_string(), args: entry.run.args.to_vec() },
            receipt,
            encoded,
            proof: self.proof_of(entry),
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

    /// Attaches signed batches: their digests and signatures (their frames are the caller's to
    /// log, see [`crate::signer::take_frames`]).
    pub fn attach(&mut self, signed: Vec<SignedReceipts>) {
        for signed in signed {
            self.add_batch(signed.indices, signed.digests, BatchProof::Signed(signed.batch));
        }
    }

    /// Records a logged batch (replay): its entries, with proofs from the batch rebuilt from
    /// their receipt CIDs.
    pub fn replay_batch(&mut self, batch: LoggedBatch) -> Result<(), ContentError> {
        let (runs, digests) = batch
            .receipts
            .into_iter()
            .map(|logged| ((logged.function, logged.run), (logged.invocation, logged.receipt)))
            .unzip();
        let LoggedBatch { issuer, signature, functions, .. } = batch;
        self.replay_runs(ReplayedRuns { batch: LoggedRuns { issuer, signature, functions, runs }, digests })
    }

    /// Records a logged batch of runs whose digests were computed again (see
    /// [`ReplayedRuns::prepare`]).
    pub fn replay_runs(&mut self, replayed: ReplayedRuns) -> Result<(), ContentError> {
        let ReplayedRuns { batch, digests } = replayed;
        let functions = self.logged_functions(&batch.functions)?;
        let issuer = self.issuer_index(&batch.issuer);
        let leaves: Vec<Vec<u8>> =
            digests.iter().map(|(_, receipt)| invocation::cid_of_digest(receipt).to_bytes()).collect();
        let signed = Arc::new(crate::identity::SignedBatch::from_signature(&leaves, batch.signature));
        let mut indices = Vec::with_capacity(batch.runs.len());
        for (function, run) in batch.runs {
            let function = *logged_function(&functions, function)?;
            indices.push(self.record(MemoEntry::new(function, issuer, run)).0);
        }
        self.add_batch(indices, digests, BatchProof::Signed(signed));
        Ok(())
    }

    /// The memo's indices of a logged batch's functions (`(module CID bytes, export)`).
    fn logged_functions(&mut self, functions: &[(Vec<u8>, String)]) -> Result<Vec<u32>, ContentError> {
        functions.iter().map(|(module, export)| self.function_index(logged_module(module)?, export)).collect()
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
        let decoded_invocation = Invocation::from_ipld(&invocation::decode(invocation)?)?;
        let decoded = Receipt::from_ipld(&invocation::decode(receipt)?)?;
        let function = self.function_index(decoded_invocation.module, &decoded_invocation.function)?;
        let issuer = self.issuer_index(&decoded.issuer);
        let run = Run {
            args: decoded_invocation.args.into_boxed_slice(),
            out: decoded.out,
            fuel: decoded.fuel,
            duration_us: decoded.duration_us,
            first_seen_ns,
            worker,
        };
        let (index, _) = self.record(MemoEntry::new(function, issuer, run));
        let digests = (invocation::sha3_digest(invocation), invocation::sha3_digest(receipt));
        self.add_batch(vec![index], vec![digests], BatchProof::Own(Box::new(proof)));
        Ok(())
    }

    /// Every receipt as the log keeps it (for a snapshot): each signed batch again as its
    /// encoded runs, and each receipt with its own proof as before.
    pub fn snapshot(&self) -> Result<Vec<SnapshotReceipts>, ContentError> {
        let mut records = Vec::with_capacity(self.batches.len());
        for batch in &self.batches {
            records.push(match &batch.proof {
                BatchProof::Signed(signed) => {
                    let pending = batch.indices.iter().map(|index| self.pending(*index)).collect();
                    SnapshotReceipts::Runs(encoded_runs(pending, signed.signature())?)
                }
                BatchProof::Own(proof) => {
                    let index = batch.indices[0];
                    let stored = self.stored(index)?;
                    SnapshotReceipts::Single {
                        invocation: stored.invocation.encode()?,
                        receipt: stored.encoded,
                        proof: proof.as_ref().clone(),
                        first_seen_ns: stored.first_seen_ns,
                        worker: stored.worker,
                    }
                }
            });
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

/// A logged batch of runs with its receipts' digests computed again, ready for the memo.
pub struct ReplayedRuns {
    batch: LoggedRuns,
    digests: Vec<(Digest, Digest)>,
}

impl ReplayedRuns {
    /// Decodes a log's receipt runs record and computes its digests (without the memo, so
    /// the batches of a log are prepared on every core).
    pub fn prepare(bytes: &[u8]) -> Result<ReplayedRuns, ContentError> {
        let mut batch = LoggedRuns::decode(bytes)?;
        let functions = batch
            .functions
            .iter()
            .map(|(module, export)| {
                let module = logged_module(module)?;
                let template = invocation::InvocationTemplate::new(module, export)?;
                Ok(Arc::new(CalledFunction { module, export: export.clone(), template }))
            })
            .collect::<Result<Vec<_>, ContentError>>()?;
        let issuer: Arc<str> = batch.issuer.as_str().into();
        let positions: Vec<u32> = batch.runs.iter().map(|(function, _)| *function).collect();
        let pending = std::mem::take(&mut batch.runs)
            .into_iter()
            .map(|(function, run)| {
                let function = logged_function(&functions, function)?.clone();
                Ok(PendingReceipt { index: 0, function, issuer: issuer.clone(), run })
            })
            .collect::<Result<Vec<_>, ContentError>>()?;
        let digests = digests_of(&pending)?;
        batch.runs = positions.into_iter().zip(pending.into_iter().map(|pending| pending.run)).collect();
        Ok(ReplayedRuns { batch, digests })
    }
}

/// Prepares logged batches of runs (see [`ReplayedRuns::prepare`]) on every core, in order.
pub fn prepare_runs(batches: &[&[u8]]) -> Result<Vec<ReplayedRuns>, ContentError> {
    let threads = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let share = batches.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let prepared: Vec<_> = batches
            .chunks(share)
            .map(|chunk| {
                scope.spawn(move || chunk.iter().map(|bytes| ReplayedRuns::prepare(bytes)).collect::<Vec<_>>())
            })
            .collect();
        prepared
            .into_iter()
            .flat_map(|thread| thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memo({} receipts)", self.entry_count)
    }
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
