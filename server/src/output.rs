//! Printing statement results as an aligned table, CSV or JSON (an array of objects).

use datafusion::arrow::record_batch::RecordBatch;
use std::io::Write;
use weft_core::database::Output;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of row objects.
    Json,
}

impl Format {
    /// Every format's name, as `from_name` takes it.
    pub const NAMES: [&'static str; 3] = ["table", "csv", "json"];

    /// The format called `name` (one of [`Format::NAMES`]).
    pub fn from_name(name: &str) -> Option<Format> {
        match name {
            "table" => Some(Format::Table),
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

/// Writes one statement's output.
pub fn write_output(out: &mut dyn Write, output: &Output, format: Format) -> Result<(), OutputError> {
    match output {
        Output::Status(tag) => {
            if format == Format::Table {
                writeln!(out, "{tag}")?;
            }
        }
        Output::Rows { schema, batches } => match format {
            Format::Table => {
                let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                let text = datafusion::arrow::util::pretty::pretty_format_batches_with_schema(schema.clone(), batches)?;
                writeln!(out, "{text}")?;
                writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
            }
            Format::Csv => {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(&mut *out);
                if batches.is_empty() {
                    writer.write(&RecordBatch::new_empty(schema.clone()))?;
                }
                for batch in batches {
                    writer.write(batch)?;
                }
            }
            Format::Json => {
                let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut *out);
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
                if batches.iter().all(|batch| batch.num_rows() == 0) {
                    write!(out, "[]")?;
                }
                writeln!(out)?;
            }
        },
    }
    Ok(())
}
