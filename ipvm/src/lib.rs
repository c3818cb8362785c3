//! weft's IPVM model: content addressing (DAG-CBOR, CIDs, sha3-256 in lanes), instructions and
//! invocations named as Homestar names them, receipts and the forms the log keeps them in, the
//! node's identity (an Ed25519 key, its did:key, Merkle batches of signatures) and the signer
//! that signs receipts in batches while the dataflow runs.
//!
//! It depends only on `weft-ir` (for the values arguments and results are made of).

#![warn(missing_docs)]

pub mod identity;
pub mod invocation;
pub mod memo;
pub mod receipts;
pub mod sha3_lanes;
pub mod signer;
pub mod workflow;
