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

use serde::{Deserialize, Serialize};
use weft_connectors::Target;
use weft_effects::{Column, ColumnKind, Datum};
use weft_engine::{ColumnType, Value};
use weft_sql::statement::WeftStatement;

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
    Drop {
        /// A source (else a sink).
        source: bool,
        /// Its name.
        name: String,
        /// A missing one is no error.
        if_exists: bool,
    },
    /// `RETRY EFFECT 'cid'`.
    Retry {
        /// The effect's CID.
        cid: String,
    },
}

/// The effect statement a parsed weft statement is, if it is one.
pub fn effect_statement(statement: WeftStatement) -> Option<Result<EffectStatement, String>> {
    let target = |spec: weft_sql::statement::TargetSpec| -> Result<Target, String> {
        let target = Target { connector: spec.connector, arguments: spec.arguments };
        target.resource().map_err(|error| error.to_string())?;
        Ok(target)
    };
    Some(match statement {
        WeftStatement::CreateSink { name, view, target: spec, key } => target(spec).and_then(|target| {
            if !["postgres", "http", "files", "effects"].contains(&target.connector.as_str()) {
                return Err(format!("unknown sink connector {}", target.connector));
            }
            Ok(EffectStatement::CreateSink(SinkDefinition { name, view, target, key, epoch: 0 }))
        }),
        WeftStatement::CreateSource { name, columns, target: spec, poll_ms } => target(spec).map(|target| {
            let poll_ms = poll_ms.unwrap_or(DEFAULT_POLL_MS).max(10);
            EffectStatement::CreateSource(SourceDefinition { name, columns, target, poll_ms })
        }),
        WeftStatement::DropEffect { source, name, if_exists } => Ok(EffectStatement::Drop { source, name, if_exists }),
        WeftStatement::RetryEffect { cid } => Ok(EffectStatement::Retry { cid }),
        _ => return None,
    })
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

    fn parsed(sql: &str) -> Result<EffectStatement, String> {
        let statement = weft_sql::statement::parse_weft_statement(sql).unwrap().map_err(|error| error.to_string())?;
        effect_statement(statement).unwrap()
    }

    #[test]
    fn statements_become_effect_statements_and_bad_targets_say_why() {
        let Ok(EffectStatement::CreateSink(definition)) = parsed(
            "CREATE SINK s FROM user_stats INTO postgres('host=127.0.0.1 dbname=app', 'user_stats') KEY (user_id, \"Mixed\");",
        ) else {
            panic!()
        };
        assert_eq!(definition.view, "user_stats");
        assert_eq!(definition.key, vec!["user_id", "Mixed"]);
        assert_eq!(definition.target.arguments[1], "user_stats");
        let Ok(EffectStatement::CreateSource(definition)) =
            parsed("create source clicks (u TEXT, n BIGINT) from files('d/*.jsonl') with (poll_ms = 5)")
        else {
            panic!()
        };
        assert_eq!(definition.columns, vec![("u".into(), ColumnType::Text), ("n".into(), ColumnType::BigInt)]);
        assert_eq!(definition.poll_ms, 10, "polling is at most every 10 ms");
        assert_eq!(
            parsed("DROP SOURCE s"),
            Ok(EffectStatement::Drop { source: true, name: "s".into(), if_exists: false })
        );
        assert!(parsed("CREATE SINK s FROM v INTO ftp('x')").unwrap_err().contains("unknown connector ftp"));
        assert!(parsed("CREATE SINK s FROM v INTO http('ftp://x')").unwrap_err().contains("http://"));
        assert!(parsed("CREATE SINK s FROM v INTO postgres('host=x')").unwrap_err().contains("2 argument"));
    }
}
