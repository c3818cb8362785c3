//! Runs the sqllogictest files under `tests/slt/` against weft's Rust API, twice:
//!
//! 1. as written: each `query` is a plain SELECT (DataFusion over weft's tables);
//! 2. as views: every `query` of the file becomes a materialized view, created as soon as its
//!    tables exist (so before any data is inserted), and the query record reads the view. The
//!    incrementally maintained answer must then match the same expected results.
//!
//! `WEFT_SLT_COMPLETE=1` rewrites the files' expected results from the plain run (for authoring).

use sqllogictest::{DBOutput, DefaultColumnType, QueryExpect, Record};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use weft_core::{Database, Options, Output, Value};

/// A database in a scratch directory that is removed when the database is dropped.
struct ScratchDatabase {
    database: Option<Database>,
    directory: PathBuf,
}

impl std::ops::Deref for ScratchDatabase {
    type Target = Database;
    fn deref(&self) -> &Database {
        self.database.as_ref().expect("open until dropped")
    }
}

impl std::ops::DerefMut for ScratchDatabase {
    fn deref_mut(&mut self) -> &mut Database {
        self.database.as_mut().expect("open until dropped")
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        drop(self.database.take());
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn open_database(label: &str) -> ScratchDatabase {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let serial = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let directory = std::env::temp_dir().join(format!("weft-slt-{}-{label}-{serial}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let database =
        Database::open(Options { data_dir: directory.clone(), workers: 2, sync: false }).expect("open database");
    ScratchDatabase { database: Some(database), directory }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Text(text) if text.is_empty() => "(empty)".into(),
        Value::Text(text) => text.to_string(),
        Value::Float(float) => weft_engine::expr::format_double(*float),
        Value::Timestamp(nanos) => weft_engine::expr::format_timestamp(*nanos),
        Value::Bytes(bytes) => bytes.iter().map(|byte| format!("{byte:02x}")).collect(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
    }
}

fn to_db_output(outputs: Vec<Output>) -> Result<DBOutput<DefaultColumnType>, weft_core::Error> {
    match outputs.into_iter().last() {
        Some(Output::Rows { schema, batches }) => {
            let mut rows = Vec::new();
            for batch in &batches {
                for row in weft_sql::convert::batch_rows(batch)? {
                    rows.push(row.iter().map(text).collect());
                }
            }
            Ok(DBOutput::Rows { types: vec![DefaultColumnType::Any; schema.fields().len()], rows })
        }
        _ => Ok(DBOutput::StatementComplete(0)),
    }
}

/// Runs records as written.
struct Plain(ScratchDatabase);

impl sqllogictest::DB for Plain {
    type Error = weft_core::Error;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, weft_core::Error> {
        to_db_output(self.0.execute(sql)?)
    }
}

/// Answers each query from a materialized view created before the data arrived.
struct AsViews {
    database: ScratchDatabase,
    views: HashMap<String, String>,
    pending: Vec<(String, String)>,
}

impl AsViews {
    fn create_ready_views(&mut self) {
        let mut still_pending = Vec::new();
        for (name, sql) in std::mem::take(&mut self.pending) {
            match self.database.execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}")) {
                Ok(_) => {
                    self.views.insert(sql, name);
                }
                Err(_) => still_pending.push((name, sql)),
            }
        }
        self.pending = still_pending;
    }
}

impl sqllogictest::DB for AsViews {
    type Error = weft_core::Error;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, weft_core::Error> {
        let sql = sql.trim().to_string();
        if let Some(position) = self.pending.iter().position(|(_, pending)| pending == &sql) {
            // Its tables exist by now, so creating the view must work: report why it does not.
            let (name, _) = self.pending.remove(position);
            self.database.execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))?;
            self.views.insert(sql.clone(), name);
        }
        if let Some(view) = self.views.get(&sql) {
            return to_db_output(self.database.execute(&format!("SELECT * FROM {view}"))?);
        }
        let outputs = self.database.execute(&sql)?;
        self.create_ready_views();
        to_db_output(outputs)
    }
}

fn slt_files() -> Vec<PathBuf> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)
        .expect("tests/slt exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", directory.display());
    files
}

fn queries_of(path: &Path) -> Vec<String> {
    let records = sqllogictest::parse_file::<DefaultColumnType>(path).expect("parse slt file");
    let mut queries = Vec::new();
    for record in records {
        if let Record::Query { sql, expected: QueryExpect::Results { .. }, .. } = record {
            let sql = sql.trim().to_string();
            if !queries.contains(&sql) {
                queries.push(sql);
            }
        }
    }
    queries
}

#[test]
fn slt_files_as_plain_queries() {
    for path in slt_files() {
        let label = path.file_stem().unwrap().to_string_lossy().to_string();
        let mut runner = sqllogictest::Runner::new(|| async { Ok(Plain(open_database("plain"))) });
        if std::env::var("WEFT_SLT_COMPLETE").is_ok() {
            futures::executor::block_on(runner.update_test_file(
                &path,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            ))
            .unwrap_or_else(|error| panic!("{label}: {error}"));
            continue;
        }
        runner.run_file(&path).unwrap_or_else(|error| panic!("{label} (plain): {error}"));
    }
}

#[test]
fn slt_files_as_views_created_before_data() {
    for path in slt_files() {
        let label = path.file_stem().unwrap().to_string_lossy().to_string();
        let queries = queries_of(&path);
        let mut runner = sqllogictest::Runner::new(|| {
            let pending =
                queries.iter().enumerate().map(|(index, sql)| (format!("slt_view_{index}"), sql.clone())).collect();
            async move { Ok(AsViews { database: open_database("views"), views: HashMap::new(), pending }) }
        });
        runner.run_file(&path).unwrap_or_else(|error| panic!("{label} (as views): {error}"));
    }
}
