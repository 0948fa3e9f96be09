//! The partition worker: the single owner of one partition's progress for one group.
//!
//! It reads records from the committed offset, skips those the group's filter does not match,
//! hands events out with key-ordered concurrency (one event per partition key in flight,
//! different keys at once), takes back acks and nacks, redelivers what is not settled within
//! `ack_wait`, and commits the lowest offset not yet done.
//!
//! Before an event is delivered for the first time the delivery cursor (the offset below which
//! events may have been delivered) is made durable, so after a crash the worker knows which
//! events could have been processed already and checks only those against the processed ids.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runnel_backend::{
    BackendError, Expect, Partition, ReadFrom, Revision, StoredRecord, StreamName,
};
use runnel_envelope::Event;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::config::{GroupConfig, Ordering, StartFrom};
use super::delivery::{Delivery, Outcome, Settlement};
use super::keys;
use super::stats::GroupStats;
use crate::error::{Result, RuntimeError};
use crate::producer::TYPE_HEADER;
use crate::runtime::Shared;

const READ_BATCH: usize = 512;
/// The delivery cursor is written this far ahead of what is read, so tail-following does not
/// wait for a metadata write per batch; after a crash it only widens the re-check a little.
const CURSOR_AHEAD: u64 = 8192;
const COMMIT_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cursor {
    /// Events below this offset may have been delivered before.
    delivered_to: u64,
}

pub(crate) struct WorkerCtx {
    pub shared: Arc<Shared>,
    pub group: Arc<GroupConfig>,
    pub stats: Arc<GroupStats>,
    pub stream: StreamName,
    pub partition: Partition,
    pub deliveries: mpsc::Sender<Delivery>,
    pub stop: watch::Receiver<bool>,
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
    InFlight { deadline: Instant },
}

struct PendingEvent {
    event: Arc<Event>,
    key: Option<Bytes>,
    attempt: u32,
    state: State,
}

struct Worker {
    ctx: WorkerCtx,
    settle_tx: mpsc::UnboundedSender<Settlement>,
    next_read: u64,
    caught_up: bool,
    committed: u64,
    commit_revision: Option<Revision>,
    cursor: u64,
    /// Offsets below this were possibly delivered before this worker started.
    recheck_below: u64,
    pending: BTreeMap<u64, PendingEvent>,
    /// Per partition key, the offsets waiting behind the one in flight (ordering = key).
    key_queues: HashMap<Bytes, VecDeque<u64>>,
    ready: VecDeque<u64>,
}

pub(crate) async fn run(ctx: WorkerCtx) -> Result<WorkerExit> {
    let (settle_tx, settle_rx) = mpsc::unbounded_channel();
    let shared = ctx.shared.clone();
    let backend = &shared.backend;
    let group = &ctx.group.name;
    let committed = backend
        .committed_offset(group, &ctx.stream, ctx.partition)
        .await?;
    let info = backend.partition_info(&ctx.stream, ctx.partition).await?;
    let (start, commit_revision) = match committed {
        Some(c) => (c.offset.max(info.start_offset), Some(c.revision)),
        None => match ctx.group.start {
            StartFrom::Earliest => (info.start_offset, None),
            StartFrom::Latest => (info.high_watermark, None),
        },
    };
    let cursor_key = keys::partition_key(group, &ctx.stream, ctx.partition);
    let cursor = match backend.kv_get(keys::CURSORS, &cursor_key).await? {
        Some(entry) => serde_json::from_slice::<Cursor>(&entry.value)
            .map(|c| c.delivered_to)
            .unwrap_or(u64::MAX),
        None => 0,
    };
    let mut worker = Worker {
        settle_tx,
        next_read: start,
        caught_up: false,
        committed: start,
        commit_revision,
        cursor: cursor.max(start),
        recheck_below: cursor,
        pending: BTreeMap::new(),
        key_queues: HashMap::new(),
        ready: VecDeque::new(),
        ctx,
    };
    worker.run(settle_rx).await
}

impl Worker {
    async fn run(
        &mut self,
        mut settle_rx: mpsc::UnboundedReceiver<Settlement>,
    ) -> Result<WorkerExit> {
        let mut commit_tick = tokio::time::interval(COMMIT_EVERY);
        let expiry_every =
            (self.ctx.group.ack_wait / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
        let mut expiry_tick = tokio::time::interval(expiry_every);
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
            match self.deliver_ready() {
                Ok(()) => {}
                Err(exit) => break exit,
            }
            let waiting_for_data = room > 0 && self.caught_up;
            let backend = self.ctx.shared.backend.clone();
            let deliveries = self.ctx.deliveries.clone();
            tokio::select! {
                settlement = settle_rx.recv() => {
                    // `settle_tx` lives in `self`, so the channel never closes here.
                    if let Some(settlement) = settlement {
                        self.settle(settlement);
                        while let Ok(more) = settle_rx.try_recv() {
                            self.settle(more);
                        }
                    }
                }
                permit = deliveries.reserve(), if !self.ready.is_empty() => {
                    match permit {
                        Ok(permit) => self.deliver_one(permit),
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
                _ = expiry_tick.tick() => self.redeliver_expired(),
                _ = stop.changed() => {}
            }
        };
        if matches!(exit, WorkerExit::Stopped | WorkerExit::ConsumerGone) {
            // Hand over cleanly: settle what already came back, commit whatever is done.
            while let Ok(settlement) = settle_rx.try_recv() {
                self.settle(settlement);
            }
            self.commit().await?;
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
        let Some(last) = records.last() else {
            self.caught_up = true;
            return Ok(());
        };
        let through = last.offset + 1;
        // Make "these may be delivered" durable before any of them is.
        if through > self.cursor {
            self.write_cursor(through + CURSOR_AHEAD).await?;
        }
        for record in records {
            self.next_read = record.offset + 1;
            self.admit(record).await?;
        }
        Ok(())
    }

    async fn write_cursor(&mut self, delivered_to: u64) -> Result<()> {
        let key = keys::partition_key(&self.ctx.group.name, &self.ctx.stream, self.ctx.partition);
        let value = serde_json::to_vec(&Cursor { delivered_to })
            .map_err(|e| RuntimeError::Serialize(e.to_string()))?;
        self.ctx
            .shared
            .backend
            .kv_put(keys::CURSORS, &key, value.into(), Expect::Any, None)
            .await?;
        self.cursor = delivered_to;
        Ok(())
    }

    /// Takes a record in: skipped when the filter does not match or it was processed before,
    /// otherwise queued behind its key.
    async fn admit(&mut self, record: StoredRecord) -> Result<()> {
        let filter = &self.ctx.group.filter;
        let type_header = record
            .headers
            .iter()
            .find(|h| h.name.as_ref() == TYPE_HEADER.as_bytes())
            .and_then(|h| std::str::from_utf8(&h.value).ok());
        if type_header.is_some_and(|t| !filter.matches(t)) {
            return Ok(());
        }
        let event = match Event::decode_binary(&record.value) {
            Ok(event) => event,
            Err(error) => {
                self.ctx.stats.record_undecodable();
                tracing::error!(
                    group = %self.ctx.group.name,
                    stream = %self.ctx.stream,
                    partition = self.ctx.partition,
                    offset = record.offset,
                    %error,
                    "undecodable record"
                );
                return Ok(());
            }
        };
        if !filter.matches(event.event_type().as_str()) {
            return Ok(());
        }
        if self.ctx.group.processed_ids && record.offset < self.recheck_below {
            let key = keys::processed_key(&self.ctx.group.name, event.id().as_str());
            if self
                .ctx
                .shared
                .backend
                .kv_get(keys::PROCESSED, &key)
                .await?
                .is_some()
            {
                self.ctx.stats.record_skipped_duplicate();
                tracing::debug!(id = %event.id().as_str(), offset = record.offset, "already processed; skipped");
                return Ok(());
            }
        }
        let key = match self.ctx.group.ordering {
            Ordering::Key if !record.key.is_empty() => Some(record.key.clone()),
            _ => None,
        };
        self.pending.insert(
            record.offset,
            PendingEvent {
                event: Arc::new(event),
                key: key.clone(),
                attempt: 0,
                state: State::Queued,
            },
        );
        match key {
            Some(key) => {
                let queue = self.key_queues.entry(key).or_default();
                queue.push_back(record.offset);
                if queue.len() == 1 {
                    self.ready.push_back(record.offset);
                }
            }
            None => self.ready.push_back(record.offset),
        }
        Ok(())
    }

    /// Hands out ready events while the consumer has room.
    fn deliver_ready(&mut self) -> Result<(), WorkerExit> {
        let deliveries = self.ctx.deliveries.clone();
        while !self.ready.is_empty() {
            match deliveries.try_reserve() {
                Ok(permit) => self.deliver_one(permit),
                Err(mpsc::error::TrySendError::Full(())) => break,
                Err(mpsc::error::TrySendError::Closed(())) => return Err(WorkerExit::ConsumerGone),
            }
        }
        Ok(())
    }

    fn deliver_one(&mut self, permit: mpsc::Permit<'_, Delivery>) {
        let Some(offset) = self.ready.pop_front() else {
            return;
        };
        let Some(pending) = self.pending.get_mut(&offset) else {
            return;
        };
        pending.attempt += 1;
        pending.state = State::InFlight {
            deadline: Instant::now() + self.ctx.group.ack_wait,
        };
        self.ctx.stats.record_delivered(pending.attempt);
        permit.send(Delivery {
            event: pending.event.clone(),
            stream: self.ctx.stream.clone(),
            partition: self.ctx.partition,
            offset,
            attempt: pending.attempt,
            settle: self.settle_tx.clone(),
        });
    }

    fn settle(&mut self, settlement: Settlement) {
        let Some(pending) = self.pending.get(&settlement.offset) else {
            return; // already done
        };
        if pending.attempt != settlement.attempt || !matches!(pending.state, State::InFlight { .. })
        {
            return; // a stale delivery, superseded by a redelivery
        }
        match settlement.outcome {
            Outcome::Done => {
                self.ctx.stats.record_acked();
                self.finish(settlement.offset);
            }
            Outcome::Failed(error) => {
                self.ctx.stats.record_failed(error.class);
                let attempt = pending.attempt;
                if attempt >= self.ctx.group.max_deliver {
                    self.ctx.stats.record_exhausted();
                    tracing::error!(
                        group = %self.ctx.group.name,
                        stream = %self.ctx.stream,
                        partition = self.ctx.partition,
                        offset = settlement.offset,
                        attempt,
                        %error,
                        "event failed on its last delivery"
                    );
                    self.finish(settlement.offset);
                } else {
                    self.requeue(settlement.offset);
                }
            }
        }
    }

    /// Puts an event back at the front of the line; it keeps its key's place.
    fn requeue(&mut self, offset: u64) {
        if let Some(pending) = self.pending.get_mut(&offset) {
            pending.state = State::Queued;
            self.ready.push_front(offset);
        }
    }

    /// The event is done: release its key to the next event behind it.
    fn finish(&mut self, offset: u64) {
        let Some(pending) = self.pending.remove(&offset) else {
            return;
        };
        if let Some(key) = pending.key
            && let Some(queue) = self.key_queues.get_mut(&key)
        {
            queue.retain(|o| *o != offset);
            match queue.front() {
                Some(next) => self.ready.push_back(*next),
                None => {
                    self.key_queues.remove(&key);
                }
            }
        }
    }

    fn redeliver_expired(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| matches!(p.state, State::InFlight { deadline } if deadline <= now))
            .map(|(o, _)| *o)
            .collect();
        for offset in expired {
            self.ctx.stats.record_ack_timeout();
            let exhausted = self
                .pending
                .get(&offset)
                .is_some_and(|p| p.attempt >= self.ctx.group.max_deliver);
            if exhausted {
                self.ctx.stats.record_exhausted();
                tracing::error!(
                    group = %self.ctx.group.name,
                    offset,
                    "event not acknowledged within ack_wait on its last delivery"
                );
                self.finish(offset);
            } else {
                self.requeue(offset);
            }
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
        if target == self.committed && self.commit_revision.is_some() {
            return Ok(true);
        }
        if target < self.committed {
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
