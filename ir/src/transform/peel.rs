//! Peeling: the chain of filters and projections on top of a plan, as steps the engine applies
//! row by row inside one operator (its consumer's, where possible).

use crate::expr::Expr;
use crate::plan::Plan;

/// One step of a peeled chain.
#[derive(Clone, Debug, PartialEq)]
pub enum MapStep {
    /// Keep the rows for which the predicate is TRUE.
    Filter(Expr),
    /// Replace each row by these expressions over it.
    Project(Vec<Expr>),
    /// A projection of distinct columns: values are moved, not copied.
    Select(Vec<usize>),
}

/// Splits the chain of `Project` / `Filter` nodes off the top of `plan`: the plan beneath and
/// the chain as steps (innermost first). Identity projections are dropped.
pub fn peel(plan: &Plan) -> (&Plan, Vec<MapStep>) {
    let mut steps = Vec::new();
    let mut current = plan;
    loop {
        match current {
            Plan::Project { input, exprs } => {
                let identity = exprs.len() == input.arity()
                    && exprs.iter().enumerate().all(|(index, expr)| *expr == Expr::Column(index));
                if !identity {
                    let columns: Option<Vec<usize>> = exprs
                        .iter()
                        .map(|expr| if let Expr::Column(index) = expr { Some(*index) } else { None })
                        .collect();
                    let distinct = columns.as_ref().is_some_and(|columns| {
                        let mut sorted = columns.clone();
                        sorted.sort_unstable();
                        sorted.windows(2).all(|pair| pair[0] != pair[1])
                    });
                    steps.push(match columns {
                        Some(columns) if distinct => MapStep::Select(columns),
                        _ => MapStep::Project(exprs.clone()),
                    });
                }
                current = input;
            }
            Plan::Filter { input, predicate } => {
                steps.push(MapStep::Filter(predicate.clone()));
                current = input;
            }
            _ => break,
        }
    }
    steps.reverse();
    (current, steps)
}
