//! Errors of the log, one enum for the crate: every variant names what was wrong and where.

use std::path::PathBuf;

/// An error from opening, appending to, reading or trimming a partition log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O call failed; `context` says which file and what Runnel was doing.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A record inside a segment failed its checksum or framing where the log cannot be torn
    /// (a sealed segment, or below the durable high watermark). Runnel never serves such bytes.
    #[error(
        "corrupt record in {file} at byte {position} (expected offset {expected_offset}): {reason}"
    )]
    Corrupt {
        file: PathBuf,
        position: u64,
        expected_offset: u64,
        reason: String,
    },

    /// Another process (or another handle in this one) holds the partition directory.
    #[error("partition directory {0} is already open (lock file held)")]
    Locked(PathBuf),

    /// A read asked for an offset the log no longer (or not yet) holds.
    #[error("offset {requested} is out of range: the log holds offsets {start}..{end}")]
    OffsetOutOfRange {
        requested: u64,
        start: u64,
        end: u64,
    },

    /// One record of a batch is larger than the configured limit; nothing was appended.
    #[error("record of {size} bytes exceeds the limit of {limit} bytes (nothing appended)")]
    RecordTooLarge { size: usize, limit: usize },

    /// An append was called with no records.
    #[error("an append needs at least one record")]
    EmptyBatch,

    /// A previous fsync or write failed in a way that leaves the page cache untrustworthy;
    /// the log refuses further appends until it is reopened (which recovers from disk).
    #[error(
        "the log at {dir} stopped accepting appends after an I/O failure ({reason}); reopen it to recover"
    )]
    Poisoned { dir: PathBuf, reason: String },

    /// The configuration is unusable; the message names the field.
    #[error("invalid log configuration: {0}")]
    Config(String),

    /// The log was closed while the operation waited.
    #[error("the log was closed")]
    Closed,
}

impl LogError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LogError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether the error is the disk being full (`ENOSPC`) or over quota.
    pub fn is_disk_full(&self) -> bool {
        match self {
            LogError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(code) if code == 28 /* ENOSPC */ || code == 122 /* EDQUOT */
            ),
            LogError::Poisoned { reason, .. } => reason.contains("No space left"),
            _ => false,
        }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
