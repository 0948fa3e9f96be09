//! Compatibility modes and verdicts: which earlier versions a new schema is checked against,
//! in which direction, and the answer with its reasons.
//!
//! Kept apart from the checker ([`crate::compat`]) because the modes are policy (named as
//! Confluent names them, stored per subject) while the checker is a pure relation between
//! two schemas.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compat::{Direction, can_read};

/// How a new version must relate to earlier ones. Default `BACKWARD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum CompatibilityMode {
    /// Consumers on the new schema can read data written with the latest earlier version.
    #[default]
    Backward,
    /// … with every earlier version.
    BackwardTransitive,
    /// Consumers on the latest earlier version can read data written with the new schema.
    Forward,
    /// … every earlier version can.
    ForwardTransitive,
    /// Both `Backward` and `Forward` against the latest earlier version.
    Full,
    /// Both, against every earlier version.
    FullTransitive,
    /// No check.
    None,
}

impl CompatibilityMode {
    /// Every mode, in the order the docs list them.
    pub const ALL: [Self; 7] = [
        Self::Backward,
        Self::BackwardTransitive,
        Self::Forward,
        Self::ForwardTransitive,
        Self::Full,
        Self::FullTransitive,
        Self::None,
    ];

    /// The Confluent name: `BACKWARD`, `FULL_TRANSITIVE`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
            Self::None => "NONE",
        }
    }

    /// Checked against every earlier version rather than the latest.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    /// New consumers must read old data.
    pub fn checks_backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    /// Old consumers must read new data.
    pub fn checks_forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a compatibility mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid compatibility level `{0}`: expected one of BACKWARD, BACKWARD_TRANSITIVE, FORWARD, \
     FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE, NONE"
)]
pub struct InvalidMode(pub String);

impl FromStr for CompatibilityMode {
    type Err = InvalidMode;

    /// Parses a Confluent name, ignoring case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| InvalidMode(s.to_owned()))
    }
}

impl TryFrom<String> for CompatibilityMode {
    type Error = InvalidMode;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<CompatibilityMode> for String {
    fn from(value: CompatibilityMode) -> Self {
        value.as_str().to_owned()
    }
}

/// The answer of a compatibility check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub compatible: bool,
    /// One sentence per incompatibility: `/properties/amount: type narrowed from number to
    /// integer`. In transitive modes each starts with the version it breaks (`version 1: …`).
    pub reasons: Vec<String>,
}

impl Verdict {
    /// A compatible verdict with no reasons.
    pub fn compatible() -> Self {
        Self {
            compatible: true,
            reasons: Vec::new(),
        }
    }

    fn from_reasons(reasons: Vec<String>) -> Self {
        Self {
            compatible: reasons.is_empty(),
            reasons,
        }
    }
}

/// Checks `new` against the earlier versions of a subject under `mode`. `history` is
/// `(version, schema)` oldest first; only the last is used unless the mode is transitive.
/// An empty history is compatible.
pub fn check(mode: CompatibilityMode, new: &Value, history: &[(u32, &Value)]) -> Verdict {
    if mode == CompatibilityMode::None {
        return Verdict::compatible();
    }
    let targets = if mode.is_transitive() {
        history
    } else {
        history.last().map(std::slice::from_ref).unwrap_or_default()
    };
    let mut reasons = Vec::new();
    for (version, old) in targets {
        let prefix = if mode.is_transitive() {
            format!("version {version}: ")
        } else {
            String::new()
        };
        if mode.checks_backward() {
            for reason in can_read(new, old, "") {
                reasons.push(format!("{prefix}{}", reason.describe(Direction::Backward)));
            }
        }
        if mode.checks_forward() {
            for reason in can_read(old, new, "") {
                reasons.push(format!("{prefix}{}", reason.describe(Direction::Forward)));
            }
        }
    }
    Verdict::from_reasons(reasons)
}

/// Checks `new` against one `old` version in the directions `mode` asks for, ignoring
/// transitivity (a check against one named version).
pub fn check_one(mode: CompatibilityMode, new: &Value, old: &Value) -> Verdict {
    let mode = match mode {
        CompatibilityMode::BackwardTransitive => CompatibilityMode::Backward,
        CompatibilityMode::ForwardTransitive => CompatibilityMode::Forward,
        CompatibilityMode::FullTransitive => CompatibilityMode::Full,
        other => other,
    };
    check(mode, new, &[(0, old)])
}
