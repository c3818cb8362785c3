//! weft: a database-centric dataflow engine. SQL tables and views, planned by DataFusion and kept
//! up to date incrementally on timely / differential dataflow.
//!
//! This crate is the public facade and the `weft` command line: [`Database`] opens a data
//! directory and executes SQL; the engine and SQL front end are the `weft-engine` and
//! `weft-sql` crates, the effect model and connectors `weft-effects` and `weft-connectors`.

pub mod catalog;
pub mod copy;
pub mod database;
pub mod effects;
pub mod executor;
pub mod fastpath;
pub mod functions;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod memory;
pub mod output;
pub mod reads;
pub mod server;
pub mod signer;
pub mod wal;

pub use database::{Database, Error, Options, Output, Policy, Reader};
pub use weft_engine::{ColumnType, Row, Value};
