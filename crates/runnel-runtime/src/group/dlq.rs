//! Dead-letter queues: one per consumer group, holding what the group could not process.
//!
//! An entry keeps the original log record value byte for byte, with the failure's class and
//! reason, the attempts made, the first and last failure times and where the event came from.
//! Entries live in the backend's key-value store under `group/stream/partition/offset`, so
//! every backend keeps them. Replay appends the original bytes to the group's own replay
//! stream (`replay-<group>`), which only that group reads: the event is delivered again to
//! this group and never re-fanned-out to others; the entry leaves the queue when the replay
//! succeeds.

use bytes::Bytes;
use runnel_backend::{Expect, Header, Partition, Record, StreamConfig, StreamName};
use runnel_clock::Micros;
use serde::{Deserialize, Serialize};

use super::delivery::FailureClass;
use super::keys;
use crate::error::{Result, RuntimeError};
use crate::pattern::TypePattern;
use crate::producer::{ID_HEADER, TYPE_HEADER};
use crate::runtime::Runnel;

/// Header naming the dead-letter entry a replayed record came from.
pub(crate) const DLQ_ENTRY_HEADER: &str = "dlq-entry";

/// One dead-lettered event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqEntry {
    /// `stream-partition-offset` of the original event.
    pub id: String,
    pub group: String,
    pub event_id: String,
    pub event_type: String,
    pub class: FailureClass,
    pub reason: String,
    /// Deliveries made before it was dead-lettered.
    pub attempts: u32,
    pub first_failure_at: Micros,
    pub last_failure_at: Micros,
    pub dead_lettered_at: Micros,
    pub stream: StreamName,
    pub partition: Partition,
    pub offset: u64,
    /// How many times it was replayed and failed again.
    pub replays: u32,
    /// A replay was requested and has not finished.
    #[serde(default)]
    pub replay_pending: bool,
    /// The event exactly as the log stored it (the binary envelope), base64 in JSON.
    #[serde(with = "base64_bytes")]
    pub original: Bytes,
}

/// Which entries an operation applies to. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqFilter {
    /// Event types, as a pattern (`order.*`).
    #[serde(default, rename = "type")]
    pub event_type: Option<TypePattern>,
    #[serde(default)]
    pub class: Option<FailureClass>,
    /// Dead-lettered at or after (µs since the epoch).
    #[serde(default)]
    pub since: Option<Micros>,
    /// Dead-lettered before (µs since the epoch).
    #[serde(default)]
    pub until: Option<Micros>,
    /// Case-insensitive substring of the reason.
    #[serde(default)]
    pub reason: Option<String>,
}

impl DlqFilter {
    pub fn matches(&self, entry: &DlqEntry) -> bool {
        self.event_type
            .as_ref()
            .is_none_or(|p| p.matches(&entry.event_type))
            && self.class.is_none_or(|c| c == entry.class)
            && self.since.is_none_or(|t| entry.dead_lettered_at >= t)
            && self.until.is_none_or(|t| entry.dead_lettered_at < t)
            && self
                .reason
                .as_ref()
                .is_none_or(|r| entry.reason.to_lowercase().contains(&r.to_lowercase()))
    }
}

/// Entries chosen by id or by filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DlqSelector {
    Ids(Vec<String>),
    Filter(DlqFilter),
    All,
}

/// A page of entries; `next` is the cursor for the following page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DlqPage {
    pub entries: Vec<DlqEntry>,
    pub next: Option<String>,
}

/// The depth of a group's queue and whether it is over the alert threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DlqDepth {
    pub depth: u64,
    pub alert_threshold: Option<u64>,
    pub alert: bool,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Entries sent to the group's replay stream.
    pub replayed: usize,
    /// Entries skipped because a replay of them is still running.
    pub already_pending: usize,
    /// Requested ids that are not in the queue.
    pub missing: Vec<String>,
}

/// The stream a group's replays go through; only that group reads it.
pub fn replay_stream(group: &str) -> Result<StreamName> {
    Ok(StreamName::new(format!("replay-{group}"))?)
}

/// Whether a group reads a stream: streams its filter can match, and its own replay stream
/// — never another group's replay stream.
pub(crate) fn group_reads_stream(group: &super::config::GroupConfig, stream: &StreamName) -> bool {
    if stream.as_str().starts_with("replay-") {
        return stream.as_str()["replay-".len()..] == group.name;
    }
    group.filter.matches_stream(stream.as_str())
}

pub(crate) fn entry_id(stream: &StreamName, partition: Partition, offset: u64) -> String {
    format!("{stream}-{partition}-{offset}")
}

fn entry_key(group: &str, id: &str) -> String {
    format!("{group}/{id}")
}

/// Writes (or overwrites) a dead-letter entry; durable before it returns.
pub(crate) async fn put_entry(runnel: &Runnel, entry: &DlqEntry) -> Result<()> {
    let value = encode_entry(entry)?;
    runnel
        .shared
        .backend
        .kv_put(
            keys::DLQ,
            &entry_key(&entry.group, &entry.id),
            value,
            Expect::Any,
            None,
        )
        .await?;
    Ok(())
}

/// First byte of an entry stored as [`encode_entry`] writes it; older entries are JSON
/// objects (`{`) with the original in base64.
const ENTRY_FORMAT: u8 = 1;

/// An entry as stored: a format byte, the length of its metadata (u32, little-endian), the
/// metadata as JSON, then the original event's bytes as they are. Base64 inside the JSON made
/// an entry a third larger than its event, so a large event's entry could exceed what the
/// key-value store takes (JetStream's max_payload) and the dead-lettering failed for good.
fn encode_entry(entry: &DlqEntry) -> Result<Bytes> {
    let metadata = DlqEntry {
        original: Bytes::new(),
        ..entry.clone()
    };
    let json = serde_json::to_vec(&metadata).map_err(|e| RuntimeError::Serialize(e.to_string()))?;
    let length = u32::try_from(json.len())
        .map_err(|_| RuntimeError::Serialize("DLQ entry metadata over 4 GiB".into()))?;
    let mut value = Vec::with_capacity(5 + json.len() + entry.original.len());
    value.push(ENTRY_FORMAT);
    value.extend_from_slice(&length.to_le_bytes());
    value.extend_from_slice(&json);
    value.extend_from_slice(&entry.original);
    Ok(value.into())
}

fn parse_entry(value: &[u8]) -> Option<DlqEntry> {
    match value.split_first()? {
        (&ENTRY_FORMAT, rest) => {
            let (length, rest) = rest.split_at_checked(4)?;
            let length = u32::from_le_bytes(length.try_into().ok()?) as usize;
            let (json, original) = rest.split_at_checked(length)?;
            let mut entry: DlqEntry = serde_json::from_slice(json).ok()?;
            entry.original = Bytes::copy_from_slice(original);
            Some(entry)
        }
        _ => serde_json::from_slice(value).ok(),
    }
}

impl Runnel {
    /// Entries of a group's dead-letter queue matching `filter`, in origin order, at most
    /// `limit` after the cursor `after`.
    pub async fn dlq_list(
        &self,
        group: &str,
        filter: &DlqFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DlqPage> {
        self.group_config(group).await?;
        let prefix = format!("{group}/");
        let mut cursor = after.map(|id| entry_key(group, id));
        let mut entries = Vec::new();
        let limit = limit.max(1);
        loop {
            let page = self
                .shared
                .backend
                .kv_scan(keys::DLQ, &prefix, cursor.as_deref(), 1_000)
                .await?;
            let exhausted = page.len() < 1_000;
            for kv in page {
                cursor = Some(kv.key.clone());
                if let Some(entry) = parse_entry(&kv.value)
                    && filter.matches(&entry)
                {
                    entries.push(entry);
                    if entries.len() == limit {
                        let next = entries.last().map(|e| e.id.clone());
                        return Ok(DlqPage { entries, next });
                    }
                }
            }
            if exhausted {
                return Ok(DlqPage {
                    entries,
                    next: None,
                });
            }
        }
    }

    /// One entry.
    pub async fn dlq_get(&self, group: &str, id: &str) -> Result<DlqEntry> {
        self.group_config(group).await?;
        let entry = self
            .shared
            .backend
            .kv_get(keys::DLQ, &entry_key(group, id))
            .await?
            .and_then(|kv| parse_entry(&kv.value));
        entry.ok_or_else(|| RuntimeError::UnknownDlqEntry {
            group: group.to_string(),
            id: id.to_string(),
        })
    }

    /// Every entry a selector chooses (for replay and purge).
    async fn dlq_select(
        &self,
        group: &str,
        selector: &DlqSelector,
    ) -> Result<(Vec<DlqEntry>, Vec<String>)> {
        match selector {
            DlqSelector::Ids(ids) => {
                let mut found = Vec::new();
                let mut missing = Vec::new();
                for id in ids {
                    match self.dlq_get(group, id).await {
                        Ok(entry) => found.push(entry),
                        Err(RuntimeError::UnknownDlqEntry { .. }) => missing.push(id.clone()),
                        Err(e) => return Err(e),
                    }
                }
                Ok((found, missing))
            }
            DlqSelector::Filter(filter) => Ok((self.dlq_all(group, filter).await?, Vec::new())),
            DlqSelector::All => Ok((
                self.dlq_all(group, &DlqFilter::default()).await?,
                Vec::new(),
            )),
        }
    }

    async fn dlq_all(&self, group: &str, filter: &DlqFilter) -> Result<Vec<DlqEntry>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .dlq_list(group, filter, after.as_deref(), 1_000)
                .await?;
            all.extend(page.entries);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Sends entries back to this group only, through its replay stream, with a fresh
    /// attempt count; each leaves the queue when its replay succeeds.
    pub async fn dlq_replay(&self, group: &str, selector: &DlqSelector) -> Result<ReplayReport> {
        let (entries, missing) = self.dlq_select(group, selector).await?;
        let stream = replay_stream(group)?;
        self.shared
            .backend
            .create_stream(
                &stream,
                StreamConfig {
                    partitions: 1,
                    ..StreamConfig::default()
                },
            )
            .await?;
        self.shared.stream_created(&stream);
        let mut report = ReplayReport {
            missing,
            ..ReplayReport::default()
        };
        let mut batch = Vec::new();
        let mut marked = Vec::new();
        for mut entry in entries {
            if entry.replay_pending {
                report.already_pending += 1;
                continue;
            }
            batch.push(Record {
                key: Bytes::new(),
                value: entry.original.clone(),
                headers: vec![
                    Header::new(ID_HEADER, entry.event_id.clone()),
                    Header::new(TYPE_HEADER, entry.event_type.clone()),
                    Header::new(DLQ_ENTRY_HEADER, entry.id.clone()),
                ],
            });
            entry.replay_pending = true;
            marked.push(entry);
        }
        // Mark first: a replay that finishes before the mark is written must not find it stale.
        for entry in &marked {
            put_entry(self, entry).await?;
        }
        for chunk in batch.chunks(1_000) {
            self.shared
                .backend
                .append(&stream, 0, chunk.to_vec())
                .await?;
        }
        report.replayed = marked.len();
        Ok(report)
    }

    /// Removes entries; returns how many.
    pub async fn dlq_purge(&self, group: &str, selector: &DlqSelector) -> Result<usize> {
        let (entries, _) = self.dlq_select(group, selector).await?;
        for entry in &entries {
            self.shared
                .backend
                .kv_delete(keys::DLQ, &entry_key(group, &entry.id), Expect::Any)
                .await?;
        }
        Ok(entries.len())
    }

    /// The queue's depth and alert state.
    pub async fn dlq_depth(&self, group: &str) -> Result<DlqDepth> {
        let config = self.group_config(group).await?;
        let depth = count_entries(self, group).await?;
        Ok(DlqDepth {
            depth,
            alert_threshold: config.dlq_alert_threshold,
            alert: config.dlq_alert_threshold.is_some_and(|t| depth >= t),
        })
    }
}

/// Removes the entry a successful replay came from.
pub(crate) async fn remove_entry(runnel: &Runnel, group: &str, id: &str) -> Result<()> {
    runnel
        .shared
        .backend
        .kv_delete(keys::DLQ, &entry_key(group, id), Expect::Any)
        .await?;
    Ok(())
}

pub(crate) async fn count_entries(runnel: &Runnel, group: &str) -> Result<u64> {
    let prefix = format!("{group}/");
    let mut after: Option<String> = None;
    let mut depth = 0u64;
    loop {
        let page = runnel
            .shared
            .backend
            .kv_scan(keys::DLQ, &prefix, after.as_deref(), 1_000)
            .await?;
        depth += page.len() as u64;
        match page.last() {
            Some(last) if page.len() == 1_000 => after = Some(last.key.clone()),
            _ => return Ok(depth),
        }
    }
}

mod base64_bytes {
    use base64::Engine;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(original: &'static [u8]) -> DlqEntry {
        DlqEntry {
            id: "order-0-7".into(),
            group: "billing".into(),
            event_id: "e-7".into(),
            event_type: "order.placed".into(),
            class: FailureClass::Permanent,
            reason: "card declined".into(),
            attempts: 1,
            first_failure_at: 1,
            last_failure_at: 2,
            dead_lettered_at: 3,
            stream: StreamName::new("order").expect("name"),
            partition: 0,
            offset: 7,
            replays: 0,
            replay_pending: false,
            original: Bytes::from_static(original),
        }
    }

    #[test]
    fn entries_keep_their_original_as_bytes_and_older_json_entries_still_read() {
        let original: &'static [u8] = &[0, 1, 2, 0xff, b'{', b'"'];
        let stored = encode_entry(&entry(original)).expect("encode");
        let json_len = stored.len() - original.len();
        assert!(stored.ends_with(original), "the original, not base64");
        assert!(json_len < 400, "metadata only: {json_len} bytes");
        assert_eq!(parse_entry(&stored), Some(entry(original)));
        // Written by an earlier version: the whole entry as JSON, the original in base64.
        let older = serde_json::to_vec(&entry(original)).expect("json");
        assert_eq!(parse_entry(&older), Some(entry(original)));
        assert_eq!(parse_entry(&[ENTRY_FORMAT, 9, 0]), None, "truncated");
    }
}
