//! The receipt signer: receipts are signed while the statement that issues them still runs.
//!
//! A call that runs records a compact memo entry and hands the signer a copy of what its receipt
//! needs (a [`PendingReceipt`]). Every [`RECEIPTS_PER_BATCH`] receipts, the batch goes to the
//! signer's thread, which computes the invocation and receipt CIDs (two sha3-256 digests per
//! receipt), signs the Merkle root of the batch's receipt CIDs and encodes the batch's log record
//! as a log frame, alongside the dataflow instead of after it. When the statement ends,
//! [`Signer::finish`] sends what remains, waits for the thread and returns the signed batches;
//! `Database` attaches them to the memo and writes their frames to the log before the statement
//! returns.

use crate::functions::{CalledFunction, LoggedBatch, LoggedReceipt, Run, RECEIPTS_PER_BATCH};
use crate::identity::{Identity, SignedBatch};
use crate::wal::Record;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use weft_engine::content::{self, ContentError, Digest};

/// What signing one receipt needs, copied out of the memo so the signer never takes its lock.
#[derive(Clone, Debug)]
pub struct PendingReceipt {
    /// The memo entry's index.
    pub index: u32,
    pub function: Arc<CalledFunction>,
    pub issuer: Arc<str>,
    pub run: Run,
}

/// One signed batch: its entries, their `(invocation, receipt)` digests in leaf order, the
/// signature and the batch's log record, already encoded as a log frame (on the signing thread,
/// so the statement's end only writes it).
pub struct SignedReceipts {
    pub indices: Vec<u32>,
    pub digests: Vec<(Digest, Digest)>,
    pub batch: Arc<SignedBatch>,
    pub frame: Vec<u8>,
}

/// The invocation and receipt digests of a pending receipt.
pub fn digests_of(pending: &PendingReceipt) -> Result<(Digest, Digest), ContentError> {
    let invocation = pending.function.template.digest(&pending.run.args)?;
    let receipt = pending.run.receipt(content::cid_of_digest(&invocation), &pending.issuer);
    Ok((invocation, content::sha3_digest(&receipt.encode()?)))
}

/// Signs a batch: computes its CIDs, signs the root of its receipt CIDs and makes its log frame.
pub fn sign_batch(identity: &Identity, receipts: Vec<PendingReceipt>) -> Result<SignedReceipts, ContentError> {
    let digests: Vec<(Digest, Digest)> = receipts.iter().map(digests_of).collect::<Result<_, _>>()?;
    let leaves: Vec<Vec<u8>> = digests.iter().map(|(_, receipt)| content::cid_of_digest(receipt).to_bytes()).collect();
    let batch = identity.sign_tree(&leaves).ok_or_else(|| ContentError::Encoding("an empty receipt batch".into()))?;
    let indices = receipts.iter().map(|pending| pending.index).collect();
    let record = batch_record(receipts, &digests, batch.signature());
    let frame = crate::wal::encode_frame(&record).map_err(|error| ContentError::Encoding(error.to_string()))?;
    Ok(SignedReceipts { indices, digests, batch, frame })
}

/// The log record of a signed batch: `receipts` with their `digests`, in leaf order.
pub fn batch_record(receipts: Vec<PendingReceipt>, digests: &[(Digest, Digest)], signature: &[u8]) -> Record {
    let issuer = receipts.first().map(|pending| pending.issuer.to_string()).unwrap_or_default();
    let mut functions: Vec<Arc<CalledFunction>> = Vec::new();
    let mut logged = Vec::with_capacity(receipts.len());
    for (pending, (invocation, receipt)) in receipts.into_iter().zip(digests) {
        let function = match functions.iter().position(|known| Arc::ptr_eq(known, &pending.function)) {
            Some(position) => position,
            None => {
                functions.push(pending.function.clone());
                functions.len() - 1
            }
        };
        logged.push(LoggedReceipt {
            invocation: *invocation,
            receipt: *receipt,
            function: function as u32,
            run: pending.run,
        });
    }
    let functions = functions.iter().map(|function| (function.module.to_bytes(), function.export.clone())).collect();
    Record::Receipts(LoggedBatch { issuer, signature: signature.to_vec(), functions, receipts: logged })
}

enum Message {
    Batch(Vec<PendingReceipt>),
    /// Everything signed since the last finish, once every batch before this message is done.
    Finish(Sender<Vec<(usize, Result<SignedReceipts, ContentError>)>>),
}

/// The signer's handle, shared by every function and the database.
pub struct Signer {
    pending: Mutex<Vec<PendingReceipt>>,
    /// Receipts handed in and not yet returned by [`Signer::finish`].
    unsigned: AtomicUsize,
    sender: Mutex<Sender<Message>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} unsigned)", self.unsigned.load(Ordering::Relaxed))
    }
}

impl Signer {
    /// Starts the signer's thread, signing with `identity`; it ends with the last handle.
    pub fn start(identity: Arc<Identity>) -> std::io::Result<Arc<Signer>> {
        let (sender, receiver) = channel();
        std::thread::Builder::new().name("weft-signer".into()).spawn(move || run(&identity, receiver))?;
        Ok(Arc::new(Signer { pending: Mutex::default(), unsigned: AtomicUsize::new(0), sender: Mutex::new(sender) }))
    }

    /// Hands in a receipt to sign; a full batch goes to the signer's thread.
    pub fn push(&self, receipt: PendingReceipt) {
        self.unsigned.fetch_add(1, Ordering::SeqCst);
        let full = {
            let mut pending = self.pending.lock().expect("pending receipts");
            pending.push(receipt);
            (pending.len() >= RECEIPTS_PER_BATCH).then(|| std::mem::take(&mut *pending))
        };
        if let Some(batch) = full {
            self.send(Message::Batch(batch));
        }
    }

    /// Whether receipts were handed in that [`Signer::finish`] has not returned yet.
    pub fn has_unsigned(&self) -> bool {
        self.unsigned.load(Ordering::SeqCst) > 0
    }

    /// Signs what remains and returns every batch signed since the last call, in order.
    pub fn finish(&self) -> Result<Vec<SignedReceipts>, ContentError> {
        let rest = std::mem::take(&mut *self.pending.lock().expect("pending receipts"));
        if !rest.is_empty() {
            self.send(Message::Batch(rest));
        }
        let (reply, answer) = channel();
        self.send(Message::Finish(reply));
        let signed = answer.recv().map_err(|_| ContentError::Encoding("the receipt signer stopped".into()))?;
        self.unsigned.fetch_sub(signed.iter().map(|(count, _)| count).sum(), Ordering::SeqCst);
        signed.into_iter().map(|(_, batch)| batch).collect()
    }

    fn send(&self, message: Message) {
        // The thread only stops when every handle is gone, so sending cannot fail while one exists.
        let _ = self.sender.lock().expect("signer channel").send(message);
    }
}

fn run(identity: &Identity, messages: Receiver<Message>) {
    let mut signed = Vec::new();
    while let Ok(message) = messages.recv() {
        match message {
            Message::Batch(receipts) => signed.push((receipts.len(), sign_batch(identity, receipts))),
            Message::Finish(reply) => {
                let _ = reply.send(std::mem::take(&mut signed));
            }
        }
    }
}
