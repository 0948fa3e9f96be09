//! Consumer lag: how far a group is behind, per partition, in events and in time.

use runnel_backend::{Partition, ReadFrom, StreamName};
use runnel_envelope::Event;
use serde::Serialize;

use crate::error::Result;
use crate::runtime::Runnel;

/// Lag of one partition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionLag {
    pub stream: StreamName,
    pub partition: Partition,
    /// The next offset the group will process.
    pub committed: u64,
    pub high_watermark: u64,
    /// `high_watermark − committed`.
    pub events: u64,
    /// Age of the oldest event not yet done (now − its event time), 0 when caught up.
    pub seconds: f64,
}

/// Lag of a group over every partition it reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupLag {
    pub group: String,
    pub partitions: Vec<PartitionLag>,
    pub total_events: u64,
    pub max_seconds: f64,
}

impl Runnel {
    /// The group's lag on every partition of every stream its filter can match.
    pub async fn lag(&self, group: &str) -> Result<GroupLag> {
        let config = self.group_config(group).await?;
        let backend = &self.shared.backend;
        let now = self.shared.cfg.clock.now_micros();
        let start = self.shared.start_point(&config).await?;
        let mut partitions = Vec::new();
        for stream in backend.list_streams().await? {
            if !super::dlq::group_reads_stream(&config, &stream.name) {
                continue;
            }
            for info in &stream.partitions {
                let committed = match backend
                    .committed_offset(group, &stream.name, info.partition)
                    .await?
                {
                    Some(c) => c.offset.max(info.start_offset),
                    None => {
                        self.shared
                            .uncommitted_start(&start, &stream.name, info)
                            .await?
                    }
                };
                let events = info.high_watermark.saturating_sub(committed);
                let mut seconds = 0.0;
                if events > 0 {
                    let oldest = backend
                        .read(
                            &stream.name,
                            info.partition,
                            ReadFrom::Offset(committed),
                            1,
                            usize::MAX,
                        )
                        .await?;
                    if let Some(record) = oldest.first() {
                        let event_time = Event::decode_binary(&record.value)
                            .ok()
                            .and_then(|e| e.time())
                            .and_then(|t| u64::try_from(t.timestamp_micros()).ok())
                            .unwrap_or(record.timestamp);
                        seconds = now.saturating_sub(event_time) as f64 / 1e6;
                    }
                }
                partitions.push(PartitionLag {
                    stream: stream.name.clone(),
                    partition: info.partition,
                    committed,
                    high_watermark: info.high_watermark,
                    events,
                    seconds,
                });
            }
        }
        Ok(GroupLag {
            group: group.to_string(),
            total_events: partitions.iter().map(|p| p.events).sum(),
            max_seconds: partitions.iter().map(|p| p.seconds).fold(0.0, f64::max),
            partitions,
        })
    }
}
