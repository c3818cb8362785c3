//! weft's SQL front end: statements are parsed with DataFusion's `sqlparser`, queries are planned
//! and optimized by DataFusion, and the optimized `LogicalPlan` is lowered to weft's dataflow
//! [`Plan`](weft_ir::Plan). The same DataFusion session also executes ad-hoc queries (and
//! `COPY`) over weft's tables and views through [`RelationProvider`].
//!
//! It is the only path from SQL text to the IR: [`lower`] for planned statements, [`fastpath`]
//! for the simple DML expressions that skip planning. This crate never depends on the Wasm
//! runtime; the engine never depends on this crate.

#![warn(missing_docs)]

pub mod convert;
pub mod fastpath;
pub mod lower;
pub mod provider;
pub mod statement;
pub mod udf;

pub use convert::ConvertError;
pub use lower::{lower_expr, lower_plan, LowerError};
pub use provider::{RelationProvider, RowSource};
pub use udf::WeftUdf;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use std::future::Future;
use std::sync::Arc;

/// Errors from parsing, planning, lowering or executing SQL.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The text is not valid SQL.
    #[error("syntax error: {0}")]
    Parse(String),
    /// DataFusion rejected or failed the statement.
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    /// The plan cannot be maintained incrementally.
    #[error(transparent)]
    Lower(#[from] LowerError),
    /// The async runtime could not start.
    #[error("could not start the query runtime: {0}")]
    Runtime(String),
    /// An expression chains more operators than weft plans.
    #[error("statement too complex: an expression chains {0} operators (at most {MAX_OPERATOR_CHAIN})")]
    TooComplex(usize),
    /// DataFusion panicked on this statement (a bug); the database is unaffected.
    #[error("internal error while planning or executing the statement: {0}")]
    Panic(String),
}

/// Runs `work`, turning a panic inside DataFusion into an error for this statement only.
fn guarded<T>(work: impl FnOnce() -> Result<T, SqlError>) -> Result<T, SqlError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(SqlError::Panic(message))
    })
}

/// The most binary operators one expression may chain (`a + b + ...`, `x = 1 OR x = 2 OR ...`).
/// Planning and evaluating such a chain recurses once per operator; longer chains are refused
/// before they are parsed.
pub const MAX_OPERATOR_CHAIN: usize = 1_000;

/// Parses SQL text into statements. A view's options may also follow its query, as weft's
/// documentation writes them (`CREATE MATERIALIZED VIEW v AS SELECT ... WITH (ttl = '1 hour')`).
pub fn parse(sql: &str) -> Result<Vec<Statement>, SqlError> {
    let chain = longest_operator_chain(sql);
    if chain > MAX_OPERATOR_CHAIN {
        return Err(SqlError::TooComplex(chain));
    }
    if let Some(view) = view_with_trailing_options(sql) {
        return view.map(|view| vec![view]);
    }
    Parser::parse_sql(&GenericDialect {}, sql).map_err(|error| SqlError::Parse(error.to_string()))
}

/// `CREATE [OR REPLACE] [MATERIALIZED] VIEW name AS query WITH (options)` (one statement): the
/// view with those options, read from the tokens (a string literal never counts); `None` for any
/// other text.
fn view_with_trailing_options(sql: &str) -> Option<Result<Statement, SqlError>> {
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize().ok()?;
    let significant: Vec<(usize, &Token)> =
        tokens.iter().enumerate().filter(|(_, token)| !matches!(token, Token::Whitespace(_))).collect();
    let keyword = |token: &Token, wanted: Keyword| matches!(token, Token::Word(word) if word.keyword == wanted);
    let mut words = significant.iter().map(|(_, token)| *token).peekable();
    if !words.next().is_some_and(|token| keyword(token, Keyword::CREATE)) {
        return None;
    }
    if words.peek().is_some_and(|token| keyword(token, Keyword::OR)) {
        words.next();
        words.next();
    }
    if words.peek().is_some_and(|token| keyword(token, Keyword::MATERIALIZED)) {
        words.next();
    }
    if !words.next().is_some_and(|token| keyword(token, Keyword::VIEW)) {
        return None;
    }
    // The statement ends `WITH ( ... )` (then perhaps `;`) at parenthesis depth zero.
    let mut end = significant.len();
    while end > 0 && matches!(significant[end - 1].1, Token::SemiColon) {
        end -= 1;
    }
    if end < 3 || !matches!(significant[end - 1].1, Token::RParen) {
        return None;
    }
    let mut depth = 0usize;
    let mut open = None;
    for position in (0..end).rev() {
        match significant[position].1 {
            Token::RParen => depth += 1,
            Token::LParen => {
                depth -= 1;
                if depth == 0 {
                    open = Some(position);
                    break;
                }
            }
            _ => {}
        }
    }
    let open = open?;
    if open == 0 || !keyword(significant[open - 1].1, Keyword::WITH) {
        return None;
    }
    // Options before `AS` are where SQL puts them: the parser reads those itself.
    if !significant[..open - 1].iter().any(|(_, token)| keyword(token, Keyword::AS)) {
        return None;
    }
    let split = significant[open - 1].0;
    let parse_error = |error: datafusion::sql::sqlparser::parser::ParserError| SqlError::Parse(error.to_string());
    let head = tokens[..split].to_vec();
    let tail = tokens[split..significant[end - 1].0 + 1].to_vec();
    let result = (|| {
        let mut statement = Parser::new(&dialect).with_tokens(head).parse_statement().map_err(parse_error)?;
        let options = Parser::new(&dialect).with_tokens(tail).parse_options(Keyword::WITH).map_err(parse_error)?;
        match &mut statement {
            Statement::CreateView(view)
                if matches!(view.options, datafusion::sql::sqlparser::ast::CreateTableOptions::None) =>
            {
                view.options = datafusion::sql::sqlparser::ast::CreateTableOptions::With(options);
                Ok(statement)
            }
            Statement::CreateView(_) => Err(SqlError::Parse("view options given twice".into())),
            _ => Err(SqlError::Parse("expected CREATE VIEW".into())),
        }
    })();
    Some(result)
}

/// The longest run of binary operators in one expression of `sql`: operators counted within a
/// parenthesis level and a comma-separated item, outside strings and comments.
fn longest_operator_chain(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut runs = vec![0usize];
    let mut longest = 0;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        match byte {
            b'\'' | b'"' => {
                index += 1;
                while index < bytes.len() && bytes[index] != byte {
                    index += 1;
                }
            }
            b'-' if bytes.get(index + 1) == Some(&b'-') => {
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
            }
            b'(' => runs.push(0),
            b')' if runs.len() > 1 => {
                runs.pop();
            }
            b',' | b';' => *runs.last_mut().expect("a level") = 0,
            b'+' | b'-' | b'*' | b'/' | b'%' | b'=' | b'<' | b'>' | b'|' | b'&' => {
                let run = runs.last_mut().expect("a level");
                *run += 1;
                longest = longest.max(*run);
                // A two-character operator (`<=`, `||`, ...) counts once.
                if matches!(bytes.get(index + 1), Some(b'=' | b'>' | b'|' | b'&')) {
                    index += 1;
                }
            }
            byte if byte.is_ascii_alphabetic() => {
                let start = index;
                while index < bytes.len() && (bytes[index].is_ascii_alphanumeric() || bytes[index] == b'_') {
                    index += 1;
                }
                let word = &sql[start..index];
                if word.eq_ignore_ascii_case("and") || word.eq_ignore_ascii_case("or") {
                    let run = runs.last_mut().expect("a level");
                    *run += 1;
                    longest = longest.max(*run);
                }
                continue;
            }
            _ => {}
        }
        index += 1;
    }
    longest
}

/// DataFusion planning and execution over weft's relations. Clones share the session and
/// runtime, so a clone on another thread sees the same relations and functions.
#[derive(Clone)]
pub struct Planner {
    context: SessionContext,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Planner {
    /// A planner with no relations registered.
    pub fn new() -> Result<Planner, SqlError> {
        let config = SessionConfig::new().with_information_schema(true);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weft-query")
            // Deeply nested expressions recurse once per level while executing.
            .thread_stack_size(256 << 20)
            .enable_all()
            .build()
            .map_err(|error| SqlError::Runtime(error.to_string()))?;
        let context = SessionContext::new_with_config(config);
        if let Some(catalog) = context.catalog("datafusion") {
            catalog.register_schema("weft", Arc::new(datafusion::catalog::MemorySchemaProvider::new()))?;
        }
        Ok(Planner { context, runtime: Arc::new(runtime) })
    }

    /// The DataFusion session (for callers that read files or build data frames).
    pub fn context(&self) -> &SessionContext {
        &self.context
    }

    /// Runs a future on the planner's runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Makes a relation visible to queries under `name`, replacing any previous one.
    pub fn register(&self, name: &str, provider: Arc<RelationProvider>) -> Result<(), SqlError> {
        self.context.deregister_table(name)?;
        self.context.register_table(name, provider)?;
        Ok(())
    }

    /// Makes a user-defined function callable from SQL (replacing one of the same name).
    pub fn register_function(&self, udf: WeftUdf) {
        self.context.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(udf));
    }

    /// Removes a user-defined function.
    pub fn deregister_function(&self, name: &str) {
        self.context.deregister_udf(name);
    }

    /// Removes a relation from the catalog.
    pub fn deregister(&self, name: &str) -> Result<(), SqlError> {
        self.context.deregister_table(name)?;
        Ok(())
    }

    /// Plans a statement without optimizing it.
    pub fn logical_plan(&self, statement: Statement) -> Result<LogicalPlan, SqlError> {
        let state = self.context.state();
        guarded(|| Ok(self.block_on(state.statement_to_plan(DfStatement::Statement(Box::new(statement))))?))
    }

    /// Plans and optimizes a statement.
    pub fn optimized_plan(&self, statement: Statement) -> Result<LogicalPlan, SqlError> {
        let plan = self.logical_plan(statement)?;
        guarded(|| Ok(self.context.state().optimize(&plan)?))
    }

    /// Executes a logical plan, collecting the result. The relations' rows are copied while
    /// holding what `hold` returns (the engine's commit gate as a reader, so that all of them
    /// are of one timestamp); execution then runs on the copies without it.
    pub fn execute<Held>(&self, plan: LogicalPlan, hold: impl FnOnce() -> Held) -> Result<Vec<RecordBatch>, SqlError> {
        let state = self.context.state();
        let task = self.context.task_ctx();
        guarded(|| {
            let physical = {
                let _reading = hold();
                self.block_on(state.create_physical_plan(&plan))?
            };
            Ok(self.block_on(datafusion::physical_plan::collect(physical, task))?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{longest_operator_chain, parse, SqlError, MAX_OPERATOR_CHAIN};

    #[test]
    fn view_options_may_follow_the_query_and_literals_never_count() {
        let options = |sql: &str| match parse(sql).unwrap().pop() {
            Some(datafusion::sql::sqlparser::ast::Statement::CreateView(view)) => view.options.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            options("CREATE MATERIALIZED VIEW pages AS SELECT url, http_get(url) AS body FROM urls WHERE x > 1 WITH (ttl = '10 minutes');"),
            "WITH (ttl = '10 minutes')"
        );
        assert_eq!(options("CREATE VIEW v WITH (ttl = '1 hour') AS SELECT 1"), "WITH (ttl = '1 hour')");
        assert_eq!(options("CREATE VIEW v AS SELECT 'WITH (ttl = 1)' AS x"), "");
        assert_eq!(options("CREATE VIEW v AS WITH x AS (SELECT 1) SELECT * FROM x"), "");
        assert!(parse("CREATE VIEW v WITH (a = 1) AS SELECT 1 FROM t WITH (b = 2)").is_err());
    }

    #[test]
    fn operator_chains_are_measured_per_expression() {
        // The clauses of one level count together: an upper bound of any one expression's chain.
        assert_eq!(longest_operator_chain("SELECT a + b - c FROM t WHERE x = 1 AND y <= 2"), 5);
        assert_eq!(longest_operator_chain("INSERT INTO t VALUES (-1, 'a+b+c'), (-2, 'x')"), 1);
        assert_eq!(longest_operator_chain("SELECT (1 + 2) * (3 + 4 + 5) -- + + + +"), 2);
        let long = format!("SELECT {}", vec!["1"; MAX_OPERATOR_CHAIN + 2].join(" + "));
        assert!(matches!(parse(&long), Err(SqlError::TooComplex(_))));
        let many_rows = format!("INSERT INTO t VALUES {}", vec!["(-1, 2)"; 10_000].join(", "));
        assert!(parse(&many_rows).is_ok());
    }
}
