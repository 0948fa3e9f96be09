//! From an event to what the window operators read: its key, its event time and the values
//! of the fields its aggregates use ([`Record`]).
//!
//! This is where outside input meets the stage, so every way an event can be unusable is an
//! [`ExtractError`] that names the field (`partitionkey`, `time`, `data/card_id`). The
//! integration dead-letters such an event as a permanent failure: it is never dropped, and it
//! never reaches the operators.

use chrono::{DateTime, Utc};
use runnel_envelope::Event;
use serde_json::Value;

use crate::spec::{FeatureSpec, FieldPointer, KeySource, TimeSource};

/// Event time, in microseconds since the Unix epoch (negative before 1970).
pub type EventTime = i64;

/// The earliest event time accepted: 0001-01-01T00:00:00Z.
pub const MIN_EVENT_TIME: EventTime = -62_135_596_800_000_000;
/// The latest event time accepted: 9999-12-31T23:59:59.999999Z.
pub const MAX_EVENT_TIME: EventTime = 253_402_300_799_999_999;

/// A field's value as the aggregates see it.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// The field is not in the data.
    Missing,
    /// JSON `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// Any other number (integers beyond `i64` included); always finite.
    Float(f64),
    /// A string.
    Str(String),
    /// An array or an object.
    Json(Value),
}

impl FieldValue {
    /// The value at `pointer` in `data`, or [`FieldValue::Missing`].
    pub fn at(data: &Value, pointer: &str) -> Self {
        data.pointer(pointer).map_or(Self::Missing, Self::from_json)
    }

    /// A JSON value as a field value.
    pub fn from_json(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Self::Int(i),
                None => Self::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Self::Str(s.clone()),
            other => Self::Json(other.clone()),
        }
    }

    /// The value as JSON (`Missing` as `null`; a non-finite float, which extraction never
    /// produces, as `null`).
    pub fn to_json(&self) -> Value {
        match self {
            Self::Missing | Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Int(i) => Value::from(*i),
            Self::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Self::Str(s) => Value::String(s.clone()),
            Self::Json(v) => v.clone(),
        }
    }

    /// Whether there is a value (neither missing nor null).
    pub fn is_present(&self) -> bool {
        !matches!(self, Self::Missing | Self::Null)
    }

    /// What kind of value this is, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Missing => "nothing",
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Int(_) => "an integer",
            Self::Float(_) => "a number",
            Self::Str(_) => "a string",
            Self::Json(Value::Array(_)) => "an array",
            Self::Json(_) => "an object",
        }
    }
}

/// One input event, decoded for the operators.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The entity the event belongs to; never empty.
    pub key: String,
    /// The event time.
    pub event_time: EventTime,
    /// The values of [`FeatureSpec::fields`], in that order.
    pub values: Vec<FieldValue>,
    /// The event's `correlationid`, carried to the results it contributes to.
    pub correlation: Option<String>,
}

/// Why an event cannot be windowed; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// The key field is absent (or null).
    #[error("`{field}` is missing: the window key is read from it")]
    MissingKey {
        /// `partitionkey` or `data/…`.
        field: String,
    },
    /// The key field holds an empty string, an array or an object.
    #[error(
        "`{field}` is {found}: the window key must be a non-empty string, a number or a boolean"
    )]
    BadKey {
        /// `data/…`.
        field: String,
        /// What it holds.
        found: &'static str,
    },
    /// The time field is absent (or null).
    #[error("`{field}` is missing: the event time is read from it")]
    MissingTime {
        /// `time` or `data/…`.
        field: String,
    },
    /// The time field holds something that is not a time.
    #[error("`{field}` is not an event time: {reason}")]
    BadTime {
        /// `time` or `data/…`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The data is not JSON, so a pointer into it cannot be read.
    #[error("`data` is not JSON, so `{field}` cannot be read")]
    DataNotJson {
        /// The first field that was needed.
        field: String,
    },
}

/// Reads records out of events for one feature.
#[derive(Debug, Clone)]
pub struct Extractor {
    key: KeySource,
    time: TimeSource,
    fields: Vec<FieldPointer>,
}

impl Extractor {
    /// The extractor of `spec`.
    pub fn new(spec: &FeatureSpec) -> Self {
        Self {
            key: spec.key.clone(),
            time: spec.time.clone(),
            fields: spec.fields(),
        }
    }

    /// The key, event time, field values and correlation of `event`.
    pub fn extract(&self, event: &Event) -> Result<Record, ExtractError> {
        let data = event.data().as_json();
        let json = |field: &FieldPointer| -> Result<&Value, ExtractError> {
            data.ok_or_else(|| ExtractError::DataNotJson {
                field: field.field_name(),
            })
        };
        let key = match &self.key {
            KeySource::PartitionKey => match event.partition_key() {
                Some(key) => key.to_string(),
                None => {
                    return Err(ExtractError::MissingKey {
                        field: "partitionkey".into(),
                    });
                }
            },
            KeySource::Data(pointer) => key_from_json(json(pointer)?, pointer)?,
        };
        let event_time = match &self.time {
            TimeSource::Attribute => match event.time() {
                Some(time) => from_datetime(time, "time")?,
                None => {
                    return Err(ExtractError::MissingTime {
                        field: "time".into(),
                    });
                }
            },
            TimeSource::Data(pointer) => time_from_json(json(pointer)?, pointer)?,
        };
        let values = match (data, self.fields.first()) {
            (_, None) => Vec::new(),
            (Some(data), Some(_)) => self
                .fields
                .iter()
                .map(|field| FieldValue::at(data, field.as_str()))
                .collect(),
            (None, Some(field)) => {
                return Err(ExtractError::DataNotJson {
                    field: field.field_name(),
                });
            }
        };
        Ok(Record {
            key,
            event_time,
            values,
            correlation: event.correlation_id().map(str::to_string),
        })
    }
}

fn key_from_json(data: &Value, pointer: &FieldPointer) -> Result<String, ExtractError> {
    let field = || pointer.field_name();
    match data.pointer(pointer.as_str()) {
        None | Some(Value::Null) => Err(ExtractError::MissingKey { field: field() }),
        Some(Value::String(s)) if s.is_empty() => Err(ExtractError::BadKey {
            field: field(),
            found: "an empty string",
        }),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(value @ (Value::Number(_) | Value::Bool(_))) => Ok(value.to_string()),
        Some(other) => Err(ExtractError::BadKey {
            field: field(),
            found: FieldValue::from_json(other).kind_name(),
        }),
    }
}

fn time_from_json(data: &Value, pointer: &FieldPointer) -> Result<EventTime, ExtractError> {
    let field = pointer.field_name();
    let bad = |reason: String| ExtractError::BadTime {
        field: pointer.field_name(),
        reason,
    };
    match data.pointer(pointer.as_str()) {
        None | Some(Value::Null) => Err(ExtractError::MissingTime { field }),
        Some(Value::String(text)) => match DateTime::parse_from_rfc3339(text) {
            Ok(time) => from_datetime(time.with_timezone(&Utc), &field),
            Err(e) => Err(bad(format!("`{text}` is not an RFC 3339 time ({e})"))),
        },
        Some(Value::Number(n)) => {
            let millis = n.as_i64().ok_or_else(|| {
                bad(format!(
                    "{n} is not a whole number of milliseconds since the Unix epoch"
                ))
            })?;
            millis
                .checked_mul(1_000)
                .filter(|micros| (MIN_EVENT_TIME..=MAX_EVENT_TIME).contains(micros))
                .ok_or_else(|| bad(format!("{millis} ms is outside the years 1 to 9999")))
        }
        Some(other) => Err(bad(format!(
            "it is {}, not an RFC 3339 string or milliseconds since the Unix epoch",
            FieldValue::from_json(other).kind_name()
        ))),
    }
}

fn from_datetime(time: DateTime<Utc>, field: &str) -> Result<EventTime, ExtractError> {
    let micros = time.timestamp_micros();
    if (MIN_EVENT_TIME..=MAX_EVENT_TIME).contains(&micros) {
        Ok(micros)
    } else {
        Err(ExtractError::BadTime {
            field: field.to_string(),
            reason: format!("{time} is outside the years 1 to 9999"),
        })
    }
}

/// An event time as RFC 3339 text, to the microsecond (for reasons and results).
pub fn format_time(time: EventTime) -> String {
    DateTime::<Utc>::from_timestamp_micros(time).map_or_else(
        || format!("{time} µs since the epoch"),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    )
}
