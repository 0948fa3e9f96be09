//! The one error type of this crate.

use thiserror::Error;

/// Everything that can be wrong with an event envelope, from a bad event type name to a
/// truncated log record.
///
/// Every variant that concerns one attribute names it, so the HTTP layer can point at the
/// failing field ([`EnvelopeError::attribute`]) and map the variant to a stable code
/// ([`EnvelopeError::code`]). Messages are written for people.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    /// The `type` attribute is not a lowercase `domain.fact` name.
    #[error("event type `{name}` {reason}")]
    InvalidEventType {
        /// The rejected name, as given.
        name: String,
        /// Why it was rejected, e.g. "must be lowercase".
        reason: String,
    },

    /// An attribute has a value of the right JSON type that breaks that attribute's rules.
    #[error("attribute `{attribute}`: {reason}")]
    InvalidAttribute {
        /// The attribute's name, e.g. `traceparent`.
        attribute: String,
        /// What was expected and what was found.
        reason: String,
    },

    /// A required attribute (`id`, `source`, `type` or `specversion`) is absent or `null`.
    #[error("required attribute `{attribute}` is missing")]
    MissingAttribute {
        /// The attribute's name.
        attribute: &'static str,
    },

    /// `specversion` is not `"1.0"`.
    #[error("attribute `specversion`: only \"1.0\" is supported, got `{found}`")]
    UnsupportedSpecVersion {
        /// The version the event declared.
        found: String,
    },

    /// An attribute has the wrong JSON type, e.g. a number where a string belongs.
    #[error("attribute `{attribute}`: expected {expected}, got {found}")]
    WrongType {
        /// The attribute's name.
        attribute: String,
        /// What the attribute must be, e.g. "a string".
        expected: &'static str,
        /// What it was, e.g. "a number".
        found: &'static str,
    },

    /// Both `data` and `data_base64` are present.
    #[error(
        "attributes `data` and `data_base64` are mutually exclusive: an event carries at most one"
    )]
    DataConflict,

    /// An extension attribute's name breaks the CloudEvents naming rules or shadows an
    /// attribute this crate types itself.
    #[error("extension attribute `{name}`: {reason}")]
    InvalidExtensionName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The input is not JSON at all.
    #[error("not valid JSON: {reason}")]
    MalformedJson {
        /// The parser's message, with line and column.
        reason: String,
    },

    /// A single event in JSON must be a JSON object.
    #[error("a CloudEvent in JSON must be an object, got {found}")]
    NotAnObject {
        /// What was found instead, e.g. "an array".
        found: &'static str,
    },

    /// A JSON batch must be a JSON array of events.
    #[error("a CloudEvents batch must be a JSON array, got {found}")]
    NotAnArray {
        /// What was found instead, e.g. "an object".
        found: &'static str,
    },

    /// One event of a JSON batch is invalid.
    #[error("event {index} of the batch: {source}")]
    InBatch {
        /// Zero-based position of the event in the batch.
        index: usize,
        /// What is wrong with it.
        source: Box<EnvelopeError>,
    },

    /// The event is larger than [`Limits::max_event_bytes`](crate::Limits::max_event_bytes),
    /// measured on its binary encoding.
    #[error("event is {size} bytes encoded, over the limit of {limit} bytes")]
    TooLarge {
        /// The encoded size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },

    /// A binary envelope starts with a format version this build cannot read.
    #[error(
        "binary envelope format version {version} is not supported (this build reads version {})",
        crate::binary::FORMAT_VERSION
    )]
    UnsupportedFormatVersion {
        /// The version byte found.
        version: u8,
    },

    /// A binary envelope ended before a field was complete.
    #[error("binary envelope is truncated: input ended while reading `{field}`")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },

    /// A binary envelope field holds bytes that cannot be what the layout says.
    #[error("binary envelope field `{field}`: {reason}")]
    MalformedBinary {
        /// The field being read.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl EnvelopeError {
    /// A stable, machine-readable code for this kind of error, e.g. `envelope.missing_attribute`.
    ///
    /// Codes never change meaning; the HTTP layer puts them in problem documents.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidEventType { .. } => "envelope.invalid_event_type",
            Self::InvalidAttribute { .. } => "envelope.invalid_attribute",
            Self::MissingAttribute { .. } => "envelope.missing_attribute",
            Self::UnsupportedSpecVersion { .. } => "envelope.unsupported_specversion",
            Self::WrongType { .. } => "envelope.wrong_attribute_type",
            Self::DataConflict => "envelope.data_conflict",
            Self::InvalidExtensionName { .. } => "envelope.invalid_extension_name",
            Self::MalformedJson { .. } => "envelope.malformed_json",
            Self::NotAnObject { .. } => "envelope.not_an_object",
            Self::NotAnArray { .. } => "envelope.not_an_array",
            Self::InBatch { source, .. } => source.code(),
            Self::TooLarge { .. } => "envelope.too_large",
            Self::UnsupportedFormatVersion { .. } => "envelope.unsupported_format_version",
            Self::Truncated { .. } => "envelope.truncated",
            Self::MalformedBinary { .. } => "envelope.malformed_binary",
        }
    }

    /// The attribute (or binary field) the error is about, if it is about one.
    ///
    /// For [`EnvelopeError::DataConflict`] this is `data_base64`, the member to remove.
    pub fn attribute(&self) -> Option<&str> {
        match self {
            Self::InvalidEventType { .. } => Some("type"),
            Self::InvalidAttribute { attribute, .. } | Self::WrongType { attribute, .. } => {
                Some(attribute)
            }
            Self::MissingAttribute { attribute } => Some(attribute),
            Self::UnsupportedSpecVersion { .. } => Some("specversion"),
            Self::DataConflict => Some("data_base64"),
            Self::InvalidExtensionName { name, .. } => Some(name),
            Self::InBatch { source, .. } => source.attribute(),
            Self::Truncated { field } | Self::MalformedBinary { field, .. } => Some(field),
            Self::MalformedJson { .. }
            | Self::NotAnObject { .. }
            | Self::NotAnArray { .. }
            | Self::TooLarge { .. }
            | Self::UnsupportedFormatVersion { .. } => None,
        }
    }

    pub(crate) fn invalid(attribute: &str, reason: impl Into<String>) -> Self {
        Self::InvalidAttribute {
            attribute: attribute.to_owned(),
            reason: reason.into(),
        }
    }
}
