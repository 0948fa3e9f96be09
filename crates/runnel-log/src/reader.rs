//! Sequential readers of a partition log, bounded by the durable high watermark.

use std::sync::Arc;

use tokio::sync::watch;

use crate::error::{LogError, Result};
use crate::log::{Durable, Inner, locate, read_lock, skip_to};
use crate::record::{StoredRecord, decode_body};
use crate::segment::{FrameRead, FrameReader, LOG_EXT, segment_path};

const READ_CHUNK: usize = 256 << 10;

/// Reads records in offset order from a position, seeing only durable records.
///
/// A reader keeps its segment file open, so retention removing that segment does not disturb
/// it; a reader that falls behind the log's start gets [`LogError::OffsetOutOfRange`].
pub struct LogReader {
    inner: Arc<Inner>,
    next: u64,
    frames: Option<FrameReader>,
    durable: watch::Receiver<Durable>,
    /// The log's rollback count when `frames` last read from the file.
    rollbacks_seen: u64,
}

impl LogReader {
    pub(crate) fn new(inner: Arc<Inner>, offset: u64) -> Self {
        let durable = inner.durable.subscribe();
        let rollbacks_seen = inner.rollbacks.load(std::sync::atomic::Ordering::SeqCst);
        Self {
            inner,
            next: offset,
            frames: None,
            durable,
            rollbacks_seen,
        }
    }

    /// The offset the next record read will have.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Moves the reader to `offset`.
    pub fn seek(&mut self, offset: u64) {
        if offset != self.next {
            self.next = offset;
            self.frames = None;
        }
    }

    /// The log's current high watermark.
    pub fn high_watermark(&self) -> u64 {
        self.durable.borrow().next
    }

    /// Reads up to `max_records` durable records (stopping early once `max_bytes` of values
    /// and keys are read). Returns an empty vector when the reader is at the high watermark.
    ///
    /// Records read before an error are returned first; the error comes with the next call.
    pub fn read(&mut self, max_records: usize, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        let rollbacks = self
            .inner
            .rollbacks
            .load(std::sync::atomic::Ordering::SeqCst);
        if rollbacks != self.rollbacks_seen {
            // Buffered bytes past the high watermark may be from a write that was cut back.
            self.frames = None;
            self.rollbacks_seen = rollbacks;
        }
        let high = self.durable.borrow().next;
        let mut out = Vec::with_capacity(max_records.min((high - self.next.min(high)) as usize));
        match self.read_into(&mut out, high, max_records, max_bytes) {
            Ok(()) => Ok(out),
            Err(error) => {
                // Reopen at the failing offset next time so the error is found again.
                self.frames = None;
                if out.is_empty() { Err(error) } else { Ok(out) }
            }
        }
    }

    fn read_into(
        &mut self,
        out: &mut Vec<StoredRecord>,
        high: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<()> {
        let mut bytes = 0usize;
        let max_body = self.inner.cfg.max_record_bytes;
        while out.len() < max_records && self.next < high && bytes < max_bytes {
            let frames = match &mut self.frames {
                Some(frames) => frames,
                None => self.frames.insert(self.open_at_next()?),
            };
            let read = frames
                .next_frame(max_body)
                .map_err(|e| LogError::io(format!("reading {}", frames.path().display()), e))?;
            match read {
                FrameRead::Frame { position, body } => {
                    let record = decode_body(body).map_err(|reason| LogError::Corrupt {
                        file: frames.path().to_path_buf(),
                        position,
                        expected_offset: self.next,
                        reason,
                    })?;
                    if record.offset != self.next {
                        return Err(LogError::Corrupt {
                            file: frames.path().to_path_buf(),
                            position,
                            expected_offset: self.next,
                            reason: format!("found offset {}", record.offset),
                        });
                    }
                    bytes += record.key.len() + record.value.len();
                    self.next += 1;
                    out.push(record);
                }
                FrameRead::End => {
                    let file = frames.path().to_path_buf();
                    let position = frames.position();
                    self.frames = None;
                    let continues = read_lock(&self.inner.segments)
                        .iter()
                        .any(|s| s.base == self.next);
                    if !continues {
                        return Err(LogError::Corrupt {
                            file,
                            position,
                            expected_offset: self.next,
                            reason:
                                "the segment ends before this offset and no segment starts at it"
                                    .into(),
                        });
                    }
                }
                FrameRead::Bad { position, reason } => {
                    return Err(LogError::Corrupt {
                        file: frames.path().to_path_buf(),
                        position,
                        expected_offset: self.next,
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    /// Waits until a record at the reader's position is durable (tail follow), returning the
    /// new high watermark. Fails with [`LogError::Closed`] once the log is closed.
    pub async fn wait_for_more(&mut self) -> Result<u64> {
        let next = self.next;
        let state = *self
            .durable
            .wait_for(|d| d.next > next || d.closed)
            .await
            .map_err(|_| LogError::Closed)?;
        if state.next > next {
            Ok(state.next)
        } else {
            Err(LogError::Closed)
        }
    }

    fn open_at_next(&self) -> Result<FrameReader> {
        let inner = &self.inner;
        let out_of_range = |start: u64| LogError::OffsetOutOfRange {
            requested: self.next,
            start,
            end: inner.durable.borrow().next,
        };
        let segment = {
            let segments = read_lock(&inner.segments);
            let start = segments.front().map_or(0, |s| s.base);
            if self.next < start {
                return Err(out_of_range(start));
            }
            match segments.iter().rev().find(|s| s.base <= self.next) {
                Some(segment) => segment.clone(),
                None => return Err(out_of_range(start)),
            }
        };
        let max_body = inner.cfg.max_record_bytes;
        let position = locate(&inner.dir, &segment, self.next)?;
        let path = segment_path(&inner.dir, segment.base, LOG_EXT);
        let mut frames = match FrameReader::open(&path, position, READ_CHUNK) {
            Ok(frames) => frames,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(out_of_range(inner.start_offset()));
            }
            Err(e) => return Err(LogError::io(format!("opening {}", path.display()), e)),
        };
        skip_to(&mut frames, self.next, max_body)?;
        Ok(frames)
    }
}
