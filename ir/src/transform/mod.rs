//! Named analyses and rewrites of plans: what the database and the engine ask of a plan before
//! they run it, each in one place.
//!
//! - [`fusion`]: composing projections (an expression over another's outputs).
//! - [`row_local`]: whether a plan only filters and projects one table row by row (so DML can
//!   evaluate it on the changed rows alone).
//! - [`point_lookup`]: the primary-key value a predicate pins down (so DML finds its row by key).
//! - [`peel`]: the chain of filters and projections on top of a plan, which the engine applies
//!   inside one operator.

pub mod fusion;
pub mod peel;
pub mod point_lookup;
pub mod row_local;
