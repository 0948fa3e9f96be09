//! How a partition log is laid out and how hard it tries to keep what it acknowledged.

use std::time::Duration;

use runnel_clock::SharedClock;

use crate::error::{LogError, Result};
use crate::record::FRAME_OVERHEAD;

/// When an append is acknowledged relative to `fdatasync`.
///
/// What each policy can lose is documented in `docs/log-format.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append is written and `fdatasync`ed on its own before it returns.
    Always,
    /// Group commit: appends from concurrent writers are queued, written with one `write` and
    /// made durable with one `fdatasync`; each caller is acknowledged after its bytes are synced.
    /// A sync starts once `interval` has passed since the oldest queued append, or as soon as
    /// `max_bytes` are queued. With a zero interval a sync starts as soon as the previous one
    /// finishes, so the batch is whatever arrived meanwhile.
    Group {
        interval: Duration,
        max_bytes: usize,
    },
    /// Appends are written to the operating system and acknowledged; no `fdatasync`.
    Os,
}

impl FsyncPolicy {
    /// Group commit with the defaults: zero interval (sync back to back), 4 MiB batches.
    pub const fn group() -> Self {
        FsyncPolicy::Group {
            interval: Duration::ZERO,
            max_bytes: 4 << 20,
        }
    }

    /// A short name: `always`, `group` or `os`.
    pub fn name(&self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Group { .. } => "group",
            FsyncPolicy::Os => "os",
        }
    }

    pub(crate) fn syncs(&self) -> bool {
        !matches!(self, FsyncPolicy::Os)
    }
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        Self::group()
    }
}

/// Retention: whole sealed segments are removed once they are older or the log is larger than
/// these limits. The active segment is never removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Remove a sealed segment once its newest record is older than this.
    pub max_age: Option<Duration>,
    /// Remove the oldest sealed segments while the log is larger than this many bytes.
    pub max_bytes: Option<u64>,
}

/// Configuration of one partition log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A segment is sealed and a new one started once it would grow past this size.
    /// Default 128 MiB; at most 4 GiB (positions in the index are 32-bit).
    pub segment_bytes: u64,
    /// One offset-index entry (and time-index entry) every this many bytes of records.
    /// Default 4 KiB.
    pub index_interval_bytes: u32,
    /// When appends are acknowledged. Default: group commit.
    pub fsync: FsyncPolicy,
    /// Age and size limits. Default: keep everything.
    pub retention: Retention,
    /// Largest encoded record accepted, framing included. Default 8 MiB.
    pub max_record_bytes: usize,
    /// Source of append timestamps and of "now" for retention by age.
    pub clock: SharedClock,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 128 << 20,
            index_interval_bytes: 4096,
            fsync: FsyncPolicy::default(),
            retention: Retention::default(),
            max_record_bytes: 8 << 20,
            clock: runnel_clock::system(),
        }
    }
}

impl LogConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.segment_bytes < 1024 || self.segment_bytes > u32::MAX as u64 {
            return Err(LogError::Config(format!(
                "segment_bytes must be between 1 KiB and 4 GiB, got {}",
                self.segment_bytes
            )));
        }
        if self.index_interval_bytes == 0 {
            return Err(LogError::Config(
                "index_interval_bytes must be at least 1".into(),
            ));
        }
        if self.max_record_bytes <= FRAME_OVERHEAD || self.max_record_bytes > u32::MAX as usize {
            return Err(LogError::Config(format!(
                "max_record_bytes must be between {} and 4 GiB, got {}",
                FRAME_OVERHEAD + 1,
                self.max_record_bytes
            )));
        }
        Ok(())
    }
}
