//! Runnel's schema registry: the contract between producers and consumers, kept so that a
//! producer cannot break its consumers by accident.
//!
//! Each event type (`order.placed`) is a *subject* with JSON Schema versions 1, 2, … (draft
//! 2020-12 or draft-07). A new version must be compatible with the earlier ones under the
//! subject's mode (`BACKWARD` by default; `FORWARD`, `FULL`, their transitive forms, `NONE`),
//! or it is refused with the reasons. Event data is validated against a version with every
//! failing path listed, and data written at one version is adapted for a consumer pinned to
//! another (defaults filled, unknown properties removed). The server (`runnel-server`) serves
//! it over a Confluent-compatible REST API; this crate knows no HTTP.
//!
//! Modules, each for one concern:
//! - [`compat`]: the compatibility checker, pure functions over two schemas.
//! - [`mode`]: the modes and verdicts built on it.
//! - [`adapt`]: up- and downcasting data between versions, by the same rule the checker
//!   assumes.
//! - `document`: a schema parsed, checked, compiled and canonicalised ([`SchemaDoc`]).
//! - `store`: the key-value layout in the backend.
//! - `registry`: [`SchemaRegistry`], tying them together.
//! - `typed`: [`SchemaEvent`], schemas generated from Rust types.
//!
//! # Invariants
//!
//! - Versions are immutable and a version number is never given to a second schema, even
//!   after a permanent delete.
//! - One schema text (up to key order and whitespace) has one global id, under every subject;
//!   ids stay resolvable after deletes.
//! - Every stored schema compiled as valid JSON Schema, with all `$ref`s inside itself.
//! - Concurrent registrations cannot create the same version or id twice: every allocation is
//!   a compare-and-set in the backend's key-value store.
//! - The checker is sound for what it understands: "compatible" means adapted data of the
//!   old version validates against the new (or the reverse); what it cannot prove it reports.

pub mod adapt;
pub mod compat;
mod document;
mod error;
pub mod mode;
mod registry;
mod store;
mod typed;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use document::{SchemaDoc, SchemaDraft, canonical_text};
pub use error::{FieldError, InvalidSchema, RegistryError, ValidationError};
pub use mode::{CompatibilityMode, InvalidMode, Verdict};
pub use registry::{Registered, RegistryConfig, SchemaRegistry, SubjectVersion};
pub use typed::{SchemaEvent, schema_of};

/// A global schema id: the same schema text has the same id under every subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SchemaId(pub u32);

impl fmt::Display for SchemaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A version of a subject: a number (1, 2, …) or the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionRef {
    Latest,
    Number(u32),
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("latest"),
            Self::Number(n) => n.fmt(f),
        }
    }
}

impl FromStr for VersionRef {
    type Err = RegistryError;

    /// `latest` (any case), `-1` (Confluent's spelling of latest) or a number from 1 to
    /// 2³¹−1; anything else is [`RegistryError::InvalidVersion`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("latest") || s == "-1" {
            return Ok(Self::Latest);
        }
        match s.parse::<u32>() {
            Ok(n) if n >= 1 && n <= i32::MAX as u32 => Ok(Self::Number(n)),
            _ => Err(RegistryError::InvalidVersion {
                given: s.chars().take(64).collect(),
            }),
        }
    }
}

impl From<u32> for VersionRef {
    fn from(n: u32) -> Self {
        Self::Number(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_refs_parse_like_confluent() {
        assert_eq!("latest".parse::<VersionRef>().unwrap(), VersionRef::Latest);
        assert_eq!("-1".parse::<VersionRef>().unwrap(), VersionRef::Latest);
        assert_eq!("3".parse::<VersionRef>().unwrap(), VersionRef::Number(3));
        for bad in ["0", "-2", "x", "", "99999999999", "1.5"] {
            let err = bad.parse::<VersionRef>().unwrap_err();
            assert_eq!(err.error_code(), 42202, "{bad}");
        }
    }
}
