//! The PostgreSQL wire protocol front end (simple and extended query protocols, cancel
//! requests, cleartext password authentication), on the `pgwire` crate.
//!
//! Statement execution blocks (the planner and the engine are synchronous), so it runs on tokio's
//! blocking pool; the connection's task only moves messages. Parameters of the extended protocol
//! are bound by substituting typed SQL literals for `$n`, so every statement weft runs (DDL, DML,
//! queries) accepts them the same way. `SUBSCRIBE` streams rows until the view is dropped or the
//! client cancels.

use crate::pg_catalog::text_rows;
use crate::prepared::{self, parse_subscribe, Prepared, SubscribeStatement};
use crate::service::{changes_at, RowChange, Service, ViewSubscription};
use crate::sessions::SessionId;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array, Int16Array, Int32Array,
    Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::ast::{SetExpr, Statement};
use futures::{Sink, SinkExt};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo, QueryResponse, Response,
    Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::data::{DataRow, RowDescription};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use weft_core::database::{Error, Output, Reader};
use weft_engine::{ColumnType, Row, Value};

/// Accepts connections until the listener fails; with `tls`, clients may (and with
/// `sslmode=require` do) encrypt their connection.
pub async fn run(listener: TcpListener, shared: Arc<Service>, tls: Option<tokio_rustls::TlsAcceptor>) {
    let manager = Arc::new(ConnectionManager::new());
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(error) => {
                tracing::error!("accepting a connection: {error}");
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let (shared, manager, tls) = (shared.clone(), manager.clone(), tls.clone());
        tokio::spawn(async move {
            let (session, end) = match shared.open_session() {
                Ok(opened) => opened,
                Err(error) => return refuse(socket, &error).await,
            };
            // Closes the session however the connection ends, a panic in its task included.
            let _guard = SessionGuard { shared: shared.clone(), session };
            let connection = Arc::new(Connection::new(shared, manager, session));
            tokio::select! {
                _ = pgwire::tokio::process_socket(socket, tls, connection) => {}
                // The server ends the connection (idle too long inside a transaction).
                _ = end.notified() => {}
            }
        });
    }
}

/// Closes its session when dropped: rolls back what its transaction left and releases the
/// writer, on a blocking thread when a runtime is there to give one.
struct SessionGuard {
    shared: Arc<Service>,
    session: SessionId,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let (shared, session) = (self.shared.clone(), self.session);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || shared.close_session(session));
            }
            Err(_) => shared.close_session(session),
        }
    }
}

/// Answers a connection the server cannot take with PostgreSQL's error (after reading the
/// client's start-up message, which it sends first), then closes it.
async fn refuse(mut socket: tokio::net::TcpStream, error: &Error) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SSL_REQUEST: u32 = 80_877_103;
    let read_startup = async {
        for _ in 0..2 {
            let length = socket.read_u32().await.ok()? as usize;
            if !(8..=10_000).contains(&length) {
                return None;
            }
            let mut body = vec![0u8; length - 4];
            socket.read_exact(&mut body).await.ok()?;
            if u32::from_be_bytes(body[..4].try_into().ok()?) != SSL_REQUEST {
                return Some(());
            }
            socket.write_all(b"N").await.ok()?;
        }
        None
    };
    if tokio::time::timeout(std::time::Duration::from_secs(5), read_startup).await.ok().flatten().is_none() {
        return;
    }
    let mut fields = Vec::new();
    for (code, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', sqlstate(error)), (b'M', &error.to_string())] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(&fields);
    let _ = socket.write_all(&message).await;
    let _ = socket.shutdown().await;
}

/// The handlers of one client connection.
pub struct Connection {
    shared: Arc<Service>,
    session: SessionId,
    manager: Arc<ConnectionManager>,
    startup: Arc<Startup>,
    parser: Arc<WeftQueryParser>,
    /// Parameter types inferred per statement text.
    inferred: Arc<Mutex<HashMap<String, Vec<Option<Type>>>>>,
}

impl Connection {
    fn new(shared: Arc<Service>, manager: Arc<ConnectionManager>, session: SessionId) -> Connection {
        let startup = Arc::new(if shared.passwords.required() {
            let mut scram = ScramAuth::new(Arc::new(PasswordSource(shared.clone())));
            scram.set_iterations(crate::auth::SCRAM_ITERATIONS);
            Startup::Password {
                handler: Box::new(
                    SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                        .with_scram(scram)
                        .with_connection_manager(manager.clone()),
                ),
                shared: shared.clone(),
            }
        } else {
            Startup::Open(OpenStartup { manager: manager.clone() })
        });
        Connection { shared, session, manager, startup, parser: Arc::new(WeftQueryParser), inferred: Arc::default() }
    }

    /// Runs the statements of a simple query in order, stopping at the first error.
    async fn execute(&self, sql: String) -> Vec<Response> {
        let mut responses = Vec::new();
        for text in weft_core::functions::split_statements(&sql) {
            let output = match prepared::prepare(&text) {
                Ok(prepared) => self.run(prepared).await,
                Err(error) => Err(error),
            };
            match output.and_then(|output| output_response(output, &Format::UnifiedText)) {
                Ok(response) => responses.push(response),
                Err(error) => {
                    self.shared.metrics.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    responses.push(Response::Error(Box::new(error_info(&error))));
                    return responses;
                }
            }
        }
        responses
    }

    /// Runs one prepared statement: waits for the writer here if it needs it (holding no
    /// thread), then executes it on a blocking thread.
    async fn run(&self, prepared: Prepared) -> Result<Output, Error> {
        if self.shared.needs_writer(self.session, &prepared) {
            self.shared.sessions.claim_async(self.session).await?;
        }
        let (shared, session) = (self.shared.clone(), self.session);
        match blocking(move || shared.execute_prepared(session, prepared)).await {
            Ok(result) => result,
            Err(panic) => Err(Error::Catalog(format!("internal error: {panic}"))),
        }
    }

    /// Subscribes, the engine waking the returned [`Arrivals`] as changes come.
    async fn subscribe(&self, statement: &SubscribeStatement) -> PgWireResult<(ViewSubscription, Arrivals)> {
        let shared = self.shared.clone();
        let view = statement.view.clone();
        let arrivals = Arrivals::default();
        let wake = arrivals.wake();
        let subscribed =
            blocking(move || shared.subscribe(&view, Some(wake))).await?.map_err(|error| user_error(&error))?;
        Ok((subscribed, arrivals))
    }

    /// Streams a subscription's rows to the client until the view is dropped (the client ends
    /// it with a cancel request or by disconnecting).
    async fn stream<C>(
        &self,
        client: &mut C,
        statement: &SubscribeStatement,
        format: &Format,
        describe: bool,
    ) -> PgWireResult<Tag>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (subscribed, arrivals) = self.subscribe(statement).await?;
        let schema = subscribe_schema(&subscribed.columns);
        let fields = Arc::new(fields_of(&schema, format));
        if describe {
            client.send(PgWireBackendMessage::RowDescription(row_description(&fields))).await?;
        }
        let mut sent = 0;
        let snapshot = subscribed.snapshot_changes(statement.snapshot);
        sent += send_changes(client, &schema, &fields, &snapshot).await?;
        let mut changes = subscribed.subscription.changes;
        while let Some(batch) = arrivals.next(&mut changes).await {
            sent += send_changes(client, &schema, &fields, &changes_at(batch.time, &batch.updates)).await?;
        }
        if changes.fell_behind() {
            return Err(user_error(&Error::FellBehind(self.shared.subscribe_buffer())));
        }
        Ok(Tag::new("SUBSCRIBE").with_rows(sent))
    }
}

/// A value in COPY's text format.
fn copy_text(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("\\N"),
        Value::Bool(flag) => out.push(if *flag { 't' } else { 'f' }),
        Value::Int(number) => out.push_str(&number.to_string()),
        Value::Float(number) => out.push_str(&float_text(*number)),
        Value::Text(text) => {
            for character in text.chars() {
                match character {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    other => out.push(other),
                }
            }
        }
        Value::Bytes(bytes) => {
            out.push_str("\\\\x");
            for byte in bytes {
                out.push_str(&format!("{byte:02x}"));
            }
        }
        Value::Timestamp(nanos) => {
            let time = DateTime::from_timestamp_nanos(*nanos).naive_utc();
            out.push_str(&time.format("%Y-%m-%d %H:%M:%S%.f").to_string());
        }
    }
}

impl Connection {
    /// Streams a subscription as `COPY ... TO STDOUT` text rows until the view is dropped or the
    /// client cancels.
    async fn stream_copy<C>(&self, client: &mut C, statement: &SubscribeStatement) -> PgWireResult<Tag>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (subscribed, arrivals) = self.subscribe(statement).await?;
        // COPY's column count is an i16: a view of 32,766 or more columns cannot be copied out.
        let columns = i16::try_from(subscribed.columns.len() + 2).map_err(|_| {
            user_error(&Error::Unsupported(format!("COPY of a view with {} columns", subscribed.columns.len())))
        })?;
        client
            .send(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
                0,
                columns,
                vec![0; subscribed.columns.len() + 2],
            )))
            .await?;
        let mut sent = 0;
        let mut changes = subscribed.snapshot_changes(statement.snapshot);
        let mut stream = subscribed.subscription.changes;
        loop {
            for change in &changes {
                let mut line = format!("{}\t{}", change.time, change.diff);
                for value in change.row.iter() {
                    line.push('\t');
                    copy_text(value, &mut line);
                }
                line.push('\n');
                client.feed(PgWireBackendMessage::CopyData(CopyData::new(line.into()))).await?;
            }
            sent += changes.len();
            client.flush().await?;
            match arrivals.next(&mut stream).await {
                Some(batch) => changes = changes_at(batch.time, &batch.updates),
                None => break,
            }
        }
        if stream.fell_behind() {
            return Err(user_error(&Error::FellBehind(self.shared.subscribe_buffer())));
        }
        client.send(PgWireBackendMessage::CopyDone(CopyDone::new())).await?;
        Ok(Tag::new("COPY").with_rows(sent))
    }
}

/// Wakes a subscriber's task when the engine sends it changes (or ends its stream), so that
/// waiting for them holds no thread.
#[derive(Default)]
struct Arrivals(Arc<tokio::sync::Notify>);

impl Arrivals {
    /// What the engine calls after sending.
    fn wake(&self) -> weft_engine::Wake {
        let notify = self.0.clone();
        Arc::new(move || notify.notify_one())
    }

    /// The next changes of `stream`, or `None` once it ended. (A wake between the empty look
    /// and the wait is kept by the notifier as a permit, so none is lost.)
    async fn next(&self, stream: &mut weft_engine::ChangeStream) -> Option<weft_engine::ViewChanges> {
        loop {
            match stream.try_recv() {
                Ok(changes) => return Some(changes),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
                Err(std::sync::mpsc::TryRecvError::Empty) => self.0.notified().await,
            }
        }
    }
}

/// Encodes and sends (and flushes) changes as rows `(timestamp, diff, columns...)`.
async fn send_changes<C>(
    client: &mut C,
    schema: &SchemaRef,
    fields: &Arc<Vec<FieldInfo>>,
    changes: &[RowChange],
) -> PgWireResult<usize>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    if changes.is_empty() {
        return Ok(0);
    }
    let rows: Vec<Row> = changes
        .iter()
        .map(|change| {
            let mut row = Vec::with_capacity(change.row.len() + 2);
            row.push(Value::Int(change.time as i64));
            row.push(Value::Int(change.diff));
            row.extend(change.row.iter().cloned());
            row
        })
        .collect();
    let batch = weft_sql::convert::rows_batch(&rows, schema).map_err(|error| PgWireError::ApiError(Box::new(error)))?;
    for row in encode_batch(&batch, fields)? {
        client.feed(PgWireBackendMessage::DataRow(row)).await?;
    }
    client.flush().await?;
    Ok(changes.len())
}

/// The columns of a subscription: `timestamp`, `diff`, then the view's.
pub fn subscribe_schema(columns: &[(String, ColumnType)]) -> SchemaRef {
    let mut all = vec![("timestamp".to_string(), ColumnType::BigInt), ("diff".to_string(), ColumnType::BigInt)];
    all.extend(columns.iter().cloned());
    weft_sql::convert::schema_of(&all)
}

fn row_description(fields: &[FieldInfo]) -> RowDescription {
    RowDescription::new(fields.iter().map(Into::into).collect())
}

/// The PostgreSQL type (and the Arrow type values are cast to before encoding) of an Arrow type.
fn pg_type(data_type: &DataType) -> (Type, DataType) {
    match data_type {
        DataType::Boolean => (Type::BOOL, DataType::Boolean),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => (Type::INT2, DataType::Int16),
        DataType::Int32 | DataType::UInt16 => (Type::INT4, DataType::Int32),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => (Type::INT8, DataType::Int64),
        DataType::Float16 | DataType::Float32 => (Type::FLOAT4, DataType::Float32),
        DataType::Float64 | DataType::Decimal128(..) | DataType::Decimal256(..) => (Type::FLOAT8, DataType::Float64),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            (Type::BYTEA, DataType::Binary)
        }
        DataType::Timestamp(_, None) => (Type::TIMESTAMP, DataType::Timestamp(TimeUnit::Microsecond, None)),
        DataType::Timestamp(_, Some(_)) => {
            (Type::TIMESTAMPTZ, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())))
        }
        DataType::Date32 | DataType::Date64 => (Type::DATE, DataType::Date32),
        _ => (Type::TEXT, DataType::Utf8),
    }
}

/// The PostgreSQL type of a weft column type.
pub fn column_pg_type(column_type: ColumnType) -> Type {
    pg_type(&weft_sql::convert::arrow_type(column_type)).0
}

/// The PostgreSQL type of an Arrow type.
pub fn column_pg_type_of_arrow(data_type: &DataType) -> Type {
    pg_type(data_type).0
}

/// Result fields for `schema`, in the formats the client asked for.
fn fields_of(schema: &Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| {
            FieldInfo::new(field.name().clone(), None, None, pg_type(field.data_type()).0, format.format_for(index))
        })
        .collect()
}

/// Encodes every row of `batch` for `fields`.
fn encode_batch(batch: &RecordBatch, fields: &Arc<Vec<FieldInfo>>) -> PgWireResult<Vec<DataRow>> {
    let api_error = |error: datafusion::arrow::error::ArrowError| PgWireError::ApiError(Box::new(error));
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for column in batch.columns() {
        let (_, target) = pg_type(column.data_type());
        columns.push(if column.data_type() == &target {
            column.clone()
        } else if target == DataType::Utf8 {
            // Anything without a PostgreSQL counterpart travels as its display text.
            let formatter = datafusion::arrow::util::display::ArrayFormatter::try_new(
                column.as_ref(),
                &datafusion::arrow::util::display::FormatOptions::default(),
            )
            .map_err(api_error)?;
            let texts: StringArray =
                (0..column.len()).map(|row| (!column.is_null(row)).then(|| formatter.value(row).to_string())).collect();
            Arc::new(texts)
        } else {
            cast(column, &target).map_err(api_error)?
        });
    }
    let mut encoder = DataRowEncoder::new(fields.clone());
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for (column, field) in columns.iter().zip(fields.iter()) {
            encode_value(&mut encoder, column.as_ref(), row, field)?;
        }
        rows.push(encoder.take_row());
    }
    Ok(rows)
}

fn encode_value(encoder: &mut DataRowEncoder, column: &dyn Array, row: usize, field: &FieldInfo) -> PgWireResult<()> {
    let any = column.as_any();
    let null = column.is_null(row);
    if field.format() == FieldFormat::Text && matches!(column.data_type(), DataType::Float32 | DataType::Float64) {
        // PostgreSQL's text for floats: shortest round-trip digits, `10` not `10.0`.
        let value = if let Some(array) = any.downcast_ref::<Float64Array>() {
            array.value(row)
        } else {
            any.downcast_ref::<Float32Array>().expect("float32").value(row) as f64
        };
        let text = (!null).then(|| float_text(value));
        return encoder.encode_field(&text);
    }
    macro_rules! encode {
        ($array:ty, $convert:expr) => {{
            let array = any.downcast_ref::<$array>().expect("cast to the encoded type");
            let value = (!null).then(|| $convert(array.value(row)));
            encoder.encode_field(&value)
        }};
    }
    match column.data_type() {
        DataType::Boolean => encode!(BooleanArray, |value: bool| value),
        DataType::Int16 => encode!(Int16Array, |value: i16| value),
        DataType::Int32 => encode!(Int32Array, |value: i32| value),
        DataType::Int64 => encode!(Int64Array, |value: i64| value),
        DataType::Float32 => encode!(Float32Array, |value: f32| value),
        DataType::Float64 => encode!(Float64Array, |value: f64| value),
        DataType::Binary => encode!(BinaryArray, |value: &[u8]| value.to_vec()),
        DataType::Date32 => {
            encode!(Date32Array, |days: i32| NaiveDate::from_num_days_from_ce_opt(days + 719_163).unwrap_or_default())
        }
        DataType::Timestamp(_, None) => {
            encode!(TimestampMicrosecondArray, |micros: i64| DateTime::from_timestamp_micros(micros)
                .unwrap_or_default()
                .naive_utc())
        }
        DataType::Timestamp(_, Some(_)) => {
            encode!(TimestampMicrosecondArray, |micros: i64| DateTime::<Utc>::from_timestamp_micros(micros)
                .unwrap_or_default())
        }
        _ => encode!(StringArray, |value: &str| value.to_string()),
    }
}

/// The protocol response for one statement's output.
fn output_response(output: Output, format: &Format) -> Result<Response, Error> {
    Ok(match output {
        Output::Status(tag) => match tag.as_str() {
            "BEGIN" => Response::TransactionStart(Tag::new("BEGIN")),
            "COMMIT" | "ROLLBACK" => Response::TransactionEnd(Tag::new(&tag)),
            _ => Response::Execution(Tag::new(&tag)),
        },
        Output::Rows { schema, batches } => {
            let fields = Arc::new(fields_of(&schema, format));
            let mut rows = Vec::new();
            for batch in &batches {
                rows.extend(
                    encode_batch(batch, &fields)
                        .map_err(|error| Error::Catalog(format!("encoding a result: {error}")))?,
                );
            }
            Response::Query(QueryResponse::new(fields, futures::stream::iter(rows.into_iter().map(Ok))))
        }
    })
}

/// The SQLSTATE code for an error.
pub fn sqlstate(error: &Error) -> &'static str {
    let message = error.to_string().to_lowercase();
    if message.contains("permission denied") {
        return "42501";
    }
    match error {
        Error::Sql(weft_sql::SqlError::Parse(_)) => "42601",
        Error::Sql(weft_sql::SqlError::TooComplex(_)) => "54001",
        Error::Unsupported(_) | Error::Sql(weft_sql::SqlError::Lower(_)) => "0A000",
        Error::Constraint(_) if message.contains("primary key") || message.contains("duplicate") => "23505",
        Error::Constraint(_) => "23000",
        Error::Catalog(_) if message.contains("already exists") => "42P07",
        Error::Catalog(_) if message.contains("does not exist") && message.contains("function") => "42883",
        Error::Catalog(_) if message.contains("does not exist") => "42P01",
        Error::Catalog(_) if message.contains("malformed") => "42601",
        Error::Catalog(_) => "42000",
        Error::Sql(weft_sql::SqlError::DataFusion(_)) => {
            if message.contains("not found") && message.contains("table") {
                "42P01"
            } else if message.contains("no field named") || message.contains("schema error") {
                "42703"
            } else if message.contains("divide by zero") || message.contains("division by zero") {
                "22012"
            } else if message.contains("cast") {
                "22P02"
            } else if message.contains("sql error") || message.contains("parser") {
                "42601"
            } else {
                "42000"
            }
        }
        Error::Engine(weft_engine::EngineError::ViewError { .. }) => "22000",
        Error::Convert(_) => "22P02",
        Error::File { .. } => "58030",
        Error::Access(_) => "42501",
        Error::Interrupted(_) => "57014",
        Error::Ceiling(_) => "54000",
        Error::FellBehind(_) => "53400",
        Error::LockTimeout(_) => "55P03",
        Error::TooManyConnections(_) => "53300",
        Error::Effects(weft_core::executor::ExecutorError::UnknownEffect(_)) => "42704",
        Error::Effects(weft_core::executor::ExecutorError::Connector(_)) => "08000",
        Error::Effects(weft_core::executor::ExecutorError::Log(_)) => "58030",
        _ => "XX000",
    }
}

/// A weft error as a PostgreSQL ErrorResponse.
pub fn error_info(error: &Error) -> ErrorInfo {
    ErrorInfo::new("ERROR".to_string(), sqlstate(error).to_string(), error.to_string())
}

/// A weft error as the protocol error sent to the client.
fn user_error(error: &Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(error)))
}

/// Runs blocking database work on tokio's blocking pool; a panic in it fails this request only.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> PgWireResult<T> {
    tokio::task::spawn_blocking(work).await.map_err(|panic| PgWireError::ApiError(Box::new(panic)))
}

/// The statement of the extended protocol: its text and the statement prepared from it, whose
/// parameters are bound at execution.
#[derive(Clone, Debug)]
pub struct ParsedSql {
    text: String,
    prepared: Prepared,
}

/// Prepares the statement once, when the client parses it; weft plans when the statement is
/// described or executed.
#[derive(Debug)]
pub struct WeftQueryParser;

#[async_trait]
impl QueryParser for WeftQueryParser {
    type Statement = ParsedSql;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<ParsedSql>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let prepared = prepared::prepare(sql).map_err(|error| user_error(&error))?;
        Ok(Some(ParsedSql { text: sql.to_string(), prepared }))
    }

    fn get_parameter_types(&self, statement: &ParsedSql) -> PgWireResult<Vec<Type>> {
        Ok(vec![Type::TEXT; statement.prepared.parameter_count()])
    }

    fn get_result_schema(&self, _statement: &ParsedSql, _format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        Ok(Vec::new())
    }
}

/// The value of parameter `index` as a literal of the parsed statement: a value, never SQL text.
fn parameter_value(portal: &Portal<ParsedSql>, index: usize, declared: Option<&Type>) -> PgWireResult<ast::Expr> {
    let declared = declared.filter(|ty| **ty != Type::UNKNOWN).cloned().unwrap_or(Type::UNKNOWN);
    let value = |value: ast::Value| ast::Expr::value(value);
    let number = |digits: String| value(ast::Value::Number(digits, false));
    // A negative number as the parser reads `-5`: a minus applied to the digits.
    let signed = |negative: bool, digits: String| {
        if negative {
            ast::Expr::UnaryOp { op: ast::UnaryOperator::Minus, expr: Box::new(number(digits)) }
        } else {
            number(digits)
        }
    };
    let cast = |text: String, data_type: ast::DataType| ast::Expr::Cast {
        kind: ast::CastKind::Cast,
        expr: Box::new(value(ast::Value::SingleQuotedString(text))),
        data_type,
        array: false,
        format: None,
    };
    let integer = |number: i64| signed(number < 0, number.unsigned_abs().to_string());
    let float = |number: f64| {
        if number.is_finite() {
            signed(number.is_sign_negative(), format!("{:?}", number.abs()))
        } else {
            cast(float_text(number), ast::DataType::Double(ast::ExactNumberInfo::None))
        }
    };
    let or_null = |value: Option<ast::Expr>| value.unwrap_or_else(|| ast::Expr::value(ast::Value::Null));
    Ok(or_null(match declared {
        Type::BOOL => portal.parameter::<bool>(index, &declared)?.map(|flag| value(ast::Value::Boolean(flag))),
        Type::INT2 => portal.parameter::<i16>(index, &declared)?.map(|number| integer(number.into())),
        Type::INT4 => portal.parameter::<i32>(index, &declared)?.map(|number| integer(number.into())),
        Type::INT8 => portal.parameter::<i64>(index, &declared)?.map(integer),
        Type::FLOAT4 => portal.parameter::<f32>(index, &declared)?.map(|number| float(number.into())),
        Type::FLOAT8 => portal.parameter::<f64>(index, &declared)?.map(float),
        Type::BYTEA => portal.parameter::<Vec<u8>>(index, &declared)?.map(|bytes| {
            let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            value(ast::Value::HexStringLiteral(hex))
        }),
        Type::TIMESTAMP => portal.parameter::<NaiveDateTime>(index, &declared)?.map(|time| {
            cast(
                time.format("%Y-%m-%d %H:%M:%S%.f").to_string(),
                ast::DataType::Timestamp(None, ast::TimezoneInfo::None),
            )
        }),
        Type::NUMERIC => match raw_text(portal, index)? {
            // Numbers sent as text: checked to be a finite number, then used as written.
            Some(text) => {
                let digits = text.trim();
                let finite = digits.parse::<f64>().is_ok_and(f64::is_finite);
                if !finite || !digits.bytes().all(|byte| byte.is_ascii_digit() || b".eE+-".contains(&byte)) {
                    return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                        "ERROR".into(),
                        "22P02".into(),
                        format!("parameter ${} is not a number: {text}", index + 1),
                    ))));
                }
                Some(match digits.strip_prefix('-') {
                    Some(magnitude) => signed(true, magnitude.to_string()),
                    None => number(digits.trim_start_matches('+').to_string()),
                })
            }
            None => None,
        },
        _ => raw_text(portal, index)?.map(|text| value(ast::Value::SingleQuotedString(text))),
    }))
}

/// A parameter's bytes as text (text format, or binary text types).
fn raw_text(portal: &Portal<ParsedSql>, index: usize) -> PgWireResult<Option<String>> {
    match portal.parameters.get(index) {
        Some(Some(bytes)) => String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| {
            PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".into(),
                "22021".into(),
                format!("parameter ${} is not valid UTF-8", index + 1),
            )))
        }),
        Some(None) => Ok(None),
        None => Err(PgWireError::ParameterIndexOutOfBound(index)),
    }
}

/// A float as PostgreSQL writes it in text.
fn float_text(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{value}")
    }
}

/// The type of parameter `index`: as the client declared it, else as weft inferred it.
fn parameter_type(declared: &[Option<Type>], inferred: &[Option<Type>], index: usize) -> Option<Type> {
    declared
        .get(index)
        .cloned()
        .flatten()
        .filter(|ty| *ty != Type::UNKNOWN)
        .or_else(|| inferred.get(index).cloned().flatten())
}

/// The portal's statement with its parameters bound: each typed as the client declared it,
/// else as weft infers it (`inferred`).
fn bound(portal: &Portal<ParsedSql>, inferred: &[Option<Type>]) -> PgWireResult<Prepared> {
    let declared = &portal.statement.parameter_types;
    let mut values = Vec::with_capacity(portal.parameter_len());
    for index in 0..portal.parameter_len() {
        // A parameter weft cannot type was described as TEXT, and is read as text.
        let ty = parameter_type(declared, inferred, index);
        values.push(parameter_value(portal, index, ty.as_ref())?);
    }
    Ok(portal.statement.statement.prepared.bind(&values))
}

impl Connection {
    /// The parameter types weft infers for `sql` (remembered per statement text).
    async fn inferred_types(&self, parsed: &ParsedSql) -> PgWireResult<Vec<Option<Type>>> {
        if let Some(types) = self.inferred.lock().expect("inferred types").get(&parsed.text) {
            return Ok(types.clone());
        }
        let count = parsed.prepared.parameter_count();
        let (shared, prepared) = (self.shared.clone(), parsed.prepared.clone());
        let types = blocking(move || parameter_types(&shared, &prepared, count)).await?;
        let mut cache = self.inferred.lock().expect("inferred types");
        if cache.len() > 1000 {
            cache.clear();
        }
        cache.insert(parsed.text.clone(), types.clone());
        Ok(types)
    }

    /// The portal's statement with its parameters bound.
    async fn bind(&self, portal: &Portal<ParsedSql>) -> PgWireResult<Prepared> {
        let declared = &portal.statement.parameter_types;
        let all_declared = (0..portal.parameter_len()).all(|index| parameter_type(declared, &[], index).is_some());
        let inferred = if all_declared { Vec::new() } else { self.inferred_types(&portal.statement.statement).await? };
        bound(portal, &inferred)
    }

    /// The result columns of a statement (bound or not), or none for a statement without rows.
    async fn describe(&self, prepared: Prepared, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
        if let Prepared::Subscribe(subscribe) = prepared {
            let shared = self.shared.clone();
            let columns = blocking(move || shared.with_database(|database| database.view(&subscribe.view)))
                .await?
                .map_err(|error| user_error(&error))?
                .0;
            return Ok(fields_of(&subscribe_schema(&columns), format));
        }
        let shared = self.shared.clone();
        let schema = blocking(move || result_schema(&shared, &prepared)).await?.map_err(|error| user_error(&error))?;
        Ok(schema.map(|schema| fields_of(&schema, format)).unwrap_or_default())
    }
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(subscribe) = parse_subscribe(query, false) {
            let subscribe = match subscribe {
                Ok(subscribe) => subscribe,
                Err(error) => return Ok(vec![Response::Error(Box::new(error_info(&error)))]),
            };
            let tag = self.stream(client, &subscribe, &Format::UnifiedText, true).await?;
            return Ok(vec![Response::Execution(tag)]);
        }
        if let Some(subscribe) = parse_subscribe(query, true) {
            let subscribe = match subscribe {
                Ok(subscribe) => subscribe,
                Err(error) => return Ok(vec![Response::Error(Box::new(error_info(&error)))]),
            };
            let tag = self.stream_copy(client, &subscribe).await?;
            return Ok(vec![Response::Execution(tag)]);
        }
        Ok(self.execute(query.to_string()).await)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = ParsedSql;
    type QueryParser = WeftQueryParser;

    fn query_parser(&self) -> Arc<WeftQueryParser> {
        self.parser.clone()
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<ParsedSql>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = ParsedSql>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let count = target.statement.prepared.parameter_count();
        let inferred = self.inferred_types(&target.statement).await?;
        let parameters = (0..count.max(target.parameter_types.len()))
            .map(|index| parameter_type(&target.parameter_types, &inferred, index).unwrap_or(Type::TEXT))
            .collect();
        // Without bound parameters the statement is described with NULLs for them.
        let nulls = vec![ast::Expr::value(ast::Value::Null); count];
        let fields = self.describe(target.statement.prepared.bind(&nulls), &Format::UnifiedText).await?;
        Ok(DescribeStatementResponse::new(parameters, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<ParsedSql>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = ParsedSql>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = self.bind(portal).await?;
        Ok(DescribePortalResponse::new(self.describe(prepared, &portal.result_column_format).await?))
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<ParsedSql>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = ParsedSql>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = self.bind(portal).await?;
        if let Prepared::Subscribe(subscribe) = prepared {
            let tag = self.stream(client, &subscribe, &portal.result_column_format, false).await?;
            return Ok(Response::Execution(tag));
        }
        let output = self.run(prepared).await.map_err(|error| user_error(&error))?;
        output_response(output, &portal.result_column_format).map_err(|error| user_error(&error))
    }
}

/// Start-up: SCRAM-SHA-256 when the server has a password, else none.
pub enum Startup {
    /// SCRAM-SHA-256, and the service (to slow down failing addresses).
    Password {
        /// pgwire's SCRAM handler.
        handler: Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>,
        /// The service.
        shared: Arc<Service>,
    },
    /// No authentication (loopback without a password).
    Open(OpenStartup),
}

/// The one password of the server, as the SCRAM secret (salt and salted password) SCRAM-SHA-256
/// checks the client's proof against: the password itself never crosses the wire.
pub struct PasswordSource(Arc<Service>);

impl Debug for PasswordSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PasswordSource")
    }
}

#[async_trait]
impl AuthSource for PasswordSource {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        let (salt, salted) = self
            .0
            .passwords
            .scram_secret()
            .ok_or_else(|| PgWireError::ApiError("the server has no password".into()))?;
        Ok(Password::new(Some(salt.clone()), salted.clone()))
    }
}

/// Start-up without authentication (loopback).
pub struct OpenStartup {
    manager: Arc<ConnectionManager>,
}

impl NoopStartupHandler for OpenStartup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.manager.clone())
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Password { handler, shared } => {
                let address = client.socket_addr().ip();
                if matches!(message, PgWireFrontendMessage::Startup(_))
                    && shared.refuses_plain_connection(client.is_secure(), address)
                {
                    return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                        "FATAL".into(),
                        "28000".into(),
                        "this server takes connections from other hosts only over TLS: connect with sslmode=require"
                            .into(),
                    ))));
                }
                // An address whose attempts failed waits before its next one is checked.
                let answer = matches!(message, PgWireFrontendMessage::PasswordMessageFamily(_));
                if answer {
                    tokio::time::sleep(shared.passwords.delay(address)).await;
                }
                let result = handler.on_startup(client, message).await;
                match &result {
                    Err(PgWireError::InvalidPassword(_) | PgWireError::InvalidScramMessage(_)) => {
                        shared.passwords.record(address, false)
                    }
                    Ok(()) if answer && matches!(client.state(), pgwire::api::PgWireConnectionState::ReadyForQuery) => {
                        shared.passwords.record(address, true)
                    }
                    _ => {}
                }
                result
            }
            Startup::Open(handler) => handler.on_startup(client, message).await,
        }
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::new(self.clone_handle())
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::new(self.clone_handle())
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.manager.clone()))
    }
}

impl Connection {
    fn clone_handle(&self) -> Connection {
        Connection {
            shared: self.shared.clone(),
            session: self.session,
            manager: self.manager.clone(),
            startup: self.startup.clone(),
            parser: self.parser.clone(),
            inferred: self.inferred.clone(),
        }
    }
}

/// The columns `prepared` returns, or `None` for a statement without rows.
pub fn result_schema(shared: &Service, prepared: &Prepared) -> Result<Option<SchemaRef>, Error> {
    let rows_schema = |output: Output| match output {
        Output::Rows { schema, .. } => Some(schema),
        Output::Status(_) => None,
    };
    Ok(match prepared {
        Prepared::Answer(output) => rows_schema(output.clone()),
        Prepared::Sql(statement) if Reader::can_run(statement) => {
            Some(shared.reader.describe(statement.as_ref().clone())?.0)
        }
        Prepared::Sql(statement) if matches!(statement.as_ref(), Statement::Explain { .. }) => {
            rows_schema(text_rows("plan", &[]))
        }
        Prepared::Sql(_) | Prepared::Weft(_) | Prepared::Subscribe(_) => None,
    })
}

/// The types of the `count` parameters of `prepared`, where weft can tell them.
pub fn parameter_types(shared: &Service, prepared: &Prepared, count: usize) -> Vec<Option<Type>> {
    let mut types = vec![None; count];
    let Prepared::Sql(statement) = prepared else {
        return types;
    };
    let statement = statement.as_ref().clone();
    let from_query = |statement: Statement, types: &mut Vec<Option<Type>>| {
        if let Ok((_, found)) = shared.reader.describe(statement) {
            for (index, data_type) in found.into_iter().enumerate() {
                if let (Some(slot), Some(data_type)) = (types.get_mut(index), data_type) {
                    slot.get_or_insert(column_pg_type_of_arrow(&data_type));
                }
            }
        }
    };
    match statement {
        Statement::Insert(insert) => {
            let name = insert.table.to_string().trim_matches('"').to_lowercase();
            let columns =
                shared.with_database(|database| database.relation(&name).map(|relation| relation.columns.clone()));
            let (Some(columns), Some(source)) = (columns, insert.source.as_ref()) else {
                return types;
            };
            let positions: Vec<usize> = if insert.columns.is_empty() {
                (0..columns.len()).collect()
            } else {
                insert
                    .columns
                    .iter()
                    .filter_map(|ident| {
                        columns
                            .iter()
                            .position(|(column, _)| column.eq_ignore_ascii_case(ident.to_string().trim_matches('"')))
                    })
                    .collect()
            };
            if let SetExpr::Values(values) = source.body.as_ref() {
                for row in &values.rows {
                    for (expr, position) in row.iter().zip(&positions) {
                        if let Some(index) = parameter_in(expr) {
                            if let (Some(slot), Some((_, ty))) = (types.get_mut(index), columns.get(*position)) {
                                slot.get_or_insert(column_pg_type(*ty));
                            }
                        }
                    }
                }
            }
        }
        Statement::Update(update) => {
            let table = update.table.relation.to_string();
            let mut select = format!("SELECT * FROM {table}");
            if let Some(selection) = &update.selection {
                select.push_str(&format!(" WHERE {selection}"));
            }
            let name = table.trim_matches('"').to_lowercase();
            let columns =
                shared.with_database(|database| database.relation(&name).map(|relation| relation.columns.clone()));
            for assignment in &update.assignments {
                let target = assignment.target.to_string().trim_matches('"').to_lowercase();
                if let (Some(index), Some(columns)) = (parameter_in(&assignment.value), &columns) {
                    if let (Some(slot), Some((_, ty))) =
                        (types.get_mut(index), columns.iter().find(|(column, _)| *column == target))
                    {
                        slot.get_or_insert(column_pg_type(*ty));
                    }
                }
            }
            if let Ok(mut parsed) = weft_sql::parse(&select) {
                if let Some(statement) = parsed.pop() {
                    from_query(statement, &mut types);
                }
            }
        }
        Statement::Delete(delete) => {
            let tables = match &delete.from {
                ast::FromTable::WithFromKeyword(tables) | ast::FromTable::WithoutKeyword(tables) => tables.clone(),
            };
            if let (Some(table), Some(selection)) = (tables.first(), &delete.selection) {
                if let Ok(mut parsed) = weft_sql::parse(&format!("SELECT * FROM {} WHERE {selection}", table.relation))
                {
                    if let Some(statement) = parsed.pop() {
                        from_query(statement, &mut types);
                    }
                }
            }
        }
        statement if Reader::can_run(&statement) => from_query(statement, &mut types),
        _ => {}
    }
    types
}

/// The index of the `$n` placeholder an expression is (perhaps cast or parenthesized).
fn parameter_in(expr: &ast::Expr) -> Option<usize> {
    match expr {
        ast::Expr::Cast { expr, .. } | ast::Expr::Nested(expr) => parameter_in(expr),
        expr => prepared::placeholder_index(expr),
    }
}
