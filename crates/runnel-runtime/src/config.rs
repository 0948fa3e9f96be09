//! The runtime's configuration: one struct, defaults documented on each field.

use std::time::Duration;

use runnel_backend::RetentionConfig;
use runnel_clock::SharedClock;
use runnel_envelope::Limits;

/// Settings of a [`crate::Runnel`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Partitions of a stream created on first publish. Default 4.
    pub default_partitions: u32,
    /// Retention of a stream created on first publish. Default: keep everything.
    pub default_retention: RetentionConfig,
    /// Event size limits. Default 1 MiB per event.
    pub limits: Limits,
    /// A publish repeating an event id seen within this window is answered with the first
    /// publish's position and appends nothing. Default 2 minutes.
    pub dedup_window: Duration,
    /// At most this many ids are remembered per stream for deduplication (60–100 bytes each);
    /// beyond it the oldest are forgotten early. Default 1,000,000.
    pub dedup_capacity: usize,
    /// Reject publishing an event type that has no registered schema. Default false.
    pub require_schema: bool,
    /// `source` of events built from typed values. Default `runnel://runtime`.
    pub source: String,
    /// Time for dedup windows, leases, lag and retries.
    pub clock: SharedClock,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            default_partitions: 4,
            default_retention: RetentionConfig::default(),
            limits: Limits::default(),
            dedup_window: Duration::from_secs(120),
            dedup_capacity: 1_000_000,
            require_schema: false,
            source: "runnel://runtime".into(),
            clock: runnel_clock::system(),
        }
    }
}
