//! Scheduled retries as operators and tests see them: read from the durable records the
//! partition workers keep for events that failed and wait for another delivery.

use runnel_backend::{Partition, StreamName};
use runnel_clock::Micros;
use serde::Serialize;

use super::delivery::FailureClass;
use super::keys;
use super::worker::RetryRecord;
use crate::error::Result;
use crate::runtime::Runnel;

/// An event that failed and waits for its next delivery, or that was in flight when its
/// consumer stopped: at a crash (`crashes` > 0), or held by a relay's client when the relay
/// restarted (its `attempts` kept, no class).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduledRetry {
    pub stream: StreamName,
    pub partition: Partition,
    pub offset: u64,
    /// Deliveries made so far.
    pub attempts: u32,
    /// Not delivered again before this time (µs since the epoch).
    pub due_at: Micros,
    pub class: Option<FailureClass>,
    pub reason: String,
    pub last_failure_at: Micros,
    /// Times the consumer process died while it was in flight.
    pub crashes: u32,
}

impl Runnel {
    /// Every event of `group` waiting for a retry, in origin order.
    pub async fn scheduled_retries(&self, group: &str) -> Result<Vec<ScheduledRetry>> {
        self.group_config(group).await?;
        let prefix = format!("{group}/");
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .shared
                .backend
                .kv_scan(keys::RETRIES, &prefix, after.as_deref(), 1_000)
                .await?;
            for entry in &page {
                let mut parts = entry.key[prefix.len()..].split('/');
                let (Some(stream), Some(partition), Some(offset)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let (Ok(stream), Ok(partition), Ok(offset)) = (
                    StreamName::new(stream),
                    partition.parse::<Partition>(),
                    offset.parse::<u64>(),
                ) else {
                    continue;
                };
                let Ok(record) = serde_json::from_slice::<RetryRecord>(&entry.value) else {
                    continue;
                };
                out.push(ScheduledRetry {
                    stream,
                    partition,
                    offset,
                    attempts: record.attempts,
                    due_at: record.due_at,
                    class: record.class,
                    reason: record.reason,
                    last_failure_at: record.last_failure_at,
                    crashes: record.crashes,
                });
            }
            match page.last() {
                Some(last) if page.len() == 1_000 => after = Some(last.key.clone()),
                _ => return Ok(out),
            }
        }
    }
}
