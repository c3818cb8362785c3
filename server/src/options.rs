//! What `weft serve` is told: where to listen, the password, TLS, and the bounds on clients
//! ([`ServeOptions`]); and why it refuses to start ([`ServeError`]).

use std::net::SocketAddr;

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
    /// A listener beyond loopback, and no password.
    #[error("refusing to listen on {0} without a password: set --password (or WEFT_PASSWORD), or listen on loopback")]
    OpenListener(SocketAddr),
    /// A listener beyond loopback, no TLS, and no `--insecure`.
    #[error(
        "refusing to listen on {0} without TLS: give --tls-cert and --tls-key, listen on loopback, or say --insecure"
    )]
    PlainListener(SocketAddr),
    /// The certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// An address could not be listened on.
    #[error("cannot listen on {address}: {message}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The operating system's error.
        message: String,
    },
    /// `--password ''`.
    #[error("an empty password is no password: give a non-empty --password (or WEFT_PASSWORD), or none on loopback")]
    EmptyPassword,
    /// Neither `--pg` nor `--http`.
    #[error("nothing to serve: give --pg and/or --http")]
    NoListener,
    /// The runtime or a thread could not start.
    #[error("could not start the server's runtime: {0}")]
    Runtime(String),
    /// The `pg_catalog` tables could not be registered.
    #[error("could not register pg_catalog: {0}")]
    Catalog(#[from] weft_sql::SqlError),
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
