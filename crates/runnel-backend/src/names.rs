//! Validated names. A stream name becomes a directory, a subject token and a metrics label,
//! so it holds only lowercase letters, digits, `_` and `-`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A rejected name, with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{name}`: {reason}")]
pub struct InvalidName {
    pub what: &'static str,
    pub name: String,
    pub reason: &'static str,
}

/// A stream name: 1–64 characters, a lowercase letter first, then lowercase letters, digits,
/// `_` or `-`. An event type's domain (`order` of `order.placed`) is always a valid one.
/// Cloning is cheap (a shared string): names travel with every delivery.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamName(Arc<str>);

impl StreamName {
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        let invalid = |reason| InvalidName {
            what: "stream name",
            name: name.clone(),
            reason,
        };
        if name.is_empty() || name.len() > 64 {
            return Err(invalid("must be 1 to 64 characters"));
        }
        if !name.as_bytes()[0].is_ascii_lowercase() {
            return Err(invalid("must start with a lowercase letter"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(invalid(
                "may hold only lowercase letters, digits, `_` and `-`",
            ));
        }
        Ok(Self(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StreamName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for StreamName {
    type Error = InvalidName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<StreamName> for String {
    fn from(value: StreamName) -> Self {
        value.0.to_string()
    }
}

impl std::str::FromStr for StreamName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_refuse_path_like_and_uppercase_input() {
        for ok in ["order", "payment_v2", "a-b", "x1"] {
            assert!(StreamName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "Order", "1abc", "a/b", "a.b", &"a".repeat(65)] {
            assert!(StreamName::new(bad).is_err(), "{bad}");
        }
    }
}
