//! Conversions between weft rows and Arrow: types, record batches and scalar literals.
//!
//! weft's six column types map onto a canonical Arrow type each (BIGINT to Int64, TIMESTAMP to
//! nanosecond timestamps, ...). Arrow data of any other compatible type (Int32, Utf8View, Date32,
//! ...) is first cast to the canonical type with Arrow's cast kernel, so one reader serves all.

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, StringArray, TimestampNanosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use std::sync::Arc;
use weft_ir::{ColumnType, Row, Value};

/// A failure converting between Arrow and weft values.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The Arrow type has no weft counterpart.
    #[error("type {0} is not supported by weft (use BOOLEAN, BIGINT, DOUBLE, TEXT, BYTEA or TIMESTAMP)")]
    UnsupportedType(DataType),
    /// Arrow failed to cast or build an array.
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A value does not fit its column.
    #[error("column {column}: expected {expected}, got {value}")]
    Mismatch {
        /// The column.
        column: String,
        /// Its type.
        expected: ColumnType,
        /// The value that does not fit.
        value: Value,
    },
}

/// The canonical Arrow type of a weft column type.
pub fn arrow_type(column_type: ColumnType) -> DataType {
    match column_type {
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::BigInt => DataType::Int64,
        ColumnType::Double => DataType::Float64,
        ColumnType::Text => DataType::Utf8,
        ColumnType::Bytea => DataType::Binary,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Nanosecond, None),
    }
}

/// The weft type that holds values of an Arrow type.
pub fn column_type(data_type: &DataType) -> Result<ColumnType, ConvertError> {
    Ok(match data_type {
        DataType::Boolean => ColumnType::Boolean,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => ColumnType::BigInt,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => ColumnType::Double,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => ColumnType::Text,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            ColumnType::Bytea
        }
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => ColumnType::Timestamp,
        other => return Err(ConvertError::UnsupportedType(other.clone())),
    })
}

/// An Arrow schema of canonical types for named weft columns (all nullable).
pub fn schema_of(columns: &[(String, ColumnType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns.iter().map(|(name, column_type)| Field::new(name, arrow_type(*column_type), true)).collect::<Vec<_>>(),
    ))
}

/// Reads every value of an Arrow array as weft values.
pub fn array_values(array: &dyn Array) -> Result<Vec<Value>, ConvertError> {
    let target = arrow_type(column_type(array.data_type())?);
    let array: ArrayRef = if array.data_type() == &target {
        datafusion::arrow::array::make_array(array.to_data())
    } else {
        cast(array, &target)?
    };
    let mut values = Vec::with_capacity(array.len());
    macro_rules! read {
        ($type:ty, $wrap:expr) => {{
            let typed = array.as_any().downcast_ref::<$type>().expect("cast to canonical type");
            for index in 0..typed.len() {
                values.push(if typed.is_null(index) { Value::Null } else { $wrap(typed.value(index)) });
            }
        }};
    }
    match target {
        DataType::Boolean => read!(BooleanArray, Value::Bool),
        DataType::Int64 => read!(Int64Array, Value::Int),
        DataType::Float64 => read!(Float64Array, Value::float),
        DataType::Utf8 => read!(StringArray, |s: &str| Value::Text(s.into())),
        DataType::Binary => read!(BinaryArray, |b: &[u8]| Value::Bytes(b.to_vec())),
        _ => read!(TimestampNanosecondArray, Value::Timestamp),
    }
    Ok(values)
}

/// Reads a record batch as rows.
pub fn batch_rows(batch: &RecordBatch) -> Result<Vec<Row>, ConvertError> {
    let mut rows: Vec<Row> = (0..batch.num_rows()).map(|_| Vec::with_capacity(batch.num_columns())).collect();
    for column in batch.columns() {
        for (row, value) in rows.iter_mut().zip(array_values(column.as_ref())?) {
            row.push(value);
        }
    }
    Ok(rows)
}

/// Builds one Arrow column of `data_type` from column `index` of `rows`.
pub fn column_array(rows: &[Row], index: usize, name: &str, data_type: &DataType) -> Result<ArrayRef, ConvertError> {
    let canonical = column_type(data_type)?;
    let mismatch =
        |value: &Value| ConvertError::Mismatch { column: name.to_string(), expected: canonical, value: value.clone() };
    macro_rules! build {
        ($type:ty, $pattern:pat => $out:expr) => {{
            let mut values = Vec::with_capacity(rows.len());
            for row in rows {
                values.push(match &row[index] {
                    Value::Null => None,
                    $pattern => Some($out),
                    other => return Err(mismatch(other)),
                });
            }
            Arc::new(<$type>::from(values)) as ArrayRef
        }};
    }
    let array = match canonical {
        ColumnType::Boolean => build!(BooleanArray, Value::Bool(b) => *b),
        ColumnType::BigInt => build!(Int64Array, Value::Int(i) => *i),
        ColumnType::Double => {
            let mut values = Vec::with_capacity(rows.len());
            for row in rows {
                values.push(match &row[index] {
                    Value::Null => None,
                    Value::Float(f) => Some(*f),
                    Value::Int(i) => Some(*i as f64),
                    other => return Err(mismatch(other)),
                });
            }
            Arc::new(Float64Array::from(values)) as ArrayRef
        }
        ColumnType::Text => build!(StringArray, Value::Text(s) => s.as_str()),
        ColumnType::Bytea => build!(BinaryArray, Value::Bytes(b) => b.as_slice()),
        ColumnType::Timestamp => build!(TimestampNanosecondArray, Value::Timestamp(t) => *t),
    };
    if array.data_type() == data_type || data_type == &DataType::Null && rows.iter().all(|row| row[index].is_null()) {
        if data_type == &DataType::Null {
            return Ok(datafusion::arrow::array::new_null_array(&DataType::Null, rows.len()));
        }
        return Ok(array);
    }
    Ok(cast(&array, data_type)?)
}

/// Builds a record batch of `schema` from rows.
pub fn rows_batch(rows: &[Row], schema: &SchemaRef) -> Result<RecordBatch, ConvertError> {
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| column_array(rows, index, field.name(), field.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    let options = datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows.len()));
    Ok(RecordBatch::try_new_with_options(schema.clone(), columns, &options)?)
}

/// A scalar literal as a weft value.
pub fn scalar_value(scalar: &ScalarValue) -> Result<Value, ConvertError> {
    if scalar.is_null() {
        return Ok(Value::Null);
    }
    let array = scalar
        .to_array_of_size(1)
        .map_err(|error| ConvertError::Arrow(datafusion::arrow::error::ArrowError::ComputeError(error.to_string())))?;
    Ok(array_values(array.as_ref())?.pop().unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_arrow() {
        let columns = vec![
            ("b".to_string(), ColumnType::Boolean),
            ("i".to_string(), ColumnType::BigInt),
            ("d".to_string(), ColumnType::Double),
            ("t".to_string(), ColumnType::Text),
            ("x".to_string(), ColumnType::Bytea),
            ("ts".to_string(), ColumnType::Timestamp),
        ];
        let rows = vec![
            vec![
                Value::Bool(true),
                Value::Int(-3),
                Value::float(1.5),
                Value::Text("é".into()),
                Value::Bytes(vec![0, 255]),
                Value::Timestamp(7),
            ],
            vec![Value::Null; 6],
        ];
        let batch = rows_batch(&rows, &schema_of(&columns)).unwrap();
        assert_eq!(batch_rows(&batch).unwrap(), rows);
        assert!(rows_batch(&[vec![Value::Text("no".into()); 6]], &schema_of(&columns)).is_err());
    }
}
