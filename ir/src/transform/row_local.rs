//! Row locality: a plan that only filters and projects one table, row by row, as one predicate
//! and one list of projections over the table's columns.

use super::fusion::substitute;
use crate::expr::Expr;
use crate::plan::{Plan, RelationId};

/// If `plan` only filters and projects table `id` row by row, its predicate and projections
/// (over the table's columns).
pub fn row_local(plan: &Plan, id: RelationId) -> Option<(Option<Expr>, Vec<Expr>)> {
    match plan {
        Plan::Project { input, exprs } => match input.as_ref() {
            Plan::Get { id: got, .. } if *got == id => Some((None, exprs.clone())),
            Plan::Filter { input, predicate } => match input.as_ref() {
                Plan::Get { id: got, .. } if *got == id => Some((Some(predicate.clone()), exprs.clone())),
                Plan::Project { input, exprs: inner } => match input.as_ref() {
                    Plan::Get { id: got, .. } if *got == id => Some((
                        Some(substitute(predicate, inner)),
                        exprs.iter().map(|expr| substitute(expr, inner)).collect(),
                    )),
                    _ => None,
                },
                _ => None,
            },
            Plan::Project { .. } => {
                let (predicate, inner) = row_local(input, id)?;
                Some((predicate, exprs.iter().map(|expr| substitute(expr, &inner)).collect()))
            }
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::BinaryOp;
    use crate::value::{ColumnType, Value};

    #[test]
    fn filters_and_projections_of_one_table_compose_over_its_columns() {
        let table = Plan::Get { id: 1, name: "t".into(), column_types: vec![ColumnType::BigInt; 2] };
        let plus_one = |column| Expr::Binary {
            op: BinaryOp::Add,
            left: Box::new(Expr::Column(column)),
            right: Box::new(Expr::Literal(Value::Int(1))),
        };
        // SELECT c0 + 1 FROM (SELECT c1 + 1, c0 FROM t) WHERE c1 > 0
        let inner = Plan::Project { input: Box::new(table.clone()), exprs: vec![plus_one(1), Expr::Column(0)] };
        let positive = Expr::Binary {
            op: BinaryOp::Gt,
            left: Box::new(Expr::Column(1)),
            right: Box::new(Expr::Literal(Value::Int(0))),
        };
        let plan = Plan::Project {
            input: Box::new(Plan::Filter { input: Box::new(inner), predicate: positive }),
            exprs: vec![plus_one(0)],
        };
        let (predicate, exprs) = row_local(&plan, 1).unwrap();
        let expected_predicate = Expr::Binary {
            op: BinaryOp::Gt,
            left: Box::new(Expr::Column(0)),
            right: Box::new(Expr::Literal(Value::Int(0))),
        };
        assert_eq!(predicate, Some(expected_predicate));
        let expected = Expr::Binary {
            op: BinaryOp::Add,
            left: Box::new(plus_one(1)),
            right: Box::new(Expr::Literal(Value::Int(1))),
        };
        assert_eq!(exprs, vec![expected]);
        // Another table, or a plan that is not row by row, is not row-local.
        assert!(row_local(&plan, 2).is_none());
        assert!(row_local(&Plan::Distinct { input: Box::new(table) }, 1).is_none());
    }
}
