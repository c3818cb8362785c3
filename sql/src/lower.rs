//! Lowers DataFusion's optimized `LogicalPlan` into weft's dataflow [`Plan`].
//!
//! DataFusion has already resolved names, coerced types and decorrelated subqueries into joins;
//! lowering maps each node and expression to its incremental counterpart, addressing columns by
//! position. Anything weft cannot maintain incrementally is refused with an error that names the
//! construct, rather than approximated.

use crate::convert::{column_type, scalar_value, ConvertError};
use crate::provider::RelationProvider;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::{DFSchema, JoinType, NullEquality};
use datafusion::logical_expr::expr::{AggregateFunction as DfAggregate, Alias, InList, Like, ScalarFunction};
use datafusion::logical_expr::logical_plan::{Distinct, FetchType, SkipType};
use datafusion::logical_expr::{Between, BinaryExpr, Case, Cast, ExprSchemable, LogicalPlan, Operator, TryCast};
use datafusion::prelude::Expr as DfExpr;
use weft_ir::expr::{BinaryOp, Function, UnaryOp};
use weft_ir::plan::{Aggregate, AggregateFunction, JoinKind, SortKey};
use weft_ir::{ColumnType, Expr, Plan, Value};

/// Why a plan or expression cannot be lowered.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    /// SQL that weft does not maintain incrementally.
    #[error("unsupported in a weft view: {0}")]
    Unsupported(String),
    /// A type or literal weft cannot represent.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// DataFusion failed while resolving a column or type.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

fn unsupported<T>(what: impl Into<String>) -> Result<T, LowerError> {
    Err(LowerError::Unsupported(what.into()))
}

/// Lowers an optimized logical plan.
pub fn lower_plan(plan: &LogicalPlan) -> Result<Plan, LowerError> {
    Ok(match plan {
        LogicalPlan::Projection(projection) => {
            let (input, exprs, schema) = with_scalar_subqueries(&projection.input, &projection.expr)?;
            Plan::Project {
                input: Box::new(input),
                exprs: exprs.iter().map(|expr| lower_expr(expr, &schema)).collect::<Result<_, _>>()?,
            }
        }
        LogicalPlan::Filter(filter) => {
            let arity = filter.input.schema().fields().len();
            let (input, predicates, schema) =
                with_scalar_subqueries(&filter.input, std::slice::from_ref(&filter.predicate))?;
            let joined_arity = input.arity();
            let filtered = Plan::Filter { input: Box::new(input), predicate: lower_expr(&predicates[0], &schema)? };
            if joined_arity == arity {
                filtered
            } else {
                Plan::Project { input: Box::new(filtered), exprs: (0..arity).map(Expr::Column).collect() }
            }
        }
        LogicalPlan::TableScan(scan) => {
            let provider = source_as_provider(&scan.source)?;
            let Some(relation) = provider.downcast_ref::<RelationProvider>() else {
                return unsupported(format!("table {} is not a weft table or view", scan.table_name));
            };
            if relation.id == RelationProvider::SYSTEM {
                return unsupported(format!("system table {} in a view (query it with SELECT)", scan.table_name));
            }
            let source_schema = scan.source.schema();
            let column_types = source_schema
                .fields()
                .iter()
                .map(|field| crate::convert::column_type(field.data_type()))
                .collect::<Result<_, _>>()?;
            let mut lowered = Plan::Get { id: relation.id, name: scan.table_name.to_string(), column_types };
            if !scan.filters.is_empty() {
                let schema = DFSchema::try_from_qualified_schema(scan.table_name.clone(), &source_schema)?;
                for filter in &scan.filters {
                    lowered = Plan::Filter { input: Box::new(lowered), predicate: lower_expr(filter, &schema)? };
                }
            }
            if let Some(projection) = &scan.projection {
                lowered = Plan::Project {
                    input: Box::new(lowered),
                    exprs: projection.iter().map(|index| Expr::Column(*index)).collect(),
                };
            }
            lowered
        }
        LogicalPlan::Aggregate(aggregate) => {
            let schema = aggregate.input.schema();
            let group = aggregate
                .group_expr
                .iter()
                .map(|expr| match expr {
                    DfExpr::GroupingSet(_) => unsupported("GROUPING SETS / ROLLUP / CUBE"),
                    expr => lower_expr(expr, schema),
                })
                .collect::<Result<_, _>>()?;
            let aggregates =
                aggregate.aggr_expr.iter().map(|expr| lower_aggregate(expr, schema)).collect::<Result<_, _>>()?;
            Plan::Reduce { input: Box::new(lower_plan(&aggregate.input)?), group, aggregates }
        }
        LogicalPlan::Sort(sort) => match sort.fetch {
            Some(limit) => top_k(&sort.input, &sort.expr, Some(limit), 0)?,
            // Views are unordered: an ORDER BY without LIMIT does not change their contents.
            None => lower_plan(&sort.input)?,
        },
        LogicalPlan::Limit(limit) => {
            let skip = match limit.get_skip_type()? {
                SkipType::Literal(skip) => skip,
                SkipType::UnsupportedExpr => return unsupported("OFFSET that is not a constant"),
            };
            let fetch = match limit.get_fetch_type()? {
                FetchType::Literal(fetch) => fetch,
                FetchType::UnsupportedExpr => return unsupported("LIMIT that is not a constant"),
            };
            match limit.input.as_ref() {
                LogicalPlan::Sort(sort) => {
                    let fetch = match (fetch, sort.fetch) {
                        (Some(a), Some(b)) => Some(a.min(b.saturating_sub(skip))),
                        (a, b) => a.or(b.map(|b| b.saturating_sub(skip))),
                    };
                    top_k(&sort.input, &sort.expr, fetch, skip)?
                }
                input => top_k(input, &[], fetch, skip)?,
            }
        }
        LogicalPlan::Join(join) => {
            if join.null_aware {
                return unsupported("NOT IN (subquery); write NOT EXISTS instead");
            }
            let left_schema = join.left.schema();
            let right_schema = join.right.schema();
            let combined = left_schema.join(right_schema)?;
            let mut left_keys = Vec::new();
            let mut right_keys = Vec::new();
            for (left, right) in &join.on {
                left_keys.push(lower_expr(left, left_schema)?);
                right_keys.push(lower_expr(right, right_schema)?);
            }
            let residual = join.filter.as_ref().map(|filter| lower_expr(filter, &combined)).transpose()?;
            let nulls_equal = join.null_equality == NullEquality::NullEqualsNull;
            let left = Box::new(lower_plan(&join.left)?);
            let right = Box::new(lower_plan(&join.right)?);
            let kind = match join.join_type {
                JoinType::Inner => JoinKind::Inner,
                JoinType::Left => JoinKind::Left,
                JoinType::Right => JoinKind::Right,
                JoinType::Full => JoinKind::Full,
                JoinType::LeftSemi => JoinKind::LeftSemi,
                JoinType::LeftAnti => JoinKind::LeftAnti,
                JoinType::RightSemi | JoinType::RightAnti => {
                    // Swap the sides: the residual's columns move from (left, right) to (right, left).
                    let left_arity = left.arity();
                    let right_arity = right.arity();
                    let residual = residual.map(|residual| {
                        residual.remap_columns(&|index| {
                            if index < left_arity {
                                index + right_arity
                            } else {
                                index - left_arity
                            }
                        })
                    });
                    let kind =
                        if join.join_type == JoinType::RightSemi { JoinKind::LeftSemi } else { JoinKind::LeftAnti };
                    return Ok(Plan::Join {
                        left: right,
                        right: left,
                        kind,
                        left_keys: right_keys,
                        right_keys: left_keys,
                        nulls_equal,
                        residual,
                    });
                }
                other => return unsupported(format!("{other} join")),
            };
            Plan::Join { left, right, kind, left_keys, right_keys, nulls_equal, residual }
        }
        LogicalPlan::Union(union) => {
            Plan::Union { inputs: union.inputs.iter().map(|input| lower_plan(input)).collect::<Result<_, _>>()? }
        }
        LogicalPlan::Distinct(Distinct::All(input)) => Plan::Distinct { input: Box::new(lower_plan(input)?) },
        LogicalPlan::Distinct(Distinct::On(_)) => return unsupported("DISTINCT ON"),
        LogicalPlan::SubqueryAlias(alias) => lower_plan(&alias.input)?,
        LogicalPlan::EmptyRelation(empty) => Plan::Constant {
            rows: if empty.produce_one_row { vec![Vec::new()] } else { Vec::new() },
            arity: empty.schema.fields().len(),
        },
        LogicalPlan::Values(values) => {
            let empty = DFSchema::empty();
            let mut rows = Vec::with_capacity(values.values.len());
            for row in &values.values {
                let mut lowered = Vec::with_capacity(row.len());
                for expr in row {
                    let value = lower_expr(expr, &empty)?
                        .eval(&[])
                        .map_err(|error| LowerError::Unsupported(format!("VALUES entry: {error}")))?;
                    lowered.push(value);
                }
                rows.push(lowered);
            }
            Plan::Constant { rows, arity: values.schema.fields().len() }
        }
        LogicalPlan::Window(_) => return unsupported("window functions (OVER)"),
        LogicalPlan::RecursiveQuery(_) => return unsupported("WITH RECURSIVE"),
        LogicalPlan::Unnest(_) => return unsupported("UNNEST"),
        other => return unsupported(format!("{} in a query", other.display())),
    })
}

/// Lowers `input` for expressions that may contain uncorrelated scalar subqueries. Each such
/// subquery must be a global aggregate (exactly one row, always): it is cross-joined onto the
/// input and the expressions refer to its column instead. Returns the (possibly joined) input,
/// the rewritten expressions and the schema they refer to.
fn with_scalar_subqueries(input: &LogicalPlan, exprs: &[DfExpr]) -> Result<(Plan, Vec<DfExpr>, DFSchema), LowerError> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::common::Column;
    let mut lowered = lower_plan(input)?;
    let mut schema = input.schema().as_ref().clone();
    let mut subqueries = 0;
    let mut rewritten = Vec::with_capacity(exprs.len());
    for expr in exprs {
        let result = expr.clone().transform_up(|expr| {
            let DfExpr::ScalarSubquery(subquery) = &expr else {
                return Ok(Transformed::no(expr));
            };
            if !subquery.outer_ref_columns.is_empty() {
                return Ok(Transformed::no(expr));
            }
            let alias = format!("__weft_subquery_{subqueries}");
            subqueries += 1;
            let sub_plan = lower_plan(&subquery.subquery)
                .map_err(|error| datafusion::error::DataFusionError::External(Box::new(error)))?;
            if !always_one_row(&sub_plan) {
                return Err(datafusion::error::DataFusionError::External(Box::new(LowerError::Unsupported(
                    "a scalar subquery that is not a single aggregate without GROUP BY".into(),
                ))));
            }
            let sub_schema = subquery.subquery.schema();
            let qualified = DFSchema::try_from_qualified_schema(alias.as_str(), sub_schema.as_arrow())?;
            let field = sub_schema.field(0).name().clone();
            schema = schema.join(&qualified)?;
            lowered = Plan::Join {
                left: Box::new(std::mem::replace(&mut lowered, Plan::Union { inputs: Vec::new() })),
                right: Box::new(sub_plan),
                kind: JoinKind::Inner,
                left_keys: Vec::new(),
                right_keys: Vec::new(),
                nulls_equal: false,
                residual: None,
            };
            Ok(Transformed::yes(DfExpr::Column(Column::new(Some(alias), field))))
        });
        let result = result.map_err(|error| match error {
            datafusion::error::DataFusionError::External(inner) => match inner.downcast::<LowerError>() {
                Ok(lower) => *lower,
                Err(other) => LowerError::DataFusion(datafusion::error::DataFusionError::External(other)),
            },
            other => LowerError::DataFusion(other),
        })?;
        rewritten.push(result.data);
    }
    Ok((lowered, rewritten, schema))
}

/// Whether a plan yields exactly one row whatever its inputs: a global aggregate, projected.
fn always_one_row(plan: &Plan) -> bool {
    match plan {
        Plan::Reduce { group, .. } => group.is_empty(),
        Plan::Project { input, .. } => always_one_row(input),
        _ => false,
    }
}

fn top_k(
    input: &LogicalPlan,
    order: &[datafusion::logical_expr::SortExpr],
    limit: Option<usize>,
    offset: usize,
) -> Result<Plan, LowerError> {
    let schema = input.schema();
    let order = order
        .iter()
        .map(|sort| {
            Ok(SortKey { expr: lower_expr(&sort.expr, schema)?, descending: !sort.asc, nulls_first: sort.nulls_first })
        })
        .collect::<Result<_, LowerError>>()?;
    Ok(Plan::TopK { input: Box::new(lower_plan(input)?), order, limit, offset })
}

fn lower_aggregate(expr: &DfExpr, schema: &DFSchema) -> Result<Aggregate, LowerError> {
    let DfExpr::AggregateFunction(DfAggregate { func, params }) = strip_alias(expr) else {
        return unsupported(format!("aggregate expression {expr}"));
    };
    let function = match func.name() {
        "count" => AggregateFunction::Count,
        "sum" => AggregateFunction::Sum,
        "min" => AggregateFunction::Min,
        "max" => AggregateFunction::Max,
        "avg" | "mean" => AggregateFunction::Avg,
        other => return unsupported(format!("aggregate function {other}")),
    };
    if !params.order_by.is_empty() {
        return unsupported(format!("ORDER BY inside {}", func.name()));
    }
    let arg = match params.args.as_slice() {
        [] => None,
        [arg] => Some(arg),
        _ => return unsupported(format!("{} with {} arguments", func.name(), params.args.len())),
    };
    let float = match arg {
        Some(arg) => column_type(&arg.get_type(schema)?)? == ColumnType::Double,
        None => false,
    };
    let mut arg = arg.map(|arg| lower_expr(arg, schema)).transpose()?;
    if let Some(filter) = &params.filter {
        // FILTER (WHERE p) feeds the aggregate NULL for rows that fail p.
        let then = arg.unwrap_or(Expr::Literal(Value::Int(1)));
        arg = Some(Expr::Case { operand: None, when_then: vec![(lower_expr(filter, schema)?, then)], otherwise: None });
    }
    Ok(Aggregate { function, arg, distinct: params.distinct, float })
}

fn strip_alias(expr: &DfExpr) -> &DfExpr {
    match expr {
        DfExpr::Alias(Alias { expr, .. }) => strip_alias(expr),
        expr => expr,
    }
}

fn boxed(expr: &DfExpr, schema: &DFSchema) -> Result<Box<Expr>, LowerError> {
    Ok(Box::new(lower_expr(expr, schema)?))
}

fn unary(op: UnaryOp, expr: &DfExpr, schema: &DFSchema) -> Result<Expr, LowerError> {
    Ok(Expr::Unary { op, expr: boxed(expr, schema)? })
}

/// Lowers a scalar expression whose columns refer to `schema`.
pub fn lower_expr(expr: &DfExpr, schema: &DFSchema) -> Result<Expr, LowerError> {
    Ok(match expr {
        DfExpr::Alias(Alias { expr, .. }) => lower_expr(expr, schema)?,
        DfExpr::Column(column) => Expr::Column(schema.index_of_column(column)?),
        DfExpr::Literal(scalar, _) => Expr::Literal(scalar_value(scalar)?),
        DfExpr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let op = match op {
                Operator::Plus => BinaryOp::Add,
                Operator::Minus => BinaryOp::Subtract,
                Operator::Multiply => BinaryOp::Multiply,
                Operator::Divide => BinaryOp::Divide,
                Operator::Modulo => BinaryOp::Modulo,
                Operator::Eq => BinaryOp::Eq,
                Operator::NotEq => BinaryOp::NotEq,
                Operator::Lt => BinaryOp::Lt,
                Operator::LtEq => BinaryOp::LtEq,
                Operator::Gt => BinaryOp::Gt,
                Operator::GtEq => BinaryOp::GtEq,
                Operator::And => BinaryOp::And,
                Operator::Or => BinaryOp::Or,
                Operator::IsDistinctFrom => BinaryOp::IsDistinctFrom,
                Operator::IsNotDistinctFrom => BinaryOp::IsNotDistinctFrom,
                Operator::StringConcat => BinaryOp::Concat,
                other => return unsupported(format!("operator {other}")),
            };
            Expr::Binary { op, left: boxed(left, schema)?, right: boxed(right, schema)? }
        }
        DfExpr::Like(Like { negated, expr, pattern, escape_char, case_insensitive }) => {
            if escape_char.is_some_and(|escape| escape != '\\') {
                return unsupported("LIKE with an ESCAPE character other than backslash");
            }
            Expr::Like {
                expr: boxed(expr, schema)?,
                pattern: boxed(pattern, schema)?,
                negated: *negated,
                case_insensitive: *case_insensitive,
            }
        }
        DfExpr::Not(expr) => unary(UnaryOp::Not, expr, schema)?,
        DfExpr::IsNull(expr) | DfExpr::IsUnknown(expr) => unary(UnaryOp::IsNull, expr, schema)?,
        DfExpr::IsNotNull(expr) | DfExpr::IsNotUnknown(expr) => unary(UnaryOp::IsNotNull, expr, schema)?,
        DfExpr::IsTrue(expr) => unary(UnaryOp::IsTrue, expr, schema)?,
        DfExpr::IsFalse(expr) => unary(UnaryOp::IsFalse, expr, schema)?,
        DfExpr::IsNotTrue(expr) => unary(UnaryOp::IsNotTrue, expr, schema)?,
        DfExpr::IsNotFalse(expr) => unary(UnaryOp::IsNotFalse, expr, schema)?,
        DfExpr::Negative(expr) => unary(UnaryOp::Negate, expr, schema)?,
        DfExpr::Between(Between { expr, negated, low, high }) => {
            let value = boxed(expr, schema)?;
            let within = Expr::Binary {
                op: BinaryOp::And,
                left: Box::new(Expr::Binary { op: BinaryOp::GtEq, left: value.clone(), right: boxed(low, schema)? }),
                right: Box::new(Expr::Binary { op: BinaryOp::LtEq, left: value, right: boxed(high, schema)? }),
            };
            if *negated {
                Expr::Unary { op: UnaryOp::Not, expr: Box::new(within) }
            } else {
                within
            }
        }
        DfExpr::Case(Case { expr, when_then_expr, else_expr }) => Expr::Case {
            operand: expr.as_ref().map(|expr| boxed(expr, schema)).transpose()?,
            when_then: when_then_expr
                .iter()
                .map(|(when, then)| Ok((lower_expr(when, schema)?, lower_expr(then, schema)?)))
                .collect::<Result<_, LowerError>>()?,
            otherwise: else_expr.as_ref().map(|expr| boxed(expr, schema)).transpose()?,
        },
        DfExpr::Cast(Cast { expr, field }) => {
            Expr::Cast { expr: boxed(expr, schema)?, to: column_type(field.data_type())?, r#try: false }
        }
        DfExpr::TryCast(TryCast { expr, field }) => {
            Expr::Cast { expr: boxed(expr, schema)?, to: column_type(field.data_type())?, r#try: true }
        }
        DfExpr::ScalarFunction(ScalarFunction { func, args }) => {
            if let Some(udf) = func.inner().downcast_ref::<crate::udf::WeftUdf>() {
                return Ok(Expr::Udf {
                    id: udf.id,
                    name: udf.name.clone(),
                    args: args.iter().map(|arg| lower_expr(arg, schema)).collect::<Result<_, _>>()?,
                    function: None,
                });
            }
            let Some(function) = Function::from_name(func.name()) else {
                return unsupported(format!("function {}", func.name()));
            };
            Expr::Call { function, args: args.iter().map(|arg| lower_expr(arg, schema)).collect::<Result<_, _>>()? }
        }
        DfExpr::InList(InList { expr, list, negated }) => Expr::InList {
            expr: boxed(expr, schema)?,
            list: list.iter().map(|item| lower_expr(item, schema)).collect::<Result<_, _>>()?,
            negated: *negated,
        },
        DfExpr::Placeholder(placeholder) => return unsupported(format!("parameter {}", placeholder.id)),
        DfExpr::ScalarSubquery(_) | DfExpr::Exists(_) | DfExpr::InSubquery(_) => {
            return unsupported(format!("correlated subquery {expr}"))
        }
        other => return unsupported(format!("expression {other}")),
    })
}
