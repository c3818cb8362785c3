//! Renders [`Plan`]s as differential dataflows and runs them on timely worker threads.
//!
//! Every table is an input collection arranged once, as it arrives; every view is a dataflow of
//! its own that imports the arrangements it reads (and reads their packed rows in place), so
//! creating a view late sees the existing data and views can be defined on views. A view's output is arranged too (for views on it) and
//! mirrored into a [`ViewState`] that readers on other threads can snapshot.
//!
//! The [`Engine`] handle drives the workers with commands over channels. A commit is one logical
//! timestamp: each worker feeds its share of the changes, advances every input, and steps until
//! every view's probe has passed the timestamp, so a read after `commit` returns sees all views at
//! the same, complete timestamp. This is the only module that names timely or differential types:
//! the heavy generic code stays in one place.

use crate::batcher::SortBatcher;
use crate::expr::{eval_all, eval_chunk_all, EvalError, Expr, RowChunk};
use crate::functions::FunctionRegistry;
use crate::hashed_row::{HashedRow, RowPacker};
use crate::plan::{Aggregate, AggregateFunction, JoinKind, Plan, RelationId, SortKey};
use crate::row_counts::RowCounts;
use crate::value::{Row, Value};
use crate::Time;
use differential_dataflow::difference::{IsZero, Multiply, Semigroup};
use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::{KeyBuilder, KeySpine, ValBuilder, ValSpine};
use differential_dataflow::trace::wrappers::frontier::TraceFrontier;
use differential_dataflow::trace::{Cursor, Navigable, SpanOf, TraceReader};
use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::dataflow::operators::{Inspect, Probe, ToStream};
use timely::dataflow::{ProbeHandle, Scope, Stream};
use timely::progress::frontier::AntichainRef;
use timely::worker::Worker;
use weft_ir::transform::peel::{peel, MapStep};

type Collection<'scope> = VecCollection<'scope, Time, Row, isize>;
type RowTrace = TraceAgent<KeySpine<HashedRow, Time, isize>>;
/// A table's or view's arrangement as a view imports it.
type ImportedTrace = TraceFrontier<RowTrace>;
type PairTrace = TraceAgent<ValSpine<HashedRow, HashedRow, Time, isize>>;

/// The rows of a batch of a rows arrangement, each with its total change in the batch.
fn batch_updates(batch: &<RowTrace as TraceReader>::Batch) -> Vec<(&HashedRow, isize)> {
    let mut cursor = batch.cursor();
    let mut updates = Vec::new();
    while let Some(row) = cursor.get_key(batch) {
        let mut total = 0;
        while cursor.get_val(batch).is_some() {
            cursor.map_times(batch, |_, diff| total += *diff);
            cursor.step_val(batch);
        }
        if total != 0 {
            updates.push((row, total));
        }
        cursor.step_key(batch);
    }
    updates
}

/// Arranges rows by themselves (tables and views), sorting with a [`SortBatcher`].
fn arrange_rows(rows: VecCollection<'_, Time, (HashedRow, ()), isize>) -> Arranged<'_, RowTrace> {
    rows.arrange::<SortBatcher<HashedRow, (), isize, KeyBuilder<HashedRow, Time, isize>>, _>(SortBatcher::new)
}

/// Arranges `(key, row)` pairs by key (a join's sides), sorting with a [`SortBatcher`].
fn arrange_pairs(pairs: VecCollection<'_, Time, (HashedRow, HashedRow), isize>) -> Arranged<'_, PairTrace> {
    pairs.arrange::<SortBatcher<HashedRow, HashedRow, isize, ValBuilder<HashedRow, HashedRow, Time, isize>>, _>(
        SortBatcher::new,
    )
}

/// Errors of the engine itself.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The timely runtime could not start.
    #[error("could not start {workers} timely worker(s): {message}")]
    Start {
        /// Workers asked for.
        workers: usize,
        /// Timely's error.
        message: String,
    },
    /// A worker thread stopped unexpectedly (a bug); the engine must be reopened.
    #[error("a dataflow worker stopped unexpectedly")]
    WorkerDied,
    /// A plan or change names a relation the engine does not have.
    #[error("unknown relation id {0}")]
    UnknownRelation(RelationId),
    /// A plan calls a function the engine's registry does not have.
    #[error("{0}")]
    UnknownFunction(String),
    /// Evaluating a view's expressions failed on some rows.
    #[error("view {view} cannot be read: {message}")]
    ViewError {
        /// The view.
        view: String,
        /// The first evaluation error.
        message: String,
    },
}

/// One row inserted (`diff > 0`) or deleted (`diff < 0`) in a table.
#[derive(Clone, Debug)]
pub struct Change {
    /// The table.
    pub table: RelationId,
    /// The row.
    pub row: Row,
    /// Copies added (positive) or removed (negative).
    pub diff: isize,
}

/// The readable contents of one view, maintained by the workers, and the subscriptions to its
/// changes.
#[derive(Debug, Default)]
pub struct ViewState {
    name: String,
    rows: Mutex<RowCounts>,
    errors: Mutex<BTreeMap<String, isize>>,
    /// The changes of the timestamp being applied; kept only while someone subscribes.
    pending: Mutex<Vec<(Row, isize)>>,
    subscribers: Mutex<Vec<Subscriber>>,
    subscribed: AtomicBool,
    /// The latest timestamp the rows are complete for.
    time: AtomicU64,
}

/// The consolidated changes of one view at one timestamp, in the order timestamps commit.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewChanges {
    /// The timestamp the changes happened at.
    pub time: Time,
    /// Rows with their change in multiplicity (never zero).
    pub updates: Vec<(Row, isize)>,
}

/// A view's contents at one timestamp and a stream of its changes after that timestamp.
#[derive(Debug)]
pub struct Subscription {
    /// The timestamp of `snapshot`.
    pub time: Time,
    /// The view's rows and multiplicities at `time`.
    pub snapshot: Vec<(Row, isize)>,
    /// Every later timestamp at which the view changed, in order. Ends when the view is dropped
    /// (or, for a bounded subscription, when its reader falls too far behind).
    pub changes: ChangeStream,
}

/// Called after a subscriber's stream got changes or ended, to wake its reader.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// The subscriber's end of a view's changes.
pub struct ChangeStream {
    receiver: Receiver<ViewChanges>,
    /// Changes (rows) sent and not yet received.
    queued: Arc<std::sync::atomic::AtomicUsize>,
    fell_behind: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for ChangeStream {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ChangeStream").field("queued", &self.queued).finish()
    }
}

impl ChangeStream {
    fn received(&self, changes: ViewChanges) -> ViewChanges {
        self.queued.fetch_sub(changes.updates.len(), AtomicOrdering::SeqCst);
        changes
    }

    /// The next changes, if some are waiting.
    pub fn try_recv(&self) -> Result<ViewChanges, std::sync::mpsc::TryRecvError> {
        self.receiver.try_recv().map(|changes| self.received(changes))
    }

    /// The next changes, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Result<ViewChanges, std::sync::mpsc::RecvTimeoutError> {
        self.receiver.recv_timeout(timeout).map(|changes| self.received(changes))
    }

    /// Whether the stream ended because its reader fell further behind than its bound.
    pub fn fell_behind(&self) -> bool {
        self.fell_behind.load(AtomicOrdering::SeqCst)
    }
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Subscriber").field("queued", &self.queued).field("bound", &self.bound).finish()
    }
}

/// The view's end of a subscription.
struct Subscriber {
    sender: Sender<ViewChanges>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    fell_behind: Arc<std::sync::atomic::AtomicBool>,
    /// The most changes (rows) that may wait unreceived.
    bound: usize,
    wake: Option<Wake>,
}

impl Subscriber {
    /// Sends `changes`, unless the reader is gone or would be more than its bound behind (then
    /// the subscription ends, marked as fallen behind). A reader that has taken everything
    /// sent gets the next commit whatever its size. Whether it goes on.
    fn send(&self, changes: &ViewChanges) -> bool {
        let queued = self.queued.load(AtomicOrdering::SeqCst);
        let delivered = if queued > 0 && queued.saturating_add(changes.updates.len()) > self.bound {
            self.fell_behind.store(true, AtomicOrdering::SeqCst);
            false
        } else {
            self.queued.fetch_add(changes.updates.len(), AtomicOrdering::SeqCst);
            self.sender.send(changes.clone()).is_ok()
        };
        if let Some(wake) = &self.wake {
            wake();
        }
        delivered
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // The reader finds the stream ended once this sender is gone: wake it to look.
        if let Some(wake) = self.wake.take() {
            let (sender, _) = channel();
            drop(std::mem::replace(&mut self.sender, sender));
            wake();
        }
    }
}

impl ViewState {
    fn new(name: &str, time: Time) -> ViewState {
        ViewState { name: name.to_string(), time: AtomicU64::new(time), ..ViewState::default() }
    }

    /// The view's rows with their multiplicities, or the first evaluation error that currently
    /// holds for some input row.
    pub fn snapshot(&self) -> Result<Vec<(Row, isize)>, EngineError> {
        if let Some((message, _)) = self.errors.lock().expect("errors lock").iter().next() {
            return Err(EngineError::ViewError { view: self.name.clone(), message: message.clone() });
        }
        let rows = self.rows.lock().expect("rows lock");
        Ok(rows.iter().map(|(row, count)| (row.to_row(), count)).collect())
    }

    /// The latest timestamp the view's rows are complete for.
    pub fn time(&self) -> Time {
        self.time.load(AtomicOrdering::SeqCst)
    }

    /// The view's current contents and a stream of all its later changes. The caller must hold
    /// the commit [`Gate`](crate::gate::Gate) as a reader, so no commit is half applied.
    pub fn subscribe(&self) -> Result<Subscription, EngineError> {
        self.subscribe_bounded(usize::MAX, None)
    }

    /// As [`ViewState::subscribe`], but the subscription ends (its stream [`fell
    /// behind`](ChangeStream::fell_behind)) when more than `bound` changes would wait unreceived,
    /// and `wake` is called whenever changes arrive or the stream ends.
    pub fn subscribe_bounded(&self, bound: usize, wake: Option<Wake>) -> Result<Subscription, EngineError> {
        let snapshot = self.snapshot()?;
        let (sender, receiver) = channel();
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let fell_behind = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let subscriber = Subscriber { sender, queued: queued.clone(), fell_behind: fell_behind.clone(), bound, wake };
        self.subscribers.lock().expect("subscribers lock").push(subscriber);
        self.subscribed.store(true, AtomicOrdering::SeqCst);
        Ok(Subscription { time: self.time(), snapshot, changes: ChangeStream { receiver, queued, fell_behind } })
    }

    /// The number of open subscriptions.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.lock().expect("subscribers lock").len()
    }

    /// The number of rows (with multiplicity).
    pub fn len(&self) -> usize {
        self.rows.lock().expect("rows lock").iter().map(|(_, count)| count.max(0).unsigned_abs()).sum()
    }

    /// Whether the view has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies a batch of the workers' output to the readable rows (and the pending changes).
    fn apply<'a>(&self, updates: impl ExactSizeIterator<Item = (&'a HashedRow, isize)>) {
        let mut rows = self.rows.lock().expect("rows lock");
        // At most this many new rows: growing once avoids rehashing (and faulting in) the
        // table again and again when a view's first batch is large.
        rows.reserve(updates.len());
        let subscribed = self.subscribed.load(AtomicOrdering::SeqCst);
        let mut pending = subscribed.then(|| self.pending.lock().expect("pending lock"));
        for (row, diff) in updates {
            rows.add(row, diff);
            if let Some(pending) = pending.as_mut() {
                pending.push((row.to_row(), diff));
            }
        }
    }

    /// Marks timestamp `time` complete and sends its consolidated changes to the subscribers.
    fn publish(&self, time: Time) {
        self.time.store(time, AtomicOrdering::SeqCst);
        if !self.subscribed.load(AtomicOrdering::SeqCst) {
            return;
        }
        let mut updates = std::mem::take(&mut *self.pending.lock().expect("pending lock"));
        updates.sort_unstable_by(|left, right| left.0.cmp(&right.0));
        let mut consolidated: Vec<(Row, isize)> = Vec::with_capacity(updates.len());
        for (row, diff) in updates {
            match consolidated.last_mut() {
                Some((last, total)) if *last == row => *total += diff,
                _ => consolidated.push((row, diff)),
            }
        }
        consolidated.retain(|(_, diff)| *diff != 0);
        let mut subscribers = self.subscribers.lock().expect("subscribers lock");
        if !consolidated.is_empty() {
            let changes = ViewChanges { time, updates: consolidated };
            subscribers.retain(|subscriber| subscriber.send(&changes));
        }
        if subscribers.is_empty() {
            self.subscribed.store(false, AtomicOrdering::SeqCst);
        }
    }

    /// Ends every subscription (the view is being dropped).
    fn close(&self) {
        self.subscribers.lock().expect("subscribers lock").clear();
        self.subscribed.store(false, AtomicOrdering::SeqCst);
    }

    fn record_error(&self, error: &EvalError, diff: isize) {
        let mut errors = self.errors.lock().expect("errors lock");
        let count = errors.entry(error.0.clone()).or_insert(0);
        *count += diff;
        if *count == 0 {
            errors.remove(&error.0);
        }
    }
}

enum WorkerCommand {
    CreateTable {
        id: RelationId,
    },
    CreateView {
        id: RelationId,
        plan: Arc<Plan>,
        state: Arc<ViewState>,
    },
    Drop {
        id: RelationId,
    },
    Commit {
        time: Time,
        changes: Vec<Change>,
    },
    /// Rows (packed) of the next commit, fed ahead of it (see [`Stager`]): no reply.
    Stage {
        rows: Vec<(RelationId, HashedRow, isize)>,
    },
}

/// Hands the workers changes of the next [`Engine::commit`] ahead of it, packed on the calling
/// thread and sent without waiting: the workers sort them into the tables' arrangements while
/// the caller still checks and logs them. Nothing is visible until that commit, which then
/// needs only the changes not staged; changes not to be committed after all are taken back with
/// [`Engine::withdraw`] (both cancel out within the timestamp, so no view ever sees them).
/// Nothing else may reach the engine in between.
pub struct Stager {
    commands: Vec<Sender<WorkerCommand>>,
}

impl Stager {
    /// Stages `changes` (checked by [`Engine::stager`]).
    pub fn stage(&self, changes: &[Change]) -> Result<(), EngineError> {
        self.send(changes, 1)
    }

    fn send(&self, changes: &[Change], sign: isize) -> Result<(), EngineError> {
        let workers = self.commands.len();
        let mut shares: Vec<Vec<(RelationId, HashedRow, isize)>> =
            (0..workers).map(|_| Vec::with_capacity(changes.len() / workers + 1)).collect();
        for (index, change) in changes.iter().enumerate() {
            shares[index % workers].push((change.table, HashedRow::from_values(&change.row), sign * change.diff));
        }
        for (sender, rows) in self.commands.iter().zip(shares) {
            sender.send(WorkerCommand::Stage { rows }).map_err(|_| EngineError::WorkerDied)?;
        }
        Ok(())
    }
}

/// A running set of timely workers holding the tables and views.
pub struct Engine {
    commands: Vec<Sender<WorkerCommand>>,
    replies: Receiver<()>,
    guards: Option<timely::communication::WorkerGuards<()>>,
    time: Time,
    relations: HashMap<RelationId, Option<Arc<ViewState>>>,
    spins: u32,
    /// The functions views call (see [`Engine::functions`]).
    functions: FunctionRegistry,
}

/// Steps a worker takes after staged rows arrive: enough for them to reach the arrangements.
const STAGE_STEPS: usize = 4;

/// How many times a thread polls a channel before blocking on it (a few hundred microseconds).
const SPIN_LIMIT: u32 = 20_000;

impl Engine {
    /// Starts `workers` timely worker threads in this process.
    pub fn start(workers: usize) -> Result<Engine, EngineError> {
        let workers = workers.max(1);
        let (reply_sender, replies) = channel();
        let mut commands = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..workers {
            let (sender, receiver) = channel();
            commands.push(sender);
            receivers.push(Mutex::new(Some(receiver)));
        }
        let receivers = Arc::new(receivers);
        // Spinning pays only while every spinning thread (the workers and the caller) has a core.
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        let spins = if workers < cores { SPIN_LIMIT } else { 0 };
        let reply_sender = Mutex::new(reply_sender);
        let guards = timely::execute(timely::Config::process(workers), move |worker| {
            let receiver =
                receivers[worker.index()].lock().expect("receiver lock").take().expect("one receiver per worker");
            let replies = reply_sender.lock().expect("reply lock").clone();
            run_worker(worker, receiver, replies, spins);
        })
        .map_err(|message| EngineError::Start { workers, message })?;
        Ok(Engine {
            commands,
            replies,
            guards: Some(guards),
            time: 0,
            relations: HashMap::new(),
            spins,
            functions: FunctionRegistry::default(),
        })
    }

    /// The functions views may call: register a function here before creating a view that
    /// calls it (plans name functions by id; creating a view binds them).
    pub fn functions(&self) -> &FunctionRegistry {
        &self.functions
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.commands.len()
    }

    fn broadcast(&self, mut make: impl FnMut(usize) -> WorkerCommand) -> Result<(), EngineError> {
        for (worker, sender) in self.commands.iter().enumerate() {
            sender.send(make(worker)).map_err(|_| EngineError::WorkerDied)?;
        }
        for _ in &self.commands {
            receive_soon(&self.replies, self.spins).ok_or(EngineError::WorkerDied)?;
        }
        Ok(())
    }

    /// Adds an empty table.
    pub fn create_table(&mut self, id: RelationId) -> Result<(), EngineError> {
        self.broadcast(|_| WorkerCommand::CreateTable { id })?;
        self.relations.insert(id, None);
        Ok(())
    }

    /// Builds a view's dataflow; when this returns, the view reflects every committed change.
    pub fn create_view(&mut self, id: RelationId, name: &str, mut plan: Plan) -> Result<Arc<ViewState>, EngineError> {
        if let Some(missing) = plan.dependencies().into_iter().find(|dep| !self.relations.contains_key(dep)) {
            return Err(EngineError::UnknownRelation(missing));
        }
        plan.bind_functions(&self.functions).map_err(|error| EngineError::UnknownFunction(error.0))?;
        let state = Arc::new(ViewState::new(name, self.time));
        let plan = Arc::new(plan);
        self.broadcast(|_| WorkerCommand::CreateView { id, plan: plan.clone(), state: state.clone() })?;
        // Building the view closed the current timestamp (see `advance`).
        self.publish(self.time);
        self.time += 1;
        self.relations.insert(id, Some(state.clone()));
        Ok(state)
    }

    /// Removes a table or view (the caller checks that nothing depends on it).
    pub fn drop_relation(&mut self, id: RelationId) -> Result<(), EngineError> {
        match self.relations.remove(&id) {
            None => return Err(EngineError::UnknownRelation(id)),
            Some(Some(view)) => view.close(),
            Some(None) => {}
        }
        self.broadcast(|_| WorkerCommand::Drop { id })
    }

    /// Applies `changes` as one timestamp and waits until every view reflects them.
    pub fn commit(&mut self, changes: Vec<Change>) -> Result<Time, EngineError> {
        if let Some(change) = changes.iter().find(|change| !matches!(self.relations.get(&change.table), Some(None))) {
            return Err(EngineError::UnknownRelation(change.table));
        }
        let time = self.time;
        // Each worker feeds a share of the changes; the dataflow exchanges them as needed.
        let workers = self.workers();
        let mut shares: Vec<Vec<Change>> =
            (0..workers).map(|_| Vec::with_capacity(changes.len() / workers + 1)).collect();
        for (index, change) in changes.into_iter().enumerate() {
            shares[index % workers].push(change);
        }
        self.broadcast(|worker| WorkerCommand::Commit { time, changes: std::mem::take(&mut shares[worker]) })?;
        self.publish(time);
        self.time += 1;
        Ok(time)
    }

    /// A handle to hand the workers `changes` of the next [`Engine::commit`] ahead of it, from
    /// any thread (see [`Stager`]); an error if one names no table.
    pub fn stager(&self, changes: &[Change]) -> Result<Stager, EngineError> {
        if let Some(change) = changes.iter().find(|change| !matches!(self.relations.get(&change.table), Some(None))) {
            return Err(EngineError::UnknownRelation(change.table));
        }
        Ok(Stager { commands: self.commands.clone() })
    }

    /// Takes back changes staged since the last commit (see [`Stager`]).
    pub fn withdraw(&self, changes: &[Change]) -> Result<(), EngineError> {
        Stager { commands: self.commands.clone() }.send(changes, -1)
    }

    /// Tells every view that `time` is complete.
    fn publish(&self, time: Time) {
        for view in self.relations.values().flatten() {
            view.publish(time);
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.commands.clear();
        if let Some(guards) = self.guards.take() {
            drop(guards.join());
        }
    }
}

/// Receives from `channel`, spinning `spins` times before blocking: a commit's round trip to the
/// workers is then a few microseconds instead of two thread wake-ups. `None` once the sender
/// is gone.
fn receive_soon<T>(channel: &Receiver<T>, spins: u32) -> Option<T> {
    for _ in 0..spins {
        match channel.try_recv() {
            Ok(message) => return Some(message),
            Err(std::sync::mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
        }
    }
    channel.recv().ok()
}

#[derive(Default)]
struct WorkerState {
    inputs: HashMap<RelationId, InputSession<Time, (HashedRow, ()), isize>>,
    traces: HashMap<RelationId, RowTrace>,
    dataflows: HashMap<RelationId, usize>,
    probes: HashMap<RelationId, ProbeHandle<Time>>,
    time: Time,
}

thread_local! {
    static CURRENT_WORKER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The index of the timely worker running on this thread, if any (for provenance).
pub fn current_worker() -> Option<usize> {
    CURRENT_WORKER.with(|worker| worker.get())
}

fn run_worker(worker: &mut Worker, commands: Receiver<WorkerCommand>, replies: Sender<()>, spins: u32) {
    CURRENT_WORKER.with(|current| current.set(Some(worker.index())));
    let mut state = WorkerState::default();
    while let Some(command) = receive_soon(&commands, spins) {
        match command {
            WorkerCommand::CreateTable { id } => {
                let dataflow = worker.next_dataflow_index();
                let (mut input, trace, probe) = worker.dataflow::<Time, _, _>(|scope| {
                    let (input, rows) = scope.new_collection::<(HashedRow, ()), isize>();
                    let arranged = arrange_rows(rows);
                    let (probe, _) = arranged.stream.clone().probe();
                    (input, arranged.trace, probe)
                });
                input.advance_to(state.time);
                state.inputs.insert(id, input);
                state.traces.insert(id, trace);
                state.probes.insert(id, probe);
                state.dataflows.insert(id, dataflow);
            }
            WorkerCommand::CreateView { id, plan, state: view } => {
                let dataflow = worker.next_dataflow_index();
                let traces = &mut state.traces;
                let (trace, probe) = worker.dataflow::<Time, _, _>(|scope| {
                    // The view's last row map and the hashing of its rows share one operator.
                    let output = render_mapped(&plan, scope, traces, &view).evaluate_packed(&view);
                    let arranged = arrange_rows(output);
                    let mirror = view.clone();
                    // The mirror reads the output's batches directly: one operator, no copies.
                    let (probe, _) = arranged
                        .stream
                        .clone()
                        .inspect_core(move |event| {
                            if let Ok((_, batches)) = event {
                                for batch in batches.iter().filter_map(|span| span.inner.as_ref()) {
                                    mirror.apply(batch_updates(batch).into_iter());
                                }
                            }
                        })
                        .probe();
                    (arranged.trace, probe)
                });
                state.traces.insert(id, trace);
                state.dataflows.insert(id, dataflow);
                state.probes.insert(id, probe);
                // Imports present the history as of the compaction frontier, the current time:
                // close that time so the view's initial contents are complete.
                let time = state.time;
                advance(worker, &mut state, time);
            }
            WorkerCommand::Drop { id } => {
                state.inputs.remove(&id);
                state.traces.remove(&id);
                state.probes.remove(&id);
                if let Some(dataflow) = state.dataflows.remove(&id) {
                    worker.drop_dataflow(dataflow);
                }
            }
            WorkerCommand::Commit { time, changes } => {
                for change in changes {
                    if let Some(input) = state.inputs.get_mut(&change.table) {
                        input.update((HashedRow::new(change.row), ()), change.diff);
                    }
                }
                advance(worker, &mut state, time);
            }
            WorkerCommand::Stage { rows } => {
                for (table, row, diff) in rows {
                    if let Some(input) = state.inputs.get_mut(&table) {
                        input.update((row, ()), diff);
                    }
                }
                for input in state.inputs.values_mut() {
                    input.flush();
                }
                // Let the tables' arrangements take the rows in (their batchers sort them as
                // they arrive); the time stays open until the commit.
                for _ in 0..STAGE_STEPS {
                    worker.step();
                }
                continue;
            }
        }
        if replies.send(()).is_err() {
            break;
        }
    }
}

/// Closes timestamp `time` on every input, waits until every dataflow has processed it, and lets
/// the arrangements forget the distinctions between times before it.
fn advance(worker: &mut Worker, state: &mut WorkerState, time: Time) {
    let next = time + 1;
    for input in state.inputs.values_mut() {
        input.advance_to(next);
        input.flush();
    }
    let probes: Vec<ProbeHandle<Time>> = state.probes.values().cloned().collect();
    worker.step_while(|| probes.iter().any(|probe| probe.less_than(&next)));
    let frontier = [next];
    for trace in state.traces.values_mut() {
        trace.set_logical_compaction(AntichainRef::new(&frontier));
        trace.set_physical_compaction(AntichainRef::new(&frontier));
    }
    state.time = next;
}

fn render<'scope>(
    plan: &Plan,
    scope: Scope<'scope, Time>,
    traces: &mut HashMap<RelationId, RowTrace>,
    view: &Arc<ViewState>,
) -> Collection<'scope> {
    match plan {
        Plan::Get { .. } | Plan::Project { .. } | Plan::Filter { .. } => {
            apply_map(&render_mapped(plan, scope, traces, view), view)
        }
        Plan::Constant { rows, .. } => constant(scope, rows.clone()),
        Plan::Join { .. } => rows_of(render_join_plan(plan, None, scope, traces, view), view),
        Plan::Reduce { input, group, aggregates } => {
            let input = render_mapped(input, scope, traces, view);
            let output = if plan.accumulable() {
                render_accumulable_reduce(input, group.clone(), aggregates.clone(), view)
            } else {
                render_rescan_reduce(input, group.clone(), aggregates.clone(), view)
            };
            if group.is_empty() {
                // A global aggregate has one row even over no input: add the default row while
                // the aggregate produced none.
                let default: Row = aggregates.iter().map(empty_aggregate).collect();
                let present = output.clone().map({
                    let default = default.clone();
                    move |_| default.clone()
                });
                output.concat(constant(scope, vec![default])).concat(present.negate())
            } else {
                output
            }
        }
        Plan::Distinct { input } => distinct(render(input, scope, traces, view)),
        Plan::Union { inputs } => {
            let inputs: Vec<Collection<'scope>> =
                inputs.iter().map(|input| render(input, scope, traces, view)).collect();
            differential_dataflow::collection::concatenate(scope, inputs)
        }
        Plan::TopK { input, order, limit, offset } => {
            render_top_k(render(input, scope, traces, view), order.clone(), *limit, *offset)
        }
    }
}

fn constant(scope: Scope<'_, Time>, rows: Vec<Row>) -> Collection<'_> {
    let rows = if scope.index() == 0 { rows } else { Vec::new() };
    rows.into_iter().map(|row| (row, 0, 1isize)).to_stream(scope).as_collection()
}

struct JoinSpec {
    kind: JoinKind,
    left_keys: Vec<Expr>,
    right_keys: Vec<Expr>,
    nulls_equal: bool,
    residual: Option<Expr>,
    left_arity: usize,
    right_arity: usize,
    /// For an inner join without residual whose consumer keeps only some columns: the columns
    /// (of left row ++ right row) to build, so the others are never copied.
    columns: Option<Vec<usize>>,
}

/// Renders `plan` with the chain of projections and filters on top of it still to apply (see
/// [`peel`]). An inner join whose rows are first narrowed to some of their columns builds only
/// those columns.
fn render_mapped<'scope>(
    plan: &Plan,
    scope: Scope<'scope, Time>,
    traces: &mut HashMap<RelationId, RowTrace>,
    view: &Arc<ViewState>,
) -> Mapped<'scope> {
    let (base, steps) = peel(plan);
    let mut map = RowMap { steps };
    if let Plan::Join { kind: JoinKind::Inner, residual: None, .. } = base {
        let columns = match map.steps.first() {
            Some(MapStep::Select(columns)) => Some(columns.clone()),
            Some(MapStep::Project(exprs)) => {
                exprs.iter().map(|expr| if let Expr::Column(index) = expr { Some(*index) } else { None }).collect()
            }
            _ => None,
        };
        if let Some(columns) = columns {
            map.steps.remove(0);
            return Mapped { source: render_join_plan(base, Some(columns), scope, traces, view), map };
        }
    }
    let source = match base {
        Plan::Get { id, .. } => MappedInput::Imported(
            traces
                .get_mut(id)
                .expect("dependencies are checked before rendering")
                .import_frontier(scope, "Import")
                .0
                .stream,
        ),
        _ => MappedInput::Rows(render(base, scope, traces, view)),
    };
    Mapped { source, map }
}

/// Renders a `Plan::Join`, building only `columns` of its rows if given (see [`JoinSpec`]).
fn render_join_plan<'scope>(
    plan: &Plan,
    columns: Option<Vec<usize>>,
    scope: Scope<'scope, Time>,
    traces: &mut HashMap<RelationId, RowTrace>,
    view: &Arc<ViewState>,
) -> MappedInput<'scope> {
    let Plan::Join { left, right, kind, left_keys, right_keys, nulls_equal, residual } = plan else {
        unreachable!("render_join_plan renders joins only")
    };
    let spec = JoinSpec {
        kind: *kind,
        left_keys: left_keys.clone(),
        right_keys: right_keys.clone(),
        nulls_equal: *nulls_equal,
        residual: residual.clone(),
        left_arity: left.arity(),
        right_arity: right.arity(),
        columns,
    };
    let left = render_mapped(left, scope, traces, view);
    let right = render_mapped(right, scope, traces, view);
    render_join(left, right, spec, view)
}

/// A chain of filters and projections applied row by row inside one operator (its consumer's,
/// where possible): fewer operators means less scheduling and copying per update.
#[derive(Clone, Default)]
struct RowMap {
    steps: Vec<MapStep>,
}

impl RowMap {
    /// Applies the steps to every row of `chunk`, step by step over the whole chunk (so a
    /// function is called once per chunk, see [`Expr::eval_chunk`]). Rows a filter drops or
    /// whose evaluation fails are removed, the failure handed to `failed` with the row's origin;
    /// `origins` (the input row each row of the chunk came from) is kept in step. `scratch` is
    /// the spare chunk each step builds into.
    fn apply_chunk(
        &self,
        chunk: &mut RowChunk,
        origins: &mut Vec<u32>,
        scratch: &mut RowChunk,
        mut failed: impl FnMut(u32, EvalError),
    ) {
        for step in &self.steps {
            let mut kept = 0;
            let mut keep = |row: usize, error: Option<EvalError>| match error {
                None => {
                    origins[kept] = origins[row];
                    kept += 1;
                }
                Some(error) => failed(origins[row], error),
            };
            match step {
                MapStep::Filter(predicate) => {
                    let mut results = Vec::with_capacity(chunk.rows());
                    predicate.eval_chunk(chunk, &mut results);
                    scratch.clear();
                    for (row, result) in results.into_iter().enumerate() {
                        match result {
                            Ok(Value::Bool(true)) => {
                                scratch.values.extend(chunk.row_mut(row).iter_mut().map(std::mem::take));
                                scratch.end_row();
                                keep(row, None);
                            }
                            Ok(_) => {}
                            Err(error) => keep(row, Some(error)),
                        }
                    }
                }
                MapStep::Project(exprs) => eval_chunk_all(exprs, chunk, scratch, keep),
                MapStep::Select(columns) => {
                    scratch.clear();
                    for row in 0..chunk.rows() {
                        let values = chunk.row_mut(row);
                        scratch.values.extend(columns.iter().map(|column| std::mem::take(&mut values[*column])));
                        scratch.end_row();
                        keep(row, None);
                    }
                }
            }
            origins.truncate(kept);
            std::mem::swap(chunk, scratch);
        }
    }

    fn is_identity(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Where a [`Mapped`] input's rows come from.
enum MappedInput<'scope> {
    /// A rendered collection.
    Rows(Collection<'scope>),
    /// A rendered collection of packed rows (an inner join's output: built by copying the
    /// joined rows' packed values, and read by its consumer while still in cache).
    Packed(VecCollection<'scope, Time, HashedRow, isize>),
    /// An imported table or view arrangement, read in place: stored (packed) rows are decoded
    /// into a reused chunk and mapped from there, so no stored row is copied whole.
    Imported(Stream<'scope, Time, Vec<SpanOf<ImportedTrace>>>),
}

/// A rendered input with a row map still to apply (in its consumer's operator).
struct Mapped<'scope> {
    source: MappedInput<'scope>,
    map: RowMap,
}

impl<'scope> Mapped<'scope> {
    /// The mapped rows, packed (a view's output).
    fn evaluate_packed(&self, view: &Arc<ViewState>) -> VecCollection<'scope, Time, (HashedRow, ()), isize> {
        self.evaluate(view, false, |row, diff| Ok(Some(((HashedRow::from_values(row.iter()), ()), diff))))
    }

    /// Applies the row map and then `logic` (given the mapped row and its multiplicity) to every
    /// update, in one operator, recording evaluation errors on the view. Rows are mapped a
    /// chunk at a time (see [`Gathered`]). With `combine`, the updates of one activation are
    /// first added up per `(record, time)` (see [`Combiner`]).
    fn evaluate<D, R>(
        &self,
        view: &Arc<ViewState>,
        combine: bool,
        mut logic: impl FnMut(Cow<'_, [Value]>, isize) -> Result<Option<(D, R)>, EvalError> + 'static,
    ) -> VecCollection<'scope, Time, D, R>
    where
        D: Clone + Hash + Eq + 'static,
        R: Semigroup + 'static,
    {
        let map = self.map.clone();
        let view = view.clone();
        let mut combiner = Combiner::new(combine);
        let mut gathered = Gathered::default();
        // Maps the gathered rows and hands each mapped row's updates to `logic`.
        macro_rules! flush {
            ($session:expr) => {
                gathered.flush(
                    &map,
                    |row, updates| {
                        for (time, diff) in updates {
                            let outcome = logic(Cow::Borrowed(row), *diff);
                            combiner.offer(outcome, *time, *diff, &view, |update| $session.give(update));
                        }
                    },
                    |error, updates| updates.iter().for_each(|(_, diff)| view.record_error(&error, *diff)),
                )
            };
        }
        // The operator of a collection (of rows, or of packed rows): each update one row, whose
        // values `fill` pushes onto the chunk.
        macro_rules! one_row_per_update {
            ($rows:expr, $name:literal, |$row:ident, $values:ident| $fill:expr) => {
                $rows.inner.clone().unary(Pipeline, $name, move |_, _| {
                    move |input, output| {
                        input.for_each(|capability, data| {
                            let mut session = output.session(&capability);
                            combiner.hold(&capability);
                            for ($row, time, diff) in data.drain(..) {
                                if gathered.push(|$values| $fill, &[(time, diff)]) {
                                    flush!(session);
                                }
                            }
                            flush!(session);
                        });
                        combiner.flush(|capability, updates| output.session(capability).give_iterator(updates));
                    }
                })
            };
        }
        let stream = match &self.source {
            MappedInput::Rows(rows) if map.is_identity() => {
                rows.inner.clone().unary(Pipeline, "Mapped", move |_, _| {
                    move |input, output| {
                        input.for_each(|capability, data| {
                            let mut session = output.session(&capability);
                            combiner.hold(&capability);
                            for (row, time, diff) in data.drain(..) {
                                let outcome = logic(Cow::Owned(row), diff);
                                combiner.offer(outcome, time, diff, &view, |update| session.give(update));
                            }
                        });
                        combiner.flush(|capability, updates| output.session(capability).give_iterator(updates));
                    }
                })
            }
            MappedInput::Rows(rows) => one_row_per_update!(rows, "Mapped", |row, values| values.extend(row)),
            MappedInput::Packed(rows) => {
                one_row_per_update!(rows, "PackedMapped", |row, values| row.decode_into(values))
            }
            MappedInput::Imported(stream) => stream.clone().unary(Pipeline, "ImportMapped", move |_, _| {
                let mut times: Vec<(Time, isize)> = Vec::new();
                move |input, output| {
                    input.for_each(|capability, data| {
                        let mut session = output.session(&capability);
                        combiner.hold(&capability);
                        for batch in data.iter().filter_map(|span| span.inner.as_ref()) {
                            for_each_stored_row(batch, &mut times, |row, times| {
                                if gathered.push(|values| row.decode_into(values), times) {
                                    flush!(session);
                                }
                            });
                        }
                        flush!(session);
                    });
                    combiner.flush(|capability, updates| output.session(capability).give_iterator(updates));
                }
            }),
        };
        stream.as_collection()
    }
}

/// Rows gathered from an operator's input for a [`RowMap`] to map at once (see
/// [`RowMap::apply_chunk`]), each with its updates.
#[derive(Default)]
struct Gathered {
    chunk: RowChunk,
    scratch: RowChunk,
    /// Input row `i`'s updates are `updates[ends[i - 1]..ends[i]]`.
    updates: Vec<(Time, isize)>,
    ends: Vec<usize>,
    /// The input row each row of the mapped chunk came from.
    origins: Vec<u32>,
}

impl Gathered {
    /// Rows gathered before they are mapped: enough to share a function's per-call costs, few
    /// enough to stay in cache.
    const ROWS: usize = 1024;

    /// Adds the row `fill` pushes onto a vector of values, with its `updates`. True when the
    /// chunk is full and should be flushed.
    fn push(&mut self, fill: impl FnOnce(&mut Row), updates: &[(Time, isize)]) -> bool {
        fill(&mut self.chunk.values);
        self.chunk.end_row();
        self.updates.extend_from_slice(updates);
        self.ends.push(self.updates.len());
        self.chunk.rows() >= Gathered::ROWS
    }

    /// Maps the gathered rows with `map`, then calls `mapped` with each mapped row and its input
    /// row's updates, and `failed` with each failure and its row's updates; empties the chunk.
    fn flush(
        &mut self,
        map: &RowMap,
        mut mapped: impl FnMut(&[Value], &[(Time, isize)]),
        mut failed: impl FnMut(EvalError, &[(Time, isize)]),
    ) {
        if self.chunk.rows() == 0 {
            return;
        }
        let Gathered { chunk, scratch, updates, ends, origins } = self;
        let updates_of = |origin: u32| {
            let origin = origin as usize;
            &updates[if origin == 0 { 0 } else { ends[origin - 1] }..ends[origin]]
        };
        origins.clear();
        origins.extend(0..chunk.rows() as u32);
        map.apply_chunk(chunk, origins, scratch, |origin, error| failed(error, updates_of(origin)));
        for (row, origin) in origins.iter().enumerate() {
            mapped(chunk.row(row), updates_of(*origin));
        }
        chunk.clear();
        updates.clear();
        ends.clear();
    }
}

/// Adds up an operator's output updates per `(record, time)` over one activation before sending
/// them, when asked to: an accumulable GROUP BY over a million rows in fifty groups then hands
/// its arrangement fifty updates per activation instead of a million (sorting and merging those
/// was the largest cost of a bulk load after the join). Without `combine`, updates go straight
/// to the output session.
struct Combiner<D, R> {
    combine: bool,
    /// Whether the current container's updates are held: not when its message came with no
    /// capability (an empty stamp), whose updates then go straight out under it.
    holding: bool,
    /// The earliest capability of the activation's inputs: every held update's time is at or
    /// after it.
    capability: Option<Capability<Time>>,
    updates: HashMap<(D, Time), R, foldhash::fast::FixedState>,
}

impl<D: Hash + Eq, R: Semigroup> Combiner<D, R> {
    fn new(combine: bool) -> Self {
        Combiner { combine, holding: false, capability: None, updates: HashMap::default() }
    }

    /// Keeps the earliest capability seen, if combining.
    fn hold(&mut self, capability: &InputCapability<Time>) {
        self.holding = self.combine && capability.least().is_some();
        if !self.holding {
            return;
        }
        let earlier = match (&self.capability, capability.least()) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(held), Some(time)) => time < held.time(),
        };
        if earlier {
            self.capability = capability.retain_least(0);
        }
    }

    /// Takes the outcome of mapping one update (of multiplicity `multiplicity`): an output
    /// update is held, if combining, or handed to `give`; an error is recorded on the view.
    fn offer(
        &mut self,
        outcome: Result<Option<(D, R)>, EvalError>,
        time: Time,
        multiplicity: isize,
        view: &ViewState,
        give: impl FnOnce((D, Time, R)),
    ) {
        match outcome {
            Ok(Some((data, diff))) if !self.holding => give((data, time, diff)),
            Ok(Some((data, diff))) => match self.updates.entry((data, time)) {
                std::collections::hash_map::Entry::Occupied(mut entry) => entry.get_mut().plus_equals(&diff),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(diff);
                }
            },
            Ok(None) => {}
            Err(error) => view.record_error(&error, multiplicity),
        }
    }

    /// Sends the held updates (dropping those that added up to zero) under the held capability.
    fn flush(&mut self, send: impl FnOnce(&Capability<Time>, &mut dyn Iterator<Item = (D, Time, R)>)) {
        if let Some(capability) = self.capability.take() {
            let mut updates =
                self.updates.drain().filter(|(_, diff)| !diff.is_zero()).map(|((data, time), diff)| (data, time, diff));
            send(&capability, &mut updates);
        }
    }
}

/// The rows of a rendered source.
fn rows_of<'scope>(source: MappedInput<'scope>, view: &Arc<ViewState>) -> Collection<'scope> {
    apply_map(&Mapped { source, map: RowMap::default() }, view)
}

/// The rows of a mapped input.
fn apply_map<'scope>(input: &Mapped<'scope>, view: &Arc<ViewState>) -> Collection<'scope> {
    match &input.source {
        MappedInput::Rows(rows) if input.map.is_identity() => rows.clone(),
        _ => input.evaluate(view, false, |row, diff| Ok(Some((row.into_owned(), diff)))),
    }
}

fn keyed<'scope>(
    input: &Mapped<'scope>,
    keys: Vec<Expr>,
    nulls_equal: bool,
    view: &Arc<ViewState>,
) -> VecCollection<'scope, Time, (HashedRow, HashedRow), isize> {
    if let Some(keyed) = keyed_in_place(input, &keys, nulls_equal) {
        return keyed;
    }
    input.evaluate(view, false, move |row, diff| {
        let key = pack_all(&keys, &row)?;
        if nulls_equal || !key.has_null() {
            Ok(Some(((key.finish(), HashedRow::from_values(row.iter())), diff)))
        } else {
            Ok(None)
        }
    })
}

/// [`keyed`] for an imported table or view that is only narrowed to some columns and keyed by
/// columns (a join's usual input): keys and rows are copied from the stored packed rows as bytes,
/// never decoded. `None` for any other input.
fn keyed_in_place<'scope>(
    input: &Mapped<'scope>,
    keys: &[Expr],
    nulls_equal: bool,
) -> Option<VecCollection<'scope, Time, (HashedRow, HashedRow), isize>> {
    let MappedInput::Imported(stream) = &input.source else { return None };
    // The stored row's columns the mapped row is made of (`None`: all of them, unchanged).
    let columns: Option<Vec<usize>> = match input.map.steps.as_slice() {
        [] => None,
        [MapStep::Select(columns)] => Some(columns.clone()),
        _ => return None,
    };
    let key_columns: Vec<usize> = keys
        .iter()
        .map(|key| match key {
            Expr::Column(index) => Some(columns.as_ref().map_or(*index, |columns| columns[*index])),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let stream = stream.clone().unary(Pipeline, "ImportKeyed", move |_, _| {
        let mut times: Vec<(Time, isize)> = Vec::new();
        let mut spans = Vec::new();
        move |input, output| {
            input.for_each(|capability, data| {
                let mut session = output.session(&capability);
                for batch in data.iter().filter_map(|span| span.inner.as_ref()) {
                    for_each_stored_row(batch, &mut times, |row, times| {
                        row.value_spans(&mut spans);
                        let key = row.project(&key_columns, &spans);
                        if !nulls_equal && key.has_null() {
                            return;
                        }
                        let key = key.finish();
                        let value = match &columns {
                            Some(columns) => row.project(columns, &spans).finish(),
                            None => row.clone(),
                        };
                        for (time, diff) in times {
                            session.give(((key.clone(), value.clone()), *time, *diff));
                        }
                    });
                }
            });
        }
    });
    Some(stream.as_collection())
}

/// Calls `logic` with each row of a stored batch and its nonzero changes (`times` is scratch).
fn for_each_stored_row(
    batch: &<ImportedTrace as TraceReader>::Batch,
    times: &mut Vec<(Time, isize)>,
    mut logic: impl FnMut(&HashedRow, &[(Time, isize)]),
) {
    let mut cursor = batch.cursor();
    while let Some(row) = cursor.get_key(batch) {
        times.clear();
        while cursor.get_val(batch).is_some() {
            cursor.map_times(batch, |time, diff| times.push((*time, *diff)));
            cursor.step_val(batch);
        }
        times.retain(|(_, diff)| *diff != 0);
        if !times.is_empty() {
            logic(row, times);
        }
        cursor.step_key(batch);
    }
}

/// Packs the values of `exprs` over `row`; column references are packed from the row in place.
fn pack_all(exprs: &[Expr], row: &[Value]) -> Result<RowPacker, EvalError> {
    let mut packer = RowPacker::new();
    for expr in exprs {
        match expr {
            Expr::Column(index) => packer.push(&row[*index]),
            _ => packer.push(&expr.eval(row)?),
        }
    }
    Ok(packer)
}

/// The rows of `all` that also occur (as whole rows) in the set `present`.
fn rows_in<'scope>(all: Collection<'scope>, present: Collection<'scope>) -> Collection<'scope> {
    all.map(|row| (HashedRow::new(row), ())).semijoin(present.map(HashedRow::new)).map(|(row, ())| row.into_row())
}

/// Each distinct row of `rows` once.
fn distinct(rows: Collection<'_>) -> Collection<'_> {
    rows.map(HashedRow::new).distinct().map(HashedRow::into_row)
}

fn pad<'scope>(rows: Collection<'scope>, nulls: usize, nulls_first: bool) -> Collection<'scope> {
    rows.map(move |row| {
        let padding = std::iter::repeat_n(Value::Null, nulls);
        if nulls_first {
            padding.chain(row).collect()
        } else {
            row.into_iter().chain(padding).collect()
        }
    })
}

fn render_join<'scope>(
    left: Mapped<'scope>,
    right: Mapped<'scope>,
    spec: JoinSpec,
    view: &Arc<ViewState>,
) -> MappedInput<'scope> {
    let left_keyed = keyed(&left, spec.left_keys, spec.nulls_equal, view);
    let right_keyed = keyed(&right, spec.right_keys, spec.nulls_equal, view);
    // Outer, semi and anti joins also need the whole (mapped) inputs.
    let left = || apply_map(&left, view);
    let right = || apply_map(&right, view);
    let semi_without_residual = spec.residual.is_none() && matches!(spec.kind, JoinKind::LeftSemi | JoinKind::LeftAnti);
    if semi_without_residual {
        let keys = right_keyed.map(|(key, _)| key).distinct();
        let matched = left_keyed.semijoin(keys).map(|(_, row)| row.into_row());
        return MappedInput::Rows(match spec.kind {
            JoinKind::LeftSemi => matched,
            _ => left().concat(matched.negate()),
        });
    }
    if let Some(columns) = spec.columns {
        // The kept columns' packed values are copied, never decoded.
        let left_arity = spec.left_arity;
        let (mut left_spans, mut right_spans) = (Vec::new(), Vec::new());
        let joined = arrange_pairs(left_keyed).join_core(arrange_pairs(right_keyed), move |_, left_row, right_row| {
            left_row.value_spans(&mut left_spans);
            right_row.value_spans(&mut right_spans);
            let mut packer = RowPacker::new();
            for column in &columns {
                match column.checked_sub(left_arity) {
                    None => packer.push_packed(left_row, left_spans[*column]),
                    Some(right_column) => packer.push_packed(right_row, right_spans[right_column]),
                }
            }
            Some(packer.finish())
        });
        return MappedInput::Packed(joined);
    }
    let mut joined = arrange_pairs(left_keyed).join_core(arrange_pairs(right_keyed), |_, left_row, right_row| {
        let mut row = left_row.to_row();
        right_row.decode_into(&mut row);
        Some(row)
    });
    if let Some(residual) = spec.residual {
        let filtered =
            Mapped { source: MappedInput::Rows(joined), map: RowMap { steps: vec![MapStep::Filter(residual)] } };
        joined = apply_map(&filtered, view);
    }
    let left_arity = spec.left_arity;
    let matched_left = || distinct(joined.clone().map(move |row| row[..left_arity].to_vec()));
    let matched_right = || distinct(joined.clone().map(move |row| row[left_arity..].to_vec()));
    let unmatched =
        |all: Collection<'scope>, matched: Collection<'scope>| all.clone().concat(rows_in(all, matched).negate());
    MappedInput::Rows(match spec.kind {
        JoinKind::Inner => joined,
        JoinKind::LeftSemi => rows_in(left(), matched_left()),
        JoinKind::LeftAnti => unmatched(left(), matched_left()),
        JoinKind::Left => joined.clone().concat(pad(unmatched(left(), matched_left()), spec.right_arity, false)),
        JoinKind::Right => joined.clone().concat(pad(unmatched(right(), matched_right()), left_arity, true)),
        JoinKind::Full => joined
            .clone()
            .concat(pad(unmatched(left(), matched_left()), spec.right_arity, false))
            .concat(pad(unmatched(right(), matched_right()), left_arity, true)),
    })
}

/// A double that is totally ordered, for use inside difference types.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct OrderedDouble(f64);

impl PartialEq for OrderedDouble {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}
impl Eq for OrderedDouble {}
impl PartialOrd for OrderedDouble {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedDouble {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Running state of one accumulable aggregate: non-null inputs and their sums.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Accumulator {
    count: i64,
    int_sum: i128,
    float_sum: OrderedDouble,
}

/// The difference type of an accumulable GROUP BY: the group's row count and one accumulator per
/// aggregate. Differential adds these up, so an update costs O(1) whatever the group's size.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Accumulators {
    rows: i64,
    values: Vec<Accumulator>,
}

impl IsZero for Accumulators {
    fn is_zero(&self) -> bool {
        // Exact zero only: a change can move a float sum while every count nets to zero.
        self.rows == 0
            && self.values.iter().all(|value| value.count == 0 && value.int_sum == 0 && value.float_sum.0 == 0.0)
    }
}

impl Semigroup for Accumulators {
    fn plus_equals(&mut self, rhs: &Self) {
        self.rows += rhs.rows;
        if self.values.len() < rhs.values.len() {
            self.values.resize(rhs.values.len(), Accumulator::default());
        }
        for (mine, theirs) in self.values.iter_mut().zip(&rhs.values) {
            mine.count += theirs.count;
            mine.int_sum += theirs.int_sum;
            mine.float_sum.0 = mine.float_sum.0 + theirs.float_sum.0 + 0.0;
        }
    }
}

impl Multiply<isize> for Accumulators {
    type Output = Accumulators;
    fn multiply(mut self, rhs: &isize) -> Accumulators {
        let factor = *rhs as i64;
        self.rows *= factor;
        for value in &mut self.values {
            value.count *= factor;
            value.int_sum *= factor as i128;
            // `+ 0.0` turns -0.0 into 0.0: equal accumulators must be equal records.
            value.float_sum.0 = value.float_sum.0 * factor as f64 + 0.0;
        }
        self
    }
}

fn empty_aggregate(aggregate: &Aggregate) -> Value {
    match aggregate.function {
        AggregateFunction::Count => Value::Int(0),
        _ => Value::Null,
    }
}

fn render_accumulable_reduce<'scope>(
    input: Mapped<'scope>,
    group: Vec<Expr>,
    aggregates: Vec<Aggregate>,
    view: &Arc<ViewState>,
) -> Collection<'scope> {
    let args: Vec<Option<Expr>> = aggregates.iter().map(|aggregate| aggregate.arg.clone()).collect();
    let exploded: VecCollection<'scope, Time, HashedRow, Accumulators> =
        input.evaluate(view, true, move |row, diff| {
            let key = pack_all(&group, &row)?;
            let mut values = Vec::with_capacity(args.len());
            for arg in &args {
                let value = match arg {
                    Some(arg) => arg.eval(&row)?,
                    None => Value::Bool(true),
                };
                values.push(match value {
                    Value::Null => Accumulator::default(),
                    Value::Int(i) => Accumulator { count: 1, int_sum: i as i128, float_sum: OrderedDouble(i as f64) },
                    Value::Float(f) => Accumulator { count: 1, int_sum: 0, float_sum: OrderedDouble(f) },
                    _ => Accumulator { count: 1, ..Accumulator::default() },
                });
            }
            Ok(Some((key.finish(), Accumulators { rows: 1, values }.multiply(&diff))))
        });
    exploded.count_core::<isize>().flat_map(move |(key, accumulators)| {
        // A group whose rows are all retracted can keep float rounding residue: it is empty.
        if accumulators.rows == 0 {
            return None;
        }
        let mut key = key.into_row();
        for (aggregate, value) in aggregates.iter().zip(&accumulators.values) {
            key.push(match aggregate.function {
                AggregateFunction::Count => Value::Int(value.count),
                _ if value.count == 0 => Value::Null,
                AggregateFunction::Sum if aggregate.float => Value::float(value.float_sum.0),
                AggregateFunction::Sum => Value::Int(value.int_sum as i64),
                _ if aggregate.float => Value::float(value.float_sum.0 / value.count as f64),
                _ => Value::float(value.int_sum as f64 / value.count as f64),
            });
        }
        Some(key)
    })
}

/// Computes one aggregate over a group's argument rows (`column` of each) with multiplicities.
fn aggregate_over(aggregate: &Aggregate, column: usize, values: &[(&Row, isize)]) -> Value {
    let present = values.iter().filter(|(row, _)| !row[column].is_null());
    if aggregate.distinct {
        let distinct: BTreeSet<&Value> = present.map(|(row, _)| &row[column]).collect();
        return fold(aggregate, distinct.into_iter().map(|value| (value, 1)));
    }
    fold(aggregate, present.map(|(row, count)| (&row[column], *count)))
}

fn fold<'a>(aggregate: &Aggregate, values: impl Iterator<Item = (&'a Value, isize)>) -> Value {
    let mut count: i64 = 0;
    let mut int_sum: i128 = 0;
    let mut float_sum = 0.0;
    let mut best: Option<&Value> = None;
    for (value, multiplicity) in values {
        count += multiplicity as i64;
        match value {
            Value::Int(i) => {
                int_sum += *i as i128 * multiplicity as i128;
                float_sum += *i as f64 * multiplicity as f64;
            }
            Value::Float(f) => float_sum += f * multiplicity as f64,
            _ => {}
        }
        let better = match (aggregate.function, best) {
            (_, None) => true,
            (AggregateFunction::Min, Some(current)) => value.sql_cmp(current) == Some(Ordering::Less),
            (AggregateFunction::Max, Some(current)) => value.sql_cmp(current) == Some(Ordering::Greater),
            _ => false,
        };
        if better {
            best = Some(value);
        }
    }
    match aggregate.function {
        AggregateFunction::Count => Value::Int(count),
        _ if count == 0 => Value::Null,
        AggregateFunction::Min | AggregateFunction::Max => best.cloned().unwrap_or(Value::Null),
        AggregateFunction::Sum if aggregate.float => Value::float(float_sum),
        AggregateFunction::Sum => Value::Int(int_sum as i64),
        AggregateFunction::Avg => Value::float(float_sum / count as f64),
    }
}

fn render_rescan_reduce<'scope>(
    input: Mapped<'scope>,
    group: Vec<Expr>,
    aggregates: Vec<Aggregate>,
    view: &Arc<ViewState>,
) -> Collection<'scope> {
    let args: Vec<Expr> =
        aggregates.iter().map(|aggregate| aggregate.arg.clone().unwrap_or(Expr::Literal(Value::Bool(true)))).collect();
    let keyed: VecCollection<'scope, Time, (HashedRow, Row), isize> = input.evaluate(view, false, move |row, diff| {
        Ok(Some(((pack_all(&group, &row)?.finish(), eval_all(&args, &row)?), diff)))
    });
    keyed
        .reduce(move |_key, values: &[(&Row, isize)], output: &mut Vec<(Row, isize)>| {
            let row = aggregates
                .iter()
                .enumerate()
                .map(|(column, aggregate)| aggregate_over(aggregate, column, values))
                .collect();
            output.push((row, 1));
        })
        .map(|(key, values)| {
            let mut key = key.into_row();
            key.extend(values);
            key
        })
}

/// Compares two rows' sort keys as `ORDER BY` does; ties fall back to the whole row so the
/// result is deterministic.
fn compare_sort_keys(order: &[SortKey], left: &(Row, &Row), right: &(Row, &Row)) -> Ordering {
    for (index, key) in order.iter().enumerate() {
        let (a, b) = (&left.0[index], &right.0[index]);
        let ordering = match (a.is_null(), b.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if key.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if key.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, false) => {
                let ordering = a.sql_cmp(b).unwrap_or(Ordering::Equal);
                if key.descending {
                    ordering.reverse()
                } else {
                    ordering
                }
            }
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    left.1.cmp(right.1)
}

fn render_top_k<'scope>(
    input: Collection<'scope>,
    order: Vec<SortKey>,
    limit: Option<usize>,
    offset: usize,
) -> Collection<'scope> {
    input
        .map(|row| ((), row))
        .reduce(move |_, rows: &[(&Row, isize)], output: &mut Vec<(Row, isize)>| {
            let mut keyed: Vec<((Row, &Row), isize)> = Vec::with_capacity(rows.len());
            for (row, count) in rows {
                // A sort key that fails to evaluate sorts as NULL: recording it as an error here
                // would count it again every time the group is recomputed.
                let key = order.iter().map(|key| key.expr.eval(row).unwrap_or(Value::Null)).collect();
                keyed.push(((key, *row), *count));
            }
            keyed.sort_by(|a, b| compare_sort_keys(&order, &a.0, &b.0));
            let mut skip = offset as isize;
            let mut remaining = limit.map_or(isize::MAX, |limit| limit as isize);
            for ((_, row), count) in keyed {
                let skipped = count.min(skip);
                skip -= skipped;
                let taken = (count - skipped).min(remaining);
                if taken > 0 {
                    output.push((row.clone(), taken));
                    remaining -= taken;
                }
                if remaining == 0 {
                    break;
                }
            }
        })
        .map(|((), row)| row)
}
