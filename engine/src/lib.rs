//! weft's engine: SQL values, scalar expressions, the dataflow plan, and the differential-dataflow
//! executor that keeps every view up to date as tables change.
//!
//! The engine knows nothing of SQL text or DataFusion: `weft-sql` hands it [`plan::Plan`]s.

pub mod batcher;
pub mod content;
pub mod dataflow;
pub mod expr;
pub mod functions;
pub mod gate;
pub mod hashed_row;
pub mod plan;
pub mod row_counts;
pub mod sha3_lanes;
pub mod value;

pub use dataflow::{Change, Engine, EngineError, Subscription, Time, ViewChanges, ViewState};
pub use expr::{EvalError, Expr, RowChunk};
pub use gate::Gate;
pub use plan::{Plan, RelationId};
pub use value::{ColumnType, Row, Value};
