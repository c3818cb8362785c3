//! The traits connectors implement, and how they fail.
//!
//! A [`Sink`] applies mutation effects in the order given, exactly once per effect CID: it must
//! remember the CIDs it applied *in the same atomic step* as the change itself (a PostgreSQL
//! transaction, a file and its sidecar), or hand the CID to a system that deduplicates (an HTTP
//! `Idempotency-Key`). A [`Source`] reads the world: a whole snapshot or rows appended since the
//! last read. Errors say whether trying again can help.

use crate::model::{Datum, Effect};
use async_trait::async_trait;

/// Why a connector could not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// Worth retrying: a timeout, a dropped connection, a 5xx, a serialization failure.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help until something changes: bad configuration, a missing table, a
    /// constraint violation, a 4xx, data that does not parse.
    #[error("{0}")]
    Permanent(String),
}

impl ConnectorError {
    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectorError::Transient(_))
    }
}

/// What a sink did with a run of effects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Effects applied now.
    pub applied: usize,
    /// Effects skipped because their key had already been applied (a replay).
    pub duplicates: usize,
}

/// Applies mutation effects to one resource.
#[async_trait]
pub trait Sink: Send {
    /// Applies `effects` in order, all or none, skipping any whose CID was applied before.
    async fn apply(&mut self, effects: &[Effect]) -> Result<Delivery, ConnectorError>;

    /// The most effects one call of [`Sink::apply`] should get. A sink that cannot apply a run
    /// atomically (one HTTP request per effect) says 1, so each effect's delivery is recorded
    /// on its own and a fault partway never sends the whole run again.
    fn max_run(&self) -> usize {
        usize::MAX
    }
}

/// What one read of a source found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceRead {
    /// When set, the source's whole current contents (replacing what was read before).
    pub snapshot: Option<Vec<Vec<Datum>>>,
    /// Rows appended since the previous read (when `snapshot` is `None`).
    pub appended: Vec<Vec<Datum>>,
    /// Input that was skipped, each naming where and why (a malformed line, say).
    pub problems: Vec<String>,
}

/// Reads rows from the world.
#[async_trait]
pub trait Source: Send {
    /// Reads what is new. The first read of a fresh source is always a snapshot.
    async fn read(&mut self) -> Result<SourceRead, ConnectorError>;
}
