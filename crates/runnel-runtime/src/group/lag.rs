//! Consumer lag: how far a group is behind, per partition, in events and in time.

use runnel_backend::{Partition, ReadFrom, StreamName};
use runnel_envelope::Event;
use serde::Serialize;

use crate::error::Result;
use crate::producer::TYPE_HEADER;
use crate::runtime::Runnel;

/// Lag of one partition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionLag {
    pub stream: StreamName,
    pub partition: Partition,
    /// The next offset the group will process.
    pub committed: u64,
    pub high_watermark: u64,
    /// Events from `committed` on that the group's filter matches: other types' events are
    /// not lag, though the group commits past them only when its consumer runs.
    pub events: u64,
    /// Age of the oldest matching event not yet done (now − its event time), 0 when caught up.
    pub seconds: f64,
    /// False when more than [`LAG_SCAN_LIMIT`] records past `committed` would have to be read
    /// to tell which match: then `events` counts the unread ones too (an upper bound), and
    /// `seconds` may be the age of an event the filter does not match.
    pub exact: bool,
}

/// Most records a lag call reads past a partition's committed offset, looking at their type
/// header only, to count the events the group's filter matches.
pub const LAG_SCAN_LIMIT: u64 = 10_000;

/// Lag of a group over every partition it reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupLag {
    pub group: String,
    pub partitions: Vec<PartitionLag>,
    pub total_events: u64,
    pub max_seconds: f64,
    /// Whether every partition's count is exact (see [`PartitionLag::exact`]).
    pub exact: bool,
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
                let (events, oldest, exact) =
                    if config.filter.matches_every_type_of(stream.name.as_str()) {
                        let oldest = (info.high_watermark > committed).then_some(committed);
                        (
                            info.high_watermark - committed.min(info.high_watermark),
                            oldest,
                            true,
                        )
                    } else {
                        self.matching_after(
                            &config,
                            &stream.name,
                            info.partition,
                            committed,
                            info.high_watermark,
                        )
                        .await?
                    };
                let mut seconds = 0.0;
                if let Some(offset) = oldest {
                    let oldest = backend
                        .read(
                            &stream.name,
                            info.partition,
                            ReadFrom::Offset(offset),
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
                    exact,
                });
            }
        }
        Ok(GroupLag {
            group: group.to_string(),
            exact: partitions.iter().all(|p| p.exact),
            total_events: partitions.iter().map(|p| p.events).sum(),
            max_seconds: partitions.iter().map(|p| p.seconds).fold(0.0, f64::max),
            partitions,
        })
    }

    /// Counts the records in `from..high_watermark` whose type the group's filter matches,
    /// reading at most [`LAG_SCAN_LIMIT`] of them (type headers only): the count, the offset of
    /// the first match (or, past the limit, of the first unread record), and whether the count
    /// is exact.
    async fn matching_after(
        &self,
        config: &super::GroupConfig,
        stream: &StreamName,
        partition: Partition,
        from: u64,
        high_watermark: u64,
    ) -> Result<(u64, Option<u64>, bool)> {
        let end = high_watermark.min(from.saturating_add(LAG_SCAN_LIMIT));
        let (mut count, mut first, mut at) = (0u64, None, from);
        while at < end {
            let want = (end - at).min(1_000) as usize;
            let records = self
                .shared
                .backend
                .read(stream, partition, ReadFrom::Offset(at), want, 16 << 20)
                .await?;
            let Some(last) = records.last() else { break };
            at = last.offset + 1;
            for record in records.iter().take_while(|r| r.offset < end) {
                let event_type = record
                    .headers
                    .iter()
                    .find(|h| h.name.as_ref() == TYPE_HEADER.as_bytes())
                    .and_then(|h| std::str::from_utf8(&h.value).ok());
                // A record without a readable type (a poison pill) is the group's to handle.
                if event_type.is_none_or(|t| config.filter.matches(t)) {
                    count += 1;
                    first.get_or_insert(record.offset);
                }
            }
        }
        if at >= high_watermark {
            return Ok((count, first, true));
        }
        let unread = high_watermark - at;
        Ok((count + unread, first.or(Some(at)), false))
    }
}
