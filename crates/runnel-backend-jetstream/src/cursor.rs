//! Readers positioned in a partition. A cursor is an ephemeral pull consumer (no acks, in
//! memory) that starts at an offset and keeps its pull open on the server: records are
//! pushed to it as they are appended, up to a batch ahead of the reader, and a read takes
//! what has arrived.
//!
//! Why a standing pull rather than a fetch per read: a reader at the tail reads a few
//! records each time it wakes, and a fetch costs a subscription, a request and an
//! end-of-batch status on each read, while a watcher consumer had to deliver every message a
//! second time to wake it. With the pull kept open, a record appended anywhere reaches the
//! reader once — and a reader waiting where its cursor stands (`Partition::wait_for_data`)
//! waits on the cursor itself, so that record is what wakes it.
//!
//! Whoever holds the cursor polls it; there is no task of its own. What the server pushed
//! ahead waits in the subscription (at most a batch: [`PULL_BATCH`] records or
//! [`PULL_BYTES`]); a cursor nobody polls asks for nothing more, and its consumer goes away
//! on the server once its last pull expired and [`CURSOR_INACTIVE`] passed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::consumer::pull::MessagesError;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::Stream;
use futures::{FutureExt, StreamExt};
use runnel_backend::{BackendError, StoredRecord};
use tokio::sync::watch;

use crate::error::engine;
use crate::frame::decode_record;

/// A cursor idle this long is not reused (its consumer goes away on the server after
/// [`CURSOR_INACTIVE`]).
pub(crate) const CURSOR_IDLE: Duration = Duration::from_secs(20);
const CURSOR_INACTIVE: Duration = Duration::from_secs(30);
/// Records asked for per pull; the next pull goes out when half of them have arrived.
const PULL_BATCH: usize = 2_000;
/// Bytes asked for per pull (raised to fit one message of the server's largest size).
const PULL_BYTES: usize = 8 << 20;

/// Raises a high watermark (never lowers it), waking whoever waits on it.
pub(crate) fn raise(watermark: &watch::Sender<u64>, high: u64) {
    watermark.send_if_modified(|current| {
        if high > *current {
            *current = high;
            true
        } else {
            false
        }
    });
}

/// What taking the cursor's records found.
pub(crate) enum Fill {
    /// Took what had arrived (possibly nothing).
    Done,
    /// The next record is not the next sequence: records between were removed by
    /// retention while the cursor waited. What came before the gap is in the buffer.
    Gap,
}

/// A consumer positioned in the partition, with the records that arrived and no read has
/// handed out yet.
pub(crate) struct Cursor {
    pub name: String,
    /// Sequence of the next message the cursor expects.
    next_seq: u64,
    pub buffer: VecDeque<StoredRecord>,
    messages: pull::Stream,
    /// What a wait found that a read must report: a gap, or the error that ended the pull.
    pub broken: Option<Result<Fill, BackendError>>,
    watermark: std::sync::Arc<watch::Sender<u64>>,
    at: String,
    pub used: Instant,
}

/// Where a cursor reads and how it reports: the partition's stream handle, its watermark
/// and its name in errors.
pub(crate) struct CursorPlace<'a> {
    pub handle: &'a Stream<()>,
    pub watermark: &'a std::sync::Arc<watch::Sender<u64>>,
    pub at: String,
    /// The server's largest message (a pull must have room for one).
    pub max_payload: usize,
    /// Idle heartbeats come at half this; two missed ones end the pull with an error.
    pub request_timeout: Duration,
}

impl Cursor {
    /// Creates a consumer at `offset` and opens its pull. The consumer's pending count
    /// tells where the partition ends, so the watermark is current from the start.
    pub async fn open(place: CursorPlace<'_>, offset: u64) -> Result<Cursor, BackendError> {
        let consumer: PullConsumer = place
            .handle
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: offset + 1,
                },
                ack_policy: AckPolicy::None,
                memory_storage: true,
                inactive_threshold: CURSOR_INACTIVE,
                ..Default::default()
            })
            .await
            .map_err(|e| engine(format!("opening a reader on {}", place.at), e))?;
        let info = consumer.cached_info();
        let name = info.name.clone();
        if info.num_pending > 0 {
            // Records from `offset` on exist; without any, `offset` may lie past the end.
            raise(place.watermark, offset + info.num_pending);
        }
        let heartbeat = (place.request_timeout / 2).max(Duration::from_millis(500));
        let messages = match consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .max_bytes_per_batch(PULL_BYTES.max(place.max_payload + 64 * 1024))
            .heartbeat(heartbeat)
            .expires((heartbeat * 4).max(Duration::from_secs(30)))
            .messages()
            .await
        {
            Ok(messages) => messages,
            Err(error) => {
                let _ = place.handle.delete_consumer(&name).await;
                return Err(engine(format!("starting a reader on {}", place.at), error));
            }
        };
        Ok(Cursor {
            name,
            next_seq: offset + 1,
            buffer: VecDeque::new(),
            messages,
            broken: None,
            watermark: place.watermark.clone(),
            at: place.at,
            used: Instant::now(),
        })
    }

    /// The offset the next read from this cursor starts at.
    pub fn position(&self) -> u64 {
        self.buffer
            .front()
            .map_or(self.next_seq.saturating_sub(1), |r| r.offset)
    }

    /// The offset after the last record in the buffer (or the position, when it is empty).
    pub fn buffered_end(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// Moves what has arrived into the buffer until it holds `max_records`, without
    /// waiting.
    pub fn take_delivered(&mut self, max_records: usize) -> Result<Fill, BackendError> {
        let mut high = 0;
        let mut fill = Ok(Fill::Done);
        while self.buffer.len() < max_records {
            let Some(next) = self.messages.next().now_or_never() else {
                break;
            };
            match self.accept(next) {
                Ok(None) => {}
                Ok(Some(seen)) => high = high.max(seen),
                Err(gap_or_error) => {
                    fill = gap_or_error;
                    break;
                }
            }
        }
        raise(&self.watermark, high);
        fill
    }

    /// Waits until a record arrives, or `timer` fires; `None` if it did. Then takes what
    /// else has arrived, up to `max_records` in the buffer. (One timer serves all the waits
    /// of a read.)
    pub async fn wait_delivered(
        &mut self,
        timer: std::pin::Pin<&mut tokio::time::Sleep>,
        max_records: usize,
    ) -> Option<Result<Fill, BackendError>> {
        let next = tokio::select! {
            next = self.messages.next() => next,
            _ = timer => return None,
        };
        Some(match self.accept(next) {
            Ok(seen) => {
                raise(&self.watermark, seen.unwrap_or(0));
                self.take_delivered(max_records)
            }
            Err(gap_or_error) => gap_or_error,
        })
    }

    /// Puts one delivered message in the buffer; returns the high watermark it shows.
    /// `Err(Ok(Gap))` when it is not the next record, `Err(Err(_))` when the pull failed.
    #[allow(clippy::result_large_err)]
    fn accept(
        &mut self,
        next: Option<Result<jetstream::Message, MessagesError>>,
    ) -> Result<Option<u64>, Result<Fill, BackendError>> {
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                return Err(Err(BackendError::Unavailable(format!(
                    "reading {}: {error}",
                    self.at
                ))));
            }
            None => {
                return Err(Err(BackendError::Unavailable(format!(
                    "reading {}: the reader's consumer ended",
                    self.at
                ))));
            }
        };
        let (seq, pending) = match message.info() {
            Ok(info) => (info.stream_sequence, info.pending),
            Err(error) => {
                return Err(Err(BackendError::Engine(format!(
                    "reading {}: {error}",
                    self.at
                ))));
            }
        };
        if seq != self.next_seq {
            return Err(Ok(Fill::Gap));
        }
        let record = decode_record(message.message.payload, seq - 1).map_err(|error| {
            Err(BackendError::Corrupt(format!(
                "{} offset {}: {error}",
                self.at,
                seq - 1
            )))
        })?;
        self.buffer.push_back(record);
        self.next_seq = seq + 1;
        Ok(Some(seq + pending))
    }
}
