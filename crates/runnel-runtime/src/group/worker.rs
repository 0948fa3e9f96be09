//! The partition worker: the single owner of one partition's progress for one group.
//!
//! It reads records from the committed offset, skips those the group's filter does not match,
//! hands events out with key-ordered concurrency (one event per partition key in flight,
//! different keys at once), takes back acks and nacks, and commits the lowest offset not yet
//! done. Failures are settled by class: `transient` is retried at once (a few times),
//! `service` after a jittered backoff, `permanent` (and anything past `max_deliver`) is
//! dead-lettered. While an event waits for its retry, later events of its key wait behind it.
//!
//! What must survive a crash is written before it matters:
//! - a scheduled retry (attempts, due time, failure history) before the event is set aside;
//! - what is in flight, before it is handed out: redeliveries with their attempt numbers, and
//!   first deliveries as a range declared a little ahead (so most deliveries need no write).
//!   After a crash those are the suspects: each unprocessed one gets a crash counted and is
//!   delivered alone (so an innocent neighbour is never blamed), and one that has crashed the
//!   process `max_crashes` times is quarantined to the dead-letter queue as `crash_loop`.
//!   The same declared range says which events may have been processed but not committed, so
//!   only those are checked against the processed ids when the partition changes hands (after
//!   a clean stop too, but then nobody is blamed for a crash).
//!
//! This file is the worker's loop and an event's way through it (read, admit, deliver,
//! settle, retry or finish, commit). Each of its parts has a file of its own:
//! - [`gate`]: the delivery gate that lets a crash suspect run alone in its instance;
//! - [`history`]: retry records, the durable failure history of an event;
//! - [`in_flight`]: what may be in flight, declared before it is handed out;
//! - [`dead_letter`]: giving an event up to the dead-letter queue;
//! - [`key_queue`]: the line each partition key's events wait in;
//! - [`deadlines`]: due retries and `ack_wait`, on the injected clock.

mod dead_letter;
mod deadlines;
mod gate;
mod history;
mod in_flight;
mod key_queue;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use runnel_backend::{
    BackendError, Expect, Partition, ReadFrom, Revision, StoredRecord, StreamName,
};
use runnel_clock::Micros;
use runnel_envelope::Event;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::config::GroupConfig;
use super::delivery::{Delivery, FailureClass, Outcome, Settlement, ack_expiry};
use super::dlq::{self, DLQ_ENTRY_HEADER};
use super::keys;
use super::member::AckClock;
use super::stats::GroupStats;
use crate::error::Result;
use crate::producer::{ID_HEADER, TYPE_HEADER};
use crate::runtime::{Runnel, Shared};
use crate::schemas::SchemaRejection;
use dead_letter::Rejected;
use deadlines::TIMER_EVERY;
pub(crate) use gate::DeliveryGate;
pub(crate) use history::RetryRecord;
use key_queue::KeyLine;

const READ_BATCH: usize = 512;
const COMMIT_EVERY: Duration = Duration::from_millis(100);

pub(crate) struct WorkerCtx {
    pub gate: Arc<DeliveryGate>,
    pub shared: Arc<Shared>,
    pub group: Arc<GroupConfig>,
    pub stats: Arc<GroupStats>,
    pub stream: StreamName,
    pub partition: Partition,
    pub deliveries: mpsc::Sender<Delivery>,
    pub stop: watch::Receiver<bool>,
    pub ack_clock: AckClock,
    /// The consumer relays deliveries to clients in other processes (see [`in_flight`]).
    pub relay: bool,
}

/// Why a worker ended.
#[derive(Debug)]
pub(crate) enum WorkerExit {
    Stopped,
    /// Another instance committed in between: this one no longer owns the partition.
    Fenced,
    /// The consumer side went away.
    ConsumerGone,
}

enum State {
    Queued,
    InFlight {
        /// When its `ack_wait` is over (µs since the epoch, on the runtime's clock); `None`
        /// while a pull consumer has not taken it out of its channel yet.
        deadline: Option<Micros>,
    },
    Waiting {
        due: Micros,
    },
    /// Done; its processed id is being written.
    Recording,
}

struct PendingEvent {
    event: Arc<Event>,
    /// The record value exactly as stored, for the dead-letter queue.
    raw: Bytes,
    /// The partition key's hash under `ordering = key`: events with equal hashes are kept in
    /// one line (a collision of two keys only orders them together).
    key: Option<u64>,
    /// The next pending event of the same key, in offset order.
    next_of_key: Option<u64>,
    attempt: u32,
    history: RetryRecord,
    /// A retry record exists in the store and must be removed when the event is done.
    stored_history: bool,
    state: State,
    /// The dead-letter entry this replayed event came from.
    replay_of: Option<String>,
}

struct Worker {
    ctx: WorkerCtx,
    runnel: Runnel,
    /// This partition is the group's replay stream: no filter, entries leave the DLQ.
    replay: bool,
    settle_tx: mpsc::UnboundedSender<Settlement>,
    next_read: u64,
    caught_up: bool,
    committed: u64,
    commit_revision: Option<Revision>,
    /// Offsets below this were possibly delivered before this worker started.
    recheck_below: u64,
    /// Failure histories loaded at start, taken as their events are read again.
    histories: HashMap<u64, RetryRecord>,
    pending: BTreeMap<u64, PendingEvent>,
    /// Per partition key hash, the line of its pending events (ordering = key); the line is
    /// linked through `PendingEvent::next_of_key`.
    key_lines: HashMap<u64, KeyLine>,
    /// Seeds the key hash, so that keys cannot be chosen to collide.
    key_seed: u64,
    ready: VecDeque<u64>,
    /// Events waiting for a retry, by due time.
    waiting: std::collections::BTreeSet<(Micros, u64)>,
    in_flight: BTreeMap<u64, u32>,
    /// A relay's deliveries its clients took (offset → attempt), listed durably.
    held: BTreeMap<u64, u32>,
    /// Writes the in-flight list, in order.
    list_writer: mpsc::UnboundedSender<in_flight::ListWrite>,
    /// First deliveries of offsets below this are covered by the stored in-flight list.
    declared_to: u64,
    /// A background write extending `declared_to` to its target.
    declaring: Option<(
        u64,
        tokio::sync::oneshot::Receiver<std::result::Result<(), String>>,
    )>,
    /// Unprocessed events below this were possibly in flight when the last owner died.
    suspect_below: u64,
    /// A suspect of a crash is in flight: nothing else is delivered until it settles.
    isolating: Option<u64>,
    /// Room in the deliveries channel the channel gave this worker, used by the next
    /// delivery.
    room: Option<mpsc::OwnedPermit<Delivery>>,
    rng: rand::rngs::StdRng,
}

pub(crate) async fn run(ctx: WorkerCtx) -> Result<WorkerExit> {
    let (settle_tx, settle_rx) = mpsc::unbounded_channel();
    let shared = ctx.shared.clone();
    let backend = &shared.backend;
    let group = ctx.group.name.clone();
    let committed = backend
        .committed_offset(&group, &ctx.stream, ctx.partition)
        .await?;
    let info = backend.partition_info(&ctx.stream, ctx.partition).await?;
    let (start, commit_revision) = match committed {
        Some(c) => (c.offset.max(info.start_offset), Some(c.revision)),
        None => (
            shared
                .uncommitted_start(&shared.start_point(&ctx.group).await?, &ctx.stream, &info)
                .await?,
            None,
        ),
    };
    let replay = dlq::replay_stream(&group).is_ok_and(|s| s == ctx.stream);
    let list_writer = in_flight::spawn_writer(
        backend.clone(),
        keys::partition_key(&group, &ctx.stream, ctx.partition),
    );
    let mut worker = Worker {
        runnel: Runnel {
            shared: shared.clone(),
        },
        replay,
        settle_tx,
        next_read: start,
        caught_up: false,
        committed: start,
        commit_revision,
        recheck_below: 0,
        histories: HashMap::new(),
        pending: BTreeMap::new(),
        key_lines: HashMap::new(),
        key_seed: rand::random(),
        ready: VecDeque::new(),
        waiting: std::collections::BTreeSet::new(),
        in_flight: BTreeMap::new(),
        held: BTreeMap::new(),
        list_writer,
        declared_to: 0,
        declaring: None,
        suspect_below: 0,
        isolating: None,
        room: None,
        rng: rand::rngs::StdRng::from_os_rng(),
        ctx,
    };
    worker.load_retry_records().await?;
    worker.load_in_flight(start).await?;
    worker.run(settle_rx).await
}

impl Worker {
    fn now(&self) -> Micros {
        self.ctx.shared.cfg.clock.now_micros()
    }

    async fn run(
        &mut self,
        mut settle_rx: mpsc::UnboundedReceiver<Settlement>,
    ) -> Result<WorkerExit> {
        let mut commit_tick = tokio::time::interval(COMMIT_EVERY);
        let mut timer_tick = tokio::time::interval(TIMER_EVERY);
        let mut stop = self.ctx.stop.clone();
        let exit = loop {
            if *stop.borrow() {
                break WorkerExit::Stopped;
            }
            let room = self
                .ctx
                .group
                .max_ack_pending
                .saturating_sub(self.pending.len());
            if room > 0 && !self.caught_up {
                self.read_more(room).await?;
            }
            if let Err(exit) = self.deliver_ready().await? {
                break exit;
            }
            let waiting_for_data = room > 0 && self.caught_up;
            let backend = self.ctx.shared.backend.clone();
            let deliveries = self.ctx.deliveries.clone();
            let can_deliver = !self.ready.is_empty() && self.isolating.is_none();
            tokio::select! {
                settlement = settle_rx.recv() => {
                    // `settle_tx` lives in `self`, so the channel never closes here.
                    if let Some(settlement) = settlement {
                        self.settle(settlement).await?;
                        while let Ok(more) = settle_rx.try_recv() {
                            self.settle(more).await?;
                        }
                    }
                }
                permit = deliveries.reserve_owned(), if can_deliver => {
                    // Room again: the loop delivers into this very room (after recording
                    // the deliveries). Dropping the permit here and asking for room again
                    // would hand it to the next waiting worker, which would do the same:
                    // with several partitions waiting on a full channel the room went
                    // round them for ever and nothing was delivered.
                    match permit {
                        Ok(permit) => self.room = Some(permit),
                        Err(_) => break WorkerExit::ConsumerGone,
                    }
                }
                high = backend.wait_for_data(
                    &self.ctx.stream,
                    self.ctx.partition,
                    self.next_read,
                    Duration::from_millis(500),
                ), if waiting_for_data => {
                    if high? > self.next_read {
                        self.caught_up = false;
                    }
                }
                _ = commit_tick.tick() => {
                    if !self.commit().await? {
                        break WorkerExit::Fenced;
                    }
                }
                _ = timer_tick.tick() => {
                    self.release_due();
                    self.expire_unacknowledged().await?;
                }
                _ = stop.changed() => {}
            }
        };
        if matches!(exit, WorkerExit::Stopped | WorkerExit::ConsumerGone) {
            // Hand over cleanly: settle what already came back, commit whatever is done, and
            // say nothing is in flight, so the next owner suspects nothing.
            while let Ok(settlement) = settle_rx.try_recv() {
                self.settle(settlement).await?;
            }
            // Processed ids still being written: wait for them (briefly), so what was done is
            // committed.
            let deadline = Instant::now() + Duration::from_secs(5);
            while self
                .pending
                .values()
                .any(|p| matches!(p.state, State::Recording))
            {
                match tokio::time::timeout_at(deadline, settle_rx.recv()).await {
                    Ok(Some(settlement)) => self.settle(settlement).await?,
                    _ => break,
                }
            }
            self.commit().await?;
            self.settle_declaring(true).await?;
            // A clean stop is not a crash: whatever is still unsettled is simply delivered
            // again, without counting a crash against it (the range still says what to
            // recheck against the processed ids).
            let value = self.in_flight_list(true)?;
            self.write_in_flight(value).await?;
        }
        Ok(exit)
    }

    async fn read_more(&mut self, room: usize) -> Result<()> {
        let records = match self
            .ctx
            .shared
            .backend
            .read(
                &self.ctx.stream,
                self.ctx.partition,
                ReadFrom::Offset(self.next_read),
                room.min(READ_BATCH),
                16 << 20,
            )
            .await
        {
            Ok(records) => records,
            Err(BackendError::OffsetOutOfRange { start, .. }) if start > self.next_read => {
                tracing::warn!(
                    group = %self.ctx.group.name,
                    stream = %self.ctx.stream,
                    partition = self.ctx.partition,
                    from = self.next_read,
                    to = start,
                    "events were removed by retention before this group read them; skipping to the start"
                );
                self.next_read = start;
                if self.pending.is_empty() {
                    self.committed = start;
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if records.is_empty() {
            self.caught_up = true;
            return Ok(());
        }
        for record in records {
            self.next_read = record.offset + 1;
            self.admit(record).await?;
        }
        Ok(())
    }

    /// Takes a record in: skipped when the filter does not match or it was processed before,
    /// quarantined when it cannot be decoded or keeps crashing the consumer, otherwise
    /// queued behind its key (or set aside until its retry is due).
    async fn admit(&mut self, record: StoredRecord) -> Result<()> {
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|h| h.name.as_ref() == name.as_bytes())
                .and_then(|h| std::str::from_utf8(&h.value).ok())
        };
        let replay_of = if self.replay {
            header(DLQ_ENTRY_HEADER).map(str::to_string)
        } else {
            None
        };
        let type_header = header(TYPE_HEADER);
        if !self.replay && type_header.is_some_and(|t| !self.ctx.group.filter.matches(t)) {
            return Ok(());
        }
        let history = self.histories.remove(&record.offset);
        let event = match Event::decode_binary_shared(&record.value) {
            Ok(event) => event,
            Err(error) => {
                self.ctx.stats.record_undecodable();
                let rejected = Rejected {
                    event_id: header(ID_HEADER).unwrap_or_default().to_string(),
                    event_type: type_header.unwrap_or_default().to_string(),
                    reason: format!("undecodable: {error}"),
                };
                return self
                    .quarantine_record(&record, rejected, replay_of, history.is_some())
                    .await;
            }
        };
        if !self.replay && !self.ctx.group.filter.matches(event.event_type().as_str()) {
            return Ok(());
        }
        if self.ctx.group.processed_ids && record.offset < self.recheck_below && !self.replay {
            let key = keys::processed_key(
                &self.ctx.group.name,
                event.source().as_str(),
                event.id().as_str(),
            );
            let processed = self
                .ctx
                .shared
                .backend
                .kv_get(keys::PROCESSED, &key)
                .await?
                .is_some();
            if processed {
                self.ctx.stats.record_skipped_duplicate();
                tracing::debug!(
                    id = event.id().as_str(),
                    offset = record.offset,
                    "already processed; skipped"
                );
                if history.is_some() {
                    self.forget_history(record.offset).await?;
                }
                return Ok(());
            }
        }
        let event = match self
            .ctx
            .shared
            .schemas
            .check_consume(event, self.ctx.group.schema_version)
            .await?
        {
            Ok(event) => event,
            Err(SchemaRejection(reason)) => {
                let rejected = Rejected {
                    event_id: header(ID_HEADER).unwrap_or_default().to_string(),
                    event_type: type_header.unwrap_or_default().to_string(),
                    reason,
                };
                return self
                    .quarantine_record(&record, rejected, replay_of, history.is_some())
                    .await;
            }
        };
        let key = self.line_of(&record.key);
        let mut stored_history = history.is_some();
        let mut history = history.unwrap_or_default();
        if record.offset < self.suspect_below && history.crashes == 0 {
            // Possibly in flight when the previous owner died: count it, deliver it alone.
            history.crashes = 1;
            history.attempts = history.attempts.max(1);
            self.store_history(record.offset, &history).await?;
            stored_history = true;
        }
        let state = if history.due_at > self.now() {
            State::Waiting {
                due: history.due_at,
            }
        } else {
            State::Queued
        };
        let offset = record.offset;
        if let State::Waiting { due } = state {
            self.waiting.insert((due, offset));
        }
        self.pending.insert(
            offset,
            PendingEvent {
                event: Arc::new(event),
                raw: record.value,
                key,
                next_of_key: None,
                attempt: history.attempts,
                history,
                stored_history,
                state,
                replay_of,
            },
        );
        if self
            .pending
            .get(&offset)
            .is_some_and(|p| p.history.crashes >= self.ctx.group.max_crashes)
        {
            let crashes = self.pending.get(&offset).map_or(0, |p| p.history.crashes);
            let reason =
                format!("crash_loop: the consumer process died {crashes} times while handling it");
            self.dead_letter(offset, FailureClass::Permanent, reason, true)
                .await?;
            return Ok(());
        }
        self.join_key_line(offset, key);
        Ok(())
    }

    /// Hands out ready events while the consumer has room, recording them as in flight first.
    /// A crash suspect goes out alone.
    async fn deliver_ready(&mut self) -> Result<Result<(), WorkerExit>> {
        // The room this worker was given by the channel, if any (given back to the channel,
        // for the next worker waiting, if unused here), plus what is free now.
        let mut held = self.room.take();
        if self.isolating.is_some() {
            return Ok(Ok(()));
        }
        let room = self.ctx.deliveries.capacity() + usize::from(held.is_some());
        let mut batch = Vec::new();
        let mut alone = false;
        while batch.len() < room {
            let Some(&offset) = self.ready.front() else {
                break;
            };
            let suspect = self
                .pending
                .get(&offset)
                .is_some_and(|p| p.history.crashes > 0);
            if suspect {
                if batch.is_empty() && self.ctx.gate.admit_alone() {
                    self.ready.pop_front();
                    self.isolating = Some(offset);
                    batch.push(offset);
                    alone = true;
                }
                break;
            }
            self.ready.pop_front();
            batch.push(offset);
        }
        if batch.is_empty() {
            return Ok(Ok(()));
        }
        if !alone && !self.ctx.gate.admit(batch.len()) {
            // A suspect elsewhere in this consumer runs alone: wait.
            for offset in batch.iter().rev() {
                self.ready.push_front(*offset);
            }
            return Ok(Ok(()));
        }
        self.declare(&batch).await?;
        let deliveries = self.ctx.deliveries.clone();
        for (i, offset) in batch.iter().enumerate() {
            if let Some(permit) = held.take() {
                if let Some(delivery) = self.delivery_of(*offset) {
                    permit.send(delivery);
                }
                continue;
            }
            match deliveries.try_reserve() {
                Ok(permit) => {
                    if let Some(delivery) = self.delivery_of(*offset) {
                        permit.send(delivery);
                    }
                }
                Err(error) => {
                    // Another partition took the room: put the rest back in line.
                    for offset in batch[i..].iter().rev() {
                        self.untrack(*offset);
                        self.ready.push_front(*offset);
                    }
                    if matches!(error, mpsc::error::TrySendError::Closed(())) {
                        return Ok(Err(WorkerExit::ConsumerGone));
                    }
                    break;
                }
            }
        }
        Ok(Ok(()))
    }

    /// Marks the event at `offset` in flight and builds its delivery.
    fn delivery_of(&mut self, offset: u64) -> Option<Delivery> {
        let now = self.now();
        let pending = self.pending.get_mut(&offset)?;
        pending.attempt += 1;
        let ack_expires_at = ack_expiry(now, self.ctx.group.ack_wait);
        pending.state = State::InFlight {
            deadline: match self.ctx.ack_clock {
                AckClock::FromDelivery => Some(ack_expires_at),
                AckClock::FromTake => None,
            },
        };
        self.ctx.stats.record_delivered(pending.attempt);
        Some(Delivery {
            event: pending.event.clone(),
            stream: self.ctx.stream.clone(),
            partition: self.ctx.partition,
            offset,
            attempt: pending.attempt,
            from_dlq: pending.replay_of.is_some(),
            ack_deadline: Instant::now() + self.ctx.group.ack_wait,
            ack_expires_at,
            settle: self.settle_tx.clone(),
            hand_out: None,
        })
    }

    async fn settle(&mut self, mut settlement: Settlement) -> Result<()> {
        let recorded = settlement.recorded.take();
        let tell = |recorded: Option<tokio::sync::oneshot::Sender<bool>>, outcome: bool| {
            if let Some(tx) = recorded {
                let _ = tx.send(outcome);
            }
        };
        let Some(pending) = self.pending.get_mut(&settlement.offset) else {
            tell(recorded, true);
            return Ok(()); // already done
        };
        if pending.attempt != settlement.attempt {
            tell(recorded, false);
            return Ok(()); // a stale delivery, superseded by a redelivery
        }
        if let Outcome::Taken { at } = settlement.outcome {
            let State::InFlight { deadline } = &mut pending.state else {
                tell(recorded, false);
                return Ok(()); // settled before it was taken
            };
            if deadline.is_none() {
                *deadline = Some(ack_expiry(at, self.ctx.group.ack_wait));
            }
            match recorded {
                Some(recorded) if self.ctx.relay => {
                    self.handed_out(settlement.offset, settlement.attempt, recorded)
                }
                recorded => tell(recorded, true),
            }
            return Ok(());
        }
        let (stored, replay_of) = (pending.stored_history, pending.replay_of.clone());
        match (&settlement.outcome, &pending.state) {
            (Outcome::Recorded, State::Recording) => {
                return self.done(settlement.offset, stored, replay_of).await;
            }
            (Outcome::Done | Outcome::Failed(_), State::InFlight { .. }) => {}
            _ => {
                // Settled already: being recorded (the record's answer is this ack's too,
                // but only the first ack waits on it) or retrying.
                tell(recorded, false);
                return Ok(()); // stale
            }
        }
        self.untrack(settlement.offset);
        match settlement.outcome {
            Outcome::Done if self.ctx.group.processed_ids => {
                self.ctx.stats.record_acked();
                self.record_processed(settlement.offset, settlement.attempt, recorded);
            }
            Outcome::Done => {
                self.ctx.stats.record_acked();
                tell(recorded, true);
                self.done(settlement.offset, stored, replay_of).await?;
            }
            Outcome::Failed(error) => {
                self.fail(settlement.offset, error.class, error.reason)
                    .await?;
            }
            Outcome::Recorded | Outcome::Taken { .. } => {}
        }
        Ok(())
    }

    /// Makes "processed" durable before the offset may pass the event. The write runs off the
    /// worker's path, so concurrent acks share the store's group commit; the worker finishes
    /// the event when it reports back.
    fn record_processed(
        &mut self,
        offset: u64,
        attempt: u32,
        recorded: Option<tokio::sync::oneshot::Sender<bool>>,
    ) {
        let Some(pending) = self.pending.get_mut(&offset) else {
            return;
        };
        pending.state = State::Recording;
        let backend = self.ctx.shared.backend.clone();
        let key = keys::processed_key(
            &self.ctx.group.name,
            pending.event.source().as_str(),
            pending.event.id().as_str(),
        );
        let ttl = self.ctx.group.processed_id_ttl;
        let settle = self.settle_tx.clone();
        tokio::spawn(async move {
            let written = backend
                .kv_put(keys::PROCESSED, &key, Bytes::new(), Expect::Any, Some(ttl))
                .await;
            if let Err(error) = &written {
                tracing::warn!(%error, offset, "could not record a processed id");
            }
            if let Some(tx) = recorded {
                let _ = tx.send(written.is_ok());
            }
            let _ = settle.send(Settlement {
                offset,
                attempt,
                outcome: Outcome::Recorded,
                recorded: None,
            });
        });
    }

    /// The event was processed: clear its retry history, let a replayed one leave the DLQ.
    async fn done(&mut self, offset: u64, stored: bool, replay_of: Option<String>) -> Result<()> {
        if stored {
            self.forget_history(offset).await?;
        }
        if let Some(entry) = replay_of {
            dlq::remove_entry(&self.runnel, &self.ctx.group.name, &entry).await?;
        }
        self.finish(offset);
        Ok(())
    }

    /// Decides what a failure leads to: a retry now, a retry after backoff, or the DLQ.
    async fn fail(&mut self, offset: u64, class: FailureClass, reason: String) -> Result<()> {
        let now = self.now();
        let group = self.ctx.group.clone();
        let Some(pending) = self.pending.get_mut(&offset) else {
            return Ok(());
        };
        self.ctx.stats.record_failed(class);
        let history = &mut pending.history;
        history.attempts = pending.attempt;
        if history.first_failure_at == 0 {
            history.first_failure_at = now;
        }
        history.last_failure_at = now;
        history.class = Some(class);
        history.reason = reason.clone();
        if pending.attempt >= group.max_deliver || class == FailureClass::Permanent {
            if class != FailureClass::Permanent {
                self.ctx.stats.record_exhausted();
            }
            let reason = if class == FailureClass::Permanent {
                reason
            } else {
                format!("{reason} (gave up after {} deliveries)", pending.attempt)
            };
            return self.dead_letter(offset, class, reason, false).await;
        }
        let immediate =
            class == FailureClass::Transient && history.transient_retries < group.transient_retries;
        if immediate {
            history.transient_retries += 1;
            history.due_at = now;
            pending.state = State::Queued;
        } else {
            let step = (history.service_retries as usize).min(group.backoff.len() - 1);
            let ceiling = group.backoff[step].as_micros() as u64;
            history.service_retries += 1;
            history.due_at = now + self.rng.random_range(0..=ceiling);
            pending.state = State::Waiting {
                due: history.due_at,
            };
            self.waiting.insert((history.due_at, offset));
        }
        pending.stored_history = true;
        let history = pending.history.clone();
        self.ctx.stats.record_retry_scheduled();
        self.store_history(offset, &history).await?;
        if immediate {
            // Still first of its key: back to the front of the line.
            self.ready.push_front(offset);
        }
        Ok(())
    }

    /// The event is done: its key moves to the next event in line.
    fn finish(&mut self, offset: u64) {
        self.untrack(offset);
        let Some(pending) = self.pending.remove(&offset) else {
            return;
        };
        if let Some(key) = pending.key {
            self.leave_key_line(key, offset, pending.next_of_key);
        }
    }

    /// Commits the lowest offset not yet done. Returns false when fenced by another owner.
    async fn commit(&mut self) -> Result<bool> {
        let target = self
            .pending
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_read);
        if target < self.committed || (target == self.committed && self.commit_revision.is_some()) {
            return Ok(true);
        }
        let expect = match self.commit_revision {
            Some(revision) => Expect::Revision(revision),
            None => Expect::Absent,
        };
        match self
            .ctx
            .shared
            .backend
            .commit_offset(
                &self.ctx.group.name,
                &self.ctx.stream,
                self.ctx.partition,
                target,
                expect,
            )
            .await
        {
            Ok(revision) => {
                self.committed = target;
                self.commit_revision = Some(revision);
                Ok(true)
            }
            Err(BackendError::CasConflict { .. }) => {
                tracing::warn!(
                    group = %self.ctx.group.name,
                    stream = %self.ctx.stream,
                    partition = self.ctx.partition,
                    "another instance committed this partition; stopping"
                );
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Whatever this worker still had in flight no longer holds the gate.
        let alone = self.isolating.is_some();
        self.ctx.gate.release(self.in_flight.len(), alone);
    }
}
