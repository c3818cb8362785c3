//! A client's statement, prepared once: answered on the spot (session statements), kept as text
//! (weft's own statements, which take no parameters), or parsed into the sqlparser AST with the
//! PostgreSQL-only syntax of client catalog queries adapted on the tree.
//!
//! Parameters (`$n`) are bound into the parsed statement as literal values: a parameter can
//! never become SQL text, so no value a client sends can end a string, start a statement or be
//! read as a keyword, and nothing rewrites the statement's text after binding.

use crate::pg_catalog;
use datafusion::sql::sqlparser::ast::{self, Statement};
use std::ops::ControlFlow;
use weft_core::database::{Error, Output};

/// A statement ready to run (parameters not yet bound).
#[derive(Clone, Debug)]
pub enum Prepared {
    /// Answered without the database (`SET`, `SHOW server_version`, `DISCARD ALL`,
    /// `DEALLOCATE`, a read of a catalog table weft has no objects for).
    Answer(Output),
    /// One of weft's own statements (functions, sinks, sources, `RETRY EFFECT`, views with
    /// trailing options), run from its text.
    Weft(String),
    /// `SUBSCRIBE`.
    Subscribe(SubscribeStatement),
    /// A SQL statement, parsed.
    Sql(Box<Statement>),
}

/// Prepares one statement's text (a client's whole statement, without the `;` that ends it).
pub fn prepare(text: &str) -> Result<Prepared, Error> {
    if let Some(output) = pg_catalog::answer_session_statement(text) {
        return Ok(Prepared::Answer(output));
    }
    if let Some(subscribe) = parse_subscribe(text, false) {
        return subscribe.map(Prepared::Subscribe);
    }
    if is_weft_statement(text) {
        if placeholder_count(text) > 0 {
            return Err(Error::Unsupported("parameters ($n) in weft's own statements".into()));
        }
        return Ok(Prepared::Weft(text.to_string()));
    }
    let mut statements = weft_sql::parse(text)?;
    let mut statement = match statements.len() {
        0 => return Ok(Prepared::Answer(Output::Status("EMPTY".into()))),
        1 => statements.pop().expect("one statement"),
        _ => return Err(Error::Unsupported("more than one statement in a prepared statement".into())),
    };
    pg_catalog::adapt_client_syntax(&mut statement);
    if pg_catalog::reads_absent_catalog_table(&statement) {
        return Ok(Prepared::Answer(pg_catalog::text_rows("?column?", &[])));
    }
    Ok(Prepared::Sql(Box::new(statement)))
}

/// Whether `text` is one of weft's own statements (which weft's statement parser reads).
fn is_weft_statement(text: &str) -> bool {
    weft_sql::statement::parse_weft_statement(text).is_some()
}

impl Prepared {
    /// The number of parameters: the highest `$n`.
    pub fn parameter_count(&self) -> usize {
        match self {
            Prepared::Sql(statement) => {
                let mut count = 0;
                let _ = ast::visit_expressions(statement.as_ref(), |expr| {
                    if let Some(index) = placeholder_index(expr) {
                        count = count.max(index + 1);
                    }
                    ControlFlow::<()>::Continue(())
                });
                count
            }
            Prepared::Answer(_) | Prepared::Weft(_) | Prepared::Subscribe(_) => 0,
        }
    }

    /// This statement with `$n` replaced by `values[n - 1]` (placeholders without a value stay).
    pub fn bind(&self, values: &[ast::Expr]) -> Prepared {
        match self {
            Prepared::Sql(statement) if !values.is_empty() => {
                let mut statement = statement.clone();
                let _ = ast::visit_expressions_mut(statement.as_mut(), |expr| {
                    if let Some(value) = placeholder_index(expr).and_then(|index| values.get(index)) {
                        *expr = value.clone();
                    }
                    ControlFlow::<()>::Continue(())
                });
                Prepared::Sql(statement)
            }
            other => other.clone(),
        }
    }
}

/// The index (from 0) of a `$n` placeholder.
pub fn placeholder_index(expr: &ast::Expr) -> Option<usize> {
    match expr {
        ast::Expr::Value(value) => match &value.value {
            ast::Value::Placeholder(text) => text.strip_prefix('$')?.parse::<usize>().ok()?.checked_sub(1),
            _ => None,
        },
        _ => None,
    }
}

/// The highest `$n` outside quotes and comments of `text` (weft's own statements, which are
/// not parsed into the AST here).
fn placeholder_count(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut index, mut count) = (0, 0);
    while index < bytes.len() {
        match bytes[index] {
            quote @ (b'\'' | b'"') => {
                index += 1;
                while index < bytes.len() && bytes[index] != quote {
                    index += 1;
                }
                index += 1;
            }
            b'-' if bytes.get(index + 1) == Some(&b'-') => {
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
            }
            b'$' if bytes.get(index + 1).is_some_and(u8::is_ascii_digit) => {
                let start = index + 1;
                index += 1;
                while index < bytes.len() && bytes[index].is_ascii_digit() {
                    index += 1;
                }
                count = count.max(text[start..index].parse::<usize>().unwrap_or(usize::MAX));
            }
            _ => index += 1,
        }
    }
    count
}

/// A `SUBSCRIBE` statement: `SUBSCRIBE [TO] view [WITH (SNAPSHOT = true|false)]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscribeStatement {
    /// The view.
    pub view: String,
    /// Whether the view's current rows come first.
    pub snapshot: bool,
}

/// Parses `text` as a `SUBSCRIBE` statement (`copy`: inside `COPY (...) TO STDOUT`): `None` if it
/// is another statement, an error if it is a malformed `SUBSCRIBE`.
pub fn parse_subscribe(text: &str, copy: bool) -> Option<Result<SubscribeStatement, Error>> {
    match weft_sql::statement::parse_weft_statement(text)? {
        Ok(weft_sql::statement::WeftStatement::Subscribe { view, snapshot, copy: copied }) if copied == copy => {
            Some(Ok(SubscribeStatement { view, snapshot }))
        }
        Ok(_) => None,
        Err(error) => {
            let first = if copy { "copy" } else { "subscribe" };
            let word = text.split_whitespace().next().unwrap_or_default();
            word.eq_ignore_ascii_case(first).then_some(Err(error.into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(prepared: &Prepared) -> String {
        match prepared {
            Prepared::Sql(statement) => statement.to_string(),
            other => panic!("not SQL: {other:?}"),
        }
    }

    #[test]
    fn parameters_are_bound_as_values_never_as_text() {
        let prepared = prepare("UPDATE users SET name = lower($1) WHERE name = $2").unwrap();
        assert_eq!(prepared.parameter_count(), 2);
        let hostile = |text: &str| ast::Expr::value(ast::Value::SingleQuotedString(text.to_string()));
        let bound = prepared.bind(&[hostile("pg_get_expr("), hostile("'); DELETE FROM users; -- pg_catalog")]);
        let Prepared::Sql(statement) = &bound else { panic!() };
        assert!(matches!(statement.as_ref(), Statement::Update(_)));
        // The text of the bound statement parses back to one statement with the same values.
        let text = sql(&bound);
        let reparsed = weft_sql::parse(&text).unwrap();
        assert_eq!(reparsed.len(), 1);
        assert_eq!(reparsed[0].to_string(), text);
    }

    #[test]
    fn catalog_syntax_is_adapted_on_the_tree_and_literals_are_untouched() {
        let prepared = prepare(
            "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid) AND x::pg_catalog.regclass = 1 AND 'x::oid pg_catalog.f(' = 'y'",
        )
        .unwrap();
        assert_eq!(
            sql(&prepared),
            "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname ~ '^(t)$' AND pg_table_is_visible(c.oid) AND x = 1 AND 'x::oid pg_catalog.f(' = 'y'"
        );
        // A literal naming an absent catalog table is a literal: the statement runs.
        let insert = prepare("INSERT INTO t VALUES ('from pg_catalog.x')").unwrap();
        assert!(matches!(insert, Prepared::Sql(_)));
        let absent = prepare("SELECT * FROM pg_catalog.pg_policy").unwrap();
        assert!(matches!(absent, Prepared::Answer(_)));
    }

    #[test]
    fn weft_statements_take_no_parameters() {
        assert!(matches!(prepare("DROP FUNCTION f").unwrap(), Prepared::Weft(_)));
        assert!(prepare("CREATE FUNCTION f(BIGINT) RETURNS BIGINT LANGUAGE wasm AS '$1'").is_ok());
        assert!(prepare("DROP SINK $1").is_err());
        assert!(prepare("SELECT 1; SELECT 2").is_err());
        assert_eq!(placeholder_count("SELECT '$1', \"$2\", $1 + $12 -- $3\nFROM t"), 12);
    }

    #[test]
    fn subscribe_statements_parse() {
        let parsed = |text: &str| parse_subscribe(text, false).map(|result| result.map_err(|error| error.to_string()));
        assert_eq!(parsed("SELECT 1"), None);
        assert_eq!(parsed("CREATE SINK s FROM v INTO files('x')"), None);
        assert_eq!(
            parsed("subscribe to revenue;"),
            Some(Ok(SubscribeStatement { view: "revenue".into(), snapshot: true }))
        );
        assert_eq!(
            parsed("SUBSCRIBE \"Mixed\" WITH (SNAPSHOT = false)"),
            Some(Ok(SubscribeStatement { view: "Mixed".into(), snapshot: false }))
        );
        assert!(matches!(parsed("SUBSCRIBE revenue WITH (progress = true)"), Some(Err(_))));
        assert!(matches!(parsed("SUBSCRIBE"), Some(Err(_))));
        assert_eq!(parsed("COPY (SUBSCRIBE revenue) TO STDOUT"), None);
        assert!(parse_subscribe("COPY (SUBSCRIBE revenue) TO STDOUT", true).is_some_and(|parsed| parsed.is_ok()));
        assert!(matches!(parse_subscribe("COPY (SUBSCRIBE) TO STDOUT", true), Some(Err(_))));
    }
}
