//! weft's dataflow plan: the small, serializable seam between the SQL front end and the engine.
//!
//! `weft-sql` lowers a DataFusion `LogicalPlan` into a [`Plan`]; the engine renders a plan as
//! timely / differential-dataflow operators and never sees a DataFusion type. Every node works on
//! rows addressed by column position; `EXPLAIN` prints this tree.

use crate::error::EvalError;
use crate::expr::Expr;
use crate::functions::FunctionRegistry;
use crate::value::{ColumnType, Row};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies a table or view inside the engine.
pub type RelationId = u64;

/// A relational operator tree, maintained incrementally once rendered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Plan {
    /// The current contents of a table or view, whose columns have these types.
    Get {
        /// The relation's id.
        id: RelationId,
        /// Its name (for EXPLAIN).
        name: String,
        /// Its columns' types.
        column_types: Vec<ColumnType>,
    },
    /// A fixed multiset of rows.
    Constant {
        /// The rows.
        rows: Vec<Row>,
        /// Their number of columns.
        arity: usize,
    },
    /// One output column per expression.
    Project {
        /// The input.
        input: Box<Plan>,
        /// The output columns, over the input's.
        exprs: Vec<Expr>,
    },
    /// Rows for which the predicate is TRUE.
    Filter {
        /// The input.
        input: Box<Plan>,
        /// The condition, over the input's columns.
        predicate: Expr,
    },
    /// An equi-join on `left_keys[i] = right_keys[i]` with an optional residual predicate over
    /// the concatenated row (left columns, then right columns).
    Join {
        /// The left input.
        left: Box<Plan>,
        /// The right input.
        right: Box<Plan>,
        /// Inner, outer, semi or anti.
        kind: JoinKind,
        /// The keys, over the left input's columns.
        left_keys: Vec<Expr>,
        /// The keys, over the right input's columns.
        right_keys: Vec<Expr>,
        /// Whether NULL keys match each other (set operations), rather than never matching.
        nulls_equal: bool,
        /// A further condition on matched pairs.
        residual: Option<Expr>,
    },
    /// GROUP BY `group` computing `aggregates`; output is the group columns then the aggregates.
    Reduce {
        /// The input.
        input: Box<Plan>,
        /// The grouping expressions.
        group: Vec<Expr>,
        /// The aggregates per group.
        aggregates: Vec<Aggregate>,
    },
    /// One copy of each distinct row.
    Distinct {
        /// The input.
        input: Box<Plan>,
    },
    /// Multiset union (`UNION ALL`).
    Union {
        /// The inputs, all of one arity.
        inputs: Vec<Plan>,
    },
    /// `ORDER BY order LIMIT limit OFFSET offset`, maintained incrementally.
    TopK {
        /// The input.
        input: Box<Plan>,
        /// The ordering.
        order: Vec<SortKey>,
        /// The most rows kept.
        limit: Option<usize>,
        /// Rows skipped first.
        offset: usize,
    },
}

/// Join kinds. Semi and anti joins output only the left columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinKind {
    /// Matched pairs.
    Inner,
    /// Matched pairs, and unmatched left rows with NULLs.
    Left,
    /// Matched pairs, and unmatched right rows with NULLs.
    Right,
    /// Matched pairs, and unmatched rows of either side with NULLs.
    Full,
    /// Left rows with a match.
    LeftSemi,
    /// Left rows without a match.
    LeftAnti,
}

/// One aggregate of a [`Plan::Reduce`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// The function.
    pub function: AggregateFunction,
    /// The argument; `None` for `COUNT(*)`.
    pub arg: Option<Expr>,
    /// `COUNT(DISTINCT x)` and friends.
    pub distinct: bool,
    /// Whether a SUM's input (and so its result) is a DOUBLE rather than a BIGINT.
    pub float: bool,
}

/// Aggregate functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggregateFunction {
    /// `COUNT`.
    Count,
    /// `SUM`.
    Sum,
    /// `MIN`.
    Min,
    /// `MAX`.
    Max,
    /// `AVG`.
    Avg,
}

impl Aggregate {
    /// Whether the aggregate can be maintained by adding and subtracting differences (no
    /// per-group re-scan): COUNT, SUM and AVG without DISTINCT.
    pub fn is_accumulable(&self) -> bool {
        !self.distinct
            && matches!(self.function, AggregateFunction::Count | AggregateFunction::Sum | AggregateFunction::Avg)
    }
}

/// One ORDER BY key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SortKey {
    /// The value sorted by.
    pub expr: Expr,
    /// `DESC`.
    pub descending: bool,
    /// `NULLS FIRST`.
    pub nulls_first: bool,
}

impl Plan {
    /// The number of columns the plan produces.
    pub fn arity(&self) -> usize {
        match self {
            Plan::Get { column_types, .. } => column_types.len(),
            Plan::Constant { arity, .. } => *arity,
            Plan::Project { exprs, .. } => exprs.len(),
            Plan::Filter { input, .. } | Plan::Distinct { input } | Plan::TopK { input, .. } => input.arity(),
            Plan::Join { left, right, kind, .. } => match kind {
                JoinKind::LeftSemi | JoinKind::LeftAnti => left.arity(),
                _ => left.arity() + right.arity(),
            },
            Plan::Reduce { group, aggregates, .. } => group.len() + aggregates.len(),
            Plan::Union { inputs } => inputs.first().map_or(0, Plan::arity),
        }
    }

    /// The ids of every table or view the plan reads.
    pub fn dependencies(&self) -> Vec<RelationId> {
        let mut ids = Vec::new();
        self.collect_dependencies(&mut ids);
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Whether `test` holds for any expression anywhere in the plan.
    pub fn any_expr(&self, test: &dyn Fn(&Expr) -> bool) -> bool {
        let here = |exprs: &[Expr]| exprs.iter().any(|expr| expr.any(test));
        match self {
            Plan::Get { .. } | Plan::Constant { .. } => false,
            Plan::Project { input, exprs } => here(exprs) || input.any_expr(test),
            Plan::Filter { input, predicate } => predicate.any(test) || input.any_expr(test),
            Plan::Join { left, right, left_keys, right_keys, residual, .. } => {
                here(left_keys)
                    || here(right_keys)
                    || residual.as_ref().is_some_and(|residual| residual.any(test))
                    || left.any_expr(test)
                    || right.any_expr(test)
            }
            Plan::Reduce { input, group, aggregates } => {
                here(group)
                    || aggregates.iter().any(|aggregate| aggregate.arg.as_ref().is_some_and(|arg| arg.any(test)))
                    || input.any_expr(test)
            }
            Plan::Distinct { input } => input.any_expr(test),
            Plan::Union { inputs } => inputs.iter().any(|input| input.any_expr(test)),
            Plan::TopK { input, order, .. } => order.iter().any(|key| key.expr.any(test)) || input.any_expr(test),
        }
    }

    /// Calls `visit` on every expression of the plan (each outermost expression; see
    /// [`Expr::visit_mut`] for the ones inside it).
    pub fn exprs_mut(&mut self, visit: &mut dyn FnMut(&mut Expr)) {
        match self {
            Plan::Get { .. } | Plan::Constant { .. } => {}
            Plan::Project { input, exprs } => {
                exprs.iter_mut().for_each(&mut *visit);
                input.exprs_mut(visit);
            }
            Plan::Filter { input, predicate } => {
                visit(predicate);
                input.exprs_mut(visit);
            }
            Plan::Join { left, right, left_keys, right_keys, residual, .. } => {
                left_keys.iter_mut().chain(right_keys.iter_mut()).chain(residual.iter_mut()).for_each(&mut *visit);
                left.exprs_mut(visit);
                right.exprs_mut(visit);
            }
            Plan::Reduce { input, group, aggregates } => {
                group
                    .iter_mut()
                    .chain(aggregates.iter_mut().filter_map(|aggregate| aggregate.arg.as_mut()))
                    .for_each(&mut *visit);
                input.exprs_mut(visit);
            }
            Plan::Distinct { input } => input.exprs_mut(visit),
            Plan::Union { inputs } => inputs.iter_mut().for_each(|input| input.exprs_mut(visit)),
            Plan::TopK { input, order, .. } => {
                order.iter_mut().for_each(|key| visit(&mut key.expr));
                input.exprs_mut(visit);
            }
        }
    }

    /// Binds every call of a user-defined function in the plan to the function `registry` has
    /// under its id (see [`Expr::bind_functions`]); an error names one the registry lacks.
    pub fn bind_functions(&mut self, registry: &FunctionRegistry) -> Result<(), EvalError> {
        let mut result = Ok(());
        self.exprs_mut(&mut |expr| {
            if let Err(error) = expr.bind_functions(registry) {
                result = Err(error);
            }
        });
        result
    }

    fn collect_dependencies(&self, ids: &mut Vec<RelationId>) {
        match self {
            Plan::Get { id, .. } => ids.push(*id),
            Plan::Constant { .. } => {}
            Plan::Project { input, .. }
            | Plan::Filter { input, .. }
            | Plan::Distinct { input }
            | Plan::TopK { input, .. }
            | Plan::Reduce { input, .. } => input.collect_dependencies(ids),
            Plan::Join { left, right, .. } => {
                left.collect_dependencies(ids);
                right.collect_dependencies(ids);
            }
            Plan::Union { inputs } => inputs.iter().for_each(|input| input.collect_dependencies(ids)),
        }
    }

    fn fmt_indented(&self, f: &mut fmt::Formatter<'_>, depth: usize) -> fmt::Result {
        let pad = "  ".repeat(depth);
        let list = |exprs: &[Expr]| exprs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ");
        match self {
            Plan::Get { name, id, .. } => return writeln!(f, "{pad}Get {name} (id {id})"),
            Plan::Constant { rows, .. } => return writeln!(f, "{pad}Constant ({} rows)", rows.len()),
            Plan::Project { exprs, .. } => writeln!(f, "{pad}Project [{}]", list(exprs))?,
            Plan::Filter { predicate, .. } => writeln!(f, "{pad}Filter {predicate}")?,
            Plan::Join { kind, left_keys, right_keys, residual, nulls_equal, .. } => {
                write!(f, "{pad}Join {kind:?} on [{}] = [{}]", list(left_keys), list(right_keys))?;
                if *nulls_equal {
                    write!(f, " (nulls equal)")?;
                }
                match residual {
                    Some(residual) => writeln!(f, " residual {residual}")?,
                    None => writeln!(f)?,
                }
            }
            Plan::Reduce { group, aggregates, .. } => {
                let aggregates: Vec<String> = aggregates
                    .iter()
                    .map(|aggregate| {
                        format!(
                            "{:?}({}{})",
                            aggregate.function,
                            if aggregate.distinct { "DISTINCT " } else { "" },
                            aggregate.arg.as_ref().map_or("*".to_string(), |arg| arg.to_string())
                        )
                    })
                    .collect();
                let path = if aggregates.is_empty() || self.accumulable() { "accumulable" } else { "rescan" };
                writeln!(f, "{pad}Reduce group [{}] aggregates [{}] ({path})", list(group), aggregates.join(", "))?
            }
            Plan::Distinct { .. } => writeln!(f, "{pad}Distinct")?,
            Plan::Union { .. } => writeln!(f, "{pad}Union")?,
            Plan::TopK { order, limit, offset, .. } => {
                let keys: Vec<String> = order
                    .iter()
                    .map(|key| format!("{}{}", key.expr, if key.descending { " DESC" } else { "" }))
                    .collect();
                writeln!(f, "{pad}TopK order [{}] limit {limit:?} offset {offset}", keys.join(", "))?
            }
        }
        match self {
            Plan::Join { left, right, .. } => {
                left.fmt_indented(f, depth + 1)?;
                right.fmt_indented(f, depth + 1)
            }
            Plan::Union { inputs } => inputs.iter().try_for_each(|input| input.fmt_indented(f, depth + 1)),
            Plan::Project { input, .. }
            | Plan::Filter { input, .. }
            | Plan::Distinct { input }
            | Plan::TopK { input, .. }
            | Plan::Reduce { input, .. } => input.fmt_indented(f, depth + 1),
            Plan::Get { .. } | Plan::Constant { .. } => Ok(()),
        }
    }

    /// For a `Reduce`, whether every aggregate is accumulable.
    pub fn accumulable(&self) -> bool {
        match self {
            Plan::Reduce { aggregates, .. } => aggregates.iter().all(Aggregate::is_accumulable),
            _ => false,
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_indented(f, 0)
    }
}
