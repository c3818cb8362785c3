//! `COPY table FROM 'file'` and `COPY table|(query) TO 'file'` for CSV (with a header row),
//! Parquet and JSON lines; the format comes from `WITH (FORMAT ...)` or the file extension.
//!
//! Files are read and written with DataFusion and Arrow. A load is one transaction: every row
//! is checked against the table (types, primary key) before any is committed, so a bad file
//! changes nothing. Loads of many rows report their progress to the database's [`LoadProgress`],
//! if it has one (the CLI draws a progress bar).

use super::{Database, Error, Output};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions};
use datafusion::sql::sqlparser::ast::{CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement};
use std::fs::File;
use std::path::Path;
use weft_connectors::files::FileFormat;
use weft_engine::{Row, Value};
use weft_sql::convert::batch_rows;

fn file_error(path: &Path, message: impl ToString) -> Error {
    Error::File { path: path.to_path_buf(), message: message.to_string() }
}

/// Rows loaded at once before progress is worth reporting.
const PROGRESS_THRESHOLD_ROWS: usize = 100_000;

/// Told how a large `COPY ... FROM` load goes (one of at least 100,000 rows): a front end's
/// progress bar. Calls come in order: `started`, `converted` (any number), `committing`, `finished`.
pub trait LoadProgress: Send + Sync {
    /// Loading `total_rows` rows into `table` begins.
    fn started(&self, table: &str, total_rows: u64);
    /// `rows` more rows were read and checked.
    fn converted(&self, rows: u64);
    /// Every row is read; the load is being committed.
    fn committing(&self, table: &str);
    /// The load committed or failed.
    fn finished(&self);
}

/// Executes a parsed COPY statement.
pub fn copy(
    database: &mut Database,
    source: CopySource,
    to: bool,
    target: CopyTarget,
    options: &[CopyOption],
    legacy_options: &[CopyLegacyOption],
) -> Result<Output, Error> {
    let CopyTarget::File { filename } = target else {
        return Err(Error::Unsupported("COPY to or from STDIN, STDOUT or a program; name a file".into()));
    };
    let path = database.access().file(&filename)?;
    let mut format = None;
    for option in options {
        if let CopyOption::Format(name) = option {
            format =
                Some(FileFormat::from_name(&name.value).ok_or_else(|| {
                    Error::Unsupported(format!("COPY format {} (use csv, parquet or json)", name.value))
                })?);
        }
    }
    if legacy_options.iter().any(|option| matches!(option, CopyLegacyOption::Binary)) {
        return Err(Error::Unsupported("COPY ... BINARY".into()));
    }
    let format = match format.or_else(|| FileFormat::from_path(&path)) {
        Some(format) => format,
        None => {
            return Err(file_error(&path, "cannot tell the format: use .csv, .parquet or .jsonl, or WITH (FORMAT ...)"))
        }
    };
    if to {
        copy_to(database, source, &path, format)
    } else {
        copy_from(database, source, &path, format)
    }
}

fn copy_to(database: &mut Database, source: CopySource, path: &Path, format: FileFormat) -> Result<Output, Error> {
    let statement = match source {
        CopySource::Query(query) => Statement::Query(query),
        CopySource::Table { table_name, columns } => {
            let columns = if columns.is_empty() {
                "*".to_string()
            } else {
                columns.iter().map(|column| column.to_string()).collect::<Vec<_>>().join(", ")
            };
            weft_sql::parse(&format!("SELECT {columns} FROM {table_name}"))?.pop().expect("one statement")
        }
    };
    let Output::Rows { schema, batches } = database.select(statement)? else { unreachable!("a query returns rows") };
    let rows = write_batches(path, format, &schema, &batches)?;
    Ok(Output::Status(format!("COPY {rows}")))
}

/// Writes record batches to a file in `format`, returning the number of rows.
pub fn write_batches(
    path: &Path,
    format: FileFormat,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
) -> Result<usize, Error> {
    let file = File::create(path).map_err(|error| file_error(path, error))?;
    let error = |error: &dyn std::fmt::Display| file_error(path, error);
    match format {
        FileFormat::Parquet => {
            let mut writer =
                datafusion::parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).map_err(|e| error(&e))?;
            for batch in batches {
                writer.write(batch).map_err(|e| error(&e))?;
            }
            writer.close().map_err(|e| error(&e))?;
        }
        FileFormat::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(file);
            if batches.is_empty() {
                writer.write(&RecordBatch::new_empty(schema.clone())).map_err(|e| error(&e))?;
            }
            for batch in batches {
                writer.write(batch).map_err(|e| error(&e))?;
            }
        }
        FileFormat::JsonLines => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(file);
            for batch in batches {
                writer.write(batch).map_err(|e| error(&e))?;
            }
            writer.finish().map_err(|e| error(&e))?;
        }
    }
    Ok(batches.iter().map(RecordBatch::num_rows).sum())
}

/// Reads a whole file as record batches.
pub fn read_file(database: &Database, path: &Path, format: FileFormat) -> Result<Vec<RecordBatch>, Error> {
    if !path.is_file() {
        return Err(file_error(path, "no such file"));
    }
    let text = path.to_str().ok_or_else(|| file_error(path, "path is not UTF-8"))?;
    let extension = path.extension().and_then(|extension| extension.to_str()).unwrap_or("").to_string();
    let planner = database.planner();
    let context = planner.context().clone();
    let result = planner.block_on(async move {
        let frame = match format {
            FileFormat::Csv => {
                context.read_csv(text, CsvReadOptions::new().has_header(true).file_extension(&extension)).await?
            }
            FileFormat::Parquet => {
                context.read_parquet(text, ParquetReadOptions::default().file_extension(&extension)).await?
            }
            FileFormat::JsonLines => {
                context.read_json(text, JsonReadOptions::default().file_extension(&extension)).await?
            }
        };
        frame.collect().await
    });
    result.map_err(|error| file_error(path, format!("not a readable {format:?} file: {error}")))
}

fn copy_from(database: &mut Database, source: CopySource, path: &Path, format: FileFormat) -> Result<Output, Error> {
    let CopySource::Table { table_name, columns } = source else {
        return Err(Error::Unsupported("COPY (query) FROM; name a table".into()));
    };
    let name = table_name.to_string().to_lowercase();
    let relation = database.relation(&name).ok_or_else(|| Error::Catalog(format!("table {name} does not exist")))?;
    let table_columns: Vec<String> = relation.columns.iter().map(|(column, _)| column.clone()).collect();
    let targets: Vec<usize> = if columns.is_empty() {
        (0..table_columns.len()).collect()
    } else {
        columns
            .iter()
            .map(|column| {
                let column = column.value.to_lowercase();
                table_columns
                    .iter()
                    .position(|existing| existing == &column)
                    .ok_or_else(|| Error::Catalog(format!("column {column} is not in table {name}")))
            })
            .collect::<Result<_, _>>()?
    };
    let batches = read_file(database, path, format)?;
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let progress = database.load_progress().filter(|_| total >= PROGRESS_THRESHOLD_ROWS);
    if let Some(progress) = &progress {
        progress.started(&name, total as u64);
    }
    let result = convert_and_commit(database, &name, path, batches, &targets, &table_columns, progress.as_deref());
    if let Some(progress) = &progress {
        progress.finished();
    }
    result
}

/// Converts a file's batches to the table's rows (`targets`: the table column each value goes
/// to) and commits them.
fn convert_and_commit(
    database: &mut Database,
    name: &str,
    path: &Path,
    batches: Vec<RecordBatch>,
    targets: &[usize],
    table_columns: &[String],
    progress: Option<&dyn LoadProgress>,
) -> Result<Output, Error> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut rows: Vec<Row> = Vec::with_capacity(total);
    for batch in &batches {
        let schema = batch.schema();
        let file_columns: Vec<String> = schema.fields().iter().map(|field| field.name().to_lowercase()).collect();
        // Columns match by name when the file names them all, else by position.
        let sources: Vec<usize> = match targets
            .iter()
            .map(|target| file_columns.iter().position(|column| column == &table_columns[*target]))
            .collect::<Option<Vec<_>>>()
        {
            Some(by_name) => by_name,
            None if file_columns.len() == targets.len() => (0..targets.len()).collect(),
            None => {
                return Err(file_error(
                    path,
                    format!(
                        "has columns ({}) that match neither the names nor the count of the target columns",
                        file_columns.join(", ")
                    ),
                ))
            }
        };
        for values in batch_rows(batch)? {
            let mut row = vec![Value::Null; table_columns.len()];
            for (target, source) in targets.iter().zip(&sources) {
                row[*target] = values[*source].clone();
            }
            rows.push(row);
        }
        if let Some(progress) = progress {
            progress.converted(batch.num_rows() as u64);
        }
    }
    if let Some(progress) = progress {
        progress.committing(name);
    }
    let count = database.change_table(name, Vec::new(), rows)?;
    Ok(Output::Status(format!("COPY {count}")))
}
