//! Readers positioned in a partition. A cursor is an ephemeral pull consumer (no acks, in
//! memory) that starts at an offset, in one of two modes:
//!
//! - **Fetching**, while it reads a backlog: a fetch per read, for what the read asks. The
//!   records come straight from the server into the reader's batch; this is the cheapest
//!   way through many records.
//! - **Standing**, once a fetch reached the tail: the pull stays open on the server, records
//!   are pushed as they are appended (up to a batch ahead of the reader), and a read takes
//!   what has arrived. A reader at the tail reads a few records each time it wakes, and a
//!   fetch would cost a subscription, a request and an end-of-batch status each time, while
//!   the watcher consumer delivered every message a second time to wake it; with the pull
//!   open a record reaches the reader once, and a reader waiting where a standing cursor
//!   stands (`Partition::wait_for_data`) waits on the cursor, so that record wakes it.
//!
//! A standing cursor that falls far behind (a burst the reader could not keep up with) is
//! replaced by a fetching one at its position: records pushed per pull cost the reader more
//! than fetched ones. Whoever holds the cursor polls it; there is no task of its own. What
//! the server pushed ahead waits in the subscription (at most a pull: [`PULL_BATCH`] records
//! or [`PULL_BYTES`]); a cursor nobody polls asks for nothing more, and its consumer goes
//! away on the server once its last pull expired and [`CURSOR_INACTIVE`] passed.

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
const PULL_BATCH: usize = 1_000;
/// A standing cursor this many records behind the high watermark is replaced by a fetching
/// one.
const STANDING_BEHIND_MAX: u64 = 8 * PULL_BATCH as u64;
/// Most records asked for in one fetch.
const FETCH_CAP: usize = 10_000;
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

/// How a cursor gets its records.
enum Mode {
    /// A fetch per read.
    Fetching,
    /// The pull stays open.
    Standing(Box<pull::Stream>),
}

/// A consumer positioned in the partition, with the records that arrived and no read has
/// handed out yet.
pub(crate) struct Cursor {
    pub name: String,
    /// Sequence of the next message the cursor expects.
    next_seq: u64,
    pub buffer: VecDeque<StoredRecord>,
    consumer: PullConsumer,
    mode: Mode,
    /// What a wait found that a read must report: a gap, or the error that ended the pull.
    pub broken: Option<Result<Fill, BackendError>>,
    watermark: std::sync::Arc<watch::Sender<u64>>,
    at: String,
    max_payload: usize,
    request_timeout: Duration,
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
    /// Creates a consumer at `offset`, fetching. The consumer's pending count tells where the
    /// partition ends, so the watermark is current from the start.
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
        Ok(Cursor {
            name,
            next_seq: offset + 1,
            buffer: VecDeque::new(),
            consumer,
            mode: Mode::Fetching,
            broken: None,
            watermark: place.watermark.clone(),
            at: place.at,
            max_payload: place.max_payload,
            request_timeout: place.request_timeout,
            used: Instant::now(),
        })
    }

    /// Whether the pull stays open (records arrive without asking).
    pub fn standing(&self) -> bool {
        matches!(self.mode, Mode::Standing(_))
    }

    /// Whether this cursor stands (its pull open) with nothing taken in, more than
    /// [`STANDING_BEHIND_MAX`] records behind `high`: records pushed per pull cost the
    /// reader more than fetched ones, so such a cursor is better replaced by a fetching one.
    /// (One with a gap or an error to report is replaced too; the new one finds it again.)
    pub fn standing_far_behind(&self, high: u64) -> bool {
        self.standing()
            && self.buffer.is_empty()
            && high.saturating_sub(self.position()) > STANDING_BEHIND_MAX
    }

    /// Opens the pull that stays open; stays fetching if the server refuses.
    async fn stand(&mut self) {
        let heartbeat = (self.request_timeout / 2).max(Duration::from_millis(500));
        let opened = self
            .consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .max_bytes_per_batch(PULL_BYTES.max(self.max_payload + 64 * 1024))
            .heartbeat(heartbeat)
            .expires((heartbeat * 4).max(Duration::from_secs(30)))
            .messages()
            .await;
        match opened {
            Ok(messages) => self.mode = Mode::Standing(Box::new(messages)),
            Err(error) => {
                tracing::debug!(reader = %self.at, %error, "could not open a standing pull; fetching")
            }
        }
    }

    /// Fetches what is there (up to `max_records`) into the buffer; stands once a fetch
    /// reaches the tail.
    pub async fn fetch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Fill, BackendError> {
        let mut fetch = self
            .consumer
            .fetch()
            .max_messages(max_records.min(FETCH_CAP));
        if max_bytes < usize::MAX / 2 {
            // The server refuses a fetch whose first message is larger than max_bytes; ask
            // for room for one whole message and cut to max_bytes here.
            fetch = fetch.max_bytes(max_bytes.max(self.max_payload + 64 * 1024));
        }
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        // A fetch is answered by the server that holds the consumer; if it died, nothing
        // ends the batch: bound it.
        let timeout = self.request_timeout;
        let unanswered = |at: &str| {
            BackendError::Unavailable(format!(
                "reading {at}: the reader's server did not answer within {timeout:?}"
            ))
        };
        let mut batch = match tokio::time::timeout_at(deadline, fetch.messages()).await {
            Err(_) => return Err(unanswered(&self.at)),
            Ok(batch) => batch.map_err(|e| engine(format!("reading {}", self.at), e))?,
        };
        let mut high = 0;
        let mut at_tail = true;
        let fill = loop {
            let message = match tokio::time::timeout_at(deadline, batch.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => break Ok(Fill::Done),
                Err(_) => break Err(unanswered(&self.at)),
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    break Err(BackendError::Engine(format!(
                        "reading {}: {error}",
                        self.at
                    )));
                }
            };
            match self.accept(message) {
                Ok((seen, pending)) => {
                    high = seen;
                    at_tail = pending == 0;
                }
                Err(gap_or_error) => break gap_or_error,
            }
        };
        raise(&self.watermark, high);
        if matches!(fill, Ok(Fill::Done)) && at_tail {
            self.stand().await;
        }
        fill
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

    /// Moves what has arrived at a standing cursor into the buffer until it holds
    /// `max_records`, without waiting. (A fetching cursor has nothing arriving.)
    pub fn take_delivered(&mut self, max_records: usize) -> Result<Fill, BackendError> {
        let mut high = 0;
        let mut fill = Ok(Fill::Done);
        while self.buffer.len() < max_records {
            let Mode::Standing(messages) = &mut self.mode else {
                break;
            };
            let Some(next) = messages.next().now_or_never() else {
                break;
            };
            match self.pulled(next).and_then(|message| self.accept(message)) {
                Ok((seen, _)) => high = seen,
                Err(gap_or_error) => {
                    fill = gap_or_error;
                    break;
                }
            }
        }
        raise(&self.watermark, high);
        fill
    }

    /// Waits until a record arrives at a standing cursor, or `timer` fires; `None` if it
    /// did (at once for a fetching cursor). Then takes what else has arrived, up to
    /// `max_records` in the buffer. (One timer serves all the waits of a read.)
    pub async fn wait_delivered(
        &mut self,
        timer: std::pin::Pin<&mut tokio::time::Sleep>,
        max_records: usize,
    ) -> Option<Result<Fill, BackendError>> {
        let Mode::Standing(messages) = &mut self.mode else {
            return None;
        };
        let next = tokio::select! {
            next = messages.next() => next,
            _ = timer => return None,
        };
        Some(
            match self.pulled(next).and_then(|message| self.accept(message)) {
                Ok((seen, _)) => {
                    raise(&self.watermark, seen);
                    self.take_delivered(max_records)
                }
                Err(gap_or_error) => gap_or_error,
            },
        )
    }

    /// What the standing pull yielded, as a message or the error that ends it.
    #[allow(clippy::result_large_err)]
    fn pulled(
        &self,
        next: Option<Result<jetstream::Message, MessagesError>>,
    ) -> Result<jetstream::Message, Result<Fill, BackendError>> {
        match next {
            Some(Ok(message)) => Ok(message),
            Some(Err(error)) => Err(Err(BackendError::Unavailable(format!(
                "reading {}: {error}",
                self.at
            )))),
            None => Err(Err(BackendError::Unavailable(format!(
                "reading {}: the reader's consumer ended",
                self.at
            )))),
        }
    }

    /// Puts one delivered message in the buffer; returns the high watermark it shows and
    /// the consumer's pending count. `Err(Ok(Gap))` when it is not the next record,
    /// `Err(Err(_))` when it cannot be read.
    #[allow(clippy::result_large_err)]
    fn accept(
        &mut self,
        message: jetstream::Message,
    ) -> Result<(u64, u64), Result<Fill, BackendError>> {
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
            // Records between were removed (retention) while this cursor waited.
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
        Ok((seq + pending, pending))
    }
}
