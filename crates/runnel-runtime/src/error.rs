//! Errors of the runtime, one enum: each variant says what was wrong, for people and for the
//! HTTP layer, which maps [`RuntimeError::code`] to a stable problem code.

use runnel_backend::{BackendError, InvalidName};
use runnel_envelope::EnvelopeError;
use runnel_schema::RegistryError;

use crate::pattern::InvalidPattern;

/// An error from the runtime's API.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The event itself is invalid (attribute, size, format).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),

    /// An event in a batch is invalid; nothing of the batch was appended.
    #[error("event {index} of the batch: {source}")]
    InBatch {
        index: usize,
        #[source]
        source: Box<RuntimeError>,
    },

    #[error(transparent)]
    Backend(#[from] BackendError),

    /// The event's data does not match its schema (every failing path listed), its type has
    /// no schema and one is required, or it names no version of a type whose schema subject
    /// is soft deleted.
    #[error(transparent)]
    Schema(#[from] runnel_schema::ValidationError),

    /// Event data that is not JSON cannot be checked against the type's JSON Schema.
    #[error("event type `{event_type}` has a schema, so its data must be JSON")]
    DataNotJson { event_type: String },

    #[error(transparent)]
    Pattern(#[from] InvalidPattern),

    #[error(transparent)]
    Name(#[from] InvalidName),

    #[error("unknown consumer group `{0}`")]
    UnknownGroup(String),

    /// A group asked to be deleted is run by consumer instances (listed).
    #[error(
        "group `{group}` is in use: consumer instance{} {} run{} it; stop {} (a server's \
         HTTP consumer stops after `consumer_idle_secs` without pulls), or force the deletion",
        if consumers.len() == 1 { "" } else { "s" },
        quoted(consumers),
        if consumers.len() == 1 { "s" } else { "" },
        if consumers.len() == 1 { "it" } else { "them" }
    )]
    GroupInUse {
        group: String,
        consumers: Vec<String>,
    },

    /// A group of Runnel's own asked to be deleted without force.
    #[error(
        "group `{group}` is Runnel's own ({owner} runs it); deleting it loses that stage's \
         progress: force the deletion if that is what you want"
    )]
    InternalGroup { group: String, owner: &'static str },

    /// A group of Runnel's own that a running stage consumes, asked to be deleted (forced or
    /// not): the stage would stop silently.
    #[error(
        "group `{group}` is run by {owner} on {}: deleting it would stop that stage silently; \
         remove the stage from its server's runnel.toml and restart it first (even with force)",
        quoted(consumers)
    )]
    InternalGroupRunning {
        group: String,
        owner: &'static str,
        consumers: Vec<String>,
    },

    /// A stream asked to be deleted is read by groups (listed).
    #[error(
        "stream `{stream}` is in use: group{} {} read{} it (a filter matching its events, or \
         a consumer holding its partitions); delete or change {} first, or force the deletion",
        if groups.len() == 1 { "" } else { "s" },
        quoted(groups),
        if groups.len() == 1 { "s" } else { "" },
        if groups.len() == 1 { "it" } else { "them" }
    )]
    StreamInUse { stream: String, groups: Vec<String> },

    /// A group's replay stream asked to be deleted without force.
    #[error(
        "stream `{stream}` is Runnel's own: group `{group}` replays its dead letters through \
         it; deleting the group removes it, or force the deletion"
    )]
    InternalStream { stream: String, group: String },

    #[error("no dead-letter entry `{id}` in group `{group}`")]
    UnknownDlqEntry { group: String, id: String },

    #[error("invalid group configuration: {0}")]
    GroupConfig(String),

    /// One setting of a group is out of its range; `field` names it as the configuration
    /// does (`ack_wait`, `max_deliver`, …).
    #[error("invalid group configuration: {message}")]
    GroupSetting {
        field: &'static str,
        message: String,
    },

    /// Data that names no schema version failed the latest version, which it was validated
    /// against: often data written for an earlier version.
    #[error(
        "{source}; the event names no `schemaversion`, so it was validated against version \
         {version}, the latest: if its data follows an earlier version, set `schemaversion` \
         (the `ce-schemaversion` header in binary mode) to that version"
    )]
    InvalidForLatest {
        version: u32,
        #[source]
        source: runnel_schema::ValidationError,
    },

    /// A stream asked for with a retention exists with another one (retention, like the
    /// partition count, is fixed when a stream is created).
    #[error("stream `{stream}` exists with retention {existing}, not {asked}")]
    StreamRetentionDiffers {
        stream: String,
        existing: String,
        asked: String,
    },

    /// A typed event could not be turned into JSON.
    #[error("could not serialise the event data: {0}")]
    Serialize(String),

    /// The duplicate of this event was in flight and its first publish failed; retry.
    #[error("the first publish of event `{id}` failed: {reason}")]
    FirstPublishFailed { id: String, reason: String },

    #[error("the runtime is shut down")]
    Closed,
}

impl RuntimeError {
    /// A stable, machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            RuntimeError::Envelope(e) => e.code(),
            RuntimeError::InBatch { source, .. } => source.code(),
            RuntimeError::Backend(e) => match e {
                BackendError::UnknownStream(_) => "stream.unknown",
                BackendError::UnknownPartition { .. } => "stream.unknown_partition",
                BackendError::StreamExists { .. } => "stream.exists",
                BackendError::OffsetOutOfRange { .. } => "stream.offset_out_of_range",
                BackendError::CasConflict { .. } => "backend.conflict",
                BackendError::Invalid(_) => "backend.invalid",
                BackendError::StorageFull(_) => "backend.storage_full",
                BackendError::Corrupt(_) => "backend.corrupt",
                BackendError::Closed => "backend.closed",
                BackendError::Unavailable(_) => "backend.unavailable",
                BackendError::Engine(_) => "backend.error",
            },
            RuntimeError::Schema(runnel_schema::ValidationError::Invalid { .. }) => {
                "schema.invalid"
            }
            RuntimeError::Schema(runnel_schema::ValidationError::NoSchema { .. }) => {
                "schema.missing"
            }
            RuntimeError::Schema(runnel_schema::ValidationError::SubjectDeleted { .. }) => {
                "schema.subject_deleted"
            }
            RuntimeError::Schema(runnel_schema::ValidationError::Registry(
                RegistryError::VersionNotFound { .. } | RegistryError::SubjectNotFound { .. },
            )) => "schema.unknown_version",
            RuntimeError::Schema(runnel_schema::ValidationError::Registry(_)) => {
                "schema.unavailable"
            }
            RuntimeError::DataNotJson { .. } => "schema.data_not_json",
            RuntimeError::Pattern(_) => "group.invalid_pattern",
            RuntimeError::Name(_) => "name.invalid",
            RuntimeError::UnknownGroup(_) => "group.unknown",
            RuntimeError::GroupInUse { .. } => "group.in_use",
            RuntimeError::InternalGroup { .. } | RuntimeError::InternalGroupRunning { .. } => {
                "group.internal"
            }
            RuntimeError::StreamInUse { .. } => "stream.in_use",
            RuntimeError::InternalStream { .. } => "stream.internal",
            RuntimeError::UnknownDlqEntry { .. } => "dlq.unknown_entry",
            RuntimeError::StreamRetentionDiffers { .. } => "stream.exists",
            RuntimeError::InvalidForLatest { .. } => "schema.invalid",
            RuntimeError::GroupConfig(_) | RuntimeError::GroupSetting { .. } => {
                "group.invalid_config"
            }
            RuntimeError::Serialize(_) => "event.serialize",
            RuntimeError::FirstPublishFailed { .. } => "publish.retry",
            RuntimeError::Closed => "runtime.closed",
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Names as a message lists them: `a`, `b`.
fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
