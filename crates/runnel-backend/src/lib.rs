//! The backend trait: the only thing Runnel's runtime knows about storage.
//!
//! A backend holds partitioned streams of opaque records (append a batch, read from an offset
//! or a time, await new data), each consumer group's committed offsets, and a small key-value
//! store with compare-and-set and TTL that the runtime uses for metadata, leases, dedup and
//! processed-id records. The embedded backend implements it with Runnel's own log and an
//! embedded transactional store; the JetStream backend with streams and KV buckets. Both pass
//! the same conformance suite (`runnel-test-util`).
//!
//! Invariants every implementation keeps:
//! - Offsets within a partition are dense, starting at 0, and an acknowledged append is
//!   durable by the backend's durability setting before `append` returns.
//! - Reads never return a record above the high watermark.
//! - A compare-and-set that loses returns [`BackendError::CasConflict`] and changes nothing.
//! - An expired key-value entry is never returned, whether or not it has been removed yet;
//!   expiry is judged by the backend's injected clock.

mod error;
mod names;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use runnel_clock::Micros;
pub use runnel_record::{Header, Record, StoredRecord};
use serde::{Deserialize, Serialize};

pub use error::{BackendError, Result};
pub use names::{InvalidName, StreamName};

/// A partition number within a stream, `0..partitions`.
pub type Partition = u32;

/// How long a stream keeps records. `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionConfig {
    /// Remove records older than this (whole segments / messages).
    #[serde(default, with = "opt_millis")]
    pub max_age: Option<Duration>,
    /// Keep at most this many bytes per partition.
    #[serde(default)]
    pub max_bytes_per_partition: Option<u64>,
}

/// How a stream is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Number of partitions (at least 1). Fixed once created.
    pub partitions: u32,
    #[serde(default)]
    pub retention: RetentionConfig,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            partitions: 4,
            retention: RetentionConfig::default(),
        }
    }
}

/// Offsets and size of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub partition: Partition,
    /// First offset still held.
    pub start_offset: u64,
    /// Offset after the last durable record.
    pub high_watermark: u64,
    /// Bytes stored for this partition, where the backend can tell.
    pub bytes: Option<u64>,
}

/// A stream as it exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    pub name: StreamName,
    pub config: StreamConfig,
    /// When the stream was created, in microseconds since the epoch.
    pub created_at: Micros,
    pub partitions: Vec<PartitionInfo>,
}

/// Where an acknowledged batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendAck {
    pub partition: Partition,
    /// Offset of the first record; the others follow densely.
    pub base_offset: u64,
    pub count: u32,
    /// Append timestamp of the batch (microseconds since the epoch).
    pub timestamp: Micros,
    /// The engine recognised the whole batch as one it had already stored (JetStream's
    /// `Nats-Msg-Id` duplicate window) and appended nothing: the offsets are the first
    /// append's. Always false for engines without their own deduplication.
    pub duplicate: bool,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// At this offset.
    Offset(u64),
    /// At the first record appended at or after this time.
    Time(Micros),
}

/// A revision of a key-value entry or committed offset; increases with every write. Within a
/// key-value bucket a revision is never given twice, even after a delete or a restart, so a
/// stale compare-and-set can never match a key that was deleted and written again.
pub type Revision = u64;

/// The condition a key-value write or offset commit requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is there.
    Any,
    /// Only if the key does not exist (or has expired).
    Absent,
    /// Only if the key's current revision is this one.
    Revision(Revision),
}

/// A key-value entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub key: String,
    pub value: Bytes,
    pub revision: Revision,
    /// When the entry stops existing, in microseconds since the epoch.
    pub expires_at: Option<Micros>,
}

/// A committed offset of a group on one partition: the next offset the group will process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: u64,
    pub revision: Revision,
}

/// Most partitions a stream may have on any backend: each is a directory of segment files on
/// the embedded backend and a JetStream stream (on a cluster a Raft group) on JetStream.
pub const MAX_PARTITIONS: u32 = 1024;

/// Storage for Runnel's runtime. Object safe: the runtime holds an `Arc<dyn Backend>`.
///
/// An empty group name, bucket or key is [`BackendError::Invalid`].
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// A short name for messages and metrics (`embedded`, `jetstream`).
    fn kind(&self) -> &'static str;

    /// Most partitions a stream may have here; [`MAX_PARTITIONS`] unless a backend says less.
    fn max_partitions(&self) -> u32 {
        MAX_PARTITIONS
    }

    /// Creates a stream. Creating an existing stream with the same partition count succeeds
    /// and returns it as it is; a different partition count is [`BackendError::StreamExists`].
    async fn create_stream(&self, name: &StreamName, config: StreamConfig) -> Result<StreamInfo>;

    /// Every stream, by name.
    async fn list_streams(&self) -> Result<Vec<StreamInfo>>;

    /// One stream, or [`BackendError::UnknownStream`].
    async fn describe_stream(&self, name: &StreamName) -> Result<StreamInfo>;

    /// Deletes a stream: its records on every partition, its definition, and every group's
    /// committed offsets on it; [`BackendError::UnknownStream`] if it does not exist. Calls
    /// on the stream from then on (waits and reads already running included) end with
    /// `UnknownStream`; creating it again gives an empty stream. Durable before it returns.
    async fn delete_stream(&self, name: &StreamName) -> Result<()>;

    /// Appends a batch to one partition; returns once durable by the backend's setting.
    async fn append(
        &self,
        stream: &StreamName,
        partition: Partition,
        records: Vec<Record>,
    ) -> Result<AppendAck>;

    /// Reads up to `max_records` records (stopping once `max_bytes` are read) from a position.
    /// Reading at the high watermark returns nothing; below the start offset or above the high
    /// watermark is [`BackendError::OffsetOutOfRange`]. When a record is there and
    /// `max_bytes > 0`, at least one is returned even if it is larger than `max_bytes`, so a
    /// reader never stalls on a big record.
    async fn read(
        &self,
        stream: &StreamName,
        partition: Partition,
        from: ReadFrom,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>>;

    /// The first offset whose record was appended at or after `timestamp` (the high watermark
    /// when none was).
    async fn offset_for_time(
        &self,
        stream: &StreamName,
        partition: Partition,
        timestamp: Micros,
    ) -> Result<u64>;

    /// Offsets and size of one partition.
    async fn partition_info(
        &self,
        stream: &StreamName,
        partition: Partition,
    ) -> Result<PartitionInfo>;

    /// Waits until the partition's high watermark is above `offset` or `timeout` passes;
    /// returns the high watermark either way. Implementations wake on new data, not by polling.
    async fn wait_for_data(
        &self,
        stream: &StreamName,
        partition: Partition,
        offset: u64,
        timeout: Duration,
    ) -> Result<u64>;

    /// The committed offset of `group` on a partition, if it ever committed.
    async fn committed_offset(
        &self,
        group: &str,
        stream: &StreamName,
        partition: Partition,
    ) -> Result<Option<CommittedOffset>>;

    /// Commits `offset` (the next offset to process) for `group` if `expect` holds; durable
    /// before it returns. Returns the new revision. The stream and partition must exist
    /// ([`BackendError::UnknownStream`], [`BackendError::UnknownPartition`]).
    async fn commit_offset(
        &self,
        group: &str,
        stream: &StreamName,
        partition: Partition,
        offset: u64,
        expect: Expect,
    ) -> Result<Revision>;

    /// Deletes the committed offsets of `group` on every stream; returns how many there
    /// were. Durable before it returns.
    async fn delete_group_offsets(&self, group: &str) -> Result<usize>;

    /// Reads a key of a bucket; expired entries read as absent.
    async fn kv_get(&self, bucket: &str, key: &str) -> Result<Option<KvEntry>>;

    /// Writes a key if `expect` holds, optionally expiring after `ttl`; durable before it
    /// returns. Returns the new revision.
    async fn kv_put(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        expect: Expect,
        ttl: Option<Duration>,
    ) -> Result<Revision>;

    /// Deletes a key if `expect` holds. Deleting an absent (or expired) key with
    /// [`Expect::Any`] or [`Expect::Absent`] succeeds and changes nothing.
    async fn kv_delete(&self, bucket: &str, key: &str, expect: Expect) -> Result<()>;

    /// Live entries whose key starts with `prefix`, in key order, after `start_after` if
    /// given, at most `limit`.
    async fn kv_scan(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>>;

    /// Deletes every key of a bucket under `prefix`, which must end with `/` (the keys
    /// `a/b/…` under `a/b/`), whatever its condition; returns how many live keys were
    /// removed. Durable before it returns.
    async fn kv_delete_prefix(&self, bucket: &str, prefix: &str) -> Result<usize>;

    /// Flushes and closes; later calls fail with [`BackendError::Closed`].
    async fn close(&self) -> Result<()>;
}

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}
