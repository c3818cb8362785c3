//! The server's sessions and its one writer: which session's transaction owns the writer, which
//! sessions are inside `BEGIN` (and since when they are idle there), and how many connections
//! are open.
//!
//! A transaction takes the writer at its first write, not at `BEGIN`, so a client that opens a
//! transaction to read (psycopg does, by default) blocks no one. Waiting for the writer times out
//! (SQLSTATE 55P03), and an async waiter holds no thread while it waits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use weft_core::database::Error;

/// A client connection's identity, for transaction ownership.
pub type SessionId = u64;

/// Sessions, transactions and the writer.
pub struct Sessions {
    state: Mutex<State>,
    /// Sync waiters for the writer.
    released: Condvar,
    /// Async waiters for the writer.
    released_async: tokio::sync::Notify,
    next: AtomicU64,
    /// How long a statement waits for the writer.
    lock_timeout: Duration,
    /// The most open sessions.
    max_connections: usize,
}

#[derive(Default)]
struct State {
    /// The session whose statement or transaction holds the writer.
    owner: Option<SessionId>,
    /// Sessions inside `BEGIN`: since when idle (`None` while a statement runs).
    transactions: HashMap<SessionId, Option<Instant>>,
    /// Open sessions, each with what ends its connection.
    open: HashMap<SessionId, Arc<tokio::sync::Notify>>,
}

/// Why a session could not be opened.
#[derive(Debug, PartialEq)]
pub struct TooManyConnections(pub usize);

impl Sessions {
    /// No sessions yet; writers wait `lock_timeout` at most; at most `max_connections` sessions.
    pub fn new(lock_timeout: Duration, max_connections: usize) -> Sessions {
        Sessions {
            state: Mutex::default(),
            released: Condvar::new(),
            released_async: tokio::sync::Notify::new(),
            next: AtomicU64::new(1),
            lock_timeout,
            max_connections,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a session, unless `max_connections` are open. Its notifier is woken to end the
    /// connection (an idle transaction ran out of time).
    pub fn open(&self) -> Result<(SessionId, Arc<tokio::sync::Notify>), TooManyConnections> {
        let mut state = self.state();
        if state.open.len() >= self.max_connections {
            return Err(TooManyConnections(self.max_connections));
        }
        let session = self.next.fetch_add(1, Ordering::Relaxed);
        let end = Arc::new(tokio::sync::Notify::new());
        state.open.insert(session, end.clone());
        Ok((session, end))
    }

    /// Closes a session; whether it still owns the writer (its caller then rolls back and
    /// releases it).
    pub fn close(&self, session: SessionId) -> bool {
        let mut state = self.state();
        state.open.remove(&session);
        state.transactions.remove(&session);
        state.owner == Some(session)
    }

    /// The number of open sessions.
    pub fn count(&self) -> usize {
        self.state().open.len()
    }

    /// Opens a transaction for `session`; false if one is open already.
    pub fn begin(&self, session: SessionId) -> bool {
        let mut state = self.state();
        if state.transactions.contains_key(&session) {
            return false;
        }
        state.transactions.insert(session, Some(Instant::now()));
        true
    }

    /// Ends `session`'s transaction (the writer, if it owns it, is released by the statement
    /// that ends it).
    pub fn end(&self, session: SessionId) {
        self.state().transactions.remove(&session);
    }

    /// Whether `session` is inside `BEGIN`.
    pub fn in_transaction(&self, session: SessionId) -> bool {
        self.state().transactions.contains_key(&session)
    }

    /// Whether `session` holds the writer.
    pub fn owns_writer(&self, session: SessionId) -> bool {
        self.state().owner == Some(session)
    }

    /// Whether any session holds the writer.
    pub fn writer_taken(&self) -> bool {
        self.state().owner.is_some()
    }

    /// Takes the writer for `session`, waiting for it at most the lock timeout.
    pub fn claim(&self, session: SessionId) -> Result<(), Error> {
        let deadline = Instant::now() + self.lock_timeout;
        let mut state = self.state();
        loop {
            match state.owner {
                Some(owner) if owner != session => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(self.timed_out());
                    }
                    state = self.released.wait_timeout(state, left).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
                }
                _ => {
                    state.owner = Some(session);
                    return Ok(());
                }
            }
        }
    }

    /// Takes the writer for `session` without holding a thread while it waits (at most the
    /// lock timeout).
    pub async fn claim_async(&self, session: SessionId) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + self.lock_timeout;
        loop {
            let released = self.released_async.notified();
            tokio::pin!(released);
            // Registered before looking, so a release between the look and the wait is seen.
            released.as_mut().enable();
            {
                let mut state = self.state();
                match state.owner {
                    Some(owner) if owner != session => {}
                    _ => {
                        state.owner = Some(session);
                        return Ok(());
                    }
                }
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(self.timed_out());
            }
        }
    }

    fn timed_out(&self) -> Error {
        Error::LockTimeout(format!(
            "waited {} ms for the writer, which another session's transaction holds (--lock-timeout-ms)",
            self.lock_timeout.as_millis()
        ))
    }

    /// Releases the writer if `session` holds it.
    pub fn release(&self, session: SessionId) {
        let mut state = self.state();
        if state.owner == Some(session) {
            state.owner = None;
            drop(state);
            self.released.notify_all();
            self.released_async.notify_waiters();
        }
    }

    /// Marks a statement of `session` started (`true`) or finished: a transaction is idle only
    /// between statements.
    pub fn running(&self, session: SessionId, running: bool) {
        if let Some(idle_since) = self.state().transactions.get_mut(&session) {
            *idle_since = (!running).then(Instant::now);
        }
    }

    /// Ends the connections of sessions idle inside a transaction for longer than `limit`
    /// (their close rolls them back); returns how many.
    pub fn end_idle_transactions(&self, limit: Duration) -> usize {
        let state = self.state();
        let mut ended = 0;
        for (session, idle_since) in &state.transactions {
            if idle_since.is_some_and(|since| since.elapsed() > limit) {
                if let Some(end) = state.open.get(session) {
                    end.notify_one();
                    ended += 1;
                }
            }
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_is_taken_at_the_first_write_and_waits_time_out() {
        let sessions = Sessions::new(Duration::from_millis(50), 2);
        let (reader, _) = sessions.open().unwrap();
        let (writer, _) = sessions.open().unwrap();
        assert_eq!(sessions.open().unwrap_err(), TooManyConnections(2));
        // A transaction that only reads holds nothing.
        assert!(sessions.begin(reader) && !sessions.begin(reader));
        assert!(!sessions.writer_taken());
        sessions.claim(writer).unwrap();
        sessions.claim(writer).unwrap();
        let error = sessions.claim(reader).unwrap_err();
        assert!(matches!(error, Error::LockTimeout(_)), "{error}");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        assert!(runtime.block_on(sessions.claim_async(reader)).is_err());
        sessions.release(writer);
        runtime.block_on(sessions.claim_async(reader)).unwrap();
        assert!(sessions.owns_writer(reader));
        // A connection idle in its transaction is ended; a running statement is not idle.
        sessions.running(reader, true);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(sessions.end_idle_transactions(Duration::from_millis(1)), 0);
        sessions.running(reader, false);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(sessions.end_idle_transactions(Duration::from_millis(1)), 1);
        assert!(sessions.close(reader), "it still held the writer");
        assert_eq!(sessions.count(), 1);
    }
}
