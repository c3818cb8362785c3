//! Files: sinks that write a view's changes exactly once, and a source following a glob.
//!
//! **Sinks**, by the path's extension:
//! - `.jsonl` (or `.ndjson`, `.json`): one line per change,
//!   `{"effect", "sequence", "diff", "row": {column: value}}`;
//! - `.csv`: a header `diff,<columns>` and one line per change;
//! - `.parquet`: the view's whole current contents, rewritten (to a temporary file, then renamed)
//!   at every run of effects.
//!
//! Exactly once: an appending sink keeps a sidecar `<path>.weft` with the last applied sequence
//! and the file's length after it, replaced atomically after the appended bytes are synced. A
//! retry first cuts the file back to that length (dropping a half-written run) and skips the
//! effects the sidecar covers. A Parquet file carries its sequence in its own key-value metadata,
//! so the file and its marker change together in one rename.
//!
//! **Source**: `files('dir/*.jsonl')` reads every matching JSON-lines, CSV (with a header) or
//! Parquet file, then new files and lines appended to known ones (only whole lines; a line still
//! being written waits for its newline). A file that shrinks or a Parquet file that changes is
//! read again in full. Malformed lines are skipped and reported, naming the file and line.

use crate::json::row_object;
use crate::json::{datum_to_text, infer_kind, infer_text_kind, json_to_datum, kind_name, text_to_datum};
use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder, Float64Array, Float64Builder,
    Int64Array, Int64Builder, StringArray, StringBuilder, TimestampNanosecondArray, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use weft_effects::{Column, ColumnKind, ConnectorError, Datum, Delivery, Effect, Sink, Source, SourceRead};

/// The Parquet metadata key holding the last applied sequence, as `<epoch>:<sequence>`.
const SEQUENCE_KEY: &str = "weft.sequence";

/// A file format, told by the extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// JSON objects, one per line.
    JsonLines,
    /// Comma-separated values with a header line.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl FileFormat {
    /// The format called `name` (`csv`, `parquet`, or `json`, `jsonl`, `ndjson`), in any case.
    pub fn from_name(name: &str) -> Option<FileFormat> {
        match name.to_ascii_lowercase().as_str() {
            "jsonl" | "ndjson" | "json" => Some(FileFormat::JsonLines),
            "csv" => Some(FileFormat::Csv),
            "parquet" => Some(FileFormat::Parquet),
            _ => None,
        }
    }

    /// The format named by a file's extension.
    pub fn from_path(path: &Path) -> Option<FileFormat> {
        FileFormat::from_name(path.extension()?.to_str()?)
    }
}

/// The format of `path`, from its extension.
pub fn format_of(path: &Path) -> Result<FileFormat, ConnectorError> {
    FileFormat::from_path(path).ok_or_else(|| {
        ConnectorError::Permanent(format!(
            "{}: cannot tell the file format; use a .jsonl, .csv or .parquet name",
            path.display()
        ))
    })
}

fn io_error(path: &Path, error: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Permanent(format!("{}: {error}", path.display()))
}

/// Where an appending sink is: its incarnation, the last applied sequence and the file length
/// after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Marker {
    #[serde(default)]
    epoch: u64,
    sequence: Option<u64>,
    length: u64,
}

fn sidecar_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".weft");
    PathBuf::from(name)
}

/// Replaces `path` by `bytes` atomically (temporary file, sync, rename).
fn replace_file(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<(), ConnectorError>,
) -> Result<(), ConnectorError> {
    let mut temporary_name = path.as_os_str().to_owned();
    temporary_name.push(".tmp");
    let temporary = PathBuf::from(temporary_name);
    let mut file = File::create(&temporary).map_err(|error| io_error(&temporary, error))?;
    write(&mut file)?;
    file.sync_all().map_err(|error| io_error(&temporary, error))?;
    std::fs::rename(&temporary, path).map_err(|error| io_error(path, error))
}

/// Writes a view's changes to one file.
pub struct FileSink {
    path: PathBuf,
    format: FileFormat,
    columns: Vec<Column>,
}

impl FileSink {
    /// A sink into `path` (its extension chooses the format).
    pub fn new(path: &str, columns: Vec<Column>) -> Result<FileSink, ConnectorError> {
        let path = PathBuf::from(path);
        let format = format_of(&path)?;
        Ok(FileSink { path, format, columns })
    }

    fn line(&self, effect: &Effect, diff: i64, row: &[Datum]) -> Result<Vec<u8>, ConnectorError> {
        Ok(match self.format {
            FileFormat::JsonLines => {
                let mut line = serde_json::json!({
                    "effect": effect.cid().to_string(),
                    "sequence": effect.payload.sequence,
                    "diff": diff,
                    "row": row_object(&self.columns, row),
                })
                .to_string()
                .into_bytes();
                line.push(b'\n');
                line
            }
            _ => {
                let mut writer = csv::Writer::from_writer(Vec::new());
                let fields = std::iter::once(diff.to_string())
                    .chain(row.iter().map(|datum| datum_to_text(datum).unwrap_or_default()));
                writer.write_record(fields).map_err(|error| io_error(&self.path, error))?;
                writer.into_inner().map_err(|error| io_error(&self.path, error))?
            }
        })
    }

    fn append(&self, effects: &[Effect]) -> Result<Delivery, ConnectorError> {
        let sidecar = sidecar_path(&self.path);
        let marker: Marker = match std::fs::read(&sidecar) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|error| io_error(&sidecar, format!("unreadable sink marker: {error}")))?,
            Err(_) => Marker::default(),
        };
        // A sink created again under the same name starts the file over (its first effect is
        // the view's whole contents).
        let epoch = effects.first().map_or(0, |effect| effect.payload.epoch);
        let marker = if marker.epoch == epoch { marker } else { Marker { epoch, ..Marker::default() } };
        let fresh: Vec<&Effect> =
            effects.iter().filter(|effect| marker.sequence.is_none_or(|done| effect.payload.sequence > done)).collect();
        let Some(last) = fresh.last() else {
            return Ok(Delivery { applied: 0, duplicates: effects.len() });
        };
        let mut bytes = Vec::new();
        if marker.length == 0 && self.format == FileFormat::Csv {
            let mut writer = csv::Writer::from_writer(Vec::new());
            let header = std::iter::once("diff").chain(self.columns.iter().map(|column| column.name.as_str()));
            writer.write_record(header).map_err(|error| io_error(&self.path, error))?;
            bytes = writer.into_inner().map_err(|error| io_error(&self.path, error))?;
        }
        for effect in &fresh {
            for change in &effect.payload.changes {
                bytes.extend(self.line(effect, change.diff, &change.row)?);
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
            .map_err(|error| io_error(&self.path, error))?;
        // Drop whatever a crashed attempt appended after the last recorded run.
        file.set_len(marker.length).map_err(|error| io_error(&self.path, error))?;
        file.seek(SeekFrom::Start(marker.length)).map_err(|error| io_error(&self.path, error))?;
        file.write_all(&bytes).map_err(|error| io_error(&self.path, error))?;
        file.sync_data().map_err(|error| io_error(&self.path, error))?;
        let next = Marker { epoch, sequence: Some(last.payload.sequence), length: marker.length + bytes.len() as u64 };
        replace_file(&sidecar, |file| {
            file.write_all(&serde_json::to_vec(&next).expect("marker encodes"))
                .map_err(|error| io_error(&sidecar, error))
        })?;
        Ok(Delivery { applied: fresh.len(), duplicates: effects.len() - fresh.len() })
    }

    fn rewrite_parquet(&self, effects: &[Effect]) -> Result<Delivery, ConnectorError> {
        let epoch = effects.first().map_or(0, |effect| effect.payload.epoch);
        let (mut rows, done) = if self.path.exists() {
            let contents = read_parquet(&self.path, Some(&self.columns))?;
            match contents.sequence {
                Some((written, sequence)) if written == epoch => (contents.rows, Some(sequence)),
                // Another incarnation's file: this sink's first effect is the whole contents.
                _ => (Vec::new(), None),
            }
        } else {
            (Vec::new(), None)
        };
        let fresh: Vec<&Effect> =
            effects.iter().filter(|effect| done.is_none_or(|done| effect.payload.sequence > done)).collect();
        let Some(last) = fresh.last() else {
            return Ok(Delivery { applied: 0, duplicates: effects.len() });
        };
        let mut counts: HashMap<Vec<Datum>, i64> = HashMap::new();
        for row in rows.drain(..) {
            *counts.entry(row).or_default() += 1;
        }
        for effect in &fresh {
            for change in &effect.payload.changes {
                *counts.entry(change.row.clone()).or_default() += change.diff;
            }
        }
        let mut rows: Vec<Vec<Datum>> =
            counts.into_iter().flat_map(|(row, count)| std::iter::repeat_n(row, count.max(0) as usize)).collect();
        rows.sort_by_cached_key(|row| format!("{row:?}"));
        let batch = to_record_batch(&self.columns, &rows).map_err(|error| io_error(&self.path, error))?;
        let properties = WriterProperties::builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                SEQUENCE_KEY.to_string(),
                format!("{epoch}:{}", last.payload.sequence),
            )]))
            .build();
        replace_file(&self.path, |file| {
            let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties))
                .map_err(|error| io_error(&self.path, error))?;
            writer.write(&batch).map_err(|error| io_error(&self.path, error))?;
            writer.close().map(|_| ()).map_err(|error| io_error(&self.path, error))
        })?;
        Ok(Delivery { applied: fresh.len(), duplicates: effects.len() - fresh.len() })
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn apply(&mut self, effects: &[Effect]) -> Result<Delivery, ConnectorError> {
        if let Some(parent) = self.path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|error| io_error(parent, error))?;
        }
        match self.format {
            FileFormat::Parquet => self.rewrite_parquet(effects),
            _ => self.append(effects),
        }
    }
}

fn arrow_type(kind: ColumnKind) -> DataType {
    match kind {
        ColumnKind::Bool => DataType::Boolean,
        ColumnKind::Int => DataType::Int64,
        ColumnKind::Float => DataType::Float64,
        ColumnKind::Text => DataType::Utf8,
        ColumnKind::Bytes => DataType::Binary,
        ColumnKind::Timestamp => DataType::Timestamp(TimeUnit::Nanosecond, None),
    }
}

fn to_record_batch(columns: &[Column], rows: &[Vec<Datum>]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let fields: Vec<Field> =
        columns.iter().map(|column| Field::new(&column.name, arrow_type(column.kind), true)).collect();
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .enumerate()
        .map(|(index, column)| -> ArrayRef {
            let values = rows.iter().map(|row| &row[index]);
            match column.kind {
                ColumnKind::Bool => {
                    let mut builder = BooleanBuilder::new();
                    values.for_each(|datum| {
                        builder.append_option(if let Datum::Bool(b) = datum { Some(*b) } else { None })
                    });
                    Arc::new(builder.finish())
                }
                ColumnKind::Int => {
                    let mut builder = Int64Builder::new();
                    values.for_each(|datum| {
                        builder.append_option(if let Datum::Int(i) = datum { Some(*i) } else { None })
                    });
                    Arc::new(builder.finish())
                }
                ColumnKind::Float => {
                    let mut builder = Float64Builder::new();
                    values.for_each(|datum| {
                        builder.append_option(if let Datum::Float(f) = datum { Some(*f) } else { None })
                    });
                    Arc::new(builder.finish())
                }
                ColumnKind::Text => {
                    let mut builder = StringBuilder::new();
                    values.for_each(|datum| {
                        builder.append_option(if let Datum::Text(text) = datum { Some(text.as_str()) } else { None })
                    });
                    Arc::new(builder.finish())
                }
                ColumnKind::Bytes => {
                    let mut builder = BinaryBuilder::new();
                    values.for_each(|datum| {
                        builder.append_option(if let Datum::Bytes(bytes) = datum {
                            Some(bytes.as_slice())
                        } else {
                            None
                        })
                    });
                    Arc::new(builder.finish())
                }
                ColumnKind::Timestamp => {
                    let mut builder = TimestampNanosecondBuilder::new();
                    values.for_each(|datum| {
                        builder.append_option(if let Datum::Timestamp(t) = datum { Some(*t) } else { None })
                    });
                    Arc::new(builder.finish())
                }
            }
        })
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
}

fn kind_of_arrow(data_type: &DataType) -> ColumnKind {
    match data_type {
        DataType::Boolean => ColumnKind::Bool,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => ColumnKind::Int,
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => ColumnKind::Int,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnKind::Float,
        DataType::Binary | DataType::LargeBinary => ColumnKind::Bytes,
        DataType::Timestamp(_, _) => ColumnKind::Timestamp,
        _ => ColumnKind::Text,
    }
}

/// One value of an Arrow column, as `kind` (cast first, so any numeric or string type reads).
fn arrow_value(array: &ArrayRef, row: usize, kind: ColumnKind) -> Datum {
    if array.is_null(row) {
        return Datum::Null;
    }
    let downcast = |what: &str| -> ! { panic!("column was cast to {what}") };
    match kind {
        ColumnKind::Bool => {
            Datum::Bool(array.as_any().downcast_ref::<BooleanArray>().unwrap_or_else(|| downcast("bool")).value(row))
        }
        ColumnKind::Int => {
            Datum::Int(array.as_any().downcast_ref::<Int64Array>().unwrap_or_else(|| downcast("int64")).value(row))
        }
        ColumnKind::Float => Datum::Float(
            array.as_any().downcast_ref::<Float64Array>().unwrap_or_else(|| downcast("float64")).value(row),
        ),
        ColumnKind::Text => Datum::Text(
            array.as_any().downcast_ref::<StringArray>().unwrap_or_else(|| downcast("utf8")).value(row).to_string(),
        ),
        ColumnKind::Bytes => Datum::Bytes(
            array.as_any().downcast_ref::<BinaryArray>().unwrap_or_else(|| downcast("binary")).value(row).to_vec(),
        ),
        ColumnKind::Timestamp => Datum::Timestamp(
            array
                .as_any()
                .downcast_ref::<TimestampNanosecondArray>()
                .unwrap_or_else(|| downcast("timestamp"))
                .value(row),
        ),
    }
}

/// What a Parquet file holds.
struct ParquetContents {
    /// The rows, as the requested columns (or the file's own).
    rows: Vec<Vec<Datum>>,
    /// The sink incarnation and last applied sequence, when weft wrote the file.
    sequence: Option<(u64, u64)>,
    /// The file's own columns.
    columns: Vec<Column>,
}

/// Reads a Parquet file, as `columns` or as its own columns.
fn read_parquet(path: &Path, columns: Option<&[Column]>) -> Result<ParquetContents, ConnectorError> {
    let not_parquet = |error: &dyn std::fmt::Display| {
        ConnectorError::Permanent(format!("{} is not a Parquet file weft can read: {error}", path.display()))
    };
    let file = File::open(path).map_err(|error| io_error(path, error))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|error| not_parquet(&error))?;
    let sequence = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|pairs| pairs.iter().find(|pair| pair.key == SEQUENCE_KEY))
        .and_then(|pair| {
            let (epoch, sequence) = pair.value.as_ref()?.split_once(':')?;
            Some((epoch.parse().ok()?, sequence.parse().ok()?))
        });
    let found: Vec<Column> = builder
        .schema()
        .fields()
        .iter()
        .map(|field| Column { name: field.name().clone(), kind: kind_of_arrow(field.data_type()) })
        .collect();
    let columns = columns.map_or_else(|| found.clone(), <[Column]>::to_vec);
    let positions: Vec<Option<usize>> =
        columns.iter().map(|column| found.iter().position(|f| f.name == column.name)).collect();
    let reader = builder.build().map_err(|error| not_parquet(&error))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|error| not_parquet(&error))?;
        let mut arrays = Vec::new();
        for (column, position) in columns.iter().zip(&positions) {
            arrays.push(match position {
                Some(position) => Some(
                    arrow::compute::cast(batch.column(*position), &arrow_type(column.kind))
                        .map_err(|error| not_parquet(&error))?,
                ),
                None => None,
            });
        }
        for row in 0..batch.num_rows() {
            rows.push(
                columns
                    .iter()
                    .zip(&arrays)
                    .map(|(column, array)| {
                        array.as_ref().map_or(Datum::Null, |array| arrow_value(array, row, column.kind))
                    })
                    .collect(),
            );
        }
    }
    Ok(ParquetContents { rows, sequence, columns: found })
}

/// What the source knows of one file.
#[derive(Default)]
struct FileState {
    /// Bytes consumed (up to the end of the last whole line).
    offset: u64,
    /// Lines consumed, for messages.
    lines: u64,
    /// Length and modification time when last read (Parquet).
    seen: Option<(u64, SystemTime)>,
    /// CSV header: the source column each field fills.
    header: Option<Vec<Option<usize>>>,
    /// The rows this file contributed.
    rows: Vec<Vec<Datum>>,
}

/// Follows the files matching a glob.
pub struct FileSource {
    pattern: String,
    /// Files matched through a link that leads out of reach are passed over.
    access: crate::access::Access,
    columns: Vec<Column>,
    files: BTreeMap<PathBuf, FileState>,
    first: bool,
}

/// The paths the access policy lets statements read.
fn reachable(paths: Vec<PathBuf>, access: &crate::access::Access) -> Vec<PathBuf> {
    paths.into_iter().filter(|path| path.to_str().is_some_and(|path| access.file(path).is_ok())).collect()
}

fn matching(pattern: &str) -> Result<Vec<PathBuf>, ConnectorError> {
    let paths = glob::glob(pattern)
        .map_err(|error| ConnectorError::Permanent(format!("invalid file pattern {pattern:?}: {error}")))?;
    let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|path| path.is_file()).collect();
    found.sort();
    Ok(found)
}

/// Columns suggested by the first readable record of `path`.
fn infer_columns(path: &Path) -> Result<Option<Vec<Column>>, ConnectorError> {
    match format_of(path)? {
        FileFormat::Parquet => Ok(Some(read_parquet(path, None)?.columns)),
        FileFormat::JsonLines => {
            let text = std::fs::read_to_string(path).map_err(|error| io_error(path, error))?;
            for line in text.lines().filter(|line| !line.trim().is_empty()) {
                if let Ok(serde_json::Value::Object(object)) = serde_json::from_str::<serde_json::Value>(line) {
                    return Ok(Some(
                        object
                            .iter()
                            .map(|(name, value)| Column { name: name.clone(), kind: infer_kind(value) })
                            .collect(),
                    ));
                }
            }
            Ok(None)
        }
        FileFormat::Csv => {
            let mut reader = csv::Reader::from_path(path).map_err(|error| io_error(path, error))?;
            let header: Vec<String> =
                reader.headers().map_err(|error| io_error(path, error))?.iter().map(str::to_string).collect();
            let first = reader.records().next().and_then(Result::ok);
            Ok(Some(
                header
                    .iter()
                    .enumerate()
                    .map(|(index, name)| Column {
                        name: name.clone(),
                        kind: first
                            .as_ref()
                            .and_then(|record| record.get(index))
                            .map_or(ColumnKind::Text, infer_text_kind),
                    })
                    .collect(),
            ))
        }
    }
}

impl FileSource {
    /// A source over the files matching `pattern`, with `declared` columns or columns inferred
    /// from the first matching file.
    pub fn open(
        pattern: &str,
        declared: Option<Vec<Column>>,
        access: crate::access::Access,
    ) -> Result<FileSource, ConnectorError> {
        let files = reachable(matching(pattern)?, &access);
        let columns = match declared {
            Some(columns) => columns,
            None => {
                let mut inferred = None;
                for path in &files {
                    if let Some(columns) = infer_columns(path)? {
                        inferred = Some(columns);
                        break;
                    }
                }
                inferred.ok_or_else(|| {
                    ConnectorError::Permanent(format!(
                        "no file matching {pattern:?} has a record to infer columns from; declare them: \
                         CREATE SOURCE name (column TYPE, ...) FROM files('{pattern}')"
                    ))
                })?
            }
        };
        Ok(FileSource { pattern: pattern.to_string(), access, columns, files: BTreeMap::new(), first: true })
    }

    /// The rows' columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    fn json_row(&self, line: &str) -> Result<Vec<Datum>, String> {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|error| format!("malformed JSON: {error}"))?;
        let serde_json::Value::Object(object) = value else {
            return Err("not a JSON object".into());
        };
        self.columns
            .iter()
            .map(|column| {
                json_to_datum(object.get(&column.name).unwrap_or(&serde_json::Value::Null), column.kind)
                    .map_err(|error| format!("column {}: {error}", column.name))
            })
            .collect()
    }

    /// Reads the whole lines after the file's offset: the rows, and the lines it had to skip.
    fn read_lines(&self, path: &Path, state: &mut FileState, format: FileFormat) -> (Vec<Vec<Datum>>, Vec<String>) {
        let mut problems = Vec::new();
        let mut bytes = Vec::new();
        let read = File::open(path)
            .and_then(|mut file| file.seek(SeekFrom::Start(state.offset)).map(|_| file))
            .and_then(|mut file| file.read_to_end(&mut bytes));
        if let Err(error) = read {
            return (Vec::new(), vec![format!("{}: {error}", path.display())]);
        }
        let Some(end) = bytes.iter().rposition(|byte| *byte == b'\n') else { return (Vec::new(), problems) };
        state.offset += end as u64 + 1;
        let text = String::from_utf8_lossy(&bytes[..end]);
        let mut rows = Vec::new();
        for line in text.split('\n') {
            state.lines += 1;
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let parsed = match format {
                FileFormat::JsonLines => self.json_row(line).map(Some),
                _ => self.csv_row(line, state),
            };
            match parsed {
                Ok(Some(row)) => rows.push(row),
                Ok(None) => {}
                Err(message) => problems.push(format!("{}:{}: {message}", path.display(), state.lines)),
            }
        }
        (rows, problems)
    }

    fn csv_row(&self, line: &str, state: &mut FileState) -> Result<Option<Vec<Datum>>, String> {
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(line.as_bytes());
        let record =
            reader.records().next().ok_or("empty CSV line")?.map_err(|error| format!("malformed CSV: {error}"))?;
        let Some(header) = &state.header else {
            state.header = Some(
                record.iter().map(|name| self.columns.iter().position(|column| column.name == name.trim())).collect(),
            );
            return Ok(None);
        };
        let mut row = vec![Datum::Null; self.columns.len()];
        for (field, position) in record.iter().zip(header) {
            if let Some(position) = position {
                let column = &self.columns[*position];
                row[*position] = text_to_datum(field, column.kind)
                    .map_err(|error| format!("column {} ({}): {error}", column.name, kind_name(column.kind)))?;
            }
        }
        Ok(Some(row))
    }
}

impl FileSource {
    fn read_now(&mut self) -> Result<SourceRead, ConnectorError> {
        let paths = reachable(matching(&self.pattern)?, &self.access);
        let mut resnapshot = self.first;
        let mut appended = Vec::new();
        let mut problems = Vec::new();
        let known: Vec<PathBuf> = self.files.keys().cloned().collect();
        for path in known.iter().filter(|path| !paths.contains(path)) {
            self.files.remove(path);
            resnapshot = true;
        }
        for path in &paths {
            let format = match format_of(path) {
                Ok(format) => format,
                Err(error) => {
                    problems.push(error.to_string());
                    continue;
                }
            };
            let mut state = self.files.remove(path).unwrap_or_default();
            let Ok(metadata) = std::fs::metadata(path) else { continue };
            let seen = (metadata.len(), metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH));
            if format == FileFormat::Parquet {
                if state.seen != Some(seen) {
                    state.seen = Some(seen);
                    state.rows = match read_parquet(path, Some(&self.columns)) {
                        Ok(contents) => contents.rows,
                        Err(error) => {
                            problems.push(error.to_string());
                            Vec::new()
                        }
                    };
                    resnapshot = true;
                }
            } else {
                if metadata.len() < state.offset {
                    state = FileState::default();
                    resnapshot = true;
                }
                let (rows, skipped) = self.read_lines(path, &mut state, format);
                problems.extend(skipped);
                appended.extend(rows.iter().cloned());
                state.rows.extend(rows);
            }
            self.files.insert(path.clone(), state);
        }
        self.first = false;
        if resnapshot {
            let snapshot = self.files.values().flat_map(|state| state.rows.iter().cloned()).collect();
            Ok(SourceRead { snapshot: Some(snapshot), appended: Vec::new(), problems })
        } else {
            Ok(SourceRead { snapshot: None, appended, problems })
        }
    }
}

#[async_trait]
impl Source for FileSource {
    async fn read(&mut self) -> Result<SourceRead, ConnectorError> {
        self.read_now()
    }
}
