//! weft's connectors: where managed effects meet the world.
//!
//! Each connector implements the traits of `weft-effects` ([`Sink`], [`Source`]) and nothing
//! here knows the engine: rows arrive as [`Datum`]s with their [`Column`]s. A [`Target`] is what
//! a user writes in `CREATE SINK ... INTO postgres('conninfo', 'table')` or `CREATE SOURCE ...
//! FROM files('glob')`; [`open_sink`] and [`open_source`] turn it into a running connector.
//!
//! - [`postgres`]: a sink applying each run of effects in one PostgreSQL transaction that also
//!   records their keys (exactly once across crashes), and a source polling a table.
//! - [`http`]: a sink POSTing each effect as JSON with an `Idempotency-Key` header, and the
//!   reader behind `http_get(url)` query effects.
//! - [`files`]: sinks appending JSON lines or CSV, or rewriting a Parquet file, each exactly once;
//!   a source following a glob of JSON-lines, CSV and Parquet files.
//! - [`requested`]: a sink executing the effects a view's rows describe (as a Wasm function
//!   returns them).

#![warn(missing_docs)]

pub mod access;
pub mod files;
pub mod http;
pub mod json;
pub mod postgres;
pub mod requested;

use weft_effects::{Column, ConnectorError, Sink, Source};

/// A connector and its arguments, e.g. `postgres('host=127.0.0.1 dbname=app', 'users')`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    /// `postgres`, `http` or `files`.
    pub connector: String,
    /// The quoted arguments, in order.
    pub arguments: Vec<String>,
}

fn argument<'a>(target: &'a Target, index: usize, what: &str) -> Result<&'a str, ConnectorError> {
    target.arguments.get(index).map(String::as_str).ok_or_else(|| {
        ConnectorError::Permanent(format!("{}(...) needs {what} as argument {}", target.connector, index + 1))
    })
}

fn check_arity(target: &Target, count: usize, usage: &str) -> Result<(), ConnectorError> {
    if target.arguments.len() == count {
        Ok(())
    } else {
        Err(ConnectorError::Permanent(format!("{}(...) takes {count} argument(s): {usage}", target.connector)))
    }
}

impl Target {
    /// Checks the arguments and names the resource (never including a password).
    pub fn resource(&self) -> Result<String, ConnectorError> {
        match self.connector.as_str() {
            "postgres" => {
                check_arity(self, 2, "postgres('conninfo', 'table')")?;
                postgres::resource(argument(self, 0, "a connection string")?, argument(self, 1, "a table")?)
            }
            "http" => {
                if self.arguments.len() != 1 {
                    check_arity(self, 2, "http('http://host:port/path' [, 'timeout_ms=N'])")?;
                }
                http::check_url(argument(self, 0, "a URL")?)?;
                http::timeout(self.arguments.get(1).map(String::as_str))?;
                Ok(self.arguments[0].clone())
            }
            "files" => {
                check_arity(self, 1, "files('path or glob')")?;
                Ok(self.arguments[0].clone())
            }
            "effects" => {
                check_arity(self, 1, "effects('column of effect descriptions')")?;
                Ok(format!("effects:{}", self.arguments[0]))
            }
            other => Err(ConnectorError::Permanent(format!(
                "unknown connector {other}: use postgres('conninfo', 'table'), http('url'), files('path') or effects('column')"
            ))),
        }
    }

    /// What a sink on this target does to its resource.
    pub fn sink_ability(&self) -> &'static str {
        match self.connector.as_str() {
            "postgres" => "crud/update",
            "http" => "http/post",
            "effects" => "effects/run",
            _ => "files/write",
        }
    }
}

/// Opens a sink writing rows of `columns`, identified by the `key` column positions.
pub async fn open_sink(
    target: &Target,
    sink_name: &str,
    columns: &[Column],
    key: &[usize],
    access: &access::Access,
) -> Result<Box<dyn Sink>, ConnectorError> {
    target.resource()?;
    Ok(match target.connector.as_str() {
        "postgres" => Box::new(postgres::PostgresSink::new(
            &postgres::check_hosts(&target.arguments[0], access)?,
            &target.arguments[1],
            sink_name,
            columns.to_vec(),
            key.to_vec(),
        )),
        "http" => Box::new(http::HttpSink::new(
            &checked_url(&target.arguments[0], access)?,
            http::timeout(target.arguments.get(1).map(String::as_str))?,
            columns.to_vec(),
        )?),
        "effects" => Box::new(requested::RequestedSink::new(&target.arguments[0], columns, access.clone())?),
        _ => Box::new(files::FileSink::new(&checked_path(&target.arguments[0], access)?, columns.to_vec())?),
    })
}

/// Opens a source, returning its columns: `declared` ones, or those the source finds (a
/// PostgreSQL table's, or the first file's). Fails with a clear message when the source cannot
/// be reached.
pub async fn open_source(
    target: &Target,
    declared: Option<Vec<Column>>,
    access: &access::Access,
) -> Result<(Vec<Column>, Box<dyn Source>), ConnectorError> {
    target.resource()?;
    match target.connector.as_str() {
        "postgres" => {
            let conninfo = postgres::check_hosts(&target.arguments[0], access)?;
            let source = postgres::PostgresSource::open(&conninfo, &target.arguments[1], declared).await?;
            Ok((source.columns().to_vec(), Box::new(source)))
        }
        "files" => {
            let pattern = checked_path(&target.arguments[0], access)?;
            let source = files::FileSource::open(&pattern, declared, access.clone())?;
            Ok((source.columns().to_vec(), Box::new(source)))
        }
        other => Err(ConnectorError::Permanent(format!("{other}(...) cannot be a source: use postgres or files"))),
    }
}

/// Checks that `access` lets statements reach what `target` names (a sink's or source's URL,
/// file or PostgreSQL hosts), so that a statement naming what it may not reach fails at once.
pub fn check_target(target: &Target, access: &access::Access) -> Result<(), ConnectorError> {
    match target.connector.as_str() {
        "postgres" => postgres::check_hosts(argument(target, 0, "a connection string")?, access).map(|_| ()),
        "http" => checked_url(argument(target, 0, "a URL")?, access).map(|_| ()),
        "files" => checked_path(argument(target, 0, "a path")?, access).map(|_| ()),
        _ => Ok(()),
    }
}

/// `url`, if the access policy lets statements reach it.
fn checked_url(url: &str, access: &access::Access) -> Result<String, ConnectorError> {
    access.url(url)?;
    Ok(url.to_string())
}

/// The path to open for `path`, if the access policy lets statements reach it.
fn checked_path(path: &str, access: &access::Access) -> Result<String, ConnectorError> {
    let resolved = access.file(path)?;
    resolved.to_str().map(str::to_string).ok_or_else(|| ConnectorError::Permanent(format!("{path:?}: not UTF-8")))
}

impl From<access::AccessError> for ConnectorError {
    fn from(error: access::AccessError) -> ConnectorError {
        ConnectorError::Permanent(error.to_string())
    }
}

pub use json::row_object;
