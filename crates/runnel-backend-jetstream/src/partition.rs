//! One Runnel partition = one JetStream stream, so that offsets are dense for free:
//! **offset = stream sequence − 1**. JetStream numbers a stream's messages 1, 2, 3, … without
//! gaps (the streams deny single-message deletes; retention only removes from the head), so
//! reading offset `o` is reading sequence `o + 1`, the high watermark is the last sequence,
//! and the start offset is the first sequence − 1. The alternative, one stream per Runnel
//! stream with a subject per partition, numbers messages across partitions, and would need a
//! sequence ↔ offset index kept beside it to read a partition by offset.
//!
//! **Appends.** A batch must land contiguously (the ack names a base offset and a count) even
//! when several processes append to the same partition. Each message of a batch carries a
//! condition the stream leader checks atomically with the write: the first
//! `Nats-Expected-Last-Sequence: <the tail we know>`, each next one
//! `Nats-Expected-Last-Msg-Id: <the id of the message before it>`. If another writer slipped
//! in, the first message is refused and so is every later one (their predecessor was not
//! stored), nothing of the batch is written, and the append re-reads the tail and tries again.
//! Within one process, appends to a partition are sent one batch after another under a lock
//! that is held only while sending, not while waiting for acknowledgements, so they pipeline.
//! Because every message is conditional on its predecessor, the append timestamp (the
//! injected clock, never below the previous record's) never decreases along a partition.
//!
//! **Dedup.** A record's `Nats-Msg-Id` is its dedup header (the event id) when it has one;
//! JetStream then drops a second publish of it within the stream's duplicate window and
//! acknowledges the first sequence, which the append reports as the original position (a
//! retry after a lost acknowledgement cannot append twice). The other records of a batch of
//! several get random ids (the chain of conditions needs them). A lone record without a dedup
//! header gets none, which spares JetStream's duplicate tracking (about half of its publish
//! rate on this machine); a retry of it after a lost acknowledgement first reads the message
//! after the tail it was conditional on and, if that is the record, reports it appended. A
//! batch that is only partly new is acknowledged when JetStream's sequences for it are dense
//! (its old records sit in order right before its new ones: the rest of an append that was
//! cut off, sent again), and refused as an error otherwise (a base offset and a count cannot
//! describe it).
//!
//! **Reads** keep cursors (see `cursor`): an ephemeral pull consumer positioned at the next
//! offset, reused by the next read that starts there. It fetches per read while there is a
//! backlog, and once a fetch reaches the tail its pull stays open, so records arrive as they
//! are appended and a read takes what has arrived. A cursor is opened only where there are
//! records; a read finds nothing only at the high watermark this process knows. Single-record
//! reads without a cursor (lag probes) are one `STREAM.MSG.GET`. Reads by time binary-search
//! the records' own timestamps.
//!
//! **Waits** watch the high watermark in a `tokio::sync::watch`: appends from this process
//! raise it. A wait where a standing cursor stands waits on that cursor's pull too, so the
//! next record, from any process, wakes it (and is in the cursor for the next read). A wait
//! anywhere else starts a watcher task that follows the stream with an ordered consumer
//! (headers only) from the last sequence, so an append from any process wakes the waiters;
//! it stops two seconds after the last waiter leaves.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::header::{
    NATS_EXPECTED_LAST_MESSAGE_ID, NATS_EXPECTED_LAST_SEQUENCE, NATS_MESSAGE_ID,
};
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use async_nats::{HeaderMap, HeaderValue, Subject};
use bytes::Bytes;
use futures::StreamExt;
use runnel_backend::{
    AppendAck, BackendError, Partition as PartitionId, PartitionInfo, Record, StoredRecord,
    StreamName,
};
use runnel_clock::Micros;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::acks::{AckBatch, Outcome, Stored};
use crate::cursor::{CURSOR_IDLE, Cursor, CursorPlace, Fill, raise};
use crate::error::{describe, engine, is_not_found};
use crate::frame::{content_len, decode_record, encode_record, encoded_len, record_timestamp};
use crate::shared::Shared;

/// Room left in a message for the NATS headers the backend adds (ids are at most 256 bytes).
const HEADER_ROOM: usize = 700;
/// Tries of one append: refusals because another writer moved the tail, and transient
/// failures (no responders while a stream leader is elected, lost acknowledgements).
const MAX_APPEND_ATTEMPTS: u32 = 40;
/// Cursors kept per partition; the least recently used goes first.
const MAX_CURSORS: usize = 4;
/// Most records read by single gets when no reader can be opened.
const DIRECT_READ_MAX: usize = 32;
/// How long the watcher keeps following the stream after the last waiter left.
const WATCHER_LINGER_TICKS: u32 = 2;
/// How often an empty read at the tail asks the server whether its offset is still in range.
const TAIL_RANGE_CHECK: Duration = Duration::from_secs(1);

/// The last record of the partition as this process believes it to be.
#[derive(Debug, Clone, Copy)]
struct Tail {
    last_seq: u64,
    last_timestamp: Micros,
}

#[derive(Debug, Default)]
struct Writer {
    /// `None` until read from the server, and again after a refusal showed it was stale.
    tail: Option<Tail>,
    /// Bumped whenever the tail is forgotten, so that several appends refused for the same
    /// stale tail forget it once.
    generation: u64,
}

/// One partition's JetStream stream and what this process keeps for it.
pub(crate) struct Partition {
    pub stream: StreamName,
    pub id: PartitionId,
    subject: Subject,
    handle: Stream<()>,
    shared: Arc<Shared>,
    writer: tokio::sync::Mutex<Writer>,
    watermark: Arc<watch::Sender<u64>>,
    watcher: Mutex<Option<JoinHandle<()>>>,
    cursors: Mutex<Vec<Cursor>>,
    /// When an empty read at the tail last checked the partition's range with the server.
    tail_range_checked: Mutex<Option<Instant>>,
    /// Set when this process deletes the stream: waits end with `UnknownStream`.
    deleted: watch::Sender<bool>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("stream", &self.stream)
            .field("partition", &self.id)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Partition {
    pub fn new(
        stream: StreamName,
        id: PartitionId,
        subject: String,
        handle: Stream<()>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            stream,
            id,
            subject: Subject::from(subject),
            handle,
            shared,
            writer: tokio::sync::Mutex::new(Writer::default()),
            watermark: Arc::new(watch::channel(0).0),
            watcher: Mutex::new(None),
            cursors: Mutex::new(Vec::new()),
            tail_range_checked: Mutex::new(None),
            deleted: watch::channel(false).0,
        }
    }

    /// The stream is being deleted: wakes every wait on this partition (they end with
    /// `UnknownStream`), stops the watcher and forgets the cursors (their consumers go with
    /// the stream).
    pub fn mark_deleted(&self) {
        self.deleted.send_replace(true);
        self.stop_watcher();
        lock(&self.cursors).clear();
    }

    /// Whether the stream was found deleted (by this process or another).
    pub fn is_deleted(&self) -> bool {
        *self.deleted.borrow()
    }

    fn gone(&self) -> BackendError {
        BackendError::UnknownStream(self.stream.clone())
    }

    fn at(&self) -> String {
        format!("stream `{}` partition {}", self.stream, self.id)
    }

    fn raise_watermark(&self, high: u64) {
        raise(&self.watermark, high);
    }

    /// Start offset and high watermark, from the server.
    pub async fn bounds(&self) -> Result<(u64, u64, u64), BackendError> {
        let info = self.handle.get_info().await.map_err(|e| {
            // Deleted (by another process): the stream is gone, not the engine broken.
            if is_not_found(&e) {
                self.gone()
            } else {
                engine(format!("reading the state of {}", self.at()), e)
            }
        })?;
        let state = info.state;
        let high = state.last_sequence;
        let start = if state.messages == 0 {
            high
        } else {
            state.first_sequence.saturating_sub(1)
        };
        self.raise_watermark(high);
        Ok((start, high, state.bytes))
    }

    pub async fn info(&self) -> Result<PartitionInfo, BackendError> {
        let (start_offset, high_watermark, bytes) = self.bounds().await?;
        Ok(PartitionInfo {
            partition: self.id,
            start_offset,
            high_watermark,
            bytes: Some(bytes),
        })
    }

    fn out_of_range(&self, requested: u64, start: u64, end: u64) -> BackendError {
        BackendError::OffsetOutOfRange {
            stream: self.stream.clone(),
            partition: self.id,
            requested,
            start,
            end,
        }
    }

    /// Whether `offset` is the partition's end (nothing to read there yet), asking the
    /// server; an offset outside the partition is an [`BackendError::OffsetOutOfRange`].
    async fn at_end(&self, offset: u64) -> Result<bool, BackendError> {
        let (start, end, _) = self.bounds().await?;
        if offset < start || offset > end {
            return Err(self.out_of_range(offset, start, end));
        }
        Ok(offset == end)
    }

    // ---- appends -------------------------------------------------------------------------

    async fn read_tail(&self) -> Result<Tail, BackendError> {
        let (start, high, _) = self.bounds().await?;
        let last_timestamp = if high > start {
            match self.handle.get_raw_message(high).await {
                Ok(message) => record_timestamp(&message.payload).unwrap_or(0),
                Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => 0,
                Err(error) => {
                    return Err(engine(
                        format!("reading the last record of {}", self.at()),
                        error,
                    ));
                }
            }
        } else {
            0
        };
        Ok(Tail {
            last_seq: high,
            last_timestamp,
        })
    }

    /// The `Nats-Msg-Id` of each record: its dedup header when it has a usable one (and the
    /// batch has not used it already); a random id when the batch has several records (the
    /// chain of conditions needs ids); none for a lone record without one, which saves
    /// JetStream's duplicate tracking (about half its publish rate on this machine); a retry
    /// of such a record checks whether it landed instead (see `Partition::find_landed`).
    fn message_ids(&self, records: &[Record]) -> Vec<Option<String>> {
        let chained = records.len() > 1;
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        records
            .iter()
            .map(|record| {
                let from_header = self.shared.dedup_header.as_deref().and_then(|name| {
                    record
                        .headers
                        .iter()
                        .find(|h| h.name.as_ref() == name.as_bytes())
                        .and_then(|h| std::str::from_utf8(&h.value).ok())
                        .filter(|v| {
                            !v.is_empty()
                                && v.len() <= 256
                                && v.bytes().all(|b| b.is_ascii_graphic())
                        })
                });
                match from_header {
                    Some(id) if seen.insert(id) => Some(id.to_string()),
                    _ if chained => Some(uuid::Uuid::new_v4().simple().to_string()),
                    _ => None,
                }
            })
            .collect()
    }

    /// Which of the unconfirmed sends (see `append`) landed, if one did: the message right
    /// after the tail it was conditional on is its payload. Returns that tail and the
    /// record's timestamp.
    async fn find_landed(
        &self,
        unconfirmed: &[(u64, Bytes, Micros)],
    ) -> Result<Option<(u64, Micros)>, BackendError> {
        for (base, payload, timestamp) in unconfirmed {
            match self.handle.get_raw_message(base + 1).await {
                Ok(message) if message.payload == *payload => {
                    return Ok(Some((*base, *timestamp)));
                }
                Ok(_) => {}
                Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => {}
                Err(error) => {
                    return Err(engine(
                        format!("checking whether a retried append to {} landed", self.at()),
                        error,
                    ));
                }
            }
        }
        Ok(None)
    }

    pub async fn append(&self, records: Vec<Record>) -> Result<AppendAck, BackendError> {
        if records.is_empty() {
            return Err(BackendError::Invalid(format!(
                "{}: an append needs at least one record",
                self.at()
            )));
        }
        let max_payload = self.shared.max_payload;
        for (i, record) in records.iter().enumerate() {
            let size = encoded_len(record);
            if size + HEADER_ROOM > max_payload {
                return Err(BackendError::Invalid(format!(
                    "{}: record {i} of the batch is {size} bytes framed; the NATS server's \
                     max_payload is {max_payload} bytes (raise `max_payload` in its configuration)",
                    self.at()
                )));
            }
        }
        let ids = self.message_ids(&records);
        let count = records.len() as u32;
        let mut last_error = None;
        let started = Instant::now();
        // Sends of a lone record without an id whose outcome is unknown (the acknowledgement
        // was lost): (the tail it was conditional on, its payload, its timestamp). At most
        // one of them can have landed, right after its tail; look before sending again.
        let mut unconfirmed: Vec<(u64, Bytes, Micros)> = Vec::new();
        // Whether an earlier send of this call may have landed: then JetStream calling this
        // send a duplicate means it found that send, not another publisher's.
        let mut maybe_sent = false;
        for attempt in 0..MAX_APPEND_ATTEMPTS {
            match self.find_landed(&unconfirmed).await {
                Ok(Some((base, timestamp))) => {
                    self.raise_watermark(base + 1);
                    return Ok(AppendAck {
                        partition: self.id,
                        base_offset: base,
                        count,
                        timestamp,
                        duplicate: false,
                    });
                }
                Ok(None) => {}
                Err(BackendError::Unavailable(error))
                    if started.elapsed() < self.shared.retry_for =>
                {
                    last_error = Some(error);
                    tokio::time::sleep(retry_delay(attempt, true)).await;
                    continue;
                }
                Err(error) => return Err(error),
            }
            let Sent {
                base,
                timestamp,
                generation,
                acks,
                sent,
                error: send_error,
                first_payload,
            } = match self.send(&records, &ids).await {
                Ok(sent) => sent,
                // Reading the tail went unanswered (a leader election): nothing was sent.
                Err(BackendError::Unavailable(error))
                    if started.elapsed() < self.shared.retry_for =>
                {
                    last_error = Some(error);
                    tokio::time::sleep(retry_delay(attempt, true)).await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let outcomes = acks.outcomes(sent, self.shared.request_timeout).await;
            match self.judge(base, &outcomes, send_error, records.len()) {
                Judged::Appended {
                    first_seq,
                    duplicate,
                } => {
                    self.raise_watermark(first_seq + u64::from(count) - 1);
                    if first_seq != base + 1 {
                        self.forget_tail(generation).await;
                    }
                    return Ok(AppendAck {
                        partition: self.id,
                        base_offset: first_seq - 1,
                        count,
                        timestamp,
                        duplicate: duplicate && !maybe_sent,
                    });
                }
                Judged::Retry { transient, error } => {
                    tracing::debug!(
                        stream = %self.stream,
                        partition = self.id,
                        attempt,
                        %error,
                        "append refused or lost; retrying"
                    );
                    self.forget_tail(generation).await;
                    last_error = Some(error);
                    maybe_sent |= transient;
                    if transient && ids[0].is_none() {
                        unconfirmed.push((base, first_payload, timestamp));
                    }
                    if transient && started.elapsed() > self.shared.retry_for {
                        break;
                    }
                    tokio::time::sleep(retry_delay(attempt, transient)).await;
                }
                Judged::Failed(error) => {
                    self.forget_tail(generation).await;
                    return Err(error);
                }
            }
        }
        Err(BackendError::Unavailable(format!(
            "{}: the append did not succeed in {:.1?}; last error: {}",
            self.at(),
            started.elapsed(),
            last_error.unwrap_or_else(|| "unknown".into())
        )))
    }

    /// Sends a batch under the writer lock, conditional on the tail this process knows;
    /// returns the base sequence, the timestamp, the tail's generation, the acknowledgement
    /// futures of what was sent, and the error that stopped sending, if any.
    async fn send(
        &self,
        records: &[Record],
        ids: &[Option<String>],
    ) -> Result<Sent<'_>, BackendError> {
        let mut writer = self.writer.lock().await;
        let tail = match writer.tail {
            Some(tail) => tail,
            None => {
                let tail = self.read_tail().await?;
                writer.tail = Some(tail);
                tail
            }
        };
        let timestamp = self.shared.clock.now_micros().max(tail.last_timestamp);
        let base = tail.last_seq;
        let acks = self.shared.acks.open(records.len());
        let deadline = tokio::time::Instant::now() + self.shared.request_timeout;
        let mut sent = 0;
        let mut send_error = None;
        let mut first_payload = Bytes::new();
        for (i, record) in records.iter().enumerate() {
            let mut headers = HeaderMap::new();
            if let Some(id) = &ids[i] {
                headers.insert(NATS_MESSAGE_ID, HeaderValue::from(id.clone()));
            }
            let (name, condition) = match (i, &ids[i.saturating_sub(1)]) {
                (0, _) => (NATS_EXPECTED_LAST_SEQUENCE, base.to_string()),
                (_, Some(previous)) => (NATS_EXPECTED_LAST_MESSAGE_ID, previous.clone()),
                // Every record of a batch of several has an id (see `message_ids`).
                (_, None) => (NATS_EXPECTED_LAST_SEQUENCE, (base + i as u64).to_string()),
            };
            headers.insert(name, HeaderValue::from(condition));
            let payload = encode_record(record, timestamp);
            if i == 0 {
                first_payload = payload.clone();
            }
            let publish = self.shared.client.publish_with_reply_and_headers(
                self.subject.clone(),
                acks.reply(i),
                headers,
                payload,
            );
            match tokio::time::timeout_at(deadline, publish).await {
                Ok(Ok(())) => sent += 1,
                Ok(Err(error)) => {
                    send_error = Some(not_sent(error));
                    break;
                }
                Err(_elapsed) => {
                    send_error = Some(PublishError::new(PublishErrorKind::TimedOut));
                    break;
                }
            }
        }
        writer.tail = Some(Tail {
            last_seq: base + sent as u64,
            last_timestamp: timestamp,
        });
        Ok(Sent {
            base,
            timestamp,
            generation: writer.generation,
            acks,
            sent,
            error: send_error,
            first_payload,
        })
    }

    async fn forget_tail(&self, generation: u64) {
        let mut writer = self.writer.lock().await;
        if writer.generation == generation {
            writer.tail = None;
            writer.generation += 1;
        }
    }

    fn judge(
        &self,
        base: u64,
        outcomes: &[Outcome],
        send_error: Option<PublishError>,
        count: usize,
    ) -> Judged {
        let acks: Vec<&Stored> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        if acks.len() == count && send_error.is_none() {
            let first = acks[0].sequence;
            let dense = acks
                .iter()
                .enumerate()
                .all(|(i, a)| a.sequence == first + i as u64);
            let duplicates = acks.iter().filter(|a| a.duplicate).count();
            // Dense sequences put the whole batch in place, in order, whichever of its
            // records JetStream already held: e.g. the rest of an append that was cut off
            // after its first records, sent again (by this call or by a retrying client).
            if dense {
                return Judged::Appended {
                    first_seq: first,
                    duplicate: duplicates == count,
                };
            }
            return Judged::Failed(BackendError::Engine(format!(
                "{}: {duplicates} of the batch's {count} records were already in the stream \
                 (JetStream dropped them as duplicates by Nats-Msg-Id), not in the batch's \
                 order right before the others, which were appended after base offset {base}; \
                 such a batch cannot be acknowledged as one base offset and count",
                self.at()
            )));
        }
        let first_error = outcomes
            .iter()
            .find_map(|o| o.as_ref().err())
            .or(send_error.as_ref());
        let Some(error) = first_error else {
            return Judged::Failed(BackendError::Engine(format!(
                "{}: the batch was not fully sent",
                self.at()
            )));
        };
        match error.kind() {
            PublishErrorKind::WrongLastSequence | PublishErrorKind::WrongLastMessageId
                if acks.is_empty() =>
            {
                return Judged::Retry {
                    transient: false,
                    error: error.to_string(),
                };
            }
            // Lost or unanswered, even after some records were stored: sent again with the
            // same ids, those come back as duplicates in place and the rest follows them.
            PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::StreamNotFound
            | PublishErrorKind::MaxAckPending => {
                return Judged::Retry {
                    transient: true,
                    error: error.to_string(),
                };
            }
            PublishErrorKind::MaxPayloadExceeded if acks.is_empty() => {
                return Judged::Failed(BackendError::Invalid(format!("{}: {error}", self.at())));
            }
            _ => {}
        }
        let what = if acks.is_empty() {
            format!("appending to {}", self.at())
        } else {
            let duplicates = acks.iter().filter(|a| a.duplicate).count();
            format!(
                "appending to {}: {} of the batch's {count} records were stored ({duplicates} \
                 of them already, found as duplicates by Nats-Msg-Id) before the rest failed \
                 (a batch is not atomic)",
                self.at(),
                acks.len()
            )
        };
        Judged::Failed(engine(what, ErrorText(describe(error))))
    }

    // ---- reads ---------------------------------------------------------------------------

    /// The cursor at `offset`, if one stands there. Cursors idle too long are dropped, and
    /// so are standing cursors far behind the tail (fetching costs less there).
    fn take_cursor(&self, offset: u64) -> Option<Cursor> {
        let high = *self.watermark.borrow();
        let mut cursors = lock(&self.cursors);
        let mut stale = Vec::new();
        cursors.retain(|c| {
            let keep = c.used.elapsed() < CURSOR_IDLE && !c.standing_far_behind(high);
            if !keep {
                stale.push(c.name.clone());
            }
            keep
        });
        self.delete_consumers(stale);
        let at = cursors.iter().position(|c| c.position() == offset)?;
        Some(cursors.swap_remove(at))
    }

    /// The standing cursor at `offset`, if one stands there.
    fn take_standing_cursor(&self, offset: u64) -> Option<Cursor> {
        let mut cursors = lock(&self.cursors);
        let at = cursors
            .iter()
            .position(|c| c.standing() && c.position() == offset)?;
        Some(cursors.swap_remove(at))
    }

    fn put_back(&self, mut cursor: Cursor) {
        cursor.used = Instant::now();
        let mut cursors = lock(&self.cursors);
        cursors.push(cursor);
        let mut evicted = Vec::new();
        while cursors.len() > MAX_CURSORS {
            let oldest = cursors
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.used)
                .map(|(i, _)| i)
                .unwrap_or(0);
            evicted.push(cursors.swap_remove(oldest).name);
        }
        self.delete_consumers(evicted);
    }

    fn delete_consumers(&self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        // A cursor can be put back while its waiter is dropped at shutdown, outside any
        // runtime: then the server removes the consumers after their inactive threshold.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let handle = self.handle.clone();
        runtime.spawn(async move {
            for name in names {
                let _ = handle.delete_consumer(&name).await;
            }
        });
    }

    /// Drops every cursor (their consumers are deleted in the background).
    pub fn drop_cursors(&self) -> Vec<String> {
        lock(&self.cursors).drain(..).map(|c| c.name).collect()
    }

    pub fn handle(&self) -> &Stream<()> {
        &self.handle
    }

    async fn open_cursor(&self, offset: u64) -> Result<Cursor, BackendError> {
        let place = CursorPlace {
            handle: &self.handle,
            watermark: &self.watermark,
            at: self.at(),
            max_payload: self.shared.max_payload,
            request_timeout: self.shared.request_timeout,
        };
        Cursor::open(place, offset).await
    }

    /// Reads from `offset` (see the trait's `read`).
    pub async fn read(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, BackendError> {
        if max_records == 0 || max_bytes == 0 {
            return Ok(Vec::new());
        }
        let mut cursor = match self.take_cursor(offset) {
            Some(cursor) => cursor,
            None if max_records == 1 => return self.read_one(offset).await,
            None => {
                // A cursor costs the server a consumer: open one only where there are
                // records to read.
                let high = *self.watermark.borrow();
                if offset >= high {
                    if offset == high && !self.tail_range_check_due() {
                        return Ok(Vec::new());
                    }
                    if self.at_end(offset).await? {
                        return Ok(Vec::new());
                    }
                }
                match self.open_cursor(offset).await {
                    Ok(cursor) => cursor,
                    // Creating a consumer needs the cluster's meta leader; while it is
                    // elected, the stream leader still answers single gets.
                    Err(BackendError::Unavailable(_)) => {
                        return self
                            .read_direct(offset, max_records.min(DIRECT_READ_MAX), max_bytes)
                            .await;
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        // A read hands out every record up to the high watermark known as it starts (up to
        // its limits): those are stored, and on their way to a standing cursor if not there.
        let wanted_end = (*self.watermark.borrow()).min(offset + max_records as u64);
        let mut fill = match cursor.broken.take() {
            Some(found) => found,
            None if cursor.standing() => cursor.take_delivered(max_records),
            None if cursor.buffer.is_empty() => cursor.fetch(max_records, max_bytes).await,
            None => Ok(Fill::Done),
        };
        let mut bytes: usize = cursor.buffer.iter().map(record_size).sum();
        let timer = tokio::time::sleep(self.shared.request_timeout);
        tokio::pin!(timer);
        while matches!(fill, Ok(Fill::Done))
            && cursor.standing()
            && cursor.buffered_end() < wanted_end
            && bytes < max_bytes
        {
            let had = cursor.buffer.len();
            fill = match cursor.wait_delivered(timer.as_mut(), max_records).await {
                Some(fill) => fill,
                // What arrived so far is an answer.
                None if had > 0 => break,
                None => {
                    self.delete_consumers(vec![cursor.name]);
                    if self.at_end(offset).await? {
                        // Nothing there after all (the partition was purged).
                        return Ok(Vec::new());
                    }
                    return Err(BackendError::Unavailable(format!(
                        "reading {}: the reader's server sent nothing within {:?}",
                        self.at(),
                        self.shared.request_timeout
                    )));
                }
            };
            bytes += cursor
                .buffer
                .iter()
                .skip(had)
                .map(record_size)
                .sum::<usize>();
        }
        match fill {
            Ok(Fill::Done) => {}
            Ok(Fill::Gap) | Err(_) if !cursor.buffer.is_empty() => {
                // Hand out what is contiguous; the next read starts afresh.
                self.delete_consumers(vec![cursor.name.clone()]);
                return Ok(take(&mut cursor.buffer, max_records, max_bytes));
            }
            Ok(Fill::Gap) => {
                self.delete_consumers(vec![cursor.name]);
                let (start, end, _) = self.bounds().await?;
                return Err(self.out_of_range(offset, start, end));
            }
            Err(error) => {
                self.delete_consumers(vec![cursor.name]);
                return Err(error);
            }
        }
        if cursor.buffer.is_empty() {
            // Nothing at the high watermark this process knows is the usual answer of a
            // reader at the tail; the range check is a stream info request, which readers
            // polling the tail would otherwise send on every empty read, so there it is made
            // at most once per TAIL_RANGE_CHECK (it only matters if retention removed the
            // offset meanwhile).
            let at_tail = offset == *self.watermark.borrow();
            if (!at_tail || self.tail_range_check_due())
                && let Err(error) = self.at_end(offset).await
            {
                self.delete_consumers(vec![cursor.name]);
                return Err(error);
            }
            self.put_back(cursor);
            return Ok(Vec::new());
        }
        let records = take(&mut cursor.buffer, max_records, max_bytes);
        self.put_back(cursor);
        Ok(records)
    }

    /// Whether an empty read at the tail should check the range now; if so, notes that it did.
    fn tail_range_check_due(&self) -> bool {
        let mut checked = lock(&self.tail_range_checked);
        let due = checked.is_none_or(|at| at.elapsed() >= TAIL_RANGE_CHECK);
        if due {
            *checked = Some(Instant::now());
        }
        due
    }

    /// Up to `max_records` records by single gets from the stream leader.
    async fn read_direct(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, BackendError> {
        let mut buffer = VecDeque::new();
        for next in offset..offset + max_records as u64 {
            match self.handle.get_raw_message(next + 1).await {
                Ok(message) => {
                    buffer.push_back(decode_record(message.payload, next).map_err(|e| {
                        BackendError::Corrupt(format!("{} offset {next}: {e}", self.at()))
                    })?)
                }
                Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(error) if buffer.is_empty() => {
                    return Err(engine(
                        format!("reading offset {next} of {}", self.at()),
                        error,
                    ));
                }
                Err(_) => break,
            }
        }
        if buffer.is_empty() {
            return self.read_one(offset).await;
        }
        Ok(take(&mut buffer, max_records, max_bytes))
    }

    /// One record by a direct request to the stream leader.
    async fn read_one(&self, offset: u64) -> Result<Vec<StoredRecord>, BackendError> {
        match self.handle.get_raw_message(offset + 1).await {
            Ok(message) => {
                let record = decode_record(message.payload, offset).map_err(|e| {
                    BackendError::Corrupt(format!("{} offset {offset}: {e}", self.at()))
                })?;
                Ok(vec![record])
            }
            Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => {
                let (start, end, _) = self.bounds().await?;
                if offset == end && offset >= start {
                    Ok(Vec::new())
                } else {
                    Err(self.out_of_range(offset, start, end))
                }
            }
            Err(error) => Err(engine(
                format!("reading offset {offset} of {}", self.at()),
                error,
            )),
        }
    }

    /// The timestamp of the record at `offset`; `None` if it is gone.
    async fn timestamp_at(&self, offset: u64) -> Result<Option<Micros>, BackendError> {
        match self.handle.get_raw_message(offset + 1).await {
            Ok(message) => record_timestamp(&message.payload)
                .map(Some)
                .map_err(|e| BackendError::Corrupt(format!("{} offset {offset}: {e}", self.at()))),
            Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(engine(
                format!("reading offset {offset} of {}", self.at()),
                error,
            )),
        }
    }

    /// The first offset whose record was appended at or after `timestamp`, by binary search
    /// over the records' timestamps (which never decrease along a partition).
    pub async fn offset_for_time(&self, timestamp: Micros) -> Result<u64, BackendError> {
        let (start, end, _) = self.bounds().await?;
        if start == end {
            return Ok(end);
        }
        // A record gone by the time it is read was older than anything left.
        let at_or_after = |ts: Option<Micros>| -> bool { ts.is_some_and(|ts| ts >= timestamp) };
        if at_or_after(self.timestamp_at(start).await?) {
            return Ok(start);
        }
        if !at_or_after(self.timestamp_at(end - 1).await?) {
            return Ok(end);
        }
        // Invariant: the record at `low` is before `timestamp`, the one at `high` is not.
        let (mut low, mut high) = (start, end - 1);
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if at_or_after(self.timestamp_at(middle).await?) {
                high = middle;
            } else {
                low = middle;
            }
        }
        Ok(high)
    }

    // ---- waits ---------------------------------------------------------------------------

    /// Waits until the high watermark is above `offset` or `timeout` passes; ends with
    /// `UnknownStream` as soon as this process deletes the stream, whatever it waits on.
    pub async fn wait_for_data(
        self: &Arc<Self>,
        offset: u64,
        timeout: Duration,
    ) -> Result<u64, BackendError> {
        let mut deleted = self.deleted.subscribe();
        if *deleted.borrow_and_update() {
            return Err(self.gone());
        }
        tokio::select! {
            high = self.wait_for_watermark(offset, timeout) => Ok(high),
            _ = deleted.wait_for(|d| *d) => Err(self.gone()),
        }
    }

    async fn wait_for_watermark(self: &Arc<Self>, offset: u64, timeout: Duration) -> u64 {
        // Subscribe before making sure the watcher runs: it only stops when nobody listens.
        let mut receiver = self.watermark.subscribe();
        let current = *receiver.borrow_and_update();
        if current > offset {
            return current;
        }
        if let Some(cursor) = self.take_standing_cursor(offset) {
            // The next record reaches this cursor: wait on it (or on an append of this
            // process, or the timeout). Put back however the wait ends, even dropped.
            let mut held = HeldCursor {
                partition: self,
                cursor: Some(cursor),
            };
            let timer = tokio::time::sleep(timeout);
            tokio::pin!(timer);
            if let Some(cursor) = held.cursor.as_mut() {
                tokio::select! {
                    arrived = cursor.wait_delivered(timer, usize::MAX) => {
                        if let Some(found @ (Ok(Fill::Gap) | Err(_))) = arrived {
                            // The next read reports it.
                            cursor.broken = Some(found);
                        }
                    }
                    _ = receiver.wait_for(|high| *high > offset) => {}
                }
            }
            drop(held);
            return *self.watermark.borrow();
        }
        self.ensure_watcher();
        match tokio::time::timeout(timeout, receiver.wait_for(|high| *high > offset)).await {
            Ok(Ok(high)) => *high,
            _ => *self.watermark.borrow(),
        }
    }

    fn ensure_watcher(self: &Arc<Self>) {
        let mut watcher = lock(&self.watcher);
        if watcher.as_ref().is_none_or(|task| task.is_finished()) {
            let partition = Arc::clone(self);
            *watcher = Some(tokio::spawn(async move { partition.watch().await }));
        }
    }

    /// Stops the watcher, if it runs.
    pub fn stop_watcher(&self) {
        if let Some(task) = lock(&self.watcher).take() {
            task.abort();
        }
    }

    async fn watch(self: Arc<Self>) {
        loop {
            match self.follow().await {
                Ok(()) => return,
                Err(BackendError::UnknownStream(_)) => {
                    // Deleted by another process: end the waits rather than retry forever.
                    self.deleted.send_replace(true);
                    let _ = self.no_waiters_stop();
                    return;
                }
                Err(error) => {
                    tracing::warn!(
                        stream = %self.stream,
                        partition = self.id,
                        %error,
                        "following the partition for waiters failed; retrying"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if self.no_waiters_stop() {
                        return;
                    }
                }
            }
        }
    }

    /// Clears the watcher slot if nobody waits; says whether it did (the watcher must end).
    fn no_waiters_stop(&self) -> bool {
        let mut watcher = lock(&self.watcher);
        if self.watermark.receiver_count() == 0 {
            *watcher = None;
            true
        } else {
            false
        }
    }

    /// Follows the stream from its current end, raising the watermark on every new message,
    /// until nobody has waited for a while.
    async fn follow(&self) -> Result<(), BackendError> {
        let (_, high, _) = self.bounds().await?;
        let consumer = self
            .handle
            .create_consumer(pull::OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: high + 1,
                },
                headers_only: true,
                ..Default::default()
            })
            .await
            .map_err(|e| engine(format!("following {}", self.at()), e))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| engine(format!("following {}", self.at()), e))?;
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        let mut idle = 0;
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(Ok(message)) => {
                        if let Ok(info) = message.info() {
                            self.raise_watermark(info.stream_sequence + info.pending);
                        }
                    }
                    Some(Err(error)) => {
                        return Err(BackendError::Engine(format!("following {}: {error}", self.at())));
                    }
                    None => {
                        return Err(BackendError::Engine(format!("following {}: the consumer ended", self.at())));
                    }
                },
                _ = ticks.tick() => {
                    if self.watermark.receiver_count() == 0 {
                        idle += 1;
                        if idle >= WATCHER_LINGER_TICKS && self.no_waiters_stop() {
                            return Ok(());
                        }
                    } else {
                        idle = 0;
                    }
                }
            }
        }
    }
}

/// How long to wait before trying an append again. After a refusal (another writer moved
/// the tail), a random pause that grows with the attempts, so that two writers racing for
/// one partition stop colliding; after a transient failure (no stream leader, a lost
/// acknowledgement), a longer one, up to about a second, while the cluster recovers.
fn retry_delay(attempt: u32, transient: bool) -> Duration {
    let ceiling_us: u64 = if transient {
        (50_000u64 << attempt.min(5)).min(1_000_000)
    } else {
        (250u64 << attempt.min(6)).min(16_000)
    };
    Duration::from_micros(rand::random_range(ceiling_us / 2..=ceiling_us))
}

/// What [`Partition::send`] sent: the tail it was conditional on, the batch's timestamp, the
/// tail's generation, the batch's acknowledgements to come, how many records were sent, the
/// error that stopped sending (if any) and the first record's payload.
struct Sent<'a> {
    base: u64,
    timestamp: Micros,
    generation: u64,
    acks: AckBatch<'a>,
    sent: usize,
    error: Option<PublishError>,
    first_payload: Bytes,
}

/// A publish that did not leave this process, as the error of a publish.
fn not_sent(error: async_nats::PublishError) -> PublishError {
    let kind = match error.kind() {
        async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
            PublishErrorKind::MaxPayloadExceeded
        }
        _ => PublishErrorKind::Other,
    };
    PublishError::with_source(kind, error)
}

enum Judged {
    /// `duplicate`: JetStream dropped every record as one it already had.
    Appended {
        first_seq: u64,
        duplicate: bool,
    },
    Retry {
        transient: bool,
        error: String,
    },
    Failed(BackendError),
}

/// An error known only by its message.
#[derive(Debug)]
struct ErrorText(String);

impl std::fmt::Display for ErrorText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ErrorText {}

/// Takes records from the front of `buffer`: at least one, at most `max_records`, stopping
/// once `max_bytes` are taken.
fn take(
    buffer: &mut VecDeque<StoredRecord>,
    max_records: usize,
    max_bytes: usize,
) -> Vec<StoredRecord> {
    let mut out = Vec::with_capacity(max_records.min(buffer.len()));
    let mut bytes = 0usize;
    while out.len() < max_records {
        let Some(next) = buffer.front() else { break };
        let size = record_size(next);
        if !out.is_empty() && bytes.saturating_add(size) > max_bytes {
            break;
        }
        bytes = bytes.saturating_add(size);
        if let Some(record) = buffer.pop_front() {
            out.push(record);
        }
        if bytes >= max_bytes {
            break;
        }
    }
    out
}

/// A record's size as reads count it against their `max_bytes`.
fn record_size(record: &StoredRecord) -> usize {
    content_len(&record.key, &record.value, &record.headers)
}

/// A cursor taken out by a waiter, put back when the wait ends or is dropped.
struct HeldCursor<'a> {
    partition: &'a Partition,
    cursor: Option<Cursor>,
}

impl Drop for HeldCursor<'_> {
    fn drop(&mut self) {
        if let Some(cursor) = self.cursor.take() {
            self.partition.put_back(cursor);
        }
    }
}
