//! Dead-lettering: an event the partition gives up on goes to the group's dead-letter queue
//! with why, and the partition moves on past it.
//!
//! Three ways in: a failure that is permanent or past `max_deliver`, a crash loop (quarantined
//! when read again), and a record that never became a deliverable event (undecodable, or
//! failing its schema). A replayed event that fails again updates the entry it came from
//! instead of adding one.

use runnel_backend::StoredRecord;

use super::Worker;
use crate::error::{Result, RuntimeError};
use crate::group::delivery::FailureClass;
use crate::group::dlq::{self, DlqEntry};

/// What is known of a record rejected before it became an event.
pub(super) struct Rejected {
    pub event_id: String,
    pub event_type: String,
    pub reason: String,
}

impl Worker {
    /// Dead-letters a record that never became a deliverable event (undecodable, or failing
    /// its schema): permanent, no attempts.
    pub(super) async fn quarantine_record(
        &mut self,
        record: &StoredRecord,
        rejected: Rejected,
        replay_of: Option<String>,
        had_history: bool,
    ) -> Result<()> {
        let now = self.now();
        let entry = DlqEntry {
            id: dlq::entry_id(&self.ctx.stream, self.ctx.partition, record.offset),
            group: self.ctx.group.name.clone(),
            event_id: rejected.event_id,
            event_type: rejected.event_type,
            class: FailureClass::Permanent,
            reason: rejected.reason,
            attempts: 0,
            first_failure_at: now,
            last_failure_at: now,
            dead_lettered_at: now,
            stream: self.ctx.stream.clone(),
            partition: self.ctx.partition,
            offset: record.offset,
            replays: 0,
            replay_pending: false,
            original: record.value.clone(),
        };
        self.write_dead_letter(entry, replay_of.as_deref(), true)
            .await?;
        if had_history {
            self.forget_history(record.offset).await?;
        }
        Ok(())
    }

    /// Writes the event to the group's dead-letter queue, then lets the partition move on.
    pub(super) async fn dead_letter(
        &mut self,
        offset: u64,
        class: FailureClass,
        reason: String,
        quarantine: bool,
    ) -> Result<()> {
        let Some(pending) = self.pending.get(&offset) else {
            return Ok(());
        };
        let now = self.now();
        let history = &pending.history;
        let entry = DlqEntry {
            id: dlq::entry_id(&self.ctx.stream, self.ctx.partition, offset),
            group: self.ctx.group.name.clone(),
            event_id: pending.event.id().as_str().to_string(),
            event_type: pending.event.event_type().as_str().to_string(),
            class,
            reason,
            attempts: pending.attempt,
            first_failure_at: if history.first_failure_at == 0 {
                now
            } else {
                history.first_failure_at
            },
            last_failure_at: now,
            dead_lettered_at: now,
            stream: self.ctx.stream.clone(),
            partition: self.ctx.partition,
            offset,
            replays: 0,
            replay_pending: false,
            original: pending.raw.clone(),
        };
        let (stored, replay_of) = (pending.stored_history, pending.replay_of.clone());
        self.write_dead_letter(entry, replay_of.as_deref(), quarantine)
            .await?;
        if stored {
            self.forget_history(offset).await?;
        }
        self.finish(offset);
        Ok(())
    }

    /// Stores an entry; a failed replay updates the entry it came from instead.
    async fn write_dead_letter(
        &mut self,
        mut entry: DlqEntry,
        replay_of: Option<&str>,
        quarantine: bool,
    ) -> Result<()> {
        if let Some(original_id) = replay_of {
            match self.runnel.dlq_get(&self.ctx.group.name, original_id).await {
                Ok(original) => {
                    entry.id = original.id;
                    entry.stream = original.stream;
                    entry.partition = original.partition;
                    entry.offset = original.offset;
                    entry.first_failure_at = original.first_failure_at;
                    entry.replays = original.replays + 1;
                }
                Err(RuntimeError::UnknownDlqEntry { .. }) => {
                    entry.id = original_id.to_string();
                    entry.replays = 1;
                }
                Err(e) => return Err(e),
            }
        }
        tracing::warn!(
            group = %entry.group,
            id = entry.event_id.as_str(),
            entry = %entry.id,
            class = %entry.class,
            reason = entry.reason.as_str(),
            attempts = entry.attempts,
            "dead-lettered"
        );
        dlq::put_entry(&self.runnel, &entry).await?;
        self.ctx.stats.record_dead_lettered(quarantine);
        if let Some(threshold) = self.ctx.group.dlq_alert_threshold {
            // Workers of the group dead-letter concurrently; the count that started last
            // has seen every entry put before it, and its answer is the one that stays.
            let ticket = self.ctx.stats.dlq_count_ticket();
            let depth = dlq::count_entries(&self.runnel, &self.ctx.group.name).await?;
            let alert = depth >= threshold;
            if alert {
                tracing::warn!(group = %self.ctx.group.name, depth, threshold, "dead-letter queue over its alert threshold");
            }
            self.ctx.stats.set_dlq_alert(ticket, alert);
        }
        Ok(())
    }
}
