//! In-flight declarations: what may be in flight on a partition, written before it matters,
//! so that a crash cannot forget it.
//!
//! Who holds a delivery decides what its loss means. A consumer whose handlers run in this
//! process (the handler loop, a library pull consumer) dies with what it holds, so after an
//! unclean stop each unprocessed event it may have held is a crash suspect. A relay (the HTTP
//! server's consumer) hands deliveries to clients in other processes: its own death says
//! nothing about any event, so nothing is blamed for it; only the attempts its clients were
//! handed are kept, so a redelivery is numbered as what it is and `max_deliver` still holds.
//!
//! - In-process: redeliveries are listed one by one with their attempt numbers before they
//!   are queued; first deliveries are covered by a range declared [`DECLARE_AHEAD`] offsets
//!   ahead (most deliveries need no write). The next owner reads the list: each unprocessed
//!   event on it is a crash suspect (unless the list was marked clean by a clean stop).
//! - Relay: a delivery is listed (offset and attempt) when [`crate::Consumer::next`] hands it
//!   to a client, and the hand-out is confirmed once that is durable; events only queued in
//!   the server were never held and keep their attempt count. The next owner takes the
//!   attempts, counts no crash and batches deliveries as usual.
//! - Blameless ([`crate::GroupBuilder::blame_no_crashes`], the server's own stages): handled
//!   in process, but written as a relay that hands nothing out, so its death blames nothing.
//!
//! In both, the range says which events may have been processed but not committed, so only
//! those are checked against the processed ids.
//!
//! Every write of the list goes through one writer task per worker, in order; writes that
//! queue up behind a slow one are merged (each is a full snapshot, so the last one wins).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use runnel_backend::{Backend, BackendError, Expect};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::Worker;
use crate::error::{Result, RuntimeError};
use crate::group::keys;

/// First deliveries are declared in flight this far ahead, renewed in the background when half
/// is used, so deliveries rarely wait for a write; after a crash of an in-process consumer at
/// most about this many innocent events are delivered one at a time.
const DECLARE_AHEAD: u64 = 256;

/// What may be in flight on one partition: first deliveries of any offset below
/// `declared_to`, and the listed deliveries (offset → attempt number).
#[derive(Debug, Default, Serialize, Deserialize)]
struct InFlightList {
    #[serde(default)]
    declared_to: u64,
    /// Written by a clean stop: nothing was in flight when the owner let go.
    #[serde(default)]
    clean: bool,
    /// Written by a relay: `deliveries` are what its clients were handed, and its death is
    /// no event's crash.
    #[serde(default)]
    relay: bool,
    deliveries: BTreeMap<u64, u32>,
}

/// Who waits for a write of the list.
pub(super) enum Waiter {
    /// The worker itself (a declaration it must see durable).
    Worker(oneshot::Sender<std::result::Result<(), String>>),
    /// A relay's hand-out ([`crate::Delivery::hand_out_recorded`]).
    HandOut(oneshot::Sender<bool>),
}

impl Waiter {
    fn answer(self, outcome: &std::result::Result<(), String>) {
        match self {
            Waiter::Worker(tx) => {
                let _ = tx.send(outcome.clone());
            }
            Waiter::HandOut(tx) => {
                let _ = tx.send(outcome.is_ok());
            }
        }
    }
}

/// One snapshot of the list to write, and who waits for it.
pub(super) struct ListWrite {
    value: Bytes,
    waiters: Vec<Waiter>,
}

/// Starts the task that writes a partition's in-flight list, in order, merging writes that
/// queue up behind a slow one. It ends when the worker drops its sender.
pub(super) fn spawn_writer(
    backend: Arc<dyn Backend>,
    key: String,
) -> mpsc::UnboundedSender<ListWrite> {
    let (tx, mut rx) = mpsc::unbounded_channel::<ListWrite>();
    tokio::spawn(async move {
        while let Some(mut write) = rx.recv().await {
            while let Ok(newer) = rx.try_recv() {
                let mut waiters = std::mem::take(&mut write.waiters);
                waiters.extend(newer.waiters);
                write = ListWrite {
                    value: newer.value,
                    waiters,
                };
            }
            let outcome = backend
                .kv_put(keys::INFLIGHT, &key, write.value, Expect::Any, None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            if let Err(error) = &outcome {
                tracing::warn!(%error, key, "could not write the in-flight list");
            }
            for waiter in write.waiters {
                waiter.answer(&outcome);
            }
        }
    });
    tx
}

fn write_failed(error: String) -> RuntimeError {
    RuntimeError::Backend(BackendError::Unavailable(format!(
        "writing the in-flight list: {error}"
    )))
}

impl Worker {
    /// Reads the in-flight list the previous owner left. An in-process owner that did not stop
    /// cleanly died with what it held: a crash is counted against every delivery on its list
    /// and first deliveries in its range are suspects. A relay's list only carries the
    /// attempts its clients were handed.
    pub(super) async fn load_in_flight(&mut self, start: u64) -> Result<()> {
        let backend = self.ctx.shared.backend.clone();
        let group = &self.ctx.group.name;
        let list_key = keys::partition_key(group, &self.ctx.stream, self.ctx.partition);
        let Some(entry) = backend.kv_get(keys::INFLIGHT, &list_key).await? else {
            return Ok(());
        };
        // An unreadable list is treated as covering everything: recheck, suspect nothing.
        let in_flight: InFlightList =
            serde_json::from_slice(&entry.value).unwrap_or(InFlightList {
                declared_to: u64::MAX,
                clean: true,
                relay: false,
                deliveries: BTreeMap::new(),
            });
        // Events below `declared_to` may have been processed: check their ids when read.
        self.recheck_below = in_flight.declared_to;
        // Keep that bound durable for whoever comes next.
        self.declared_to = in_flight.declared_to;
        if in_flight.relay {
            return self
                .take_relayed_attempts(start, in_flight.deliveries)
                .await;
        }
        if in_flight.clean {
            return Ok(());
        }
        // First deliveries below `declared_to` are judged as they are read again (`admit`).
        self.suspect_below = in_flight.declared_to;
        for (offset, attempt) in in_flight.deliveries {
            if offset < start {
                continue; // finished and committed after all
            }
            let mut history = self.histories.remove(&offset).unwrap_or_default();
            history.crashes += 1;
            history.attempts = history.attempts.max(attempt);
            self.store_history(offset, &history).await?;
            tracing::warn!(
                group = %self.ctx.group.name,
                stream = %self.ctx.stream,
                partition = self.ctx.partition,
                offset,
                crashes = history.crashes,
                "a delivery was in flight when the consumer died"
            );
            self.histories.insert(offset, history);
        }
        // Counted once: a crash of this owner must not count them again.
        let value = self.in_flight_value()?;
        self.write_in_flight(value).await
    }

    /// A relay's clients were handed these attempts: the next delivery of each is the one
    /// after (kept in its retry record, so that further restarts keep it too).
    async fn take_relayed_attempts(
        &mut self,
        start: u64,
        deliveries: BTreeMap<u64, u32>,
    ) -> Result<()> {
        for (offset, attempt) in deliveries {
            if offset < start {
                continue;
            }
            let mut history = self.histories.remove(&offset).unwrap_or_default();
            if attempt > history.attempts {
                history.attempts = attempt;
                self.store_history(offset, &history).await?;
            }
            self.histories.insert(offset, history);
        }
        let value = self.in_flight_value()?;
        self.write_in_flight(value).await
    }

    /// Records a batch as in flight before it is queued for the consumer. In-process:
    /// redeliveries and offsets past the declared range are written first; a relay writes
    /// only offsets past the range (its hand-outs are written when taken). Otherwise the
    /// range is extended in the background when half of it is used.
    pub(super) async fn declare(&mut self, batch: &[u64]) -> Result<()> {
        self.settle_declaring(false).await?;
        let mut needs_write = false;
        for offset in batch {
            if let Some(pending) = self.pending.get(offset) {
                let attempt = pending.attempt + 1;
                self.in_flight.insert(*offset, attempt);
                needs_write |= (attempt > 1 && !self.ctx.relay) || *offset >= self.declared_to;
            }
        }
        let highest = batch.iter().max().copied().unwrap_or(0);
        if needs_write {
            self.declared_to = self.durable_bound().max(highest + 1 + DECLARE_AHEAD);
            let value = self.in_flight_value()?;
            self.write_in_flight(value).await?;
            self.settle_declaring(true).await?;
        } else if self.declaring.is_none() && highest + DECLARE_AHEAD / 2 >= self.declared_to {
            let target = highest + 1 + DECLARE_AHEAD;
            let previous = std::mem::replace(&mut self.declared_to, target);
            let value = self.in_flight_value()?;
            self.declared_to = previous;
            let (tx, rx) = oneshot::channel();
            self.send_list(value, vec![Waiter::Worker(tx)])?;
            self.declaring = Some((target, rx));
        }
        Ok(())
    }

    /// A relay's client took the delivery at `offset` (attempt `attempt`): list it, and tell
    /// `recorded` once that is durable.
    pub(super) fn handed_out(
        &mut self,
        offset: u64,
        attempt: u32,
        recorded: oneshot::Sender<bool>,
    ) {
        self.held.insert(offset, attempt);
        let value = match self.in_flight_value() {
            Ok(value) => value,
            Err(error) => {
                tracing::warn!(%error, offset, "could not list a hand-out");
                let _ = recorded.send(false);
                return;
            }
        };
        if self
            .send_list(value, vec![Waiter::HandOut(recorded)])
            .is_err()
        {
            tracing::warn!(
                offset,
                "the in-flight writer is gone; a hand-out was not listed"
            );
        }
    }

    /// Forgets a delivery in flight (settled, expired, or never sent) and frees its place.
    pub(super) fn untrack(&mut self, offset: u64) {
        self.held.remove(&offset);
        if self.in_flight.remove(&offset).is_some() {
            let alone = self.isolating == Some(offset);
            if alone {
                self.isolating = None;
            }
            self.ctx.gate.release(1, alone);
        }
    }

    /// Takes the result of the background declaration when it is done (or, with `wait`,
    /// waits for it).
    pub(super) async fn settle_declaring(&mut self, wait: bool) -> Result<()> {
        let Some((target, rx)) = self.declaring.as_mut() else {
            return Ok(());
        };
        let target = *target;
        // `None`: the writer task ended without answering.
        let outcome = if wait {
            rx.await.ok()
        } else {
            match rx.try_recv() {
                Ok(outcome) => Some(outcome),
                Err(oneshot::error::TryRecvError::Empty) => return Ok(()),
                Err(oneshot::error::TryRecvError::Closed) => None,
            }
        };
        self.declaring = None;
        match outcome {
            Some(Ok(())) => {
                self.declared_to = self.declared_to.max(target);
                Ok(())
            }
            Some(Err(error)) => Err(write_failed(error)),
            None => Err(write_failed("the writer task ended".into())),
        }
    }

    /// Stores the partition's in-flight list (replacing the previous one), after every write
    /// queued before it.
    pub(super) async fn write_in_flight(&self, value: Bytes) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send_list(value, vec![Waiter::Worker(tx)])?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(write_failed(error)),
            Err(_) => Err(write_failed("the writer task ended".into())),
        }
    }

    fn send_list(&self, value: Bytes, waiters: Vec<Waiter>) -> Result<()> {
        self.list_writer
            .send(ListWrite { value, waiters })
            .map_err(|_| write_failed("the writer task ended".into()))
    }

    /// The highest range written or being written: a snapshot must never say less, or a
    /// write landing after a background extension would shrink the range.
    fn durable_bound(&self) -> u64 {
        match &self.declaring {
            Some((target, _)) => self.declared_to.max(*target),
            None => self.declared_to,
        }
    }

    /// The in-flight list as it stands.
    fn in_flight_value(&self) -> Result<Bytes> {
        self.in_flight_list(false)
    }

    /// The in-flight list, `clean` when the owner lets go with nothing it must blame.
    pub(super) fn in_flight_list(&self, clean: bool) -> Result<Bytes> {
        let deliveries = if self.ctx.relay {
            self.held.clone()
        } else {
            self.in_flight
                .iter()
                .filter(|(_, attempt)| **attempt > 1)
                .map(|(o, a)| (*o, *a))
                .collect()
        };
        let list = InFlightList {
            declared_to: self.durable_bound(),
            clean,
            relay: self.ctx.relay,
            deliveries,
        };
        let value =
            serde_json::to_vec(&list).map_err(|e| RuntimeError::Serialize(e.to_string()))?;
        Ok(value.into())
    }
}
