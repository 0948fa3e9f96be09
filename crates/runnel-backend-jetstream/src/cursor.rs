//! Readers positioned in a partition. A cursor is an ephemeral pull consumer (no acks, in
//! memory) that starts at an offset and keeps one pull open on the server: a background
//! pump receives what the server pushes, decodes it into records and hands them to the
//! reader through a channel, raising the partition's high watermark as records arrive.
//!
//! Why a standing pull rather than a fetch per read: a reader at the tail reads a few
//! records each time it wakes, and a fetch costs a subscription, a request and an
//! end-of-batch status on each read, while a watcher consumer had to deliver every
//! message a second time to wake it. With the pull kept open, a record appended anywhere
//! reaches the reader once, and its arrival is what wakes the reader.
//!
//! What the pump holds is bounded (a semaphore the reader refills as it takes records, one
//! permit per started KiB), so a cursor nobody reads holds at most [`PUMP_BUDGET_BYTES`]
//! beyond the pull in flight — about a thousand small records, a few milliseconds of reading.
//! A pump whose cursor nobody used for [`PUMP_IDLE`] ends by itself, so an abandoned cursor
//! soon stops costing this process and the server anything.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use runnel_backend::{BackendError, StoredRecord};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::engine;
use crate::frame::decode_record;

/// A cursor idle this long is not reused (its consumer goes away on the server after
/// [`CURSOR_INACTIVE`]).
pub(crate) const CURSOR_IDLE: Duration = Duration::from_secs(20);
const CURSOR_INACTIVE: Duration = Duration::from_secs(30);
/// A pump ends when its cursor was not used for between one and two of these.
const PUMP_IDLE: Duration = Duration::from_secs(5);
/// Records asked for per pull: the pump asks again when half of them have arrived.
const PULL_BATCH: usize = 512;
/// Decoded records a pump holds for its reader before it stops taking more.
pub(crate) const PUMP_BUDGET_BYTES: usize = 1 << 20;
/// The semaphore counts KiB, so that a budget of bytes fits its permits.
const PERMIT_BYTES: usize = 1024;

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

/// What the pump hands over: a record with its stream sequence and the permits it holds.
type Pumped = Result<(u64, StoredRecord, u32), BackendError>;

/// What taking the pump's records found.
pub(crate) enum Fill {
    /// Took what had arrived (possibly nothing).
    Done,
    /// The next record is not the next sequence: records between were removed by
    /// retention while the cursor waited. What came before the gap is in the buffer.
    Gap,
    /// The pump ended without an error (it was idle); what it delivered is in the buffer.
    Ended,
}

/// Aborts the pump when the cursor goes.
struct PumpTask(JoinHandle<()>);

impl Drop for PumpTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A consumer positioned in the partition, with the records its pump delivered that no
/// read has handed out yet.
pub(crate) struct Cursor {
    pub name: String,
    /// Sequence of the next message the reader expects from the pump.
    next_seq: u64,
    pub buffer: VecDeque<StoredRecord>,
    feed: mpsc::UnboundedReceiver<Pumped>,
    room: Arc<Semaphore>,
    /// Bumped on every use, so the pump can tell a cursor nobody reads any more.
    uses: Arc<AtomicU64>,
    pump: PumpTask,
    pub used: Instant,
}

/// Where a cursor reads and how it reports: the partition's stream handle, its watermark
/// and its name in errors.
pub(crate) struct CursorPlace<'a> {
    pub handle: &'a Stream<()>,
    pub watermark: &'a Arc<watch::Sender<u64>>,
    pub at: String,
    /// The server's largest message (a pull must have room for one).
    pub max_payload: usize,
    /// Idle heartbeats come at half this; two missed ones end the pump with an error.
    pub request_timeout: Duration,
}

impl Cursor {
    /// Creates a consumer at `offset` and starts its pump. The consumer's pending count
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
            .max_bytes_per_batch(PUMP_BUDGET_BYTES.max(place.max_payload + 64 * 1024))
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
        let (feed_tx, feed) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(PUMP_BUDGET_BYTES / PERMIT_BYTES));
        let uses = Arc::new(AtomicU64::new(0));
        let pump = Pump {
            feed: feed_tx,
            room: room.clone(),
            uses: uses.clone(),
            watermark: place.watermark.clone(),
            at: place.at,
        };
        Ok(Cursor {
            name,
            next_seq: offset + 1,
            buffer: VecDeque::new(),
            feed,
            room,
            uses,
            pump: PumpTask(tokio::spawn(pump.run(messages))),
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

    /// Whether the pump still runs: then records appended after the cursor's position will
    /// arrive, and raise the watermark, without anyone asking.
    pub fn pumping(&self) -> bool {
        !self.pump.0.is_finished()
    }

    pub fn note_use(&mut self) {
        self.used = Instant::now();
        self.uses.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves what the pump delivered into the buffer until it holds `max_records`.
    pub fn take_delivered(&mut self, max_records: usize) -> Result<Fill, BackendError> {
        while self.buffer.len() < max_records {
            match self.feed.try_recv() {
                Ok(pumped) => {
                    if let Some(fill) = self.accept(pumped)? {
                        return Ok(fill);
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(Fill::Ended),
            }
        }
        Ok(Fill::Done)
    }

    /// Waits until the pump delivers something, or `deadline`; `None` if it passed.
    pub async fn wait_delivered(
        &mut self,
        deadline: tokio::time::Instant,
        max_records: usize,
    ) -> Option<Result<Fill, BackendError>> {
        let pumped = match tokio::time::timeout_at(deadline, self.feed.recv()).await {
            Err(_) => return None,
            Ok(None) => return Some(Ok(Fill::Ended)),
            Ok(Some(pumped)) => pumped,
        };
        Some(match self.accept(pumped) {
            Ok(None) => self.take_delivered(max_records),
            Ok(Some(fill)) => Ok(fill),
            Err(error) => Err(error),
        })
    }

    /// Puts one delivered record in the buffer; `Some(Gap)` if it is not the next one.
    fn accept(&mut self, pumped: Pumped) -> Result<Option<Fill>, BackendError> {
        let (seq, record, permits) = pumped?;
        self.room.add_permits(permits as usize);
        if seq != self.next_seq {
            return Ok(Some(Fill::Gap));
        }
        self.buffer.push_back(record);
        self.next_seq = seq + 1;
        Ok(None)
    }
}

/// The background half of a cursor.
struct Pump {
    feed: mpsc::UnboundedSender<Pumped>,
    room: Arc<Semaphore>,
    uses: Arc<AtomicU64>,
    watermark: Arc<watch::Sender<u64>>,
    at: String,
}

impl Pump {
    async fn run(self, mut messages: pull::Stream) {
        let mut idle_check = tokio::time::interval(PUMP_IDLE);
        idle_check.tick().await;
        let mut uses_seen = self.uses.load(Ordering::Relaxed);
        let idle = |uses_seen: &mut u64| {
            let uses = self.uses.load(Ordering::Relaxed);
            let idle = uses == *uses_seen;
            *uses_seen = uses;
            idle
        };
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = idle_check.tick() => {
                    if idle(&mut uses_seen) {
                        return;
                    }
                    continue;
                }
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    let _ = self.feed.send(Err(BackendError::Unavailable(format!(
                        "reading {}: {error}",
                        self.at
                    ))));
                    return;
                }
                None => {
                    let _ = self.feed.send(Err(BackendError::Unavailable(format!(
                        "reading {}: the reader's consumer ended",
                        self.at
                    ))));
                    return;
                }
            };
            let (seq, pending) = match message.info() {
                Ok(info) => (info.stream_sequence, info.pending),
                Err(error) => {
                    let _ = self.feed.send(Err(BackendError::Engine(format!(
                        "reading {}: {error}",
                        self.at
                    ))));
                    return;
                }
            };
            let payload = message.message.payload;
            let size = payload.len();
            let record = match decode_record(payload, seq - 1) {
                Ok(record) => record,
                Err(error) => {
                    let _ = self.feed.send(Err(BackendError::Corrupt(format!(
                        "{} offset {}: {error}",
                        self.at,
                        seq - 1
                    ))));
                    return;
                }
            };
            let budget = (PUMP_BUDGET_BYTES / PERMIT_BYTES) as u32;
            let permits = ((size / PERMIT_BYTES) as u32).clamp(1, budget);
            loop {
                tokio::select! {
                    acquired = self.room.acquire_many(permits) => match acquired {
                        Ok(acquired) => {
                            acquired.forget();
                            break;
                        }
                        Err(_) => return,
                    },
                    _ = idle_check.tick() => {
                        if idle(&mut uses_seen) {
                            return;
                        }
                    }
                }
            }
            if self.feed.send(Ok((seq, record, permits))).is_err() {
                return;
            }
            // After the record is in the channel, so that a reader woken by the watermark
            // finds it.
            raise(&self.watermark, seq + pending);
        }
    }
}
