//! The correlation index: every event of one workflow, across streams, without a stream scan.
//!
//! A workflow's events share a correlation id: a reply built with `Message::reply` inherits its
//! input's, or takes the input's id when the input had none, so the root event is indexed under
//! its own id and everything it caused under the same key. The [`TraceIndexer`] is a consumer
//! group (`trace-index`, filter `>`) that writes one key-value entry per event it is handed:
//! key `<xxh3-128 of the correlation id>/<stream>/<partition>/<offset>`, value the entry's JSON.
//! Being a group, it scales out and survives restarts like any other (its lag is the index's
//! delay, shown with the other groups), and it costs the publish path nothing.
//!
//! [`trace`] reads one correlation id's entries with a prefix scan and orders them causally:
//! a tree by `causationid`, children after their cause, siblings by event time then position;
//! an event whose cause is not in the trace (its cause had another correlation) is a root.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use runnel_backend::{Backend, Expect, Partition};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::group::{ConsumerHandle, GroupConfig, HandlerError, Message, Ordering};
use crate::pattern::TypePattern;
use crate::runtime::Runnel;

/// The consumer group that maintains the index.
pub const TRACE_GROUP: &str = "trace-index";
/// The key-value bucket of the index.
pub const TRACE_BUCKET: &str = "runnel_trace";
/// Most events one trace answers with.
pub const MAX_TRACE_EVENTS: usize = 10_000;

/// One indexed event: where it is and how it relates to the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEntry {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub stream: String,
    pub partition: Partition,
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    /// The correlation id it was indexed under (its own id for a root).
    pub correlationid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<String>,
}

/// A trace entry placed in its causal tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceStep {
    /// 0 for a root, 1 for what a root caused, and so on.
    pub depth: usize,
    #[serde(flatten)]
    pub entry: TraceEntry,
}

/// Settings of the indexer.
#[derive(Debug, Clone)]
pub struct TraceIndexOptions {
    /// How long an entry is kept. Default 7 days.
    pub ttl: Duration,
    /// This instance's id within the group (a restarted server re-adopts its leases).
    pub instance_id: Option<String>,
}

impl Default for TraceIndexOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(7 * 24 * 3600),
            instance_id: None,
        }
    }
}

/// The key prefix of one correlation id's entries (hashed: correlation ids are free text, keys
/// are `a-z0-9_-/.`).
fn correlation_prefix(correlation: &str) -> String {
    format!(
        "{:032x}/",
        xxhash_rust::xxh3::xxh3_128(correlation.as_bytes())
    )
}

fn entry_key(entry: &TraceEntry) -> String {
    format!(
        "{}{}/{}/{:020}",
        correlation_prefix(&entry.correlationid),
        entry.stream,
        entry.partition,
        entry.offset
    )
}

/// Runs the index: a handle on the `trace-index` group's consumer (stop it to stop indexing).
pub struct TraceIndexer;

impl TraceIndexer {
    /// Joins the `trace-index` group and indexes every event of every stream from the oldest
    /// held. The group's stored settings are kept when it exists.
    pub async fn start(runnel: &Runnel, options: TraceIndexOptions) -> Result<ConsumerHandle> {
        let backend = runnel.backend().clone();
        // Indexing cannot kill the process: a killed server re-indexes, never dead-letters.
        let mut builder = runnel.group(TRACE_GROUP).blame_no_crashes();
        match runnel.group_config(TRACE_GROUP).await {
            Ok(_) => {}
            Err(RuntimeError::UnknownGroup(_)) => {
                let mut config = GroupConfig::new(TRACE_GROUP, TypePattern::new(">")?);
                config.ordering = Ordering::None;
                config.processed_ids = false;
                config.max_in_flight = 256;
                builder = builder.config(config);
            }
            Err(other) => return Err(other),
        }
        if let Some(instance) = options.instance_id {
            builder = builder.instance_id(instance);
        }
        let ttl = options.ttl;
        builder
            .run(move |message: Message| {
                let backend = backend.clone();
                async move {
                    index(&*backend, &message, ttl)
                        .await
                        .map_err(|e| HandlerError::service(format!("trace index: {e}")))?;
                    Ok(Vec::new())
                }
            })
            .await
    }
}

async fn index(backend: &dyn Backend, message: &Message, ttl: Duration) -> Result<()> {
    let event = &message.event;
    let entry = TraceEntry {
        id: event.id().as_str().to_string(),
        source: event.source().as_str().to_string(),
        event_type: event.event_type().as_str().to_string(),
        stream: message.stream.as_str().to_string(),
        partition: message.partition,
        offset: message.offset,
        time: event.time(),
        correlationid: event
            .correlation_id()
            .unwrap_or(event.id().as_str())
            .to_string(),
        causationid: event.causation_id().map(|c| c.as_str().to_string()),
    };
    let value = serde_json::to_vec(&entry)
        .map_err(|e| RuntimeError::Serialize(format!("trace entry: {e}")))?;
    backend
        .kv_put(
            TRACE_BUCKET,
            &entry_key(&entry),
            value.into(),
            Expect::Any,
            Some(ttl),
        )
        .await?;
    Ok(())
}

/// Every indexed event of `correlation`, in causal order (at most [`MAX_TRACE_EVENTS`]; the
/// flag says whether more were left out).
pub async fn trace(runnel: &Runnel, correlation: &str) -> Result<(Vec<TraceStep>, bool)> {
    let backend = runnel.backend();
    let prefix = correlation_prefix(correlation);
    let mut entries = Vec::new();
    let mut after: Option<String> = None;
    let mut truncated = false;
    loop {
        let page = backend
            .kv_scan(TRACE_BUCKET, &prefix, after.as_deref(), 1000)
            .await?;
        let full = page.len() == 1000;
        for kv in &page {
            // A hash collision (or an unreadable entry) is not part of this trace.
            if let Ok(entry) = serde_json::from_slice::<TraceEntry>(&kv.value)
                && entry.correlationid == correlation
            {
                entries.push(entry);
            }
        }
        after = page.last().map(|kv| kv.key.clone());
        if entries.len() >= MAX_TRACE_EVENTS {
            truncated = full || entries.len() > MAX_TRACE_EVENTS;
            entries.truncate(MAX_TRACE_EVENTS);
            break;
        }
        if !full {
            break;
        }
    }
    Ok((causal_order(entries), truncated))
}

/// Pre-order walk of the causation tree; siblings (and roots) by time, then stream, partition
/// and offset.
pub fn causal_order(entries: Vec<TraceEntry>) -> Vec<TraceStep> {
    let sort_key = |e: &TraceEntry| (e.time, e.stream.clone(), e.partition, e.offset);
    let ids: HashSet<String> = entries.iter().map(|e| e.id.clone()).collect();
    let mut roots = Vec::new();
    let mut children: HashMap<String, Vec<TraceEntry>> = HashMap::new();
    for entry in entries {
        match &entry.causationid {
            Some(cause) if ids.contains(cause) && *cause != entry.id => {
                children.entry(cause.clone()).or_default().push(entry)
            }
            _ => roots.push(entry),
        }
    }
    roots.sort_by_key(sort_key);
    for siblings in children.values_mut() {
        siblings.sort_by_key(sort_key);
    }
    let mut ordered = Vec::new();
    let mut visited: HashSet<String> = HashSet::new();
    let mut stack: Vec<(usize, TraceEntry)> = roots.into_iter().rev().map(|e| (0, e)).collect();
    while let Some((depth, entry)) = stack.pop() {
        // Two copies of one id (a redelivered output stored twice) expand once.
        let first = visited.insert(entry.id.clone());
        if first && let Some(kids) = children.remove(&entry.id) {
            stack.extend(kids.into_iter().rev().map(|k| (depth + 1, k)));
        }
        ordered.push(TraceStep { depth, entry });
    }
    // Entries left in a causation cycle (not reachable from a root) still appear.
    let mut rest: BTreeMap<_, TraceEntry> = BTreeMap::new();
    for entry in children.into_values().flatten() {
        rest.insert(sort_key(&entry), entry);
    }
    ordered.extend(
        rest.into_values()
            .map(|entry| TraceStep { depth: 0, entry }),
    );
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, cause: Option<&str>, offset: u64) -> TraceEntry {
        TraceEntry {
            id: id.into(),
            source: "/t".into(),
            event_type: "order.placed".into(),
            stream: "order".into(),
            partition: 0,
            offset,
            time: None,
            correlationid: "root".into(),
            causationid: cause.map(str::to_string),
        }
    }

    #[test]
    fn children_follow_their_cause_in_depth_first_order() {
        let entries = vec![
            entry("ship", Some("charge"), 5),
            entry("charge", Some("root"), 3),
            entry("reserve", Some("root"), 2),
            entry("root", None, 1),
            entry("released", Some("reserve"), 4),
        ];
        let order: Vec<(usize, String)> = causal_order(entries)
            .into_iter()
            .map(|s| (s.depth, s.entry.id))
            .collect();
        assert_eq!(
            order,
            vec![
                (0, "root".to_string()),
                (1, "reserve".to_string()),
                (2, "released".to_string()),
                (1, "charge".to_string()),
                (2, "ship".to_string()),
            ]
        );
    }

    #[test]
    fn an_event_whose_cause_is_elsewhere_is_a_root_and_cycles_are_kept() {
        let entries = vec![
            entry("b", Some("missing"), 2),
            entry("x", Some("y"), 3),
            entry("y", Some("x"), 4),
        ];
        let steps = causal_order(entries);
        assert_eq!(steps.len(), 3, "nothing indexed is left out");
        assert_eq!(steps[0].entry.id, "b");
        assert_eq!(steps[0].depth, 0);
    }

    #[test]
    fn keys_of_one_correlation_share_a_prefix_no_other_has() {
        let a = entry("a", None, 7);
        let key = entry_key(&a);
        assert!(key.starts_with(&correlation_prefix("root")));
        assert!(!key.starts_with(&correlation_prefix("roo")));
        assert!(key.ends_with("/order/0/00000000000000000007"));
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-/.".contains(&b))
        );
    }
}
