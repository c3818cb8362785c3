//! Direct translation of simple DML expressions, bypassing DataFusion planning.
//!
//! Planning a statement with DataFusion costs a few hundred microseconds, far more than applying
//! a one-row change to a maintained view. `INSERT ... VALUES` of literals and `UPDATE`/`DELETE`
//! whose expressions use only columns, literals, arithmetic, comparisons, AND/OR/NOT and IS
//! \[NOT\] NULL are therefore translated here, with the types checked the way DataFusion would
//! coerce them. Anything else returns `None` and takes the general DataFusion path, so both
//! paths give the same answers.

use datafusion::sql::sqlparser::ast::{self, BinaryOperator, UnaryOperator};
use weft_ir::expr::{BinaryOp, UnaryOp};
use weft_ir::{ColumnType, Expr, Value};

/// The static type of a translated expression: a column type, or NULL's "any".
#[derive(Clone, Copy, PartialEq, Eq)]
enum StaticType {
    Null,
    Of(ColumnType),
}

fn numeric(kind: StaticType) -> bool {
    matches!(kind, StaticType::Null | StaticType::Of(ColumnType::BigInt) | StaticType::Of(ColumnType::Double))
}

fn comparable(left: StaticType, right: StaticType) -> bool {
    left == right || left == StaticType::Null || right == StaticType::Null || (numeric(left) && numeric(right))
}

/// A literal value, if `expr` is one (including a negated number).
pub fn literal(expr: &ast::Expr) -> Option<Value> {
    translate(expr, &[]).and_then(|(expr, _)| match expr {
        Expr::Literal(value) => Some(value),
        Expr::Unary { op: UnaryOp::Negate, expr } => match *expr {
            Expr::Literal(Value::Int(i)) => i.checked_neg().map(Value::Int),
            Expr::Literal(Value::Float(f)) => Some(Value::float(-f)),
            _ => None,
        },
        _ => None,
    })
}

/// Translates `expr` over the named, typed `columns`, or `None` if it needs DataFusion.
pub fn translate_expr(expr: &ast::Expr, columns: &[(String, ColumnType)]) -> Option<Expr> {
    translate(expr, columns).map(|(expr, _)| expr)
}

/// Translates a predicate (which must be BOOLEAN).
pub fn translate_predicate(expr: &ast::Expr, columns: &[(String, ColumnType)]) -> Option<Expr> {
    match translate(expr, columns)? {
        (expr, StaticType::Of(ColumnType::Boolean) | StaticType::Null) => Some(expr),
        _ => None,
    }
}

fn translate(expr: &ast::Expr, columns: &[(String, ColumnType)]) -> Option<(Expr, StaticType)> {
    Some(match expr {
        ast::Expr::Identifier(ident) => {
            let name = if ident.quote_style.is_some() { ident.value.clone() } else { ident.value.to_lowercase() };
            let index = columns.iter().position(|(column, _)| column == &name)?;
            (Expr::Column(index), StaticType::Of(columns[index].1))
        }
        ast::Expr::Nested(inner) => translate(inner, columns)?,
        ast::Expr::Value(value) => match &value.value {
            ast::Value::Number(text, false) => match text.parse::<i64>() {
                Ok(int) => (Expr::Literal(Value::Int(int)), StaticType::Of(ColumnType::BigInt)),
                Err(_) => (Expr::Literal(Value::float(text.parse().ok()?)), StaticType::Of(ColumnType::Double)),
            },
            ast::Value::SingleQuotedString(text) => {
                (Expr::Literal(Value::Text(text.as_str().into())), StaticType::Of(ColumnType::Text))
            }
            ast::Value::Boolean(b) => (Expr::Literal(Value::Bool(*b)), StaticType::Of(ColumnType::Boolean)),
            ast::Value::Null => (Expr::Literal(Value::Null), StaticType::Null),
            _ => return None,
        },
        ast::Expr::IsNull(inner) => (
            Expr::Unary { op: UnaryOp::IsNull, expr: Box::new(translate(inner, columns)?.0) },
            StaticType::Of(ColumnType::Boolean),
        ),
        ast::Expr::IsNotNull(inner) => (
            Expr::Unary { op: UnaryOp::IsNotNull, expr: Box::new(translate(inner, columns)?.0) },
            StaticType::Of(ColumnType::Boolean),
        ),
        ast::Expr::UnaryOp { op, expr } => {
            let (inner, kind) = translate(expr, columns)?;
            match op {
                UnaryOperator::Minus if numeric(kind) => {
                    (Expr::Unary { op: UnaryOp::Negate, expr: Box::new(inner) }, kind)
                }
                UnaryOperator::Plus if numeric(kind) => (inner, kind),
                UnaryOperator::Not if matches!(kind, StaticType::Null | StaticType::Of(ColumnType::Boolean)) => {
                    (Expr::Unary { op: UnaryOp::Not, expr: Box::new(inner) }, StaticType::Of(ColumnType::Boolean))
                }
                _ => return None,
            }
        }
        ast::Expr::BinaryOp { left, op, right } => {
            let (left, left_kind) = translate(left, columns)?;
            let (right, right_kind) = translate(right, columns)?;
            let (op, kind) = match op {
                BinaryOperator::Plus
                | BinaryOperator::Minus
                | BinaryOperator::Multiply
                | BinaryOperator::Divide
                | BinaryOperator::Modulo => {
                    if !numeric(left_kind) || !numeric(right_kind) {
                        return None;
                    }
                    let kind = if left_kind == StaticType::Of(ColumnType::Double)
                        || right_kind == StaticType::Of(ColumnType::Double)
                    {
                        StaticType::Of(ColumnType::Double)
                    } else if left_kind == StaticType::Null || right_kind == StaticType::Null {
                        StaticType::Null
                    } else {
                        StaticType::Of(ColumnType::BigInt)
                    };
                    let op = match op {
                        BinaryOperator::Plus => BinaryOp::Add,
                        BinaryOperator::Minus => BinaryOp::Subtract,
                        BinaryOperator::Multiply => BinaryOp::Multiply,
                        BinaryOperator::Divide => BinaryOp::Divide,
                        _ => BinaryOp::Modulo,
                    };
                    // Integer arithmetic mixed with a double is done in doubles, as DataFusion does.
                    let widen = |expr: Expr, kind: StaticType| {
                        if op != BinaryOp::Modulo
                            && kind == StaticType::Of(ColumnType::BigInt)
                            && left_kind != right_kind
                        {
                            Expr::Cast { expr: Box::new(expr), to: ColumnType::Double, r#try: false }
                        } else {
                            expr
                        }
                    };
                    let (left, right) = (widen(left, left_kind), widen(right, right_kind));
                    return Some((Expr::Binary { op, left: Box::new(left), right: Box::new(right) }, kind));
                }
                BinaryOperator::Eq
                | BinaryOperator::NotEq
                | BinaryOperator::Lt
                | BinaryOperator::LtEq
                | BinaryOperator::Gt
                | BinaryOperator::GtEq => {
                    if !comparable(left_kind, right_kind) {
                        return None;
                    }
                    let op = match op {
                        BinaryOperator::Eq => BinaryOp::Eq,
                        BinaryOperator::NotEq => BinaryOp::NotEq,
                        BinaryOperator::Lt => BinaryOp::Lt,
                        BinaryOperator::LtEq => BinaryOp::LtEq,
                        BinaryOperator::Gt => BinaryOp::Gt,
                        _ => BinaryOp::GtEq,
                    };
                    (op, StaticType::Of(ColumnType::Boolean))
                }
                BinaryOperator::And | BinaryOperator::Or => {
                    let boolean = |kind| matches!(kind, StaticType::Null | StaticType::Of(ColumnType::Boolean));
                    if !boolean(left_kind) || !boolean(right_kind) {
                        return None;
                    }
                    (
                        if *op == BinaryOperator::And { BinaryOp::And } else { BinaryOp::Or },
                        StaticType::Of(ColumnType::Boolean),
                    )
                }
                _ => return None,
            };
            (Expr::Binary { op, left: Box::new(left), right: Box::new(right) }, kind)
        }
        _ => return None,
    })
}
