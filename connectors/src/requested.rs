//! Effects requested as data: a sink `INTO effects('column')` executes the effect each new row
//! of its view describes in that column, typically the result of a pure Wasm function that
//! returns a description instead of doing I/O.
//!
//! A description is JSON: `{"connector": "http", "ability": "http/post", "resource": url,
//! "payload": <JSON>}` POSTs the payload, or `{"connector": "files", "ability": "files/append",
//! "resource": path, "payload": <JSON>}` appends it as one line `{"key", "payload"}`. Each
//! requested effect runs once: its key is `<batch CID>/<row index>`, sent as the
//! `Idempotency-Key` header, or written into the line and looked for before appending again.
//! Rows leaving the view request nothing (what was done stays done).

use async_trait::async_trait;
use std::io::Write;
use weft_effects::{Column, ConnectorError, Datum, Delivery, Effect, Sink};

/// Executes the effects described in one column of a view.
pub struct RequestedSink {
    column: usize,
    column_name: String,
    agent: ureq::Agent,
    /// What the described effects may reach: each is checked as it runs.
    access: crate::access::Access,
}

/// One requested effect, parsed.
struct Request {
    connector: String,
    ability: String,
    resource: String,
    payload: serde_json::Value,
}

fn parse(text: &str) -> Result<Request, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))?;
    let field = |name: &str| {
        value
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("no {name:?} string"))
    };
    Ok(Request {
        connector: field("connector")?,
        ability: field("ability")?,
        resource: field("resource")?,
        payload: value.get("payload").cloned().unwrap_or(serde_json::Value::Null),
    })
}

impl RequestedSink {
    /// A sink executing the descriptions in column `column_name` of `columns`.
    pub fn new(
        column_name: &str,
        columns: &[Column],
        access: crate::access::Access,
    ) -> Result<RequestedSink, ConnectorError> {
        let column = columns.iter().position(|column| column.name == column_name).ok_or_else(|| {
            ConnectorError::Permanent(format!("effects('{column_name}'): the view has no column {column_name}"))
        })?;
        let agent = crate::http::agent(crate::http::REQUEST_TIMEOUT);
        Ok(RequestedSink { column, column_name: column_name.to_string(), agent, access })
    }

    async fn run(&self, key: String, request: Request) -> Result<(), ConnectorError> {
        match (request.connector.as_str(), request.ability.as_str()) {
            ("http", "http/post") => {
                crate::http::check_url(&request.resource)?;
                self.access.url(&request.resource)?;
                let agent = self.agent.clone();
                let body = request.payload.to_string();
                tokio::task::spawn_blocking(move || crate::http::post(&agent, &request.resource, &key, &body))
                    .await
                    .map_err(|error| ConnectorError::Transient(format!("requested effect task: {error}")))?
            }
            ("files", "files/append") => {
                let path = self.access.file(&request.resource)?;
                append_once(&path.to_string_lossy(), &key, &request.payload)
            }
            (connector, ability) => Err(ConnectorError::Permanent(format!(
                "requested effect {connector} {ability} is not supported (http http/post, files files/append)"
            ))),
        }
    }
}

/// Appends `{"key", "payload"}` to `path` unless a line with `key` is already there.
fn append_once(path: &str, key: &str, payload: &serde_json::Value) -> Result<(), ConnectorError> {
    let error = |error: std::io::Error| ConnectorError::Permanent(format!("{path}: {error}"));
    let marker = format!("\"key\":{}", serde_json::Value::from(key));
    if std::fs::read_to_string(path).is_ok_and(|text| text.lines().any(|line| line.contains(&marker))) {
        return Ok(());
    }
    let line = serde_json::json!({"key": key, "payload": payload}).to_string();
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(error)?;
    file.write_all(format!("{line}\n").as_bytes()).map_err(error)?;
    file.sync_data().map_err(error)
}

#[async_trait]
impl Sink for RequestedSink {
    async fn apply(&mut self, effects: &[Effect]) -> Result<Delivery, ConnectorError> {
        for effect in effects {
            let cid = effect.cid().to_string();
            for (index, change) in effect.payload.changes.iter().enumerate().filter(|(_, change)| change.diff > 0) {
                let text = match change.row.get(self.column) {
                    Some(Datum::Text(text)) => text,
                    Some(Datum::Null) | None => continue,
                    Some(other) => {
                        return Err(ConnectorError::Permanent(format!(
                            "column {} must hold effect descriptions as TEXT, found {other:?}",
                            self.column_name
                        )))
                    }
                };
                let request = parse(text).map_err(|message| {
                    ConnectorError::Permanent(format!(
                        "requested effect in column {}: {message}: {text}",
                        self.column_name
                    ))
                })?;
                self.run(format!("{cid}/{index}"), request).await?;
            }
        }
        Ok(Delivery { applied: effects.len(), duplicates: 0 })
    }

    fn max_run(&self) -> usize {
        1
    }
}
