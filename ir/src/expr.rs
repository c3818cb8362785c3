//! Scalar expressions over rows and their interpreter.
//!
//! The SQL front end lowers DataFusion expressions (already type-coerced) into [`Expr`], so the
//! interpreter never has to guess types: both sides of a comparison or arithmetic operator have
//! the same type, except where SQL mixes BIGINT and DOUBLE, which is handled numerically.
//! Evaluation follows SQL semantics: NULL propagates, AND/OR use three-valued logic, and a
//! runtime fault (division by zero, a failed cast) is an [`EvalError`], never a panic.
//!
//! An interpreter over `Vec<Value>` rows was chosen over DataFusion's physical expressions on
//! Arrow batches because incremental updates arrive a few rows at a time: building a one-row
//! Arrow batch costs more than interpreting the expression. Dataflows still evaluate a
//! [`RowChunk`] of rows at a time ([`Expr::eval_chunk`]), so that a user-defined function is
//! called once per chunk (one memo lock and lookup pass instead of one per row); everything else
//! is interpreted row by row within the chunk.

use crate::functions::{BoundFunction, Callable, FunctionId, FunctionRegistry};
use crate::value::SmolStr;
use crate::value::{ColumnType, Row, Value};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

pub use crate::error::EvalError;

type EvalResult = Result<Value, EvalError>;

/// Rows of one arity, stored one after another in one vector: what a dataflow operator
/// evaluates at once (see [`Expr::eval_chunk`]). Building it allocates nothing per row.
#[derive(Clone, Debug, Default)]
pub struct RowChunk {
    /// The rows' values, row after row.
    pub values: Vec<Value>,
    arity: usize,
    rows: usize,
}

impl RowChunk {
    /// Empties the chunk, keeping its memory.
    pub fn clear(&mut self) {
        self.values.clear();
        self.arity = 0;
        self.rows = 0;
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row `index`.
    pub fn row(&self, index: usize) -> &[Value] {
        &self.values[index * self.arity..(index + 1) * self.arity]
    }

    /// Row `index`, to move values out of.
    pub fn row_mut(&mut self, index: usize) -> &mut [Value] {
        &mut self.values[index * self.arity..(index + 1) * self.arity]
    }

    /// Counts the values pushed onto [`RowChunk::values`] since the last row as one more row.
    /// The first row sets the chunk's arity; every other row must have it.
    pub fn end_row(&mut self) {
        if self.rows == 0 {
            self.arity = self.values.len();
        }
        self.rows += 1;
        assert_eq!(self.values.len(), self.rows * self.arity, "rows of one chunk have one arity");
    }
}

/// A scalar expression over the columns of one input row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// The value of column `i` of the input row.
    Column(usize),
    /// A constant.
    Literal(Value),
    /// A unary operator.
    Unary {
        /// The operator.
        op: UnaryOp,
        /// The operand.
        expr: Box<Expr>,
    },
    /// A binary operator.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// The left operand.
        left: Box<Expr>,
        /// The right operand.
        right: Box<Expr>,
    },
    /// `CASE [operand] WHEN .. THEN .. ELSE .. END`.
    Case {
        /// The value compared with each `WHEN` (else each `WHEN` is a condition).
        operand: Option<Box<Expr>>,
        /// The `WHEN ... THEN ...` pairs, in order.
        when_then: Vec<(Expr, Expr)>,
        /// The `ELSE` (NULL when absent).
        otherwise: Option<Box<Expr>>,
    },
    /// `CAST(expr AS type)`; `try` yields NULL instead of an error.
    Cast {
        /// The value cast.
        expr: Box<Expr>,
        /// The type cast to.
        to: ColumnType,
        /// `TRY_CAST`: NULL instead of an error.
        r#try: bool,
    },
    /// `expr [NOT] [I]LIKE pattern`.
    Like {
        /// The value matched.
        expr: Box<Expr>,
        /// The pattern (`%` and `_`).
        pattern: Box<Expr>,
        /// `NOT LIKE`.
        negated: bool,
        /// `ILIKE`.
        case_insensitive: bool,
    },
    /// `expr [NOT] IN (list)`.
    InList {
        /// The value looked for.
        expr: Box<Expr>,
        /// The list.
        list: Vec<Expr>,
        /// `NOT IN`.
        negated: bool,
    },
    /// A scalar function call.
    Call {
        /// The function.
        function: Function,
        /// Its arguments.
        args: Vec<Expr>,
    },
    /// A call of a user-defined function, by its id in a [`FunctionRegistry`]. `function` is the
    /// function itself once the expression is bound ([`Expr::bind_functions`]); an unbound call
    /// cannot be evaluated.
    Udf {
        /// The function's id in its registry.
        id: FunctionId,
        /// Its SQL name (for EXPLAIN and errors).
        name: String,
        /// Its arguments.
        args: Vec<Expr>,
        /// The function itself, once bound.
        #[serde(skip)]
        function: Option<BoundFunction>,
    },
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnaryOp {
    /// `NOT x`.
    Not,
    /// `-x`.
    Negate,
    /// `x IS NULL`.
    IsNull,
    /// `x IS NOT NULL`.
    IsNotNull,
    /// `x IS TRUE`.
    IsTrue,
    /// `x IS FALSE`.
    IsFalse,
    /// `x IS NOT TRUE`.
    IsNotTrue,
    /// `x IS NOT FALSE`.
    IsNotFalse,
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryOp {
    /// `+`.
    Add,
    /// `-`.
    Subtract,
    /// `*`.
    Multiply,
    /// `/` (integer division of integers).
    Divide,
    /// `%`.
    Modulo,
    /// `=`.
    Eq,
    /// `<>`.
    NotEq,
    /// `<`.
    Lt,
    /// `<=`.
    LtEq,
    /// `>`.
    Gt,
    /// `>=`.
    GtEq,
    /// `AND` (three-valued).
    And,
    /// `OR` (three-valued).
    Or,
    /// `IS DISTINCT FROM` (NULL-safe `<>`).
    IsDistinctFrom,
    /// `IS NOT DISTINCT FROM` (NULL-safe `=`).
    IsNotDistinctFrom,
    /// `||`.
    Concat,
}

/// Scalar functions weft evaluates itself (named as in DataFusion).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Function {
    /// `coalesce(...)`.
    Coalesce,
    /// `nullif(...)`.
    NullIf,
    /// `lower(...)`.
    Lower,
    /// `upper(...)`.
    Upper,
    /// `character_length(...)`.
    CharacterLength,
    /// `octet_length(...)`.
    OctetLength,
    /// `concat(...)`.
    Concat,
    /// `substr(...)`.
    Substr,
    /// `trim(...)`.
    Trim,
    /// `ltrim(...)`.
    Ltrim,
    /// `rtrim(...)`.
    Rtrim,
    /// `replace(...)`.
    Replace,
    /// `left(...)`.
    Left,
    /// `right(...)`.
    Right,
    /// `starts_with(...)`.
    StartsWith,
    /// `strpos(...)`.
    Strpos,
    /// `abs(...)`.
    Abs,
    /// `round(...)`.
    Round,
    /// `ceil(...)`.
    Ceil,
    /// `floor(...)`.
    Floor,
    /// `trunc(...)`.
    Trunc,
    /// `sqrt(...)`.
    Sqrt,
    /// `power(...)`.
    Power,
    /// `ln(...)`.
    Ln,
    /// `exp(...)`.
    Exp,
    /// `signum(...)`.
    Signum,
    /// `greatest(...)`.
    Greatest,
    /// `least(...)`.
    Least,
}

impl Function {
    /// The function for a DataFusion scalar function name, if weft implements it.
    pub fn from_name(name: &str) -> Option<Function> {
        Some(match name {
            "coalesce" => Function::Coalesce,
            "nullif" => Function::NullIf,
            "lower" => Function::Lower,
            "upper" => Function::Upper,
            "character_length" | "char_length" | "length" => Function::CharacterLength,
            "octet_length" => Function::OctetLength,
            "concat" => Function::Concat,
            "substr" | "substring" => Function::Substr,
            "btrim" | "trim" => Function::Trim,
            "ltrim" => Function::Ltrim,
            "rtrim" => Function::Rtrim,
            "replace" => Function::Replace,
            "left" => Function::Left,
            "right" => Function::Right,
            "starts_with" => Function::StartsWith,
            "strpos" | "instr" | "position" => Function::Strpos,
            "abs" => Function::Abs,
            "round" => Function::Round,
            "ceil" => Function::Ceil,
            "floor" => Function::Floor,
            "trunc" => Function::Trunc,
            "sqrt" => Function::Sqrt,
            "power" | "pow" => Function::Power,
            "ln" => Function::Ln,
            "exp" => Function::Exp,
            "signum" => Function::Signum,
            "greatest" => Function::Greatest,
            "least" => Function::Least,
            _ => return None,
        })
    }
}

fn err<T>(message: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError(message.into()))
}

impl Expr {
    /// Evaluates the expression on `row`.
    pub fn eval(&self, row: &[Value]) -> EvalResult {
        match self {
            Expr::Column(index) => Ok(row[*index].clone()),
            Expr::Literal(value) => Ok(value.clone()),
            Expr::Unary { op, expr } => eval_unary(*op, expr.eval(row)?),
            Expr::Binary { op, left, right } => match op {
                BinaryOp::And => {
                    let l = left.eval(row)?;
                    if l == Value::Bool(false) {
                        return Ok(l);
                    }
                    let r = right.eval(row)?;
                    Ok(match (l, r) {
                        (_, Value::Bool(false)) => Value::Bool(false),
                        (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                        _ => Value::Null,
                    })
                }
                BinaryOp::Or => {
                    let l = left.eval(row)?;
                    if l == Value::Bool(true) {
                        return Ok(l);
                    }
                    let r = right.eval(row)?;
                    Ok(match (l, r) {
                        (_, Value::Bool(true)) => Value::Bool(true),
                        (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                        _ => Value::Null,
                    })
                }
                _ => eval_binary(*op, left.eval(row)?, right.eval(row)?),
            },
            Expr::Case { operand, when_then, otherwise } => {
                let operand = match operand {
                    Some(operand) => Some(operand.eval(row)?),
                    None => None,
                };
                for (when, then) in when_then {
                    let condition = when.eval(row)?;
                    let taken = match &operand {
                        Some(value) => value.sql_cmp(&condition) == Some(Ordering::Equal),
                        None => condition == Value::Bool(true),
                    };
                    if taken {
                        return then.eval(row);
                    }
                }
                match otherwise {
                    Some(otherwise) => otherwise.eval(row),
                    None => Ok(Value::Null),
                }
            }
            Expr::Cast { expr, to, r#try } => {
                let value = expr.eval(row)?;
                match cast(value, *to) {
                    Err(_) if *r#try => Ok(Value::Null),
                    result => result,
                }
            }
            Expr::Like { expr, pattern, negated, case_insensitive } => match (expr.eval(row)?, pattern.eval(row)?) {
                (Value::Text(text), Value::Text(pattern)) => {
                    let matched = if *case_insensitive {
                        like(&text.to_lowercase(), &pattern.to_lowercase())
                    } else {
                        like(&text, &pattern)
                    };
                    Ok(Value::Bool(matched != *negated))
                }
                (Value::Null, _) | (_, Value::Null) => Ok(Value::Null),
                (value, _) => err(format!("LIKE needs TEXT, got {value}")),
            },
            Expr::InList { expr, list, negated } => {
                let value = expr.eval(row)?;
                if value.is_null() {
                    return Ok(Value::Null);
                }
                let mut saw_null = false;
                for item in list {
                    let item = item.eval(row)?;
                    match value.sql_cmp(&item) {
                        Some(Ordering::Equal) => return Ok(Value::Bool(!negated)),
                        None => saw_null = true,
                        _ => {}
                    }
                }
                Ok(if saw_null { Value::Null } else { Value::Bool(*negated) })
            }
            Expr::Call { function, args } => {
                if *function == Function::Coalesce {
                    for arg in args {
                        let value = arg.eval(row)?;
                        if !value.is_null() {
                            return Ok(value);
                        }
                    }
                    return Ok(Value::Null);
                }
                let values = args.iter().map(|arg| arg.eval(row)).collect::<Result<Vec<_>, _>>()?;
                call(*function, values)
            }
            Expr::Udf { id, args, function, .. } => {
                let function = bound(*id, function)?;
                let values = args.iter().map(|arg| arg.eval(row)).collect::<Result<Vec<_>, _>>()?;
                function.call(&values)
            }
        }
    }

    /// Evaluates the expression on every row of `chunk`, pushing one result per row onto
    /// `results`. A call of a user-defined function whose arguments evaluated is made once for
    /// the whole chunk ([`Callable::call_batch`]); the rest is [`Expr::eval`] row by row
    /// (so a function inside CASE, AND, OR or COALESCE is still only called where SQL evaluates
    /// it).
    pub fn eval_chunk(&self, chunk: &RowChunk, results: &mut Vec<EvalResult>) {
        let Expr::Udf { id, args, function, .. } = self else {
            results.extend((0..chunk.rows()).map(|row| self.eval(chunk.row(row))));
            return;
        };
        let function = match bound(*id, function) {
            Ok(function) => function,
            Err(error) => {
                results.extend(std::iter::repeat_n(Err(error), chunk.rows()));
                return;
            }
        };
        // The rows whose arguments all evaluated are called together; a row whose argument
        // failed fails with its first argument's error, as in `eval`.
        let first = results.len();
        let mut arguments = RowChunk::default();
        let mut called = Vec::with_capacity(chunk.rows());
        eval_chunk_all(args, chunk, &mut arguments, |row, failed| match failed {
            Some(error) => results.push(Err(error)),
            None => {
                called.push(first + row);
                results.push(Ok(Value::Null));
            }
        });
        let call = |outputs: &mut Vec<EvalResult>| {
            let start = outputs.len();
            function.call_batch(arguments.rows(), &arguments.values, outputs);
            debug_assert_eq!(outputs.len(), start + arguments.rows(), "one result per called row");
        };
        if called.len() == chunk.rows() {
            // Every row is called (the usual case): the results are the call's.
            results.truncate(first);
            call(results);
            return;
        }
        let mut outputs = Vec::with_capacity(called.len());
        call(&mut outputs);
        for (position, output) in called.into_iter().zip(outputs) {
            results[position] = output;
        }
    }

    /// Binds every call of a user-defined function in the expression to the function `registry`
    /// has under its id; an error names a function the registry does not have.
    pub fn bind_functions(&mut self, registry: &FunctionRegistry) -> Result<(), EvalError> {
        let mut missing = None;
        self.visit_mut(&mut |expr| {
            if let Expr::Udf { id, name, function, .. } = expr {
                match registry.get(*id) {
                    Some(callable) => *function = Some(BoundFunction(callable)),
                    None => missing = Some(format!("function {name} (id {id}) is not defined")),
                }
            }
        });
        missing.map_or(Ok(()), |message| Err(EvalError(message)))
    }

    /// Calls `visit` on this expression and every expression inside it, outermost first.
    pub fn visit_mut(&mut self, visit: &mut dyn FnMut(&mut Expr)) {
        visit(self);
        match self {
            Expr::Column(_) | Expr::Literal(_) => {}
            Expr::Unary { expr, .. } | Expr::Cast { expr, .. } => expr.visit_mut(visit),
            Expr::Binary { left, right, .. } => {
                left.visit_mut(visit);
                right.visit_mut(visit);
            }
            Expr::Like { expr, pattern, .. } => {
                expr.visit_mut(visit);
                pattern.visit_mut(visit);
            }
            Expr::Case { operand, when_then, otherwise } => {
                if let Some(operand) = operand {
                    operand.visit_mut(visit);
                }
                for (when, then) in when_then {
                    when.visit_mut(visit);
                    then.visit_mut(visit);
                }
                if let Some(otherwise) = otherwise {
                    otherwise.visit_mut(visit);
                }
            }
            Expr::InList { expr, list, .. } => {
                expr.visit_mut(visit);
                for item in list {
                    item.visit_mut(visit);
                }
            }
            Expr::Call { args, .. } | Expr::Udf { args, .. } => {
                for arg in args {
                    arg.visit_mut(visit);
                }
            }
        }
    }

    /// Evaluates a predicate: true only when the expression is TRUE (NULL counts as false).
    pub fn eval_predicate(&self, row: &[Value]) -> Result<bool, EvalError> {
        Ok(self.eval(row)? == Value::Bool(true))
    }

    /// The expression with every column index `i` replaced by `map(i)`.
    pub fn remap_columns(&self, map: &dyn Fn(usize) -> usize) -> Expr {
        let mut expr = self.clone();
        expr.visit_mut(&mut |expr| {
            if let Expr::Column(index) = expr {
                *index = map(*index);
            }
        });
        expr
    }

    /// Whether `test` holds for this expression or any expression inside it.
    pub fn any(&self, test: &dyn Fn(&Expr) -> bool) -> bool {
        if test(self) {
            return true;
        }
        match self {
            Expr::Column(_) | Expr::Literal(_) => false,
            Expr::Unary { expr, .. } | Expr::Cast { expr, .. } => expr.any(test),
            Expr::Binary { left, right, .. } => left.any(test) || right.any(test),
            Expr::Like { expr, pattern, .. } => expr.any(test) || pattern.any(test),
            Expr::Case { operand, when_then, otherwise } => {
                operand.as_ref().is_some_and(|operand| operand.any(test))
                    || when_then.iter().any(|(when, then)| when.any(test) || then.any(test))
                    || otherwise.as_ref().is_some_and(|otherwise| otherwise.any(test))
            }
            Expr::InList { expr, list, .. } => expr.any(test) || list.iter().any(|item| item.any(test)),
            Expr::Call { args, .. } | Expr::Udf { args, .. } => args.iter().any(|arg| arg.any(test)),
        }
    }
}

/// The function a call is bound to, or the error of calling an unbound one.
fn bound(id: FunctionId, function: &Option<BoundFunction>) -> Result<&dyn Callable, EvalError> {
    match function {
        Some(BoundFunction(callable)) => Ok(callable.as_ref()),
        None => Err(EvalError(format!("function {id} is not bound to a registry"))),
    }
}

fn eval_unary(op: UnaryOp, value: Value) -> EvalResult {
    Ok(match (op, value) {
        (UnaryOp::IsNull, value) => Value::Bool(value.is_null()),
        (UnaryOp::IsNotNull, value) => Value::Bool(!value.is_null()),
        (UnaryOp::IsTrue, value) => Value::Bool(value == Value::Bool(true)),
        (UnaryOp::IsFalse, value) => Value::Bool(value == Value::Bool(false)),
        (UnaryOp::IsNotTrue, value) => Value::Bool(value != Value::Bool(true)),
        (UnaryOp::IsNotFalse, value) => Value::Bool(value != Value::Bool(false)),
        (_, Value::Null) => Value::Null,
        (UnaryOp::Not, Value::Bool(b)) => Value::Bool(!b),
        (UnaryOp::Negate, Value::Int(i)) => match i.checked_neg() {
            Some(negated) => Value::Int(negated),
            None => return err("BIGINT overflow in negation"),
        },
        (UnaryOp::Negate, Value::Float(f)) => Value::float(-f),
        (op, value) => return err(format!("cannot apply {op:?} to {value}")),
    })
}

fn eval_binary(op: BinaryOp, left: Value, right: Value) -> EvalResult {
    use BinaryOp::*;
    match op {
        IsDistinctFrom => return Ok(Value::Bool(left != right)),
        IsNotDistinctFrom => return Ok(Value::Bool(left == right)),
        _ => {}
    }
    if left.is_null() || right.is_null() {
        return Ok(Value::Null);
    }
    match op {
        Eq | NotEq | Lt | LtEq | Gt | GtEq => {
            let ordering = left.sql_cmp(&right).expect("non-null");
            Ok(Value::Bool(match op {
                Eq => ordering == Ordering::Equal,
                NotEq => ordering != Ordering::Equal,
                Lt => ordering == Ordering::Less,
                LtEq => ordering != Ordering::Greater,
                Gt => ordering == Ordering::Greater,
                _ => ordering != Ordering::Less,
            }))
        }
        Concat => Ok(Value::Text(format!("{}{}", text_of(&left), text_of(&right)).into())),
        Add | Subtract | Multiply | Divide | Modulo => arithmetic(op, left, right),
        And | Or | IsDistinctFrom | IsNotDistinctFrom => unreachable!("handled above"),
    }
}

fn arithmetic(op: BinaryOp, left: Value, right: Value) -> EvalResult {
    use BinaryOp::*;
    match (left, right) {
        (Value::Int(a), Value::Int(b)) => {
            let result = match op {
                Add => a.checked_add(b),
                Subtract => a.checked_sub(b),
                Multiply => a.checked_mul(b),
                Divide | Modulo if b == 0 => return err("Divide by zero error"),
                Divide => a.checked_div(b),
                _ => a.checked_rem(b),
            };
            match result {
                Some(value) => Ok(Value::Int(value)),
                None => err(format!("BIGINT overflow in {a} {op:?} {b}")),
            }
        }
        (Value::Timestamp(a), Value::Int(b)) if matches!(op, Add | Subtract) => {
            Ok(Value::Timestamp(if op == Add { a.wrapping_add(b) } else { a.wrapping_sub(b) }))
        }
        (left, right) => {
            let (a, b) = match (as_f64(&left), as_f64(&right)) {
                (Some(a), Some(b)) => (a, b),
                _ => return err(format!("cannot apply {op:?} to {left} and {right}")),
            };
            Ok(Value::float(match op {
                Add => a + b,
                Subtract => a - b,
                Multiply => a * b,
                Divide => a / b,
                _ => a % b,
            }))
        }
    }
}

fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// The text form of a value, as `CAST(v AS TEXT)` gives it.
pub fn text_of(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format_double(*f),
        Value::Text(s) => s.to_string(),
        Value::Bytes(b) => b.iter().map(|byte| format!("{byte:02x}")).collect(),
        Value::Timestamp(nanos) => format_timestamp(*nanos),
    }
}

/// Formats a double the way Arrow prints it (`1.0`, `0.5`, `1e20`).
pub fn format_double(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else if value == value.trunc() && value.abs() < 1e16 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

/// Formats nanoseconds since the epoch as `YYYY-MM-DDTHH:MM:SS[.fraction]`.
pub fn format_timestamp(nanos: i64) -> String {
    let seconds = nanos.div_euclid(1_000_000_000);
    let fraction = nanos.rem_euclid(1_000_000_000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    );
    if fraction != 0 {
        let digits = format!("{fraction:09}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text
}

/// Parses `YYYY-MM-DD[ T]HH:MM:SS[.fraction]` (or a bare date) into nanoseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim().trim_end_matches('Z');
    let (date, time) = match text.find(['T', ' ']) {
        Some(at) => (&text[..at], &text[at + 1..]),
        None => (text, "00:00:00"),
    };
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, fraction),
        None => (time, ""),
    };
    let mut clock_parts = clock.splitn(3, ':');
    let hour: i64 = clock_parts.next()?.parse().ok()?;
    let minute: i64 = clock_parts.next()?.parse().ok()?;
    let second: i64 = clock_parts.next().unwrap_or("0").parse().ok()?;
    let mut nanos: i64 = 0;
    if !fraction.is_empty() {
        if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        nanos = format!("{fraction:0<9}").parse().ok()?;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second) * 1_000_000_000) + nanos)
}

// Howard Hinnant's civil-date algorithms.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = month as i64;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day as i64 - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Converts a value to `to`, as SQL `CAST` does.
pub fn cast(value: Value, to: ColumnType) -> EvalResult {
    if value.column_type() == Some(to) || value.is_null() {
        return Ok(value);
    }
    let failed = |value: &Value| err(format!("cannot cast {value} to {to}"));
    Ok(match (to, &value) {
        (ColumnType::Text, value) => Value::Text(text_of(value).into()),
        (ColumnType::BigInt, Value::Float(f))
            if f.is_finite() && f.trunc() >= i64::MIN as f64 && f.trunc() <= i64::MAX as f64 =>
        {
            Value::Int(f.trunc() as i64)
        }
        (ColumnType::BigInt, Value::Bool(b)) => Value::Int(i64::from(*b)),
        (ColumnType::BigInt, Value::Text(s)) => match s.trim().parse() {
            Ok(i) => Value::Int(i),
            Err(_) => return failed(&value),
        },
        (ColumnType::BigInt, Value::Timestamp(nanos)) => Value::Int(*nanos),
        (ColumnType::Double, Value::Int(i)) => Value::float(*i as f64),
        (ColumnType::Double, Value::Bool(b)) => Value::float(f64::from(u8::from(*b))),
        (ColumnType::Double, Value::Text(s)) => match s.trim().parse::<f64>() {
            Ok(f) => Value::float(f),
            Err(_) => return failed(&value),
        },
        (ColumnType::Boolean, Value::Int(i)) => Value::Bool(*i != 0),
        (ColumnType::Boolean, Value::Float(f)) => Value::Bool(*f != 0.0),
        (ColumnType::Boolean, Value::Text(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "on" | "1" => Value::Bool(true),
            "false" | "f" | "no" | "n" | "off" | "0" => Value::Bool(false),
            _ => return failed(&value),
        },
        (ColumnType::Bytea, Value::Text(s)) => Value::Bytes(s.as_bytes().to_vec()),
        (ColumnType::Timestamp, Value::Text(s)) => match parse_timestamp(s) {
            Some(nanos) => Value::Timestamp(nanos),
            None => return failed(&value),
        },
        (ColumnType::Timestamp, Value::Int(i)) => Value::Timestamp(*i),
        _ => return failed(&value),
    })
}

/// SQL `LIKE` matching with `%` and `_` (and `\` escaping the next character).
fn like(text: &str, pattern: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    fn matches(text: &[char], pattern: &[char]) -> bool {
        match pattern.first() {
            None => text.is_empty(),
            Some('%') => (0..=text.len()).any(|skip| matches(&text[skip..], &pattern[1..])),
            Some('_') => !text.is_empty() && matches(&text[1..], &pattern[1..]),
            Some('\\') if pattern.len() > 1 => text.first() == Some(&pattern[1]) && matches(&text[1..], &pattern[2..]),
            Some(c) => text.first() == Some(c) && matches(&text[1..], &pattern[1..]),
        }
    }
    matches(&text, &pattern)
}

fn call(function: Function, args: Vec<Value>) -> EvalResult {
    use Function::*;
    match function {
        NullIf => {
            return Ok(if args[0].sql_cmp(&args[1]) == Some(Ordering::Equal) { Value::Null } else { args[0].clone() });
        }
        Concat => {
            return Ok(Value::Text(args.iter().map(text_of).collect()));
        }
        Greatest | Least => {
            let mut best: Option<Value> = None;
            for value in args.into_iter().filter(|value| !value.is_null()) {
                let better = match &best {
                    None => true,
                    Some(current) => {
                        let ordering = value.sql_cmp(current).unwrap_or(Ordering::Equal);
                        if function == Greatest {
                            ordering == Ordering::Greater
                        } else {
                            ordering == Ordering::Less
                        }
                    }
                };
                if better {
                    best = Some(value);
                }
            }
            return Ok(best.unwrap_or(Value::Null));
        }
        _ => {}
    }
    if args.iter().any(Value::is_null) {
        return Ok(Value::Null);
    }
    let text = |index: usize| match &args[index] {
        Value::Text(s) => Ok(s.as_str()),
        other => err(format!("{function:?} needs TEXT, got {other}")),
    };
    let int = |index: usize| match &args[index] {
        Value::Int(i) => Ok(*i),
        Value::Float(f) => Ok(*f as i64),
        other => err(format!("{function:?} needs BIGINT, got {other}")),
    };
    let float = |index: usize| match &args[index] {
        Value::Int(i) => Ok(*i as f64),
        Value::Float(f) => Ok(*f),
        other => err(format!("{function:?} needs a number, got {other}")),
    };
    Ok(match function {
        Lower => Value::Text(text(0)?.to_lowercase().into()),
        Upper => Value::Text(text(0)?.to_uppercase().into()),
        CharacterLength => Value::Int(text(0)?.chars().count() as i64),
        OctetLength => match &args[0] {
            Value::Bytes(b) => Value::Int(b.len() as i64),
            _ => Value::Int(text(0)?.len() as i64),
        },
        Substr => {
            let chars: Vec<char> = text(0)?.chars().collect();
            let start = int(1)?;
            let end = if args.len() > 2 {
                let count = int(2)?;
                if count < 0 {
                    return err("negative substring length not allowed");
                }
                start.saturating_add(count)
            } else {
                i64::MAX
            };
            let from = start.max(1) as usize - 1;
            let to = (end.max(1) as usize - 1).min(chars.len());
            Value::Text(if from < to { chars[from..to].iter().collect::<String>().into() } else { SmolStr::default() })
        }
        Trim | Ltrim | Rtrim => {
            let source = text(0)?;
            let set: Vec<char> = if args.len() > 1 { text(1)?.chars().collect() } else { vec![' '] };
            let is_trimmed = |c: char| set.contains(&c);
            Value::Text(
                match function {
                    Trim => source.trim_matches(is_trimmed),
                    Ltrim => source.trim_start_matches(is_trimmed),
                    _ => source.trim_end_matches(is_trimmed),
                }
                .into(),
            )
        }
        Replace => Value::Text(text(0)?.replace(text(1)?, text(2)?).into()),
        Left | Right => {
            let chars: Vec<char> = text(0)?.chars().collect();
            let n = int(1)?;
            let len = chars.len() as i64;
            let keep = if n >= 0 { n.min(len) } else { (len + n).max(0) } as usize;
            Value::Text(if function == Left {
                chars[..keep].iter().collect::<String>().into()
            } else {
                chars[chars.len() - keep..].iter().collect::<String>().into()
            })
        }
        StartsWith => Value::Bool(text(0)?.starts_with(text(1)?)),
        Strpos => {
            let haystack = text(0)?;
            Value::Int(match haystack.find(text(1)?) {
                Some(at) => haystack[..at].chars().count() as i64 + 1,
                None => 0,
            })
        }
        Abs => match &args[0] {
            Value::Int(i) => Value::Int(i.checked_abs().ok_or_else(|| EvalError("BIGINT overflow in abs".into()))?),
            _ => Value::float(float(0)?.abs()),
        },
        Round => {
            let digits = if args.len() > 1 { int(1)? } else { 0 };
            let scale = 10f64.powi(digits as i32);
            Value::float((float(0)? * scale).round() / scale)
        }
        Ceil => Value::float(float(0)?.ceil()),
        Floor => Value::float(float(0)?.floor()),
        Trunc => Value::float(float(0)?.trunc()),
        Sqrt => Value::float(float(0)?.sqrt()),
        Power => match (&args[0], &args[1]) {
            (Value::Int(base), Value::Int(exponent)) if *exponent >= 0 => {
                match u32::try_from(*exponent).ok().and_then(|e| base.checked_pow(e)) {
                    Some(value) => Value::Int(value),
                    None => return err("BIGINT overflow in power"),
                }
            }
            _ => Value::float(float(0)?.powf(float(1)?)),
        },
        Ln => Value::float(float(0)?.ln()),
        Exp => Value::float(float(0)?.exp()),
        Signum => Value::float(if float(0)? == 0.0 { 0.0 } else { float(0)?.signum() }),
        Coalesce | NullIf | Concat | Greatest | Least => unreachable!("handled above"),
    })
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column(index) => write!(f, "#{index}"),
            Expr::Literal(value) => write!(f, "{value}"),
            Expr::Unary { op, expr } => write!(f, "{op:?}({expr})"),
            Expr::Binary { op, left, right } => {
                let symbol = match op {
                    BinaryOp::Add => "+",
                    BinaryOp::Subtract => "-",
                    BinaryOp::Multiply => "*",
                    BinaryOp::Divide => "/",
                    BinaryOp::Modulo => "%",
                    BinaryOp::Eq => "=",
                    BinaryOp::NotEq => "<>",
                    BinaryOp::Lt => "<",
                    BinaryOp::LtEq => "<=",
                    BinaryOp::Gt => ">",
                    BinaryOp::GtEq => ">=",
                    BinaryOp::And => "AND",
                    BinaryOp::Or => "OR",
                    BinaryOp::IsDistinctFrom => "IS DISTINCT FROM",
                    BinaryOp::IsNotDistinctFrom => "IS NOT DISTINCT FROM",
                    BinaryOp::Concat => "||",
                };
                write!(f, "({left} {symbol} {right})")
            }
            Expr::Case { operand, when_then, otherwise } => {
                f.write_str("CASE")?;
                if let Some(operand) = operand {
                    write!(f, " {operand}")?;
                }
                for (when, then) in when_then {
                    write!(f, " WHEN {when} THEN {then}")?;
                }
                if let Some(otherwise) = otherwise {
                    write!(f, " ELSE {otherwise}")?;
                }
                f.write_str(" END")
            }
            Expr::Cast { expr, to, r#try } => {
                write!(f, "{}({expr} AS {to})", if *r#try { "TRY_CAST" } else { "CAST" })
            }
            Expr::Like { expr, pattern, negated, case_insensitive } => write!(
                f,
                "({expr} {}{} {pattern})",
                if *negated { "NOT " } else { "" },
                if *case_insensitive { "ILIKE" } else { "LIKE" }
            ),
            Expr::InList { expr, list, negated } => {
                let items: Vec<String> = list.iter().map(|item| item.to_string()).collect();
                write!(f, "({expr} {}IN ({}))", if *negated { "NOT " } else { "" }, items.join(", "))
            }
            Expr::Call { function, args } => {
                let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
                write!(f, "{}({})", format!("{function:?}").to_lowercase(), args.join(", "))
            }
            Expr::Udf { name, args, .. } => {
                let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
                write!(f, "{name}({})", args.join(", "))
            }
        }
    }
}

/// Evaluates each expression on `row`, building a new row.
pub fn eval_all(exprs: &[Expr], row: &[Value]) -> Result<Row, EvalError> {
    exprs.iter().map(|expr| expr.eval(row)).collect()
}

/// Evaluates each expression on every row of `chunk` (see [`Expr::eval_chunk`]), adding the
/// rows of values to `output` (cleared first). Tells `outcome` about each row in order: `None`
/// when its row was added, or the error of its first expression that failed (as [`eval_all`]
/// would).
pub fn eval_chunk_all(
    exprs: &[Expr],
    chunk: &RowChunk,
    output: &mut RowChunk,
    mut outcome: impl FnMut(usize, Option<EvalError>),
) {
    output.clear();
    let mut columns: Vec<_> = exprs
        .iter()
        .map(|expr| {
            let mut column = Vec::with_capacity(chunk.rows());
            expr.eval_chunk(chunk, &mut column);
            column.into_iter()
        })
        .collect();
    for row in 0..chunk.rows() {
        let start = output.values.len();
        let mut failed = None;
        for column in &mut columns {
            match (column.next().expect("one result per row"), &failed) {
                (Ok(value), None) => output.values.push(value),
                (Err(error), None) => failed = Some(error),
                (_, Some(_)) => {}
            }
        }
        match failed {
            Some(_) => output.values.truncate(start),
            None => output.end_row(),
        }
        outcome(row, failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(op: BinaryOp, left: Value, right: Value) -> EvalResult {
        Expr::Binary { op, left: Box::new(Expr::Literal(left)), right: Box::new(Expr::Literal(right)) }.eval(&[])
    }

    #[test]
    fn three_valued_logic() {
        assert_eq!(binary(BinaryOp::And, Value::Null, Value::Bool(false)), Ok(Value::Bool(false)));
        assert_eq!(binary(BinaryOp::Or, Value::Null, Value::Bool(true)), Ok(Value::Bool(true)));
        assert_eq!(binary(BinaryOp::Or, Value::Null, Value::Bool(false)), Ok(Value::Null));
        assert_eq!(binary(BinaryOp::Eq, Value::Null, Value::Null), Ok(Value::Null));
        assert_eq!(binary(BinaryOp::IsNotDistinctFrom, Value::Null, Value::Null), Ok(Value::Bool(true)));
    }

    /// Doubles its argument, counting the batches it is called with and the rows in them.
    #[derive(Debug, Default)]
    struct Doubling {
        batches: std::sync::Mutex<Vec<usize>>,
    }

    impl crate::functions::Callable for Doubling {
        fn call(&self, args: &[Value]) -> EvalResult {
            self.batches.lock().unwrap().push(1);
            eval_binary(BinaryOp::Multiply, args[0].clone(), Value::Int(2))
        }

        fn call_batch(&self, rows: usize, args: &[Value], results: &mut Vec<EvalResult>) {
            self.batches.lock().unwrap().push(rows);
            results.extend(args.iter().map(|arg| eval_binary(BinaryOp::Multiply, arg.clone(), Value::Int(2))));
        }
    }

    #[test]
    fn a_function_is_called_once_per_chunk_on_the_rows_whose_arguments_evaluated() {
        let doubling = std::sync::Arc::new(Doubling::default());
        let registry = FunctionRegistry::default();
        let id = registry.register(doubling.clone());
        let column = |index| Box::new(Expr::Column(index));
        // double(a / b) + 1 per row, and a projection of it beside b.
        let quotient = Expr::Binary { op: BinaryOp::Divide, left: column(0), right: column(1) };
        let unbound = Expr::Udf { id, name: "double".into(), args: vec![quotient], function: None };
        let mut doubled = unbound.clone();
        doubled.bind_functions(&registry).unwrap();
        let plus_one = Expr::Binary {
            op: BinaryOp::Add,
            left: Box::new(doubled.clone()),
            right: Box::new(Expr::Literal(Value::Int(1))),
        };
        let mut chunk = RowChunk::default();
        for (a, b) in [(10, 2), (1, 0), (9, 3), (i64::MAX, 1)] {
            chunk.values.extend([Value::Int(a), Value::Int(b)]);
            chunk.end_row();
        }
        let mut results = Vec::new();
        doubled.eval_chunk(&chunk, &mut results);
        assert_eq!(results[0], Ok(Value::Int(10)));
        assert!(results[1].as_ref().unwrap_err().0.contains("zero"), "{:?}", results[1]);
        assert_eq!(results[2], Ok(Value::Int(6)));
        assert!(results[3].as_ref().unwrap_err().0.contains("overflow"), "{:?}", results[3]);
        // The row whose argument failed was not called; the other three were, in one batch.
        assert_eq!(*doubling.batches.lock().unwrap(), vec![3]);
        for (row, result) in results.iter().enumerate() {
            assert_eq!(*result, doubled.eval(chunk.row(row)), "row {row}");
        }

        // Inside another expression the function is called row by row, with the same results.
        doubling.batches.lock().unwrap().clear();
        let mut projected = RowChunk::default();
        let mut outcomes = Vec::new();
        eval_chunk_all(&[Expr::Column(1), plus_one.clone()], &chunk, &mut projected, |row, error| {
            outcomes.push((row, error.is_some()))
        });
        assert_eq!(outcomes, vec![(0, false), (1, true), (2, false), (3, true)]);
        assert_eq!(projected.rows(), 2);
        assert_eq!(projected.row(0), &[Value::Int(2), Value::Int(11)]);
        assert_eq!(projected.row(1), &[Value::Int(3), Value::Int(7)]);
        assert_eq!(*doubling.batches.lock().unwrap(), vec![1, 1, 1]);
        // Unbound, the call is an error on every row; bound to a registry without it, binding is.
        let mut results = Vec::new();
        unbound.eval_chunk(&chunk, &mut results);
        assert!(results.iter().all(|result| result.as_ref().unwrap_err().0.contains("not bound")), "{results:?}");
        registry.unregister(id);
        let error = unbound.clone().bind_functions(&registry).unwrap_err();
        assert!(error.0.contains("double") && error.0.contains("not defined"), "{error:?}");
    }

    #[test]
    fn arithmetic_faults_are_errors() {
        assert!(binary(BinaryOp::Divide, Value::Int(1), Value::Int(0)).is_err());
        assert!(binary(BinaryOp::Add, Value::Int(i64::MAX), Value::Int(1)).is_err());
        assert_eq!(binary(BinaryOp::Divide, Value::Int(7), Value::Int(2)), Ok(Value::Int(3)));
    }

    #[test]
    fn like_and_timestamps() {
        assert!(like("hello", "h%o"));
        assert!(like("hello", "_ello"));
        assert!(!like("hello", "h_o"));
        let nanos = parse_timestamp("2024-02-29 13:45:01.5").unwrap();
        assert_eq!(format_timestamp(nanos), "2024-02-29T13:45:01.5");
        assert_eq!(parse_timestamp("1970-01-01"), Some(0));
    }
}
