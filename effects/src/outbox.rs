//! The outbox: every mutation effect from the moment it is decided until it is applied.
//!
//! The outbox is a state machine driven only by [`OutboxRecord`]s, so the same records that are
//! written to the durable log rebuild it exactly after a restart. It decides the order of
//! delivery: each sink's effects go out in sequence, a run at a time, and a failed effect holds
//! back everything after it on that sink (order is never broken to make progress) until it is
//! retried. It also keeps, per sink, the sum of every change ever enqueued: the contents the sink
//! has been told about, which lets the engine find changes a crash kept from being enqueued.

use crate::model::{Datum, Effect};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Where an effect is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Waiting to be applied (or being retried after a transient error).
    Pending,
    /// Applied; its receipt says so.
    Delivered,
    /// Failed permanently; waits for `weft effects retry <cid>`.
    Failed,
}

impl Status {
    /// `pending`, `delivered` or `failed`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
        }
    }
}

/// One effect and what became of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The effect's CID (its idempotency key), as text.
    pub cid: String,
    /// The effect (its changes are dropped once it is delivered and the outbox compacted).
    pub effect: Effect,
    /// Number of rows the effect changed.
    pub rows: u64,
    /// Its state.
    pub status: Status,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// The CID of the receipt of its delivery or failure.
    pub receipt: Option<String>,
    /// That receipt: its DAG-CBOR bytes and the node's ed25519 signature over its CID.
    #[serde(default)]
    pub signed_receipt: Option<SignedReceipt>,
    /// The last error, if any attempt failed.
    pub error: Option<String>,
}

/// A receipt as stored: canonical DAG-CBOR and the issuer's signature over the receipt's CID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    /// The receipt's DAG-CBOR encoding.
    pub encoded: Vec<u8>,
    /// The ed25519 signature over the receipt CID's bytes.
    pub signature: Vec<u8>,
}

/// A change to the outbox, as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OutboxRecord {
    /// A sink's starting point (after compaction): the next sequence number and the contents
    /// every effect not listed after this record adds up to.
    Base {
        /// The sink.
        sink: String,
        /// The sequence number its next effect takes.
        next_sequence: u64,
        /// The rows sent so far, with their multiplicities.
        sent: Vec<(Vec<Datum>, i64)>,
    },
    /// A new effect, pending.
    Enqueued {
        /// The effect.
        effect: Effect,
    },
    /// An attempt's outcome.
    Outcome {
        /// The effect's CID.
        cid: String,
        /// Its status after the attempt.
        status: Status,
        /// Attempts so far.
        attempts: u32,
        /// The connector's receipt, if it applied the effect.
        receipt: Option<String>,
        /// Why the attempt failed, if it did.
        error: Option<String>,
        /// The node's signed receipt of the effect, once applied.
        signed_receipt: Option<SignedReceipt>,
    },
    /// A finished effect kept for `weft.effects` (compaction writes these without changes).
    Settled {
        /// The effect and its outcome.
        entry: Entry,
    },
    /// `DROP SINK`: forget the sink's effects.
    DropSink {
        /// The sink dropped.
        sink: String,
    },
}

#[derive(Default)]
struct SinkQueue {
    next_sequence: u64,
    entries: BTreeMap<u64, Entry>,
    sent: HashMap<Vec<Datum>, i64>,
}

/// Every sink's effects in order.
#[derive(Default)]
pub struct Outbox {
    sinks: BTreeMap<String, SinkQueue>,
    by_cid: HashMap<String, (String, u64)>,
}

/// How many finished effects per sink compaction keeps visible in `weft.effects`.
const SETTLED_KEPT: usize = 10_000;

fn add(sent: &mut HashMap<Vec<Datum>, i64>, row: &[Datum], diff: i64) {
    let count = sent.entry(row.to_vec()).or_insert(0);
    *count += diff;
    if *count == 0 {
        sent.remove(row);
    }
}

impl Outbox {
    /// Applies one record (the only way the outbox changes).
    pub fn apply(&mut self, record: OutboxRecord) {
        match record {
            OutboxRecord::Base { sink, next_sequence, sent } => {
                let queue = self.sinks.entry(sink).or_default();
                queue.next_sequence = next_sequence;
                queue.sent = sent.into_iter().collect();
            }
            OutboxRecord::Enqueued { effect } => {
                let cid = effect.cid().to_string();
                let sink = effect.payload.sink.clone();
                let sequence = effect.payload.sequence;
                let queue = self.sinks.entry(sink.clone()).or_default();
                for change in &effect.payload.changes {
                    add(&mut queue.sent, &change.row, change.diff);
                }
                queue.next_sequence = queue.next_sequence.max(sequence + 1);
                let rows = effect.payload.changes.iter().map(|change| change.diff.unsigned_abs()).sum();
                let entry = Entry {
                    cid: cid.clone(),
                    effect,
                    rows,
                    status: Status::Pending,
                    attempts: 0,
                    receipt: None,
                    error: None,
                    signed_receipt: None,
                };
                queue.entries.insert(sequence, entry);
                self.by_cid.insert(cid, (sink, sequence));
            }
            OutboxRecord::Outcome { cid, status, attempts, receipt, error, signed_receipt } => {
                if let Some(entry) = self.entry_mut(&cid) {
                    entry.status = status;
                    entry.attempts = attempts;
                    entry.receipt = receipt;
                    entry.error = error;
                    entry.signed_receipt = signed_receipt;
                    if status == Status::Delivered {
                        // Delivered rows are needed no more (the sink's sent contents keep
                        // their sum); keep the entry's description for `weft.effects`.
                        entry.effect.payload.changes = Vec::new();
                        let sink = entry.effect.payload.sink.clone();
                        self.forget_oldest_delivered(&sink);
                    }
                }
            }
            OutboxRecord::Settled { entry } => {
                let sink = entry.effect.payload.sink.clone();
                let sequence = entry.effect.payload.sequence;
                let queue = self.sinks.entry(sink.clone()).or_default();
                queue.next_sequence = queue.next_sequence.max(sequence + 1);
                self.by_cid.insert(entry.cid.clone(), (sink, sequence));
                queue.entries.insert(sequence, entry);
            }
            OutboxRecord::DropSink { sink } => {
                if let Some(queue) = self.sinks.remove(&sink) {
                    for entry in queue.entries.values() {
                        self.by_cid.remove(&entry.cid);
                    }
                }
            }
        }
    }

    /// Keeps at most twice [`SETTLED_KEPT`] delivered effects of a sink in memory.
    fn forget_oldest_delivered(&mut self, sink: &str) {
        let Some(queue) = self.sinks.get_mut(sink) else { return };
        while queue.entries.len() > 2 * SETTLED_KEPT {
            match queue.entries.first_key_value() {
                Some((_, entry)) if entry.status == Status::Delivered => {
                    let (_, entry) = queue.entries.pop_first().expect("checked");
                    self.by_cid.remove(&entry.cid);
                }
                _ => break,
            }
        }
    }

    fn entry_mut(&mut self, cid: &str) -> Option<&mut Entry> {
        let (sink, sequence) = self.by_cid.get(cid)?;
        self.sinks.get_mut(sink)?.entries.get_mut(sequence)
    }

    /// The effect whose delivery or failure receipt has this CID.
    pub fn entry_by_receipt(&self, receipt: &str) -> Option<&Entry> {
        self.entries().find(|entry| entry.receipt.as_deref() == Some(receipt))
    }

    /// The effect with this CID.
    pub fn entry(&self, cid: &str) -> Option<&Entry> {
        let (sink, sequence) = self.by_cid.get(cid)?;
        self.sinks.get(sink)?.entries.get(sequence)
    }

    /// The sequence number the sink's next effect gets.
    pub fn next_sequence(&self, sink: &str) -> u64 {
        self.sinks.get(sink).map_or(0, |queue| queue.next_sequence)
    }

    /// The contents the sink has been sent (the sum of all its enqueued changes).
    pub fn sent(&self, sink: &str) -> HashMap<Vec<Datum>, i64> {
        self.sinks.get(sink).map(|queue| queue.sent.clone()).unwrap_or_default()
    }

    /// The next effects to deliver on `sink`, in order: the first undelivered effect and the
    /// pending ones right after it, up to about `max_rows` rows and `max_effects` effects.
    /// Empty when the first undelivered effect has failed (it holds the sink back) or nothing
    /// waits.
    pub fn next_run(&self, sink: &str, max_rows: u64, max_effects: usize) -> Vec<Effect> {
        let Some(queue) = self.sinks.get(sink) else { return Vec::new() };
        let mut run = Vec::new();
        let mut rows = 0;
        for entry in queue.entries.values().filter(|entry| entry.status != Status::Delivered) {
            let full = run.len() >= max_effects.max(1) || rows + entry.rows > max_rows;
            if entry.status == Status::Failed || (!run.is_empty() && full) {
                break;
            }
            rows += entry.rows;
            run.push(entry.effect.clone());
        }
        run
    }

    /// The sink's first undelivered effect (the one its next run starts with, or that holds it
    /// back).
    pub fn head(&self, sink: &str) -> Option<&Entry> {
        self.sinks.get(sink)?.entries.values().find(|entry| entry.status != Status::Delivered)
    }

    /// How many effects [`Outbox::next_run`] would hand out without size limits, counted without
    /// copying them.
    pub fn deliverable(&self, sink: &str) -> usize {
        self.sinks.get(sink).map_or(0, |queue| {
            queue
                .entries
                .values()
                .filter(|entry| entry.status != Status::Delivered)
                .take_while(|entry| entry.status != Status::Failed)
                .count()
        })
    }

    /// Every effect of every sink, in sink and sequence order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.sinks.values().flat_map(|queue| queue.entries.values())
    }

    /// Counts of effects by status.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let mut counts = BTreeMap::from([("pending", 0), ("delivered", 0), ("failed", 0)]);
        for entry in self.entries() {
            *counts.entry(entry.status.name()).or_default() += 1;
        }
        counts
    }

    /// Records that rebuild this outbox compactly: delivered effects without their changes (the
    /// last few thousand per sink), undelivered ones in full.
    pub fn compacted(&self) -> Vec<OutboxRecord> {
        let mut records = Vec::new();
        for (sink, queue) in &self.sinks {
            let mut base = queue.sent.clone();
            let mut open = Vec::new();
            let delivered: Vec<&Entry> =
                queue.entries.values().filter(|entry| entry.status == Status::Delivered).collect();
            for entry in queue.entries.values().filter(|entry| entry.status != Status::Delivered) {
                for change in &entry.effect.payload.changes {
                    add(&mut base, &change.row, -change.diff);
                }
                open.push(OutboxRecord::Enqueued { effect: entry.effect.clone() });
                open.push(OutboxRecord::Outcome {
                    cid: entry.cid.clone(),
                    status: entry.status,
                    attempts: entry.attempts,
                    receipt: entry.receipt.clone(),
                    error: entry.error.clone(),
                    signed_receipt: entry.signed_receipt.clone(),
                });
            }
            records.push(OutboxRecord::Base {
                sink: sink.clone(),
                next_sequence: queue.next_sequence,
                sent: base.into_iter().collect(),
            });
            for entry in delivered.iter().skip(delivered.len().saturating_sub(SETTLED_KEPT)) {
                let mut entry = (*entry).clone();
                entry.effect.payload.changes.clear();
                records.push(OutboxRecord::Settled { entry });
            }
            records.extend(open);
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Batch, Change, Stream};

    fn effect(sink: &str, sequence: u64, value: i64, diff: i64) -> Effect {
        Effect {
            stream: Stream::Mutation,
            connector: "files".into(),
            resource: format!("{sink}.jsonl"),
            ability: "files/write".into(),
            payload: Batch {
                sink: sink.into(),
                epoch: 1,
                sequence,
                timestamp: sequence,
                changes: vec![Change { diff, row: vec![Datum::Int(value)] }],
            },
        }
    }

    fn outcome(cid: &str, status: Status) -> OutboxRecord {
        OutboxRecord::Outcome { cid: cid.into(), status, attempts: 1, receipt: None, error: None, signed_receipt: None }
    }

    #[test]
    fn runs_are_in_order_and_a_failure_holds_its_sink_back() {
        let mut outbox = Outbox::default();
        for (sequence, value) in [(0, 10), (1, 11), (2, 12)] {
            outbox.apply(OutboxRecord::Enqueued { effect: effect("a", sequence, value, 1) });
        }
        outbox.apply(OutboxRecord::Enqueued { effect: effect("b", 0, 1, 1) });
        let run = outbox.next_run("a", 100, 2);
        assert_eq!(run.iter().map(|effect| effect.payload.sequence).collect::<Vec<_>>(), vec![0, 1]);
        let first = run[0].cid().to_string();
        let second = run[1].cid().to_string();
        outbox.apply(outcome(&first, Status::Delivered));
        outbox.apply(outcome(&second, Status::Failed));
        assert!(outbox.next_run("a", 100, 100).is_empty(), "a failed effect holds back the ones after it");
        assert_eq!(outbox.deliverable("a"), 0);
        assert_eq!(outbox.head("a").map(|entry| entry.status), Some(Status::Failed));
        assert_eq!(outbox.next_run("b", 100, 100).len(), 1, "other sinks go on");
        outbox.apply(outcome(&second, Status::Pending));
        assert_eq!(outbox.next_run("a", 100, 100).len(), 2);
        assert_eq!(outbox.deliverable("a"), 2);
        assert_eq!(outbox.counts()["delivered"], 1);
        assert_eq!(outbox.next_sequence("a"), 3);
    }

    #[test]
    fn compaction_rebuilds_the_same_state() {
        let mut outbox = Outbox::default();
        outbox.apply(OutboxRecord::Enqueued { effect: effect("a", 0, 10, 1) });
        outbox.apply(OutboxRecord::Enqueued { effect: effect("a", 1, 10, -1) });
        outbox.apply(OutboxRecord::Enqueued { effect: effect("a", 2, 12, 1) });
        let first = effect("a", 0, 10, 1).cid().to_string();
        outbox.apply(outcome(&first, Status::Delivered));
        let mut rebuilt = Outbox::default();
        for record in outbox.compacted() {
            rebuilt.apply(record);
        }
        assert_eq!(rebuilt.sent("a"), outbox.sent("a"));
        assert_eq!(rebuilt.sent("a"), HashMap::from([(vec![Datum::Int(12)], 1)]));
        assert_eq!(rebuilt.next_run("a", 100, 100), outbox.next_run("a", 100, 100));
        assert_eq!(rebuilt.next_sequence("a"), 3);
        assert_eq!(rebuilt.entry(&first).map(|entry| entry.status), Some(Status::Delivered));
        rebuilt.apply(OutboxRecord::DropSink { sink: "a".into() });
        assert!(rebuilt.entries().next().is_none());
    }
}
