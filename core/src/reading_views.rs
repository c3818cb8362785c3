//! Query effects in views: `http_get(url)` reads the world, once per freshness period.
//!
//! ```sql
//! CREATE MATERIALIZED VIEW pages WITH (ttl = '10 minutes', concurrency = 8) AS
//!   SELECT url, http_get(url) AS body FROM urls;
//! ```
//!
//! A read is not a function call the dataflow can make: it is an effect. So a view that reads is
//! rewritten into two views over a table of observations, `weft_reads(resource, body,
//! observed_at)`:
//! - the *wanted* view `weft_wanted_<view>` (`SELECT DISTINCT <url> AS resource FROM ...`, the
//!   same FROM / WHERE / GROUP BY) says which resources the view needs; the effect executor reads
//!   each one that has no observation younger than the ttl (`ipfs://` resources, being content
//!   addressed, never expire) with bounded concurrency, on the query stream;
//! - the view itself, where each `http_get(u)` becomes the scalar subquery
//!   `(SELECT max(body) FROM weft_reads WHERE resource = (u))`, which DataFusion decorrelates
//!   into a left join: the observation feeds back into the dataflow as an input, a resource not
//!   read yet is NULL, and a refresh that finds the same body changes nothing downstream.
//!
//! `http_get` may appear only in the select list of the view's outer SELECT.

use datafusion::sql::sqlparser::ast::{self, visit_expressions, visit_expressions_mut, Expr, SelectItem, SetExpr};
use std::ops::ControlFlow;
use std::time::Duration;

/// The table of observations.
pub const READS_TABLE: &str = "weft_reads";
/// The function that reads a URL.
pub const HTTP_GET: &str = "http_get";
/// Freshness when the view does not say.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// Concurrent reads per view when the view does not say.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// A view that reads, split as described in the module docs.
pub struct ReadingView {
    /// The view's query with every `http_get(u)` replaced by a lookup in `weft_reads`.
    pub query: ast::Query,
    /// `SELECT DISTINCT u AS resource ...` for every `http_get(u)`.
    pub wanted: ast::Query,
    /// How long an observation stays fresh (`None`: forever).
    pub ttl: Option<Duration>,
    /// How many reads may run at once.
    pub concurrency: usize,
}

fn is_http_get(expr: &Expr) -> Option<&ast::Function> {
    match expr {
        Expr::Function(function) if function.name.to_string().eq_ignore_ascii_case(HTTP_GET) => Some(function),
        _ => None,
    }
}

fn count_calls<V: ast::Visit>(node: &V) -> usize {
    let mut count = 0;
    let _ = visit_expressions(node, |expr| {
        if is_http_get(expr).is_some() {
            count += 1;
        }
        ControlFlow::<()>::Continue(())
    });
    count
}

/// The argument of `http_get(u)`.
fn argument(function: &ast::Function) -> Result<Expr, String> {
    let ast::FunctionArguments::List(list) = &function.args else {
        return Err("http_get takes one argument, the URL".into());
    };
    match list.args.as_slice() {
        [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(expr))] if count_calls(expr) == 0 => Ok(expr.clone()),
        [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(_))] => Err("http_get cannot be nested".into()),
        _ => Err("http_get takes one argument, the URL".into()),
    }
}

/// Parses a duration such as `'10 minutes'`, `'30 s'`, `'500 ms'` or `'forever'`.
pub fn parse_ttl(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim().to_ascii_lowercase();
    if text == "forever" || text == "infinity" {
        return Ok(None);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("ttl {text:?}: expected a number and a unit"))?;
    let unit_ms = match unit.trim() {
        "ms" | "millisecond" | "milliseconds" => 1,
        "s" | "second" | "seconds" => 1000,
        "min" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        other => return Err(format!("ttl unit {other:?}: use ms, seconds, minutes, hours or days")),
    };
    Ok(Some(Duration::from_millis(number.saturating_mul(unit_ms))))
}

fn option_text(value: &Expr) -> String {
    match value {
        Expr::Value(value) => match &value.value {
            ast::Value::SingleQuotedString(text) => text.clone(),
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

/// Splits a view that calls `http_get`; `None` when it does not.
pub fn split_reading_view(
    query: &ast::Query,
    options: &ast::CreateTableOptions,
) -> Result<Option<ReadingView>, String> {
    let total = count_calls(query);
    if total == 0 {
        return Ok(None);
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err("http_get(...) may appear only in the select list of a plain SELECT".into());
    };
    let in_projection: usize = select.projection.iter().map(count_calls).sum();
    if in_projection != total || query.with.is_some() {
        return Err("http_get(...) may appear only in the select list of the view's outer SELECT".into());
    }
    let mut ttl = Some(DEFAULT_TTL);
    let mut concurrency = DEFAULT_CONCURRENCY;
    let settings = match options {
        ast::CreateTableOptions::None => &[][..],
        ast::CreateTableOptions::With(settings) => settings.as_slice(),
        _ => return Err("view options are written WITH (ttl = '...', concurrency = n)".into()),
    };
    for setting in settings {
        let ast::SqlOption::KeyValue { key, value } = setting else {
            return Err(format!("unsupported view option {setting}"));
        };
        match key.value.to_ascii_lowercase().as_str() {
            "ttl" => ttl = parse_ttl(&option_text(value))?,
            "concurrency" => {
                concurrency = option_text(value)
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("concurrency must be a positive number, found {value}"))?
            }
            other => return Err(format!("unknown view option {other} (known: ttl, concurrency)")),
        }
    }
    // The resources: each call's argument, over the same rows.
    let mut arguments = Vec::new();
    let _ = visit_expressions(&select.projection, |expr| {
        if let Some(function) = is_http_get(expr) {
            arguments.push(argument(function));
        }
        ControlFlow::<()>::Continue(())
    });
    let arguments = arguments.into_iter().collect::<Result<Vec<Expr>, String>>()?;
    let wanted_sql = arguments
        .iter()
        .map(|argument| {
            let mut wanted = select.as_ref().clone();
            wanted.projection =
                vec![SelectItem::ExprWithAlias { expr: argument.clone(), alias: ast::Ident::new("resource") }];
            wanted.distinct = Some(ast::Distinct::Distinct);
            wanted.to_string()
        })
        .collect::<Vec<_>>()
        .join(" UNION ");
    let wanted = parse_query(&wanted_sql)?;
    // The view: each call becomes a lookup of the observation.
    let mut rewritten = query.clone();
    let mut failure = None;
    let _ = visit_expressions_mut(&mut rewritten, |expr| {
        if let Some(function) = is_http_get(expr) {
            let lookup = argument(function).and_then(|argument| {
                let sql = format!(
                    "SELECT (SELECT max({READS_TABLE}.body) FROM {READS_TABLE} WHERE {READS_TABLE}.resource = ({argument}))"
                );
                match parse_query(&sql)?.body.as_ref() {
                    SetExpr::Select(select) => match select.projection.first() {
                        Some(SelectItem::UnnamedExpr(lookup)) => Ok(lookup.clone()),
                        _ => Err("internal: lookup did not parse".to_string()),
                    },
                    _ => Err("internal: lookup did not parse".to_string()),
                }
            });
            match lookup {
                Ok(lookup) => *expr = lookup,
                Err(message) => failure = Some(message),
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if let Some(message) = failure {
        return Err(message);
    }
    // Unnamed calls keep the name a reader expects (`http_get`), not the subquery's text.
    if let SetExpr::Select(select) = rewritten.body.as_mut() {
        for (item, original) in select.projection.iter_mut().zip(&query_projection(query)) {
            if let (SelectItem::UnnamedExpr(expr), SelectItem::UnnamedExpr(original)) = (&*item, original) {
                if count_calls(original) > 0 {
                    let name =
                        if is_http_get(original).is_some() { HTTP_GET.to_string() } else { original.to_string() };
                    *item = SelectItem::ExprWithAlias { expr: expr.clone(), alias: ast::Ident::with_quote('"', name) };
                }
            }
        }
    }
    Ok(Some(ReadingView { query: rewritten, wanted, ttl, concurrency }))
}

fn query_projection(query: &ast::Query) -> Vec<SelectItem> {
    match query.body.as_ref() {
        SetExpr::Select(select) => select.projection.clone(),
        _ => Vec::new(),
    }
}

fn parse_query(sql: &str) -> Result<ast::Query, String> {
    match weft_sql::parse(sql).map_err(|error| error.to_string())?.pop() {
        Some(ast::Statement::Query(query)) => Ok(*query),
        _ => Err(format!("internal: not a query: {sql}")),
    }
}

/// A reading view as logged: which view reads, through which wanted view, how fresh.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReadsDefinition {
    /// The view that calls `http_get`.
    pub view: String,
    /// Its wanted view (`weft_wanted_<view>`).
    pub wanted: String,
    /// Freshness in milliseconds (`None`: forever).
    pub ttl_ms: Option<u64>,
    /// Concurrent reads.
    pub concurrency: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(sql: &str) -> Result<Option<ReadingView>, String> {
        let Some(ast::Statement::CreateView(create)) = weft_sql::parse(sql).unwrap().pop() else { panic!() };
        split_reading_view(&create.query, &create.options)
    }

    #[test]
    fn reading_views_split_into_wanted_resources_and_lookups() {
        let view = split(
            "CREATE MATERIALIZED VIEW pages WITH (ttl = '90 seconds') AS \
             SELECT u.url, http_get(u.url) AS body FROM urls u WHERE u.id > 2",
        )
        .unwrap()
        .unwrap();
        assert_eq!(view.ttl, Some(Duration::from_secs(90)));
        assert_eq!(view.wanted.to_string(), "SELECT DISTINCT u.url AS resource FROM urls u WHERE u.id > 2");
        let text = view.query.to_string();
        assert!(
            text.contains("(SELECT max(weft_reads.body) FROM weft_reads WHERE weft_reads.resource = (u.url)) AS body"),
            "{text}"
        );
        assert!(split("CREATE VIEW v AS SELECT 1").unwrap().is_none());
        let error = |sql: &str| split(sql).err().unwrap_or_default();
        assert!(error("CREATE VIEW v AS SELECT url FROM urls WHERE http_get(url) = 'x'").contains("select list"));
        assert!(error("CREATE VIEW v AS SELECT http_get(http_get(url)) FROM urls").contains("nested"));
        assert!(error("CREATE VIEW v WITH (ttl = 'soon') AS SELECT http_get(url) FROM urls").contains("ttl"));
        assert!(
            error("CREATE VIEW v WITH (colour = 1) AS SELECT http_get(url) FROM urls").contains("unknown view option")
        );
        assert_eq!(
            split("CREATE MATERIALIZED VIEW pages AS SELECT url, http_get(url) AS body FROM urls WITH (ttl = '10 minutes');")
                .unwrap()
                .unwrap()
                .ttl,
            Some(Duration::from_secs(600))
        );
        assert_eq!(parse_ttl("forever"), Ok(None));
        assert_eq!(parse_ttl("500 ms"), Ok(Some(Duration::from_millis(500))));
    }
}
