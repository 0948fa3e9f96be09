//! How the engines' errors become [`BackendError`]s: disk full, corruption and out-of-range
//! reads keep their own variants (with the file and position in the message), the rest is an
//! engine error that says what was being done and where.

use std::path::Path;

use runnel_backend::{BackendError, Partition, StreamName};
use runnel_log::LogError;

const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;

/// A log error on one partition.
pub(crate) fn from_log(stream: &StreamName, partition: Partition, error: LogError) -> BackendError {
    let at = format!("stream `{stream}` partition {partition}");
    if error.is_disk_full() {
        return BackendError::StorageFull(format!("{at}: {error}"));
    }
    match error {
        LogError::OffsetOutOfRange {
            requested,
            start,
            end,
        } => BackendError::OffsetOutOfRange {
            stream: stream.clone(),
            partition,
            requested,
            start,
            end,
        },
        LogError::Corrupt { .. } => BackendError::Corrupt(format!("{at}: {error}")),
        LogError::RecordTooLarge { .. } | LogError::EmptyBatch | LogError::Config(_) => {
            BackendError::Invalid(format!("{at}: {error}"))
        }
        LogError::Closed => BackendError::Closed,
        LogError::Locked(_) => BackendError::Unavailable(format!("{at}: {error}")),
        LogError::Io { .. } | LogError::Poisoned { .. } => {
            BackendError::Engine(format!("{at}: {error}"))
        }
    }
}

/// A redb error met while doing `what` on the metadata store at `path`.
pub(crate) fn from_meta(path: &Path, what: &str, error: impl Into<redb::Error>) -> BackendError {
    let error = error.into();
    let at = format!("{what} ({})", path.display());
    match &error {
        redb::Error::Io(io) if matches!(io.raw_os_error(), Some(ENOSPC | EDQUOT)) => {
            BackendError::StorageFull(format!("{at}: {error}"))
        }
        redb::Error::Corrupted(_) => BackendError::Corrupt(format!("{at}: {error}")),
        redb::Error::DatabaseAlreadyOpen => BackendError::Unavailable(format!(
            "{at}: the metadata store is already open in this or another process"
        )),
        redb::Error::DatabaseClosed => BackendError::Closed,
        _ => BackendError::Engine(format!("{at}: {error}")),
    }
}

/// A copy of the error that failed a batch of metadata writes, for each write in it
/// ([`BackendError`] is not `Clone`). Storage errors keep their variant.
pub(crate) fn replicate(error: &BackendError) -> BackendError {
    match error {
        BackendError::StorageFull(message) => BackendError::StorageFull(message.clone()),
        BackendError::Corrupt(message) => BackendError::Corrupt(message.clone()),
        BackendError::Unavailable(message) => BackendError::Unavailable(message.clone()),
        BackendError::Closed => BackendError::Closed,
        other => BackendError::Engine(other.to_string()),
    }
}
