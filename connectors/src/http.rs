//! HTTP: a sink that POSTs each effect as JSON, with its CID as the `Idempotency-Key` header,
//! and [`HttpLookup`], which reads resources for query effects (`http_get(url)` in views).
//!
//! The body is `{"effect": cid, "sink", "sequence", "changes": [{"diff", "row": {column: value}}]}`.
//! A 2xx answer delivers the effect. 408, 429, 5xx, timeouts and dropped connections are transient
//! (retried with backoff by the executor); other 4xx answers are permanent. Effects of one sink
//! are sent one at a time, in order, so a receiver sees them in sequence; a receiver that may see
//! a retry of an effect it already applied deduplicates by the key (the HTTP convention).

use crate::json::row_object;
use async_trait::async_trait;
use std::time::Duration;
use weft_effects::{Column, ConnectorError, Delivery, Effect, Sink};

/// How long one POST may take, connection included, unless `timeout_ms=N` says otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the optional second argument of `http(url, 'timeout_ms=N')`.
pub fn timeout(option: Option<&str>) -> Result<Duration, ConnectorError> {
    let Some(option) = option else { return Ok(REQUEST_TIMEOUT) };
    option
        .strip_prefix("timeout_ms=")
        .and_then(|value| value.trim().parse::<u64>().ok())
        .filter(|milliseconds| *milliseconds > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| {
            ConnectorError::Permanent(format!("http sink option {option:?}: expected 'timeout_ms=N' (N > 0)"))
        })
}

/// An HTTP client whose requests give up after `timeout` and whose error statuses come back as
/// answers (the connectors classify them).
pub fn agent(timeout: Duration) -> ureq::Agent {
    // Redirects are not followed: the access policy checked the URL asked for, not where a
    // server might send the request next.
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent()
}

/// Checks that `url` is an `http://` URL (TLS is not built in).
pub fn check_url(url: &str) -> Result<(), ConnectorError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        ConnectorError::Permanent(format!("http sink URL {url:?} must start with http:// (https is not supported)"))
    })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(ConnectorError::Permanent(format!("http sink URL {url:?} has no host")));
    }
    Ok(())
}

/// POSTs a view's changes to a URL.
pub struct HttpSink {
    url: String,
    columns: Vec<Column>,
    agent: ureq::Agent,
}

impl HttpSink {
    /// A sink posting to `url`.
    pub fn new(url: &str, timeout: Duration, columns: Vec<Column>) -> Result<HttpSink, ConnectorError> {
        check_url(url)?;
        Ok(HttpSink { url: url.to_string(), columns, agent: agent(timeout) })
    }

    /// The JSON body for one effect.
    pub fn body(&self, effect: &Effect) -> serde_json::Value {
        let changes: Vec<serde_json::Value> = effect
            .payload
            .changes
            .iter()
            .map(|change| serde_json::json!({"diff": change.diff, "row": row_object(&self.columns, &change.row)}))
            .collect();
        serde_json::json!({
            "effect": effect.cid().to_string(),
            "sink": effect.payload.sink,
            "sequence": effect.payload.sequence,
            "changes": changes,
        })
    }
}

/// POSTs `body` to `url` with `Idempotency-Key: key`, classifying the answer.
pub fn post(agent: &ureq::Agent, url: &str, key: &str, body: &str) -> Result<(), ConnectorError> {
    let response = agent
        .post(url)
        .header("Idempotency-Key", key)
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(|error| ConnectorError::Transient(format!("POST {url}: {error}")))?;
    let status = response.status().as_u16();
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(ConnectorError::Transient(format!("POST {url}: HTTP {status}"))),
        _ => {
            let mut text = response.into_body().read_to_string().unwrap_or_default();
            text.truncate(200);
            Err(ConnectorError::Permanent(format!("POST {url}: HTTP {status} {}", text.trim())))
        }
    }
}

#[async_trait]
impl Sink for HttpSink {
    async fn apply(&mut self, effects: &[Effect]) -> Result<Delivery, ConnectorError> {
        let requests: Vec<(String, String)> =
            effects.iter().map(|effect| (effect.cid().to_string(), self.body(effect).to_string())).collect();
        let agent = self.agent.clone();
        let url = self.url.clone();
        // Sent in order, one at a time (the executor hands over one effect per call, see
        // `max_run`); a retry resends the same key, which the receiver deduplicates.
        tokio::task::spawn_blocking(move || {
            for (key, body) in &requests {
                post(&agent, &url, key, body)?;
            }
            Ok(Delivery { applied: requests.len(), duplicates: 0 })
        })
        .await
        .map_err(|error| ConnectorError::Transient(format!("HTTP sink task: {error}")))?
    }

    fn max_run(&self) -> usize {
        1
    }
}

/// Reads resources for query effects: `http://` URLs by GET, `ipfs://<cid>` through an HTTP
/// gateway (`<gateway>/ipfs/<cid>`) when one is configured.
#[derive(Clone)]
pub struct HttpLookup {
    agent: ureq::Agent,
    ipfs_gateway: Option<String>,
    access: crate::access::Access,
}

impl HttpLookup {
    /// A reader with a per-request `timeout`.
    pub fn new(timeout: Duration, ipfs_gateway: Option<String>, access: crate::access::Access) -> HttpLookup {
        HttpLookup { agent: agent(timeout), ipfs_gateway, access }
    }

    /// The body at `resource`, as text. 408, 429, 5xx and transport failures are transient.
    pub async fn get(&self, resource: &str) -> Result<String, ConnectorError> {
        let url = match resource.strip_prefix("ipfs://") {
            Some(cid) => match &self.ipfs_gateway {
                Some(gateway) => format!("{}/ipfs/{cid}", gateway.trim_end_matches('/')),
                None => {
                    return Err(ConnectorError::Permanent(format!(
                        "{resource}: no IPFS gateway configured (set WEFT_IPFS_GATEWAY to an http:// gateway)"
                    )))
                }
            },
            None => {
                check_url(resource)?;
                resource.to_string()
            }
        };
        self.access.url(&url)?;
        let agent = self.agent.clone();
        tokio::task::spawn_blocking(move || {
            let response =
                agent.get(&url).call().map_err(|error| ConnectorError::Transient(format!("GET {url}: {error}")))?;
            let status = response.status().as_u16();
            match status {
                200..=299 => response
                    .into_body()
                    .read_to_string()
                    .map_err(|error| ConnectorError::Permanent(format!("GET {url}: body: {error}"))),
                408 | 429 | 500..=599 => Err(ConnectorError::Transient(format!("GET {url}: HTTP {status}"))),
                _ => Err(ConnectorError::Permanent(format!("GET {url}: HTTP {status}"))),
            }
        })
        .await
        .map_err(|error| ConnectorError::Transient(format!("HTTP read task: {error}")))?
    }
}
