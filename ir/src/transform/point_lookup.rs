//! Point lookup: the primary-key value a predicate pins down with `key_column = literal`
//! conjuncts, so a statement finds its row by key instead of scanning.

use crate::expr::{BinaryOp, Expr};
use crate::value::{ColumnType, Row, Value};
use std::collections::HashMap;

/// The primary-key value a predicate pins down with `key_column = literal` conjuncts, if any.
pub fn point_lookup(
    predicate: Option<&Expr>,
    primary_key: Option<&[usize]>,
    columns: &[(String, ColumnType)],
) -> Option<Row> {
    let (predicate, primary_key) = (predicate?, primary_key?);
    let mut pinned: HashMap<usize, Value> = HashMap::new();
    fn collect(expr: &Expr, pinned: &mut HashMap<usize, Value>) {
        match expr {
            Expr::Binary { op: BinaryOp::And, left, right } => {
                collect(left, pinned);
                collect(right, pinned);
            }
            Expr::Binary { op: BinaryOp::Eq, left, right } => match (left.as_ref(), right.as_ref()) {
                (Expr::Column(column), Expr::Literal(value)) | (Expr::Literal(value), Expr::Column(column)) => {
                    pinned.insert(*column, value.clone());
                }
                _ => {}
            },
            _ => {}
        }
    }
    collect(predicate, &mut pinned);
    // A literal of another type than the column (say 1 for a DOUBLE key) would miss the index.
    primary_key
        .iter()
        .map(|column| pinned.get(column).filter(|value| value.column_type() == Some(columns[*column].1)).cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn equals(column: usize, value: Value) -> Expr {
        Expr::Binary { op: BinaryOp::Eq, left: Box::new(Expr::Column(column)), right: Box::new(Expr::Literal(value)) }
    }

    #[test]
    fn a_key_pinned_by_conjuncts_of_its_type_is_found() {
        let columns = vec![("a".to_string(), ColumnType::BigInt), ("b".to_string(), ColumnType::Text)];
        let both = Expr::Binary {
            op: BinaryOp::And,
            left: Box::new(equals(1, Value::Text("x".into()))),
            right: Box::new(equals(0, Value::Int(7))),
        };
        assert_eq!(
            point_lookup(Some(&both), Some(&[0, 1]), &columns),
            Some(vec![Value::Int(7), Value::Text("x".into())])
        );
        assert_eq!(point_lookup(Some(&both), Some(&[0]), &columns), Some(vec![Value::Int(7)]));
        // Half a key, a key of another type, an OR, or no key at all pin nothing.
        assert_eq!(point_lookup(Some(&equals(0, Value::Int(7))), Some(&[0, 1]), &columns), None);
        assert_eq!(point_lookup(Some(&equals(0, Value::Text("7".into()))), Some(&[0]), &columns), None);
        let either = Expr::Binary {
            op: BinaryOp::Or,
            left: Box::new(equals(0, Value::Int(7))),
            right: Box::new(equals(0, Value::Int(8))),
        };
        assert_eq!(point_lookup(Some(&either), Some(&[0]), &columns), None);
        assert_eq!(point_lookup(Some(&equals(0, Value::Int(7))), None, &columns), None);
    }
}
