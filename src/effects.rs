//! Sinks and sources as weft sees them: their statements, definitions and row conversions.
//!
//! ```sql
//! CREATE SINK name FROM view INTO postgres('conninfo', 'table') [KEY (column, ...)]
//! CREATE SINK name FROM view INTO http('http://host:port/path')
//! CREATE SINK name FROM view INTO files('out/name.jsonl' | '.csv' | '.parquet')
//! CREATE SOURCE name [(column TYPE, ...)] FROM postgres('conninfo', 'table') [WITH (poll_ms = N)]
//! CREATE SOURCE name [(column TYPE, ...)] FROM files('dir/*.jsonl') [WITH (poll_ms = N)]
//! DROP SINK [IF EXISTS] name;  DROP SOURCE [IF EXISTS] name
//! RETRY EFFECT 'cid'
//! ```
//!
//! sqlparser knows none of these, so they are recognised here by their leading words, like
//! `CREATE FUNCTION`. The definitions are logged in the write-ahead log; the effects themselves
//! live in the outbox ([`crate::executor`]).

use crate::functions::{column_type_named, tokens};
use serde::{Deserialize, Serialize};
use weft_connectors::Target;
use weft_effects::{Column, ColumnKind, Datum};
use weft_engine::{ColumnType, Value};

/// How often a source is read when the statement does not say.
pub const DEFAULT_POLL_MS: u64 = 1000;

/// `CREATE SINK`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SinkDefinition {
    /// The sink's name.
    pub name: String,
    /// The view whose changes it writes.
    pub view: String,
    /// Where they go.
    pub target: Target,
    /// The key columns (empty: every column).
    pub key: Vec<String>,
    /// When the sink was created (ns since the epoch): part of its effects' keys, so a sink
    /// created again under the same name never collides with the old one's keys.
    pub epoch: u64,
}

/// `CREATE SOURCE`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceDefinition {
    /// The source's name, which is also the name of the table it fills.
    pub name: String,
    /// The columns, declared or found when the source was created.
    pub columns: Vec<(String, ColumnType)>,
    /// Where the rows come from.
    pub target: Target,
    /// Milliseconds between reads.
    pub poll_ms: u64,
}

/// A statement about sinks, sources or effects.
#[derive(Debug, PartialEq)]
pub enum EffectStatement {
    /// `CREATE SINK`.
    CreateSink(SinkDefinition),
    /// `CREATE SOURCE`; `columns` are empty when the source is to tell them.
    CreateSource(SourceDefinition),
    /// `DROP SINK` or `DROP SOURCE`.
    Drop { source: bool, name: String, if_exists: bool },
    /// `RETRY EFFECT 'cid'`.
    Retry { cid: String },
}

struct Cursor {
    tokens: Vec<String>,
    at: usize,
}

impl Cursor {
    fn peek(&self) -> Option<String> {
        self.tokens.get(self.at).map(|token| token.to_ascii_uppercase())
    }

    fn next(&mut self, what: &str) -> Result<String, String> {
        let token = self.tokens.get(self.at).cloned().ok_or_else(|| format!("expected {what}, found the end"))?;
        self.at += 1;
        Ok(token)
    }

    fn expect(&mut self, word: &str) -> Result<(), String> {
        let token = self.next(word)?;
        if token.eq_ignore_ascii_case(word) {
            Ok(())
        } else {
            Err(format!("expected {word}, found {token}"))
        }
    }

    fn accept(&mut self, word: &str) -> bool {
        let found = self.peek().is_some_and(|token| token == word.to_ascii_uppercase());
        if found {
            self.at += 1;
        }
        found
    }

    fn name(&mut self, what: &str) -> Result<String, String> {
        let token = self.next(what)?;
        if let Some(quoted) = token.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')) {
            return Ok(quoted.to_string());
        }
        if token.starts_with('\'') || !token.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_') {
            return Err(format!("expected {what}, found {token}"));
        }
        Ok(token.to_lowercase())
    }

    fn names(&mut self, what: &str) -> Result<Vec<String>, String> {
        self.expect("(")?;
        let mut names = vec![self.name(what)?];
        while self.accept(",") {
            names.push(self.name(what)?);
        }
        self.expect(")")?;
        Ok(names)
    }

    fn target(&mut self) -> Result<Target, String> {
        let connector = self.name("a connector (postgres, http or files)")?;
        self.expect("(")?;
        let mut arguments = Vec::new();
        loop {
            let token = self.next("a quoted argument")?;
            let Some(text) = token.strip_prefix('\'') else {
                return Err(format!("{connector}(...) arguments are quoted strings, found {token}"));
            };
            arguments.push(text.to_string());
            if !self.accept(",") {
                break;
            }
        }
        self.expect(")")?;
        let target = Target { connector, arguments };
        target.resource().map_err(|error| error.to_string())?;
        Ok(target)
    }

    fn end(&mut self) -> Result<(), String> {
        self.accept(";");
        match self.tokens.get(self.at) {
            None => Ok(()),
            Some(token) => Err(format!("unexpected {token}")),
        }
    }
}

/// Parses a sink, source or effect statement; `None` when `sql` is something else.
pub fn parse_effect_statement(sql: &str) -> Option<Result<EffectStatement, String>> {
    let tokens = tokens(sql).ok()?;
    let upper: Vec<String> = tokens.iter().take(3).map(|token| token.to_ascii_uppercase()).collect();
    let words: Vec<&str> = upper.iter().map(String::as_str).collect();
    let kind = match words.as_slice() {
        ["CREATE", "SINK", ..] | ["CREATE", "SOURCE", ..] | ["DROP", "SINK", ..] | ["DROP", "SOURCE", ..] => words[1],
        ["RETRY", "EFFECT", ..] => "RETRY",
        _ => return None,
    }
    .to_string();
    let create = words[0] == "CREATE";
    let mut cursor = Cursor { tokens, at: 2 };
    let statement = (|| {
        let statement = match (create, kind.as_str()) {
            (_, "RETRY") => {
                let token = cursor.next("the effect's CID")?;
                let cid = token.strip_prefix('\'').ok_or("RETRY EFFECT takes the CID as a quoted string")?;
                EffectStatement::Retry { cid: cid.to_string() }
            }
            (false, kind) => {
                let if_exists = cursor.accept("IF") && {
                    cursor.expect("EXISTS")?;
                    true
                };
                EffectStatement::Drop { source: kind == "SOURCE", name: cursor.name("a name")?, if_exists }
            }
            (true, "SINK") => {
                let name = cursor.name("the sink's name")?;
                cursor.expect("FROM")?;
                let view = cursor.name("a view")?;
                cursor.expect("INTO")?;
                let target = cursor.target()?;
                if !["postgres", "http", "files", "effects"].contains(&target.connector.as_str()) {
                    return Err(format!("unknown sink connector {}", target.connector));
                }
                let key = if cursor.accept("KEY") { cursor.names("a key column")? } else { Vec::new() };
                EffectStatement::CreateSink(SinkDefinition { name, view, target, key, epoch: 0 })
            }
            (true, _) => {
                let name = cursor.name("the source's name")?;
                let mut columns = Vec::new();
                if cursor.peek().as_deref() == Some("(") {
                    cursor.expect("(")?;
                    loop {
                        let column = cursor.name("a column name")?;
                        let type_name = cursor.next("a column type")?;
                        columns.push((column, column_type_named(&type_name)?));
                        if !cursor.accept(",") {
                            break;
                        }
                    }
                    cursor.expect(")")?;
                }
                cursor.expect("FROM")?;
                let target = cursor.target()?;
                let mut poll_ms = DEFAULT_POLL_MS;
                if cursor.accept("WITH") {
                    cursor.expect("(")?;
                    let option = cursor.name("an option")?;
                    if option != "poll_ms" {
                        return Err(format!("unknown source option {option} (known: poll_ms)"));
                    }
                    cursor.expect("=")?;
                    let value = cursor.next("a number of milliseconds")?;
                    poll_ms = value.parse().map_err(|_| format!("poll_ms must be a number, found {value}"))?;
                    cursor.expect(")")?;
                }
                EffectStatement::CreateSource(SourceDefinition { name, columns, target, poll_ms: poll_ms.max(10) })
            }
        };
        cursor.end()?;
        Ok(statement)
    })();
    Some(statement)
}

/// The connectors' name for a column type.
pub fn column_kind(column_type: ColumnType) -> ColumnKind {
    match column_type {
        ColumnType::Boolean => ColumnKind::Bool,
        ColumnType::BigInt => ColumnKind::Int,
        ColumnType::Double => ColumnKind::Float,
        ColumnType::Text => ColumnKind::Text,
        ColumnType::Bytea => ColumnKind::Bytes,
        ColumnType::Timestamp => ColumnKind::Timestamp,
    }
}

/// weft's column type for a connector's.
pub fn column_type(kind: ColumnKind) -> ColumnType {
    match kind {
        ColumnKind::Bool => ColumnType::Boolean,
        ColumnKind::Int => ColumnType::BigInt,
        ColumnKind::Float => ColumnType::Double,
        ColumnKind::Text => ColumnType::Text,
        ColumnKind::Bytes => ColumnType::Bytea,
        ColumnKind::Timestamp => ColumnType::Timestamp,
    }
}

/// Columns as connectors see them.
pub fn columns_of(columns: &[(String, ColumnType)]) -> Vec<Column> {
    columns.iter().map(|(name, column_type)| Column { name: name.clone(), kind: column_kind(*column_type) }).collect()
}

/// A value as connectors see it.
pub fn datum(value: &Value) -> Datum {
    match value {
        Value::Null => Datum::Null,
        Value::Bool(b) => Datum::Bool(*b),
        Value::Int(i) => Datum::Int(*i),
        Value::Float(f) => Datum::Float(*f),
        Value::Text(text) => Datum::Text(text.to_string()),
        Value::Bytes(bytes) => Datum::Bytes(bytes.clone()),
        Value::Timestamp(t) => Datum::Timestamp(*t),
    }
}

/// A connector's value as a weft value.
pub fn value(datum: &Datum) -> Value {
    match datum {
        Datum::Null => Value::Null,
        Datum::Bool(b) => Value::Bool(*b),
        Datum::Int(i) => Value::Int(*i),
        Datum::Float(f) => Value::float(*f),
        Datum::Text(text) => Value::Text(text.as_str().into()),
        Datum::Bytes(bytes) => Value::Bytes(bytes.clone()),
        Datum::Timestamp(t) => Value::Timestamp(*t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_parse_and_bad_ones_say_why() {
        let sink = parse_effect_statement(
            "CREATE SINK s FROM user_stats INTO postgres('host=127.0.0.1 dbname=app', 'user_stats') KEY (user_id, \"Mixed\");",
        );
        let Some(Ok(EffectStatement::CreateSink(definition))) = sink else { panic!("{sink:?}") };
        assert_eq!(definition.view, "user_stats");
        assert_eq!(definition.key, vec!["user_id", "Mixed"]);
        assert_eq!(definition.target.arguments[1], "user_stats");
        let source = parse_effect_statement(
            "create source clicks (u TEXT, n BIGINT) from files('d/*.jsonl') with (poll_ms = 50)",
        );
        let Some(Ok(EffectStatement::CreateSource(definition))) = source else { panic!("{source:?}") };
        assert_eq!(definition.columns, vec![("u".into(), ColumnType::Text), ("n".into(), ColumnType::BigInt)]);
        assert_eq!(definition.poll_ms, 50);
        assert_eq!(
            parse_effect_statement("DROP SINK IF EXISTS s"),
            Some(Ok(EffectStatement::Drop { source: false, name: "s".into(), if_exists: true }))
        );
        assert!(parse_effect_statement("SELECT 1").is_none());
        let error = |sql: &str| parse_effect_statement(sql).unwrap().unwrap_err();
        assert!(error("CREATE SINK s FROM v INTO ftp('x')").contains("unknown connector ftp"));
        assert!(error("CREATE SINK s FROM v INTO http('ftp://x')").contains("http://"));
        assert!(error("CREATE SINK s FROM v INTO postgres('host=x')").contains("2 argument"));
        assert!(error("CREATE SOURCE s FROM files('x') WITH (speed = 1)").contains("unknown source option"));
        assert!(error("CREATE SINK s FROM v INTO files('a.csv') garbage").contains("unexpected garbage"));
    }
}
