//! Small builders and checks shared by Runnel's tests. They panic with a clear message
//! instead of returning errors: they are for tests only.

use std::fmt::Debug;

use runnel_backend::{
    Backend, BackendError, Partition, ReadFrom, Record, Result, Revision, StoredRecord, StreamName,
};
use runnel_clock::{ManualClock, Micros};

/// Where manual clocks start: 2026-01-01T00:00:00Z, in microseconds since the epoch.
pub const START: Micros = 1_767_225_600_000_000;

/// A manual clock reading [`START`].
pub fn manual_clock() -> ManualClock {
    ManualClock::new(START)
}

/// A temporary directory, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("runnel-test-")
        .tempdir()
        .expect("create a temporary directory")
}

/// A stream name; panics if `name` is not a valid one.
pub fn stream(name: &str) -> StreamName {
    StreamName::new(name).unwrap_or_else(|e| panic!("{e}"))
}

/// A record with a key and value and no headers.
pub fn record(key: &str, value: &str) -> Record {
    Record::new(key.to_string(), value.to_string())
}

/// Records `key-{i}` → `{prefix}-{i}` for each `i` in `range`.
pub fn numbered_records(prefix: &str, range: std::ops::Range<u32>) -> Vec<Record> {
    range
        .map(|i| record(&format!("key-{i}"), &format!("{prefix}-{i}")))
        .collect()
}

/// Every record of a partition from its start offset to its high watermark.
pub async fn read_all(
    backend: &dyn Backend,
    stream: &StreamName,
    partition: Partition,
) -> Vec<StoredRecord> {
    let info = backend
        .partition_info(stream, partition)
        .await
        .expect("partition info");
    let mut out = Vec::new();
    let mut next = info.start_offset;
    loop {
        let batch = backend
            .read(stream, partition, ReadFrom::Offset(next), 100, usize::MAX)
            .await
            .expect("read");
        let Some(last) = batch.last() else { break };
        next = last.offset + 1;
        out.extend(batch);
    }
    out
}

/// Asserts that `result` is a [`BackendError::CasConflict`] and returns the current revision
/// it reports.
#[track_caller]
pub fn assert_cas_conflict<T: Debug>(result: Result<T>) -> Option<Revision> {
    match result {
        Err(BackendError::CasConflict { current, .. }) => current,
        other => panic!("expected a compare-and-set conflict, got {other:?}"),
    }
}
