//! What PostgreSQL clients expect besides SQL on weft's relations: session statements (`SET`,
//! `SHOW server_version`, ...), the basics of `pg_catalog` (enough for psql's `\d`, `\dt`, `\dv`
//! and drivers' start-up, kept current as a [`CatalogObserver`]), and the PostgreSQL-only syntax
//! in their catalog queries, adapted on the parsed statement.

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility};
use datafusion::sql::sqlparser::ast::{self, Statement, Visit, VisitMut, Visitor, VisitorMut};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use pgwire::api::Type;
use std::ops::ControlFlow;
use std::sync::{Arc, RwLock};
use weft_core::catalog::{CatalogObserver, ListedRelation};
use weft_core::database::{Database, Output};
use weft_engine::{ColumnType, Row, Value};
use weft_sql::{Planner, RelationProvider, RowSource};

/// The relations of the database as `pg_catalog` lists them, kept current by the database (a
/// [`CatalogObserver`]).
#[derive(Debug, Default)]
pub struct Listing(RwLock<Vec<ListedRelation>>);

impl CatalogObserver for Listing {
    fn relations_changed(&self, relations: Vec<ListedRelation>) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = relations;
    }
}

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
    listing: Arc<Listing>,
}

impl RowSource for PgTable {
    fn rows(&self) -> Result<Vec<Row>, String> {
        let listing = self.listing.0.read().map_err(|_| "catalog lock poisoned".to_string())?;
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

/// Gives `database` the `pg_catalog` tables and the catalog functions PostgreSQL clients call.
pub fn attach_pg_catalog(database: &mut Database) -> Result<(), weft_sql::SqlError> {
    let listing = Arc::new(Listing::default());
    register_pg_catalog(database.planner(), &listing)?;
    database.observe_catalog(listing);
    Ok(())
}

fn register_pg_catalog(planner: &Planner, listing: &Arc<Listing>) -> Result<(), weft_sql::SqlError> {
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
            let listing =
                views.0.read().map_err(|_| datafusion::error::DataFusionError::Execution("catalog".into()))?;
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
        // Prepared statements live in the protocol layer; drivers (psycopg) deallocate them
        // with SQL when they reset their caches.
        "deallocate" => {
            let all = lower.split_whitespace().any(|word| word == "all");
            return Some(Output::Status(if all { "DEALLOCATE ALL" } else { "DEALLOCATE" }.into()));
        }
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
    Some(text_rows(variable, &[value]))
}

/// A `pg_catalog` relation weft does not have (policies, triggers, publications, column
/// defaults, collations, ...): weft has none of those objects, so it is empty.
fn is_absent_catalog_table(name: &ast::ObjectName) -> bool {
    match name.0.as_slice() {
        [schema, table] => {
            let (Some(schema), Some(table)) = (schema.as_ident(), table.as_ident()) else {
                return false;
            };
            schema.value.eq_ignore_ascii_case("pg_catalog") && !PG_TABLES.contains(&table.value.to_lowercase().as_str())
        }
        _ => false,
    }
}

/// Whether `node` reads (in a `FROM` or `JOIN`, not as a table function) a `pg_catalog` table
/// weft does not have.
fn reads_absent_table<N: Visit>(node: &N) -> bool {
    struct Finder;
    impl Visitor for Finder {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &ast::TableFactor) -> ControlFlow<()> {
            match factor {
                ast::TableFactor::Table { name, args: None, .. } if is_absent_catalog_table(name) => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    node.visit(&mut Finder).is_break()
}

/// Whether a client's catalog query reads a `pg_catalog` table weft does not have: weft has
/// none of those objects, so the answer is no rows. Read from the parsed statement: a string
/// literal that mentions such a table is only a string.
pub fn reads_absent_catalog_table(statement: &Statement) -> bool {
    reads_absent_table(statement)
}

/// The last part of a (possibly schema-qualified) name, lower-cased, if the name is
/// unqualified or qualified by `pg_catalog`.
fn catalog_name(name: &ast::ObjectName) -> Option<String> {
    let parts: Vec<&ast::Ident> = name.0.iter().map(|part| part.as_ident()).collect::<Option<_>>()?;
    match parts.as_slice() {
        [name] => Some(name.value.to_lowercase()),
        [schema, name] if schema.value.eq_ignore_ascii_case("pg_catalog") => Some(name.value.to_lowercase()),
        _ => None,
    }
}

/// `CAST(NULL AS TEXT)`.
fn null_text() -> ast::Expr {
    ast::Expr::Cast {
        kind: ast::CastKind::Cast,
        expr: Box::new(ast::Expr::value(ast::Value::Null)),
        data_type: ast::DataType::Text,
        array: false,
        format: None,
    }
}

/// Whether `expr` mentions a column named `column`.
fn mentions_column(expr: &ast::Expr, column: &str) -> bool {
    let mut found = false;
    let _ = ast::visit_expressions(expr, |expr| {
        let name = match expr {
            ast::Expr::Identifier(ident) => Some(ident),
            ast::Expr::CompoundIdentifier(parts) => parts.last(),
            _ => None,
        };
        if name.is_some_and(|ident| ident.value.eq_ignore_ascii_case(column)) {
            found = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    found
}

/// The PostgreSQL-only syntax of client catalog queries, turned into what DataFusion plans.
struct ClientSyntax;

impl VisitorMut for ClientSyntax {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<()> {
        use ast::{BinaryOperator, Expr};
        let replacement = match expr {
            // `a OPERATOR(pg_catalog.~) b` is `a ~ b`.
            Expr::BinaryOp { op: BinaryOperator::PGCustomBinaryOperator(parts), .. } => {
                let operator = match parts.as_slice() {
                    [schema, operator] if schema.eq_ignore_ascii_case("pg_catalog") => operator.as_str(),
                    [operator] => operator.as_str(),
                    _ => return ControlFlow::Continue(()),
                };
                let operator = match operator {
                    "~" => BinaryOperator::PGRegexMatch,
                    "~*" => BinaryOperator::PGRegexIMatch,
                    "!~" => BinaryOperator::PGRegexNotMatch,
                    "!~*" => BinaryOperator::PGRegexNotIMatch,
                    "=" => BinaryOperator::Eq,
                    "<>" | "!=" => BinaryOperator::NotEq,
                    "<" => BinaryOperator::Lt,
                    "<=" => BinaryOperator::LtEq,
                    ">" => BinaryOperator::Gt,
                    ">=" => BinaryOperator::GtEq,
                    _ => return ControlFlow::Continue(()),
                };
                if let Expr::BinaryOp { op, .. } = expr {
                    *op = operator;
                }
                return ControlFlow::Continue(());
            }
            // weft compares text one way: `COLLATE pg_catalog.default` changes nothing.
            Expr::Collate { expr: inner, collation } if catalog_name(collation).as_deref() == Some("default") => {
                std::mem::replace(inner.as_mut(), Expr::value(ast::Value::Null))
            }
            Expr::Cast { expr: inner, data_type, .. } => match data_type {
                ast::DataType::Regclass => std::mem::replace(inner.as_mut(), Expr::value(ast::Value::Null)),
                ast::DataType::Custom(name, modifiers) => match catalog_name(name) {
                    // An object identifier is its number in weft's catalog.
                    Some(name)
                        if matches!(name.as_str(), "regclass" | "regtype" | "regproc" | "regnamespace" | "oid") =>
                    {
                        std::mem::replace(inner.as_mut(), Expr::value(ast::Value::Null))
                    }
                    // `::pg_catalog.text` is `::text`.
                    Some(name)
                        if name.len() < 64
                            && modifiers.is_empty()
                            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                    {
                        if let Ok(bare) = Parser::new(&GenericDialect {})
                            .try_with_sql(&name)
                            .and_then(|mut parser| parser.parse_data_type())
                        {
                            *data_type = bare;
                        }
                        return ControlFlow::Continue(());
                    }
                    _ => return ControlFlow::Continue(()),
                },
                _ => return ControlFlow::Continue(()),
            },
            Expr::Function(function) => {
                let Some(name) = catalog_name(&function.name) else {
                    return ControlFlow::Continue(());
                };
                match name.as_str() {
                    // weft's columns have no default expressions.
                    "pg_get_expr" => null_text(),
                    // weft's relations have no storage options.
                    "array_to_string"
                        if first_argument(function).is_some_and(|first| mentions_column(first, "reloptions")) =>
                    {
                        Expr::value(ast::Value::SingleQuotedString(String::new()))
                    }
                    _ => {
                        // DataFusion's functions have no schema: `pg_catalog.f(...)` is `f(...)`.
                        if function.name.0.len() == 2 {
                            function.name.0.remove(0);
                        }
                        if name == "pg_get_viewdef" {
                            // The pretty-printing flag changes nothing; the oid is a number.
                            if let ast::FunctionArguments::List(list) = &mut function.args {
                                list.args.truncate(1);
                                if let Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(oid))) =
                                    list.args.first_mut()
                                {
                                    let inner = std::mem::replace(oid, Expr::value(ast::Value::Null));
                                    *oid = Expr::Cast {
                                        kind: ast::CastKind::Cast,
                                        expr: Box::new(inner),
                                        data_type: ast::DataType::BigInt(None),
                                        array: false,
                                        format: None,
                                    };
                                }
                            }
                        }
                        return ControlFlow::Continue(());
                    }
                }
            }
            // A scalar subquery over a catalog table weft does not have reads an empty relation:
            // it is NULL (psql's column defaults and collations).
            Expr::Subquery(query) if reads_absent_table(query.as_ref()) => null_text(),
            _ => return ControlFlow::Continue(()),
        };
        *expr = replacement;
        ControlFlow::Continue(())
    }
}

/// The first unnamed argument of a function call.
fn first_argument(function: &ast::Function) -> Option<&ast::Expr> {
    match &function.args {
        ast::FunctionArguments::List(list) => match list.args.first()? {
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(expr)) => Some(expr),
            _ => None,
        },
        _ => None,
    }
}

/// Adapts the PostgreSQL-only syntax of client catalog queries, on the parsed statement, into
/// SQL DataFusion plans: `OPERATOR(pg_catalog.~)`, `COLLATE pg_catalog.default`, `::regclass`,
/// `pg_catalog.` function prefixes and types, and what weft's catalog has no objects for
/// (column defaults, collations, storage options). String literals are never touched.
pub fn adapt_client_syntax(statement: &mut Statement) {
    let _ = VisitMut::visit(statement, &mut ClientSyntax);
}

/// A one-column text result (for `SHOW` and catalog answers).
pub fn text_rows(column: &str, values: &[&str]) -> Output {
    let schema = Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, true)]));
    let array: ArrayRef = Arc::new(StringArray::from(values.to_vec()));
    let batch = RecordBatch::try_new(schema.clone(), vec![array]).expect("one text column");
    Output::Rows { schema, batches: vec![batch] }
}
