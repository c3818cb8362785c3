//! `weft serve`: one database shared by many clients over the PostgreSQL wire protocol
//! ([`pg`]) and HTTP ([`http`]).
//!
//! [`Shared`] is the one place statements from either front end are executed. Queries run on a
//! [`Reader`] without the database's lock, so readers and writers do not wait for each other's
//! planning or execution; each query copies the rows of one complete timestamp (the commit gate).
//! Writes are serialized; a connection that opens `BEGIN` owns the writer until its `COMMIT` or
//! `ROLLBACK` (or its disconnect, which rolls back). `SUBSCRIBE` hands out a view's snapshot and
//! a stream of its changes.

pub mod auth;
pub mod catalog;
pub mod http;
pub mod metrics;
pub mod pg;
pub mod sessions;
pub mod statement;

use crate::database::{Database, Error, Output, Reader};
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast::Statement;
use metrics::Metrics;
use statement::Prepared;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
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
    /// The most changes a subscriber may fall behind before it is disconnected.
    pub subscribe_buffer: usize,
    /// The most rows a query may return.
    pub max_result_rows: usize,
    /// How long a statement waits for the writer.
    pub lock_timeout_ms: u64,
    /// How long a session may sit idle inside a transaction before it is rolled back and
    /// disconnected.
    pub idle_in_transaction_timeout_s: u64,
    /// The most connections (pgwire sessions and HTTP requests in progress).
    pub max_connections: usize,
    /// The certificate chain and private key (PEM files) connections are encrypted with: pgwire
    /// clients may ask for TLS, HTTP is HTTPS only.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Listen beyond loopback without a password and TLS (a trusted network's own choice).
    pub insecure: bool,
}

impl Default for ServeOptions {
    /// No listener, no password, the default bounds.
    fn default() -> ServeOptions {
        ServeOptions {
            pg: None,
            http: None,
            password: None,
            subscribe_buffer: ServeOptions::DEFAULT_SUBSCRIBE_BUFFER,
            max_result_rows: ServeOptions::DEFAULT_MAX_RESULT_ROWS,
            lock_timeout_ms: ServeOptions::DEFAULT_LOCK_TIMEOUT_MS,
            idle_in_transaction_timeout_s: ServeOptions::DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_S,
            max_connections: ServeOptions::DEFAULT_MAX_CONNECTIONS,
            tls: None,
            insecure: false,
        }
    }
}

impl ServeOptions {
    /// The default of `--subscribe-buffer`.
    pub const DEFAULT_SUBSCRIBE_BUFFER: usize = 10_000;
    /// The default of `--max-result-rows`.
    pub const DEFAULT_MAX_RESULT_ROWS: usize = 1_000_000;
    /// The default of `--lock-timeout-ms`.
    pub const DEFAULT_LOCK_TIMEOUT_MS: u64 = 30_000;
    /// The default of `--idle-in-transaction-timeout-s`.
    pub const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_S: u64 = 60;
    /// The default of `--max-connections`.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing to listen on {0} without a password: set --password (or WEFT_PASSWORD), or listen on loopback")]
    OpenListener(SocketAddr),
    #[error(
        "refusing to listen on {0} without TLS: give --tls-cert and --tls-key, listen on loopback, or say --insecure"
    )]
    PlainListener(SocketAddr),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {address}: {message}")]
    Bind { address: SocketAddr, message: String },
    #[error("an empty password is no password: give a non-empty --password (or WEFT_PASSWORD), or none on loopback")]
    EmptyPassword,
    #[error("nothing to serve: give --pg and/or --http")]
    NoListener,
    #[error("could not start the server's runtime: {0}")]
    Runtime(String),
}

impl ServeOptions {
    /// Checks that no address is reachable from other hosts without a password and TLS (unless
    /// `insecure`).
    pub fn check(&self) -> Result<(), ServeError> {
        if self.pg.is_none() && self.http.is_none() {
            return Err(ServeError::NoListener);
        }
        if self.password.as_deref() == Some("") {
            return Err(ServeError::EmptyPassword);
        }
        for address in self.pg.iter().chain(self.http.iter()) {
            if self.password.is_none() && !address.ip().is_loopback() {
                return Err(ServeError::OpenListener(*address));
            }
        }
        if !self.insecure {
            let beyond_loopback = self.pg.iter().chain(self.http.iter()).find(|address| !address.ip().is_loopback());
            if let Some(address) = beyond_loopback.filter(|_| self.tls.is_none()) {
                return Err(ServeError::PlainListener(*address));
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

/// One change of a subscribed view: `diff` copies of the row were added (`diff` > 0) or removed
/// (`diff` < 0) at logical timestamp `time`.
#[derive(Clone, Debug, PartialEq)]
pub struct RowChange {
    pub time: Time,
    pub diff: i64,
    pub row: Row,
}

impl ViewSubscription {
    /// The snapshot as changes (when asked for).
    pub fn snapshot_changes(&self, snapshot: bool) -> Vec<RowChange> {
        if !snapshot {
            return Vec::new();
        }
        changes_at(self.subscription.time, &self.subscription.snapshot)
    }
}

/// Rows with multiplicities as changes: one per row, its `diff` the change in multiplicity
/// (never a copy per unit of multiplicity, which a client could make unbounded).
pub fn changes_at(time: Time, updates: &[(Row, isize)]) -> Vec<RowChange> {
    updates.iter().map(|(row, count)| RowChange { time, diff: *count as i64, row: row.clone() }).collect()
}

/// The database as the server's connections share it.
pub struct Shared {
    database: Mutex<Database>,
    reader: Reader,
    /// Sessions, their transactions and the writer.
    pub sessions: sessions::Sessions,
    pub metrics: Metrics,
    /// The password clients must give, if any.
    pub passwords: auth::PasswordCheck,
    /// The most changes a subscriber may fall behind.
    subscribe_buffer: usize,
    /// Whether connections from other hosts must use TLS (the server has a certificate and was
    /// not told `--insecure`).
    tls_beyond_loopback: bool,
}

impl Shared {
    /// Shares `database` as `options` say.
    pub fn new(database: Database, options: &ServeOptions) -> Shared {
        let reader = database.reader().with_row_limit(options.max_result_rows);
        Shared {
            database: Mutex::new(database),
            reader,
            sessions: sessions::Sessions::new(
                std::time::Duration::from_millis(options.lock_timeout_ms),
                options.max_connections,
            ),
            metrics: Metrics::default(),
            passwords: auth::PasswordCheck::new(options.password.as_deref()),
            subscribe_buffer: options.subscribe_buffer,
            tls_beyond_loopback: options.tls.is_some() && !options.insecure,
        }
    }

    /// Opens a session (refused beyond `--max-connections`, SQLSTATE 53300); its notifier is
    /// woken when the server ends the connection.
    pub fn open_session(&self) -> Result<(SessionId, Arc<tokio::sync::Notify>), Error> {
        let opened = self.sessions.open().map_err(|sessions::TooManyConnections(max)| {
            Error::TooManyConnections(format!("sorry, too many clients already ({max}, --max-connections)"))
        })?;
        self.metrics.connections.fetch_add(1, Ordering::Relaxed);
        Ok(opened)
    }

    /// Ends a session: an open transaction of it is rolled back.
    pub fn close_session(&self, session: SessionId) {
        self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        if self.sessions.close(session) {
            let mut database = self.lock_database();
            if database.in_transaction() {
                if let Err(error) = database.execute("ROLLBACK") {
                    tracing_error(&format!("rolling back the transaction of a closed session: {error}"));
                }
            }
            drop(database);
            self.sessions.release(session);
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
        if self.sessions.writer_taken() {
            return;
        }
        let mut database = self.lock_database();
        if database.in_transaction() {
            return;
        }
        if database.has_inputs() {
            if let Err(error) = database.ingest_sources() {
                tracing_error(&format!("ingesting sources: {error}"));
            }
        }
    }

    /// Whether `session` has an open transaction.
    pub fn in_transaction(&self, session: SessionId) -> bool {
        self.sessions.in_transaction(session)
    }

    /// Whether running `prepared` for `session` takes the writer (which it does not hold yet):
    /// async callers claim it before handing the statement to a thread.
    pub fn needs_writer(&self, session: SessionId, prepared: &Prepared) -> bool {
        let writes = match prepared {
            Prepared::Answer(_) | Prepared::Subscribe(_) => false,
            Prepared::Weft(_) => true,
            Prepared::Sql(statement) => {
                !Reader::can_run(statement)
                    && !matches!(
                        statement.as_ref(),
                        Statement::StartTransaction { .. } | Statement::Commit { .. } | Statement::Rollback { .. }
                    )
            }
        };
        writes && !self.sessions.owns_writer(session)
    }

    /// Executes the statements of `sql` in order for `session`, stopping at the first error.
    /// Returns the outputs of the statements that ran, and the error if one failed.
    pub fn execute(&self, session: SessionId, sql: &str) -> (Vec<Output>, Option<Error>) {
        let started = Instant::now();
        let mut outputs = Vec::new();
        for text in crate::functions::split_statements(sql) {
            match statement::prepare(&text).and_then(|prepared| self.run(session, prepared)) {
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

    /// Executes one prepared statement (its parameters bound) for `session`.
    pub fn execute_prepared(&self, session: SessionId, prepared: Prepared) -> Result<Output, Error> {
        let started = Instant::now();
        self.sessions.running(session, true);
        let result = self.run(session, prepared);
        self.sessions.running(session, false);
        match &result {
            Ok(_) => {
                self.metrics.statements.fetch_add(1, Ordering::Relaxed);
                self.metrics.statement_latency.observe(started.elapsed());
            }
            Err(_) => {
                self.metrics.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// Runs one prepared statement (its parameters bound) for `session`.
    fn run(&self, session: SessionId, prepared: Prepared) -> Result<Output, Error> {
        match prepared {
            Prepared::Answer(output) => Ok(output),
            Prepared::Weft(text) => self.write(session, |database| database.execute(&text)),
            Prepared::Subscribe(_) => {
                Err(Error::Unsupported("SUBSCRIBE here: subscribe over pgwire or GET /subscribe/<view>".into()))
            }
            Prepared::Sql(statement) => match statement.as_ref() {
                // A transaction takes the writer at its first write, not here.
                Statement::StartTransaction { .. } => {
                    if !self.sessions.begin(session) {
                        return Err(Error::Constraint("a transaction is already open".into()));
                    }
                    Ok(Output::Status("BEGIN".into()))
                }
                Statement::Commit { .. } | Statement::Rollback { .. } => {
                    let result = if self.sessions.owns_writer(session) {
                        self.write(session, |database| database.execute_parsed(vec![*statement]))
                    } else {
                        // Nothing was written: there is nothing to commit or undo.
                        let tag =
                            if matches!(statement.as_ref(), Statement::Commit { .. }) { "COMMIT" } else { "ROLLBACK" };
                        Ok(Output::Status(tag.into()))
                    };
                    self.sessions.end(session);
                    result
                }
                _ if Reader::can_run(&statement) && !self.sessions.owns_writer(session) => self.read(*statement),
                _ => self.write(session, |database| database.execute_parsed(vec![*statement])),
            },
        }
    }

    fn read(&self, statement: Statement) -> Result<Output, Error> {
        let output = self.reader.query(statement)?;
        if self.reader.has_unlogged_receipts() {
            self.lock_database().log_issued_receipts()?;
        }
        Ok(output)
    }

    /// Runs `work` holding the writer (taken now, waiting at most the lock timeout, unless the
    /// session holds it); a session inside `BEGIN` begins its transaction in the database first.
    /// The writer is released when no transaction is open after the work.
    fn write(
        &self,
        session: SessionId,
        work: impl FnOnce(&mut Database) -> Result<Vec<Output>, Error>,
    ) -> Result<Output, Error> {
        self.sessions.claim(session)?;
        let started = Instant::now();
        let (result, in_transaction) = {
            let mut database = self.lock_database();
            let result = if self.sessions.in_transaction(session) && !database.in_transaction() {
                database.execute("BEGIN").and_then(|_| work(&mut database))
            } else {
                work(&mut database)
            };
            (result, database.in_transaction())
        };
        self.metrics.update_latency.observe(started.elapsed());
        if !in_transaction {
            self.sessions.release(session);
        }
        let mut outputs = result?;
        Ok(outputs.pop().unwrap_or(Output::Status("EMPTY".into())))
    }

    /// Subscribes to view `name`; `wake` is called as changes arrive (or the stream ends).
    pub fn subscribe(&self, name: &str, wake: Option<weft_engine::Wake>) -> Result<ViewSubscription, Error> {
        let (columns, state) = self.lock_database().view(name)?;
        let subscription = self.reader.subscribe_bounded(&state, self.subscribe_buffer, wake)?;
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        Ok(ViewSubscription { view: name.to_string(), columns, subscription })
    }

    /// Whether a pgwire connection from `peer` is refused for not using TLS: with a certificate
    /// (and no `--insecure`), only loopback clients may connect in the clear.
    pub fn refuses_plain_connection(&self, secure: bool, peer: std::net::IpAddr) -> bool {
        self.tls_beyond_loopback && !secure && !peer.is_loopback()
    }

    /// The most changes a subscriber may fall behind before it is disconnected.
    pub fn subscribe_buffer(&self) -> usize {
        self.subscribe_buffer
    }

    /// Runs `work` with the database locked (for metrics and catalog reads).
    pub fn with_database<T>(&self, work: impl FnOnce(&Database) -> T) -> T {
        work(&self.lock_database())
    }
}

/// A `SUBSCRIBE` statement: `SUBSCRIBE [TO] view [WITH (SNAPSHOT = true|false)]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscribeStatement {
    pub view: String,
    pub snapshot: bool,
}

/// Parses `text` as a `SUBSCRIBE` statement (`copy`: inside `COPY (...) TO STDOUT`): `None` if it
/// is another statement, an error if it is a malformed `SUBSCRIBE`.
pub fn parse_subscribe(text: &str, copy: bool) -> Option<Result<SubscribeStatement, Error>> {
    match weft_sql::statement::parse_weft_statement(text)? {
        Ok(weft_sql::statement::WeftStatement::Subscribe { view, snapshot, copy: copied }) if copied == copy => {
            Some(Ok(SubscribeStatement { view, snapshot }))
        }
        Ok(_) => None,
        Err(error) => {
            let first = if copy { "copy" } else { "subscribe" };
            let word = text.split_whitespace().next().unwrap_or_default();
            word.eq_ignore_ascii_case(first).then_some(Err(error.into()))
        }
    }
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

/// A TLS acceptor for the PEM certificate chain and private key in these files.
fn tls_acceptor(certificate: &std::path::Path, key: &std::path::Path) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let tls =
        |what: &std::path::Path, error: &dyn std::fmt::Display| ServeError::Tls(format!("{}: {error}", what.display()));
    let chain = CertificateDer::pem_file_iter(certificate)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| tls(certificate, &error))?;
    if chain.is_empty() {
        return Err(tls(certificate, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|error| tls(key, &error))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ServeError::Tls(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|error| tls(key, &error))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The shortest interval at which idle transactions are looked for.
const MIN_IDLE_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// How often the server applies what sources have read.
const INGEST_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Runs the server until the process is stopped.
pub fn serve(database: Database, options: ServeOptions) -> Result<(), ServeError> {
    options.check()?;
    let shared = Arc::new(Shared::new(database, &options));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("weft-serve")
        // Parsing, planning and dropping a deeply nested statement recurse once per level: a
        // large (lazily committed) stack turns a client's absurd query into an error, not a crash.
        .thread_stack_size(STATEMENT_STACK_BYTES)
        .enable_all()
        .build()
        .map_err(|error| ServeError::Runtime(error.to_string()))?;
    // Sessions idle inside a transaction past the limit are ended (their close rolls back).
    let idle_limit = std::time::Duration::from_secs(options.idle_in_transaction_timeout_s);
    let watched = shared.clone();
    let watching = !idle_limit.is_zero();
    runtime.spawn(async move {
        if !watching {
            return;
        }
        let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1).min(idle_limit.max(MIN_IDLE_TICK)));
        loop {
            ticks.tick().await;
            watched.sessions.end_idle_transactions(idle_limit);
        }
    });
    let tls = match &options.tls {
        Some((certificate, key)) => Some(tls_acceptor(certificate, key)?),
        None => None,
    };
    let bind = |address: SocketAddr| {
        runtime
            .block_on(tokio::net::TcpListener::bind(address))
            .map_err(|error| ServeError::Bind { address, message: error.to_string() })
    };
    let mut tasks = Vec::new();
    if let Some(address) = options.pg {
        let listener = bind(address)?;
        eprintln!("weft serve: PostgreSQL protocol on {}", listener.local_addr().unwrap_or(address));
        tasks.push(runtime.spawn(pg::run(listener, shared.clone(), tls.clone())));
    }
    if let Some(address) = options.http {
        let listener = bind(address)?;
        let scheme = if tls.is_some() { "HTTPS" } else { "HTTP" };
        eprintln!("weft serve: {scheme} on {}", listener.local_addr().unwrap_or(address));
        tasks.push(runtime.spawn(http::run(listener, shared.clone(), tls.clone())));
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
    runtime.block_on(async {
        for task in tasks {
            let _ = task.await;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_subscribe, ServeOptions, Shared, SubscribeStatement};

    #[test]
    fn with_a_certificate_only_loopback_clients_may_connect_in_the_clear() {
        let directory = std::env::temp_dir().join(format!("weft-plain-{}", std::process::id()));
        let database = crate::database::Database::open(crate::database::Options::new(&directory)).unwrap();
        let certificate = Some(("server.crt".into(), "server.key".into()));
        let (remote, local) = ("192.0.2.7".parse().unwrap(), "127.0.0.1".parse().unwrap());
        let shared = Shared::new(database, &ServeOptions { tls: certificate.clone(), ..ServeOptions::default() });
        assert!(shared.refuses_plain_connection(false, remote));
        assert!(!shared.refuses_plain_connection(true, remote));
        assert!(!shared.refuses_plain_connection(false, local));
        drop(shared);
        let database = crate::database::Database::open(crate::database::Options::new(&directory)).unwrap();
        let insecure = ServeOptions { tls: certificate, insecure: true, ..ServeOptions::default() };
        assert!(!Shared::new(database, &insecure).refuses_plain_connection(false, remote));
        let _ = std::fs::remove_dir_all(&directory);
    }

    #[test]
    fn subscribe_statements_parse() {
        let parsed = |text: &str| parse_subscribe(text, false).map(|result| result.map_err(|error| error.to_string()));
        assert_eq!(parsed("SELECT 1"), None);
        assert_eq!(parsed("CREATE SINK s FROM v INTO files('x')"), None);
        assert_eq!(
            parsed("subscribe to revenue;"),
            Some(Ok(SubscribeStatement { view: "revenue".into(), snapshot: true }))
        );
        assert_eq!(
            parsed("SUBSCRIBE \"Mixed\" WITH (SNAPSHOT = false)"),
            Some(Ok(SubscribeStatement { view: "Mixed".into(), snapshot: false }))
        );
        assert!(matches!(parsed("SUBSCRIBE revenue WITH (progress = true)"), Some(Err(_))));
        assert!(matches!(parsed("SUBSCRIBE"), Some(Err(_))));
        assert_eq!(parsed("COPY (SUBSCRIBE revenue) TO STDOUT"), None);
        assert!(parse_subscribe("COPY (SUBSCRIBE revenue) TO STDOUT", true).is_some_and(|parsed| parsed.is_ok()));
        assert!(matches!(parse_subscribe("COPY (SUBSCRIBE) TO STDOUT", true), Some(Err(_))));
    }
}
