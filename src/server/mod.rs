//! `weft serve`: one database shared by many clients over the PostgreSQL wire protocol
//! ([`pg`]) and HTTP ([`http`]).
//!
//! [`Shared`] is the one place statements from either front end are executed. Queries run on a
//! [`Reader`] without the database's lock, so readers and writers do not wait for each other's
//! planning or execution; each query copies the rows of one complete timestamp (the commit gate).
//! Writes are serialized; a connection that opens `BEGIN` owns the writer until its `COMMIT` or
//! `ROLLBACK` (or its disconnect, which rolls back). `SUBSCRIBE` hands out a view's snapshot and
//! a stream of its changes.

pub mod catalog;
pub mod http;
pub mod metrics;
pub mod pg;

use crate::database::{Database, Error, Output, Reader};
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast::Statement;
use metrics::Metrics;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;
use weft_engine::{ColumnType, Row, Subscription, Time};

/// Where and how `weft serve` listens.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// PostgreSQL wire protocol address, if any.
    pub pg: Option<SocketAddr>,
    /// HTTP address, if any.
    pub http: Option<SocketAddr>,
    /// The password clients must give; `None` accepts everyone (allowed on loopback only).
    pub password: Option<String>,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing to listen on {0} without a password: set --password (or WEFT_PASSWORD), or listen on loopback")]
    OpenListener(SocketAddr),
    #[error("cannot listen on {address}: {message}")]
    Bind { address: SocketAddr, message: String },
    #[error("nothing to serve: give --pg and/or --http")]
    NoListener,
    #[error("could not start the server's runtime: {0}")]
    Runtime(String),
}

impl ServeOptions {
    /// Checks that no address is reachable from other hosts without a password.
    pub fn check(&self) -> Result<(), ServeError> {
        if self.pg.is_none() && self.http.is_none() {
            return Err(ServeError::NoListener);
        }
        for address in self.pg.iter().chain(self.http.iter()) {
            if self.password.is_none() && !address.ip().is_loopback() {
                return Err(ServeError::OpenListener(*address));
            }
        }
        Ok(())
    }
}

/// A client connection's identity, for transaction ownership.
pub type SessionId = u64;

/// A view's columns and a subscription to it.
pub struct ViewSubscription {
    pub view: String,
    pub columns: Vec<(String, ColumnType)>,
    pub subscription: Subscription,
}

/// One change of a subscribed view: the row was added (`diff` 1) or removed (`diff` -1) at
/// logical timestamp `time`.
#[derive(Clone, Debug, PartialEq)]
pub struct RowChange {
    pub time: Time,
    pub diff: i64,
    pub row: Row,
}

impl ViewSubscription {
    /// The snapshot as changes (when asked for), one per copy of a row.
    pub fn snapshot_changes(&self, snapshot: bool) -> Vec<RowChange> {
        if !snapshot {
            return Vec::new();
        }
        expand(self.subscription.time, &self.subscription.snapshot)
    }
}

/// Rows with multiplicities as +1/-1 changes.
pub fn expand(time: Time, updates: &[(Row, isize)]) -> Vec<RowChange> {
    let mut changes = Vec::new();
    for (row, count) in updates {
        let diff = count.signum() as i64;
        for _ in 0..count.unsigned_abs() {
            changes.push(RowChange { time, diff, row: row.clone() });
        }
    }
    changes
}

/// The database as the server's connections share it.
pub struct Shared {
    database: Mutex<Database>,
    reader: Reader,
    /// The session whose open transaction owns the writer.
    owner: Mutex<Option<SessionId>>,
    released: Condvar,
    next_session: AtomicU64,
    pub metrics: Metrics,
    pub password: Option<String>,
}

impl Shared {
    /// Shares `database`.
    pub fn new(database: Database, password: Option<String>) -> Shared {
        let reader = database.reader();
        Shared {
            database: Mutex::new(database),
            reader,
            owner: Mutex::new(None),
            released: Condvar::new(),
            next_session: AtomicU64::new(1),
            metrics: Metrics::default(),
            password,
        }
    }

    /// A new session id.
    pub fn open_session(&self) -> SessionId {
        self.metrics.connections.fetch_add(1, Ordering::Relaxed);
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Ends a session: an open transaction of it is rolled back.
    pub fn close_session(&self, session: SessionId) {
        self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        let mut owner = self.owner.lock().expect("owner lock");
        if *owner == Some(session) {
            let mut database = self.lock_database();
            if let Err(error) = database.execute("ROLLBACK") {
                tracing_error(&format!("rolling back the transaction of a closed session: {error}"));
            }
            *owner = None;
            self.released.notify_all();
        }
    }

    fn lock_database(&self) -> MutexGuard<'_, Database> {
        // A panic while holding the lock is a bug, but the database itself stays consistent:
        // every statement's changes are applied or undone before the lock is released.
        self.database.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies what sources have read, unless a client's transaction owns the writer (the next
    /// tick does it then).
    pub fn ingest_sources(&self) {
        let owner = self.owner.lock().expect("owner lock");
        if owner.is_some() {
            return;
        }
        let mut database = self.lock_database();
        if database.has_inputs() {
            if let Err(error) = database.ingest_sources() {
                tracing_error(&format!("ingesting sources: {error}"));
            }
        }
    }

    /// Whether `session` has an open transaction.
    pub fn in_transaction(&self, session: SessionId) -> bool {
        *self.owner.lock().expect("owner lock") == Some(session)
    }

    /// Executes the statements of `sql` in order for `session`, stopping at the first error.
    /// Returns the outputs of the statements that ran, and the error if one failed.
    pub fn execute(&self, session: SessionId, sql: &str) -> (Vec<Output>, Option<Error>) {
        let started = Instant::now();
        let mut outputs = Vec::new();
        for text in crate::functions::split_statements(sql) {
            match self.execute_one(session, &text) {
                Ok(output) => outputs.push(output),
                Err(error) => {
                    self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                    return (outputs, Some(error));
                }
            }
        }
        self.metrics.statements.fetch_add(1, Ordering::Relaxed);
        self.metrics.statement_latency.observe(started.elapsed());
        (outputs, None)
    }

    fn execute_one(&self, session: SessionId, text: &str) -> Result<Output, Error> {
        if let Some(output) = catalog::answer_session_statement(text) {
            return Ok(output);
        }
        let text = catalog::rewrite_client_query(text);
        if catalog::reads_absent_catalog_table(&text) {
            return Ok(text_rows("?column?", &[]));
        }
        let parsed = weft_sql::parse(&text);
        if let Ok(statements) = &parsed {
            if let [statement] = statements.as_slice() {
                if Reader::can_run(statement) && !self.in_transaction(session) {
                    return self.read(statement.clone());
                }
            }
        }
        self.write(session, &text)
    }

    fn read(&self, statement: Statement) -> Result<Output, Error> {
        let output = self.reader.query(statement)?;
        if self.reader.has_unlogged_receipts() {
            self.lock_database().log_issued_receipts()?;
        }
        Ok(output)
    }

    fn write(&self, session: SessionId, text: &str) -> Result<Output, Error> {
        {
            let mut owner = self.owner.lock().expect("owner lock");
            while owner.is_some_and(|holder| holder != session) {
                owner = self.released.wait(owner).expect("owner lock");
            }
            *owner = Some(session);
        }
        let started = Instant::now();
        let (result, in_transaction) = {
            let mut database = self.lock_database();
            let result = database.execute(text);
            (result, database.in_transaction())
        };
        self.metrics.update_latency.observe(started.elapsed());
        if !in_transaction {
            *self.owner.lock().expect("owner lock") = None;
            self.released.notify_all();
        }
        let mut outputs = result?;
        Ok(outputs.pop().unwrap_or(Output::Status("EMPTY".into())))
    }

    /// Subscribes to view `name`.
    pub fn subscribe(&self, name: &str) -> Result<ViewSubscription, Error> {
        let (columns, state) = self.lock_database().view(name)?;
        let subscription = self.reader.subscribe(&state)?;
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        Ok(ViewSubscription { view: name.to_string(), columns, subscription })
    }

    /// Runs `work` with the database locked (for metrics and catalog reads).
    pub fn with_database<T>(&self, work: impl FnOnce(&Database) -> T) -> T {
        work(&self.lock_database())
    }
}

/// A `SUBSCRIBE` statement: `SUBSCRIBE [TO] view [WITH (SNAPSHOT = true|false)]`.
#[derive(Debug, PartialEq)]
pub struct SubscribeStatement {
    pub view: String,
    pub snapshot: bool,
}

/// Parses `text` as a `SUBSCRIBE` statement: `None` if it is another statement, an error if it
/// is a malformed `SUBSCRIBE`.
pub fn parse_subscribe(text: &str) -> Option<Result<SubscribeStatement, Error>> {
    let text = text.trim().trim_end_matches(';').trim();
    let mut words = text.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("subscribe") {
        return None;
    }
    let rest = text["subscribe".len()..].trim_start();
    let rest = match rest.get(..3) {
        Some(word) if word.eq_ignore_ascii_case("to ") => rest[3..].trim_start(),
        _ => rest,
    };
    let (name, options) = match rest.find(|c: char| c.is_whitespace() || c == '(') {
        Some(end) => (&rest[..end], rest[end..].trim()),
        None => (rest, ""),
    };
    let malformed = |why: &str| Some(Err(Error::Catalog(format!("malformed SUBSCRIBE ({why}): {text}"))));
    if name.is_empty() {
        return malformed("no view named");
    }
    let view = match name.strip_prefix('"').and_then(|quoted| quoted.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => name.to_lowercase(),
    };
    let mut snapshot = true;
    if !options.is_empty() {
        let Some(body) = options
            .get(..4)
            .filter(|word| word.eq_ignore_ascii_case("with"))
            .map(|_| options[4..].trim())
            .and_then(|body| body.strip_prefix('('))
            .and_then(|body| body.strip_suffix(')'))
        else {
            return malformed("expected WITH (SNAPSHOT = true|false)");
        };
        for option in body.split(',') {
            let Some((key, value)) = option.split_once('=') else {
                return malformed("expected option = value");
            };
            if !key.trim().eq_ignore_ascii_case("snapshot") {
                return malformed(&format!("unknown option {}", key.trim()));
            }
            snapshot = match value.trim().to_lowercase().as_str() {
                "true" | "on" | "1" => true,
                "false" | "off" | "0" => false,
                other => return malformed(&format!("SNAPSHOT must be true or false, not {other}")),
            };
        }
    }
    Some(Ok(SubscribeStatement { view, snapshot }))
}

/// A one-column text result (for `SHOW` and catalog answers).
pub fn text_rows(column: &str, values: &[&str]) -> Output {
    let schema = Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, true)]));
    let array: ArrayRef = Arc::new(StringArray::from(values.to_vec()));
    let batch = RecordBatch::try_new(schema.clone(), vec![array]).expect("one text column");
    Output::Rows { schema, batches: vec![batch] }
}

/// Logs a server-side problem that no client is waiting to hear about.
fn tracing_error(message: &str) {
    eprintln!("weft serve: {message}");
}

/// The stack of the threads that execute statements.
pub const STATEMENT_STACK_BYTES: usize = 512 << 20;

/// How often the server applies what sources have read.
const INGEST_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Runs the server until the process is stopped.
pub fn serve(database: Database, options: ServeOptions) -> Result<(), ServeError> {
    options.check()?;
    let shared = Arc::new(Shared::new(database, options.password.clone()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("weft-serve")
        // Parsing, planning and dropping a deeply nested statement recurse once per level: a
        // large (lazily committed) stack turns a client's absurd query into an error, not a crash.
        .thread_stack_size(STATEMENT_STACK_BYTES)
        .enable_all()
        .build()
        .map_err(|error| ServeError::Runtime(error.to_string()))?;
    let mut pg_listener = None;
    if let Some(address) = options.pg {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(address))
            .map_err(|error| ServeError::Bind { address, message: error.to_string() })?;
        eprintln!("weft serve: PostgreSQL protocol on {}", listener.local_addr().unwrap_or(address));
        pg_listener = Some(listener);
    }
    // Sources are read by the effect executor; their reads become table changes here, one
    // transaction per tick, through the same writer as every client.
    let ingest = shared.clone();
    std::thread::Builder::new()
        .name("weft-ingest".into())
        .spawn(move || loop {
            std::thread::sleep(INGEST_INTERVAL);
            ingest.ingest_sources();
        })
        .map_err(|error| ServeError::Runtime(error.to_string()))?;
    let mut http_thread = None;
    if let Some(address) = options.http {
        let server = tiny_http::Server::http(address)
            .map_err(|error| ServeError::Bind { address, message: error.to_string() })?;
        eprintln!("weft serve: HTTP on {address}");
        let shared = shared.clone();
        http_thread = Some(std::thread::spawn(move || http::run(server, shared)));
    }
    match pg_listener {
        Some(listener) => runtime.block_on(pg::run(listener, shared)),
        None => {
            if let Some(thread) = http_thread {
                let _ = thread.join();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_subscribe, SubscribeStatement};

    #[test]
    fn subscribe_statements_parse() {
        let parsed = |text: &str| parse_subscribe(text).map(|result| result.map_err(|error| error.to_string()));
        assert_eq!(parsed("SELECT 1"), None);
        assert_eq!(
            parsed("subscribe to revenue;"),
            Some(Ok(SubscribeStatement { view: "revenue".into(), snapshot: true }))
        );
        assert_eq!(
            parsed("SUBSCRIBE Revenue WITH (SNAPSHOT = false)"),
            Some(Ok(SubscribeStatement { view: "revenue".into(), snapshot: false }))
        );
        assert_eq!(
            parsed("SUBSCRIBE \"Mixed\""),
            Some(Ok(SubscribeStatement { view: "Mixed".into(), snapshot: true }))
        );
        assert!(matches!(parsed("SUBSCRIBE revenue WITH (progress = true)"), Some(Err(_))));
        assert!(matches!(parsed("SUBSCRIBE"), Some(Err(_))));
    }
}
