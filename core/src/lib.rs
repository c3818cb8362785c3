//! weft's database: [`Database`] opens a data directory and executes SQL. It owns the catalog,
//! transactions and the write-ahead log, the memo and receipt store with its signer, the effects
//! executor and COPY; it plans with `weft-sql`, runs dataflows on `weft-engine` and functions on
//! `weft-wasm`. Front ends (the `weft` CLI, `weft-server`) build on it; it imports none of them.

#![warn(missing_docs)]

pub mod catalog;
pub mod connections;
pub mod database;
pub mod executor;
pub mod functions;
pub(crate) mod reading_views;
pub mod wal;

pub use database::copy;
pub use database::{Database, Error, Options, Output, Policy, Reader};
pub use weft_ir::{ColumnType, Row, Value};
