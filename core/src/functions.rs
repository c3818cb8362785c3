//! Pure function calls and their receipts: the memo table behind `weft invoke`.
//!
//! A call is named by its invocation CID. The first call runs the function and records a
//! receipt, signed by the node, in the log; every later call of the same invocation, also after
//! a restart, is a memo hit that returns the recorded outcome without running anything.
//! Receipts are facts: nothing ever deletes one.

use crate::catalog::{FunctionCatalog, FunctionDefinition};
use cid::Cid;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use weft_engine::value::SmolStr;
use weft_engine::Value;
use weft_engine::{ColumnType, Row};
use weft_ipvm::invocation::{self, ContentError, Outcome};
use weft_ipvm::memo::{now_ns, CallKey, Memo, MemoEntry};
use weft_ipvm::receipts::{CalledFunction, Run};
use weft_ipvm::signer::{PendingReceipt, Signer};
use weft_sql::{RelationProvider, RowSource};

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

/// The module CID of WAT or Wasm source (of the binary; the CID of the text if it is not WAT).
pub fn module_cid_of(source: &[u8]) -> Cid {
    match wat::parse_bytes(source) {
        Ok(binary) => invocation::module_cid(&binary),
        Err(_) => invocation::module_cid(source),
    }
}

/// A defined Wasm function, called from views and queries: each distinct invocation runs at
/// most once; its receipt is recorded in the memo and queued for the log.
pub struct WasmFunction {
    /// The function as defined.
    pub definition: FunctionDefinition,
    /// Its module, compiled.
    pub module: Arc<weft_wasm::LoadedModule>,
    /// The runtime that runs it.
    pub runtime: Arc<weft_wasm::Runtime>,
    /// The database's memo.
    pub memo: Arc<RwLock<Memo>>,
    /// Signs the receipts of the calls that run.
    pub signer: Arc<Signer>,
    /// This function's index in the memo's functions, and the function.
    pub function_index: u32,
    /// The function as the memo and signer name it.
    pub function: Arc<CalledFunction>,
    /// This node's index in the memo's issuers, and its did.
    pub issuer_index: u32,
    /// This node's did.
    pub issuer: Arc<str>,
    /// Held while a missed invocation runs, so two workers never run the same one.
    pub running: RunningLocks,
}

/// The locks a missed call holds while it runs, one per share of the calls (by their memo
/// hash): two workers never run the same invocation, while workers calling different ones
/// (nearly always in different shares) run them side by side.
pub struct RunningLocks([Mutex<()>; RunningLocks::SHARES]);

impl RunningLocks {
    const SHARES: usize = 64;

    /// Unlocked locks.
    pub fn new() -> RunningLocks {
        RunningLocks(std::array::from_fn(|_| Mutex::new(())))
    }

    /// Locks the share of `call`, chosen by the low bits of its hash: workers read their rows
    /// in hash order, so the high bits of the calls they make at the same moment are alike.
    fn lock(&self, call: &CallKey) -> std::sync::MutexGuard<'_, ()> {
        self.0[call.hash() as usize % RunningLocks::SHARES].lock().expect("running lock")
    }
}

impl Default for RunningLocks {
    fn default() -> RunningLocks {
        RunningLocks::new()
    }
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
        let call = CallKey::new(self.function_index, args);
        let absent_at = {
            let memo = self.memo.read().expect("memo lock");
            if let Some(out) = memo.recall_call(&call) {
                return self.finish(out.clone(), args);
            }
            memo.len()
        };
        self.run_missed(&call, absent_at)
    }

    /// The calls of a chunk: the recorded ones are answered under one read lock of the memo,
    /// the others then run one by one (see [`WasmFunction::run_missed`]).
    fn call_batch(&self, rows: usize, args: &[Value], results: &mut Vec<Result<Value, weft_engine::EvalError>>) {
        let arity = self.definition.params.len();
        debug_assert_eq!(args.len(), rows * arity, "one row of arguments per call");
        let first = results.len();
        let mut missed = Vec::new();
        let absent_at = {
            let memo = self.memo.read().expect("memo lock");
            let mut hits = 0;
            for row in 0..rows {
                let args = &args[row * arity..(row + 1) * arity];
                if args.iter().any(Value::is_null) {
                    results.push(Ok(Value::Null));
                    continue;
                }
                let call = CallKey::new(self.function_index, args);
                match memo.find_call(&call) {
                    Some(index) => {
                        hits += 1;
                        results.push(self.finish(memo.entry(index).run.out.clone(), args));
                    }
                    None => {
                        missed.push((first + row, call));
                        results.push(Ok(Value::Null));
                    }
                }
            }
            memo.count_hits(hits);
            memo.len()
        };
        for (position, call) in missed {
            results[position] = self.run_missed(&call, absent_at);
        }
    }
}

impl WasmFunction {
    /// Runs `call`, found absent from the memo when it held `absent_at` entries (recording it
    /// searches the memo again only if entries were recorded since), unless another worker ran
    /// it meanwhile: the share of the running locks it falls in is held throughout.
    fn run_missed(&self, call: &CallKey, absent_at: usize) -> Result<Value, weft_engine::EvalError> {
        let (definition, args) = (&self.definition, call.args);
        let _running = self.running.lock(call);
        // Another worker may have run it while this one waited.
        let absent_at = {
            let memo = self.memo.read().expect("memo lock");
            if memo.len() != absent_at {
                if let Some(out) = memo.recall_call(call) {
                    return self.finish(out.clone(), args);
                }
            }
            memo.len()
        };
        let signature = weft_wasm::Signature { params: definition.params.clone(), result: definition.result };
        let limits = weft_wasm::Limits { fuel: definition.fuel, memory_bytes: definition.memory_bytes };
        let (out, fuel, duration_us, started_ns) =
            match self.runtime.call(&self.module, &definition.export, &signature, args, limits) {
                Ok(output) => (Outcome::Ok(output.value), output.fuel, output.duration_us, output.started_ns),
                // Time is not a property of the invocation: nothing is recorded, and the call
                // may succeed on another try.
                Err(error @ weft_wasm::CallError::Interrupted(_)) => {
                    return Err(weft_engine::EvalError(format!("function {}: {error}", definition.name)));
                }
                Err(error) => (Outcome::Error(error.to_string()), 0, 0, now_ns()),
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
            first_seen_ns: started_ns,
            worker: weft_engine::dataflow::current_worker().unwrap_or(0) as u32,
        };
        {
            // Handed to the signer under the memo's lock: an entry without a receipt is always
            // waiting in the signer, so `Database::invoke` can have it signed by finishing it.
            let mut memo = self.memo.write().expect("memo lock");
            memo.count_miss();
            let (index, recorded) = memo.record_missed(
                MemoEntry::new(self.function_index, self.issuer_index, run.clone()),
                call,
                absent_at,
            );
            // Recorded meanwhile by `Database::invoke` (which holds no running lock): that
            // first receipt stays, and is already with the signer.
            if recorded {
                self.signer.push(PendingReceipt {
                    index,
                    function: self.function.clone(),
                    issuer: self.issuer.clone(),
                    run,
                });
            }
        }
        self.finish(out, args)
    }

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

/// A parsed function statement.
pub enum FunctionStatement {
    /// `CREATE [OR REPLACE] FUNCTION`: the definition, but for the module's bytes, which the
    /// database reads from `path`.
    Create {
        /// The definition (its `source` still empty).
        definition: FunctionDefinition,
        /// The module's path.
        path: String,
        /// `OR REPLACE`.
        or_replace: bool,
    },
    /// `DROP FUNCTION [IF EXISTS]`.
    Drop {
        /// The function.
        name: String,
        /// A missing function is no error.
        if_exists: bool,
    },
}

/// The definition a parsed `CREATE FUNCTION` declares (its module not yet read).
pub fn function_statement(spec: weft_sql::statement::FunctionSpec) -> Result<FunctionStatement, String> {
    let defaults = weft_wasm::Limits::default();
    let memory_bytes = match spec.memory_mb {
        None => defaults.memory_bytes,
        Some(megabytes) => usize::try_from(megabytes)
            .ok()
            .and_then(|megabytes| megabytes.checked_mul(1 << 20))
            .ok_or_else(|| format!("memory_mb = {megabytes} is too large"))?,
    };
    let definition = FunctionDefinition {
        export: spec.export.unwrap_or_else(|| spec.name.clone()),
        name: spec.name,
        source: Vec::new(),
        params: spec.params,
        result: spec.returns,
        fuel: spec.fuel.unwrap_or(defaults.fuel),
        memory_bytes,
        on_error_null: spec.on_error_null,
    };
    Ok(FunctionStatement::Create { definition, path: spec.path, or_replace: spec.or_replace })
}
