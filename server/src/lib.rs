//! `weft serve`: one database shared by many clients over the PostgreSQL wire protocol
//! ([`pg`]) and HTTP ([`http`]).
//!
//! [`service::Service`] is the one place statements from either front end are executed. Queries
//! run on a [`weft_core::Reader`] without the database's lock, so readers and writers do not wait
//! for each other's planning or execution; each query copies the rows of one complete timestamp
//! (the commit gate). Writes are serialized; a connection that opens `BEGIN` owns the writer until
//! its `COMMIT` or `ROLLBACK` (or its disconnect, which rolls back). `SUBSCRIBE` hands out a view's
//! snapshot and a stream of its changes.
//!
//! Modules, lowest first (each uses only those before it): [`output`], [`auth`], [`metrics`],
//! [`options`], [`sessions`], [`pg_catalog`], [`prepared`], [`service`], [`pg`], [`http`]; this file
//! starts them ([`serve`]).

#![warn(missing_docs)]

pub mod auth;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod options;
pub mod output;
pub mod pg;
pub mod pg_catalog;
pub mod prepared;
pub mod service;
pub mod sessions;

pub use options::{ServeError, ServeOptions};

use service::{Service, STATEMENT_STACK_BYTES};
use std::net::SocketAddr;
use std::sync::Arc;
use weft_core::database::Database;

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
pub fn serve(mut database: Database, options: ServeOptions) -> Result<(), ServeError> {
    options.check()?;
    pg_catalog::attach_pg_catalog(&mut database)?;
    let shared = Arc::new(Service::new(database, &options));
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
        tracing::info!("PostgreSQL protocol on {}", listener.local_addr().unwrap_or(address));
        tasks.push(runtime.spawn(pg::run(listener, shared.clone(), tls.clone())));
    }
    if let Some(address) = options.http {
        let listener = bind(address)?;
        let scheme = if tls.is_some() { "HTTPS" } else { "HTTP" };
        tracing::info!("{scheme} on {}", listener.local_addr().unwrap_or(address));
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
