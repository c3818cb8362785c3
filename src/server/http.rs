//! The HTTP front end: `POST /query` (SQL in the body, JSON rows out), `GET /subscribe/<view>`
//! (newline-delimited JSON changes, streamed until the client disconnects), `GET /metrics`
//! (Prometheus text), `GET /health`.
//!
//! Each request is served on a thread of its own (tiny_http), so a long subscription or a slow
//! query holds up no one else. With a password set, requests must carry it as
//! `Authorization: Bearer <password>` (or as the password of HTTP basic authentication).

use super::{expand, metrics::DatabaseFigures, RowChange, Shared};
use crate::database::Output;
use crate::output::{write_output, Format};
use std::io::{Read, Write};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;
use tiny_http::{Header, Method, Request, Response, StatusCode};

/// The largest request body accepted, in bytes.
const MAX_BODY_BYTES: u64 = 16 << 20;

/// Serves requests until the server is closed.
pub fn run(server: tiny_http::Server, shared: Arc<Shared>) {
    for request in server.incoming_requests() {
        let shared = shared.clone();
        std::thread::spawn(move || handle(request, &shared));
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn json_error(status: u16, code: &str, message: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    let body = serde_json::json!({ "error": message, "code": code }).to_string();
    Response::from_string(body + "\n")
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
}

fn authorized(request: &Request, password: &Option<String>) -> bool {
    let Some(password) = password else {
        return true;
    };
    request.headers().iter().any(|field| {
        if !field.field.equiv("Authorization") {
            return false;
        }
        let value = field.value.as_str();
        if let Some(token) = value.strip_prefix("Bearer ") {
            return token == password;
        }
        if let Some(encoded) = value.strip_prefix("Basic ") {
            return decode_base64(encoded.trim())
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|pair| pair.split_once(':').map(|(_, given)| given == password))
                .unwrap_or(false);
        }
        false
    })
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

fn handle(mut request: Request, shared: &Shared) {
    if !authorized(&request, &shared.password) {
        let _ = request.respond(
            json_error(401, "28P01", "password authentication failed")
                .with_header(header("WWW-Authenticate", "Bearer")),
        );
        return;
    }
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let path = path.to_string();
    match (request.method().clone(), path.as_str()) {
        (Method::Post, "/query") | (Method::Get, "/query") => {
            let sql = if *request.method() == Method::Post {
                let mut body = String::new();
                let mut reader = request.as_reader().take(MAX_BODY_BYTES + 1);
                if reader.read_to_string(&mut body).is_err() {
                    let _ = request.respond(json_error(400, "22021", "the request body is not UTF-8 text"));
                    return;
                }
                if body.len() as u64 > MAX_BODY_BYTES {
                    let _ = request.respond(json_error(413, "54000", "the query is larger than 16 MiB"));
                    return;
                }
                body
            } else {
                query_parameter(query, "sql").unwrap_or_default()
            };
            let _ = request.respond(run_query(shared, &sql));
        }
        (Method::Get, "/metrics") => {
            let figures = shared.with_database(|database| {
                let (memo_hits, memo_misses) = database.memo_counts();
                let (views, tables) = database.catalog_figures();
                let effects = database.effect_counts().into_iter().collect();
                DatabaseFigures { views, tables, memo_hits, memo_misses, effects }
            });
            let body = shared.metrics.render(&figures);
            let _ = request
                .respond(Response::from_string(body).with_header(header("Content-Type", "text/plain; version=0.0.4")));
        }
        (Method::Get, "/health") => {
            let _ = request.respond(Response::from_string("ok\n"));
        }
        (Method::Get, subscribe) if subscribe.starts_with("/subscribe/") => {
            let view = percent_decode(&subscribe["/subscribe/".len()..]);
            let snapshot = query_parameter(query, "snapshot").is_none_or(|value| value != "false");
            stream_subscription(request, shared, &view, snapshot);
        }
        _ => {
            let _ = request.respond(json_error(404, "42704", &format!("no endpoint {path}")));
        }
    }
}

fn run_query(shared: &Shared, sql: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    // HTTP requests have no session state: each one is its own session.
    let session = shared.open_session();
    let (mut outputs, error) = shared.execute(session, sql);
    shared.close_session(session);
    if let Some(error) = error {
        return json_error(400, super::pg::sqlstate(&error), &error.to_string());
    }
    let mut body = Vec::new();
    match outputs.pop() {
        Some(output @ Output::Rows { .. }) => {
            if let Err(error) = write_output(&mut body, &output, Format::Json) {
                return json_error(500, "XX000", &error.to_string());
            }
        }
        Some(Output::Status(tag)) => body = (serde_json::json!({ "status": tag }).to_string() + "\n").into_bytes(),
        None => body = b"{\"status\":\"EMPTY\"}\n".to_vec(),
    }
    Response::from_data(body).with_header(header("Content-Type", "application/json"))
}

/// One JSON line per change.
fn change_lines(columns: &[String], changes: &[RowChange]) -> Vec<u8> {
    let mut out = Vec::new();
    for change in changes {
        let row: serde_json::Map<String, serde_json::Value> = columns
            .iter()
            .zip(change.row.iter())
            .map(|(column, value)| (column.clone(), crate::functions::value_json(value)))
            .collect();
        let line = serde_json::json!({ "timestamp": change.time, "diff": change.diff, "row": row });
        out.extend(line.to_string().bytes());
        out.push(b'\n');
    }
    out
}

/// Writes one chunk of a chunked body and flushes it to the client.
fn write_chunk(writer: &mut dyn Write, data: &[u8]) -> std::io::Result<()> {
    write!(writer, "{:x}\r\n", data.len())?;
    writer.write_all(data)?;
    writer.write_all(b"\r\n")?;
    writer.flush()
}

/// Streams a subscription as chunked NDJSON, flushing every timestamp's changes as they
/// commit, until the view is dropped or the client goes away.
fn stream_subscription(request: Request, shared: &Shared, view: &str, snapshot: bool) {
    let subscribed = match shared.subscribe(view) {
        Ok(subscribed) => subscribed,
        Err(error) => {
            let _ = request.respond(json_error(404, super::pg::sqlstate(&error), &error.to_string()));
            return;
        }
    };
    let columns: Vec<String> = subscribed.columns.iter().map(|(name, _)| name.clone()).collect();
    let mut writer = request.into_writer();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nCache-Control: no-cache\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if writer.write_all(head.as_bytes()).is_err() {
        return;
    }
    let initial = change_lines(&columns, &subscribed.snapshot_changes(snapshot));
    if write_chunk(&mut *writer, &initial).is_err() && !initial.is_empty() {
        return;
    }
    loop {
        let result = match subscribed.subscription.changes.recv_timeout(Duration::from_secs(15)) {
            Ok(batch) => write_chunk(&mut *writer, &change_lines(&columns, &expand(batch.time, &batch.updates))),
            // No change for a while: an empty line keeps proxies from closing the stream and
            // finds out whether the client is still there.
            Err(RecvTimeoutError::Timeout) => write_chunk(&mut *writer, b"\n"),
            Err(RecvTimeoutError::Disconnected) => {
                let _ = writer.write_all(b"0\r\n\r\n").and_then(|_| writer.flush());
                return;
            }
        };
        if result.is_err() {
            return;
        }
    }
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
    use super::{decode_base64, percent_decode};

    #[test]
    fn urls_and_basic_credentials_decode() {
        assert_eq!(percent_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(decode_base64("d2VmdDpzZWNyZXQ=").unwrap(), b"weft:secret");
    }
}
