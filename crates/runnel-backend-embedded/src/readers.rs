//! Log readers kept open between `read` calls, so a consumer reading a partition in a loop
//! does not open a new reader (and read the segment's offset index to find its place) every
//! time.
//!
//! Each partition keeps up to [`READERS_PER_PARTITION`] readers, least recently used evicted
//! first, and the whole backend at most [`READERS_IN_ALL`]: a cached reader holds an open
//! segment file and its read buffer (up to 256 KiB). Rules that keep reuse correct:
//! - A reader is reused only by a read at exactly its next offset, by one read at a time (it
//!   is taken out of the cache while in use), and never below the log's start offset.
//! - A read that fails drops its reader.
//! - [`ReaderCache::clear`] drops every cached reader of the partition and refuses readers
//!   taken out before it: the backend calls it when retention removed segments (so their
//!   files are not kept open) and when an append failed (the log may have cut back bytes
//!   that a reader had buffered beyond the high watermark).
//! - [`ReaderCache::sweep`], on every maintenance pass, drops readers unused since the
//!   previous pass.
//! - The caches are dropped with the logs when the backend closes, so no reader keeps a log
//!   (and its directory lock) open.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use runnel_backend::StoredRecord;
use runnel_log::{LogReader, PartitionLog};

use crate::sync::lock;

/// Most readers kept for one partition.
const READERS_PER_PARTITION: usize = 8;

/// Most readers kept by one backend, over all partitions.
const READERS_IN_ALL: usize = 256;

/// What every partition's cache of one backend shares.
#[derive(Debug, Default)]
pub(crate) struct ReaderCounts {
    /// Readers cached now, at most [`READERS_IN_ALL`].
    cached: AtomicUsize,
    /// Reads that opened a new reader.
    opened: AtomicU64,
    /// Reads that continued with a cached reader.
    reused: AtomicU64,
}

impl ReaderCounts {
    pub fn cached(&self) -> usize {
        self.cached.load(Ordering::Relaxed)
    }

    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// Counts one more cached reader if there is room.
    fn reserve(&self) -> bool {
        self.cached
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cached| {
                (cached < READERS_IN_ALL).then_some(cached + 1)
            })
            .is_ok()
    }

    fn release(&self, readers: usize) {
        self.cached.fetch_sub(readers, Ordering::Relaxed);
    }
}

/// The cached readers of one partition.
pub(crate) struct ReaderCache {
    state: Mutex<Cached>,
    counts: Arc<ReaderCounts>,
}

#[derive(Default)]
struct Cached {
    /// Bumped by [`ReaderCache::clear`]; a reader taken out before is not taken back.
    epoch: u64,
    /// Least recently used first.
    readers: VecDeque<Kept>,
}

struct Kept {
    reader: LogReader,
    /// Whether it was used since the last sweep.
    used: bool,
}

impl ReaderCache {
    /// An empty cache of one partition, counted in `counts` with the backend's others.
    pub fn new(counts: Arc<ReaderCounts>) -> Self {
        Self {
            state: Mutex::new(Cached::default()),
            counts,
        }
    }

    /// Reads up to `max_records` records (stopping after `max_bytes`) from `offset` of `log`,
    /// with the reader an earlier read left at `offset` if there is one, and keeps the reader
    /// for the next read. Blocking.
    pub fn read(
        &self,
        log: &PartitionLog,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> runnel_log::Result<Vec<StoredRecord>> {
        let (cached, epoch) = self.take(offset);
        // Below the start, retention removed the records after this reader was cached; a new
        // reader reports the offset as out of range.
        let mut reader = match cached.filter(|_| offset >= log.start_offset()) {
            Some(reader) => {
                self.counts.reused.fetch_add(1, Ordering::Relaxed);
                reader
            }
            None => {
                let reader = log.reader(offset)?;
                self.counts.opened.fetch_add(1, Ordering::Relaxed);
                reader
            }
        };
        // A failed read drops its reader.
        let records = reader.read(max_records, max_bytes)?;
        self.put(reader, epoch);
        Ok(records)
    }

    /// Takes out the most recently used reader whose next offset is `offset`, if any, with
    /// the cache's epoch to hand it back with.
    fn take(&self, offset: u64) -> (Option<LogReader>, u64) {
        let mut state = lock(&self.state);
        let found = state
            .readers
            .iter()
            .rposition(|kept| kept.reader.next_offset() == offset);
        let reader = found
            .and_then(|i| state.readers.remove(i))
            .map(|kept| kept.reader);
        if reader.is_some() {
            self.counts.release(1);
        }
        (reader, state.epoch)
    }

    /// Keeps `reader`, unless the cache was cleared since it was taken out at `epoch`; evicts
    /// this partition's least recently used reader when the partition or the backend is at
    /// its limit. With the backend at its limit and nothing here to evict, `reader` is dropped.
    fn put(&self, reader: LogReader, epoch: u64) {
        let evicted = {
            let mut state = lock(&self.state);
            if state.epoch != epoch {
                return;
            }
            let evicted = if state.readers.len() < READERS_PER_PARTITION && self.counts.reserve() {
                None
            } else {
                match state.readers.pop_front() {
                    Some(oldest) => Some(oldest),
                    None => return,
                }
            };
            state.readers.push_back(Kept { reader, used: true });
            evicted
        };
        // Closing a file: outside the lock.
        drop(evicted);
    }

    /// Drops every cached reader and refuses the ones taken out before this call.
    pub fn clear(&self) {
        let dropped = {
            let mut state = lock(&self.state);
            state.epoch += 1;
            self.counts.release(state.readers.len());
            std::mem::take(&mut state.readers)
        };
        drop(dropped);
    }

    /// Drops the readers not used since the previous sweep.
    pub fn sweep(&self) {
        let idle = {
            let mut state = lock(&self.state);
            let (mut used, idle): (VecDeque<Kept>, VecDeque<Kept>) =
                state.readers.drain(..).partition(|kept| kept.used);
            for kept in &mut used {
                kept.used = false;
            }
            state.readers = used;
            self.counts.release(idle.len());
            idle
        };
        drop(idle);
    }
}

impl Drop for ReaderCache {
    fn drop(&mut self) {
        let held = lock(&self.state).readers.len();
        self.counts.release(held);
    }
}
