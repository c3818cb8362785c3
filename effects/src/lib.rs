//! weft's managed effects, as data.
//!
//! Pure functions and views never touch the world. Everything that does is an *effect*: a value
//! `{stream, connector, resource, ability, payload}` named by its CID, executed by a connector,
//! and recorded with its outcome. This crate holds that model and nothing that executes it: it
//! knows nothing of timely, of the engine or of any connector. [`model`] is the effect value and
//! its content address, [`connector`] the traits connectors implement, [`outbox`] the ordering and
//! status of pending effects (what may be delivered next, what failed), and [`backoff`] the retry
//! schedule for transient failures.

#![warn(missing_docs)]

pub mod backoff;
pub mod connector;
pub mod model;
pub mod outbox;

pub use backoff::Backoff;
pub use connector::{ConnectorError, Delivery, Sink, Source, SourceRead};
pub use model::{Batch, Change, Column, ColumnKind, Datum, Effect, Stream};
pub use outbox::{Entry, Outbox, OutboxRecord, SignedReceipt, Status};
