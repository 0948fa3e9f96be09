//! Runnel's durable log: one append-only, segmented log per partition.
//!
//! This crate knows nothing of events, networks or JSON: it stores opaque records (key, value,
//! headers) at dense offsets and gives them back, and it never loses one it acknowledged nor
//! serves one it cannot verify.
//!
//! Invariants:
//! - Offsets are dense: a partition holds `start_offset()..high_watermark()` with no gaps.
//! - A record is acknowledged only once durable by the [`FsyncPolicy`]; readers never see a
//!   record above the durable high watermark.
//! - Every frame carries a CRC32C; opening the log truncates a torn or corrupt tail of the
//!   active segment, and a bad record anywhere else is a [`LogError::Corrupt`], never data.
//! - Append timestamps never decrease, so the time index can be searched.
//! - Memory does not grow with the log: indexes are sparse files read on demand.
//!
//! The on-disk format and what each fsync policy can lose are in `docs/log-format.md`.

mod config;
mod error;
mod log;
mod reader;
mod record;
mod segment;

pub use config::{FsyncPolicy, LogConfig, Retention};
pub use error::{LogError, Result};
pub use log::{Appended, HighWatermark, LogStats, PartitionLog, RecoveryReport, RetentionReport};
pub use reader::LogReader;
pub use record::{FRAME_OVERHEAD, Header, Record, StoredRecord, frame_len};
