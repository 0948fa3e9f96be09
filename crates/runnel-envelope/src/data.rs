//! The event payload and the content-type rules that decide how it travels.

use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::EnvelopeError;

/// The `data` of an event.
///
/// Which variant an event holds decides how the JSON format carries it: [`Data::Json`] and
/// [`Data::Text`] go in the `data` member (a JSON value, or a JSON string), [`Data::Binary`]
/// in `data_base64`. JSON `null` data is an explicit `null` payload, distinct from
/// [`Data::None`], which has no `data` member at all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Data {
    /// No payload.
    #[default]
    None,
    /// A JSON value; `datacontenttype` is absent (implying `application/json`) or a JSON
    /// media type (`*/json` or `*/*+json`).
    Json(JsonData),
    /// Opaque bytes, in the format `datacontenttype` names if present.
    Binary(Bytes),
    /// Text in a non-JSON media type such as `text/plain` or `application/xml`;
    /// `datacontenttype` is always present.
    Text(String),
}

impl Data {
    /// Whether there is no payload.
    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }

    /// The JSON value, if this is JSON data (parsed on first use).
    pub fn as_json(&self) -> Option<&Value> {
        match self {
            Self::Json(json) => Some(json.value()),
            _ => None,
        }
    }

    /// The JSON data with its text, if this is JSON data.
    pub fn as_json_data(&self) -> Option<&JsonData> {
        match self {
            Self::Json(json) => Some(json),
            _ => None,
        }
    }

    /// The bytes, if this is binary data.
    pub fn as_binary(&self) -> Option<&Bytes> {
        match self {
            Self::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// The text, if this is text data.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// JSON data, kept as its text and parsed into a [`Value`] only when somebody looks inside.
///
/// Most events cross Runnel without anyone reading their data: from a request body into the
/// log, from the log out to a handler or over HTTP. Keeping the text spares a parse and a
/// serialization on each of those hops; [`JsonData::value`] parses once, on demand.
///
/// The text is always valid JSON that a [`Value`] can hold (the same checks as parsing one,
/// numbers out of `f64` range included), so [`JsonData::value`] cannot fail. Two `JsonData`
/// are equal when their values are, whatever their whitespace or member order.
#[derive(Clone)]
pub struct JsonData {
    text: Bytes,
    value: OnceLock<Value>,
}

impl JsonData {
    /// JSON data from a value, written compactly.
    pub fn from_value(value: Value) -> Self {
        // Serializing a `Value` cannot fail: its map keys are strings.
        let text = Bytes::from(
            serde_json::to_vec(&value).unwrap_or_else(|_| value.to_string().into_bytes()),
        );
        Self {
            text,
            value: OnceLock::from(value),
        }
    }

    /// JSON data from its text, which must be one valid JSON value (whitespace around it is
    /// allowed and kept). Takes `text` without copying.
    pub fn from_text(text: Bytes) -> Result<Self, serde_json::Error> {
        serde_json::from_slice::<Checked>(&text)?;
        Ok(Self {
            text,
            value: OnceLock::new(),
        })
    }

    /// The JSON text.
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    /// The JSON text, shared without copying.
    pub fn text_bytes(&self) -> &Bytes {
        &self.text
    }

    /// The parsed value.
    pub fn value(&self) -> &Value {
        // The text was checked by the same parser when this was made, so this cannot fail.
        self.value
            .get_or_init(|| serde_json::from_slice(&self.text).unwrap_or(Value::Null))
    }

    /// The parsed value, owned.
    pub fn into_value(self) -> Value {
        match self.value.into_inner() {
            Some(value) => value,
            None => serde_json::from_slice(&self.text).unwrap_or(Value::Null),
        }
    }
}

impl From<Value> for JsonData {
    fn from(value: Value) -> Self {
        Self::from_value(value)
    }
}

impl PartialEq for JsonData {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text || self.value() == other.value()
    }
}

impl Eq for JsonData {}

impl fmt::Debug for JsonData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JsonData")
            .field(&String::from_utf8_lossy(&self.text))
            .finish()
    }
}

/// The `Visitor` methods for every JSON value that is neither an object nor an array: each
/// answers `$make(kind)`, `kind` naming what was found ("a string", "null", …).
macro_rules! visit_scalars {
    ($make:expr) => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(($make)("null"))
        }

        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(($make)("a boolean"))
        }

        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(($make)("a number"))
        }

        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(($make)("a number"))
        }

        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(($make)("a number"))
        }

        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(($make)("a string"))
        }
    };
}
pub(crate) use visit_scalars;

/// Accepts exactly what parsing into a [`Value`] accepts, and keeps nothing.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    visit_scalars!(|_| Checked);

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

/// Whether a media type declares JSON content: its subtype, stripped of parameters, is `json`
/// or ends in `+json` (`application/json`, `application/cloudevents+json`,
/// `text/json; charset=utf-8`). Case-insensitive.
pub fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some((_, subtype)) => subtype == "json" || subtype.ends_with("+json"),
        None => false,
    }
}

/// Checks that `datacontenttype` looks like an RFC 2046 media type: `type/subtype`, both
/// non-empty tokens, optionally followed by `;` and parameters.
pub(crate) fn validate_content_type(content_type: &str) -> Result<(), EnvelopeError> {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let ok = match essence.split_once('/') {
        Some((ty, subtype)) => is_token(ty) && is_token(subtype),
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(EnvelopeError::invalid(
            "datacontenttype",
            format!("expected a media type such as `application/json`, got `{content_type}`"),
        ))
    }
}

/// An RFC 2045 token: one or more visible ASCII characters other than `tspecials`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// Checks that the payload kind agrees with `datacontenttype`, so the event can be written
/// in the JSON format and read back as the same variant.
pub(crate) fn validate_data(data: &Data, content_type: Option<&str>) -> Result<(), EnvelopeError> {
    match (data, content_type) {
        (Data::Json(_), Some(ct)) if !is_json_content_type(ct) => Err(EnvelopeError::invalid(
            "datacontenttype",
            format!(
                "JSON data needs a JSON media type (`*/json` or `*/*+json`), got `{ct}`; \
                 use text or binary data for other media types"
            ),
        )),
        (Data::Text(_), None) => Err(EnvelopeError::invalid(
            "datacontenttype",
            "text data needs a non-JSON media type such as `text/plain`, but none is set",
        )),
        (Data::Text(_), Some(ct)) if is_json_content_type(ct) => Err(EnvelopeError::invalid(
            "datacontenttype",
            format!("text data needs a non-JSON media type, got `{ct}`; use JSON data instead"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_is_accepted_exactly_when_a_value_would_be() {
        for text in [
            "{}",
            " [1, 2.5, -3, true, null, \"\\u00e9\"] ",
            "{\"a\":{\"b\":[{}]}}",
            "1.7976931348623157e308",
            "\"x\"",
        ] {
            let data = JsonData::from_text(Bytes::from(text)).expect(text);
            let parsed: Value = serde_json::from_str(text).unwrap();
            assert_eq!(data.value(), &parsed, "{text}");
        }
        for text in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "1e400",
            "-1e400",
            "nul",
            "{} {}",
            "\"\\x\"",
            "[1] x",
        ] {
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
            assert!(JsonData::from_text(Bytes::from(text)).is_err(), "{text}");
        }
        assert!(JsonData::from_text(Bytes::from_static(b"\"\xff\"")).is_err());
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(JsonData::from_text(Bytes::from(deep)).is_err());
    }

    #[test]
    fn json_data_equal_by_value_whatever_the_text() {
        let spaced =
            JsonData::from_text(Bytes::from_static(b"{ \"b\": 1, \"a\": [true] }")).unwrap();
        let compact = JsonData::from(serde_json::json!({"a": [true], "b": 1}));
        assert_eq!(spaced, compact);
        assert_eq!(compact.text(), br#"{"a":[true],"b":1}"#);
        assert_ne!(
            spaced,
            JsonData::from(serde_json::json!({"a": [false], "b": 1}))
        );
        assert_eq!(
            spaced.into_value(),
            serde_json::json!({"a": [true], "b": 1})
        );
    }

    #[test]
    fn json_media_types_are_recognised() {
        for ct in [
            "application/json",
            "Application/JSON",
            "text/json",
            "application/cloudevents+json",
            "application/vnd.runnel.order+json; charset=utf-8",
        ] {
            assert!(is_json_content_type(ct), "{ct}");
        }
        for ct in [
            "application/xml",
            "text/plain",
            "application/jsonx",
            "json",
            "",
        ] {
            assert!(!is_json_content_type(ct), "{ct}");
        }
    }

    #[test]
    fn content_types_must_be_media_types() {
        for ct in [
            "text/plain",
            "application/vnd.apache.thrift.binary",
            "text/plain; charset=utf-8",
        ] {
            assert!(validate_content_type(ct).is_ok(), "{ct}");
        }
        for ct in ["", "plain", "/json", "text/", "text /plain", "a/b/c"] {
            assert!(validate_content_type(ct).is_err(), "{ct}");
        }
    }

    #[test]
    fn data_kind_must_agree_with_the_content_type() {
        let json = Data::Json(serde_json::json!({"a": 1}).into());
        let text = Data::Text("<a/>".into());
        assert!(validate_data(&json, None).is_ok());
        assert!(validate_data(&json, Some("application/json")).is_ok());
        assert!(validate_data(&json, Some("application/xml")).is_err());
        assert!(validate_data(&text, Some("application/xml")).is_ok());
        assert!(validate_data(&text, None).is_err());
        assert!(validate_data(&text, Some("application/json")).is_err());
        assert!(
            validate_data(
                &Data::Binary(Bytes::from_static(b"x")),
                Some("application/json")
            )
            .is_ok()
        );
    }
}
