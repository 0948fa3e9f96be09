//! Retry records: the durable failure history of an event.
//!
//! A record (attempts, due time, failure class and reason, crashes) is written before an
//! event is set aside for a retry, or counted as a crash suspect, so that a restart keeps the
//! schedule and the count; it is removed when the event is done. A worker loads its
//! partition's records when it starts and attaches each to its event as the event is read
//! again. Operators see them as `ScheduledRetry` (`group/retries.rs`).

use runnel_backend::Expect;
use runnel_clock::Micros;
use serde::{Deserialize, Serialize};

use super::Worker;
use crate::error::{Result, RuntimeError};
use crate::group::delivery::FailureClass;
use crate::group::keys;

/// The durable failure history of one event.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RetryRecord {
    /// Deliveries made so far.
    pub attempts: u32,
    pub transient_retries: u32,
    pub service_retries: u32,
    /// Times the consumer process died while it was in flight.
    pub crashes: u32,
    /// Not to be delivered before this time (µs since the epoch).
    pub due_at: Micros,
    pub class: Option<FailureClass>,
    pub reason: String,
    pub first_failure_at: Micros,
    pub last_failure_at: Micros,
}

impl Worker {
    /// Loads the retry records of this partition (taken as their events are read again).
    pub(super) async fn load_retry_records(&mut self) -> Result<()> {
        let backend = self.ctx.shared.backend.clone();
        let group = &self.ctx.group.name;
        let prefix = keys::retry_prefix(group, &self.ctx.stream, self.ctx.partition);
        let mut after: Option<String> = None;
        loop {
            let page = backend
                .kv_scan(keys::RETRIES, &prefix, after.as_deref(), 1_000)
                .await?;
            for entry in &page {
                let offset = entry.key[prefix.len()..].parse::<u64>().ok();
                let record = serde_json::from_slice::<RetryRecord>(&entry.value).ok();
                if let (Some(offset), Some(record)) = (offset, record) {
                    self.histories.insert(offset, record);
                }
            }
            match page.last() {
                Some(last) if page.len() == 1_000 => after = Some(last.key.clone()),
                _ => break,
            }
        }
        Ok(())
    }

    /// Writes (or replaces) the record of the event at `offset`.
    pub(super) async fn store_history(&self, offset: u64, history: &RetryRecord) -> Result<()> {
        let key = keys::retry_key(
            &self.ctx.group.name,
            &self.ctx.stream,
            self.ctx.partition,
            offset,
        );
        let value =
            serde_json::to_vec(history).map_err(|e| RuntimeError::Serialize(e.to_string()))?;
        self.ctx
            .shared
            .backend
            .kv_put(keys::RETRIES, &key, value.into(), Expect::Any, None)
            .await?;
        Ok(())
    }

    /// Removes the record of the event at `offset`: it is done.
    pub(super) async fn forget_history(&self, offset: u64) -> Result<()> {
        let key = keys::retry_key(
            &self.ctx.group.name,
            &self.ctx.stream,
            self.ctx.partition,
            offset,
        );
        self.ctx
            .shared
            .backend
            .kv_delete(keys::RETRIES, &key, Expect::Any)
            .await?;
        Ok(())
    }
}
