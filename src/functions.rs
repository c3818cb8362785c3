//! Pure function calls and their receipts: the memo table behind `weft invoke`.
//!
//! A call is named by its invocation CID. The first call runs the function and records a
//! receipt, signed by the node, in the log; every later call of the same invocation, also after
//! a restart, is a memo hit that returns the recorded outcome without running anything.
//! Receipts are facts: nothing ever deletes one.

use crate::identity::{Identity, Proof};
use crate::wal::Record;
use cid::Cid;
use ipld_core::ipld::Ipld;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use weft_engine::content::{self, ContentError, Invocation, Outcome, Receipt};
use weft_engine::Value;
use weft_engine::{ColumnType, Row};
use weft_sql::{RelationProvider, RowSource};

/// A receipt as stored: its CID, its decoded form, its DAG-CBOR bytes and, once the statement
/// that issued it ends, the node's signature proof.
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

/// A receipt's signature proof: its own (as read from the log), or its place in a batch signed
/// by this process (the path is rebuilt from the batch when needed).
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
    /// Builds and addresses the receipt of `invocation` (signed later, in a batch).
    pub fn issue(invocation: Invocation, receipt: Receipt) -> Result<StoredReceipt, ContentError> {
        let encoded = receipt.encode()?;
        let cid = content::dag_cbor_cid(&encoded);
        let first_seen_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as i64);
        let worker = weft_engine::dataflow::current_worker().unwrap_or(0) as u32;
        Ok(StoredReceipt { cid, receipt, invocation, encoded, proof: None, first_seen_ns, worker })
    }

    /// The log record of this receipt, with its complete `proof`.
    pub fn record_with(&self, proof: Proof) -> Result<Record, ContentError> {
        Ok(Record::Receipt {
            invocation: self.invocation.encode()?,
            receipt: self.encoded.clone(),
            proof,
            first_seen_ns: self.first_seen_ns,
            worker: self.worker,
        })
    }

    /// The complete proof, if the receipt is signed.
    pub fn signed_proof(&self) -> Result<Proof, ContentError> {
        self.proof
            .as_ref()
            .map(ReceiptProof::proof)
            .ok_or_else(|| ContentError::Encoding("receipt is not signed yet".into()))
    }

    /// Rebuilds a stored receipt from its logged bytes.
    pub fn decode(
        invocation: &[u8],
        receipt: &[u8],
        proof: Proof,
        first_seen_ns: i64,
        worker: u32,
    ) -> Result<StoredReceipt, ContentError> {
        let invocation = Invocation::from_ipld(&content::decode(invocation)?)?;
        let decoded = Receipt::from_ipld(&content::decode(receipt)?)?;
        Ok(StoredReceipt {
            cid: content::dag_cbor_cid(receipt),
            receipt: decoded,
            invocation,
            encoded: receipt.to_vec(),
            proof: Some(ReceiptProof::Own(Box::new(proof))),
            first_seen_ns,
            worker,
        })
    }
}

/// Every receipt this node holds, by invocation and by receipt CID, with hit and miss counts.
#[derive(Default)]
pub struct Memo {
    by_invocation: HashMap<Cid, StoredReceipt>,
    invocation_of_receipt: HashMap<Cid, Cid>,
    /// Calls answered from a recorded receipt.
    pub hits: AtomicU64,
    /// Calls that ran.
    pub misses: AtomicU64,
}

impl Memo {
    /// A receipt by its own CID.
    pub fn receipt(&self, cid: &Cid) -> Option<&StoredReceipt> {
        self.by_invocation.get(self.invocation_of_receipt.get(cid)?)
    }

    /// The recorded receipt of an invocation, counted as a memo hit when there is one.
    pub fn recall(&self, invocation: &Cid) -> Option<&StoredReceipt> {
        let found = self.by_invocation.get(invocation);
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Counts a call that had to run.
    pub fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Attaches the signature proof to the receipt of `invocation`.
    pub fn set_proof(&mut self, invocation: &Cid, proof: ReceiptProof) {
        if let Some(stored) = self.by_invocation.get_mut(invocation) {
            stored.proof = Some(proof);
        }
    }

    /// Records a receipt.
    pub fn insert(&mut self, stored: StoredReceipt) {
        self.invocation_of_receipt.insert(stored.cid, stored.receipt.ran);
        self.by_invocation.insert(stored.receipt.ran, stored);
    }

    /// The recorded receipt of an invocation (not counted as a hit).
    pub fn get(&self, invocation: &Cid) -> Option<&StoredReceipt> {
        self.by_invocation.get(invocation)
    }

    /// Every stored receipt.
    pub fn receipts(&self) -> impl Iterator<Item = &StoredReceipt> {
        self.by_invocation.values()
    }
}

/// A weft value as JSON.
pub fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) | Value::Timestamp(i) => (*i).into(),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Text(text) => text.clone().into(),
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
        write!(f, "Memo({} receipts)", self.by_invocation.len())
    }
}

fn text(value: impl Into<String>) -> Value {
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
                .receipts()
                .map(|stored| {
                    let args: Vec<serde_json::Value> = stored.invocation.args.iter().map(value_json).collect();
                    vec![
                        text(stored.receipt.ran.to_string()),
                        text("wasm/run"),
                        text(stored.invocation.module.to_string()),
                        text(stored.invocation.function.clone()),
                        text(serde_json::Value::from(args).to_string()),
                        Value::Timestamp(stored.first_seen_ns),
                    ]
                })
                .collect(),
            SystemRelation::Receipts => memo
                .receipts()
                .map(|stored| {
                    let (out, error) = outcome_json(&stored.receipt.out);
                    vec![
                        text(stored.cid.to_string()),
                        text(stored.receipt.ran.to_string()),
                        Value::Bool(error.is_none()),
                        if error.is_none() { text(out.to_string()) } else { Value::Null },
                        error.map_or(Value::Null, Value::Text),
                        Value::Int(stored.receipt.fuel as i64),
                        Value::Int(stored.receipt.duration_us as i64),
                        Value::Int(i64::from(stored.worker)),
                        text(stored.receipt.issuer.clone()),
                    ]
                })
                .collect(),
            SystemRelation::MemoStats => vec![vec![
                Value::Int(memo.hits.load(Ordering::Relaxed) as i64),
                Value::Int(memo.misses.load(Ordering::Relaxed) as i64),
                Value::Int(memo.by_invocation.len() as i64),
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
    pub identity: Arc<Identity>,
    /// Invocations whose receipts were issued (into the memo) since the log last took them.
    pub issued: Arc<Mutex<Vec<Cid>>>,
    /// Held while a missed invocation runs, so two workers never run the same one.
    pub running: Mutex<()>,
    /// Encodes this function's invocations from their arguments alone.
    pub template: content::InvocationTemplate,
    /// Outcomes by arguments, for this function: a memo hit without hashing the invocation.
    /// Same function, same arguments, same invocation CID, so this can never disagree with the
    /// memo; it is bounded ([`RECENT_OUTCOMES`]) and simply cleared when full.
    pub recent: RwLock<HashMap<Vec<Value>, Outcome, ahash::RandomState>>,
}

/// Entries a function's argument cache holds before it is cleared.
pub const RECENT_OUTCOMES: usize = 1 << 20;

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
        if let Some(out) = self.recent.read().expect("argument cache").get(args).cloned() {
            self.memo.read().expect("memo lock").hits.fetch_add(1, Ordering::Relaxed);
            return self.finish(out, args);
        }
        let failed = |message: String| weft_engine::EvalError(format!("function {}: {message}", definition.name));
        let cid = self.template.cid(args).map_err(|error| failed(error.to_string()))?;
        let recall = || self.memo.read().expect("memo lock").recall(&cid).map(|stored| stored.receipt.out.clone());
        let out = match recall() {
            Some(out) => out,
            None => {
                let _running = self.running.lock().expect("running lock");
                // Another worker may have run it while this one waited.
                if let Some(out) = recall() {
                    self.remember(args, &out);
                    return self.finish(out, args);
                }
                let invocation =
                    Invocation { module: self.module.cid, function: definition.export.clone(), args: args.to_vec() };
                let signature = weft_wasm::Signature { params: definition.params.clone(), result: definition.result };
                let limits = weft_wasm::Limits { fuel: definition.fuel, memory_bytes: definition.memory_bytes };
                let (out, fuel, duration_us) =
                    match self.runtime.call(&self.module, &definition.export, &signature, args, limits) {
                        Ok(output) => (Outcome::Ok(output.value), output.fuel, output.duration_us),
                        Err(error) => (Outcome::Error(error.to_string()), 0, 0),
                    };
                let receipt =
                    Receipt { ran: cid, out: out.clone(), fuel, duration_us, issuer: self.identity.did().to_string() };
                let stored = StoredReceipt::issue(invocation, receipt).map_err(|error| failed(error.to_string()))?;
                let mut memo = self.memo.write().expect("memo lock");
                memo.count_miss();
                memo.insert(stored);
                self.issued.lock().expect("issued receipts").push(cid);
                out
            }
        };
        self.remember(args, &out);
        self.finish(out, args)
    }
}

impl WasmFunction {
    /// Remembers the outcome for these arguments.
    fn remember(&self, args: &[Value], out: &Outcome) {
        let mut recent = self.recent.write().expect("argument cache");
        if recent.len() >= RECENT_OUTCOMES {
            recent.clear();
        }
        recent.insert(args.to_vec(), out.clone());
    }

    /// The value of an outcome, or the call's error naming
    /// the function and the invocation CID.
    fn finish(&self, out: Outcome, args: &[Value]) -> Result<Value, weft_engine::EvalError> {
        match out {
            Outcome::Ok(value) => Ok(value),
            Outcome::Error(_) if self.definition.on_error_null => Ok(Value::Null),
            Outcome::Error(message) => {
                let cid = self.template.cid(args).map(|cid| cid.to_string()).unwrap_or_default();
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
