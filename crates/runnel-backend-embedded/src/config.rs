//! How the embedded backend is opened.

use std::path::PathBuf;
use std::time::Duration;

use runnel_clock::SharedClock;
use runnel_log::FsyncPolicy;

/// Configuration of an [`crate::EmbeddedBackend`].
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Directory holding `meta.redb` and `streams/`. Created if missing.
    pub data_dir: PathBuf,
    /// When appends are acknowledged. Default: group commit (every acknowledged append is
    /// fdatasynced; concurrent appends share a sync). Metadata, offsets and key-value writes
    /// are always committed durably, whatever this says.
    pub fsync: FsyncPolicy,
    /// Size at which a partition's segment is sealed and a new one started; retention removes
    /// whole sealed segments. Default 128 MiB; between 1 KiB and 4 GiB.
    pub segment_bytes: u64,
    /// How often the background task applies retention and removes expired key-value entries.
    /// Default 5 s.
    pub maintenance_interval: Duration,
    /// Source of append timestamps, stream creation times, retention ages and key-value
    /// expiry. Default: the system clock.
    pub clock: SharedClock,
}

impl EmbeddedConfig {
    /// The defaults, storing under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            fsync: FsyncPolicy::default(),
            segment_bytes: 128 << 20,
            maintenance_interval: Duration::from_secs(5),
            clock: runnel_clock::system(),
        }
    }
}
