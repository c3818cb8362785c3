//! Rows as JSON and text: how the HTTP and files connectors write values and read them back.
//!
//! BIGINT and DOUBLE are JSON numbers (a non-finite DOUBLE is `null`), TEXT a string, BOOLEAN a
//! boolean, BYTEA a `\x`-prefixed hex string (as PostgreSQL prints it), TIMESTAMP an ISO 8601
//! string without zone (`2026-11-26T10:00:00.123456`). Reading accepts the same forms.

use chrono::{DateTime, NaiveDateTime};
use serde_json::Value as Json;
use weft_effects::{Column, ColumnKind, Datum};

/// The row as a JSON object keyed by column name.
pub fn row_object(columns: &[Column], row: &[Datum]) -> Json {
    Json::Object(columns.iter().zip(row).map(|(column, datum)| (column.name.clone(), datum_to_json(datum))).collect())
}

/// Formats nanoseconds since the epoch as an ISO 8601 timestamp without zone.
pub fn format_timestamp(nanoseconds: i64) -> String {
    DateTime::from_timestamp_nanos(nanoseconds).naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string()
}

/// Parses an ISO 8601 / SQL timestamp (a `T` or a space between date and time, an optional
/// zone, which is converted to UTC) into nanoseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let naive = DateTime::parse_from_rfc3339(text)
        .map(|time| time.naive_utc())
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map(|date| date.and_hms_opt(0, 0, 0).expect("midnight"))
        })
        .map_err(|_| format!("{text:?} is not a timestamp"))?;
    naive.and_utc().timestamp_nanos_opt().ok_or_else(|| format!("{text:?} is out of the timestamp range"))
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 + 2 * bytes.len());
    text.push_str("\\x");
    for byte in bytes {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.strip_prefix("\\x")?;
    if digits.len() % 2 != 0 {
        return None;
    }
    (0..digits.len()).step_by(2).map(|index| u8::from_str_radix(&digits[index..index + 2], 16).ok()).collect()
}

/// The value as JSON.
pub fn datum_to_json(datum: &Datum) -> Json {
    match datum {
        Datum::Null => Json::Null,
        Datum::Bool(b) => Json::Bool(*b),
        Datum::Int(i) => Json::from(*i),
        Datum::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Datum::Text(text) => Json::String(text.clone()),
        Datum::Bytes(bytes) => Json::String(hex(bytes)),
        Datum::Timestamp(nanoseconds) => Json::String(format_timestamp(*nanoseconds)),
    }
}

/// The value as CSV text (`None` for NULL, written as an empty field).
pub fn datum_to_text(datum: &Datum) -> Option<String> {
    match datum {
        Datum::Null => None,
        Datum::Bool(b) => Some(b.to_string()),
        Datum::Int(i) => Some(i.to_string()),
        Datum::Float(f) => Some(f.to_string()),
        Datum::Text(text) => Some(text.clone()),
        Datum::Bytes(bytes) => Some(hex(bytes)),
        Datum::Timestamp(nanoseconds) => Some(format_timestamp(*nanoseconds)),
    }
}

/// Reads a JSON value as a value of `kind`.
pub fn json_to_datum(value: &Json, kind: ColumnKind) -> Result<Datum, String> {
    let mismatch = || format!("{value} is not a {}", kind_name(kind));
    Ok(match (value, kind) {
        (Json::Null, _) => Datum::Null,
        (Json::Bool(b), ColumnKind::Bool) => Datum::Bool(*b),
        (Json::Number(number), ColumnKind::Int) => Datum::Int(number.as_i64().ok_or_else(mismatch)?),
        (Json::Number(number), ColumnKind::Float) => Datum::Float(number.as_f64().ok_or_else(mismatch)?),
        (Json::Number(number), ColumnKind::Timestamp) => Datum::Timestamp(number.as_i64().ok_or_else(mismatch)?),
        (Json::String(text), ColumnKind::Timestamp) => Datum::Timestamp(parse_timestamp(text)?),
        (Json::String(text), ColumnKind::Bytes) => {
            Datum::Bytes(unhex(text).unwrap_or_else(|| text.as_bytes().to_vec()))
        }
        (Json::String(text), ColumnKind::Text) => Datum::Text(text.clone()),
        (other, ColumnKind::Text) => Datum::Text(other.to_string()),
        _ => return Err(mismatch()),
    })
}

/// Reads CSV text as a value of `kind` (an empty field is NULL).
pub fn text_to_datum(text: &str, kind: ColumnKind) -> Result<Datum, String> {
    if text.is_empty() && kind != ColumnKind::Text {
        return Ok(Datum::Null);
    }
    let mismatch = |_| format!("{text:?} is not a {}", kind_name(kind));
    Ok(match kind {
        ColumnKind::Bool => Datum::Bool(match text.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" => true,
            "false" | "f" | "0" => false,
            _ => return Err(format!("{text:?} is not a boolean")),
        }),
        ColumnKind::Int => {
            Datum::Int(text.trim().parse().map_err(|error: std::num::ParseIntError| mismatch(error.to_string()))?)
        }
        ColumnKind::Float => {
            Datum::Float(text.trim().parse().map_err(|error: std::num::ParseFloatError| mismatch(error.to_string()))?)
        }
        ColumnKind::Text => Datum::Text(text.to_string()),
        ColumnKind::Bytes => Datum::Bytes(unhex(text).unwrap_or_else(|| text.as_bytes().to_vec())),
        ColumnKind::Timestamp => Datum::Timestamp(parse_timestamp(text)?),
    })
}

/// The type a JSON value suggests for its column.
pub fn infer_kind(value: &Json) -> ColumnKind {
    match value {
        Json::Bool(_) => ColumnKind::Bool,
        Json::Number(number) if number.is_i64() => ColumnKind::Int,
        Json::Number(_) => ColumnKind::Float,
        _ => ColumnKind::Text,
    }
}

/// The type a CSV field suggests for its column.
pub fn infer_text_kind(text: &str) -> ColumnKind {
    if text.parse::<i64>().is_ok() {
        ColumnKind::Int
    } else if text.parse::<f64>().is_ok() {
        ColumnKind::Float
    } else {
        ColumnKind::Text
    }
}

/// The SQL name of a column type.
pub fn kind_name(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Bool => "BOOLEAN",
        ColumnKind::Int => "BIGINT",
        ColumnKind::Float => "DOUBLE",
        ColumnKind::Text => "TEXT",
        ColumnKind::Bytes => "BYTEA",
        ColumnKind::Timestamp => "TIMESTAMP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_json_and_text() {
        let cases = [
            (Datum::Int(-7), ColumnKind::Int),
            (Datum::Float(2.5), ColumnKind::Float),
            (Datum::Text("a,\"b\"".into()), ColumnKind::Text),
            (Datum::Bytes(vec![0, 255, 16]), ColumnKind::Bytes),
            (Datum::Bool(true), ColumnKind::Bool),
            (Datum::Timestamp(1_764_151_200_123_456_000), ColumnKind::Timestamp),
            (Datum::Null, ColumnKind::Int),
        ];
        for (datum, kind) in cases {
            assert_eq!(json_to_datum(&datum_to_json(&datum), kind).as_ref(), Ok(&datum));
            let text = datum_to_text(&datum).unwrap_or_default();
            assert_eq!(text_to_datum(&text, kind).as_ref(), Ok(&datum));
        }
        assert!(json_to_datum(&Json::String("x".into()), ColumnKind::Int).unwrap_err().contains("not a BIGINT"));
        assert_eq!(parse_timestamp("2026-11-26 10:00:00+01:00"), parse_timestamp("2026-11-26T09:00:00"));
    }
}
