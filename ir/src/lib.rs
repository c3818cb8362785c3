//! weft's intermediate representation: the [`Value`]s, [`ColumnType`]s and [`Row`]s that flow
//! through every view, scalar [`Expr`]essions, and the dataflow [`Plan`] that `weft-sql` lowers
//! SQL to and `weft-engine` renders on differential dataflow.
//!
//! It depends on no engine, parser or runtime: every other crate may depend on it.

#![warn(missing_docs)]

pub mod error;
pub mod expr;
pub mod functions;
pub mod hashed_row;
pub mod plan;
pub mod transform;
pub mod value;

pub use expr::{EvalError, Expr, RowChunk};
pub use plan::{Plan, RelationId};
pub use value::{ColumnType, Row, Value};
