//! The W3C trace-context `traceparent` extension.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::EnvelopeError;

const EXPECTED: &str = "expected 00-<32 hex>-<16 hex>-<2 hex>";

/// A W3C trace-context `traceparent`: `version-traceid-parentid-flags`, e.g.
/// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
///
/// The four fields are 2, 32, 16 and 2 lowercase hex digits; the trace id and the parent id
/// are not all zeros, and version `ff` is invalid. Held parsed, rendered back byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TraceParent {
    version: u8,
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

impl TraceParent {
    /// A version-00 traceparent from its parts.
    pub fn from_parts(
        trace_id: [u8; 16],
        parent_id: [u8; 8],
        flags: u8,
    ) -> Result<Self, EnvelopeError> {
        Self::from_raw(0, trace_id, parent_id, flags)
    }

    /// Any-version constructor shared by [`TraceParent::from_parts`], the parser and the
    /// binary decoder, so all three enforce the same rules.
    pub(crate) fn from_raw(
        version: u8,
        trace_id: [u8; 16],
        parent_id: [u8; 8],
        flags: u8,
    ) -> Result<Self, EnvelopeError> {
        let tp = Self {
            version,
            trace_id,
            parent_id,
            flags,
        };
        if version == 0xff {
            return Err(invalid(format!("version `ff` is invalid, got `{tp}`")));
        }
        if trace_id == [0; 16] {
            return Err(invalid(format!(
                "trace id must not be all zeros, got `{tp}`"
            )));
        }
        if parent_id == [0; 8] {
            return Err(invalid(format!(
                "parent id must not be all zeros, got `{tp}`"
            )));
        }
        Ok(tp)
    }

    /// The context of a span caused by this one: the same trace id and flags, a fresh random
    /// parent (span) id, version 00. An event made while handling another carries its input's
    /// `traceparent`'s child, so a trace follows a workflow from event to event.
    pub fn child(&self) -> Self {
        loop {
            let bytes = *uuid::Uuid::new_v4().as_bytes();
            let mut span = [0u8; 8];
            span.copy_from_slice(&bytes[8..]);
            if span != [0; 8] {
                return Self {
                    version: 0,
                    trace_id: self.trace_id,
                    parent_id: span,
                    flags: self.flags,
                };
            }
        }
    }

    /// Parses `version-traceid-parentid-flags`.
    pub fn parse(s: &str) -> Result<Self, EnvelopeError> {
        let bad = || invalid(format!("{EXPECTED}, got `{s}`"));
        let mut parts = s.split('-');
        let (Some(version), Some(trace_id), Some(parent_id), Some(flags), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        let version: [u8; 1] = hex(version).ok_or_else(bad)?;
        let trace_id: [u8; 16] = hex(trace_id).ok_or_else(bad)?;
        let parent_id: [u8; 8] = hex(parent_id).ok_or_else(bad)?;
        let flags: [u8; 1] = hex(flags).ok_or_else(bad)?;
        Self::from_raw(version[0], trace_id, parent_id, flags[0])
    }

    /// The version byte (`00` today).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The 16-byte trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The 8-byte id of the parent span.
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace flags byte.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the `sampled` flag (bit 0) is set.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

fn invalid(reason: String) -> EnvelopeError {
    EnvelopeError::invalid("traceparent", reason)
}

/// Decodes exactly `2 * N` lowercase hex digits.
fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

impl FromStr for TraceParent {
    type Err = EnvelopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for TraceParent {
    type Error = EnvelopeError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl TryFrom<String> for TraceParent {
    type Error = EnvelopeError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TraceParent> for String {
    fn from(value: TraceParent) -> Self {
        value.to_string()
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}-", self.version)?;
        for b in self.trace_id {
            write!(f, "{b:02x}")?;
        }
        f.write_str("-")?;
        for b in self.parent_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-{:02x}", self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_traceparents_parse_and_render_back() {
        for s in [
            VALID,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            "01-00000000000000000000000000000001-0000000000000001-ff",
            "fe-ffffffffffffffffffffffffffffffff-ffffffffffffffff-03",
        ] {
            let tp = TraceParent::parse(s).unwrap();
            assert_eq!(tp.to_string(), s);
        }
        let tp: TraceParent = VALID.parse().unwrap();
        assert_eq!(tp.version(), 0);
        assert_eq!(tp.trace_id()[0], 0x4b);
        assert_eq!(tp.parent_id()[7], 0xb7);
        assert!(tp.sampled());
    }

    #[test]
    fn invalid_traceparents_are_rejected_with_the_reason() {
        let table = [
            ("abc", "expected 00-<32 hex>-<16 hex>-<2 hex>, got `abc`"),
            ("", "expected 00-"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "expected 00-",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                "expected 00-",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "expected 00-",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                "expected 00-",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
                "expected 00-",
            ),
            (
                "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "expected 00-",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                "expected 00-",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                "expected 00-",
            ),
            (
                "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "expected 00-",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version `ff`",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "parent id",
            ),
        ];
        for (input, expected) in table {
            let err = TraceParent::parse(input).unwrap_err();
            let message = err.to_string();
            assert!(
                message.starts_with("attribute `traceparent`: ") && message.contains(expected),
                "`{input}`: `{message}` should mention `{expected}`"
            );
        }
    }

    #[test]
    fn the_documented_message_is_exact() {
        let err = TraceParent::parse("abc").unwrap_err();
        assert_eq!(
            err.to_string(),
            "attribute `traceparent`: expected 00-<32 hex>-<16 hex>-<2 hex>, got `abc`"
        );
    }

    #[test]
    fn from_parts_enforces_the_same_rules() {
        assert!(TraceParent::from_parts([0; 16], [1; 8], 1).is_err());
        assert!(TraceParent::from_parts([1; 16], [0; 8], 1).is_err());
        let tp = TraceParent::from_parts([0xab; 16], [0xcd; 8], 0).unwrap();
        assert!(!tp.sampled());
        assert_eq!(TraceParent::parse(&tp.to_string()).unwrap(), tp);
    }
}
