//! The typed configuration of one feature stage: a `[[features]]` table of `runnel.toml`.
//!
//! Deserializing checks each value on its own (a duration parses, a pointer is a JSON pointer,
//! an output type is `domain.fact`); [`FeatureSpec::validate`] then checks the rules that tie
//! fields together, and names the field at fault with its path, such as
//! `features[0].window.slide`, so `runnel serve` can refuse a bad file at start.
//!
//! ```toml
//! [[features]]
//! name = "card_spend"
//! input = "payment.charged"
//! key = "/card_id"                 # or "partitionkey" (the default)
//! time = "time"                    # the CloudEvents `time` (default), or a pointer into data
//! window = { kind = "sliding", size = "10m", slide = "1m" }
//! max_out_of_orderness = "5s"
//! allowed_lateness = "1m"
//! idle_timeout = "1m"
//! output = "feature.computed"
//! aggregates = [
//!   { name = "payments", kind = "count" },
//!   { name = "spent", kind = "sum", field = "/amount" },
//!   { name = "merchants", kind = "distinct", field = "/merchant" },
//! ]
//! ```

use std::collections::HashMap;
use std::fmt;

use runnel_envelope::EventType;
use serde::{Deserialize, Serialize};

use crate::HumanDuration;

/// Most panes one window may be made of (`size / gcd(size, slide)`): a day of minutes. Each
/// result merges this many panes, so the cost of a result grows with it.
pub const MAX_PANES_PER_WINDOW: u64 = 1_440;

/// Longest window size, gap, out-of-orderness or lateness accepted: ten years.
pub const MAX_DURATION: HumanDuration = HumanDuration::from_secs(3_650 * 86_400);

/// Longest feature name: it is part of every result id and of the stage's state keys.
pub const MAX_NAME_LEN: usize = 64;

/// One `[[features]]` table: a windowed aggregation of one event type pattern, keyed by
/// entity, in event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// The stage's name: `[a-z0-9_-]`, unique among features. It is part of every result id,
    /// so renaming a feature starts its results afresh.
    pub name: String,
    /// The type pattern of the input events (`payment.charged`, `payment.*`), in the runtime's
    /// subscription syntax; the runtime checks it when it subscribes.
    pub input: String,
    /// The entity a window belongs to. Default: the `partitionkey` attribute.
    #[serde(default)]
    pub key: KeySource,
    /// The event time. Default: the CloudEvents `time` attribute.
    #[serde(default)]
    pub time: TimeSource,
    /// The window kind and its sizes.
    pub window: WindowSpec,
    /// How far behind the newest event time of its partition an event may be and still be on
    /// time: each partition's watermark is its newest event time minus this. Default `0s`.
    #[serde(default)]
    pub max_out_of_orderness: HumanDuration,
    /// How long after a window fired an event may still update it (re-emitting it with a
    /// higher revision); later events go to the late stream. Default `0s`.
    #[serde(default)]
    pub allowed_lateness: HumanDuration,
    /// After this long without an event a partition stops holding the stage's watermark back;
    /// `"0s"` turns idleness off (Flink's default). Default `1m`.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// What is computed over each window, in output order.
    pub aggregates: Vec<AggregateSpec>,
    /// The type of the result events, e.g. `feature.computed`.
    pub output: EventType,
    /// The stream events too late for any window go to, with the reason. Default: the input's
    /// stream followed by `_late` (`payment_late`). A stream name holds no `.` (a stream is an
    /// event type's domain), so a late `payment.charged` is published as `payment_late.charged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_stream: Option<String>,
}

fn default_idle_timeout() -> HumanDuration {
    HumanDuration::from_mins(1)
}

/// Where the window key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum KeySource {
    /// The `partitionkey` extension attribute (written `"partitionkey"`).
    #[default]
    PartitionKey,
    /// A JSON pointer into the event's data (written `"/card_id"`); strings are taken as they
    /// are, numbers and booleans as their JSON text.
    Data(FieldPointer),
}

/// Where the event time comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum TimeSource {
    /// The CloudEvents `time` attribute (written `"time"`).
    #[default]
    Attribute,
    /// A JSON pointer into the event's data (written `"/occurred_at"`): an RFC 3339 string or
    /// an integer of milliseconds since the Unix epoch.
    Data(FieldPointer),
}

/// A JSON pointer (RFC 6901) into an event's data, such as `/amount` or `/card/id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FieldPointer(String);

/// Why a JSON pointer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid JSON pointer `{pointer}`: {reason} (write e.g. `/amount`; `~0` is `~`, `~1` is `/`)"
)]
pub struct InvalidPointer {
    /// The pointer as written.
    pub pointer: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FieldPointer {
    /// Checks that `pointer` is a non-empty JSON pointer.
    pub fn new(pointer: impl Into<String>) -> Result<Self, InvalidPointer> {
        let pointer = pointer.into();
        let reason = if !pointer.starts_with('/') {
            Some("it must start with `/`")
        } else if pointer
            .split('~')
            .skip(1)
            .any(|after| !(after.starts_with('0') || after.starts_with('1')))
        {
            Some("`~` must be followed by `0` or `1`")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(InvalidPointer { pointer, reason }),
            None => Ok(Self(pointer)),
        }
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// How errors name the field: `data/amount`.
    pub fn field_name(&self) -> String {
        format!("data{}", self.0)
    }
}

impl fmt::Display for FieldPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for FieldPointer {
    type Error = InvalidPointer;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<FieldPointer> for String {
    fn from(value: FieldPointer) -> Self {
        value.0
    }
}

/// Why a `key` or `time` setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSource {
    /// Neither the attribute's name nor a pointer.
    #[error("`{text}` is neither `{attribute}` nor a JSON pointer into data such as `/id`")]
    Unknown {
        /// The text as written.
        text: String,
        /// The attribute name that is accepted.
        attribute: &'static str,
    },
    /// A pointer that does not parse.
    #[error(transparent)]
    Pointer(#[from] InvalidPointer),
}

fn parse_source(
    text: &str,
    attribute: &'static str,
) -> Result<Option<FieldPointer>, InvalidSource> {
    if text == attribute {
        Ok(None)
    } else if text.starts_with('/') {
        Ok(Some(FieldPointer::new(text)?))
    } else {
        Err(InvalidSource::Unknown {
            text: text.to_string(),
            attribute,
        })
    }
}

impl std::str::FromStr for KeySource {
    type Err = InvalidSource;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(parse_source(text, "partitionkey")?.map_or(Self::PartitionKey, Self::Data))
    }
}

impl std::str::FromStr for TimeSource {
    type Err = InvalidSource;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(parse_source(text, "time")?.map_or(Self::Attribute, Self::Data))
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PartitionKey => f.write_str("partitionkey"),
            Self::Data(pointer) => f.write_str(pointer.as_str()),
        }
    }
}

impl fmt::Display for TimeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attribute => f.write_str("time"),
            Self::Data(pointer) => f.write_str(pointer.as_str()),
        }
    }
}

macro_rules! serde_via_str {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(KeySource);
serde_via_str!(TimeSource);

/// The window kind, written as an inline table with a `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowSpec {
    /// Back-to-back windows of `size`, aligned to the Unix epoch: `[k·size, (k+1)·size)`.
    Tumbling {
        /// The length of each window.
        size: HumanDuration,
    },
    /// Windows of `size` starting every `slide` (hopping windows), aligned to the epoch; an
    /// event belongs to about `size / slide` windows.
    Sliding {
        /// The length of each window.
        size: HumanDuration,
        /// The distance between window starts; at most `size`.
        slide: HumanDuration,
    },
    /// Per-key sessions: events closer than `gap` to each other share a window, which ends
    /// `gap` after its last event.
    Session {
        /// The inactivity that closes a session.
        gap: HumanDuration,
    },
}

/// What an aggregate computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateKind {
    /// Events in the window; with a `field`, events where that field is present and not null.
    Count,
    /// Sum of a numeric field: exact for integers, compensated (Neumaier) once a float is seen.
    Sum,
    /// Arithmetic mean of a numeric field.
    Mean,
    /// Smallest value of a numeric field.
    Min,
    /// Largest value of a numeric field.
    Max,
    /// The field's value in the event with the latest event time (ties: the higher partition,
    /// then the higher offset).
    Last,
    /// Approximate number of distinct values of a field (HyperLogLog++; see the crate docs for
    /// the error bound).
    Distinct,
    /// Approximate p50, p90 and p99 of a numeric field (DDSketch, 1 % relative error).
    Quantiles,
}

impl AggregateKind {
    /// Whether this aggregate reads a field (required), as opposed to `count` (optional).
    pub fn needs_field(self) -> bool {
        !matches!(self, Self::Count)
    }

    /// Whether the field must hold numbers.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            Self::Sum | Self::Mean | Self::Min | Self::Max | Self::Quantiles
        )
    }

    /// The name used in `runnel.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Mean => "mean",
            Self::Min => "min",
            Self::Max => "max",
            Self::Last => "last",
            Self::Distinct => "distinct",
            Self::Quantiles => "quantiles",
        }
    }
}

/// One aggregate: its output name, its kind and the field it reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSpec {
    /// The member of the result's `values` object; unique within the feature.
    pub name: String,
    /// What is computed.
    pub kind: AggregateKind,
    /// A JSON pointer into the event's data; required by every kind but `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<FieldPointer>,
}

impl AggregateSpec {
    /// An aggregate of `kind` over `field`, named `name`.
    pub fn new(name: impl Into<String>, kind: AggregateKind, field: Option<&str>) -> Self {
        Self {
            name: name.into(),
            kind,
            field: field.and_then(|f| FieldPointer::new(f).ok()),
        }
    }
}

/// One rule a specification breaks, at one field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct SpecError {
    /// Where: `features[0].window.slide`, or `window.slide` for a spec checked on its own.
    pub path: String,
    /// What.
    pub problem: SpecProblem,
}

/// The rules of a feature specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecProblem {
    /// A required text is empty.
    #[error("must not be empty")]
    Empty,
    /// A name has characters outside `a-z`, `0-9`, `_` and `-`, or is too long.
    #[error("must be 1 to {MAX_NAME_LEN} characters of `a-z`, `0-9`, `_` and `-`")]
    BadName,
    /// A duration that must be positive is zero.
    #[error("must be longer than zero")]
    Zero,
    /// A duration beyond [`MAX_DURATION`].
    #[error("must be at most {MAX_DURATION}")]
    TooLong,
    /// A sliding window's slide is longer than its size (some events would be in no window).
    #[error("must not be longer than size ({size})")]
    SlideExceedsSize {
        /// The window size.
        size: HumanDuration,
    },
    /// A sliding window made of too many panes.
    #[error(
        "size / gcd(size, slide) = {panes} panes per window, more than {MAX_PANES_PER_WINDOW}: \
         choose a slide that divides size"
    )]
    TooManyPanes {
        /// Panes per window.
        panes: u64,
    },
    /// An aggregate without the field its kind reads.
    #[error("`{kind}` needs a field (a JSON pointer into data such as `/amount`)")]
    FieldRequired {
        /// The aggregate kind.
        kind: &'static str,
    },
    /// Two aggregates with one name.
    #[error("`{name}` is already the name of {first}")]
    Duplicate {
        /// The repeated name.
        name: String,
        /// The path of the first use.
        first: String,
    },
    /// No late stream is configured and the input names no single stream to derive one from.
    #[error("required when `input` ({input}) does not start with a stream name")]
    LateStreamRequired {
        /// The input pattern.
        input: String,
    },
    /// A late stream name that is not a stream name.
    #[error("must be a stream name: 1 to 64 of `a-z`, `0-9` and `_`, a letter first")]
    BadStreamName,
}

/// Every rule a specification (or a list of them) breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", list(.0))]
pub struct SpecErrors(pub Vec<SpecError>);

fn list(errors: &[SpecError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl SpecErrors {
    /// The errors, first to last.
    pub fn errors(&self) -> &[SpecError] {
        &self.0
    }
}

impl FeatureSpec {
    /// Checks the rules that tie fields together; paths are relative to the table
    /// (`window.slide`). [`validate_features`] prefixes them with `features[i].`.
    pub fn validate(&self) -> Result<(), SpecErrors> {
        let mut errors = Vec::new();
        self.check("", &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SpecErrors(errors))
        }
    }

    /// The stream that events too late for every window go to.
    pub fn late_stream(&self) -> Option<String> {
        match &self.late_stream {
            Some(stream) => Some(stream.clone()),
            None => input_stream(&self.input).map(|stream| format!("{stream}{LATE_SUFFIX}")),
        }
    }

    /// The data pointers the aggregates read, each once, in order of first use: the order of
    /// the values in a [`Record`](crate::Record).
    pub fn fields(&self) -> Vec<FieldPointer> {
        let mut fields: Vec<FieldPointer> = Vec::new();
        for aggregate in &self.aggregates {
            if let Some(field) = &aggregate.field
                && !fields.contains(field)
            {
                fields.push(field.clone());
            }
        }
        fields
    }

    fn check(&self, prefix: &str, errors: &mut Vec<SpecError>) {
        let mut fail = |field: &str, problem| {
            errors.push(SpecError {
                path: format!("{prefix}{field}"),
                problem,
            })
        };
        if !is_name(&self.name) {
            fail("name", SpecProblem::BadName);
        }
        if self.input.is_empty() {
            fail("input", SpecProblem::Empty);
        }
        let mut duration = |field: &str, value: HumanDuration, positive: bool| {
            if positive && value.is_zero() {
                fail(field, SpecProblem::Zero);
            } else if value > MAX_DURATION {
                fail(field, SpecProblem::TooLong);
            }
        };
        match self.window {
            WindowSpec::Tumbling { size } => duration("window.size", size, true),
            WindowSpec::Session { gap } => duration("window.gap", gap, true),
            WindowSpec::Sliding { size, slide } => {
                duration("window.size", size, true);
                duration("window.slide", slide, true);
            }
        }
        duration("max_out_of_orderness", self.max_out_of_orderness, false);
        duration("allowed_lateness", self.allowed_lateness, false);
        duration("idle_timeout", self.idle_timeout, false);
        if let WindowSpec::Sliding { size, slide } = self.window
            && !size.is_zero()
            && !slide.is_zero()
        {
            if slide > size {
                fail("window.slide", SpecProblem::SlideExceedsSize { size });
            } else {
                let panes = size.as_micros() / gcd(size.as_micros(), slide.as_micros());
                if panes > MAX_PANES_PER_WINDOW {
                    fail("window.slide", SpecProblem::TooManyPanes { panes });
                }
            }
        }
        if self.aggregates.is_empty() {
            fail("aggregates", SpecProblem::Empty);
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, aggregate) in self.aggregates.iter().enumerate() {
            let at = format!("aggregates[{i}]");
            if !is_name(&aggregate.name) {
                fail(&format!("{at}.name"), SpecProblem::BadName);
            } else if let Some(first) = names.insert(&aggregate.name, i) {
                names.insert(&aggregate.name, first);
                fail(
                    &format!("{at}.name"),
                    SpecProblem::Duplicate {
                        name: aggregate.name.clone(),
                        first: format!("{prefix}aggregates[{first}]"),
                    },
                );
            }
            if aggregate.kind.needs_field() && aggregate.field.is_none() {
                fail(
                    &format!("{at}.field"),
                    SpecProblem::FieldRequired {
                        kind: aggregate.kind.as_str(),
                    },
                );
            }
        }
        match &self.late_stream {
            Some(stream) if !is_stream_name(stream) => {
                fail("late_stream", SpecProblem::BadStreamName)
            }
            Some(_) => {}
            None if input_stream(&self.input)
                .is_some_and(|s| !is_stream_name(&format!("{s}{LATE_SUFFIX}"))) =>
            {
                fail("late_stream", SpecProblem::BadStreamName)
            }
            None if !self.input.is_empty() && input_stream(&self.input).is_none() => fail(
                "late_stream",
                SpecProblem::LateStreamRequired {
                    input: self.input.clone(),
                },
            ),
            None => {}
        }
    }
}

/// Checks every feature of a configuration, with paths `features[i].…`, and that names are
/// unique among them.
pub fn validate_features(features: &[FeatureSpec]) -> Result<(), SpecErrors> {
    let mut errors = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, feature) in features.iter().enumerate() {
        let prefix = format!("features[{i}].");
        feature.check(&prefix, &mut errors);
        if let Some(&first) = names.get(feature.name.as_str()) {
            errors.push(SpecError {
                path: format!("{prefix}name"),
                problem: SpecProblem::Duplicate {
                    name: feature.name.clone(),
                    first: format!("features[{first}]"),
                },
            });
        } else {
            names.insert(&feature.name, i);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SpecErrors(errors))
    }
}

/// The stream of an input pattern: its first segment, when that is a name.
fn input_stream(input: &str) -> Option<&str> {
    let first = input.split('.').next()?;
    is_stream_segment(first).then_some(first)
}

fn is_stream_segment(segment: &str) -> bool {
    segment
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_lowercase)
        && segment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A stream name (an event type's domain): no `.`, at most 64 characters.
fn is_stream_name(name: &str) -> bool {
    name.len() <= 64 && is_stream_segment(name)
}

/// What the default late stream adds to the input's stream name.
const LATE_SUFFIX: &str = "_late";

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

pub(crate) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
