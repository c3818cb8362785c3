//! The HTTP front end: `POST /query` (SQL in the body, JSON rows out), `GET /subscribe/<view>`
//! (newline-delimited JSON changes, streamed until the client disconnects), `GET /metrics`
//! (Prometheus text), `GET /health`.
//!
//! hyper serves HTTP/1.1 on the server's tokio runtime, over TLS when the server has a
//! certificate. A client gets [`HEADER_TIMEOUT`] to send its request head, which may be at most
//! [`MAX_HEAD_BYTES`] with [`MAX_HEADERS`] fields, and [`BODY_TIMEOUT`] for a body of at most
//! [`MAX_BODY_BYTES`]. Statements run on the runtime's blocking pool, whose threads have the
//! statement stack of the pgwire front end. With a password set, requests must carry it as
//! `Authorization: Bearer <password>` (or as the password of HTTP basic authentication).
//!
//! Browsers are kept out: statements run only from `POST` (a link or an image cannot run one),
//! the `Host` header must name the address the server listens on (DNS rebinding gets a name
//! that is not it), and a request whose `Origin` is another site's is refused (no CORS).

use crate::metrics::DatabaseFigures;
use crate::output::{write_output, OutputFormat};
use crate::service::{changes_at, RowChange, Service};
use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, ORIGIN, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use weft_core::database::Output;

/// The largest request body accepted, in bytes.
const MAX_BODY_BYTES: usize = 16 << 20;
/// The largest request head (request line and header fields) accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// The most header fields a request may have.
pub const MAX_HEADERS: usize = 64;
/// How long a client has to send its request head (and to finish a TLS handshake).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send its request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often an idle subscription stream sends an empty line.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// A whole answer, or a subscription's stream of lines.
type Body = Either<Full<Bytes>, Lines>;

/// Serves connections until the listener fails; `listen` is the address it listens on, `tls`
/// the acceptor every connection must first pass through, if the server has a certificate.
pub async fn run(listener: TcpListener, shared: Arc<Service>, tls: Option<tokio_rustls::TlsAcceptor>) {
    let Ok(listen) = listener.local_addr() else { return };
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, say: wait and go on accepting.
                tracing::error!("HTTP accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let (shared, tls) = (shared.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    if let Ok(Ok(stream)) = tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(socket)).await {
                        serve_connection(hyper_util::rt::TokioIo::new(stream), shared, peer, listen, "https").await
                    }
                }
                None => serve_connection(hyper_util::rt::TokioIo::new(socket), shared, peer, listen, "http").await,
            }
        });
    }
}

/// Serves the requests of one connection.
async fn serve_connection<I>(io: I, shared: Arc<Service>, peer: SocketAddr, listen: SocketAddr, scheme: &'static str)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(request, shared, peer, listen, scheme).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let _ = builder.serve_connection(io, service).await;
}

fn json_error(status: u16, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message, "code": code }).to_string() + "\n";
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn answer(body: impl Into<Bytes>, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Either::Left(Full::new(body.into())));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The value of header `name`, if the request has it once (and it is text).
fn header_value(request: &Request<Incoming>, name: hyper::header::HeaderName) -> Option<&str> {
    let mut values = request.headers().get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value.to_str().ok(),
        _ => None,
    }
}

/// Whether the request carries the server's password (or none is needed). Waits first, longer
/// and longer, if its address keeps failing.
async fn authorized(request: &Request<Incoming>, shared: &Service, peer: SocketAddr) -> bool {
    if !shared.passwords.required() {
        return true;
    }
    let given = header_value(request, AUTHORIZATION).and_then(|value| {
        if let Some(token) = value.strip_prefix("Bearer ") {
            return Some(token.as_bytes().to_vec());
        }
        let pair = decode_base64(value.strip_prefix("Basic ")?.trim())?;
        let colon = pair.iter().position(|byte| *byte == b':')?;
        Some(pair[colon + 1..].to_vec())
    });
    tokio::time::sleep(shared.passwords.delay(peer.ip())).await;
    shared.passwords.verify(peer.ip(), given.as_deref().unwrap_or_default())
}

/// Why a request is refused before anything else is looked at: its `Host` does not name the
/// server (DNS rebinding), or its `Origin` is another site's (a web page's request).
fn misdirected(request: &Request<Incoming>, listen: SocketAddr, scheme: &str) -> Option<(u16, String)> {
    let Some(host) = header_value(request, HOST) else {
        return Some((400, "the request has no (single) Host header".into()));
    };
    if !host_names_server(host, listen, scheme) {
        return Some((421, format!("Host {host:?} is not this server's address ({listen})")));
    }
    if request.headers().contains_key(ORIGIN) {
        let origin = header_value(request, ORIGIN).unwrap_or_default();
        let own = format!("{scheme}://{host}");
        if !own.eq_ignore_ascii_case(origin.trim_end_matches('/')) {
            return Some((403, format!("cross-origin request from {origin:?} refused")));
        }
    }
    None
}

/// Whether a `Host` header names the server listening on `listen`: an IP address it listens
/// on (any, when it listens on all), or `localhost` when it listens on loopback, with its port
/// (which may be left out when it is the scheme's default). A name that resolves to it (a DNS
/// rebinding attack's) does not.
fn host_names_server(host: &str, listen: SocketAddr, scheme: &str) -> bool {
    let default_port = if scheme == "https" { 443 } else { 80 };
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && (name.starts_with('[') || !name.contains(':')) => {
            (name, port.parse::<u16>().ok())
        }
        _ => (host, Some(default_port)),
    };
    if port != Some(listen.port()) {
        return false;
    }
    let name = name.trim_start_matches('[').trim_end_matches(']');
    match name.parse::<std::net::IpAddr>() {
        Ok(address) => listen.ip().is_unspecified() || address == listen.ip(),
        Err(_) => name.eq_ignore_ascii_case("localhost") && listen.ip().is_loopback(),
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes().filter(|byte| *byte != b'=') {
        let value = ALPHABET.iter().position(|candidate| *candidate == byte)? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Service>,
    peer: SocketAddr,
    listen: SocketAddr,
    scheme: &'static str,
) -> Response<Body> {
    if let Some((status, message)) = misdirected(&request, listen, scheme) {
        return json_error(status, "42501", &message);
    }
    if !authorized(&request, &shared, peer).await {
        let mut response = json_error(401, "28P01", "password authentication failed");
        response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    match (request.method().clone(), path.as_str()) {
        (Method::POST, "/query") => {
            let body = Limited::new(request.into_body(), MAX_BODY_BYTES);
            let sql = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
                Err(_) => return json_error(408, "57014", "the request body did not arrive in time"),
                Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                    return json_error(413, "54000", "the query is larger than 16 MiB")
                }
                Ok(Err(error)) => return json_error(400, "08P01", &format!("reading the request body: {error}")),
                Ok(Ok(collected)) => match String::from_utf8(collected.to_bytes().to_vec()) {
                    Ok(sql) => sql,
                    Err(_) => return json_error(400, "22021", "the request body is not UTF-8 text"),
                },
            };
            match tokio::task::spawn_blocking(move || run_query(&shared, &sql)).await {
                Ok(response) => response,
                Err(panic) => json_error(500, "XX000", &format!("internal error: {panic}")),
            }
        }
        (_, "/query") => {
            let mut response = json_error(405, "42501", "statements are sent as POST /query, with the SQL as the body");
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
            response
        }
        (Method::GET, "/metrics") => {
            let figures = shared.with_database(|database| {
                let (memo_hits, memo_misses) = database.memo_counts();
                let (views, tables) = database.catalog_figures();
                let effects = database.effect_counts().into_iter().collect();
                DatabaseFigures { views, tables, memo_hits, memo_misses, effects }
            });
            answer(shared.metrics.render(&figures), "text/plain; version=0.0.4")
        }
        (Method::GET, "/health") => answer("ok\n", "text/plain"),
        (Method::GET, subscribe) if subscribe.starts_with("/subscribe/") => {
            let view = percent_decode(&subscribe["/subscribe/".len()..]);
            let snapshot = query_parameter(&query, "snapshot").is_none_or(|value| value != "false");
            stream_subscription(shared, view, snapshot).await
        }
        _ => json_error(404, "42704", &format!("no endpoint {path}")),
    }
}

fn run_query(shared: &Service, sql: &str) -> Response<Body> {
    // HTTP requests have no session state: each one is its own session.
    let session = match shared.open_session() {
        Ok((session, _)) => session,
        Err(error) => return json_error(503, crate::pg::sqlstate(&error), &error.to_string()),
    };
    let (mut outputs, error) = shared.execute(session, sql);
    shared.close_session(session);
    if let Some(error) = error {
        return json_error(400, crate::pg::sqlstate(&error), &error.to_string());
    }
    let mut body = Vec::new();
    match outputs.pop() {
        Some(output @ Output::Rows { .. }) => {
            if let Err(error) = write_output(&mut body, &output, OutputFormat::Json) {
                return json_error(500, "XX000", &error.to_string());
            }
        }
        Some(Output::Status(tag)) => body = (serde_json::json!({ "status": tag }).to_string() + "\n").into_bytes(),
        None => body = b"{\"status\":\"EMPTY\"}\n".to_vec(),
    }
    answer(body, "application/json")
}

/// One JSON line per change.
fn change_lines(columns: &[String], changes: &[RowChange]) -> Bytes {
    let mut out = Vec::new();
    for change in changes {
        let row: serde_json::Map<String, serde_json::Value> = columns
            .iter()
            .zip(change.row.iter())
            .map(|(column, value)| (column.clone(), weft_core::functions::value_json(value)))
            .collect();
        let line = serde_json::json!({ "timestamp": change.time, "diff": change.diff, "row": row });
        out.extend(line.to_string().bytes());
        out.push(b'\n');
    }
    Bytes::from(out)
}

/// A streamed body: the lines a subscription's task sends, each written (as a chunk) as it
/// comes. When the task ends, so does the body.
pub struct Lines(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(context).map(|lines| lines.map(|lines| Ok(Frame::data(lines))))
    }
}

/// Streams a subscription as chunked NDJSON, each timestamp's changes as they commit, until the
/// view is dropped or the client goes away. Waiting holds no thread: the engine wakes the
/// stream's task.
async fn stream_subscription(shared: Arc<Service>, view: String, snapshot: bool) -> Response<Body> {
    let arrivals = Arc::new(tokio::sync::Notify::new());
    let notify = arrivals.clone();
    let wake: weft_engine::Wake = Arc::new(move || notify.notify_one());
    let subscribing = shared.clone();
    let subscribed = match tokio::task::spawn_blocking(move || subscribing.subscribe(&view, Some(wake))).await {
        Ok(Ok(subscribed)) => subscribed,
        Ok(Err(error)) => return json_error(404, crate::pg::sqlstate(&error), &error.to_string()),
        Err(panic) => return json_error(500, "XX000", &format!("internal error: {panic}")),
    };
    let columns: Vec<String> = subscribed.columns.iter().map(|(name, _)| name.clone()).collect();
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let initial = change_lines(&columns, &subscribed.snapshot_changes(snapshot));
    tokio::spawn(async move {
        // An empty first chunk would end the body: a line break stands in for no rows.
        let initial = if initial.is_empty() { Bytes::from_static(b"\n") } else { initial };
        if sender.send(initial).await.is_err() {
            return;
        }
        let changes = subscribed.subscription.changes;
        loop {
            let lines = match changes.try_recv() {
                Ok(batch) => change_lines(&columns, &changes_at(batch.time, &batch.updates)),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    tokio::select! {
                        _ = arrivals.notified() => continue,
                        // No change for a while: an empty line keeps proxies from closing the
                        // stream and finds out whether the client is still there.
                        _ = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b"\n"),
                        _ = sender.closed() => return,
                    }
                }
            };
            if !lines.is_empty() && sender.send(lines).await.is_err() {
                return;
            }
        }
        if changes.fell_behind() {
            // The stream ends with a line saying why.
            let error = weft_core::database::Error::FellBehind(shared.subscribe_buffer());
            let line = serde_json::json!({ "error": error.to_string(), "code": crate::pg::sqlstate(&error) });
            let _ = sender.send(Bytes::from(format!("{line}\n"))).await;
        }
    });
    let mut response = Response::new(Either::Right(Lines(receiver)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn query_parameter(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => match u8::from_str_radix(&text[index + 1..index + 3], 16) {
                Ok(byte) => {
                    out.push(byte);
                    index += 3;
                }
                Err(_) => {
                    out.push(b'%');
                    index += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{decode_base64, host_names_server, percent_decode};

    #[test]
    fn urls_and_basic_credentials_decode() {
        assert_eq!(percent_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(decode_base64("d2VmdDpzZWNyZXQ=").unwrap(), b"weft:secret");
    }

    #[test]
    fn the_host_header_must_name_the_listen_address() {
        let loopback = "127.0.0.1:6876".parse().unwrap();
        let host_names_server = |host: &str, listen| host_names_server(host, listen, "http");
        assert!(host_names_server("127.0.0.1:6876", loopback));
        assert!(host_names_server("localhost:6876", loopback));
        assert!(host_names_server("LOCALHOST:6876", loopback));
        assert!(!host_names_server("attacker.example:6876", loopback), "DNS rebinding");
        assert!(!host_names_server("127.0.0.1:80", loopback));
        assert!(!host_names_server("127.0.0.1", loopback));
        assert!(!host_names_server("127.0.0.2:6876", loopback));
        let everywhere = "0.0.0.0:80".parse().unwrap();
        assert!(host_names_server("192.0.2.7", everywhere));
        assert!(host_names_server("192.0.2.7:80", everywhere));
        assert!(!host_names_server("localhost", everywhere));
        assert!(!host_names_server("weft.example", everywhere));
        let v6 = "[::1]:7000".parse().unwrap();
        assert!(host_names_server("[::1]:7000", v6));
        assert!(host_names_server("localhost:7000", v6));
        assert!(!host_names_server("[::2]:7000", v6));
    }
}
