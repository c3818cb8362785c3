//! weft's engine: the differential-dataflow executor that keeps every view up to date as
//! tables change, rendering `weft-ir` [`Plan`]s onto timely dataflow, with the commit gate that
//! makes every read see one complete timestamp.
//!
//! The engine knows nothing of SQL text or DataFusion: `weft-sql` hands it [`Plan`]s. The IR
//! modules are re-exported here for the crates that have not moved to `weft-ir` yet.

#![warn(missing_docs)]

pub(crate) mod batcher;
pub mod dataflow;
pub(crate) mod gate;
pub(crate) mod row_counts;

pub use weft_ir::{expr, functions, hashed_row, plan, value};

pub use dataflow::{Change, ChangeStream, Engine, EngineError, Subscription, ViewChanges, ViewState, Wake};
pub use gate::Gate;
pub use weft_ir::{ColumnType, EvalError, Expr, Plan, RelationId, Row, RowChunk, Value};

/// Logical time: one tick per committed transaction.
pub type Time = u64;
