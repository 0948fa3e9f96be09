//! Errors of the backend trait, shared by every implementation so the runtime and the HTTP
//! layer map them once.

use crate::{Partition, Revision, StreamName};

/// An error from a backend call.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unknown stream `{0}`")]
    UnknownStream(StreamName),

    #[error("stream `{stream}` has {partitions} partitions; partition {partition} does not exist")]
    UnknownPartition {
        stream: StreamName,
        partition: Partition,
        partitions: u32,
    },

    #[error("stream `{name}` already exists with {existing} partitions (asked for {requested})")]
    StreamExists {
        name: StreamName,
        existing: u32,
        requested: u32,
    },

    #[error(
        "offset {requested} is out of range for `{stream}` partition {partition}: it holds {start}..{end}"
    )]
    OffsetOutOfRange {
        stream: StreamName,
        partition: Partition,
        requested: u64,
        start: u64,
        end: u64,
    },

    /// A compare-and-set lost: the entry is not in the expected state.
    #[error("compare-and-set failed on `{key}`: expected {expected}, found {found}")]
    CasConflict {
        key: String,
        expected: String,
        found: String,
        /// The current revision, if the key exists.
        current: Option<Revision>,
    },

    #[error("invalid argument: {0}")]
    Invalid(String),

    /// The storage refused a write because it is full; nothing was written.
    #[error("storage is full: {0}")]
    StorageFull(String),

    /// Stored data failed verification; the message names where.
    #[error("corrupt data: {0}")]
    Corrupt(String),

    #[error("the backend is closed")]
    Closed,

    /// The engine is unreachable or too old; the message says which and what is needed.
    #[error("backend unavailable: {0}")]
    Unavailable(String),

    /// Any other failure of the engine, with its message.
    #[error("{0}")]
    Engine(String),
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;
