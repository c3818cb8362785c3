//! weft's own statements, parsed as an extension of sqlparser (the way DataFusion's `DFParser`
//! adds `CREATE EXTERNAL TABLE`): `CREATE [OR REPLACE] FUNCTION`, `DROP FUNCTION`,
//! `CREATE SINK`, `CREATE SOURCE`, `DROP SINK|SOURCE`, `RETRY EFFECT` and `SUBSCRIBE`.
//!
//! The text is tokenized by sqlparser and read with its parser, so strings, quoted identifiers,
//! comments and numbers mean exactly what they mean in every other statement. Anything that does
//! not start like one of these statements is left to the SQL parser ([`parse_weft_statement`]
//! answers `None`); anything that does and then goes wrong is an error naming what was expected.

use crate::SqlError;
use datafusion::sql::sqlparser::ast::Ident;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;
use weft_ir::ColumnType;

/// One of weft's own statements.
#[derive(Clone, Debug, PartialEq)]
pub enum WeftStatement {
    /// `CREATE [OR REPLACE] FUNCTION name(type, ...) RETURNS type LANGUAGE wasm AS 'path'
    /// [EXPORT 'name'] [WITH (fuel = n, memory_mb = n)] [ON ERROR NULL]`.
    CreateFunction(FunctionSpec),
    /// `DROP FUNCTION [IF EXISTS] name`.
    DropFunction {
        /// The function.
        name: String,
        /// `IF EXISTS`: a missing function is no error.
        if_exists: bool,
    },
    /// `CREATE SINK name FROM view INTO connector('argument', ...) [KEY (column, ...)]`.
    CreateSink {
        /// The sink's name.
        name: String,
        /// The view whose changes it writes.
        view: String,
        /// Where it writes them.
        target: TargetSpec,
        /// `KEY (column, ...)`: the columns that identify a row at the target.
        key: Vec<String>,
    },
    /// `CREATE SOURCE name [(column type, ...)] FROM connector('argument', ...)
    /// [WITH (poll_ms = n)]`.
    CreateSource {
        /// The source's name (and its table's).
        name: String,
        /// The columns, if declared (else found from the source).
        columns: Vec<(String, ColumnType)>,
        /// Where it reads.
        target: TargetSpec,
        /// `WITH (poll_ms = n)`: how often it reads.
        poll_ms: Option<u64>,
    },
    /// `DROP SINK|SOURCE [IF EXISTS] name`.
    DropEffect {
        /// A source (else a sink).
        source: bool,
        /// Its name.
        name: String,
        /// `IF EXISTS`: a missing one is no error.
        if_exists: bool,
    },
    /// `RETRY EFFECT 'cid'`.
    RetryEffect {
        /// The failed effect's CID.
        cid: String,
    },
    /// `SUBSCRIBE [TO] view [WITH (SNAPSHOT = true|false)]`, or the same inside
    /// `COPY (...) TO STDOUT` (`copy`: the changes as a COPY stream, which psql prints as they
    /// arrive).
    Subscribe {
        /// The view.
        view: String,
        /// Whether the view's current rows come first.
        snapshot: bool,
        /// Inside `COPY (...) TO STDOUT`.
        copy: bool,
    },
}

/// A function's declaration as written.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionSpec {
    /// The function's SQL name.
    pub name: String,
    /// `OR REPLACE`.
    pub or_replace: bool,
    /// The parameters' types.
    pub params: Vec<ColumnType>,
    /// The result's type.
    pub returns: ColumnType,
    /// The module's path.
    pub path: String,
    /// The export to call, if not the function's name.
    pub export: Option<String>,
    /// `WITH (fuel = n)`: fuel per call.
    pub fuel: Option<u64>,
    /// `WITH (memory_mb = n)`: memory per call, in MiB.
    pub memory_mb: Option<u64>,
    /// `ON ERROR NULL`: a failing call yields NULL instead of failing the statement.
    pub on_error_null: bool,
}

/// A connector and its (string) arguments: `files('out.jsonl')`.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetSpec {
    /// The connector's name (`files`, `http`, `postgres`, `effects`).
    pub connector: String,
    /// Its arguments.
    pub arguments: Vec<String>,
}

/// Parses `sql` (one statement, perhaps ending with `;`) as one of weft's own statements:
/// `None` when it does not start like one.
pub fn parse_weft_statement(sql: &str) -> Option<Result<WeftStatement, SqlError>> {
    if !may_be_weft_statement(sql) {
        return None;
    }
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(sql).ok()?;
    let kind = statement_kind(&mut parser)?;
    let statement = (|| {
        let statement = match kind {
            Kind::CreateFunction { or_replace } => {
                WeftStatement::CreateFunction(create_function(&mut parser, or_replace)?)
            }
            Kind::DropFunction => {
                let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
                WeftStatement::DropFunction { name: name(&mut parser)?, if_exists }
            }
            Kind::CreateSink => {
                let name = name(&mut parser)?;
                parser.expect_keyword_is(Keyword::FROM)?;
                let view = name_of(&mut parser, "a view")?;
                parser.expect_keyword_is(Keyword::INTO)?;
                let target = target(&mut parser)?;
                let key = if parser.parse_keyword(Keyword::KEY) { names(&mut parser)? } else { Vec::new() };
                WeftStatement::CreateSink { name, view, target, key }
            }
            Kind::CreateSource => {
                let name = name(&mut parser)?;
                let mut columns = Vec::new();
                if parser.consume_token(&Token::LParen) {
                    columns = parser.parse_comma_separated(|parser| {
                        let column = name_of(parser, "a column name")?;
                        Ok((column, column_type(parser)?))
                    })?;
                    parser.expect_token(&Token::RParen)?;
                }
                parser.expect_keyword_is(Keyword::FROM)?;
                let target = target(&mut parser)?;
                let mut poll_ms = None;
                for (option, value) in options(&mut parser)? {
                    match option.as_str() {
                        "poll_ms" => poll_ms = Some(number(&option, &value)?),
                        _ => return Err(failure(format!("unknown source option {option} (known: poll_ms)"))),
                    }
                }
                WeftStatement::CreateSource { name, columns, target, poll_ms }
            }
            Kind::DropEffect { source } => {
                let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
                WeftStatement::DropEffect { source, name: name(&mut parser)?, if_exists }
            }
            Kind::RetryEffect => WeftStatement::RetryEffect {
                cid: string(&mut parser)
                    .map_err(|_| failure("RETRY EFFECT takes the CID as a quoted string".into()))?,
            },
            Kind::Subscribe { copy } => {
                // `TO` is optional.
                let _ = parser.parse_keyword(Keyword::TO);
                let view = name_of(&mut parser, "a view to subscribe to")?;
                let mut snapshot = true;
                for (option, value) in options(&mut parser)? {
                    match option.as_str() {
                        "snapshot" => snapshot = boolean(&option, &value)?,
                        _ => return Err(failure(format!("unknown SUBSCRIBE option {option} (known: snapshot)"))),
                    }
                }
                if copy {
                    parser.expect_token(&Token::RParen)?;
                    parser.expect_keyword_is(Keyword::TO)?;
                    parser.expect_keyword_is(Keyword::STDOUT)?;
                }
                WeftStatement::Subscribe { view, snapshot, copy }
            }
        };
        end(&mut parser)?;
        Ok(statement)
    })();
    Some(statement.map_err(|error: ParserError| SqlError::Parse(strip_prefix(error))))
}

/// Which statement the leading words announce.
enum Kind {
    CreateFunction { or_replace: bool },
    DropFunction,
    CreateSink,
    CreateSource,
    DropEffect { source: bool },
    RetryEffect,
    Subscribe { copy: bool },
}

/// Whether `sql` may be one of weft's statements: its first word, after whitespace and line
/// comments, is one they start with (or the text starts in a way this does not look into). Most
/// statements are not weft's, and this spares them tokenizing the whole text twice.
fn may_be_weft_statement(sql: &str) -> bool {
    let mut rest = sql.trim_start();
    while let Some(comment) = rest.strip_prefix("--") {
        rest = comment.split_once('\n').map_or("", |(_, after)| after).trim_start();
    }
    if rest.starts_with("/*") {
        return true;
    }
    let end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
    ["CREATE", "DROP", "RETRY", "COPY", "SUBSCRIBE"].iter().any(|first| rest[..end].eq_ignore_ascii_case(first))
}

fn statement_kind(parser: &mut Parser) -> Option<Kind> {
    if parser.parse_keyword(Keyword::CREATE) {
        let or_replace = parser.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
        if parser.parse_keyword(Keyword::FUNCTION) {
            return Some(Kind::CreateFunction { or_replace });
        }
        if or_replace {
            return None;
        }
        if word(parser, "SINK") {
            return Some(Kind::CreateSink);
        }
        return parser.parse_keyword(Keyword::SOURCE).then_some(Kind::CreateSource);
    }
    if parser.parse_keyword(Keyword::DROP) {
        if parser.parse_keyword(Keyword::FUNCTION) {
            return Some(Kind::DropFunction);
        }
        if word(parser, "SINK") {
            return Some(Kind::DropEffect { source: false });
        }
        return parser.parse_keyword(Keyword::SOURCE).then_some(Kind::DropEffect { source: true });
    }
    if word(parser, "RETRY") {
        return word(parser, "EFFECT").then_some(Kind::RetryEffect);
    }
    if parser.parse_keyword(Keyword::COPY) {
        let subscribe = parser.consume_token(&Token::LParen) && word(parser, "SUBSCRIBE");
        return subscribe.then_some(Kind::Subscribe { copy: true });
    }
    word(parser, "SUBSCRIBE").then_some(Kind::Subscribe { copy: false })
}

fn create_function(parser: &mut Parser, or_replace: bool) -> Result<FunctionSpec, ParserError> {
    let name = name(parser)?;
    parser.expect_token(&Token::LParen)?;
    let mut params = Vec::new();
    if !parser.consume_token(&Token::RParen) {
        params = parser.parse_comma_separated(column_type)?;
        parser.expect_token(&Token::RParen)?;
    }
    parser.expect_keyword_is(Keyword::RETURNS)?;
    let returns = column_type(parser)?;
    parser.expect_keyword_is(Keyword::LANGUAGE)?;
    let language = parser.parse_identifier()?;
    if !language.value.eq_ignore_ascii_case("wasm") {
        return Err(failure(format!("LANGUAGE {} is not supported (use LANGUAGE wasm)", language.value)));
    }
    parser.expect_keyword_is(Keyword::AS)?;
    let path = string(parser).map_err(|_| failure("expected a quoted module path after AS".into()))?;
    let mut function = FunctionSpec {
        name,
        or_replace,
        params,
        returns,
        path,
        export: None,
        fuel: None,
        memory_mb: None,
        on_error_null: false,
    };
    loop {
        if parser.parse_keyword(Keyword::EXPORT) {
            function.export =
                Some(string(parser).map_err(|_| failure("expected a quoted export name after EXPORT".into()))?);
        } else if parser.parse_keywords(&[Keyword::ON, Keyword::ERROR, Keyword::NULL]) {
            function.on_error_null = true;
        } else if matches!(parser.peek_token().token, Token::Word(ref word) if word.keyword == Keyword::WITH) {
            for (option, value) in options(parser)? {
                match option.as_str() {
                    "fuel" => function.fuel = Some(number(&option, &value)?),
                    "memory_mb" => function.memory_mb = Some(number(&option, &value)?),
                    _ => return Err(failure(format!("unknown option {option} (use fuel or memory_mb)"))),
                }
            }
        } else {
            return Ok(function);
        }
    }
}

/// `WITH (key = value, ...)` if it comes next: the keys lowercased, the values as written.
fn options(parser: &mut Parser) -> Result<Vec<(String, String)>, ParserError> {
    if !parser.parse_keyword(Keyword::WITH) {
        return Ok(Vec::new());
    }
    parser.expect_token(&Token::LParen)?;
    let options = parser.parse_comma_separated(|parser| {
        let key = parser.parse_identifier()?.value.to_lowercase();
        parser.expect_token(&Token::Eq)?;
        let value = match parser.next_token().token {
            Token::Number(number, _) => number,
            Token::SingleQuotedString(text) => text,
            Token::Word(word) => word.value,
            other => return Err(failure(format!("{key} needs a value, found {other}"))),
        };
        Ok((key, value))
    })?;
    parser.expect_token(&Token::RParen)?;
    Ok(options)
}

fn number(option: &str, value: &str) -> Result<u64, ParserError> {
    value.parse().map_err(|_| failure(format!("{option} needs a whole number, found {value}")))
}

fn boolean(option: &str, value: &str) -> Result<bool, ParserError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        _ => Err(failure(format!("{option} must be true or false, not {value}"))),
    }
}

/// `connector('argument', ...)`.
fn target(parser: &mut Parser) -> Result<TargetSpec, ParserError> {
    let connector = name_of(parser, "a connector (postgres, http, files or effects)")?;
    parser.expect_token(&Token::LParen)?;
    let arguments = parser.parse_comma_separated(|parser| {
        string(parser).map_err(|_| failure(format!("{connector}(...) arguments are quoted strings")))
    })?;
    parser.expect_token(&Token::RParen)?;
    Ok(TargetSpec { connector, arguments })
}

/// A string literal (`'...'`, `E'...'`, `$$...$$`); a bare word is not one.
fn string(parser: &mut Parser) -> Result<String, ParserError> {
    match parser.next_token().token {
        Token::SingleQuotedString(text) | Token::EscapedStringLiteral(text) => Ok(text),
        Token::DollarQuotedString(quoted) => Ok(quoted.value),
        other => Err(failure(format!("expected a quoted string, found {other}"))),
    }
}

/// A name: lowercased unless quoted.
fn name(parser: &mut Parser) -> Result<String, ParserError> {
    name_of(parser, "a name")
}

fn name_of(parser: &mut Parser, what: &str) -> Result<String, ParserError> {
    let found = parser.peek_token().token;
    match parser.parse_identifier() {
        Ok(ident) => Ok(normalized(ident)),
        Err(_) => Err(failure(format!("expected {what}, found {found}"))),
    }
}

/// `(name, ...)`.
fn names(parser: &mut Parser) -> Result<Vec<String>, ParserError> {
    parser.expect_token(&Token::LParen)?;
    let names = parser.parse_comma_separated(|parser| name_of(parser, "a column name"))?;
    parser.expect_token(&Token::RParen)?;
    Ok(names)
}

fn normalized(ident: Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value,
        None => ident.value.to_lowercase(),
    }
}

/// A column type, as SQL spells it (`BIGINT`, `DOUBLE PRECISION`, `VARCHAR(20)`, ...).
fn column_type(parser: &mut Parser) -> Result<ColumnType, ParserError> {
    let data_type = parser.parse_data_type()?;
    column_type_named(&data_type.to_string()).map_err(failure)
}

/// weft's column type for a SQL type name (an argument in parentheses ignored).
pub fn column_type_named(name: &str) -> Result<ColumnType, String> {
    let base = name.split('(').next().unwrap_or(name).trim().to_ascii_uppercase();
    Ok(match base.as_str() {
        "BIGINT" | "INT" | "INTEGER" | "INT8" => ColumnType::BigInt,
        "DOUBLE" | "DOUBLE PRECISION" | "FLOAT" | "FLOAT8" | "REAL" => ColumnType::Double,
        "TEXT" | "VARCHAR" | "CHARACTER VARYING" | "STRING" => ColumnType::Text,
        "BYTEA" => ColumnType::Bytea,
        "BOOLEAN" | "BOOL" => ColumnType::Boolean,
        "TIMESTAMP" => ColumnType::Timestamp,
        _ => return Err(format!("unknown type {name}")),
    })
}

/// Whether the next token is the (non-reserved) word `expected`; consumes it if so.
fn word(parser: &mut Parser, expected: &str) -> bool {
    let matched = matches!(
        parser.peek_token().token,
        Token::Word(ref word) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case(expected)
    );
    if matched {
        parser.next_token();
    }
    matched
}

/// Nothing but `;` may follow.
fn end(parser: &mut Parser) -> Result<(), ParserError> {
    while parser.consume_token(&Token::SemiColon) {}
    match parser.peek_token().token {
        Token::EOF => Ok(()),
        other => Err(failure(format!("unexpected {other}"))),
    }
}

fn failure(message: String) -> ParserError {
    ParserError::ParserError(message)
}

/// sqlparser's message without its `sql parser error: ` prefix (the caller says it is one).
fn strip_prefix(error: ParserError) -> String {
    match error {
        ParserError::ParserError(message) | ParserError::TokenizerError(message) => message,
        ParserError::RecursionLimitExceeded => "statement nested too deeply".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(sql: &str) -> Option<Result<WeftStatement, String>> {
        parse_weft_statement(sql).map(|result| result.map_err(|error| error.to_string()))
    }

    fn error(sql: &str) -> String {
        parsed(sql).expect("a weft statement").expect_err("an error")
    }

    #[test]
    fn only_statements_starting_as_weft_statements_are_tokenized() {
        for text in [
            "CREATE FUNCTION f() RETURNS BIGINT LANGUAGE wasm AS 'm.wat'",
            "  -- a comment\n\tdrop sink s",
            "-- one\n-- two\nSubscribe v",
            "/* a block */ RETRY EFFECT 'x'",
            "copy (subscribe v) to stdout",
        ] {
            assert!(may_be_weft_statement(text), "{text}");
        }
        for text in ["UPDATE t SET a = 1", "SELECT 1", "INSERT INTO t VALUES (1)", "-- CREATE\nSELECT 1", "", "CREATED"]
        {
            assert!(!may_be_weft_statement(text), "{text}");
            assert!(parse_weft_statement(text).is_none(), "{text}");
        }
        // Comments before a weft statement do not hide it.
        assert!(matches!(
            parse_weft_statement("-- drop it\nDROP FUNCTION f"),
            Some(Ok(WeftStatement::DropFunction { .. }))
        ));
    }

    #[test]
    fn functions_parse_with_their_clauses() {
        let Some(Ok(WeftStatement::CreateFunction(function))) = parsed(
            "create or replace function Score(BIGINT, double precision, varchar(20)) returns text language WASM \
             as 'modules/score.wat' export 'run' with (fuel = 1000, memory_mb = 2) on error null;",
        ) else {
            panic!()
        };
        assert_eq!(function.name, "score");
        assert!(function.or_replace && function.on_error_null);
        assert_eq!(function.params, vec![ColumnType::BigInt, ColumnType::Double, ColumnType::Text]);
        assert_eq!(function.returns, ColumnType::Text);
        assert_eq!(function.path, "modules/score.wat");
        assert_eq!((function.export.as_deref(), function.fuel, function.memory_mb), (Some("run"), Some(1000), Some(2)));
        let Some(Ok(WeftStatement::CreateFunction(bare))) =
            parsed("CREATE FUNCTION \"Mixed\"() RETURNS BIGINT LANGUAGE wasm AS 'it''s.wat'")
        else {
            panic!()
        };
        assert_eq!((bare.name.as_str(), bare.path.as_str(), bare.params.len()), ("Mixed", "it's.wat", 0));
        assert_eq!(
            parsed("DROP FUNCTION IF EXISTS f"),
            Some(Ok(WeftStatement::DropFunction { name: "f".into(), if_exists: true }))
        );
        assert!(error("CREATE FUNCTION f(BIGINT) RETURNS BIGINT LANGUAGE python AS 'x'").contains("LANGUAGE python"));
        assert!(error("CREATE FUNCTION f(BIGINT) RETURNS BIGINT LANGUAGE wasm AS x").contains("quoted module path"));
        assert!(error("CREATE FUNCTION f(money) RETURNS BIGINT LANGUAGE wasm AS 'x'").contains("unknown type"));
        assert!(error("CREATE FUNCTION f() RETURNS BIGINT LANGUAGE wasm AS 'x' WITH (speed = 1)")
            .contains("unknown option"));
        assert!(error("CREATE FUNCTION f() RETURNS BIGINT LANGUAGE wasm AS 'x' WITH (fuel = -1)").contains("fuel"));
        assert!(error("CREATE FUNCTION f() RETURNS BIGINT LANGUAGE wasm AS 'x' garbage").contains("unexpected garbage"));
    }

    #[test]
    fn sinks_sources_retries_and_subscriptions_parse() {
        let Some(Ok(WeftStatement::CreateSink { name, view, target, key })) = parsed(
            "CREATE SINK s FROM user_stats INTO postgres('host=127.0.0.1 dbname=app', 'user_stats') KEY (user_id, \"Mixed\");",
        ) else {
            panic!()
        };
        assert_eq!((name.as_str(), view.as_str(), target.connector.as_str()), ("s", "user_stats", "postgres"));
        assert_eq!(target.arguments, vec!["host=127.0.0.1 dbname=app", "user_stats"]);
        assert_eq!(key, vec!["user_id", "Mixed"]);
        let Some(Ok(WeftStatement::CreateSource { columns, poll_ms, .. })) =
            parsed("create source clicks (u TEXT, n BIGINT) from files('d/*.jsonl') with (poll_ms = 50)")
        else {
            panic!()
        };
        assert_eq!(columns, vec![("u".into(), ColumnType::Text), ("n".into(), ColumnType::BigInt)]);
        assert_eq!(poll_ms, Some(50));
        assert_eq!(
            parsed("DROP SINK IF EXISTS s"),
            Some(Ok(WeftStatement::DropEffect { source: false, name: "s".into(), if_exists: true }))
        );
        assert_eq!(parsed("retry effect 'bafy'"), Some(Ok(WeftStatement::RetryEffect { cid: "bafy".into() })));
        assert_eq!(
            parsed("SUBSCRIBE TO \"Mixed\" WITH (SNAPSHOT = false);"),
            Some(Ok(WeftStatement::Subscribe { view: "Mixed".into(), snapshot: false, copy: false }))
        );
        assert_eq!(
            parsed("subscribe revenue"),
            Some(Ok(WeftStatement::Subscribe { view: "revenue".into(), snapshot: true, copy: false }))
        );
        assert_eq!(
            parsed("COPY (SUBSCRIBE TO revenue) TO STDOUT;"),
            Some(Ok(WeftStatement::Subscribe { view: "revenue".into(), snapshot: true, copy: true }))
        );
        assert!(error("COPY (SUBSCRIBE revenue) TO '/tmp/x'").contains("STDOUT"));
        // Other statements are the SQL parser's, even when they mention these words.
        for other in [
            "SELECT 'CREATE SINK'",
            "CREATE TABLE sink (a BIGINT)",
            "CREATE VIEW subscribe AS SELECT 1",
            "DROP TABLE t",
            "COPY (SELECT 1) TO STDOUT",
        ] {
            assert_eq!(parsed(other), None, "{other}");
        }
        assert!(error("CREATE SOURCE s FROM files('x') WITH (speed = 1)").contains("unknown source option"));
        assert!(error("CREATE SINK s FROM v INTO files(x)").contains("quoted strings"));
        assert!(error("CREATE SINK s FROM v INTO files('a.csv') garbage").contains("unexpected garbage"));
        assert!(error("SUBSCRIBE").contains("expected a view"));
        assert!(error("SUBSCRIBE v WITH (progress = true)").contains("unknown SUBSCRIBE option"));
        assert!(error("RETRY EFFECT bafy").contains("quoted string"));
    }
}
