//! The receipt signer: receipts are signed while the statement that issues them still runs.
//!
//! A call that runs records a compact memo entry and hands the signer a copy of what its receipt
//! needs (a [`PendingReceipt`]). Every [`RECEIPTS_PER_BATCH`] receipts, the batch goes to the
//! signing threads (one per core), which compute the invocation and receipt CIDs (two sha3-256
//! digests per receipt, three Keccak permutations: most of a receipt's cost, more than running a
//! small call), sign the Merkle root of the batch's receipt CIDs and encode the batch's log record
//! as a log frame (by the [`FrameEncoder`] the database gives it), alongside the dataflow
//! instead of after it. When the statement ends,
//! [`Signer::finish`] queues what remains, signs waiting batches itself beside the threads until
//! none is left, and returns the signed batches in order; `Database` attaches them to the memo
//! and writes their frames to the log before the statement returns.

use crate::identity::{Identity, SignedBatch};
use crate::invocation::{self, ContentError, Digest};
use crate::receipts::{CalledFunction, LoggedRuns, Run, RECEIPTS_PER_BATCH};
use crate::sha3_lanes::sha3_256_many;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// What signing one receipt needs, copied out of the memo so the signer never takes its lock.
#[derive(Clone, Debug)]
pub struct PendingReceipt {
    /// The memo entry's index.
    pub index: u32,
    /// The function called.
    pub function: Arc<CalledFunction>,
    /// The did of the node issuing the receipt.
    pub issuer: Arc<str>,
    /// The call as it ran.
    pub run: Run,
}

/// One signed batch: its entries, their `(invocation, receipt)` digests in leaf order, the
/// signature and the batch's log record, already encoded as a log frame (on the signing thread,
/// so the statement's end only writes it).
pub struct SignedReceipts {
    /// The memo entries signed, in leaf order.
    pub indices: Vec<u32>,
    /// Their `(invocation, receipt)` digests.
    pub digests: Vec<(Digest, Digest)>,
    /// The signature over their Merkle root.
    pub batch: Arc<SignedBatch>,
    /// The batch's log frame.
    pub frame: Vec<u8>,
}

/// Turns a signed batch's encoded runs (see [`encoded_runs`]) into the frame its log stores.
pub type FrameEncoder = Arc<dyn Fn(Vec<u8>) -> Result<Vec<u8>, String> + Send + Sync>;

/// The log frames of signed batches, taken out of them (in order).
pub fn take_frames(signed: &mut [SignedReceipts]) -> Vec<Vec<u8>> {
    signed.iter_mut().map(|batch| std::mem::take(&mut batch.frame)).collect()
}

/// The invocation and receipt digests of pending receipts, in order: all invocations are
/// encoded and hashed (eight at a time, see [`sha3_256_many`]), then all receipts, which name
/// their invocations' CIDs.
pub fn digests_of(receipts: &[PendingReceipt]) -> Result<Vec<(Digest, Digest)>, ContentError> {
    let invocations: Vec<Vec<u8>> =
        receipts.iter().map(|pending| pending.function.template.encode(&pending.run.args)).collect::<Result<_, _>>()?;
    let invocations = sha3_256_many(&invocations.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let encoded: Vec<Vec<u8>> = receipts
        .iter()
        .zip(&invocations)
        .map(|(pending, invocation)| {
            pending.run.receipt(invocation::cid_of_digest(invocation), &pending.issuer).encode()
        })
        .collect::<Result<_, _>>()?;
    let receipts = sha3_256_many(&encoded.iter().map(Vec::as_slice).collect::<Vec<_>>());
    Ok(invocations.into_iter().zip(receipts).collect())
}

/// Signs a batch: computes its CIDs, signs the root of its receipt CIDs and makes its log frame.
pub fn sign_batch(
    identity: &Identity,
    frame_of: &FrameEncoder,
    receipts: Vec<PendingReceipt>,
) -> Result<SignedReceipts, ContentError> {
    let digests = digests_of(&receipts)?;
    let leaves: Vec<Vec<u8>> =
        digests.iter().map(|(_, receipt)| invocation::cid_of_digest(receipt).to_bytes()).collect();
    let batch = identity.sign_tree(&leaves).ok_or_else(|| ContentError::Encoding("an empty receipt batch".into()))?;
    let indices = receipts.iter().map(|pending| pending.index).collect();
    let frame = frame_of(encoded_runs(receipts, batch.signature())?).map_err(ContentError::Encoding)?;
    Ok(SignedReceipts { indices, digests, batch, frame })
}

/// A signed batch as its log keeps it, encoded: the runs of `receipts` (in leaf order) and the
/// batch's signature (see [`LoggedRuns`]).
pub fn encoded_runs(receipts: Vec<PendingReceipt>, signature: &[u8]) -> Result<Vec<u8>, ContentError> {
    let issuer = receipts.first().map(|pending| pending.issuer.to_string()).unwrap_or_default();
    let mut functions: Vec<Arc<CalledFunction>> = Vec::new();
    let mut runs = Vec::with_capacity(receipts.len());
    for pending in receipts {
        let function = match functions.iter().position(|known| Arc::ptr_eq(known, &pending.function)) {
            Some(position) => position,
            None => {
                functions.push(pending.function.clone());
                functions.len() - 1
            }
        };
        runs.push((function as u32, pending.run));
    }
    let functions = functions.iter().map(|function| (function.module.to_bytes(), function.export.clone())).collect();
    let batch = LoggedRuns { issuer, signature: signature.to_vec(), functions, runs };
    batch.encode()
}

/// The work shared by the signing threads: batches waiting, in order, and batches signed.
#[derive(Default)]
struct Work {
    /// Batches waiting to be signed, each with its sequence number.
    waiting: std::collections::VecDeque<(u64, Vec<PendingReceipt>)>,
    /// The next batch's sequence number.
    next: u64,
    /// Batches being signed now.
    signing: usize,
    /// Signed batches not yet returned by [`Signer::finish`]: sequence number, receipt count,
    /// outcome.
    signed: Vec<(u64, usize, Result<SignedReceipts, ContentError>)>,
    /// Set when the last handle goes: the threads stop.
    stopping: bool,
}

/// The state the handle and its threads share.
#[derive(Default)]
struct SigningQueue {
    work: Mutex<Work>,
    /// Signalled when a batch arrives, a batch is signed, or the threads must stop.
    changed: Condvar,
}

impl SigningQueue {
    /// Takes the next waiting batch, marking it as being signed.
    fn take(work: &mut Work) -> Option<(u64, Vec<PendingReceipt>)> {
        let batch = work.waiting.pop_front()?;
        work.signing += 1;
        Some(batch)
    }

    /// Signs a taken batch (without the lock) and files the outcome (an error if signing
    /// panicked: the statement waiting for it then fails instead of waiting forever).
    fn sign(&self, identity: &Identity, frame_of: &FrameEncoder, (sequence, receipts): (u64, Vec<PendingReceipt>)) {
        let count = receipts.len();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sign_batch(identity, frame_of, receipts)))
                .unwrap_or_else(|_| Err(ContentError::Encoding("signing a batch of receipts panicked".into())));
        let mut work = self.work.lock().expect("signer work");
        work.signing -= 1;
        work.signed.push((sequence, count, outcome));
        self.changed.notify_all();
    }
}

/// The signer's handle, shared by every function and the database.
pub struct Signer {
    pending: Mutex<Vec<PendingReceipt>>,
    /// Receipts handed in and not yet returned by [`Signer::finish`].
    unsigned: AtomicUsize,
    shared: Arc<SigningQueue>,
    identity: Arc<Identity>,
    frame_of: FrameEncoder,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} unsigned)", self.unsigned.load(Ordering::Relaxed))
    }
}

impl Signer {
    /// Starts the signing threads (one per core), signing with `identity` and making each
    /// batch's log frame with `frame_of`; they stop when the handle is dropped.
    pub fn start(identity: Arc<Identity>, frame_of: FrameEncoder) -> std::io::Result<Arc<Signer>> {
        let shared = Arc::new(SigningQueue::default());
        // Built first, so that a failure to start a thread drops it and stops those started.
        let signer = Signer { pending: Mutex::default(), unsigned: AtomicUsize::new(0), shared, identity, frame_of };
        let threads = std::thread::available_parallelism().map_or(1, |cores| cores.get()).min(8);
        for number in 0..threads {
            let (shared, identity, frame_of) =
                (signer.shared.clone(), signer.identity.clone(), signer.frame_of.clone());
            std::thread::Builder::new()
                .name(format!("weft-signer-{number}"))
                .spawn(move || run(&identity, &frame_of, &shared))?;
        }
        Ok(Arc::new(signer))
    }

    /// Hands in a receipt to sign; a full batch goes to the signing threads.
    pub fn push(&self, receipt: PendingReceipt) {
        self.unsigned.fetch_add(1, Ordering::SeqCst);
        let full = {
            let mut pending = self.pending.lock().expect("pending receipts");
            if pending.capacity() == 0 {
                pending.reserve_exact(RECEIPTS_PER_BATCH);
            }
            pending.push(receipt);
            (pending.len() >= RECEIPTS_PER_BATCH).then(|| std::mem::take(&mut *pending))
        };
        if let Some(batch) = full {
            self.queue(batch);
        }
    }

    /// Whether receipts were handed in that [`Signer::finish`] has not returned yet.
    pub fn has_unsigned(&self) -> bool {
        self.unsigned.load(Ordering::SeqCst) > 0
    }

    /// Signs what remains, helping the signing threads with the batches still waiting, and
    /// returns every batch signed since the last call, in the order they were handed in.
    pub fn finish(&self) -> Result<Vec<SignedReceipts>, ContentError> {
        let rest = std::mem::take(&mut *self.pending.lock().expect("pending receipts"));
        if !rest.is_empty() {
            self.queue(rest);
        }
        let mut work = self.shared.work.lock().expect("signer work");
        loop {
            if let Some(batch) = SigningQueue::take(&mut work) {
                drop(work);
                self.shared.sign(&self.identity, &self.frame_of, batch);
                work = self.shared.work.lock().expect("signer work");
            } else if work.signing > 0 {
                work = self.shared.changed.wait(work).expect("signer work");
            } else {
                break;
            }
        }
        let mut signed = std::mem::take(&mut work.signed);
        drop(work);
        signed.sort_unstable_by_key(|(sequence, _, _)| *sequence);
        self.unsigned.fetch_sub(signed.iter().map(|(_, count, _)| count).sum(), Ordering::SeqCst);
        signed.into_iter().map(|(_, _, batch)| batch).collect()
    }

    fn queue(&self, batch: Vec<PendingReceipt>) {
        let mut work = self.shared.work.lock().expect("signer work");
        let sequence = work.next;
        work.next += 1;
        work.waiting.push_back((sequence, batch));
        self.shared.changed.notify_one();
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        self.shared.work.lock().expect("signer work").stopping = true;
        self.shared.changed.notify_all();
    }
}

/// A signing thread: signs waiting batches until the handle is dropped.
fn run(identity: &Identity, frame_of: &FrameEncoder, shared: &SigningQueue) {
    let mut work = shared.work.lock().expect("signer work");
    loop {
        if work.stopping {
            return;
        }
        match SigningQueue::take(&mut work) {
            Some(batch) => {
                drop(work);
                shared.sign(identity, frame_of, batch);
                work = shared.work.lock().expect("signer work");
            }
            None => work = shared.changed.wait(work).expect("signer work"),
        }
    }
}
