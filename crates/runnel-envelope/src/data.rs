//! The event payload and the content-type rules that decide how it travels.

use bytes::Bytes;

use crate::EnvelopeError;

/// The `data` of an event.
///
/// Which variant an event holds decides how the JSON format carries it: [`Data::Json`] and
/// [`Data::Text`] go in the `data` member (a JSON value, or a JSON string), [`Data::Binary`]
/// in `data_base64`. `Data::Json(Value::Null)` is an explicit `null` payload, distinct from
/// [`Data::None`], which has no `data` member at all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Data {
    /// No payload.
    #[default]
    None,
    /// A JSON value; `datacontenttype` is absent (implying `application/json`) or a JSON
    /// media type (`*/json` or `*/*+json`).
    Json(serde_json::Value),
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

    /// The JSON value, if this is JSON data.
    pub fn as_json(&self) -> Option<&serde_json::Value> {
        match self {
            Self::Json(v) => Some(v),
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
        let json = Data::Json(serde_json::json!({"a": 1}));
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
