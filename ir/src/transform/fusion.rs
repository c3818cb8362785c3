//! Projection fusion: an expression over a projection's outputs, rewritten over its inputs.

use crate::expr::Expr;

/// `outer` with each column reference replaced by the matching `inner` expression.
pub fn substitute(outer: &Expr, inner: &[Expr]) -> Expr {
    match outer {
        Expr::Column(index) => inner[*index].clone(),
        Expr::Literal(_) => outer.clone(),
        Expr::Unary { op, expr } => Expr::Unary { op: *op, expr: Box::new(substitute(expr, inner)) },
        Expr::Binary { op, left, right } => {
            Expr::Binary { op: *op, left: Box::new(substitute(left, inner)), right: Box::new(substitute(right, inner)) }
        }
        Expr::Case { operand, when_then, otherwise } => Expr::Case {
            operand: operand.as_ref().map(|operand| Box::new(substitute(operand, inner))),
            when_then: when_then
                .iter()
                .map(|(when, then)| (substitute(when, inner), substitute(then, inner)))
                .collect(),
            otherwise: otherwise.as_ref().map(|otherwise| Box::new(substitute(otherwise, inner))),
        },
        Expr::Cast { expr, to, r#try } => {
            Expr::Cast { expr: Box::new(substitute(expr, inner)), to: *to, r#try: *r#try }
        }
        Expr::Like { expr, pattern, negated, case_insensitive } => Expr::Like {
            expr: Box::new(substitute(expr, inner)),
            pattern: Box::new(substitute(pattern, inner)),
            negated: *negated,
            case_insensitive: *case_insensitive,
        },
        Expr::InList { expr, list, negated } => Expr::InList {
            expr: Box::new(substitute(expr, inner)),
            list: list.iter().map(|item| substitute(item, inner)).collect(),
            negated: *negated,
        },
        Expr::Call { function, args } => {
            Expr::Call { function: *function, args: args.iter().map(|arg| substitute(arg, inner)).collect() }
        }
        Expr::Udf { id, name, args, function } => Expr::Udf {
            id: *id,
            name: name.clone(),
            args: args.iter().map(|arg| substitute(arg, inner)).collect(),
            function: function.clone(),
        },
    }
}
