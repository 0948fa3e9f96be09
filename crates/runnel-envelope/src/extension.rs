//! Extension attributes Runnel does not type itself.

use std::fmt;

use crate::EnvelopeError;

/// Longest extension attribute name CloudEvents allows.
pub const MAX_EXTENSION_NAME_LEN: usize = 20;

/// Attribute names this crate gives a field of their own, besides `data`; an extension may not
/// use them (nor `data`). The JSON reader keeps these in fixed places.
pub(crate) const ATTRIBUTE_NAMES: [&str; 14] = [
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
    "correlationid",
    "causationid",
    "traceparent",
    "schemaversion",
    "partitionkey",
    "data_base64",
];

/// The value of an extension attribute, in the CloudEvents type system as JSON carries it.
///
/// URI, URI-reference, Timestamp and Binary attributes travel as strings in JSON, so an
/// extension this crate does not know is kept as the [`String`](ExtensionValue::String) it
/// arrived as and is written back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExtensionValue {
    /// A string.
    String(String),
    /// A boolean.
    Boolean(bool),
    /// A CloudEvents Integer: a signed 32-bit whole number.
    Integer(i32),
}

impl ExtensionValue {
    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The integer, if this is an integer.
    pub fn as_i32(&self) -> Option<i32> {
        match self {
            Self::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The value as a JSON value.
    pub fn to_json_value(&self) -> serde_json::Value {
        match self {
            Self::String(s) => serde_json::Value::String(s.clone()),
            Self::Boolean(b) => serde_json::Value::Bool(*b),
            Self::Integer(i) => serde_json::Value::from(*i),
        }
    }
}

impl From<String> for ExtensionValue {
    fn from(value: String) -> Self {
        Self::String(value)
    }
}

impl From<&str> for ExtensionValue {
    fn from(value: &str) -> Self {
        Self::String(value.to_owned())
    }
}

impl From<bool> for ExtensionValue {
    fn from(value: bool) -> Self {
        Self::Boolean(value)
    }
}

impl From<i32> for ExtensionValue {
    fn from(value: i32) -> Self {
        Self::Integer(value)
    }
}

impl fmt::Display for ExtensionValue {
    /// The canonical string form, as the HTTP binary binding would carry it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String(s) => f.write_str(s),
            Self::Boolean(b) => write!(f, "{b}"),
            Self::Integer(i) => write!(f, "{i}"),
        }
    }
}

/// Checks an extension attribute name: 1 to 20 characters of `a-z` and `0-9`, and not the
/// name of an attribute this crate types itself (`traceparent`, `partitionkey`, …).
pub fn validate_extension_name(name: &str) -> Result<(), EnvelopeError> {
    let reason = if name.is_empty() {
        Some("name must not be empty")
    } else if name.len() > MAX_EXTENSION_NAME_LEN {
        Some("name must be at most 20 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Some("name may contain only lowercase letters `a-z` and digits `0-9`")
    } else if name == "data" || ATTRIBUTE_NAMES.contains(&name) {
        Some("is a context attribute with its own setter, not a free extension")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(EnvelopeError::InvalidExtensionName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_names_follow_the_cloudevents_rules() {
        for ok in ["comexampleextension1", "a", "x9", "tracestate"] {
            assert!(validate_extension_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "comexampleextension12",
            "Upper",
            "with_underscore",
            "dash-ed",
            "ünï",
            "traceparent",
            "id",
            "data",
        ] {
            assert!(
                matches!(
                    validate_extension_name(bad),
                    Err(EnvelopeError::InvalidExtensionName { ref name, .. }) if name == bad
                ),
                "{bad}"
            );
        }
    }
}
