//! Values, column types and rows: the data that flows through every weft dataflow.
//!
//! A [`Value`] is one SQL value of one of weft's six types (or NULL). Values must be totally
//! ordered, hashable and serializable because differential dataflow sorts, hashes and (across
//! workers) serializes them; doubles therefore compare by `f64::total_cmp` after canonicalising
//! `-0.0` to `0.0` and every NaN to one NaN, so equal-looking doubles are equal records.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Text values: immutable, inline up to 23 bytes (no allocation to create, clone or compare
/// them), shared by reference count beyond.
pub use smol_str::SmolStr;

/// The SQL types a weft column can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ColumnType {
    /// `BOOLEAN`
    Boolean,
    /// `BIGINT`, a signed 64-bit integer.
    BigInt,
    /// `DOUBLE`, an IEEE 754 double.
    Double,
    /// `TEXT`, UTF-8.
    Text,
    /// `BYTEA`, raw bytes.
    Bytea,
    /// `TIMESTAMP` without time zone, nanoseconds since the Unix epoch.
    Timestamp,
}

impl ColumnType {
    /// The SQL spelling of the type.
    pub fn sql_name(self) -> &'static str {
        match self {
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::BigInt => "BIGINT",
            ColumnType::Double => "DOUBLE",
            ColumnType::Text => "TEXT",
            ColumnType::Bytea => "BYTEA",
            ColumnType::Timestamp => "TIMESTAMP",
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sql_name())
    }
}

/// One SQL value. `Null` sorts first, and is the default (what taking a value leaves).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    #[default]
    Null,
    /// BOOLEAN.
    Bool(bool),
    /// BIGINT.
    Int(i64),
    /// DOUBLE (canonical: no `-0.0`, one NaN). Build with [`Value::float`].
    Float(f64),
    /// TEXT.
    Text(SmolStr),
    /// BYTEA.
    Bytes(Vec<u8>),
    /// TIMESTAMP, nanoseconds since the Unix epoch.
    Timestamp(i64),
}

/// A row: one value per column.
pub type Row = Vec<Value>;

impl Value {
    /// A DOUBLE value in canonical form.
    pub fn float(value: f64) -> Value {
        if value == 0.0 {
            Value::Float(0.0)
        } else if value.is_nan() {
            Value::Float(f64::NAN)
        } else {
            Value::Float(value)
        }
    }

    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The type of a non-null value.
    pub fn column_type(&self) -> Option<ColumnType> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(_) => ColumnType::Boolean,
            Value::Int(_) => ColumnType::BigInt,
            Value::Float(_) => ColumnType::Double,
            Value::Text(_) => ColumnType::Text,
            Value::Bytes(_) => ColumnType::Bytea,
            Value::Timestamp(_) => ColumnType::Timestamp,
        })
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Float(_) => 3,
            Value::Text(_) => 4,
            Value::Bytes(_) => 5,
            Value::Timestamp(_) => 6,
        }
    }

    /// SQL comparison of two non-null values of comparable types (integers and doubles compare
    /// numerically); `None` if either is NULL.
    pub fn sql_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Null, _) | (_, Value::Null) => None,
            (Value::Int(a), Value::Float(b)) => Some((*a as f64).total_cmp(b)),
            (Value::Float(a), Value::Int(b)) => Some(a.total_cmp(&(*b as f64))),
            _ => Some(self.cmp(other)),
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Value) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Text(a), Value::Text(b)) => a.cmp(b),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            (Value::Timestamp(a), Value::Timestamp(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(self.rank());
        match self {
            Value::Null => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(i) | Value::Timestamp(i) => i.hash(state),
            Value::Float(f) => f.to_bits().hash(state),
            Value::Text(s) => s.hash(state),
            Value::Bytes(b) => b.hash(state),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Value::Bytes(b) => {
                f.write_str("'\\x")?;
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                f.write_str("'")
            }
            Value::Timestamp(nanos) => write!(f, "TIMESTAMP({nanos}ns)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_are_canonical_records() {
        assert_eq!(Value::float(-0.0), Value::float(0.0));
        assert_eq!(Value::float(f64::NAN), Value::float(-f64::NAN));
        assert!(Value::Null < Value::Int(i64::MIN));
        assert_eq!(Value::Int(2).sql_cmp(&Value::Float(2.5)), Some(Ordering::Less));
        assert_eq!(Value::Null.sql_cmp(&Value::Int(1)), None);
    }
}
