//! The database as the server's connections share it ([`Service`]): statements from pgwire and
//! HTTP alike are executed here, queries on the shared reader, writes through the one writer
//! that [`crate::sessions`] hands out; and view subscriptions as streams of [`RowChange`]s.

use crate::metrics::Metrics;
use crate::options::ServeOptions;
use crate::prepared::{self, Prepared};
use crate::sessions::SessionId;
use crate::{auth, sessions};
use datafusion::sql::sqlparser::ast::Statement;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use weft_core::database::{Database, Error, Output, Reader};
use weft_engine::{ColumnType, Row, Subscription, Time};

/// A view's columns and a subscription to it.
pub struct ViewSubscription {
    /// The view.
    pub view: String,
    /// Its columns.
    pub columns: Vec<(String, ColumnType)>,
    /// The snapshot and the stream of changes.
    pub subscription: Subscription,
}

/// One change of a subscribed view: `diff` copies of the row were added (`diff` > 0) or removed
/// (`diff` < 0) at logical timestamp `time`.
#[derive(Clone, Debug, PartialEq)]
pub struct RowChange {
    /// The timestamp.
    pub time: Time,
    /// Copies added (positive) or removed (negative).
    pub diff: i64,
    /// The row.
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
pub struct Service {
    database: Mutex<Database>,
    pub(crate) reader: Reader,
    /// Sessions, their transactions and the writer.
    pub sessions: sessions::Sessions,
    /// Counters and latencies, for `/metrics`.
    pub metrics: Metrics,
    /// The password clients must give, if any.
    pub passwords: auth::PasswordCheck,
    /// The most changes a subscriber may fall behind.
    subscribe_buffer: usize,
    /// Whether connections from other hosts must use TLS (the server has a certificate and was
    /// not told `--insecure`).
    tls_beyond_loopback: bool,
}

impl Service {
    /// Shares `database` as `options` say.
    pub fn new(database: Database, options: &ServeOptions) -> Service {
        let reader = database.reader().with_row_limit(options.max_result_rows);
        Service {
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
                    tracing::error!("rolling back the transaction of a closed session: {error}");
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
                tracing::error!("ingesting sources: {error}");
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
        for text in weft_core::functions::split_statements(sql) {
            match prepared::prepare(&text).and_then(|prepared| self.run(session, prepared)) {
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

/// The stack of the threads that execute statements.
pub const STATEMENT_STACK_BYTES: usize = 512 << 20;

#[cfg(test)]
mod tests {
    use super::Service;
    use crate::options::ServeOptions;

    #[test]
    fn with_a_certificate_only_loopback_clients_may_connect_in_the_clear() {
        let directory = std::env::temp_dir().join(format!("weft-plain-{}", std::process::id()));
        let database = weft_core::database::Database::open(weft_core::database::Options::new(&directory)).unwrap();
        let certificate = Some(("server.crt".into(), "server.key".into()));
        let (remote, local) = ("192.0.2.7".parse().unwrap(), "127.0.0.1".parse().unwrap());
        let shared = Service::new(database, &ServeOptions { tls: certificate.clone(), ..ServeOptions::default() });
        assert!(shared.refuses_plain_connection(false, remote));
        assert!(!shared.refuses_plain_connection(true, remote));
        assert!(!shared.refuses_plain_connection(false, local));
        drop(shared);
        let database = weft_core::database::Database::open(weft_core::database::Options::new(&directory)).unwrap();
        let insecure = ServeOptions { tls: certificate, insecure: true, ..ServeOptions::default() };
        assert!(!Service::new(database, &insecure).refuses_plain_connection(false, remote));
        let _ = std::fs::remove_dir_all(&directory);
    }
}
