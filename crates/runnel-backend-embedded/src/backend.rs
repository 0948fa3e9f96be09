//! [`EmbeddedBackend`]: the [`Backend`] trait over partition logs and the metadata store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use runnel_backend::{
    AppendAck, Backend, BackendError, CommittedOffset, Expect, KvEntry, Partition, PartitionInfo,
    ReadFrom, Record, Result, Revision, StoredRecord, StreamConfig, StreamInfo, StreamName,
};
use runnel_clock::Micros;
use runnel_log::{LogConfig, PartitionLog, Retention};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::EmbeddedConfig;
use crate::error::from_log;
use crate::group_commit::GroupCommit;
use crate::meta::{
    CommitOffset, DeleteOffsets, KvDelete, KvDeletePrefix, KvPut, Meta, StoredStream,
};
use crate::readers::{ReaderCache, ReaderCounts};
use crate::sync::{lock, read, write};

pub use runnel_backend::MAX_PARTITIONS;

/// Most expired key-value entries one maintenance pass removes (one transaction).
const EXPIRED_PER_PASS: usize = 10_000;

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Sealed segments removed by retention, over all partitions.
    pub removed_segments: usize,
    /// Their bytes.
    pub removed_bytes: u64,
    /// Expired key-value entries removed from storage (they already read as absent).
    pub expired_kv_entries: usize,
}

/// Counters since the backend was opened: how metadata writes were grouped into commits and
/// how often `read` found an open reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmbeddedStats {
    /// Offset commits and key-value writes and deletes answered (refused ones included).
    pub meta_writes: u64,
    /// Write transactions committed to `meta.redb`, each one fsync: one per group of writes
    /// that changed something, plus stream definitions and removals of expired entries.
    pub meta_commits: u64,
    /// `read` calls that opened a new reader.
    pub readers_opened: u64,
    /// `read` calls that continued with the reader an earlier read left at their offset.
    pub readers_reused: u64,
    /// Readers cached right now, over all partitions.
    pub cached_readers: usize,
}

/// The single-node backend: one [`PartitionLog`] per partition for records, `meta.redb` for
/// everything else. See the crate documentation for the layout and invariants.
pub struct EmbeddedBackend {
    data_dir: PathBuf,
    /// Taken out by [`Backend::close`]; every call after that fails with `Closed`.
    shared: RwLock<Option<Arc<Shared>>>,
    /// Tells the maintenance task to stop (also when this is dropped).
    stop: watch::Sender<bool>,
    maintenance: Mutex<Option<JoinHandle<()>>>,
}

/// Everything an open backend holds.
struct Shared {
    config: EmbeddedConfig,
    /// Reads, stream definitions and expiry removal go straight to the store.
    meta: Arc<Meta>,
    /// Offset commits and key-value writes, group-committed.
    writes: GroupCommit,
    streams: RwLock<BTreeMap<StreamName, Arc<Stream>>>,
    /// Serialises stream creation so two creators cannot open the same directories.
    creating: tokio::sync::Mutex<()>,
    /// Shared by every partition's reader cache.
    readers: Arc<ReaderCounts>,
}

struct Stream {
    name: StreamName,
    stored: StoredStream,
    partitions: Vec<StreamPartition>,
    /// Set when the stream is deleted: waits on it end with `UnknownStream`.
    deleted: watch::Sender<bool>,
}

/// One partition of a stream: its log and the readers kept open on it.
struct StreamPartition {
    log: PartitionLog,
    readers: ReaderCache,
}

impl std::fmt::Debug for EmbeddedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = read(&self.shared).is_some();
        f.debug_struct("EmbeddedBackend")
            .field("data_dir", &self.data_dir)
            .field("open", &open)
            .finish()
    }
}

/// Runs blocking storage work off the async runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BackendError::Engine(format!("a storage task failed: {e}")))?
}

fn streams_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("streams")
}

fn stream_dir(data_dir: &Path, stream: &StreamName) -> PathBuf {
    streams_dir(data_dir).join(stream.as_str())
}

/// Directories of deleted streams are renamed to this prefix (no stream name starts with
/// `.`) and then removed; what a crash left of them is removed at the next open.
const DELETED_PREFIX: &str = ".deleted-";

/// Renames a stream's directory out of the way, then removes it. Blocking.
fn remove_stream_dir(data_dir: &Path, stream: &StreamName) -> Result<()> {
    let dir = stream_dir(data_dir, stream);
    if !dir.exists() {
        return Ok(());
    }
    static DELETIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = DELETIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let trash = streams_dir(data_dir).join(format!("{DELETED_PREFIX}{stream}-{nanos}-{n}"));
    std::fs::rename(&dir, &trash).map_err(|e| {
        BackendError::Engine(format!(
            "moving {} to {} to delete it: {e}",
            dir.display(),
            trash.display()
        ))
    })?;
    std::fs::remove_dir_all(&trash)
        .map_err(|e| BackendError::Engine(format!("removing {}: {e}", trash.display())))
}

/// Removes what deletions interrupted by a crash left (renamed directories). Blocking.
fn remove_deleted_leftovers(data_dir: &Path) -> Result<()> {
    let dir = streams_dir(data_dir);
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| BackendError::Engine(format!("listing {}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(DELETED_PREFIX))
        {
            let path = entry.path();
            std::fs::remove_dir_all(&path)
                .map_err(|e| BackendError::Engine(format!("removing {}: {e}", path.display())))?;
        }
    }
    Ok(())
}

fn partition_dir(data_dir: &Path, stream: &StreamName, partition: Partition) -> PathBuf {
    streams_dir(data_dir)
        .join(stream.as_str())
        .join(partition.to_string())
}

/// `kv_delete_prefix` takes whole segments: `a/b/`, never `a/b` (which would take `a/bc`).
fn prefix_ends_a_segment(prefix: &str) -> Result<()> {
    if prefix.len() < 2 || !prefix.ends_with('/') {
        return Err(BackendError::Invalid(format!(
            "a key prefix to delete must be whole segments ending with `/`, got `{prefix}`"
        )));
    }
    Ok(())
}

fn non_empty(what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(BackendError::Invalid(format!("{what} must not be empty")));
    }
    Ok(())
}

impl Shared {
    fn log_config(&self, stream: &StoredStream) -> LogConfig {
        let retention = stream.config.retention;
        LogConfig {
            segment_bytes: self.config.segment_bytes,
            fsync: self.config.fsync,
            retention: Retention {
                max_age: retention.max_age,
                max_bytes: retention.max_bytes_per_partition,
            },
            clock: self.config.clock.clone(),
            ..LogConfig::default()
        }
    }

    /// Opens (creating if needed) every partition log of a stream. Blocking.
    fn open_stream(&self, name: &StreamName, stored: StoredStream) -> Result<Stream> {
        let cfg = self.log_config(&stored);
        let mut partitions = Vec::with_capacity(stored.config.partitions as usize);
        for partition in 0..stored.config.partitions {
            let dir = partition_dir(&self.config.data_dir, name, partition);
            let (log, report) =
                PartitionLog::open(&dir, cfg.clone()).map_err(|e| from_log(name, partition, e))?;
            if report.truncated_bytes > 0 || !report.rebuilt_indexes.is_empty() {
                tracing::warn!(
                    stream = %name,
                    partition,
                    truncated_bytes = report.truncated_bytes,
                    reason = report.truncation_reason.as_deref().unwrap_or(""),
                    rebuilt_indexes = report.rebuilt_indexes.len(),
                    "recovered a partition log"
                );
            }
            for (file, position) in &report.corrupt_segments {
                tracing::error!(
                    stream = %name,
                    partition,
                    file = %file.display(),
                    position,
                    "a sealed segment holds a corrupt record; reads reaching it will fail"
                );
            }
            partitions.push(StreamPartition {
                log,
                readers: ReaderCache::new(self.readers.clone()),
            });
        }
        Ok(Stream {
            name: name.clone(),
            stored,
            partitions,
            deleted: watch::channel(false).0,
        })
    }

    fn stream(&self, name: &StreamName) -> Result<Arc<Stream>> {
        read(&self.streams)
            .get(name)
            .cloned()
            .ok_or_else(|| BackendError::UnknownStream(name.clone()))
    }

    fn log(&self, name: &StreamName, partition: Partition) -> Result<PartitionLog> {
        self.stream(name)?.log(partition).cloned()
    }

    /// Applies retention to every partition, drops readers idle since the previous pass, and
    /// removes expired key-value entries. Blocking.
    fn maintain(&self) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        let streams: Vec<Arc<Stream>> = read(&self.streams).values().cloned().collect();
        for stream in streams {
            for (partition, slot) in stream.partitions.iter().enumerate() {
                let removed = slot
                    .log
                    .enforce_retention()
                    .map_err(|e| from_log(&stream.name, partition as Partition, e))?;
                if removed.removed_segments > 0 {
                    // Cached readers may hold the removed files open.
                    slot.readers.clear();
                } else {
                    slot.readers.sweep();
                }
                report.removed_segments += removed.removed_segments;
                report.removed_bytes += removed.removed_bytes;
            }
        }
        let now = self.config.clock.now_micros();
        report.expired_kv_entries = self.meta.remove_expired(now, EXPIRED_PER_PASS)?;
        Ok(report)
    }
}

impl Stream {
    fn partition(&self, partition: Partition) -> Result<&StreamPartition> {
        self.partitions
            .get(partition as usize)
            .ok_or_else(|| BackendError::UnknownPartition {
                stream: self.name.clone(),
                partition,
                partitions: self.stored.config.partitions,
            })
    }

    fn log(&self, partition: Partition) -> Result<&PartitionLog> {
        Ok(&self.partition(partition)?.log)
    }

    fn info(&self) -> StreamInfo {
        StreamInfo {
            name: self.name.clone(),
            config: self.stored.config.clone(),
            created_at: self.stored.created_at,
            partitions: self
                .partitions
                .iter()
                .enumerate()
                .map(|(partition, slot)| partition_info(partition as Partition, &slot.log))
                .collect(),
        }
    }
}

fn partition_info(partition: Partition, log: &PartitionLog) -> PartitionInfo {
    PartitionInfo {
        partition,
        start_offset: log.start_offset(),
        high_watermark: log.high_watermark(),
        bytes: Some(log.size_bytes()),
    }
}

impl EmbeddedBackend {
    /// Opens the backend in `config.data_dir`, recovering every partition log of every stored
    /// stream, and starts the maintenance task (retention, expired key removal). Must be
    /// called inside a Tokio runtime.
    pub async fn open(config: EmbeddedConfig) -> Result<Self> {
        let data_dir = config.data_dir.clone();
        let interval = config.maintenance_interval;
        let shared = blocking(move || {
            let dir = &config.data_dir;
            std::fs::create_dir_all(streams_dir(dir)).map_err(|e| {
                BackendError::Engine(format!("creating {}: {e}", streams_dir(dir).display()))
            })?;
            remove_deleted_leftovers(dir)?;
            let meta = Arc::new(Meta::open(&dir.join("meta.redb"))?);
            let stored = meta.streams()?;
            let writes = GroupCommit::start(meta.clone(), config.clock.clone())?;
            let shared = Shared {
                config,
                meta,
                writes,
                streams: RwLock::new(BTreeMap::new()),
                creating: tokio::sync::Mutex::new(()),
                readers: Arc::default(),
            };
            let mut streams = BTreeMap::new();
            for (name, stream) in stored {
                let stream = shared.open_stream(&name, stream)?;
                streams.insert(name, Arc::new(stream));
            }
            *write(&shared.streams) = streams;
            Ok(Arc::new(shared))
        })
        .await?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(maintenance_loop(Arc::downgrade(&shared), interval, stopped));
        Ok(Self {
            data_dir,
            shared: RwLock::new(Some(shared)),
            stop,
            maintenance: Mutex::new(Some(task)),
        })
    }

    /// The directory this backend stores in.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs one maintenance pass now: retention on every partition, then removal of expired
    /// key-value entries. The background task does the same every `maintenance_interval`.
    pub async fn enforce_retention_now(&self) -> Result<MaintenanceReport> {
        let shared = self.shared()?;
        blocking(move || shared.maintain()).await
    }

    /// How metadata writes were grouped into commits and how often reads reused a reader,
    /// since opening.
    pub fn stats(&self) -> Result<EmbeddedStats> {
        let shared = self.shared()?;
        Ok(EmbeddedStats {
            meta_writes: shared.writes.answered(),
            meta_commits: shared.meta.commits(),
            readers_opened: shared.readers.opened(),
            readers_reused: shared.readers.reused(),
            cached_readers: shared.readers.cached(),
        })
    }

    fn shared(&self) -> Result<Arc<Shared>> {
        read(&self.shared).clone().ok_or(BackendError::Closed)
    }
}

async fn maintenance_loop(
    shared: Weak<Shared>,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            // A stop, or the backend dropped.
            _ = stopped.changed() => return,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match blocking(move || shared.maintain()).await {
            Ok(report) if report != MaintenanceReport::default() => {
                tracing::debug!(?report, "maintenance pass");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "maintenance pass failed"),
        }
    }
}

#[async_trait]
impl Backend for EmbeddedBackend {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn create_stream(&self, name: &StreamName, config: StreamConfig) -> Result<StreamInfo> {
        if config.partitions == 0 || config.partitions > MAX_PARTITIONS {
            return Err(BackendError::Invalid(format!(
                "stream `{name}`: partitions must be between 1 and {MAX_PARTITIONS}, got {}",
                config.partitions
            )));
        }
        let shared = self.shared()?;
        let _creating = shared.creating.lock().await;
        if let Ok(existing) = shared.stream(name) {
            let existing_partitions = existing.stored.config.partitions;
            if existing_partitions != config.partitions {
                return Err(BackendError::StreamExists {
                    name: name.clone(),
                    existing: existing_partitions,
                    requested: config.partitions,
                });
            }
            return Ok(existing.info());
        }
        let stored = StoredStream {
            config,
            created_at: shared.config.clock.now_micros(),
        };
        let stream = {
            let shared = shared.clone();
            let name = name.clone();
            // Directories first, definition second: a crash in between leaves only empty
            // partition directories that no stream names. A directory no definition names
            // is what a crash left (of a creation, or of a deletion between removing the
            // definition and the directory): the new stream starts empty, without it.
            blocking(move || {
                remove_stream_dir(&shared.config.data_dir, &name)?;
                let stream = shared.open_stream(&name, stored)?;
                shared.meta.insert_stream(&name, &stream.stored)?;
                Ok(Arc::new(stream))
            })
            .await?
        };
        let info = stream.info();
        write(&shared.streams).insert(name.clone(), stream);
        Ok(info)
    }

    /// Takes the stream out of the map (later calls find no stream) and wakes its waiters,
    /// removes every group's offsets on it (through the writer, after the commits already
    /// queued), then its definition (and any offset committed in between), then its
    /// directory. Appends and reads already running finish on the logs they hold.
    async fn delete_stream(&self, name: &StreamName) -> Result<()> {
        let shared = self.shared()?;
        let _creating = shared.creating.lock().await;
        let stream = write(&shared.streams)
            .remove(name)
            .ok_or_else(|| BackendError::UnknownStream(name.clone()))?;
        stream.deleted.send_replace(true);
        for slot in &stream.partitions {
            slot.readers.clear();
        }
        drop(stream);
        shared
            .writes
            .submit(DeleteOffsets::OnStream(name.clone()))?
            .await?;
        let (store, name) = (shared.clone(), name.clone());
        blocking(move || {
            store.meta.delete_stream(&name)?;
            remove_stream_dir(&store.config.data_dir, &name)
        })
        .await
    }

    async fn list_streams(&self) -> Result<Vec<StreamInfo>> {
        let shared = self.shared()?;
        let streams = read(&shared.streams);
        Ok(streams.values().map(|stream| stream.info()).collect())
    }

    async fn describe_stream(&self, name: &StreamName) -> Result<StreamInfo> {
        Ok(self.shared()?.stream(name)?.info())
    }

    async fn append(
        &self,
        stream: &StreamName,
        partition: Partition,
        records: Vec<Record>,
    ) -> Result<AppendAck> {
        let stream_state = self.shared()?.stream(stream)?;
        let slot = stream_state.partition(partition)?;
        // The log's async append never blocks this thread on a sync: group commit hands the
        // batch to the partition's sync thread, `always` syncs on the blocking pool.
        let appended = match slot.log.append(records).await {
            Ok(appended) => appended,
            Err(error) => {
                // The log may have cut back bytes that a cached reader read ahead.
                slot.readers.clear();
                return Err(from_log(stream, partition, error));
            }
        };
        Ok(AppendAck {
            partition,
            base_offset: appended.base_offset,
            count: appended.count,
            timestamp: appended.timestamp,
            duplicate: false,
        })
    }

    async fn read(
        &self,
        stream: &StreamName,
        partition: Partition,
        from: ReadFrom,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        let stream_state = self.shared()?.stream(stream)?;
        stream_state.partition(partition)?;
        blocking(move || {
            let slot = stream_state.partition(partition)?;
            let read = match from {
                ReadFrom::Offset(offset) => Ok(offset),
                ReadFrom::Time(timestamp) => slot.log.offset_for_time(timestamp),
            }
            .and_then(|offset| slot.readers.read(&slot.log, offset, max_records, max_bytes));
            read.map_err(|e| from_log(&stream_state.name, partition, e))
        })
        .await
    }

    async fn offset_for_time(
        &self,
        stream: &StreamName,
        partition: Partition,
        timestamp: Micros,
    ) -> Result<u64> {
        let log = self.shared()?.log(stream, partition)?;
        let name = stream.clone();
        blocking(move || {
            log.offset_for_time(timestamp)
                .map_err(|e| from_log(&name, partition, e))
        })
        .await
    }

    async fn partition_info(
        &self,
        stream: &StreamName,
        partition: Partition,
    ) -> Result<PartitionInfo> {
        let log = self.shared()?.log(stream, partition)?;
        Ok(partition_info(partition, &log))
    }

    async fn wait_for_data(
        &self,
        stream: &StreamName,
        partition: Partition,
        offset: u64,
        timeout: Duration,
    ) -> Result<u64> {
        // Hold only the watches while waiting, not the log: closing is not held up by
        // waiters.
        let (mut watermark, mut deleted) = {
            let state = self.shared()?.stream(stream)?;
            let watermark = state.log(partition)?.high_watermark_watch();
            (watermark, state.deleted.subscribe())
        };
        // The stream's state is dropped when it is deleted and when the backend closes: a
        // closed backend answers Closed, as every other call then does.
        let gone = || match self.shared() {
            Ok(_) => BackendError::UnknownStream(stream.clone()),
            Err(closed) => closed,
        };
        if *deleted.borrow_and_update() {
            return Err(gone());
        }
        let woken = tokio::select! {
            woken = tokio::time::timeout(timeout, watermark.wait_beyond(offset)) => Some(woken),
            // Deleted (or its sender dropped with the stream): the stream is gone.
            _ = deleted.wait_for(|d| *d) => None,
        };
        match woken {
            None => Err(gone()),
            Some(Ok(Err(_))) if *deleted.borrow() => Err(gone()),
            Some(Ok(woken)) => woken.map_err(|e| from_log(stream, partition, e)),
            Some(Err(_elapsed)) => Ok(watermark.get()),
        }
    }

    async fn committed_offset(
        &self,
        group: &str,
        stream: &StreamName,
        partition: Partition,
    ) -> Result<Option<CommittedOffset>> {
        non_empty("a group name", group)?;
        let shared = self.shared()?;
        shared.stream(stream)?.log(partition)?;
        let (group, stream) = (group.to_string(), stream.clone());
        blocking(move || shared.meta.committed_offset(&group, &stream, partition)).await
    }

    async fn commit_offset(
        &self,
        group: &str,
        stream: &StreamName,
        partition: Partition,
        offset: u64,
        expect: Expect,
    ) -> Result<Revision> {
        non_empty("a group name", group)?;
        let shared = self.shared()?;
        shared.stream(stream)?.log(partition)?;
        let answer = shared.writes.submit(CommitOffset {
            group: group.to_string(),
            stream: stream.clone(),
            partition,
            offset,
            expect,
        })?;
        // Wait without holding the backend open.
        drop(shared);
        answer.await
    }

    async fn delete_group_offsets(&self, group: &str) -> Result<usize> {
        non_empty("a group name", group)?;
        let answer = self
            .shared()?
            .writes
            .submit(DeleteOffsets::OfGroup(group.to_string()))?;
        answer.await
    }

    async fn kv_get(&self, bucket: &str, key: &str) -> Result<Option<KvEntry>> {
        non_empty("a bucket name", bucket)?;
        non_empty("a key", key)?;
        let shared = self.shared()?;
        let (bucket, key) = (bucket.to_string(), key.to_string());
        blocking(move || {
            let now = shared.config.clock.now_micros();
            shared.meta.kv_get(&bucket, &key, now)
        })
        .await
    }

    async fn kv_put(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        expect: Expect,
        ttl: Option<Duration>,
    ) -> Result<Revision> {
        non_empty("a bucket name", bucket)?;
        non_empty("a key", key)?;
        // "Now" is read by the writer when it applies the batch, so that the TTL and the
        // conditions are judged at the same instant.
        let answer = self.shared()?.writes.submit(KvPut {
            bucket: bucket.to_string(),
            key: key.to_string(),
            value,
            expect,
            ttl,
        })?;
        answer.await
    }

    async fn kv_delete(&self, bucket: &str, key: &str, expect: Expect) -> Result<()> {
        non_empty("a bucket name", bucket)?;
        non_empty("a key", key)?;
        let answer = self.shared()?.writes.submit(KvDelete {
            bucket: bucket.to_string(),
            key: key.to_string(),
            expect,
        })?;
        answer.await
    }

    async fn kv_delete_prefix(&self, bucket: &str, prefix: &str) -> Result<usize> {
        non_empty("a bucket name", bucket)?;
        prefix_ends_a_segment(prefix)?;
        let answer = self.shared()?.writes.submit(KvDeletePrefix {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })?;
        answer.await
    }

    async fn kv_scan(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>> {
        non_empty("a bucket name", bucket)?;
        let shared = self.shared()?;
        let (bucket, prefix) = (bucket.to_string(), prefix.to_string());
        let start_after = start_after.map(str::to_string);
        blocking(move || {
            let now = shared.config.clock.now_micros();
            shared
                .meta
                .kv_scan(&bucket, &prefix, start_after.as_deref(), limit, now)
        })
        .await
    }

    /// Stops the maintenance task (waiting for a pass in progress), commits the metadata
    /// writes still queued and stops their writer, then closes every partition log (with its
    /// cached readers) and the metadata store. Every acknowledged write is already durable by
    /// its policy, so nothing is left to flush. Calls still running when `close` is called
    /// finish on the handles they hold; their files are released when they return.
    async fn close(&self) -> Result<()> {
        let shared = write(&self.shared).take().ok_or(BackendError::Closed)?;
        self.stop.send_replace(true);
        let task = lock(&self.maintenance).take();
        if let Some(task) = task {
            // A panicked or cancelled task has nothing left to stop.
            let _ = task.await;
        }
        // Dropping the logs joins their sync threads: do it off the runtime.
        blocking(move || {
            drop(shared);
            Ok(())
        })
        .await
    }
}
