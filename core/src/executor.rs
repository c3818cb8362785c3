//! The effect executor: delivers the outbox to sinks and reads sources, on its own tokio runtime.
//!
//! The outbox (`<data dir>/outbox`, the same framed log as the write-ahead log) holds every
//! mutation effect from the moment a commit produces it: [`Executor::enqueue`] makes the record
//! durable before the commit returns. Each sink has one delivery task that takes the next run of
//! its effects in order ([`weft_effects::Outbox::next_run`]), applies it through its connector
//! and logs the outcome with a signed receipt (the engine's receipt shape: `ran` is the effect's
//! CID, `out` is `{"ok": "applied"}` or the error). Transient errors are retried with exponential
//! backoff and jitter; a permanent one marks the effect failed and holds back its sink (order is
//! never broken) until [`Executor::retry`]; other sinks go on. Query effects (source reads and
//! the `http_get` reads of views) run on separate tasks, one per source and per reading view, so
//! a slow read never delays a write.

use crate::wal::{Log, WalError};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_connectors::access::Access;
use weft_connectors::Target;
use weft_effects::{
    Backoff, Column, ConnectorError, Datum, Effect, Outbox, OutboxRecord, SignedReceipt, Sink, Source, SourceRead,
    Status, Stream,
};
use weft_engine::Value;
use weft_ipvm::invocation::{Outcome, Receipt};

/// Rows per run of effects handed to a sink at once.
const RUN_ROWS: u64 = 50_000;
/// Problems kept per source for `weft.effects`.
const PROBLEMS_KEPT: usize = 100;

/// What is known of a source's reads, for `weft.effects`.
#[derive(Clone, Debug, Default)]
pub struct SourceStatus {
    /// The source's resource.
    pub resource: String,
    /// The connector.
    pub connector: String,
    /// Reads so far.
    pub reads: u64,
    /// The last read's error, if it failed.
    pub error: Option<String>,
    /// Input skipped by reads (malformed lines, unreadable files), newest last.
    pub problems: Vec<String>,
}

/// What is known of one resource a view reads, for `weft.effects`.
#[derive(Clone, Debug, Default)]
struct ReadStatus {
    reads: u64,
    error: Option<String>,
}

/// A resource read by a query effect: what came back, and when (ns since the epoch).
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The resource (a URL).
    pub resource: String,
    /// What came back.
    pub body: String,
    /// When (nanoseconds since the epoch).
    pub observed_ns: i64,
}

struct ExecutorState {
    outbox: Mutex<Outbox>,
    log: Mutex<Log<OutboxRecord>>,
    sources: Mutex<BTreeMap<String, SourceStatus>>,
    /// Per (view, resource): the query effects reading it.
    reads: Mutex<BTreeMap<(String, String), ReadStatus>>,
    /// Resources wanted while a fresh observation existed (memo hits), and reads made.
    read_hits: AtomicU64,
    read_fetches: AtomicU64,
    identity: Arc<weft_ipvm::identity::Identity>,
    appended: AtomicU64,
    /// What sinks, sources and reads may reach.
    access: Access,
}

struct RunningTask {
    handle: tokio::task::JoinHandle<()>,
    wake: Arc<tokio::sync::Notify>,
}

/// Delivers effects and reads sources.
pub struct Executor {
    runtime: tokio::runtime::Runtime,
    shared: Arc<ExecutorState>,
    sinks: HashMap<String, RunningTask>,
    sources: HashMap<String, RunningTask>,
    readers: HashMap<String, RunningTask>,
}

/// How an outbox change failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The outbox log could not be written.
    #[error(transparent)]
    Log(#[from] WalError),
    /// The runtime could not start.
    #[error("effect executor: {0}")]
    Runtime(String),
    /// No effect has this CID.
    #[error("no effect {0} in the outbox")]
    UnknownEffect(String),
    /// A connector refused.
    #[error("{0}")]
    Connector(#[from] ConnectorError),
}

impl ExecutorState {
    /// Logs `records`, then applies them. The log lock is held until they are applied, so a
    /// compaction never rewrites the log without them.
    fn record(&self, records: Vec<OutboxRecord>) -> Result<(), WalError> {
        let mut log = self.log.lock().expect("outbox log");
        log.append(&records)?;
        self.appended.fetch_add(records.len() as u64, Ordering::Relaxed);
        let mut outbox = self.outbox.lock().expect("outbox");
        for record in records {
            outbox.apply(record);
        }
        Ok(())
    }

    /// The receipt of an effect's delivery or failure: its CID and its signed encoding.
    fn receipt(
        &self,
        ran: weft_ipvm::invocation::Cid,
        out: Outcome,
        duration: Duration,
    ) -> Option<(String, SignedReceipt)> {
        let receipt = Receipt {
            ran,
            out,
            fuel: 0,
            duration_us: duration.as_micros() as u64,
            issuer: self.identity.did().to_string(),
        };
        let encoded = receipt.encode().ok()?;
        let cid = weft_ipvm::invocation::dag_cbor_cid(&encoded);
        let signature = self.identity.sign(&cid.to_bytes());
        Some((cid.to_string(), SignedReceipt { encoded, signature }))
    }

    fn outcome(&self, effect: &Effect, status: Status, error: Option<String>, duration: Duration) -> OutboxRecord {
        // The CID encodes the whole payload: compute it once per outcome.
        let effect_cid = effect.cid();
        let cid = effect_cid.to_string();
        let attempts = self.outbox.lock().expect("outbox").entry(&cid).map_or(0, |entry| entry.attempts) + 1;
        let out = match &error {
            Some(message) => Outcome::Error(message.clone()),
            None => Outcome::Ok(Value::Text("applied".into())),
        };
        let (receipt, signed_receipt) = match status {
            Status::Pending => (None, None),
            _ => self.receipt(effect_cid, out, duration).unzip(),
        };
        OutboxRecord::Outcome { cid, status, attempts, receipt, error, signed_receipt }
    }
}

impl Executor {
    /// Opens the outbox at `path`, replaying (and compacting) its log, and starts the runtime.
    pub fn open(
        path: &Path,
        sync: bool,
        identity: Arc<weft_ipvm::identity::Identity>,
        access: Access,
    ) -> Result<Executor, ExecutorError> {
        let (mut log, records) = Log::<OutboxRecord>::open(path, sync)?;
        let mut outbox = Outbox::default();
        let replayed = records.len();
        for record in records {
            outbox.apply(record);
        }
        if replayed > 1000 {
            log.rewrite(&outbox.compacted())?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weft-effects")
            .enable_all()
            .build()
            .map_err(|error| ExecutorError::Runtime(error.to_string()))?;
        let shared = Arc::new(ExecutorState {
            outbox: Mutex::new(outbox),
            log: Mutex::new(log),
            sources: Mutex::default(),
            reads: Mutex::default(),
            read_hits: AtomicU64::new(0),
            read_fetches: AtomicU64::new(0),
            identity,
            appended: AtomicU64::new(0),
            access,
        });
        Ok(Executor { runtime, shared, sinks: HashMap::new(), sources: HashMap::new(), readers: HashMap::new() })
    }

    /// Makes `effect` durable in the outbox and wakes its sink.
    pub fn enqueue(&self, effect: Effect) -> Result<(), ExecutorError> {
        let sink = effect.payload.sink.clone();
        self.shared.record(vec![OutboxRecord::Enqueued { effect }])?;
        if let Some(task) = self.sinks.get(&sink) {
            task.wake.notify_one();
        }
        Ok(())
    }

    /// The sequence number of the sink's next effect.
    pub fn next_sequence(&self, sink: &str) -> u64 {
        self.shared.outbox.lock().expect("outbox").next_sequence(sink)
    }

    /// The contents the sink has been sent (every enqueued change, summed).
    pub fn sent(&self, sink: &str) -> HashMap<Vec<Datum>, i64> {
        self.shared.outbox.lock().expect("outbox").sent(sink)
    }

    /// Starts delivering the sink's effects.
    pub fn start_sink(&mut self, name: &str, target: Target, columns: Vec<Column>, key: Vec<usize>) {
        let wake = Arc::new(tokio::sync::Notify::new());
        let shared = self.shared.clone();
        let sink_name = name.to_string();
        let task_wake = wake.clone();
        let handle = self.runtime.spawn(async move {
            deliver(shared, sink_name, target, columns, key, task_wake).await;
        });
        if let Some(old) = self.sinks.insert(name.to_string(), RunningTask { handle, wake }) {
            old.handle.abort();
        }
    }

    /// Stops a sink's delivery; with `forget`, also drops its effects from the outbox.
    pub fn stop_sink(&mut self, name: &str, forget: bool) -> Result<(), ExecutorError> {
        if let Some(task) = self.sinks.remove(name) {
            task.handle.abort();
        }
        if forget {
            self.shared.record(vec![OutboxRecord::DropSink { sink: name.to_string() }])?;
        }
        Ok(())
    }

    /// Opens a source now, failing clearly if it cannot be reached or read, and returns its
    /// columns (`declared`, or what the source has).
    pub fn open_source(
        &self,
        target: &Target,
        declared: Option<Vec<Column>>,
    ) -> Result<(Vec<Column>, Box<dyn Source>), ExecutorError> {
        Ok(self.runtime.block_on(weft_connectors::open_source(target, declared, &self.shared.access))?)
    }

    /// Starts reading a source every `poll_ms` (opening it first, retrying with backoff, when
    /// `opened` is `None`); reads arrive on the returned channel.
    pub fn start_source(
        &mut self,
        name: &str,
        target: &Target,
        columns: Vec<Column>,
        opened: Option<Box<dyn Source>>,
        poll_ms: u64,
    ) -> Result<Receiver<SourceRead>, ExecutorError> {
        let resource = target.resource()?;
        let (sender, receiver) = std::sync::mpsc::channel();
        let status = SourceStatus { resource, connector: target.connector.clone(), ..SourceStatus::default() };
        self.shared.sources.lock().expect("sources").insert(name.to_string(), status);
        let wake = Arc::new(tokio::sync::Notify::new());
        let shared = self.shared.clone();
        let source_name = name.to_string();
        let task_wake = wake.clone();
        let opening = Opening { target: target.clone(), columns, opened };
        let handle = self.runtime.spawn(async move {
            follow(shared, source_name, opening, sender, poll_ms, task_wake).await;
        });
        if let Some(old) = self.sources.insert(name.to_string(), RunningTask { handle, wake }) {
            old.handle.abort();
        }
        Ok(receiver)
    }

    /// How many reads of a source have been made (and their rows sent).
    pub fn source_reads(&self, name: &str) -> u64 {
        self.shared.sources.lock().expect("sources").get(name).map_or(0, |status| status.reads)
    }

    /// Stops reading a source.
    pub fn stop_source(&mut self, name: &str) {
        if let Some(task) = self.sources.remove(name) {
            task.handle.abort();
        }
        self.shared.sources.lock().expect("sources").remove(name);
    }

    /// Starts the query effects of a reading view: `observed` are the observations already made
    /// (resource to time, ns since the epoch); the wanted resources arrive as (resource, diff)
    /// changes on the returned sender, new observations on the returned receiver.
    pub fn start_reads(
        &mut self,
        view: &str,
        ttl: Option<Duration>,
        concurrency: usize,
        observed: HashMap<String, i64>,
    ) -> (tokio::sync::mpsc::UnboundedSender<Vec<(String, i64)>>, Receiver<Observation>) {
        let (wants, wanted) = tokio::sync::mpsc::unbounded_channel();
        let (sender, observations) = std::sync::mpsc::channel();
        let plan = ReadPlan { view: view.to_string(), ttl, concurrency: concurrency.max(1), observed };
        let shared = self.shared.clone();
        let handle = self.runtime.spawn(async move { read_resources(shared, plan, wanted, sender).await });
        let wake = Arc::new(tokio::sync::Notify::new());
        if let Some(old) = self.readers.insert(view.to_string(), RunningTask { handle, wake }) {
            old.handle.abort();
        }
        (wants, observations)
    }

    /// Stops a view's query effects.
    pub fn stop_reads(&mut self, view: &str) {
        if let Some(task) = self.readers.remove(view) {
            task.handle.abort();
        }
        self.shared.reads.lock().expect("reads").retain(|(reader, _), _| reader != view);
    }

    /// Query effects answered from a fresh observation (memo hits), and reads made.
    pub fn read_counts(&self) -> (u64, u64) {
        (self.shared.read_hits.load(Ordering::Relaxed), self.shared.read_fetches.load(Ordering::Relaxed))
    }

    /// Puts a failed (or pending) effect back in line and wakes its sink.
    pub fn retry(&self, cid: &str) -> Result<(), ExecutorError> {
        let entry = self.shared.outbox.lock().expect("outbox").entry(cid).cloned();
        let entry = entry.ok_or_else(|| ExecutorError::UnknownEffect(cid.to_string()))?;
        self.shared.record(vec![OutboxRecord::Outcome {
            cid: cid.to_string(),
            status: if entry.status == Status::Delivered { Status::Delivered } else { Status::Pending },
            attempts: entry.attempts,
            receipt: entry.receipt.clone(),
            error: entry.error.clone(),
            signed_receipt: entry.signed_receipt.clone(),
        }])?;
        if let Some(task) = self.sinks.get(&entry.effect.payload.sink) {
            task.wake.notify_one();
        }
        Ok(())
    }

    /// The signed receipt with this CID, of an effect's delivery or failure.
    pub fn receipt(&self, cid: &str) -> Option<SignedReceipt> {
        self.shared.outbox.lock().expect("outbox").entry_by_receipt(cid).and_then(|entry| entry.signed_receipt.clone())
    }

    /// The status of one effect.
    pub fn status(&self, cid: &str) -> Option<(Status, Option<String>)> {
        let outbox = self.shared.outbox.lock().expect("outbox");
        outbox.entry(cid).map(|entry| (entry.status, entry.error.clone()))
    }

    /// Waits until no sink has a pending effect it can deliver or `timeout` passes (or, with
    /// `until_failing`, until every sink that still has one keeps failing: retrying with
    /// backoff); returns the number still pending.
    pub fn wait_idle(&self, timeout: Duration, until_failing: bool) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let pending = self.pending_count();
            if pending == 0 || Instant::now() >= deadline || (until_failing && self.all_retrying()) {
                return pending;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether every sink with pending effects has seen its next effect fail.
    fn all_retrying(&self) -> bool {
        let outbox = self.shared.outbox.lock().expect("outbox");
        self.sinks.keys().all(|sink| {
            outbox
                .head(sink)
                .is_none_or(|entry| entry.status == Status::Failed || (entry.error.is_some() && entry.attempts > 1))
        })
    }

    /// Effects waiting on sinks that are not held back by a failure.
    pub fn pending_count(&self) -> usize {
        let outbox = self.shared.outbox.lock().expect("outbox");
        self.sinks.keys().map(|sink| outbox.deliverable(sink)).sum()
    }

    /// Effects by status, for metrics.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.shared.outbox.lock().expect("outbox").counts()
    }

    /// Rewrites the outbox log compactly once it has grown. The log lock is held throughout
    /// (taken before the outbox lock, as every writer does), so no record written meanwhile is
    /// lost from the rewritten file.
    pub fn compact_if_large(&self) -> Result<(), ExecutorError> {
        if self.shared.appended.load(Ordering::Relaxed) > 100_000 {
            let mut log = self.shared.log.lock().expect("outbox log");
            let records = self.shared.outbox.lock().expect("outbox").compacted();
            log.rewrite(&records)?;
            self.shared.appended.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// `weft.effects` as a relation.
    pub fn table(&self) -> Arc<dyn weft_sql::provider::RowSource> {
        Arc::new(EffectsTable(self.shared.clone()))
    }
}

/// The columns of `weft.effects`.
pub const EFFECTS_COLUMNS: [(&str, weft_engine::ColumnType); 11] = {
    use weft_engine::ColumnType::{BigInt, Text};
    [
        ("cid", Text),
        ("stream", Text),
        ("connector", Text),
        ("resource", Text),
        ("status", Text),
        ("attempts", BigInt),
        ("receipt", Text),
        ("error", Text),
        ("name", Text),
        ("sequence", BigInt),
        ("rows", BigInt),
    ]
};

/// `weft.effects`: every mutation effect in the outbox and every source's reads.
struct EffectsTable(Arc<ExecutorState>);

impl std::fmt::Debug for EffectsTable {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("weft.effects")
    }
}

impl weft_sql::provider::RowSource for EffectsTable {
    fn rows(&self) -> Result<Vec<Vec<Value>>, String> {
        Ok(self.0.effect_rows())
    }
}

impl ExecutorState {
    /// The rows of `weft.effects`, in the order of [`EFFECTS_COLUMNS`].
    fn effect_rows(&self) -> Vec<Vec<Value>> {
        let text = |text: &str| Value::Text(text.into());
        let optional = |text: &Option<String>| text.as_deref().map_or(Value::Null, |text| Value::Text(text.into()));
        let mut rows: Vec<Vec<Value>> = self
            .outbox
            .lock()
            .expect("outbox")
            .entries()
            .map(|entry| {
                vec![
                    text(&entry.cid),
                    text(entry.effect.stream.name()),
                    text(&entry.effect.connector),
                    text(&entry.effect.resource),
                    text(entry.status.name()),
                    Value::Int(i64::from(entry.attempts)),
                    optional(&entry.receipt),
                    optional(&entry.error),
                    text(&entry.effect.payload.sink),
                    Value::Int(entry.effect.payload.sequence as i64),
                    Value::Int(entry.rows as i64),
                ]
            })
            .collect();
        for ((view, resource), status) in self.reads.lock().expect("reads").iter() {
            let read = query_effect("http", resource, "http/get", view, status.reads);
            let state = read_state(status.error.as_ref(), status.reads);
            rows.push(query_row(&read, state, status.reads, status.error.as_deref(), Some(status.reads), None));
        }
        for (name, status) in self.sources.lock().expect("sources").iter() {
            let ability = format!("{}/read", status.connector);
            let read = query_effect(&status.connector, &status.resource, &ability, name, status.reads);
            let state = read_state(status.error.as_ref(), status.reads);
            rows.push(query_row(&read, state, status.reads, status.error.as_deref(), Some(status.reads), None));
            for (index, problem) in status.problems.iter().enumerate() {
                let skipped =
                    query_effect(&status.connector, &status.resource, &ability, name, u64::MAX - index as u64);
                rows.push(query_row(&skipped, "failed", 1, Some(problem), None, Some(0)));
            }
        }
        rows
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        for task in self.sinks.values().chain(self.sources.values()).chain(self.readers.values()) {
            task.handle.abort();
        }
    }
}

/// The status of a query effect: its last read failed, none was made yet, or it answered.
fn read_state(error: Option<&String>, reads: u64) -> &'static str {
    match (error, reads) {
        (Some(_), _) => "failed",
        (None, 0) => "pending",
        (None, _) => "delivered",
    }
}

/// The query effect of the `sequence`-th read of `resource` for `name` (a source or view).
fn query_effect(connector: &str, resource: &str, ability: &str, name: &str, sequence: u64) -> Effect {
    Effect {
        stream: Stream::Query,
        connector: connector.to_string(),
        resource: resource.to_string(),
        ability: ability.to_string(),
        payload: weft_effects::Batch { sink: name.to_string(), epoch: 0, sequence, timestamp: 0, changes: Vec::new() },
    }
}

/// A `weft.effects` row for a query effect (no receipt: reads are not in the outbox).
fn query_row(
    effect: &Effect,
    status: &str,
    attempts: u64,
    error: Option<&str>,
    sequence: Option<u64>,
    rows: Option<u64>,
) -> Vec<Value> {
    let text = |text: &str| Value::Text(text.into());
    let number = |value: Option<u64>| value.map_or(Value::Null, |value| Value::Int(value as i64));
    vec![
        text(&effect.cid().to_string()),
        text(effect.stream.name()),
        text(&effect.connector),
        text(&effect.resource),
        text(status),
        Value::Int(attempts as i64),
        Value::Null,
        error.map_or(Value::Null, text),
        text(&effect.payload.sink),
        number(sequence),
        number(rows),
    ]
}

fn jitter_seed(name: &str) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    name.bytes().fold(nanos, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3))
}

async fn deliver(
    shared: Arc<ExecutorState>,
    name: String,
    target: Target,
    columns: Vec<Column>,
    key: Vec<usize>,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut sink: Option<Box<dyn Sink>> = None;
    let mut backoff = Backoff::new(20, 10_000, jitter_seed(&name));
    let mut failures: u32 = 0;
    let mut run_rows = RUN_ROWS;
    loop {
        let max_effects = sink.as_ref().map_or(1, |sink| sink.max_run());
        let run = shared.outbox.lock().expect("outbox").next_run(&name, run_rows, max_effects);
        if run.is_empty() {
            wake.notified().await;
            continue;
        }
        let started = Instant::now();
        let result = match &mut sink {
            Some(sink) => sink.apply(&run).await,
            None => match weft_connectors::open_sink(&target, &name, &columns, &key, &shared.access).await {
                Ok(opened) => {
                    sink = Some(opened);
                    continue;
                }
                Err(error) => Err(error),
            },
        };
        let elapsed = started.elapsed();
        let records: Vec<OutboxRecord> = match &result {
            Ok(_) => run.iter().map(|effect| shared.outcome(effect, Status::Delivered, None, elapsed)).collect(),
            Err(error) if error.is_transient() => {
                vec![shared.outcome(&run[0], Status::Pending, Some(error.to_string()), elapsed)]
            }
            // A permanent failure of a run: find the effect at fault by sending them one by one.
            Err(_) if run.len() > 1 => {
                run_rows = 0;
                continue;
            }
            Err(error) => vec![shared.outcome(&run[0], Status::Failed, Some(error.to_string()), elapsed)],
        };
        if let Err(error) = shared.record(records) {
            report_lost_outcome(&name, &error.to_string());
        }
        match result {
            Ok(_) => {
                failures = 0;
                run_rows = RUN_ROWS;
            }
            Err(error) if error.is_transient() => {
                let delay = backoff.delay(failures);
                failures = failures.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wake.notified() => {}
                }
            }
            Err(_) => {}
        }
    }
}

/// An outbox write failed inside a delivery task: the outcome is lost, so the effect will be
/// delivered again (its key makes that harmless). Say so on stderr.
fn report_lost_outcome(sink: &str, message: &str) {
    tracing::error!(%sink, %message, "could not record a delivery outcome");
}

/// A source to follow: already open, or to be opened (again) by the task.
struct Opening {
    target: Target,
    columns: Vec<Column>,
    opened: Option<Box<dyn Source>>,
}

async fn follow(
    shared: Arc<ExecutorState>,
    name: String,
    mut opening: Opening,
    sender: Sender<SourceRead>,
    poll_ms: u64,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut backoff = Backoff::new(poll_ms, 30_000, jitter_seed(&name));
    let mut failures = 0;
    loop {
        let result = match &mut opening.opened {
            Some(source) => source.read().await,
            None => match weft_connectors::open_source(&opening.target, Some(opening.columns.clone()), &shared.access)
                .await
            {
                Ok((_, source)) => {
                    opening.opened = Some(source);
                    continue;
                }
                Err(error) => Err(error),
            },
        };
        // The rows go out before the read is counted: a count of n means n reads were sent.
        let outcome = match result {
            Ok(read) => {
                let problems = read.problems.clone();
                if (read.snapshot.is_some() || !read.appended.is_empty()) && sender.send(read).is_err() {
                    return;
                }
                Ok(problems)
            }
            Err(error) => {
                opening.opened = None;
                Err(error.to_string())
            }
        };
        {
            let mut sources = shared.sources.lock().expect("sources");
            let Some(status) = sources.get_mut(&name) else { return };
            status.reads += 1;
            match outcome {
                Ok(problems) => {
                    status.error = None;
                    status.problems.extend(problems);
                    let excess = status.problems.len().saturating_sub(PROBLEMS_KEPT);
                    status.problems.drain(..excess);
                }
                Err(error) => status.error = Some(error),
            }
        }
        let delay = if opening.opened.is_some() {
            failures = 0;
            Duration::from_millis(poll_ms)
        } else {
            failures += 1;
            backoff.delay(failures - 1)
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wake.notified() => {}
        }
    }
}

/// What a view's reader task needs.
struct ReadPlan {
    view: String,
    ttl: Option<Duration>,
    concurrency: usize,
    observed: HashMap<String, i64>,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// Reads the wanted resources that have no fresh observation, at most `concurrency` at a time;
/// sends each observation to the database and records the query effect's status.
async fn read_resources(
    shared: Arc<ExecutorState>,
    plan: ReadPlan,
    mut wanted_changes: tokio::sync::mpsc::UnboundedReceiver<Vec<(String, i64)>>,
    observations: Sender<Observation>,
) {
    let ReadPlan { view, ttl, concurrency, mut observed } = plan;
    let lookup = weft_connectors::http::HttpLookup::new(
        weft_connectors::http::REQUEST_TIMEOUT,
        std::env::var("WEFT_IPFS_GATEWAY").ok().filter(|gateway| !gateway.is_empty()),
        shared.access.clone(),
    );
    let mut backoff = Backoff::new(100, 60_000, jitter_seed(&view));
    let mut wanted: HashMap<String, i64> = HashMap::new();
    let mut retry_at: HashMap<String, (Instant, u32)> = HashMap::new();
    let mut in_flight: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    // When an observation of `resource` made at `at` stops being fresh (ns), if ever.
    let expiry = |resource: &str, at: i64| -> Option<i64> {
        if resource.starts_with("ipfs://") {
            return None;
        }
        ttl.map(|ttl| at.saturating_add(ttl.as_nanos() as i64))
    };
    loop {
        let now = now_ns();
        let instant = Instant::now();
        let due: Vec<String> = wanted
            .keys()
            .filter(|resource| !in_flight.contains(*resource))
            .filter(|resource| retry_at.get(*resource).is_none_or(|(at, _)| *at <= instant))
            .filter(|resource| {
                observed.get(*resource).is_none_or(|at| expiry(resource, *at).is_some_and(|end| end <= now))
            })
            .take(concurrency.saturating_sub(in_flight.len()))
            .cloned()
            .collect();
        for resource in due {
            in_flight.insert(resource.clone());
            let lookup = lookup.clone();
            tasks.spawn(async move {
                let result = lookup.get(&resource).await;
                (resource, result)
            });
        }
        // Sleep until the next observation expires or retry is due (at most a second).
        let mut wait = Duration::from_secs(1);
        for resource in wanted.keys().filter(|resource| !in_flight.contains(*resource)) {
            if let Some(end) = observed.get(resource).and_then(|at| expiry(resource, *at)) {
                wait = wait.min(Duration::from_nanos(end.saturating_sub(now).max(0) as u64));
            }
            if let Some((at, _)) = retry_at.get(resource) {
                wait = wait.min(at.saturating_duration_since(instant));
            }
        }
        tokio::select! {
            changes = wanted_changes.recv() => {
                let Some(changes) = changes else { return };
                for (resource, diff) in changes {
                    let count = wanted.entry(resource.clone()).or_insert(0);
                    let was_wanted = *count > 0;
                    *count += diff;
                    if *count <= 0 {
                        wanted.remove(&resource);
                    } else if !was_wanted {
                        let fresh = observed.get(&resource).is_some_and(|at| expiry(&resource, *at).is_none_or(|end| end > now));
                        if fresh {
                            shared.read_hits.fetch_add(1, Ordering::Relaxed);
                        }
                        shared.reads.lock().expect("reads").entry((view.clone(), resource)).or_default();
                    }
                }
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                let Ok((resource, result)) = joined else { continue };
                in_flight.remove(&resource);
                shared.read_fetches.fetch_add(1, Ordering::Relaxed);
                let mut reads = shared.reads.lock().expect("reads");
                let status = reads.entry((view.clone(), resource.clone())).or_default();
                status.reads += 1;
                match result {
                    Ok(body) => {
                        status.error = None;
                        drop(reads);
                        let observed_ns = now_ns();
                        observed.insert(resource.clone(), observed_ns);
                        retry_at.remove(&resource);
                        if observations.send(Observation { resource, body, observed_ns }).is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        status.error = Some(error.to_string());
                        drop(reads);
                        let failures = retry_at.get(&resource).map_or(0, |(_, failures)| *failures);
                        let delay = if error.is_transient() {
                            backoff.delay(failures)
                        } else {
                            ttl.unwrap_or(Duration::from_secs(3600)).max(Duration::from_secs(1))
                        };
                        retry_at.insert(resource, (Instant::now() + delay, failures + 1));
                    }
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
