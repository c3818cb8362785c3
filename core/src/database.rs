//! [`Database`]: one weft data directory, its catalog, tables, views and write-ahead log, and
//! the execution of SQL statements against them.
//!
//! Statements are parsed once with DataFusion's `sqlparser`. DDL, DML and transactions are
//! handled here; queries (and the row-finding part of `UPDATE`/`DELETE`) are planned by
//! DataFusion; view definitions are lowered to weft plans and maintained by the engine. Each
//! statement outside `BEGIN ... COMMIT`, and each such group, is one logical timestamp, logged
//! before the engine applies it.

pub mod copy;
mod effectful;
mod reading;

use crate::catalog::{CatalogObserver, ListedRelation, Relation, RelationKind, TableData, ViewSource};
use crate::catalog::{FunctionCatalog, FunctionDefinition};
use crate::functions::{FunctionStatement, WasmFunction};
use crate::wal::{Record, Wal, WalError};
use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast::{
    self, AssignmentTarget, ColumnOption, FromTable, ObjectName, ObjectType, Statement, TableConstraint, TableFactor,
    TableObject,
};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use weft_engine::expr::cast;
use weft_engine::{
    Change, ColumnType, Engine, EngineError, Expr, Gate, Plan, RelationId, Row, Subscription, Value, ViewState,
};
use weft_ipvm::identity::Identity;
use weft_ipvm::invocation::Outcome;
use weft_ipvm::memo::{Memo, StoredReceipt};
use weft_ipvm::signer::Signer;
use weft_ir::transform::{point_lookup::point_lookup, row_local::row_local};
use weft_sql::convert::{batch_rows, column_type, schema_of};
use weft_sql::fastpath;
use weft_sql::statement::WeftStatement;
use weft_sql::{lower_plan, ConvertError, Planner, RelationProvider, RowSource, SqlError};

/// A relation's column names and types.
pub type Columns = Vec<(String, ColumnType)>;

/// How to open a database.
#[derive(Clone, Debug)]
pub struct Options {
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// Timely worker threads.
    pub workers: usize,
    /// `fdatasync` the log on every commit (survives power loss); without it a commit survives
    /// a process crash but not an operating-system crash.
    pub sync: bool,
}

impl Options {
    /// Defaults for `data_dir`: one worker, sync on.
    pub fn new(data_dir: impl Into<PathBuf>) -> Options {
        Options { data_dir: data_dir.into(), workers: 1, sync: true }
    }
}

/// What statements may reach and use: files and hosts, and the most one function call may use.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Files and hosts.
    pub access: weft_connectors::access::Access,
    /// Fuel a function may ask for, at most.
    pub max_fuel: u64,
    /// Memory a function may ask for, at most, in bytes.
    pub max_memory_bytes: usize,
    /// Wall-clock time after which a call is interrupted (and nothing recorded).
    pub max_call_ms: u64,
}

impl Policy {
    /// The default of `--max-fuel`.
    pub const DEFAULT_MAX_FUEL: u64 = 1_000_000_000;
    /// The default of `--max-memory-mb`.
    pub const DEFAULT_MAX_MEMORY_MB: usize = 256;
    /// The default of `--max-call-ms`.
    pub const DEFAULT_MAX_CALL_MS: u64 = 5_000;

    /// The local user's: any file and host, the default ceilings.
    pub fn local() -> Policy {
        Policy {
            access: weft_connectors::access::Access::unrestricted(),
            max_fuel: Policy::DEFAULT_MAX_FUEL,
            max_memory_bytes: Policy::DEFAULT_MAX_MEMORY_MB << 20,
            max_call_ms: Policy::DEFAULT_MAX_CALL_MS,
        }
    }

    /// Refuses function limits above the ceilings.
    pub fn check_limits(&self, fuel: u64, memory_bytes: usize) -> Result<(), Error> {
        if fuel > self.max_fuel {
            return Err(Error::Ceiling(format!(
                "fuel = {fuel} is more than this server allows a call (--max-fuel {})",
                self.max_fuel
            )));
        }
        if memory_bytes > self.max_memory_bytes {
            return Err(Error::Ceiling(format!(
                "{} MiB of memory is more than this server allows a call (--max-memory-mb {})",
                memory_bytes >> 20,
                self.max_memory_bytes >> 20
            )));
        }
        Ok(())
    }
}

/// Errors of statement execution. None of them leaves the database unusable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Parsing, planning or executing a query failed.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// The dataflow engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The log could not be read or written.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A value could not be converted.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A name is unknown, taken, or of the wrong kind.
    #[error("{0}")]
    Catalog(String),
    /// A change violates a constraint or a column's type.
    #[error("{0}")]
    Constraint(String),
    /// A statement weft does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Another process has the data directory open.
    #[error("data directory {0} is in use by another weft process")]
    Locked(PathBuf),
    /// A Wasm module could not be loaded.
    #[error(transparent)]
    Wasm(#[from] weft_wasm::LoadError),
    /// Content addressing failed.
    #[error(transparent)]
    Content(#[from] weft_ipvm::invocation::ContentError),
    /// The node key failed.
    #[error(transparent)]
    Identity(#[from] weft_ipvm::identity::IdentityError),
    /// A call ran into its wall-clock limit (nothing was recorded).
    #[error("{0}")]
    Interrupted(String),
    /// A function asks for more than the server allows a call, or a result is larger than it
    /// allows.
    #[error("{0}")]
    Ceiling(String),
    /// The server has as many connections as it takes.
    #[error("{0}")]
    TooManyConnections(String),
    /// The writer stayed taken for longer than a statement waits.
    #[error("{0}")]
    LockTimeout(String),
    /// A subscriber fell further behind than the server buffers, and was disconnected.
    #[error("the subscriber fell more than {0} changes behind and was disconnected (--subscribe-buffer)")]
    FellBehind(usize),
    /// A file or host out of the statement's reach.
    #[error(transparent)]
    Access(#[from] weft_connectors::access::AccessError),
    /// The outbox or a connector failed.
    #[error(transparent)]
    Effects(#[from] crate::executor::ExecutorError),
}

/// The result of [`Database::invoke`].
pub struct Invoked {
    /// The receipt (new, or recorded by an earlier call).
    pub stored: StoredReceipt,
    /// Whether the receipt was already recorded, so nothing ran.
    pub hit: bool,
}

/// What a statement returns.
#[derive(Clone, Debug)]
pub enum Output {
    /// A result set.
    Rows {
        /// The columns.
        schema: SchemaRef,
        /// The rows.
        batches: Vec<RecordBatch>,
    },
    /// A command tag such as `INSERT 0 2` or `CREATE TABLE`.
    Status(String),
}

/// An open weft database.
pub struct Database {
    /// What statements may reach and use.
    policy: Policy,
    planner: Planner,
    engine: Engine,
    relations: BTreeMap<String, Relation>,
    names: HashMap<RelationId, String>,
    next_id: RelationId,
    wal: Wal,
    /// The statement or `BEGIN` block being executed: its changes on their way to a commit.
    transaction: TransactionState,
    /// Functions, their memo and the signing of their receipts.
    function_service: FunctionService,
    /// Front ends keeping their own listing of the relations (see [`Database::observe_catalog`]).
    catalog_observers: Vec<Arc<dyn CatalogObserver>>,
    /// Told how large COPY loads go (see [`Database::report_load_progress`]).
    load_progress: Option<Arc<dyn copy::LoadProgress>>,
    /// Sinks, sources and reading views, and the executor running their effects.
    effects: EffectService,
    _lock: File,
}

/// The database's part that carries changes to a commit: the changes of the statement or
/// `BEGIN` block being executed, their log frame when encoded ahead, how many the engine holds
/// already, and the commit gate the writer holds from its first change to its commit.
struct TransactionState {
    /// Changes of the open `BEGIN` block, or of the statement being executed.
    pending: Vec<Change>,
    /// The log frame of the commit of `pending`, encoded while a large statement's changes were
    /// applied to its table, with the number of changes it holds (valid while `pending` has
    /// that many: it only grows until it is committed or rolled back).
    pending_frame: Option<(usize, Vec<u8>)>,
    /// How many of `pending`'s first changes the engine already holds (see [`weft_engine::dataflow::Stager`]).
    staged: usize,
    /// Inside `BEGIN`.
    in_transaction: bool,
    /// Held by the open transaction from its first change until it commits or rolls back.
    gate: Arc<Gate>,
    /// Whether this transaction holds the gate.
    writing: bool,
}

/// The database's part that defines and calls functions: the Wasm runtime, the function
/// catalog and the functions' ids in the engine's registry, the memo, and the signer of their
/// receipts with the node's identity.
struct FunctionService {
    identity: Arc<Identity>,
    runtime: Arc<weft_wasm::Runtime>,
    memo: Arc<RwLock<Memo>>,
    /// Defined functions, and their ids in the engine's function registry.
    functions: Arc<RwLock<FunctionCatalog>>,
    function_ids: HashMap<String, weft_engine::functions::FunctionId>,
    /// Signs the receipts of calls inside views and queries while they run (see
    /// [`weft_ipvm::signer`]); the statement's end logs them.
    signer: Arc<Signer>,
}

/// The database's part that reaches the world: sinks, sources and reading views, and the
/// executor (outbox and tasks) running their effects.
struct EffectService {
    /// The outbox and the tasks delivering it to sinks and reading sources.
    executor: crate::executor::Executor,
    sinks: BTreeMap<String, effectful::SinkState>,
    sources: BTreeMap<String, effectful::SourceState>,
    /// Views that read the world, by name.
    reads: BTreeMap<String, reading::ReadsState>,
    /// Set while a source's reads are applied to its table.
    ingesting: bool,
}

/// Runs queries on any thread, concurrently with the database's writer: each query reads one
/// complete timestamp of every relation it names. Made by [`Database::reader`].
#[derive(Clone)]
pub struct Reader {
    planner: Planner,
    gate: Arc<Gate>,
    signer: Arc<Signer>,
    /// The most rows a query may return (`None`: any number).
    row_limit: Option<usize>,
}

impl Reader {
    /// Whether `statement` only reads, so a [`Reader`] can run it.
    pub fn can_run(statement: &Statement) -> bool {
        matches!(
            statement,
            Statement::Query(_)
                | Statement::ShowTables { .. }
                | Statement::ShowColumns { .. }
                | Statement::ShowVariable { .. }
        )
    }

    /// This reader, refusing (with [`Error::Ceiling`]) a query that returns more than `limit`
    /// rows; execution stops once it has produced one row more.
    pub fn with_row_limit(self, limit: usize) -> Reader {
        Reader { row_limit: Some(limit), ..self }
    }

    /// Runs a query (see [`Reader::can_run`]).
    pub fn query(&self, statement: Statement) -> Result<Output, Error> {
        if !Reader::can_run(&statement) {
            return Err(Error::Unsupported("a statement that changes the database, on a read-only handle".into()));
        }
        run_query(&self.planner, statement, Some(&self.gate), self.row_limit)
    }

    /// The columns `statement` returns and the types of its `$n` parameters (where DataFusion
    /// can infer them), without running it.
    pub fn describe(&self, statement: Statement) -> Result<(SchemaRef, Vec<Option<DataType>>), Error> {
        let plan = self.planner.logical_plan(statement)?;
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        let found = plan.get_parameter_types().map_err(SqlError::from)?;
        let mut types = Vec::new();
        for (name, data_type) in found {
            if let Some(index) = name.strip_prefix('$').and_then(|number| number.parse::<usize>().ok()) {
                if index >= 1 {
                    if types.len() < index {
                        types.resize(index, None);
                    }
                    types[index - 1] = data_type;
                }
            }
        }
        Ok((schema, types))
    }

    /// Whether queries issued receipts (new function calls) that [`Database::log_issued_receipts`]
    /// should log.
    pub fn has_unlogged_receipts(&self) -> bool {
        self.signer.has_unsigned()
    }

    /// The current contents of a view and a stream of its later changes.
    pub fn subscribe(&self, view: &ViewState) -> Result<Subscription, Error> {
        let _reading = self.gate.read();
        Ok(view.subscribe()?)
    }

    /// Subscribes to `view`, ending the subscription when its reader falls more than `bound`
    /// changes behind; `wake` is called as changes arrive.
    pub fn subscribe_bounded(
        &self,
        view: &ViewState,
        bound: usize,
        wake: Option<weft_engine::Wake>,
    ) -> Result<Subscription, Error> {
        let _reading = self.gate.read();
        Ok(view.subscribe_bounded(bound, wake)?)
    }
}

/// Plans and executes a query on DataFusion over the current tables and maintained views.
/// With `row_limit`, a query returning more rows is an error, found without producing them all.
fn run_query(
    planner: &Planner,
    statement: Statement,
    gate: Option<&Gate>,
    row_limit: Option<usize>,
) -> Result<Output, Error> {
    let mut plan = planner.optimized_plan(statement)?;
    let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
    if let Some(limit) = row_limit {
        plan = datafusion::logical_expr::LogicalPlanBuilder::from(plan)
            .limit(0, Some(limit.saturating_add(1)))
            .and_then(|builder| builder.build())
            .map_err(SqlError::from)?;
    }
    let batches = planner.execute(plan, || gate.map(Gate::read))?;
    if let Some(limit) = row_limit {
        if batches.iter().map(RecordBatch::num_rows).sum::<usize>() > limit {
            return Err(Error::Ceiling(format!("the result has more than {limit} rows (--max-result-rows)")));
        }
    }
    Ok(Output::Rows { schema, batches })
}

fn catalog_error<T>(message: impl Into<String>) -> Result<T, Error> {
    Err(Error::Catalog(message.into()))
}

/// A name as SQL resolves it: unquoted identifiers fold to lower case.
fn normalize(ident: &ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn object_name(name: &ObjectName) -> Result<String, Error> {
    match name.0.as_slice() {
        [part] => match part.as_ident() {
            Some(ident) => Ok(normalize(ident)),
            None => catalog_error(format!("invalid name {name}")),
        },
        _ => Err(Error::Unsupported(format!("qualified name {name}"))),
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The weft type for a SQL type name in `CREATE TABLE`.
fn sql_column_type(data_type: &ast::DataType) -> Result<ColumnType, Error> {
    let text = data_type.to_string().to_uppercase();
    let base = text.split(['(', ' ']).next().unwrap_or("");
    Ok(match base {
        "BOOLEAN" | "BOOL" => ColumnType::Boolean,
        "BIGINT" | "INT8" | "INT" | "INTEGER" | "INT4" | "SMALLINT" | "INT2" | "TINYINT" => ColumnType::BigInt,
        "DOUBLE" | "FLOAT" | "FLOAT8" | "FLOAT4" | "REAL" | "DECIMAL" | "NUMERIC" => ColumnType::Double,
        "TEXT" | "VARCHAR" | "CHAR" | "CHARACTER" | "STRING" => ColumnType::Text,
        "BYTEA" | "BLOB" | "BINARY" | "VARBINARY" => ColumnType::Bytea,
        "TIMESTAMP" | "DATETIME" => ColumnType::Timestamp,
        _ => {
            return Err(Error::Unsupported(format!(
                "column type {data_type} (use BOOLEAN, BIGINT, DOUBLE, TEXT, BYTEA or TIMESTAMP)"
            )))
        }
    })
}

impl Database {
    /// Opens (or creates) the database in `options.data_dir`, replaying its log. Statements
    /// reach any file and host (the local user's own reach).
    pub fn open(options: Options) -> Result<Database, Error> {
        Database::open_with_policy(options, Policy::local())
    }

    /// Opens the database as [`Database::open`] does, its statements reaching and using only
    /// what `policy` allows (a server's clients).
    pub fn open_with_policy(options: Options, policy: Policy) -> Result<Database, Error> {
        let directory = &options.data_dir;
        let file_error =
            |path: &Path, error: std::io::Error| Error::File { path: path.to_path_buf(), message: error.to_string() };
        std::fs::create_dir_all(directory).map_err(|error| file_error(directory, error))?;
        let lock_path = directory.join("LOCK");
        let lock = File::create(&lock_path).map_err(|error| file_error(&lock_path, error))?;
        if lock.try_lock().is_err() {
            return Err(Error::Locked(directory.clone()));
        }
        let (wal, records) = Wal::open(&directory.join("wal"), options.sync)?;
        let identity = Arc::new(Identity::load_or_create(&directory.join("node.key"))?);
        let frame_of: weft_ipvm::signer::FrameEncoder =
            Arc::new(|runs| crate::wal::encode_frame(&Record::ReceiptRuns(runs)).map_err(|error| error.to_string()));
        let signer = Signer::start(identity.clone(), frame_of)
            .map_err(|error| Error::Catalog(format!("starting the receipt signer: {error}")))?;
        let executor = crate::executor::Executor::open(
            &directory.join("outbox"),
            options.sync,
            identity.clone(),
            policy.access.clone(),
        )?;
        let runtime =
            Arc::new(weft_wasm::Runtime::with_call_limit(std::time::Duration::from_millis(policy.max_call_ms)));
        let mut database = Database {
            policy,
            engine: Engine::start(options.workers)?,
            planner: Planner::new()?,
            relations: BTreeMap::new(),
            names: HashMap::new(),
            next_id: 1,
            wal,
            transaction: TransactionState {
                pending: Vec::new(),
                pending_frame: None,
                staged: 0,
                in_transaction: false,
                gate: Arc::new(Gate::new()),
                writing: false,
            },
            function_service: FunctionService {
                identity,
                runtime,
                memo: Arc::new(RwLock::new(Memo::default())),
                functions: Arc::default(),
                function_ids: HashMap::new(),
                signer,
            },
            catalog_observers: Vec::new(),
            load_progress: None,
            effects: EffectService {
                executor,
                sinks: BTreeMap::new(),
                sources: BTreeMap::new(),
                reads: BTreeMap::new(),
                ingesting: false,
            },
            _lock: lock,
        };
        crate::functions::register_system_tables(
            &database.planner,
            &database.function_service.memo,
            &database.function_service.functions,
        )?;
        let effects_columns: Columns = crate::executor::EFFECTS_COLUMNS
            .iter()
            .map(|(name, column_type)| (name.to_string(), *column_type))
            .collect();
        database.planner.register(
            "weft.effects",
            Arc::new(RelationProvider::new(
                RelationProvider::SYSTEM,
                false,
                schema_of(&effects_columns),
                database.effects.executor.table(),
            )),
        )?;
        database.replay(records)?;
        Ok(database)
    }

    fn replay(&mut self, records: Vec<Record>) -> Result<(), Error> {
        let frames = records.len();
        // Receipts first: rebuilding views must find every call already in the memo.
        let (receipts, records): (Vec<Record>, Vec<Record>) = records.into_iter().partition(|record| {
            matches!(
                record,
                Record::Receipt { .. } | Record::Receipts(_) | Record::CompactReceipts(_) | Record::ReceiptRuns(_)
            )
        });
        let runs = weft_ipvm::memo::prepare_runs(
            &receipts
                .iter()
                .filter_map(|record| match record {
                    Record::ReceiptRuns(bytes) => Some(bytes.as_slice()),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )?;
        let mut runs = runs.into_iter();
        for record in receipts {
            match record {
                Record::Receipt { invocation, receipt, proof, first_seen_ns, worker } => {
                    self.memo_mut().replay_single(&invocation, &receipt, proof, first_seen_ns, worker)?
                }
                Record::Receipts(batch) => self.memo_mut().replay_batch(batch)?,
                Record::CompactReceipts(bytes) => {
                    self.memo_mut().replay_batch(weft_ipvm::receipts::LoggedBatch::decode(&bytes)?)?
                }
                Record::ReceiptRuns(_) => {
                    let replayed = runs.next().expect("one prepared batch per record of runs");
                    self.memo_mut().replay_runs(replayed)?
                }
                _ => {}
            }
        }
        // Consecutive commits are applied to the engine as one timestamp: restart cost is then
        // proportional to the data, not to the number of past transactions.
        let mut batch: Vec<Change> = Vec::new();
        let mut sinks: BTreeMap<String, crate::connections::SinkDefinition> = BTreeMap::new();
        let mut sources: BTreeMap<String, crate::connections::SourceDefinition> = BTreeMap::new();
        let mut reads: BTreeMap<String, crate::reading_views::ReadsDefinition> = BTreeMap::new();
        for record in records {
            if !matches!(record, Record::Commit { .. }) && !batch.is_empty() {
                self.engine.commit(std::mem::take(&mut batch))?;
            }
            match record {
                Record::CreateTable { id, name, columns, primary_key } => {
                    self.install_table(id, name, columns, primary_key)?
                }
                Record::CreateView { id, name, sql } => {
                    let query = match weft_sql::parse(&sql)?.pop() {
                        Some(Statement::Query(query)) => query,
                        _ => return catalog_error(format!("logged definition of view {name} is not a query")),
                    };
                    self.install_view(id, name, &query, sql, None)?;
                }
                Record::Drop { id } => self.uninstall(id)?,
                Record::Receipt { .. } | Record::Receipts(_) | Record::CompactReceipts(_) | Record::ReceiptRuns(_) => {}
                Record::CreateFunction { definition } => self.install_function(definition)?,
                Record::DropFunction { name } => self.uninstall_function(&name)?,
                Record::CreateSink { definition } => {
                    sinks.insert(definition.name.clone(), definition);
                }
                Record::CreateSource { definition } => {
                    sources.insert(definition.name.clone(), definition);
                }
                Record::CreateReads { definition } => {
                    reads.insert(definition.view.clone(), definition);
                }
                Record::DropEffectful { name } => {
                    sinks.remove(&name);
                    sources.remove(&name);
                    reads.remove(&name);
                }
                Record::Commit { changes } => {
                    for (table, row, diff) in changes {
                        let data = self.table_by_id(table)?;
                        data.apply(&row, diff).map_err(|message| {
                            Error::Catalog(format!("log replay of table {}: {message}", self.names[&table]))
                        })?;
                        batch.push(Change { table, row, diff: diff as isize });
                    }
                }
            }
        }
        if !batch.is_empty() {
            self.engine.commit(batch)?;
        }
        for (_, definition) in sources {
            self.install_source(definition, None)?;
        }
        for (_, definition) in reads {
            self.install_reads(definition)?;
        }
        for (name, definition) in sinks {
            // A sink whose view cannot be read (say, a function now fails) must not keep the
            // database from opening: it is reported and left stopped.
            if let Err(error) = self.install_sink(definition) {
                tracing::error!(sink = %name, %error, "sink not started");
            }
        }
        if frames > 1000 && frames > 4 * self.relations.len() {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Rewrites the log as a snapshot: the live catalog and one commit per table's contents.
    pub fn checkpoint(&mut self) -> Result<(), Error> {
        if self.transaction.in_transaction {
            return Err(Error::Constraint("cannot checkpoint inside a transaction".into()));
        }
        let mut relations: Vec<&Relation> = self.relations.values().collect();
        relations.sort_by_key(|relation| relation.id);
        let mut records: Vec<Record> = self
            .function_service
            .functions
            .read()
            .expect("function catalog")
            .values()
            .map(|definition| Record::CreateFunction { definition: definition.clone() })
            .collect();
        for relation in &relations {
            records.push(match &relation.kind {
                RelationKind::Table(data) => Record::CreateTable {
                    id: relation.id,
                    name: relation.name.clone(),
                    columns: relation.columns.clone(),
                    primary_key: data.primary_key.clone(),
                },
                RelationKind::View { sql, .. } => {
                    Record::CreateView { id: relation.id, name: relation.name.clone(), sql: sql.clone() }
                }
            });
        }
        for relation in &relations {
            if let Some(data) = relation.table() {
                let mut changes = Vec::new();
                data.for_each(|row, count| changes.push((relation.id, row.clone(), count as i64)));
                if !changes.is_empty() {
                    records.push(Record::Commit { changes });
                }
            }
        }
        for source in self.effects.sources.values() {
            records.push(Record::CreateSource { definition: source.definition.clone() });
        }
        for reading in self.effects.reads.values() {
            records.push(Record::CreateReads { definition: reading.definition.clone() });
        }
        for sink in self.effects.sinks.values() {
            records.push(Record::CreateSink { definition: sink.definition.clone() });
        }
        records.extend(self.function_service.memo.read().expect("memo lock").snapshot()?.into_iter().map(Record::from));
        self.wal.rewrite(&records)?;
        Ok(())
    }

    /// The did:key of this node, which signs its receipts.
    pub fn node_did(&self) -> &str {
        self.function_service.identity.did()
    }

    /// Calls `function` of the module in `source` (WAT or Wasm) on `args`, at most once per
    /// invocation: a recorded receipt is returned without running anything. A failing call
    /// yields an error receipt, recorded like any other.
    pub fn invoke(
        &mut self,
        source: &[u8],
        function: &str,
        args: Vec<Value>,
        returns: Option<ColumnType>,
        limits: weft_wasm::Limits,
    ) -> Result<Invoked, Error> {
        self.policy.check_limits(limits.fuel, limits.memory_bytes)?;
        let module = self.function_service.runtime.load(source)?;
        let invocation = weft_wasm::Runtime::invocation(&module, function, &args);
        let invocation_cid = invocation.cid()?;
        let function_index = self.memo_mut().function_index(module.cid, function)?;
        let recorded = self
            .function_service
            .memo
            .read()
            .expect("memo lock")
            .recall_entry(&weft_ipvm::memo::CallKey::new(function_index, &args));
        if let Some(index) = recorded {
            // Signed by now unless a concurrent reader's statement ran it: its receipt then waits
            // in the signer (every unsigned entry does), which signs and logs it now.
            if !self.function_service.memo.read().expect("memo lock").entry(index).is_signed() {
                self.log_issued_receipts()?;
            }
            return Ok(Invoked {
                stored: self.function_service.memo.read().expect("memo lock").stored(index)?,
                hit: true,
            });
        }
        let params = args.iter().map(|arg| arg.column_type().unwrap_or(ColumnType::BigInt)).collect();
        let result =
            returns.or_else(|| weft_wasm::Runtime::result_type(&module, function)).unwrap_or(ColumnType::BigInt);
        let signature = weft_wasm::Signature { params, result };
        let (out, fuel, duration_us, started_ns) =
            match self.function_service.runtime.call(&module, function, &signature, &args, limits) {
                Ok(output) => (Outcome::Ok(output.value), output.fuel, output.duration_us, output.started_ns),
                // Not an outcome of the invocation: nothing is recorded.
                Err(error @ weft_wasm::CallError::Interrupted(_)) => return Err(Error::Interrupted(error.to_string())),
                Err(error) => (Outcome::Error(error.to_string()), 0, 0, weft_ipvm::memo::now_ns()),
            };
        let run = weft_ipvm::receipts::Run {
            args: invocation.args.into_boxed_slice(),
            out,
            fuel,
            duration_us,
            first_seen_ns: started_ns,
            worker: 0,
        };
        // Checks the receipt encodes (DAG-CBOR has no NaN or infinity) before recording it.
        run.receipt(invocation_cid, self.function_service.identity.did()).encode()?;
        let index = {
            let mut memo = self.memo_mut();
            memo.count_miss();
            let issuer = memo.issuer_index(self.function_service.identity.did());
            let (index, recorded) = memo.record(weft_ipvm::memo::MemoEntry::new(function_index, issuer, run));
            // A view's call may have recorded it meanwhile: that receipt stays (and is with the
            // signer already).
            if recorded {
                self.function_service.signer.push(memo.pending(index));
            }
            index
        };
        self.log_issued_receipts()?;
        let stored = self.function_service.memo.read().expect("memo lock").stored(index)?;
        Ok(Invoked { stored, hit: false })
    }

    /// A receipt by its CID.
    pub fn receipt(&self, cid: &weft_ipvm::invocation::Cid) -> Option<StoredReceipt> {
        self.function_service.memo.read().expect("memo lock").receipt(cid).and_then(Result::ok)
    }

    fn memo_mut(&self) -> std::sync::RwLockWriteGuard<'_, Memo> {
        self.function_service.memo.write().expect("memo lock")
    }

    /// Memo hits and misses of this process.
    pub fn memo_counts(&self) -> (u64, u64) {
        let memo = self.function_service.memo.read().expect("memo lock");
        (memo.hits.load(std::sync::atomic::Ordering::Relaxed), memo.misses.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn table_by_id(&self, id: RelationId) -> Result<Arc<TableData>, Error> {
        self.names
            .get(&id)
            .and_then(|name| self.relations.get(name))
            .and_then(Relation::table)
            .cloned()
            .ok_or_else(|| Error::Catalog(format!("unknown table id {id}")))
    }

    /// The relation called `name`.
    pub fn relation(&self, name: &str) -> Option<&Relation> {
        self.relations.get(name)
    }

    fn table(&self, name: &str) -> Result<&Relation, Error> {
        match self.relations.get(name) {
            Some(relation) if relation.table().is_some() => Ok(relation),
            Some(_) => catalog_error(format!("{name} is a view; only tables can be changed")),
            None => catalog_error(format!("table {name} does not exist")),
        }
    }

    fn install_table(
        &mut self,
        id: RelationId,
        name: String,
        columns: Vec<(String, ColumnType)>,
        primary_key: Option<Vec<usize>>,
    ) -> Result<(), Error> {
        let schema = schema_of(&columns);
        let data = Arc::new(TableData::new(primary_key));
        self.engine.create_table(id)?;
        self.planner.register(&name, Arc::new(RelationProvider::new(id, false, schema.clone(), data.clone())))?;
        self.names.insert(id, name.clone());
        self.next_id = self.next_id.max(id + 1);
        self.relations.insert(name.clone(), Relation { id, name, columns, schema, kind: RelationKind::Table(data) });
        self.refresh_listing();
        Ok(())
    }

    fn install_view(
        &mut self,
        id: RelationId,
        name: String,
        query: &ast::Query,
        sql: String,
        column_names: Option<Vec<String>>,
    ) -> Result<(), Error> {
        let plan = self.planner.optimized_plan(Statement::Query(Box::new(query.clone())))?;
        let lowered = lower_plan(&plan).map_err(SqlError::from)?;
        let mut columns = Vec::new();
        for (index, field) in plan.schema().fields().iter().enumerate() {
            let column_name = match &column_names {
                Some(names) => names.get(index).cloned().unwrap_or_else(|| field.name().clone()),
                None => field.name().clone(),
            };
            if columns.iter().any(|(existing, _)| existing == &column_name) {
                return catalog_error(format!(
                    "view {name} would have two columns named {column_name}; give them distinct aliases"
                ));
            }
            columns.push((column_name, column_type(field.data_type())?));
        }
        if let Some(names) = &column_names {
            if names.len() != columns.len() {
                return catalog_error(format!(
                    "view {name} names {} columns but its query has {}",
                    names.len(),
                    columns.len()
                ));
            }
        }
        let schema = schema_of(&columns);
        let state = self.engine.create_view(id, &name, lowered.clone())?;
        let provider = RelationProvider::new(id, true, schema.clone(), Arc::new(ViewSource(state.clone())));
        if let Err(error) = self.planner.register(&name, Arc::new(provider)) {
            self.engine.drop_relation(id)?;
            return Err(error.into());
        }
        self.names.insert(id, name.clone());
        self.next_id = self.next_id.max(id + 1);
        self.relations.insert(
            name.clone(),
            Relation { id, name, columns, schema, kind: RelationKind::View { sql, plan: lowered, state } },
        );
        self.refresh_listing();
        Ok(())
    }

    /// Has large `COPY ... FROM` loads report their progress to `progress`.
    pub fn report_load_progress(&mut self, progress: Arc<dyn copy::LoadProgress>) {
        self.load_progress = Some(progress);
    }

    pub(crate) fn load_progress(&self) -> Option<Arc<dyn copy::LoadProgress>> {
        self.load_progress.clone()
    }

    /// Registers `observer`, which is told the relations now and after every change of them.
    pub fn observe_catalog(&mut self, observer: Arc<dyn CatalogObserver>) {
        observer.relations_changed(self.listed_relations());
        self.catalog_observers.push(observer);
    }

    fn refresh_listing(&self) {
        if self.catalog_observers.is_empty() {
            return;
        }
        for observer in &self.catalog_observers {
            observer.relations_changed(self.listed_relations());
        }
    }

    fn listed_relations(&self) -> Vec<ListedRelation> {
        self.relations
            .values()
            .map(|relation| ListedRelation {
                id: relation.id,
                name: relation.name.clone(),
                is_view: relation.table().is_none(),
                columns: relation.columns.clone(),
                definition: match &relation.kind {
                    RelationKind::View { sql, .. } => Some(sql.clone()),
                    RelationKind::Table(_) => None,
                },
            })
            .collect()
    }

    fn uninstall(&mut self, id: RelationId) -> Result<(), Error> {
        let Some(name) = self.names.remove(&id) else {
            return catalog_error(format!("unknown relation id {id}"));
        };
        self.relations.remove(&name);
        self.refresh_listing();
        self.planner.deregister(&name)?;
        self.engine.drop_relation(id)?;
        Ok(())
    }

    /// Executes every statement in `sql`, returning one output per statement. Execution stops at
    /// the first error; statements before it keep their effects.
    pub fn execute(&mut self, sql: &str) -> Result<Vec<Output>, Error> {
        let mut outputs = Vec::new();
        self.ingest_before_statement();
        for text in crate::functions::split_statements(sql) {
            if let Some(statement) = weft_sql::statement::parse_weft_statement(&text) {
                outputs.push(self.execute_weft_statement(statement?)?);
                continue;
            }
            for statement in weft_sql::parse(&text)? {
                outputs.push(self.execute_statement(statement)?);
            }
        }
        Ok(outputs)
    }

    /// Applies what sources have read before a statement outside a transaction runs, so that
    /// it sees them.
    fn ingest_before_statement(&mut self) {
        if self.has_inputs() && !self.transaction.in_transaction {
            if let Err(error) = self.ingest_sources() {
                tracing::error!(%error, "could not apply what sources read");
            }
        }
    }

    /// Executes parsed SQL statements (no weft statements among them), returning one output per
    /// statement. Execution stops at the first error; statements before it keep their effects.
    pub fn execute_parsed(&mut self, statements: Vec<Statement>) -> Result<Vec<Output>, Error> {
        self.ingest_before_statement();
        statements.into_iter().map(|statement| self.execute_statement(statement)).collect()
    }

    /// Executes one of weft's own statements.
    pub fn execute_weft_statement(&mut self, statement: WeftStatement) -> Result<Output, Error> {
        match statement {
            WeftStatement::CreateFunction(spec) => {
                let statement = crate::functions::function_statement(spec)
                    .map_err(|message| Error::Catalog(format!("in function statement: {message}")))?;
                self.execute_function_statement(statement)
            }
            WeftStatement::DropFunction { name, if_exists } => {
                self.execute_function_statement(FunctionStatement::Drop { name, if_exists })
            }
            WeftStatement::Subscribe { .. } => {
                Err(Error::Unsupported("SUBSCRIBE outside weft serve (connect a client to weft serve)".into()))
            }
            effect => match crate::connections::effect_statement(effect) {
                Some(statement) => self.execute_effect_statement(
                    statement.map_err(|message| Error::Catalog(format!("in sink/source statement: {message}")))?,
                ),
                None => Err(Error::Unsupported("this statement".into())),
            },
        }
    }

    fn execute_function_statement(&mut self, statement: FunctionStatement) -> Result<Output, Error> {
        self.refuse_ddl_in_transaction()?;
        match statement {
            FunctionStatement::Create { mut definition, path, or_replace } => {
                let exists = self.function_service.function_ids.contains_key(&definition.name);
                if exists && !or_replace {
                    return catalog_error(format!("function {} already exists", definition.name));
                }
                self.policy.check_limits(definition.fuel, definition.memory_bytes)?;
                let resolved = self.policy.access.file(&path)?;
                definition.source = std::fs::read(&resolved)
                    .map_err(|error| Error::File { path: PathBuf::from(&path), message: error.to_string() })?;
                if exists {
                    self.drop_function(&definition.name, false)?;
                }
                self.install_function(definition.clone())?;
                self.wal.append(&[Record::CreateFunction { definition }])?;
                Ok(Output::Status("CREATE FUNCTION".into()))
            }
            FunctionStatement::Drop { name, if_exists } => {
                self.drop_function(&name, if_exists)?;
                Ok(Output::Status("DROP FUNCTION".into()))
            }
        }
    }

    fn drop_function(&mut self, name: &str, if_exists: bool) -> Result<(), Error> {
        let Some(id) = self.function_service.function_ids.get(name).copied() else {
            if if_exists {
                return Ok(());
            }
            return catalog_error(format!("function {name} does not exist"));
        };
        if let Some(view) = self.relations.values().find(|relation| match &relation.kind {
            RelationKind::View { plan, .. } => plan_calls(plan, id),
            RelationKind::Table(_) => false,
        }) {
            return catalog_error(format!("cannot drop function {name}: view {} calls it", view.name));
        }
        self.wal.append(&[Record::DropFunction { name: name.to_string() }])?;
        self.uninstall_function(name)
    }

    fn install_function(&mut self, definition: FunctionDefinition) -> Result<(), Error> {
        let module = self.function_service.runtime.load(&definition.source)?;
        if weft_wasm::Runtime::result_type(&module, &definition.export).is_none() {
            return catalog_error(format!("module has no exported function {} returning one value", definition.export));
        }
        let (function_index, function, issuer_index, issuer) = {
            let mut memo = self.memo_mut();
            let function_index = memo.function_index(module.cid, &definition.export)?;
            let issuer_index = memo.issuer_index(self.function_service.identity.did());
            (function_index, memo.function(function_index).clone(), issuer_index, memo.issuer(issuer_index).clone())
        };
        let callable = Arc::new(WasmFunction {
            function_index,
            function,
            issuer_index,
            issuer,
            definition: definition.clone(),
            module,
            runtime: self.function_service.runtime.clone(),
            memo: self.function_service.memo.clone(),
            signer: self.function_service.signer.clone(),
            running: crate::functions::RunningLocks::new(),
        });
        let id = self.engine.functions().register(callable.clone());
        self.planner.register_function(weft_sql::WeftUdf::new(
            id,
            &definition.name,
            definition.params.clone(),
            definition.result,
            callable,
        ));
        self.function_service.function_ids.insert(definition.name.clone(), id);
        self.function_service.functions.write().expect("function catalog").insert(definition.name.clone(), definition);
        Ok(())
    }

    fn uninstall_function(&mut self, name: &str) -> Result<(), Error> {
        let Some(id) = self.function_service.function_ids.remove(name) else {
            return catalog_error(format!("function {name} does not exist"));
        };
        self.planner.deregister_function(name);
        self.engine.functions().unregister(id);
        self.function_service.functions.write().expect("function catalog").remove(name);
        Ok(())
    }

    /// Logs the receipts that calls inside views and queries issued.
    pub fn log_issued_receipts(&mut self) -> Result<(), Error> {
        if !self.function_service.signer.has_unsigned() {
            return Ok(());
        }
        let mut signed = self.function_service.signer.finish()?;
        let frames = weft_ipvm::signer::take_frames(&mut signed);
        // Writing the frames (about a second per ten million receipts) and attaching the
        // batches to the memo (about as long) need different things: do both at once.
        let (wal, memo) = (&mut self.wal, &self.function_service.memo);
        let written = std::thread::scope(|scope| {
            let writer = scope.spawn(|| wal.append_frames(&frames));
            memo.write().expect("memo lock").attach(signed);
            writer.join()
        });
        written.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        Ok(())
    }

    /// Executes a query and returns its rows (a convenience for tests and tools).
    pub fn query(&mut self, sql: &str) -> Result<Vec<Row>, Error> {
        let mut rows = Vec::new();
        for output in self.execute(sql)? {
            if let Output::Rows { batches, .. } = output {
                for batch in &batches {
                    rows.extend(batch_rows(batch)?);
                }
            }
        }
        Ok(rows)
    }

    /// The maintained rows of view `name`, as the engine holds them (multiset, unordered).
    pub fn view_rows(&self, name: &str) -> Result<Vec<Row>, Error> {
        match self.relations.get(name).map(|relation| &relation.kind) {
            Some(RelationKind::View { state, .. }) => ViewSource(state.clone()).rows().map_err(Error::Catalog),
            _ => catalog_error(format!("view {name} does not exist")),
        }
    }

    /// Executes one parsed statement.
    pub fn execute_statement(&mut self, statement: Statement) -> Result<Output, Error> {
        if matches!(statement, Statement::CreateTable(_) | Statement::CreateView(_) | Statement::Drop { .. }) {
            self.refuse_ddl_in_transaction()?;
        }
        let result = self.dispatch(statement);
        let result = self.autocommit(result)?;
        self.log_issued_receipts()?;
        result
    }

    fn refuse_ddl_in_transaction(&self) -> Result<(), Error> {
        if self.transaction.in_transaction {
            return Err(Error::Unsupported("CREATE and DROP inside BEGIN ... COMMIT".into()));
        }
        Ok(())
    }

    /// Outside `BEGIN`, commits the changes of a statement that succeeded and undoes those of
    /// one that failed. The outer error is a failed commit; the inner result is the statement's.
    fn autocommit<T>(&mut self, result: Result<T, Error>) -> Result<Result<T, Error>, Error> {
        if !self.transaction.in_transaction {
            match &result {
                Ok(_) => self.commit_pending()?,
                Err(_) => self.rollback_pending(),
            }
        }
        Ok(result)
    }

    fn dispatch(&mut self, statement: Statement) -> Result<Output, Error> {
        match statement {
            Statement::CreateTable(create) => self.create_table(create),
            Statement::CreateView(create) => self.create_view(create),
            Statement::Drop { object_type, if_exists, names, cascade, .. } => {
                self.drop_relations(object_type, if_exists, &names, cascade)
            }
            Statement::Insert(insert) => self.insert(insert),
            Statement::Update(update) => self.update(update),
            Statement::Delete(delete) => self.delete(delete),
            Statement::StartTransaction { .. } => {
                if self.transaction.in_transaction {
                    return Err(Error::Constraint("a transaction is already open".into()));
                }
                self.transaction.in_transaction = true;
                Ok(Output::Status("BEGIN".into()))
            }
            Statement::Commit { .. } => {
                self.transaction.in_transaction = false;
                self.commit_pending()?;
                Ok(Output::Status("COMMIT".into()))
            }
            Statement::Rollback { .. } => {
                self.transaction.in_transaction = false;
                self.rollback_pending();
                Ok(Output::Status("ROLLBACK".into()))
            }
            Statement::Explain { statement, .. } => self.explain(*statement),
            Statement::Copy { source, to, target, options, legacy_options, .. } => {
                copy::copy(self, source, to, target, &options, &legacy_options)
            }
            statement @ (Statement::Query(_)
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowVariable { .. }) => self.select(statement),
            other => {
                let text = other.to_string();
                let head: String = text.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
                Err(Error::Unsupported(format!("statement {head}")))
            }
        }
    }

    /// Runs a query on DataFusion over the current tables and maintained views.
    pub(crate) fn select(&mut self, statement: Statement) -> Result<Output, Error> {
        run_query(&self.planner, statement, self.read_gate(), None)
    }

    /// The gate a read must pass: none inside this database's own open write, which already
    /// excludes every other writer and must see its own changes.
    fn read_gate(&self) -> Option<&Gate> {
        (!self.transaction.writing).then_some(&*self.transaction.gate)
    }

    /// A handle that runs queries on other threads while this database goes on writing.
    pub fn reader(&self) -> Reader {
        Reader {
            planner: self.planner.clone(),
            gate: self.transaction.gate.clone(),
            signer: self.function_service.signer.clone(),
            row_limit: None,
        }
    }

    /// What statements may reach outside the database.
    pub fn access(&self) -> &weft_connectors::access::Access {
        &self.policy.access
    }

    /// Whether a `BEGIN` block is open.
    pub fn in_transaction(&self) -> bool {
        self.transaction.in_transaction
    }

    /// The columns and maintained state of view `name`.
    pub fn view(&self, name: &str) -> Result<(Columns, Arc<ViewState>), Error> {
        match self.relations.get(name) {
            Some(Relation { columns, kind: RelationKind::View { state, .. }, .. }) => {
                Ok((columns.clone(), state.clone()))
            }
            Some(_) => catalog_error(format!("{name} is a table; only views can be subscribed to")),
            None => catalog_error(format!("view {name} does not exist")),
        }
    }

    /// Each view's name, row count and open subscriptions, and the number of tables.
    pub fn catalog_figures(&self) -> (Vec<(String, usize, usize)>, usize) {
        let mut views = Vec::new();
        let mut tables = 0;
        for relation in self.relations.values() {
            match &relation.kind {
                RelationKind::View { state, .. } => {
                    views.push((relation.name.clone(), state.len(), state.subscriber_count()))
                }
                RelationKind::Table(_) => tables += 1,
            }
        }
        (views, tables)
    }

    /// The current contents of view `name` and a stream of its later changes.
    pub fn subscribe(&self, name: &str) -> Result<(Columns, Subscription), Error> {
        let (columns, state) = self.view(name)?;
        let _reading = self.read_gate().map(Gate::read);
        Ok((columns, state.subscribe()?))
    }

    /// The planner every statement and reader plans with: front ends register their own system
    /// relations and functions on it (the server's `pg_catalog`).
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    fn create_table(&mut self, create: ast::CreateTable) -> Result<Output, Error> {
        let name = object_name(&create.name)?;
        if self.relations.contains_key(&name) {
            if create.if_not_exists {
                return Ok(Output::Status("CREATE TABLE".into()));
            }
            return catalog_error(format!("relation {name} already exists"));
        }
        if create.query.is_some() {
            return Err(Error::Unsupported("CREATE TABLE ... AS SELECT".into()));
        }
        let mut columns: Vec<(String, ColumnType)> = Vec::new();
        let mut primary_key: Option<Vec<usize>> = None;
        for (index, column) in create.columns.iter().enumerate() {
            let column_name = normalize(&column.name);
            if columns.iter().any(|(existing, _)| existing == &column_name) {
                return catalog_error(format!("column {column_name} appears twice in table {name}"));
            }
            columns.push((column_name, sql_column_type(&column.data_type)?));
            for option in &column.options {
                if let ColumnOption::PrimaryKey(_) = option.option {
                    if primary_key.replace(vec![index]).is_some() {
                        return catalog_error(format!("table {name} has more than one primary key"));
                    }
                }
            }
        }
        if columns.is_empty() {
            return catalog_error(format!("table {name} needs at least one column"));
        }
        for constraint in &create.constraints {
            if let TableConstraint::PrimaryKey(key) = constraint {
                let mut indexes = Vec::new();
                for column in &key.columns {
                    let ast::Expr::Identifier(ident) = &column.column.expr else {
                        return Err(Error::Unsupported(format!("primary key on expression {}", column.column.expr)));
                    };
                    let column_name = normalize(ident);
                    match columns.iter().position(|(existing, _)| existing == &column_name) {
                        Some(index) => indexes.push(index),
                        None => {
                            return catalog_error(format!("primary key column {column_name} is not in table {name}"))
                        }
                    }
                }
                if primary_key.replace(indexes).is_some() {
                    return catalog_error(format!("table {name} has more than one primary key"));
                }
            }
        }
        let id = self.next_id;
        let record =
            Record::CreateTable { id, name: name.clone(), columns: columns.clone(), primary_key: primary_key.clone() };
        self.install_table(id, name, columns, primary_key)?;
        if let Err(error) = self.wal.append(&[record]) {
            self.uninstall(id)?;
            return Err(error.into());
        }
        Ok(Output::Status("CREATE TABLE".into()))
    }

    fn create_view(&mut self, create: ast::CreateView) -> Result<Output, Error> {
        let name = object_name(&create.name)?;
        if self.relations.contains_key(&name) {
            if create.if_not_exists {
                return Ok(Output::Status("CREATE VIEW".into()));
            }
            return catalog_error(format!("relation {name} already exists"));
        }
        if let Some(output) = self.create_reading_view(&name, &create)? {
            return Ok(output);
        }
        let column_names = if create.columns.is_empty() {
            None
        } else {
            Some(create.columns.iter().map(|column| normalize(&column.name)).collect())
        };
        self.add_view(name, &create.query, column_names)?;
        Ok(Output::Status(if create.materialized { "CREATE MATERIALIZED VIEW" } else { "CREATE VIEW" }.into()))
    }

    /// Installs and logs view `name` over `query`.
    fn add_view(&mut self, name: String, query: &ast::Query, column_names: Option<Vec<String>>) -> Result<(), Error> {
        let sql = query.to_string();
        let id = self.next_id;
        self.install_view(id, name.clone(), query, sql.clone(), column_names)?;
        if let Err(error) = self.wal.append(&[Record::CreateView { id, name, sql }]) {
            self.uninstall(id)?;
            return Err(error.into());
        }
        Ok(())
    }

    fn drop_relations(
        &mut self,
        object_type: ObjectType,
        if_exists: bool,
        names: &[ObjectName],
        cascade: bool,
    ) -> Result<Output, Error> {
        let wants_table = match object_type {
            ObjectType::Table => true,
            ObjectType::View | ObjectType::MaterializedView => false,
            other => return Err(Error::Unsupported(format!("DROP {other}"))),
        };
        if cascade {
            return Err(Error::Unsupported("DROP ... CASCADE; drop the dependent views first".into()));
        }
        for name in names {
            let name = object_name(name)?;
            let Some(relation) = self.relations.get(&name) else {
                if if_exists {
                    continue;
                }
                return catalog_error(format!("{} {name} does not exist", if wants_table { "table" } else { "view" }));
            };
            if relation.table().is_some() != wants_table {
                return catalog_error(format!("{name} is not a {}", if wants_table { "table" } else { "view" }));
            }
            if self.effects.sources.contains_key(&name) {
                return catalog_error(format!("{name} is filled by a source: use DROP SOURCE {name}"));
            }
            self.check_not_managed(&name, true)?;
            if let Some(owner) = self.effects.reads.values().find(|reads| reads.definition.wanted == name) {
                return catalog_error(format!("{name} belongs to view {}; drop that view", owner.definition.view));
            }
            let id = relation.id;
            if let Some(dependent) = self.relations.values().find(|other| other.dependencies().contains(&id)) {
                return catalog_error(format!("cannot drop {name}: view {} depends on it", dependent.name));
            }
            self.wal.append(&[Record::Drop { id }])?;
            self.uninstall(id)?;
            self.drop_reads_of(&name)?;
        }
        Ok(Output::Status(if wants_table { "DROP TABLE" } else { "DROP VIEW" }.into()))
    }

    /// Applies inserts and deletes to a table (checking keys and types) and queues them for the
    /// current transaction. On error nothing is changed.
    pub(crate) fn change_table(&mut self, name: &str, deletes: Vec<Row>, inserts: Vec<Row>) -> Result<usize, Error> {
        self.check_not_managed(name, false)?;
        let relation = self.table(name)?;
        let id = relation.id;
        let data = relation.table().expect("checked").clone();
        let mut checked = Vec::with_capacity(inserts.len());
        for row in inserts {
            checked.push(conform_row(relation, row)?);
        }
        if !self.transaction.writing {
            self.transaction.gate.begin_write();
            self.transaction.writing = true;
        }
        let count = checked.len().max(deletes.len());
        let changes: Vec<Change> = deletes
            .into_iter()
            .map(|row| Change { table: id, row, diff: -1 })
            .chain(checked.into_iter().map(|row| Change { table: id, row, diff: 1 }))
            .collect();
        let apply = || data.apply_all(changes.iter().map(|change| (&change.row, change.diff as i64)));
        // A large statement that begins a commit has, on another core while its changes are
        // applied to the table (and checked), the commit's log frame encoded and, outside a
        // transaction (nothing else can reach the engine before this statement commits), its
        // changes staged with the engine, whose workers start sorting them.
        let (applied, frame, staged) =
            if self.transaction.pending.is_empty() && changes.len() >= Database::AHEAD_CHANGES {
                let stager = if self.transaction.in_transaction { None } else { self.engine.stager(&changes).ok() };
                std::thread::scope(|scope| {
                    // Without a thread to spare, the commit is prepared as any other.
                    let helper = std::thread::Builder::new().spawn_scoped(scope, || {
                        let staged = stager.is_some_and(|stager| stager.stage(&changes).is_ok());
                        (crate::wal::commit_frame(&changes).ok(), staged)
                    });
                    let applied = apply();
                    let (frame, staged) = match helper {
                        Ok(helper) => helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                        Err(_) => (None, false),
                    };
                    (applied, frame, staged)
                })
            } else {
                (apply(), None, false)
            };
        if let Err((_, message)) = applied {
            if staged {
                self.engine.withdraw(&changes)?;
            }
            return Err(Error::Constraint(format!("{name}: {message}")));
        }
        if self.transaction.pending.is_empty() {
            self.transaction.pending_frame = frame.map(|frame| (changes.len(), frame));
            self.transaction.staged = if staged { changes.len() } else { 0 };
            self.transaction.pending = changes;
        } else {
            self.transaction.pending.extend(changes);
        }
        Ok(count)
    }

    /// Statements of this many changes or more prepare their commit beside applying them.
    const AHEAD_CHANGES: usize = 1 << 16;

    fn commit_pending(&mut self) -> Result<(), Error> {
        if self.transaction.pending.is_empty() {
            self.end_write();
            return Ok(());
        }
        let appended = match self.transaction.pending_frame.take() {
            Some((changes, frame)) if changes == self.transaction.pending.len() => self.wal.append_frames(&[frame]),
            _ => self.wal.append_commit(&self.transaction.pending),
        };
        if let Err(error) = appended {
            self.rollback_pending();
            return Err(error.into());
        }
        let mut pending = std::mem::take(&mut self.transaction.pending);
        let unstaged = match std::mem::take(&mut self.transaction.staged) {
            0 => std::mem::take(&mut pending),
            staged => pending.split_off(staged),
        };
        let committed = self.engine.commit(unstaged);
        if !pending.is_empty() {
            // The staged changes' rows are the engine's now: free the copies off this thread (or
            // here, with the refused closure, if no thread can be had).
            let _ = std::thread::Builder::new().spawn(move || drop(pending));
        }
        if committed.is_ok() && !self.effects.sinks.is_empty() {
            self.enqueue_sink_changes();
        }
        if committed.is_ok() && !self.effects.reads.is_empty() {
            self.forward_wanted();
        }
        self.end_write();
        committed?;
        Ok(())
    }

    fn rollback_pending(&mut self) {
        self.transaction.pending_frame = None;
        let staged = std::mem::take(&mut self.transaction.staged);
        if staged > 0 {
            // The engine's workers died if this fails: every later statement reports that.
            let _ = self.engine.withdraw(&self.transaction.pending[..staged]);
        }
        for change in std::mem::take(&mut self.transaction.pending).into_iter().rev() {
            if let Ok(data) = self.table_by_id(change.table) {
                data.apply(&change.row, -(change.diff as i64)).expect("undo of an applied change");
            }
        }
        self.end_write();
    }

    /// Lets readers in again after a commit or rollback.
    fn end_write(&mut self) {
        if std::mem::take(&mut self.transaction.writing) {
            self.transaction.gate.end_write();
        }
    }

    fn insert(&mut self, insert: ast::Insert) -> Result<Output, Error> {
        let TableObject::TableName(table_name) = &insert.table else {
            return Err(Error::Unsupported("INSERT INTO a table function".into()));
        };
        if insert.on.is_some() || insert.returning.is_some() {
            return Err(Error::Unsupported("INSERT ... ON CONFLICT / RETURNING".into()));
        }
        let name = object_name(table_name)?;
        let relation = self.table(&name)?;
        let arity = relation.columns.len();
        let positions: Vec<usize> = if insert.columns.is_empty() {
            (0..arity).collect()
        } else {
            let mut positions = Vec::new();
            for column in &insert.columns {
                let column_name = object_name(column)?;
                match relation.columns.iter().position(|(existing, _)| existing == &column_name) {
                    Some(index) => positions.push(index),
                    None => return catalog_error(format!("column {column_name} is not in table {name}")),
                }
            }
            positions
        };
        let Some(source) = insert.source else {
            return Err(Error::Unsupported("INSERT without VALUES or SELECT".into()));
        };
        let source_rows = match literal_rows(&source) {
            Some(rows) => rows,
            None => {
                let output = self.select(Statement::Query(source))?;
                let Output::Rows { batches, .. } = output else { unreachable!("a query returns rows") };
                let mut rows = Vec::new();
                for batch in &batches {
                    rows.extend(batch_rows(batch)?);
                }
                rows
            }
        };
        let mut rows = Vec::with_capacity(source_rows.len());
        for values in source_rows {
            if values.len() != positions.len() {
                return catalog_error(format!(
                    "INSERT has {} expressions but {} target columns",
                    values.len(),
                    positions.len()
                ));
            }
            let mut row = vec![Value::Null; arity];
            for (position, value) in positions.iter().zip(values) {
                row[*position] = value;
            }
            rows.push(row);
        }
        let count = self.change_table(&name, Vec::new(), rows)?;
        Ok(Output::Status(format!("INSERT 0 {count}")))
    }

    /// The rows of table `name` satisfying `selection`, each with `extra` expressions evaluated
    /// on it. Point lookups on the primary key do not scan the table.
    fn matching_rows(
        &mut self,
        name: &str,
        selection: Option<&ast::Expr>,
        extra: &[ast::Expr],
    ) -> Result<Vec<(Row, Row)>, Error> {
        let relation = self.table(name)?;
        let data = relation.table().expect("checked").clone();
        let arity = relation.columns.len();
        let split = |row: Row| {
            let mut old = row;
            let new = old.split_off(arity);
            (old, new)
        };
        // Simple expressions skip DataFusion planning (see `fastpath`).
        let direct = (|| {
            let predicate = match selection {
                Some(selection) => Some(fastpath::translate_predicate(selection, &relation.columns)?),
                None => None,
            };
            let mut exprs: Vec<Expr> = (0..arity).map(Expr::Column).collect();
            for expr in extra {
                exprs.push(fastpath::translate_expr(expr, &relation.columns)?);
            }
            Some((predicate, exprs))
        })();
        let (predicate, exprs) = match direct {
            Some(direct) => direct,
            None => {
                let mut select: Vec<String> = relation.columns.iter().map(|(column, _)| quote(column)).collect();
                select.extend(extra.iter().map(|expr| expr.to_string()));
                let mut sql = format!("SELECT {} FROM {}", select.join(", "), quote(name));
                if let Some(selection) = selection {
                    sql.push_str(&format!(" WHERE {selection}"));
                }
                let statement = weft_sql::parse(&sql)?.pop().expect("one statement");
                let plan = self.planner.optimized_plan(statement)?;
                match lower_plan(&plan).ok().and_then(|lowered| row_local(&lowered, relation.id)) {
                    Some(local) => local,
                    None => {
                        // Not row by row (a subquery, say): let DataFusion find the rows.
                        let batches = self.planner.execute(plan, || self.read_gate().map(Gate::read))?;
                        let mut found = Vec::new();
                        for batch in &batches {
                            found.extend(batch_rows(batch)?.into_iter().map(split));
                        }
                        return Ok(found);
                    }
                }
            }
        };
        let evaluate = |row: &Row| -> Result<Option<(Row, Row)>, Error> {
            if let Some(predicate) = &predicate {
                if !predicate.eval_predicate(row).map_err(|error| Error::Constraint(error.to_string()))? {
                    return Ok(None);
                }
            }
            let values =
                weft_engine::expr::eval_all(&exprs, row).map_err(|error| Error::Constraint(error.to_string()))?;
            Ok(Some(split(values)))
        };
        let mut found = Vec::new();
        if let Some(key) = point_lookup(predicate.as_ref(), data.primary_key.as_deref(), &relation.columns) {
            if let Some(row) = data.get(&key) {
                found.extend(evaluate(&row)?);
            }
            return Ok(found);
        }
        let mut failure = None;
        data.for_each(|row, count| {
            if failure.is_none() {
                match evaluate(row) {
                    Ok(Some(pair)) => found.extend(std::iter::repeat_n(pair, count)),
                    Ok(None) => {}
                    Err(error) => failure = Some(error),
                }
            }
        });
        match failure {
            Some(error) => Err(error),
            None => Ok(found),
        }
    }

    fn update(&mut self, update: ast::Update) -> Result<Output, Error> {
        if !update.table.joins.is_empty() || update.from.is_some() || update.returning.is_some() {
            return Err(Error::Unsupported("UPDATE with joins, FROM or RETURNING".into()));
        }
        let TableFactor::Table { name: table_name, .. } = &update.table.relation else {
            return Err(Error::Unsupported(format!("UPDATE of {}", update.table.relation)));
        };
        let name = object_name(table_name)?;
        let relation = self.table(&name)?;
        let mut targets = Vec::new();
        let mut exprs = Vec::new();
        for assignment in &update.assignments {
            let AssignmentTarget::ColumnName(column) = &assignment.target else {
                return Err(Error::Unsupported("UPDATE SET (a, b) = ...".into()));
            };
            let column_name = object_name(column)?;
            match relation.columns.iter().position(|(existing, _)| existing == &column_name) {
                Some(index) => targets.push(index),
                None => return catalog_error(format!("column {column_name} is not in table {name}")),
            }
            exprs.push(assignment.value.clone());
        }
        let matches = self.matching_rows(&name, update.selection.as_ref(), &exprs)?;
        let mut deletes = Vec::with_capacity(matches.len());
        let mut inserts = Vec::with_capacity(matches.len());
        for (old, values) in matches {
            let mut new = old.clone();
            for (target, value) in targets.iter().zip(values) {
                new[*target] = value;
            }
            deletes.push(old);
            inserts.push(new);
        }
        let count = self.change_table(&name, deletes, inserts)?;
        Ok(Output::Status(format!("UPDATE {count}")))
    }

    fn delete(&mut self, delete: ast::Delete) -> Result<Output, Error> {
        let tables = match &delete.from {
            FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables) => tables,
        };
        let [table] = tables.as_slice() else {
            return Err(Error::Unsupported("DELETE from several tables".into()));
        };
        if !table.joins.is_empty() || delete.using.is_some() || delete.returning.is_some() || delete.limit.is_some() {
            return Err(Error::Unsupported("DELETE with joins, USING, RETURNING or LIMIT".into()));
        }
        let TableFactor::Table { name: table_name, .. } = &table.relation else {
            return Err(Error::Unsupported(format!("DELETE from {}", table.relation)));
        };
        let name = object_name(table_name)?;
        let matches = self.matching_rows(&name, delete.selection.as_ref(), &[])?;
        let deletes = matches.into_iter().map(|(old, _)| old).collect();
        let count = self.change_table(&name, deletes, Vec::new())?;
        Ok(Output::Status(format!("DELETE {count}")))
    }

    fn explain(&mut self, statement: Statement) -> Result<Output, Error> {
        let query = match statement {
            Statement::Query(query) => query,
            Statement::CreateView(create) => create.query,
            other => {
                return Err(Error::Unsupported(format!(
                    "EXPLAIN of {}",
                    other.to_string().split_whitespace().next().unwrap_or("")
                )))
            }
        };
        let plan = self.planner.optimized_plan(Statement::Query(query))?;
        let lowered = lower_plan(&plan).map_err(SqlError::from)?;
        let lines: Vec<String> = lowered.to_string().lines().map(str::to_string).collect();
        let schema = Arc::new(Schema::new(vec![Field::new("plan", DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(lines))])
            .map_err(ConvertError::from)?;
        Ok(Output::Rows { schema, batches: vec![batch] })
    }

    /// Inserts rows into a table as one transaction (used by `COPY FROM` and tools). Values are
    /// cast to the column types.
    pub fn insert_rows(&mut self, name: &str, rows: Vec<Row>) -> Result<usize, Error> {
        let result = self.change_table(name, Vec::new(), rows);
        let result = self.autocommit(result)?;
        // Views over the table may have called functions: their receipts are logged with it.
        self.log_issued_receipts()?;
        result
    }
}

/// Whether `plan` calls function `id` anywhere.
fn plan_calls(plan: &Plan, id: weft_engine::functions::FunctionId) -> bool {
    plan.any_expr(&|expr| matches!(expr, Expr::Udf { id: called, .. } if *called == id))
}

/// The rows of `INSERT ... VALUES` when every entry is a literal.
fn literal_rows(query: &ast::Query) -> Option<Vec<Row>> {
    if query.with.is_some() || query.order_by.is_some() || query.limit_clause.is_some() {
        return None;
    }
    let ast::SetExpr::Values(values) = query.body.as_ref() else {
        return None;
    };
    values.rows.iter().map(|row| row.iter().map(fastpath::literal).collect::<Option<Row>>()).collect()
}

/// Casts a row's values to the table's column types and checks its primary key has no NULL.
fn conform_row(relation: &Relation, mut row: Row) -> Result<Row, Error> {
    if row.len() != relation.columns.len() {
        return Err(Error::Constraint(format!(
            "table {} has {} columns but a row has {} values",
            relation.name,
            relation.columns.len(),
            row.len()
        )));
    }
    let data = relation.table().expect("a table");
    for (index, (value, (column, column_type))) in row.iter_mut().zip(&relation.columns).enumerate() {
        if value.is_null() && data.primary_key.as_ref().is_some_and(|key| key.contains(&index)) {
            return Err(Error::Constraint(format!("primary key column {}.{column} cannot be NULL", relation.name)));
        }
        // Values already of the column's type (nearly all) are left in place.
        if value.column_type() != Some(*column_type) && !value.is_null() {
            *value = cast(std::mem::replace(value, Value::Null), *column_type).map_err(|error| {
                Error::Constraint(format!("column {}.{column} ({column_type}): {error}", relation.name))
            })?;
        }
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_whose_log_write_fails_never_comes_back_and_later_ones_are_refused() {
        for (case, sync) in [("write", false), ("torn", false), ("sync", true)] {
            let directory = std::env::temp_dir().join(format!("weft-failed-commit-{case}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&directory);
            let options = Options { data_dir: directory.clone(), workers: 1, sync };
            {
                let mut database = Database::open(options.clone()).unwrap();
                database.execute("CREATE TABLE t (x BIGINT PRIMARY KEY); INSERT INTO t VALUES (1)").unwrap();
                match case {
                    "write" => database.wal.fail_next_write(0),
                    "torn" => database.wal.fail_next_write(9),
                    _ => database.wal.fail_next_sync(),
                }
                let error = database.execute("INSERT INTO t VALUES (2)").unwrap_err();
                assert!(matches!(error, Error::Wal(WalError::Io { .. })), "{case}: {error}");
                assert_eq!(database.query("SELECT x FROM t").unwrap(), vec![vec![Value::Int(1)]], "{case}");
                // The log takes nothing more, so nothing after the failure can carry it out.
                let refused = database.execute("INSERT INTO t VALUES (3)").unwrap_err();
                assert!(matches!(refused, Error::Wal(WalError::Failed { .. })), "{case}: {refused}");
            }
            let mut database = Database::open(options).unwrap();
            assert_eq!(database.query("SELECT x FROM t").unwrap(), vec![vec![Value::Int(1)]], "{case}");
            database.execute("INSERT INTO t VALUES (4)").unwrap();
            assert_eq!(
                database.query("SELECT x FROM t ORDER BY x").unwrap(),
                vec![vec![Value::Int(1)], vec![Value::Int(4)]]
            );
            drop(database);
            let _ = std::fs::remove_dir_all(&directory);
        }
    }
}
