//! The one error of evaluation, shared by expressions and the functions they call.

/// A failure while evaluating an expression on one row.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);
