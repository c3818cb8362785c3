//! weft's IPVM model: content addressing (DAG-CBOR, CIDs, sha3-256 in lanes), instructions and
//! invocations named as Homestar names them, and receipts.
//!
//! It depends only on `weft-ir` (for the values arguments and results are made of).

pub mod content;
pub mod sha3_lanes;
