//! Printing statement results as an aligned table, CSV or JSON (an array of objects).

use datafusion::arrow::record_batch::RecordBatch;
use std::io::Write;
use weft_core::database::Output;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of row objects.
    Json,
}

impl OutputFormat {
    /// Every format's name, as `from_name` takes it.
    pub const NAMES: [&'static str; 3] = ["table", "csv", "json"];

    /// The format called `name` (one of [`OutputFormat::NAMES`]).
    pub fn from_name(name: &str) -> Option<OutputFormat> {
        match name {
            "table" => Some(OutputFormat::Table),
            "csv" => Some(OutputFormat::Csv),
            "json" => Some(OutputFormat::Json),
            _ => None,
        }
    }
}

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Writing failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Formatting the rows failed.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

/// Writes one statement's output.
pub fn write_output(out: &mut dyn Write, output: &Output, format: OutputFormat) -> Result<(), OutputError> {
    match output {
        Output::Status(tag) => {
            if format == OutputFormat::Table {
                writeln!(out, "{tag}")?;
            }
        }
        Output::Rows { schema, batches } => match format {
            OutputFormat::Table => {
                let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                let text = datafusion::arrow::util::pretty::pretty_format_batches_with_schema(schema.clone(), batches)?;
                writeln!(out, "{text}")?;
                writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
            }
            OutputFormat::Csv => {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(&mut *out);
                if batches.is_empty() {
                    writer.write(&RecordBatch::new_empty(schema.clone()))?;
                }
                for batch in batches {
                    writer.write(batch)?;
                }
            }
            OutputFormat::Json => {
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
