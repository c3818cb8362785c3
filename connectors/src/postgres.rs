//! PostgreSQL: a sink that applies effects exactly once, and a source that polls a table.
//!
//! **Sink.** A run of effects is applied in one PostgreSQL transaction that first looks up which
//! effect CIDs the table `weft_applied_effects(key, sink, applied_at)` already holds, applies the
//! net change of the others (deletes by key, then inserts), and records their CIDs. The
//! transaction commits all of it or none, so replaying effects after a crash (of weft, of the
//! connection, of PostgreSQL) never applies one twice. Values are bound as parameters of weft's
//! own types (`$1::int8`) and converted by PostgreSQL's assignment casts to the column's type.
//!
//! **Source.** The table is read whole at every poll (`SELECT` of its columns) and weft applies the
//! difference to its copy: no logical replication slot, no monotonic column needed, deletes and
//! updates are seen; the cost is a full read per poll, so poll large tables slowly.

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use std::collections::{HashMap, HashSet};
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, Config, NoTls};
use weft_effects::{Column, ColumnKind, ConnectorError, Datum, Delivery, Effect, Sink, Source, SourceRead};

/// The table where the sink records the CIDs of the effects it applied.
pub const APPLIED_TABLE: &str = "weft_applied_effects";

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_US: i64 = 946_684_800_000_000;

/// Parses a libpq connection string, filling what it leaves out as libpq does: the user from
/// `PGUSER` or the login name, the password from `PGPASSWORD`, the port from `PGPORT`, the host
/// from `PGHOST` (else localhost).
fn parse_config(conninfo: &str) -> Result<Config, ConnectorError> {
    let mut config = conninfo
        .parse::<Config>()
        .map_err(|error| ConnectorError::Permanent(format!("invalid PostgreSQL connection string: {error}")))?;
    let environment = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    if config.get_user().is_none() {
        let user = environment("PGUSER").or_else(|| environment("USER")).or_else(|| environment("LOGNAME"));
        config.user(user.as_deref().unwrap_or("postgres"));
    }
    if config.get_password().is_none() {
        if let Some(password) = environment("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_ports().is_empty() {
        if let Some(port) = environment("PGPORT").and_then(|port| port.parse().ok()) {
            config.port(port);
        }
    }
    if config.get_hosts().is_empty() {
        config.host(environment("PGHOST").as_deref().unwrap_or("localhost"));
    }
    Ok(config)
}

/// `conninfo`, if the access policy lets statements reach every host (and socket directory) it
/// names.
pub fn check_hosts(conninfo: &str, access: &crate::access::Access) -> Result<String, ConnectorError> {
    let config = parse_config(conninfo)?;
    let ports = config.get_ports();
    let port = |index: usize| ports.get(index).or(ports.first()).copied().unwrap_or(5432);
    for (index, host) in config.get_hosts().iter().enumerate() {
        match host {
            tokio_postgres::config::Host::Tcp(host) => access.host(host, port(index))?,
            tokio_postgres::config::Host::Unix(path) => {
                access.file(&path.to_string_lossy())?;
            }
        }
    }
    for (index, address) in config.get_hostaddrs().iter().enumerate() {
        access.host(&address.to_string(), port(index))?;
    }
    Ok(conninfo.to_string())
}

/// `postgres://host:port/dbname/table`, without user or password.
pub fn resource(conninfo: &str, table: &str) -> Result<String, ConnectorError> {
    let config = parse_config(conninfo)?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or("postgres");
    quote_table(table)?;
    Ok(format!("postgres://{host}:{port}/{database}/{table}"))
}

/// Quotes `schema.table` or `table` as identifiers.
fn quote_table(table: &str) -> Result<String, ConnectorError> {
    if table.is_empty() || table.split('.').any(str::is_empty) {
        return Err(ConnectorError::Permanent(format!("invalid PostgreSQL table name {table:?}")));
    }
    Ok(table.split('.').map(quote_identifier).collect::<Vec<_>>().join("."))
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Says what went wrong and whether retrying can help: connection trouble, serialization
/// failures, deadlocks and server shutdowns are transient; everything PostgreSQL rejects
/// (authentication, missing tables or columns, constraints, types) is permanent.
fn classify(error: tokio_postgres::Error) -> ConnectorError {
    match error.as_db_error() {
        Some(database_error) => {
            let code = database_error.code().code();
            let mut text = format!("PostgreSQL error {code}: {}", database_error.message());
            if let Some(detail) = database_error.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            let transient = code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code == "40001"
                || code == "40P01";
            if transient {
                ConnectorError::Transient(text)
            } else {
                ConnectorError::Permanent(text)
            }
        }
        None => {
            let mut text = format!("PostgreSQL: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            ConnectorError::Transient(text)
        }
    }
}

async fn connect(conninfo: &str) -> Result<Client, ConnectorError> {
    let config = parse_config(conninfo)?;
    let (client, connection) = config.connect(NoTls).await.map_err(classify)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A value bound as a parameter of its own weft type.
struct Parameter<'a>(&'a Datum);

impl std::fmt::Debug for Parameter<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

impl ToSql for Parameter<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Datum::Null => return Ok(IsNull::Yes),
            Datum::Bool(b) => out.put_u8(u8::from(*b)),
            Datum::Int(i) => out.put_i64(*i),
            Datum::Float(f) => out.put_f64(*f),
            Datum::Text(text) => out.put_slice(text.as_bytes()),
            Datum::Bytes(bytes) => out.put_slice(bytes),
            Datum::Timestamp(nanoseconds) => out.put_i64(nanoseconds.div_euclid(1000) - POSTGRES_EPOCH_US),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(
        &self,
        column_type: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.to_sql(column_type, out)
    }
}

/// The PostgreSQL type weft binds a column's values as.
fn parameter_type(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Bool => "bool",
        ColumnKind::Int => "int8",
        ColumnKind::Float => "float8",
        ColumnKind::Text => "text",
        ColumnKind::Bytes => "bytea",
        ColumnKind::Timestamp => "timestamp",
    }
}

/// Rows per statement: PostgreSQL allows 65535 parameters.
fn rows_per_statement(columns: usize) -> usize {
    (60_000 / columns.max(1)).clamp(1, 2_000)
}

/// Writes a view's changes into a PostgreSQL table, exactly once per effect.
pub struct PostgresSink {
    conninfo: String,
    sink_name: String,
    writer: Writer,
    client: Option<Client>,
}

/// Builds and runs the statements that change the target table.
struct Writer {
    table: String,
    columns: Vec<Column>,
    key: Vec<usize>,
}

/// Connects `client` if it is not connected, creating the table of applied keys.
async fn ensure_connected<'a>(
    client: &'a mut Option<Client>,
    conninfo: &str,
) -> Result<&'a mut Client, ConnectorError> {
    if client.as_ref().is_none_or(Client::is_closed) {
        let fresh = connect(conninfo).await?;
        fresh
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {APPLIED_TABLE} (key TEXT PRIMARY KEY, sink TEXT NOT NULL, \
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            ))
            .await
            .map_err(classify)?;
        *client = Some(fresh);
    }
    Ok(client.as_mut().expect("connected"))
}

impl Writer {
    fn placeholders(&self, rows: usize, positions: &[usize]) -> String {
        let mut next = 0;
        (0..rows)
            .map(|_| {
                let values: Vec<String> = positions
                    .iter()
                    .map(|position| {
                        next += 1;
                        format!("${next}::{}", parameter_type(self.columns[*position].kind))
                    })
                    .collect();
                format!("({})", values.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Deletes the rows whose key is one of `rows` keys. Keys with a NULL need `IS NOT DISTINCT
    /// FROM`, which PostgreSQL can use neither an index nor a hash join for: only those use it.
    fn delete_statement(&self, rows: usize, null_safe: bool) -> Result<String, ConnectorError> {
        let table = quote_table(&self.table)?;
        let key_names: Vec<String> = self.key.iter().map(|k| quote_identifier(&self.columns[*k].name)).collect();
        let equal = if null_safe { "IS NOT DISTINCT FROM" } else { "=" };
        let matches: Vec<String> =
            key_names.iter().map(|name| format!("{table}.{name} {equal} weft_keys.{name}")).collect();
        Ok(format!(
            "DELETE FROM {table} USING (VALUES {}) AS weft_keys({}) WHERE {}",
            self.placeholders(rows, &self.key),
            key_names.join(", "),
            matches.join(" AND ")
        ))
    }

    fn insert_statement(&self, rows: usize) -> Result<String, ConnectorError> {
        let table = quote_table(&self.table)?;
        let all: Vec<usize> = (0..self.columns.len()).collect();
        let names: Vec<String> = self.columns.iter().map(|column| quote_identifier(&column.name)).collect();
        Ok(format!("INSERT INTO {table} ({}) VALUES {}", names.join(", "), self.placeholders(rows, &all)))
    }

    /// Deletes the rows with the keys of `deletes`, then inserts `inserts`.
    async fn apply(
        &self,
        transaction: &tokio_postgres::Transaction<'_>,
        deletes: &[Vec<Datum>],
        inserts: &[Vec<Datum>],
    ) -> Result<(), ConnectorError> {
        let chunk = rows_per_statement(self.columns.len());
        let (with_null, without_null): (Vec<&Vec<Datum>>, Vec<&Vec<Datum>>) =
            deletes.iter().partition(|row| self.key.iter().any(|k| row[*k] == Datum::Null));
        for (rows, null_safe) in [(without_null, false), (with_null, true)] {
            for rows in rows.chunks(chunk) {
                let parameters: Vec<Parameter> =
                    rows.iter().flat_map(|row| self.key.iter().map(|k| Parameter(&row[*k]))).collect();
                run(transaction, &self.delete_statement(rows.len(), null_safe)?, &parameters).await?;
            }
        }
        for rows in inserts.chunks(chunk) {
            let parameters: Vec<Parameter> = rows.iter().flat_map(|row| row.iter().map(Parameter)).collect();
            run(transaction, &self.insert_statement(rows.len())?, &parameters).await?;
        }
        Ok(())
    }
}

async fn run(
    transaction: &tokio_postgres::Transaction<'_>,
    statement: &str,
    parameters: &[Parameter<'_>],
) -> Result<u64, ConnectorError> {
    let references: Vec<&(dyn ToSql + Sync)> = parameters.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    transaction.execute(statement, &references).await.map_err(classify)
}

/// The net change of `effects`: rows to delete (by key) and rows to insert, in first-seen order.
fn net_change<'a>(effects: impl Iterator<Item = &'a Effect>) -> (Vec<Vec<Datum>>, Vec<Vec<Datum>>) {
    let mut net: HashMap<&Vec<Datum>, i64> = HashMap::new();
    let mut order: Vec<&Vec<Datum>> = Vec::new();
    for effect in effects {
        for change in &effect.payload.changes {
            let count = net.entry(&change.row).or_insert_with(|| {
                order.push(&change.row);
                0
            });
            *count += change.diff;
        }
    }
    let deletes = order.iter().filter(|row| net[*row] < 0).map(|row| (*row).clone()).collect();
    let inserts = order
        .iter()
        .filter(|row| net[*row] > 0)
        .flat_map(|row| std::iter::repeat_n((*row).clone(), net[*row] as usize))
        .collect();
    (deletes, inserts)
}

impl PostgresSink {
    /// A sink into `table`, keyed by the `key` columns (all columns when empty); it connects on
    /// first use.
    pub fn new(conninfo: &str, table: &str, sink_name: &str, columns: Vec<Column>, key: Vec<usize>) -> PostgresSink {
        let key = if key.is_empty() { (0..columns.len()).collect() } else { key };
        PostgresSink {
            conninfo: conninfo.to_string(),
            sink_name: sink_name.to_string(),
            writer: Writer { table: table.to_string(), columns, key },
            client: None,
        }
    }

    async fn apply_once(&mut self, effects: &[Effect]) -> Result<Delivery, ConnectorError> {
        let keys: Vec<String> = effects.iter().map(|effect| effect.cid().to_string()).collect();
        let client = ensure_connected(&mut self.client, &self.conninfo).await?;
        let transaction = client.transaction().await.map_err(classify)?;
        let applied: HashSet<String> = transaction
            .query(&format!("SELECT key FROM {APPLIED_TABLE} WHERE key = ANY($1)"), &[&keys])
            .await
            .map_err(classify)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let fresh: Vec<usize> = (0..effects.len()).filter(|index| !applied.contains(&keys[*index])).collect();
        let (deletes, inserts) = net_change(fresh.iter().map(|index| &effects[*index]));
        self.writer.apply(&transaction, &deletes, &inserts).await?;
        let fresh_keys: Vec<&String> = fresh.iter().map(|index| &keys[*index]).collect();
        transaction
            .execute(
                &format!("INSERT INTO {APPLIED_TABLE} (key, sink) SELECT unnest($1::text[]), $2"),
                &[&fresh_keys, &self.sink_name],
            )
            .await
            .map_err(classify)?;
        transaction.commit().await.map_err(classify)?;
        Ok(Delivery { applied: fresh.len(), duplicates: effects.len() - fresh.len() })
    }
}

#[async_trait]
impl Sink for PostgresSink {
    async fn apply(&mut self, effects: &[Effect]) -> Result<Delivery, ConnectorError> {
        let result = self.apply_once(effects).await;
        if let Err(ConnectorError::Transient(_)) = &result {
            // The connection may be broken: the next attempt opens a fresh one.
            self.client = None;
        }
        result
    }
}

/// The column type weft gives a PostgreSQL type.
fn kind_of(postgres_type: &Type) -> ColumnKind {
    match *postgres_type {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => ColumnKind::Int,
        Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => ColumnKind::Float,
        Type::BOOL => ColumnKind::Bool,
        Type::BYTEA => ColumnKind::Bytes,
        Type::TIMESTAMP | Type::TIMESTAMPTZ | Type::DATE => ColumnKind::Timestamp,
        _ => ColumnKind::Text,
    }
}

/// Polls a PostgreSQL table.
pub struct PostgresSource {
    conninfo: String,
    query: String,
    columns: Vec<Column>,
    client: Option<Client>,
}

impl PostgresSource {
    /// Connects and learns the table's columns (or checks the `declared` ones exist).
    pub async fn open(
        conninfo: &str,
        table: &str,
        declared: Option<Vec<Column>>,
    ) -> Result<PostgresSource, ConnectorError> {
        let quoted = quote_table(table)?;
        let client = connect(conninfo).await?;
        let statement = client.prepare(&format!("SELECT * FROM {quoted} LIMIT 0")).await.map_err(classify)?;
        let found: Vec<Column> = statement
            .columns()
            .iter()
            .map(|column| Column { name: column.name().to_string(), kind: kind_of(column.type_()) })
            .collect();
        let columns = match declared {
            Some(declared) => {
                if let Some(missing) = declared.iter().find(|column| !found.iter().any(|f| f.name == column.name)) {
                    return Err(ConnectorError::Permanent(format!(
                        "PostgreSQL table {table} has no column {}",
                        missing.name
                    )));
                }
                declared
            }
            None => found,
        };
        let select: Vec<String> = columns
            .iter()
            .map(|column| {
                let name = quote_identifier(&column.name);
                match column.kind {
                    ColumnKind::Timestamp => format!("(extract(epoch from {name}) * 1000000)::int8"),
                    kind => format!("{name}::{}", parameter_type(kind)),
                }
            })
            .collect();
        let query = format!("SELECT {} FROM {quoted}", select.join(", "));
        client.prepare(&query).await.map_err(classify)?;
        Ok(PostgresSource { conninfo: conninfo.to_string(), query, columns, client: Some(client) })
    }

    /// The rows' columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    async fn read_once(&mut self) -> Result<SourceRead, ConnectorError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(connect(&self.conninfo).await?);
        }
        let client = self.client.as_ref().expect("connected");
        let rows = client.query(&self.query, &[]).await.map_err(classify)?;
        let mut snapshot = Vec::with_capacity(rows.len());
        for row in rows {
            let values = self
                .columns
                .iter()
                .enumerate()
                .map(|(index, column)| {
                    let datum = match column.kind {
                        ColumnKind::Int => row.get::<_, Option<i64>>(index).map(Datum::Int),
                        ColumnKind::Float => row.get::<_, Option<f64>>(index).map(Datum::Float),
                        ColumnKind::Bool => row.get::<_, Option<bool>>(index).map(Datum::Bool),
                        ColumnKind::Text => row.get::<_, Option<String>>(index).map(Datum::Text),
                        ColumnKind::Bytes => row.get::<_, Option<Vec<u8>>>(index).map(Datum::Bytes),
                        ColumnKind::Timestamp => {
                            row.get::<_, Option<i64>>(index).map(|us| Datum::Timestamp(us.saturating_mul(1000)))
                        }
                    };
                    datum.unwrap_or(Datum::Null)
                })
                .collect();
            snapshot.push(values);
        }
        Ok(SourceRead { snapshot: Some(snapshot), appended: Vec::new(), problems: Vec::new() })
    }
}

#[async_trait]
impl Source for PostgresSource {
    async fn read(&mut self) -> Result<SourceRead, ConnectorError> {
        let result = self.read_once().await;
        if result.is_err() {
            self.client = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_are_completed_as_libpq_would() {
        let config = parse_config("host=127.0.0.1 dbname=app").unwrap();
        assert!(config.get_user().is_some(), "a user is always set");
        assert_eq!(
            resource("host=127.0.0.1 port=5433 user=u password=secret dbname=app", "s.t").unwrap(),
            "postgres://127.0.0.1:5433/app/s.t"
        );
        assert!(!resource("host=h password=secret dbname=d", "t").unwrap().contains("secret"));
        assert!(parse_config("port=notanumber").is_err());
        assert!(quote_table("a..b").is_err());
        assert_eq!(quote_table("public.my \"t\"").unwrap(), "\"public\".\"my \"\"t\"\"\"");
    }
}
