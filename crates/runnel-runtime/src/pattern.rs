//! Type patterns: how a consumer group says which events it wants.
//!
//! A pattern has the shape of an event type, segment by segment: a literal segment matches
//! itself, `*` matches any one segment, and a final `>` matches one or more remaining segments
//! (the NATS convention). `order.*` matches `order.placed`; `*.*` matches every two-segment
//! type; `>` matches everything; `billing.>` matches `billing.invoice.paid`. A pattern that no
//! event type can match (`*`, `order`: types always have a domain and a fact) is refused, so
//! a group can never silently commit past every event.
//!
//! These are *type patterns*, for group filters. API key scopes use *name globs* over stream
//! and group names instead (`publish:order*`, `*` = any run of characters); both are
//! described, with examples, in `docs/http-api.md` ("Patterns").

use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated type pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TypePattern {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    One,
    Rest,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid type pattern `{pattern}`: {reason}")]
pub struct InvalidPattern {
    pub pattern: String,
    pub reason: &'static str,
}

impl TypePattern {
    pub fn new(text: impl Into<String>) -> Result<Self, InvalidPattern> {
        let text = text.into();
        let invalid = |reason| InvalidPattern {
            pattern: text.clone(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("must not be empty"));
        }
        let parts: Vec<&str> = text.split('.').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let segment = match *part {
                "*" => Segment::One,
                ">" if i + 1 == parts.len() => Segment::Rest,
                ">" => return Err(invalid("`>` may only be the last segment")),
                "" => return Err(invalid("has an empty segment")),
                literal => {
                    let first_ok = literal.as_bytes()[0].is_ascii_lowercase();
                    let rest_ok = literal
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                    if !first_ok || !rest_ok {
                        return Err(invalid(
                            "segments are lowercase names (`a-z`, `0-9`, `_`), `*` or a final `>`",
                        ));
                    }
                    Segment::Literal(literal.to_string())
                }
            };
            segments.push(segment);
        }
        if segments.len() == 1 && segments[0] != Segment::Rest {
            return Err(invalid(
                "matches no event type: types have a domain and a fact (`order.placed`), so \
                 write `order.*`, `*.*` for every two-segment type, or `>` for every type",
            ));
        }
        Ok(Self { text, segments })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether an event type (`domain.fact…`) matches.
    pub fn matches(&self, event_type: &str) -> bool {
        let mut parts = event_type.split('.');
        for segment in &self.segments {
            match segment {
                Segment::Rest => return parts.next().is_some(),
                Segment::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(want) => match parts.next() {
                    Some(part) if part == want => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }

    /// Whether events of a stream (an event type's domain) can match.
    pub fn matches_stream(&self, stream: &str) -> bool {
        match self.segments.first() {
            Some(Segment::Literal(domain)) => domain == stream,
            _ => true,
        }
    }

    /// Whether every event type of stream `stream` matches (`>`, `order.>` for `order`), so
    /// that counting matching events needs no look at their types.
    pub fn matches_every_type_of(&self, stream: &str) -> bool {
        match self.segments.as_slice() {
            [Segment::Rest] => true,
            [Segment::Literal(domain), Segment::Rest] => domain == stream,
            _ => false,
        }
    }

    /// The one stream this pattern can match, when its first segment is literal.
    pub fn stream(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Literal(domain)) => Some(domain),
            _ => None,
        }
    }
}

impl fmt::Display for TypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for TypePattern {
    type Error = InvalidPattern;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<TypePattern> for String {
    fn from(value: TypePattern) -> Self {
        value.text
    }
}

impl std::str::FromStr for TypePattern {
    type Err = InvalidPattern;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_segment_by_segment() {
        let cases = [
            ("order.*", "order.placed", true),
            ("order.*", "order.item.added", false),
            ("order.*", "payment.charged", false),
            ("*.*", "payment.charged", true),
            ("*.*", "billing.invoice.paid", false),
            ("billing.>", "billing.invoice.paid", true),
            ("billing.>", "billing", false),
            (">", "anything.at.all", true),
            ("order.placed", "order.placed", true),
            ("order.placed", "order.placedx", false),
            ("*.charged", "payment.charged", true),
        ];
        for (pattern, event_type, want) in cases {
            let p = TypePattern::new(pattern).unwrap();
            assert_eq!(p.matches(event_type), want, "{pattern} vs {event_type}");
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for bad in [
            "",
            "order..placed",
            "Order.*",
            "order.>.x",
            "order/x",
            "../x",
        ] {
            assert!(TypePattern::new(bad).is_err(), "{bad}");
        }
        assert_eq!(TypePattern::new("order.*").unwrap().stream(), Some("order"));
        assert_eq!(TypePattern::new("*.*").unwrap().stream(), None);
    }

    #[test]
    fn a_pattern_no_event_type_can_match_is_refused_suggesting_what_can() {
        for never in ["*", "order"] {
            let error = TypePattern::new(never).unwrap_err();
            assert!(error.reason.contains("`*.*`"), "{never}: {error}");
            assert!(error.reason.contains("`>`"), "{never}: {error}");
        }
        assert!(TypePattern::new(">").is_ok());
        assert!(TypePattern::new("*.*").is_ok());
    }
}
