//! In-flight declarations: what may be in flight on a partition, written before it is handed
//! out, so that a crash cannot forget it.
//!
//! Redeliveries are listed one by one with their attempt numbers; first deliveries are
//! covered by a range declared [`DECLARE_AHEAD`] offsets ahead (most deliveries need no
//! write). The next owner reads the list: each unprocessed event on it is a crash suspect
//! (unless the list was marked clean by a clean stop), and the range says which events may
//! have been processed but not committed, so only those are checked against the processed
//! ids.

use std::collections::BTreeMap;

use bytes::Bytes;
use runnel_backend::Expect;
use serde::{Deserialize, Serialize};

use super::Worker;
use crate::error::{Result, RuntimeError};
use crate::group::keys;

/// First deliveries are declared in flight this far ahead, renewed in the background when half
/// is used, so deliveries rarely wait for a write; after a crash at most about this many
/// innocent events are delivered one at a time.
const DECLARE_AHEAD: u64 = 256;

/// What may be in flight on one partition: first deliveries of any offset below
/// `declared_to`, and the listed redeliveries (offset → attempt number).
#[derive(Debug, Default, Serialize, Deserialize)]
struct InFlightList {
    #[serde(default)]
    declared_to: u64,
    /// Written by a clean stop: nothing was in flight when the owner let go.
    #[serde(default)]
    clean: bool,
    deliveries: BTreeMap<u64, u32>,
}

impl Worker {
    /// Reads the in-flight list the previous owner left, and counts a crash against every
    /// delivery on it, unless that owner stopped cleanly.
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
                deliveries: BTreeMap::new(),
            });
        // Events below `declared_to` may have been processed: check their ids when read.
        self.recheck_below = in_flight.declared_to;
        // Keep that bound durable for whoever comes next.
        self.declared_to = in_flight.declared_to;
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

    /// Records a batch as in flight before it is handed out: redeliveries and offsets past
    /// the declared range are written first; otherwise the range is extended in the
    /// background when half of it is used.
    pub(super) async fn declare(&mut self, batch: &[u64]) -> Result<()> {
        self.settle_declaring(false).await?;
        let mut needs_write = false;
        for offset in batch {
            if let Some(pending) = self.pending.get(offset) {
                let attempt = pending.attempt + 1;
                self.in_flight.insert(*offset, attempt);
                needs_write |= attempt > 1 || *offset >= self.declared_to;
            }
        }
        let highest = batch.iter().max().copied().unwrap_or(0);
        if needs_write {
            // Wait for a background write first, so writes land in order.
            self.settle_declaring(true).await?;
            self.declared_to = self.declared_to.max(highest + 1 + DECLARE_AHEAD);
            let value = self.in_flight_value()?;
            self.write_in_flight(value).await?;
        } else if self.declaring.is_none() && highest + DECLARE_AHEAD / 2 >= self.declared_to {
            let target = highest + 1 + DECLARE_AHEAD;
            let previous = std::mem::replace(&mut self.declared_to, target);
            let value = self.in_flight_value()?;
            self.declared_to = previous;
            let backend = self.ctx.shared.backend.clone();
            let key =
                keys::partition_key(&self.ctx.group.name, &self.ctx.stream, self.ctx.partition);
            let write = tokio::spawn(async move {
                backend
                    .kv_put(keys::INFLIGHT, &key, value, Expect::Any, None)
                    .await
                    .map(|_| ())
                    .map_err(RuntimeError::from)
            });
            self.declaring = Some((target, write));
        }
        Ok(())
    }

    /// Forgets a delivery in flight (settled, expired, or never sent) and frees its place.
    pub(super) fn untrack(&mut self, offset: u64) {
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
        let finished = self
            .declaring
            .as_ref()
            .is_some_and(|(_, h)| h.is_finished());
        if !(finished || wait) {
            return Ok(());
        }
        if let Some((target, write)) = self.declaring.take() {
            write
                .await
                .map_err(|e| RuntimeError::Serialize(format!("in-flight write task: {e}")))??;
            self.declared_to = self.declared_to.max(target);
        }
        Ok(())
    }

    /// Stores the partition's in-flight list (replacing the previous one).
    pub(super) async fn write_in_flight(&self, value: Bytes) -> Result<()> {
        let key = keys::partition_key(&self.ctx.group.name, &self.ctx.stream, self.ctx.partition);
        self.ctx
            .shared
            .backend
            .kv_put(keys::INFLIGHT, &key, value, Expect::Any, None)
            .await?;
        Ok(())
    }

    /// The in-flight list as it stands.
    fn in_flight_value(&self) -> Result<Bytes> {
        self.in_flight_list(false)
    }

    /// The in-flight list, `clean` when the owner lets go with nothing it must blame.
    pub(super) fn in_flight_list(&self, clean: bool) -> Result<Bytes> {
        let list = InFlightList {
            declared_to: self.declared_to,
            clean,
            deliveries: self
                .in_flight
                .iter()
                .filter(|(_, attempt)| **attempt > 1)
                .map(|(o, a)| (*o, *a))
                .collect(),
        };
        let value =
            serde_json::to_vec(&list).map_err(|e| RuntimeError::Serialize(e.to_string()))?;
        Ok(value.into())
    }
}
