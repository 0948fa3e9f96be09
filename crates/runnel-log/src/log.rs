//! The partition log: one directory of segments, one writer, any number of readers.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use runnel_clock::Micros;
use tokio::sync::{oneshot, watch};

use crate::config::{FsyncPolicy, LogConfig};
use crate::error::{LogError, Result};
use crate::reader::LogReader;
use crate::record::{
    Record, RecordCheck, check_record, encode_frame, frame_len, peek_offset_timestamp,
};
use crate::segment::{
    FrameRead, FrameReader, INDEX_EXT, IndexBuilder, LOG_EXT, SegmentMeta, TIME_INDEX_EXT,
    open_append, parse_offset_index, parse_segment_name, parse_time_index, read_optional,
    rewrite_file, scan_segment, scan_tail, segment_path, sync_dir,
};

/// Where an acknowledged batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record; the others follow densely.
    pub base_offset: u64,
    /// Number of records appended.
    pub count: u32,
    /// Append timestamp given to every record of the batch.
    pub timestamp: Micros,
}

impl Appended {
    /// The offsets of the batch's records.
    pub fn offsets(&self) -> std::ops::Range<u64> {
        self.base_offset..self.base_offset + self.count as u64
    }
}

/// What opening a log found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments found.
    pub segments: usize,
    /// Bytes cut from the end of the active segment (a torn or corrupt tail).
    pub truncated_bytes: u64,
    /// Why the tail was cut, if it was.
    pub truncation_reason: Option<String>,
    /// Segments whose index files were missing or damaged and were rebuilt.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// Sealed segments holding a corrupt record, with its position; reads reaching it fail.
    pub corrupt_segments: Vec<(PathBuf, u64)>,
    /// Offsets held after recovery.
    pub start_offset: u64,
    pub next_offset: u64,
}

/// What one retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub removed_segments: usize,
    pub removed_bytes: u64,
    /// The log's first offset afterwards.
    pub start_offset: u64,
}

/// Durable progress as seen by readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Durable {
    /// Offset after the last record readers may see.
    pub next: u64,
    pub closed: bool,
}

/// Observes a log's high watermark.
pub struct HighWatermark(watch::Receiver<Durable>);

impl HighWatermark {
    /// The current high watermark.
    pub fn get(&self) -> u64 {
        self.0.borrow().next
    }

    /// Waits until the high watermark is above `offset`, returning it; fails once the log is
    /// closed.
    pub async fn wait_beyond(&mut self, offset: u64) -> Result<u64> {
        let state = *self
            .0
            .wait_for(|d| d.next > offset || d.closed)
            .await
            .map_err(|_| LogError::Closed)?;
        if state.next > offset {
            Ok(state.next)
        } else {
            Err(LogError::Closed)
        }
    }
}

/// A durable, segmented, append-only log of one partition. Cloning shares the same log.
#[derive(Clone)]
pub struct PartitionLog {
    handle: Arc<Handle>,
}

/// Owns the group-commit thread; dropping the last handle flushes and closes the log.
struct Handle {
    inner: Arc<Inner>,
    syncer: Mutex<Option<JoinHandle<()>>>,
}

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub cfg: LogConfig,
    writer: Mutex<Writer>,
    pub segments: RwLock<VecDeque<SegmentMeta>>,
    pub durable: watch::Sender<Durable>,
    queue: Mutex<Queue>,
    queue_ready: Condvar,
    stats: Counters,
    /// Bumped whenever a failed write is cut back: bytes a reader buffered past the high
    /// watermark may belong to that write, and offsets will be reused.
    pub rollbacks: AtomicU64,
    _lock: File,
}

#[derive(Default)]
struct Counters {
    appends: AtomicU64,
    records: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
}

/// Counters since the log was opened: how appends were batched into writes and syncs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Acknowledged append calls.
    pub appends: u64,
    /// Records in them.
    pub records: u64,
    /// `write` calls to segment files (excluding indexes).
    pub writes: u64,
    /// `fdatasync` calls on segment files.
    pub syncs: u64,
}

type Completion = oneshot::Sender<Result<Appended>>;

#[derive(Default)]
struct Queue {
    items: Vec<(Vec<Record>, Completion)>,
    bytes: usize,
    oldest: Option<Instant>,
    shutdown: bool,
}

struct Writer {
    active: ActiveSegment,
    next_offset: u64,
    last_ts: Micros,
    buf: Vec<u8>,
    poisoned: Option<String>,
}

struct ActiveSegment {
    base: u64,
    log: File,
    index_file: File,
    time_index_file: File,
    size: u64,
    max_ts: Micros,
    index: IndexBuilder,
}

/// The writer state an append may need to roll back to.
struct Snapshot {
    base: u64,
    next_offset: u64,
    size: u64,
    max_ts: Micros,
    last_ts: Micros,
    index: IndexBuilder,
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering from any crash: a torn or corrupt tail of
    /// the active segment is truncated by checksum, missing or damaged indexes are rebuilt.
    pub fn open(dir: impl AsRef<Path>, cfg: LogConfig) -> Result<(Self, RecoveryReport)> {
        cfg.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| LogError::io(format!("creating {}", dir.display()), e))?;
        let lock = lock_dir(&dir)?;
        let (segments, active, report) = recover(&dir, &cfg)?;
        let next_offset = active.base + (segments.back().map_or(0, |s| s.next - s.base));
        let last_ts = segments.iter().map(|s| s.max_ts).max().unwrap_or(0);
        let (durable, _) = watch::channel(Durable {
            next: next_offset,
            closed: false,
        });
        let inner = Arc::new(Inner {
            dir,
            writer: Mutex::new(Writer {
                active,
                next_offset,
                last_ts,
                buf: Vec::with_capacity(1 << 20),
                poisoned: None,
            }),
            segments: RwLock::new(segments),
            durable,
            queue: Mutex::new(Queue::default()),
            queue_ready: Condvar::new(),
            stats: Counters::default(),
            rollbacks: AtomicU64::new(0),
            _lock: lock,
            cfg,
        });
        let syncer = match inner.cfg.fsync {
            FsyncPolicy::Group {
                interval,
                max_bytes,
            } => {
                let inner = inner.clone();
                let thread = std::thread::Builder::new()
                    .name("runnel-log-sync".into())
                    .spawn(move || inner.run_syncer(interval, max_bytes))
                    .map_err(|e| LogError::io("starting the group-commit thread", e))?;
                Some(thread)
            }
            _ => None,
        };
        let log = PartitionLog {
            handle: Arc::new(Handle {
                inner,
                syncer: Mutex::new(syncer),
            }),
        };
        Ok((log, report))
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// The directory holding this log's segments.
    pub fn dir(&self) -> &Path {
        &self.inner().dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.inner().cfg
    }

    /// Appends `records` as one batch and returns once they are durable by the fsync policy.
    /// Records are checked against the size limit before anything is written.
    pub async fn append(&self, records: Vec<Record>) -> Result<Appended> {
        let inner = self.inner();
        inner.check_batch(&records)?;
        match inner.cfg.fsync {
            FsyncPolicy::Os => inner.append_now(&records, false),
            FsyncPolicy::Always => {
                let inner = inner.clone();
                tokio::task::spawn_blocking(move || inner.append_now(&records, true))
                    .await
                    .map_err(|_| LogError::Closed)?
            }
            FsyncPolicy::Group { max_bytes, .. } => {
                let receiver = inner.enqueue(records, max_bytes)?;
                receiver.await.map_err(|_| LogError::Closed)?
            }
        }
    }

    /// Like [`PartitionLog::append`], blocking the calling thread. Not for async contexts.
    pub fn append_blocking(&self, records: Vec<Record>) -> Result<Appended> {
        let inner = self.inner();
        inner.check_batch(&records)?;
        match inner.cfg.fsync {
            FsyncPolicy::Os => inner.append_now(&records, false),
            FsyncPolicy::Always => inner.append_now(&records, true),
            FsyncPolicy::Group { max_bytes, .. } => {
                let receiver = inner.enqueue(records, max_bytes)?;
                receiver.blocking_recv().map_err(|_| LogError::Closed)?
            }
        }
    }

    /// A reader positioned at `offset` (which may equal the high watermark, to follow the tail).
    pub fn reader(&self, offset: u64) -> Result<LogReader> {
        let (start, end) = (self.start_offset(), self.high_watermark());
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                start,
                end,
            });
        }
        Ok(LogReader::new(self.inner().clone(), offset))
    }

    /// A reader positioned at the first record appended at or after `timestamp`
    /// (at the high watermark when there is none).
    pub fn reader_at_time(&self, timestamp: Micros) -> Result<LogReader> {
        let offset = self.offset_for_time(timestamp)?;
        Ok(LogReader::new(self.inner().clone(), offset))
    }

    /// The first offset whose record was appended at or after `timestamp`, or the high
    /// watermark when every durable record is older.
    pub fn offset_for_time(&self, timestamp: Micros) -> Result<u64> {
        self.inner().offset_for_time(timestamp)
    }

    /// Offset after the last durable record: readers see offsets below it.
    pub fn high_watermark(&self) -> u64 {
        self.inner().durable.borrow().next
    }

    /// The first offset still held (retention removes whole segments from the front).
    pub fn start_offset(&self) -> u64 {
        self.inner().start_offset()
    }

    /// Total bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        let segments = read_lock(&self.inner().segments);
        segments.iter().map(|s| s.size).sum()
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        read_lock(&self.inner().segments).len()
    }

    /// A handle that observes the high watermark, for waiting on new data without a reader.
    pub fn high_watermark_watch(&self) -> HighWatermark {
        HighWatermark(self.inner().durable.subscribe())
    }

    /// How appends were batched so far.
    pub fn stats(&self) -> LogStats {
        let c = &self.inner().stats;
        LogStats {
            appends: c.appends.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
        }
    }

    /// Removes whole sealed segments beyond the configured age and size limits.
    pub fn enforce_retention(&self) -> Result<RetentionReport> {
        self.inner().enforce_retention()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        {
            let mut queue = lock(&self.inner.queue);
            queue.shutdown = true;
        }
        self.inner.queue_ready.notify_all();
        let thread = self.syncer.lock().ok().and_then(|mut s| s.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        self.inner.durable.send_modify(|d| d.closed = true);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these structures half-updated in a way
    // that matters more than refusing service; keep going with the data as it is.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io(format!("opening {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LogError::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(LogError::io(format!("locking {}", path.display()), e))
        }
    }
}

impl Inner {
    fn check_batch(&self, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let limit = self.cfg.max_record_bytes;
        for record in records {
            match check_record(record, limit) {
                Ok(()) => {}
                Err(RecordCheck::TooLarge(size)) => {
                    return Err(LogError::RecordTooLarge { size, limit });
                }
                Err(RecordCheck::TooManyHeaders) => {
                    return Err(LogError::Config(format!(
                        "a record may carry at most {} headers",
                        u16::MAX
                    )));
                }
                Err(RecordCheck::HeaderNameTooLong) => {
                    return Err(LogError::Config(format!(
                        "a header name may be at most {} bytes",
                        u16::MAX
                    )));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn start_offset(&self) -> u64 {
        read_lock(&self.segments).front().map_or(0, |s| s.base)
    }

    /// Writes (and for `sync`, fdatasyncs) one batch on the calling thread.
    fn append_now(&self, records: &[Record], sync: bool) -> Result<Appended> {
        let mut writer = lock(&self.writer);
        let mut bases = writer.write(self, &[records], sync)?;
        let timestamp = writer.last_ts;
        let base_offset = bases.pop().unwrap_or_default();
        let next = writer.next_offset;
        drop(writer);
        self.publish_durable(next);
        Ok(Appended {
            base_offset,
            count: records.len() as u32,
            timestamp,
        })
    }

    fn enqueue(
        &self,
        records: Vec<Record>,
        max_bytes: usize,
    ) -> Result<oneshot::Receiver<Result<Appended>>> {
        let (sender, receiver) = oneshot::channel();
        let bytes: usize = records.iter().map(frame_len).sum();
        let mut queue = lock(&self.queue);
        if queue.shutdown {
            return Err(LogError::Closed);
        }
        let was_empty = queue.items.is_empty();
        queue.items.push((records, sender));
        queue.bytes += bytes;
        if was_empty {
            queue.oldest = Some(Instant::now());
        }
        let wake = was_empty || queue.bytes >= max_bytes;
        drop(queue);
        if wake {
            self.queue_ready.notify_one();
        }
        Ok(receiver)
    }

    /// The group-commit loop: waits for queued appends, writes them with one write and one
    /// fdatasync, then acknowledges each.
    fn run_syncer(&self, interval: std::time::Duration, max_bytes: usize) {
        loop {
            let items = {
                let mut queue = lock(&self.queue);
                loop {
                    if queue.items.is_empty() {
                        if queue.shutdown {
                            return;
                        }
                        queue = self
                            .queue_ready
                            .wait(queue)
                            .unwrap_or_else(|p| p.into_inner());
                        continue;
                    }
                    let waited = queue.oldest.map_or(interval, |t| t.elapsed());
                    if queue.shutdown || queue.bytes >= max_bytes || waited >= interval {
                        break;
                    }
                    queue = self
                        .queue_ready
                        .wait_timeout(queue, interval - waited)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                queue.bytes = 0;
                queue.oldest = None;
                std::mem::take(&mut queue.items)
            };
            self.commit_group(items);
        }
    }

    fn commit_group(&self, items: Vec<(Vec<Record>, Completion)>) {
        let batches: Vec<&[Record]> = items.iter().map(|(r, _)| r.as_slice()).collect();
        let mut writer = lock(&self.writer);
        let result = writer.write(self, &batches, true);
        let timestamp = writer.last_ts;
        let next = writer.next_offset;
        drop(writer);
        drop(batches);
        match result {
            Ok(bases) => {
                self.publish_durable(next);
                for ((records, completion), base_offset) in items.into_iter().zip(bases) {
                    let _ = completion.send(Ok(Appended {
                        base_offset,
                        count: records.len() as u32,
                        timestamp,
                    }));
                }
            }
            Err(error) => {
                for (_, completion) in items {
                    let _ = completion.send(Err(replicate(&error)));
                }
            }
        }
    }

    fn publish_durable(&self, next: u64) {
        self.durable.send_if_modified(|d| {
            if next > d.next {
                d.next = next;
                true
            } else {
                false
            }
        });
    }

    fn offset_for_time(&self, timestamp: Micros) -> Result<u64> {
        let high = self.durable.borrow().next;
        let segment = {
            let segments = read_lock(&self.segments);
            match segments
                .iter()
                .find(|s| s.max_ts >= timestamp && s.next > s.base)
            {
                Some(s) => s.clone(),
                None => return Ok(high),
            }
        };
        let count = segment.next.saturating_sub(segment.base);
        let time_path = segment_path(&self.dir, segment.base, TIME_INDEX_EXT);
        let entries = read_optional(&time_path)?
            .and_then(|bytes| parse_time_index(&bytes, count))
            .unwrap_or_default();
        let from_relative = entries
            .iter()
            .take_while(|(ts, _)| *ts < timestamp)
            .last()
            .map_or(0, |(_, rel)| *rel);
        let from = segment.base + from_relative as u64;
        let path = segment_path(&self.dir, segment.base, LOG_EXT);
        let position = locate(&self.dir, &segment, from)?;
        let mut frames = match FrameReader::open(&path, position, 64 << 10) {
            Ok(frames) => frames,
            // Removed by retention meanwhile: every record it held is older than asked.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(self.start_offset()),
            Err(e) => return Err(LogError::io(format!("opening {}", path.display()), e)),
        };
        let max_body = self.cfg.max_record_bytes;
        loop {
            let read = frames
                .next_frame(max_body)
                .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?;
            match read {
                FrameRead::Frame { position, body } => {
                    let Some((offset, ts)) = peek_offset_timestamp(&body) else {
                        return Err(LogError::Corrupt {
                            file: path,
                            position,
                            expected_offset: from,
                            reason: "malformed record body".into(),
                        });
                    };
                    if offset >= high {
                        return Ok(high);
                    }
                    if offset >= from && ts >= timestamp {
                        return Ok(offset);
                    }
                }
                FrameRead::End => return Ok(segment.next.min(high)),
                FrameRead::Bad { position, reason } => {
                    return Err(LogError::Corrupt {
                        file: path,
                        position,
                        expected_offset: from,
                        reason,
                    });
                }
            }
        }
    }

    fn enforce_retention(&self) -> Result<RetentionReport> {
        let retention = self.cfg.retention;
        let now = self.cfg.clock.now_micros();
        let mut report = RetentionReport::default();
        let mut segments = write_lock(&self.segments);
        let mut total: u64 = segments.iter().map(|s| s.size).sum();
        while segments.len() > 1 {
            let Some(oldest) = segments.front() else {
                break;
            };
            let too_old = retention
                .max_age
                .is_some_and(|age| now.saturating_sub(oldest.max_ts) > age.as_micros() as u64);
            let too_big = retention.max_bytes.is_some_and(|max| total > max);
            if !too_old && !too_big {
                break;
            }
            let base = oldest.base;
            let size = oldest.size;
            for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT] {
                let path = segment_path(&self.dir, base, ext);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(LogError::io(format!("removing {}", path.display()), e));
                    }
                }
            }
            segments.pop_front();
            total -= size;
            report.removed_segments += 1;
            report.removed_bytes += size;
        }
        report.start_offset = segments.front().map_or(0, |s| s.base);
        drop(segments);
        if report.removed_segments > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(report)
    }
}

/// An equivalent error for each waiter of a failed group commit.
fn replicate(error: &LogError) -> LogError {
    match error {
        LogError::Io { context, source } => LogError::Io {
            context: context.clone(),
            source: match source.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(source.kind(), source.to_string()),
            },
        },
        LogError::Poisoned { dir, reason } => LogError::Poisoned {
            dir: dir.clone(),
            reason: reason.clone(),
        },
        other => LogError::Poisoned {
            dir: PathBuf::new(),
            reason: other.to_string(),
        },
    }
}

impl Writer {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            base: self.active.base,
            next_offset: self.next_offset,
            size: self.active.size,
            max_ts: self.active.max_ts,
            last_ts: self.last_ts,
            index: self.active.index.clone(),
        }
    }

    /// Encodes and writes `batches` in order, rolling segments as needed; with `sync`, the
    /// bytes are fdatasynced before returning. Returns each batch's base offset.
    ///
    /// On failure nothing of the batches stays visible: the active file is cut back to its
    /// previous size, or, when that is impossible, the writer is poisoned.
    fn write(&mut self, inner: &Inner, batches: &[&[Record]], sync: bool) -> Result<Vec<u64>> {
        if let Some(reason) = &self.poisoned {
            return Err(LogError::Poisoned {
                dir: inner.dir.clone(),
                reason: reason.clone(),
            });
        }
        let snapshot = self.snapshot();
        match self.write_inner(inner, batches, sync) {
            Ok(bases) => {
                let stats = &inner.stats;
                stats
                    .appends
                    .fetch_add(batches.len() as u64, Ordering::Relaxed);
                let records: usize = batches.iter().map(|b| b.len()).sum();
                stats.records.fetch_add(records as u64, Ordering::Relaxed);
                self.publish_active(inner);
                Ok(bases)
            }
            Err(error) => {
                self.buf.clear();
                if !self.roll_back(&snapshot) {
                    self.poisoned = Some(error.to_string());
                }
                inner.rollbacks.fetch_add(1, Ordering::SeqCst);
                self.publish_active(inner);
                Err(error)
            }
        }
    }

    fn write_inner(
        &mut self,
        inner: &Inner,
        batches: &[&[Record]],
        sync: bool,
    ) -> Result<Vec<u64>> {
        let cfg = &inner.cfg;
        let timestamp = cfg.clock.now_micros().max(self.last_ts);
        self.last_ts = timestamp;
        self.buf.clear();
        let mut bases = Vec::with_capacity(batches.len());
        for batch in batches {
            bases.push(self.next_offset);
            for record in batch.iter() {
                let len = frame_len(record);
                let used = self.active.size + self.buf.len() as u64;
                if used > 0 && used + len as u64 > cfg.segment_bytes {
                    self.flush_buf()?;
                    self.roll(inner)?;
                }
                let position = self.active.size + self.buf.len() as u64;
                let relative = (self.next_offset - self.active.base) as u32;
                self.active
                    .index
                    .on_record(relative, position as u32, timestamp, len);
                encode_frame(&mut self.buf, self.next_offset, timestamp, record);
                self.next_offset += 1;
                self.active.max_ts = timestamp;
            }
        }
        self.flush_buf()?;
        inner.stats.writes.fetch_add(1, Ordering::Relaxed);
        if sync {
            self.active
                .log
                .sync_data()
                .map_err(|e| self.poison_io("fdatasync of the active segment", e))?;
            inner.stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(bases)
    }

    /// Writes the encoded buffer and pending index entries to the active segment's files.
    fn flush_buf(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let segment = &mut self.active;
            segment
                .log
                .write_all(&self.buf)
                .map_err(|e| LogError::io(format!("appending to segment {}", segment.base), e))?;
            segment.size += self.buf.len() as u64;
            self.buf.clear();
        }
        let segment = &mut self.active;
        let index_result = (|| {
            if !segment.index.index.is_empty() {
                segment.index_file.write_all(&segment.index.index)?;
            }
            if !segment.index.time_index.is_empty() {
                segment
                    .time_index_file
                    .write_all(&segment.index.time_index)?;
            }
            Ok(())
        })();
        segment.index.clear_pending();
        // A half-written index entry would misalign every later one: stop and let reopening
        // rebuild the index from the log.
        index_result.map_err(|e| self.poison_io("writing a segment index", e))
    }

    fn poison_io(&mut self, what: &str, e: std::io::Error) -> LogError {
        let error = LogError::io(format!("{what} (segment {})", self.active.base), e);
        self.poisoned = Some(error.to_string());
        error
    }

    /// Seals the active segment (synced, with its final time-index entry) and starts a new one.
    fn roll(&mut self, inner: &Inner) -> Result<()> {
        let syncs = inner.cfg.fsync.syncs();
        let last_relative = (self.next_offset - 1 - self.active.base) as u32;
        self.active.index.seal(last_relative, self.active.max_ts);
        self.flush_buf()?;
        if syncs {
            let synced = [
                &self.active.log,
                &self.active.index_file,
                &self.active.time_index_file,
            ]
            .into_iter()
            .try_for_each(|file| file.sync_data());
            synced.map_err(|e| self.poison_io("fdatasync while sealing a segment", e))?;
        }
        let base = self.next_offset;
        let fresh = ActiveSegment::create(&inner.dir, base, inner.cfg.index_interval_bytes)
            .inspect_err(|e| self.poisoned = Some(e.to_string()))?;
        if syncs {
            sync_dir(&inner.dir).inspect_err(|e| self.poisoned = Some(e.to_string()))?;
        }
        self.publish_active(inner);
        self.active = fresh;
        write_lock(&inner.segments).push_back(SegmentMeta {
            base,
            next: base,
            size: 0,
            max_ts: 0,
        });
        Ok(())
    }

    /// Undoes a failed write when no segment was rolled: cut the file back, restore counters.
    fn roll_back(&mut self, snapshot: &Snapshot) -> bool {
        if self.poisoned.is_some() || snapshot.base != self.active.base {
            return false;
        }
        if self.active.log.set_len(snapshot.size).is_err() {
            return false;
        }
        self.next_offset = snapshot.next_offset;
        self.active.size = snapshot.size;
        self.active.max_ts = snapshot.max_ts;
        self.last_ts = snapshot.last_ts;
        self.active.index = snapshot.index.clone();
        self.active.index.clear_pending();
        true
    }

    /// Mirrors the active segment's counters into the readers' segment list.
    fn publish_active(&self, inner: &Inner) {
        let mut segments = write_lock(&inner.segments);
        if let Some(meta) = segments
            .iter_mut()
            .rev()
            .find(|s| s.base == self.active.base)
        {
            meta.next = self.next_offset;
            meta.size = self.active.size;
            meta.max_ts = self.active.max_ts;
        }
    }
}

impl ActiveSegment {
    fn create(dir: &Path, base: u64, interval: u32) -> Result<Self> {
        let log = open_append(&segment_path(dir, base, LOG_EXT))?;
        let index_file = rewrite_file(&segment_path(dir, base, INDEX_EXT), &[])?;
        let time_index_file = rewrite_file(&segment_path(dir, base, TIME_INDEX_EXT), &[])?;
        Ok(Self {
            base,
            log,
            index_file,
            time_index_file,
            size: 0,
            max_ts: 0,
            index: IndexBuilder::new(interval),
        })
    }
}

/// Lists segments, validates sealed ones cheaply (rebuilding damaged indexes), and scans the
/// active segment in full, truncating a torn or corrupt tail.
fn recover(
    dir: &Path,
    cfg: &LogConfig,
) -> Result<(VecDeque<SegmentMeta>, ActiveSegment, RecoveryReport)> {
    let mut report = RecoveryReport::default();
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_segment_name(name) {
            Some((base, LOG_EXT)) => logs.push(base),
            Some((base, _)) => indexes.push((base, entry.path())),
            None => {}
        }
    }
    logs.sort_unstable();
    // Index files whose log is gone are leftovers of an interrupted retention pass.
    for (base, path) in indexes {
        if logs.binary_search(&base).is_err() {
            std::fs::remove_file(&path)
                .map_err(|e| LogError::io(format!("removing {}", path.display()), e))?;
        }
    }
    let max_body = cfg.max_record_bytes;
    let mut segments = VecDeque::with_capacity(logs.len().max(1));
    if logs.is_empty() {
        let active = ActiveSegment::create(dir, 0, cfg.index_interval_bytes)?;
        sync_dir(dir)?;
        segments.push_back(SegmentMeta {
            base: 0,
            next: 0,
            size: 0,
            max_ts: 0,
        });
        report.segments = 1;
        return Ok((segments, active, report));
    }
    for pair in logs.windows(2) {
        let (base, next) = (pair[0], pair[1]);
        segments.push_back(recover_sealed(dir, base, next, cfg, max_body, &mut report)?);
    }
    let active_base = *logs.last().unwrap_or(&0);
    let path = segment_path(dir, active_base, LOG_EXT);
    let scan = scan_segment(&path, active_base, cfg.index_interval_bytes, max_body)?;
    let file_len = std::fs::metadata(&path)
        .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?
        .len();
    if scan.valid_len < file_len {
        let reason = scan
            .stopped
            .as_ref()
            .map(|(_, why)| why.clone())
            .unwrap_or_else(|| "trailing bytes".into());
        tracing::warn!(
            file = %path.display(),
            cut_bytes = file_len - scan.valid_len,
            %reason,
            "truncating the torn tail of the active segment"
        );
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io(format!("opening {}", path.display()), e))?;
        file.set_len(scan.valid_len)
            .and_then(|_| file.sync_all())
            .map_err(|e| LogError::io(format!("truncating {}", path.display()), e))?;
        report.truncated_bytes = file_len - scan.valid_len;
        report.truncation_reason = Some(reason);
    }
    let index_file = rewrite_file(
        &segment_path(dir, active_base, INDEX_EXT),
        &scan.index.index,
    )?;
    let time_index_file = rewrite_file(
        &segment_path(dir, active_base, TIME_INDEX_EXT),
        &scan.index.time_index,
    )?;
    let mut index = scan.index;
    index.clear_pending();
    let active = ActiveSegment {
        base: active_base,
        log: open_append(&path)?,
        index_file,
        time_index_file,
        size: scan.valid_len,
        max_ts: scan.max_ts,
        index,
    };
    segments.push_back(SegmentMeta {
        base: active_base,
        next: scan.next,
        size: scan.valid_len,
        max_ts: scan.max_ts,
    });
    report.segments = segments.len();
    report.start_offset = segments.front().map_or(0, |s| s.base);
    report.next_offset = scan.next;
    Ok((segments, active, report))
}

/// Checks a sealed segment's indexes and the frames after its last index entry; rebuilds the
/// indexes from a full scan when anything is off.
fn recover_sealed(
    dir: &Path,
    base: u64,
    next: u64,
    cfg: &LogConfig,
    max_body: usize,
    report: &mut RecoveryReport,
) -> Result<SegmentMeta> {
    let path = segment_path(dir, base, LOG_EXT);
    let size = std::fs::metadata(&path)
        .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?
        .len();
    let count = next.saturating_sub(base);
    let index_path = segment_path(dir, base, INDEX_EXT);
    let time_path = segment_path(dir, base, TIME_INDEX_EXT);
    let offsets = read_optional(&index_path)?.and_then(|b| parse_offset_index(&b, size, count));
    let times = read_optional(&time_path)?.and_then(|b| parse_time_index(&b, count));
    if let (Some(offsets), Some(times)) = (offsets, times) {
        let (relative, position) = offsets.last().copied().unwrap_or((0, 0));
        let tail = scan_tail(&path, position as u64, base + relative as u64, max_body)?;
        if let Some((tail_next, max_ts)) = tail
            && tail_next == next
            && times.last().is_none_or(|(ts, _)| *ts <= max_ts)
        {
            return Ok(SegmentMeta {
                base,
                next,
                size,
                max_ts,
            });
        }
    }
    tracing::warn!(file = %path.display(), "rebuilding the indexes of a sealed segment");
    let mut scan = scan_segment(&path, base, cfg.index_interval_bytes, max_body)?;
    if scan.next > base {
        scan.index.seal((scan.next - 1 - base) as u32, scan.max_ts);
    }
    rewrite_file(&index_path, &scan.index.index)?;
    rewrite_file(&time_path, &scan.index.time_index)?;
    report.rebuilt_indexes.push(path.clone());
    if let Some((position, reason)) = &scan.stopped {
        tracing::error!(file = %path.display(), position, %reason, "corrupt record in a sealed segment");
        report.corrupt_segments.push((path.clone(), *position));
    } else if scan.next != next {
        report.corrupt_segments.push((path.clone(), scan.valid_len));
    }
    Ok(SegmentMeta {
        base,
        next,
        size,
        max_ts: scan.max_ts,
    })
}

/// Finds where to start reading `offset` in a segment: the last index entry at or before it.
pub(crate) fn locate(dir: &Path, segment: &SegmentMeta, offset: u64) -> Result<u64> {
    let index_path = segment_path(dir, segment.base, INDEX_EXT);
    let count = segment.next.saturating_sub(segment.base).max(1);
    // The active segment's index may trail its log by a moment, and a concurrent append may
    // add an entry past `segment.next`: trust only whole entries below the target.
    let bytes = read_optional(&index_path)?.unwrap_or_default();
    let whole = bytes.len() - bytes.len() % crate::segment::INDEX_ENTRY;
    let relative = offset.saturating_sub(segment.base);
    let mut position = 0u64;
    for chunk in bytes[..whole].chunks_exact(crate::segment::INDEX_ENTRY) {
        let rel = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as u64;
        let pos = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]) as u64;
        if rel > relative || (rel >= count && segment.next > segment.base) {
            break;
        }
        position = pos;
    }
    Ok(position)
}

/// Skips frames before `offset` in a reader positioned at a frame start.
pub(crate) fn skip_to(frames: &mut FrameReader, offset: u64, max_body: usize) -> Result<()> {
    while let Some(found) = frames
        .peek_offset()
        .map_err(|e| LogError::io(format!("reading {}", frames.path().display()), e))?
    {
        if found >= offset {
            break;
        }
        let skipped = frames
            .skip_frame(max_body)
            .map_err(|e| LogError::io(format!("reading {}", frames.path().display()), e))?;
        if !skipped {
            // Left for the checked read to report.
            break;
        }
    }
    Ok(())
}
