//! What a handler receives, and how its outcome goes back to the partition worker.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use runnel_backend::{Partition, StreamName};
use runnel_clock::Micros;
use runnel_envelope::Event;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// How a failure should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureClass {
    /// A blip (a lost connection, a lock timeout): retry at once.
    Transient,
    /// A dependency is unhealthy (HTTP 503, rate limited): retry with backoff.
    Service,
    /// Retrying cannot help (invalid data, a bug): dead-letter at once.
    Permanent,
}

impl FailureClass {
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureClass::Transient => "transient",
            FailureClass::Service => "service",
            FailureClass::Permanent => "permanent",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A handler's failure: its class decides what happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub class: FailureClass,
    pub reason: String,
}

impl HandlerError {
    pub fn transient(reason: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Transient,
            reason: reason.into(),
        }
    }
    pub fn service(reason: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Service,
            reason: reason.into(),
        }
    }
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Permanent,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failure: {}", self.class, self.reason)
    }
}

impl std::error::Error for HandlerError {}

/// A message from a consumer back to the worker that delivered an event.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A pull consumer handed the delivery out: its `ack_wait` runs from `at` (µs since the
    /// epoch, on the runtime's clock).
    Taken {
        at: Micros,
    },
    Done,
    Failed(HandlerError),
    /// The worker's own note: the processed id of a done event is durable.
    Recorded,
}

#[derive(Debug)]
pub(crate) struct Settlement {
    pub offset: u64,
    pub attempt: u32,
    pub outcome: Outcome,
    /// For [`Delivery::ack_recorded`]: told whether the ack will keep the event from being
    /// handed out again.
    pub recorded: Option<oneshot::Sender<bool>>,
}

/// One delivery of one event to one consumer of a group. Settle it with [`Delivery::ack`] or
/// [`Delivery::nack`]; one left unsettled is delivered again after `ack_wait`.
#[derive(Debug)]
pub struct Delivery {
    pub event: Arc<Event>,
    pub stream: StreamName,
    pub partition: Partition,
    pub offset: u64,
    /// 1 on the first delivery, then 2, 3, …
    pub attempt: u32,
    /// Delivered again from the group's dead-letter queue (a replay).
    pub from_dlq: bool,
    /// When it is delivered again unless settled, on the monotonic clock: `ack_wait` after it
    /// was handed out. For waiting in real time (the HTTP receipts lapse by it); under the
    /// system clock it agrees with `ack_expires_at`, which is the one the runtime judges by.
    pub ack_deadline: tokio::time::Instant,
    /// When it is delivered again unless settled, on the runtime's clock (µs since the epoch):
    /// `ack_wait` after it was handed out. A manual clock moved past it expires the delivery.
    pub ack_expires_at: Micros,
    pub(crate) settle: mpsc::UnboundedSender<Settlement>,
    /// A relay's hand-out being listed (see [`Delivery::hand_out_recorded`]).
    pub(crate) hand_out: Option<oneshot::Receiver<bool>>,
}

/// When a delivery handed out at `now` (the runtime's clock) is past its `ack_wait`.
pub(crate) fn ack_expiry(now: Micros, ack_wait: Duration) -> Micros {
    now.saturating_add(u64::try_from(ack_wait.as_micros()).unwrap_or(Micros::MAX))
}

impl Delivery {
    /// Whether the worker that made this delivery still runs, so that settling it counts.
    /// False once its partition has moved to another instance or it was fenced: the event is
    /// (or will be) delivered again there, and this delivery is as good as lapsed.
    pub fn is_current(&self) -> bool {
        !self.settle.is_closed()
    }

    /// Resolves once this hand-out is durable, for a consumer started with
    /// [`crate::GroupBuilder::relay`] (at once for others): a restart after it delivers the
    /// event as the next attempt. `false` when it could not be listed (the store failed, or the
    /// delivery was settled or superseded before it was taken); the delivery is still valid,
    /// but a crash before it settles may hand it out again under the same attempt number.
    pub async fn hand_out_recorded(&mut self) -> bool {
        match self.hand_out.take() {
            Some(rx) => rx.await.unwrap_or(false),
            None => true,
        }
    }

    /// The event was processed.
    pub fn ack(self) {
        let _ = self.settle.send(Settlement {
            offset: self.offset,
            attempt: self.attempt,
            outcome: Outcome::Done,
            recorded: None,
        });
    }

    /// The event was processed; resolves when the acknowledgement is as durable as the group
    /// keeps it. With `processed_ids`, once the event's id is recorded, so that a delivery of
    /// it after a crash is skipped: `true` then means it will not be handed out again. Without,
    /// at once (the committed offset follows later; a crash before it redelivers). `false`
    /// when the id could not be recorded, or this delivery was superseded by a redelivery.
    pub async fn ack_recorded(self) -> bool {
        let (tx, rx) = oneshot::channel();
        let sent = self.settle.send(Settlement {
            offset: self.offset,
            attempt: self.attempt,
            outcome: Outcome::Done,
            recorded: Some(tx),
        });
        sent.is_ok() && rx.await.unwrap_or(false)
    }

    /// Processing failed; `error.class` decides whether and when it is retried.
    pub fn nack(self, error: HandlerError) {
        let _ = self.settle.send(Settlement {
            offset: self.offset,
            attempt: self.attempt,
            outcome: Outcome::Failed(error),
            recorded: None,
        });
    }
}
