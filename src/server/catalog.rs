//! What PostgreSQL clients expect besides SQL on weft's relations: session statements (`SET`,
//! `SHOW server_version`, ...), the basics of `pg_catalog` (enough for psql's `\d`, `\dt`, `\dv`
//! and drivers' start-up), the PostgreSQL-only syntax in their catalog queries, and `$n`
//! parameters (counting, typing and binding them).

use super::Shared;
use crate::database::{Error, Output, Reader};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility};
use datafusion::sql::sqlparser::ast::{self, SetExpr, Statement};
use pgwire::api::Type;
use regex::Regex;
use std::sync::{Arc, LazyLock, RwLock};
use weft_engine::{ColumnType, Row, Value};
use weft_sql::{Planner, RelationProvider, RowSource};

/// A table or view as the catalog lists it.
#[derive(Clone, Debug)]
pub struct ListedRelation {
    pub id: u64,
    pub name: String,
    pub is_view: bool,
    pub columns: Vec<(String, ColumnType)>,
    pub definition: Option<String>,
}

/// The relations of the database, kept current by [`crate::Database`] for catalog queries.
pub type Listing = Arc<RwLock<Vec<ListedRelation>>>;

const NAMESPACE_PG_CATALOG: i64 = 11;
const NAMESPACE_PUBLIC: i64 = 2200;
const FIRST_RELATION_OID: i64 = 16384;

/// The `pg_catalog` tables weft provides.
const PG_TABLES: [&str; 10] = [
    "pg_namespace",
    "pg_class",
    "pg_attribute",
    "pg_type",
    "pg_am",
    "pg_database",
    "pg_index",
    "pg_description",
    "pg_inherits",
    "pg_constraint",
];

/// PostgreSQL type OID and name of a weft column type.
fn type_of(column_type: ColumnType) -> (i64, &'static str) {
    match column_type {
        ColumnType::Boolean => (16, "boolean"),
        ColumnType::BigInt => (20, "bigint"),
        ColumnType::Double => (701, "double precision"),
        ColumnType::Text => (25, "text"),
        ColumnType::Bytea => (17, "bytea"),
        ColumnType::Timestamp => (1114, "timestamp without time zone"),
    }
}

#[derive(Debug)]
struct PgTable {
    name: &'static str,
    listing: Listing,
}

impl RowSource for PgTable {
    fn rows(&self) -> Result<Vec<Row>, String> {
        let listing = self.listing.read().map_err(|_| "catalog lock poisoned".to_string())?;
        let text = |value: &str| Value::Text(value.into());
        let oid = |relation: &ListedRelation| Value::Int(FIRST_RELATION_OID + relation.id as i64);
        let rows: Vec<Vec<Value>> = match self.name {
            "pg_namespace" => vec![
                vec![Value::Int(NAMESPACE_PG_CATALOG), text("pg_catalog"), Value::Int(10)],
                vec![Value::Int(NAMESPACE_PUBLIC), text("public"), Value::Int(10)],
            ],
            "pg_class" => listing
                .iter()
                .map(|relation| {
                    vec![
                        oid(relation),
                        text(&relation.name),
                        Value::Int(NAMESPACE_PUBLIC),
                        text(if relation.is_view { "v" } else { "r" }),
                        Value::Int(10),
                        Value::Int(if relation.is_view { 0 } else { 2 }),
                        Value::Bool(false),
                        text("p"),
                        Value::Bool(false),
                        Value::Int(relation.columns.len() as i64),
                        Value::Int(0),
                        Value::Int(0),
                        Value::Int(0),
                        Value::Bool(false),
                        Value::Bool(false),
                        Value::Bool(false),
                        Value::Bool(false),
                        Value::Int(0),
                        text("d"),
                        Value::Null,
                    ]
                })
                .collect(),
            "pg_attribute" => listing
                .iter()
                .flat_map(|relation| {
                    relation.columns.iter().enumerate().map(move |(index, (column, column_type))| {
                        vec![
                            oid(relation),
                            text(column),
                            Value::Int(type_of(*column_type).0),
                            Value::Int(index as i64 + 1),
                            Value::Bool(false),
                            Value::Bool(false),
                            Value::Bool(false),
                            Value::Int(-1),
                            text(""),
                            text(""),
                            Value::Int(0),
                        ]
                    })
                })
                .collect(),
            "pg_type" => [16, 17, 18, 19, 20, 21, 23, 25, 26, 700, 701, 705, 1043, 1082, 1114, 1184, 1700]
                .into_iter()
                .filter_map(|oid| {
                    let ty = Type::from_oid(oid as u32)?;
                    Some(vec![Value::Int(oid), text(ty.name()), Value::Int(NAMESPACE_PG_CATALOG), text("b")])
                })
                .collect(),
            "pg_am" => vec![vec![Value::Int(2), text("heap")]],
            "pg_database" => vec![vec![Value::Int(1), text("weft"), Value::Int(10), text("UTF8")]],
            _ => Vec::new(),
        };
        Ok(rows)
    }
}

fn pg_table_columns(name: &str) -> Vec<(&'static str, ColumnType)> {
    use ColumnType::*;
    match name {
        "pg_namespace" => vec![("oid", BigInt), ("nspname", Text), ("nspowner", BigInt)],
        "pg_class" => vec![
            ("oid", BigInt),
            ("relname", Text),
            ("relnamespace", BigInt),
            ("relkind", Text),
            ("relowner", BigInt),
            ("relam", BigInt),
            ("relhasindex", Boolean),
            ("relpersistence", Text),
            ("relispartition", Boolean),
            ("relnatts", BigInt),
            ("reltablespace", BigInt),
            ("reloftype", BigInt),
            ("relchecks", BigInt),
            ("relhasrules", Boolean),
            ("relhastriggers", Boolean),
            ("relrowsecurity", Boolean),
            ("relforcerowsecurity", Boolean),
            ("reltoastrelid", BigInt),
            ("relreplident", Text),
            ("reloptions", Text),
        ],
        "pg_attribute" => vec![
            ("attrelid", BigInt),
            ("attname", Text),
            ("atttypid", BigInt),
            ("attnum", BigInt),
            ("attnotnull", Boolean),
            ("attisdropped", Boolean),
            ("atthasdef", Boolean),
            ("atttypmod", BigInt),
            ("attidentity", Text),
            ("attgenerated", Text),
            ("attcollation", BigInt),
        ],
        "pg_type" => vec![("oid", BigInt), ("typname", Text), ("typnamespace", BigInt), ("typtype", Text)],
        "pg_am" => vec![("oid", BigInt), ("amname", Text)],
        "pg_database" => vec![("oid", BigInt), ("datname", Text), ("datdba", BigInt), ("encoding", Text)],
        "pg_index" => vec![("indexrelid", BigInt), ("indrelid", BigInt), ("indisprimary", Boolean)],
        "pg_description" => vec![("objoid", BigInt), ("classoid", BigInt), ("objsubid", BigInt), ("description", Text)],
        "pg_inherits" => {
            vec![("inhrelid", BigInt), ("inhparent", BigInt), ("inhseqno", BigInt), ("inhdetachpending", Boolean)]
        }
        "pg_constraint" => vec![("oid", BigInt), ("conname", Text), ("conrelid", BigInt), ("contype", Text)],
        _ => Vec::new(),
    }
}

/// Registers the `pg_catalog` tables and the catalog functions clients call.
pub fn register_pg_catalog(planner: &Planner, listing: &Listing) -> Result<(), weft_sql::SqlError> {
    if let Some(catalog) = planner.context().catalog("datafusion") {
        catalog.register_schema("pg_catalog", Arc::new(datafusion::catalog::MemorySchemaProvider::new()))?;
    }
    for name in PG_TABLES {
        let columns: Vec<(String, ColumnType)> =
            pg_table_columns(name).into_iter().map(|(column, ty)| (column.to_string(), ty)).collect();
        let source = Arc::new(PgTable { name, listing: listing.clone() });
        let provider =
            RelationProvider::new(RelationProvider::SYSTEM, false, weft_sql::convert::schema_of(&columns), source);
        planner.register(&format!("pg_catalog.{name}"), Arc::new(provider))?;
    }
    let context = planner.context();
    let constant = |name: &str, input: Vec<DataType>, output: DataType, value: datafusion::scalar::ScalarValue| {
        let value = value.clone();
        datafusion::logical_expr::create_udf(
            name,
            input,
            output,
            Volatility::Stable,
            Arc::new(move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(value.clone()))),
        )
    };
    use datafusion::scalar::ScalarValue;
    let text = |value: &str| ScalarValue::Utf8(Some(value.to_string()));
    let udfs: Vec<ScalarUDF> = vec![
        constant("pg_get_userbyid", vec![DataType::Int64], DataType::Utf8, text("weft")),
        constant("pg_table_is_visible", vec![DataType::Int64], DataType::Boolean, ScalarValue::Boolean(Some(true))),
        constant("obj_description", vec![DataType::Int64, DataType::Utf8], DataType::Utf8, ScalarValue::Utf8(None)),
        constant("col_description", vec![DataType::Int64, DataType::Int64], DataType::Utf8, ScalarValue::Utf8(None)),
        constant(
            "version",
            vec![],
            DataType::Utf8,
            text(&format!("PostgreSQL 16.0 (weft {})", env!("CARGO_PKG_VERSION"))),
        ),
        constant("current_schema", vec![], DataType::Utf8, text("public")),
        constant("current_database", vec![], DataType::Utf8, text("weft")),
        constant("current_user", vec![], DataType::Utf8, text("weft")),
        constant("pg_encoding_to_char", vec![DataType::Int64], DataType::Utf8, text("UTF8")),
    ];
    for udf in udfs {
        context.register_udf(udf);
    }
    context.register_udf(datafusion::logical_expr::create_udf(
        "format_type",
        vec![DataType::Int64, DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let oids = datafusion::arrow::compute::cast(&arrays[0], &DataType::Int64)?;
            let oids = oids.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().expect("int64");
            let names: datafusion::arrow::array::StringArray = oids
                .iter()
                .map(|oid| oid.and_then(|oid| Type::from_oid(oid as u32)).map(|ty| type_display_name(&ty)))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(names)))
        }),
    ));
    let views = listing.clone();
    context.register_udf(datafusion::logical_expr::create_udf(
        "pg_get_viewdef",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let oids = datafusion::arrow::compute::cast(&arrays[0], &DataType::Int64)?;
            let oids = oids.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().expect("int64");
            let listing = views.read().map_err(|_| datafusion::error::DataFusionError::Execution("catalog".into()))?;
            let definitions: datafusion::arrow::array::StringArray = oids
                .iter()
                .map(|oid| {
                    let oid = oid?;
                    listing
                        .iter()
                        .find(|relation| FIRST_RELATION_OID + relation.id as i64 == oid)
                        .and_then(|relation| relation.definition.clone())
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(definitions)))
        }),
    ));
    Ok(())
}

fn type_display_name(ty: &Type) -> String {
    match *ty {
        Type::INT8 => "bigint".into(),
        Type::INT4 => "integer".into(),
        Type::INT2 => "smallint".into(),
        Type::FLOAT8 => "double precision".into(),
        Type::FLOAT4 => "real".into(),
        Type::BOOL => "boolean".into(),
        Type::TIMESTAMP => "timestamp without time zone".into(),
        Type::TIMESTAMPTZ => "timestamp with time zone".into(),
        Type::VARCHAR => "character varying".into(),
        _ => ty.name().to_string(),
    }
}

/// Answers statements about the session rather than the data (`SET`, `SHOW server_version`, ...).
pub fn answer_session_statement(text: &str) -> Option<Output> {
    let trimmed = text.trim().trim_end_matches(';').trim();
    let lower = trimmed.to_lowercase();
    let first = lower.split_whitespace().next()?;
    match first {
        "set" => return Some(Output::Status("SET".into())),
        "reset" => return Some(Output::Status("RESET".into())),
        "discard" => return Some(Output::Status("DISCARD ALL".into())),
        "show" => {}
        _ => return None,
    }
    let variable = lower["show".len()..].trim().trim_matches('"');
    let value = match variable {
        "server_version" => "16.0",
        "server_version_num" => "160000",
        "server_encoding" | "client_encoding" => "UTF8",
        "datestyle" => "ISO, MDY",
        "timezone" | "time zone" => "UTC",
        "transaction isolation level" | "transaction_isolation" | "default_transaction_isolation" => "serializable",
        "standard_conforming_strings" | "integer_datetimes" => "on",
        "search_path" => "public",
        "max_identifier_length" => "63",
        "application_name" => "",
        "is_superuser" => "on",
        "intervalstyle" => "postgres",
        _ => return None,
    };
    Some(super::text_rows(variable, &[value]))
}

static OPERATOR: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"OPERATOR\(pg_catalog\.([^)]+)\)").expect("regex"));
static COLLATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?i)\s+COLLATE\s+pg_catalog\."?default"?"#).expect("regex"));
static REG_CAST: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"::(pg_catalog\.)?(regclass|regtype|regproc|regnamespace|oid)\b").expect("regex"));
static TOAST_OPTIONS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:pg_catalog\.)?array_to_string\(c\.reloptions \|\| array\(select 'toast\.' \|\| x from (?:pg_catalog\.)?unnest\(tc\.reloptions\) x\), ', '\)").expect("regex")
});
/// psql's correlated subqueries for column defaults and collations: weft has neither.
static COLUMN_EXTRAS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)\(SELECT (?:pg_catalog\.)?pg_get_expr\(d\.adbin.*?a\.atthasdef\)|\(SELECT c\.collname FROM .*?a\.attcollation <> t\.typcollation\)").expect("regex")
});
static QUALIFIED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(::)?\bpg_catalog\.(\w+)(\s*\()?").expect("regex"));
static FUNCTIONS_WITHOUT_EXPRESSIONS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:pg_catalog\.)?pg_get_expr\([^()]*\)").expect("regex"));
static VIEW_DEFINITION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:pg_catalog\.)?pg_get_viewdef\(([^,()]+)(?:,\s*\w+)?\)").expect("regex"));

/// Rewrites the PostgreSQL-only syntax of client catalog queries into SQL DataFusion plans:
/// `OPERATOR(pg_catalog.~)`, `COLLATE pg_catalog.default`, `::regclass` and `pg_catalog.`
/// function prefixes. Other statements are returned unchanged.
pub fn rewrite_client_query(text: &str) -> String {
    if !text.contains("pg_catalog") && !text.contains("::reg") {
        return text.to_string();
    }
    let text = TOAST_OPTIONS.replace_all(text, "''");
    let text = COLUMN_EXTRAS.replace_all(&text, "CAST(NULL AS TEXT)");
    let text = OPERATOR.replace_all(&text, " $1 ");
    let text = COLLATE.replace_all(&text, "");
    let text = REG_CAST.replace_all(&text, "");
    let text = FUNCTIONS_WITHOUT_EXPRESSIONS.replace_all(&text, "CAST(NULL AS TEXT)");
    let text = VIEW_DEFINITION.replace_all(&text, "pg_get_viewdef(CAST($1 AS BIGINT))");
    // Functions and types lose the schema (DataFusion has no schema-qualified ones); tables
    // keep it.
    QUALIFIED
        .replace_all(&text, |captures: &regex::Captures| {
            let name = &captures[2];
            match (captures.get(1), captures.get(3)) {
                (Some(_), _) => format!("::{name}"),
                (None, Some(call)) => format!("{name}{}", call.as_str()),
                (None, None) => format!("pg_catalog.{name}"),
            }
        })
        .into_owned()
}

static CATALOG_TABLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(?:FROM|JOIN)\s+pg_catalog\.(\w+)\s*(\(?)").expect("regex"));

/// Whether a client's catalog query reads a `pg_catalog` table weft does not have (row-level
/// policies, triggers, publications, ...): weft has none of those objects, so the answer is no
/// rows.
pub fn reads_absent_catalog_table(text: &str) -> bool {
    CATALOG_TABLE.captures_iter(text).any(|captures| {
        let is_function = !captures[2].is_empty();
        !is_function && !PG_TABLES.contains(&captures[1].to_lowercase().as_str())
    })
}

/// Calls `found(start, end, number)` for each `$n` outside quotes and comments.
fn scan_placeholders(text: &str, mut found: impl FnMut(usize, usize, usize)) {
    let bytes = text.as_bytes();
    let mut index = 0;
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
                let start = index;
                index += 1;
                while index < bytes.len() && bytes[index].is_ascii_digit() {
                    index += 1;
                }
                if let Ok(number) = text[start + 1..index].parse::<usize>() {
                    found(start, index, number);
                }
            }
            _ => index += 1,
        }
    }
}

/// The number of parameters: the highest `$n`.
pub fn placeholder_count(text: &str) -> usize {
    let mut count = 0;
    scan_placeholders(text, |_, _, number| count = count.max(number));
    count
}

/// `text` with each `$n` replaced by `literals[n - 1]` (placeholders without a literal stay).
pub fn substitute_placeholders(text: &str, literals: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    scan_placeholders(text, |start, end, number| {
        if let Some(literal) = number.checked_sub(1).and_then(|index| literals.get(index)) {
            out.push_str(&text[copied..start]);
            out.push_str(literal);
            copied = end;
        }
    });
    out.push_str(&text[copied..]);
    out
}

/// The columns `sql` returns, or `None` for a statement without rows.
pub fn result_schema(shared: &Shared, sql: &str) -> Result<Option<SchemaRef>, Error> {
    if let Some(output) = answer_session_statement(sql) {
        return Ok(match output {
            Output::Rows { schema, .. } => Some(schema),
            Output::Status(_) => None,
        });
    }
    let text = rewrite_client_query(sql);
    let statements = weft_sql::parse(&text)?;
    Ok(match statements.as_slice() {
        [statement] if Reader::can_run(statement) => Some(shared.reader.describe(statement.clone())?.0),
        [Statement::Explain { .. }] => match super::text_rows("plan", &[]) {
            Output::Rows { schema, .. } => Some(schema),
            Output::Status(_) => None,
        },
        _ => None,
    })
}

/// The types of the `count` parameters of `sql`, where weft can tell them.
pub fn parameter_types(shared: &Shared, sql: &str, count: usize) -> Vec<Option<Type>> {
    let mut types = vec![None; count];
    let text = rewrite_client_query(sql);
    let Ok(mut statements) = weft_sql::parse(&substitute_placeholders(&text, &[])) else {
        return types;
    };
    let Some(statement) = statements.pop() else {
        return types;
    };
    let from_query = |statement: Statement, types: &mut Vec<Option<Type>>| {
        if let Ok((_, found)) = shared.reader.describe(statement) {
            for (index, data_type) in found.into_iter().enumerate() {
                if let (Some(slot), Some(data_type)) = (types.get_mut(index), data_type) {
                    slot.get_or_insert(super::pg::column_pg_type_of_arrow(&data_type));
                }
            }
        }
    };
    match statement {
        Statement::Insert(insert) => {
            let name = insert.table.to_string().trim_matches('"').to_lowercase();
            let columns =
                shared.with_database(|database| database.relation(&name).map(|relation| relation.columns.clone()));
            let (Some(columns), Some(source)) = (columns, insert.source.as_ref()) else {
                return types;
            };
            let positions: Vec<usize> = if insert.columns.is_empty() {
                (0..columns.len()).collect()
            } else {
                insert
                    .columns
                    .iter()
                    .filter_map(|ident| {
                        columns
                            .iter()
                            .position(|(column, _)| column.eq_ignore_ascii_case(ident.to_string().trim_matches('"')))
                    })
                    .collect()
            };
            if let SetExpr::Values(values) = source.body.as_ref() {
                for row in &values.rows {
                    for (expr, position) in row.iter().zip(&positions) {
                        if let Some(index) = placeholder_index(expr) {
                            if let (Some(slot), Some((_, ty))) = (types.get_mut(index), columns.get(*position)) {
                                slot.get_or_insert(super::pg::column_pg_type(*ty));
                            }
                        }
                    }
                }
            }
        }
        Statement::Update(update) => {
            let table = update.table.relation.to_string();
            let mut select = format!("SELECT * FROM {table}");
            if let Some(selection) = &update.selection {
                select.push_str(&format!(" WHERE {selection}"));
            }
            let name = table.trim_matches('"').to_lowercase();
            let columns =
                shared.with_database(|database| database.relation(&name).map(|relation| relation.columns.clone()));
            for assignment in &update.assignments {
                let target = assignment.target.to_string().trim_matches('"').to_lowercase();
                if let (Some(index), Some(columns)) = (placeholder_index(&assignment.value), &columns) {
                    if let (Some(slot), Some((_, ty))) =
                        (types.get_mut(index), columns.iter().find(|(column, _)| *column == target))
                    {
                        slot.get_or_insert(super::pg::column_pg_type(*ty));
                    }
                }
            }
            if let Ok(mut parsed) = weft_sql::parse(&select) {
                if let Some(statement) = parsed.pop() {
                    from_query(statement, &mut types);
                }
            }
        }
        Statement::Delete(delete) => {
            let tables = match &delete.from {
                ast::FromTable::WithFromKeyword(tables) | ast::FromTable::WithoutKeyword(tables) => tables.clone(),
            };
            if let (Some(table), Some(selection)) = (tables.first(), &delete.selection) {
                if let Ok(mut parsed) = weft_sql::parse(&format!("SELECT * FROM {} WHERE {selection}", table.relation))
                {
                    if let Some(statement) = parsed.pop() {
                        from_query(statement, &mut types);
                    }
                }
            }
        }
        statement if Reader::can_run(&statement) => from_query(statement, &mut types),
        _ => {}
    }
    types
}

/// The index of a `$n` placeholder expression.
fn placeholder_index(expr: &ast::Expr) -> Option<usize> {
    match expr {
        ast::Expr::Value(value) => match &value.value {
            ast::Value::Placeholder(text) => text.strip_prefix('$')?.parse::<usize>().ok()?.checked_sub(1),
            _ => None,
        },
        ast::Expr::Cast { expr, .. } | ast::Expr::Nested(expr) => placeholder_index(expr),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{placeholder_count, rewrite_client_query, substitute_placeholders};

    #[test]
    fn placeholders_outside_quotes_are_found_and_replaced() {
        let sql = "SELECT '$1', \"$2\", $1 + $12 -- $3\nFROM t";
        assert_eq!(placeholder_count(sql), 12);
        let literals: Vec<String> = (1..=12).map(|n| format!("<{n}>")).collect();
        assert_eq!(substitute_placeholders(sql, &literals), "SELECT '$1', \"$2\", <1> + <12> -- $3\nFROM t");
    }

    #[test]
    fn psql_catalog_syntax_is_rewritten() {
        let sql = "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid) AND x::pg_catalog.regclass = 1";
        assert_eq!(
            rewrite_client_query(sql),
            "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname  ~  '^(t)$' AND pg_table_is_visible(c.oid) AND x = 1"
        );
    }
}
