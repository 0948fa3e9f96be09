//! The runtime handle: owns the backend, the stream cache and the producer's dedup windows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use runnel_backend::{Backend, BackendError, Partition, ReadFrom, StreamConfig, StreamName};
use runnel_envelope::Event;

use crate::config::RuntimeConfig;
use crate::dedup::{DedupWindow, event_identity};
use crate::error::Result;
use crate::producer::{IDENTITY_HEADER, PublishAck, TypedEvent, partition_for_key, typed_event};
use crate::schemas::Schemas;
use runnel_schema::{RegistryConfig, SchemaRegistry};

/// Runnel's runtime over one backend. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Runnel {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub backend: Arc<dyn Backend>,
    pub cfg: RuntimeConfig,
    pub schemas: Schemas,
    streams: tokio::sync::Mutex<HashMap<StreamName, Arc<StreamState>>>,
    /// Streams this runtime created: its running group members whose filter matches one
    /// rebalance at once instead of at their next heartbeat (a third of the lease TTL).
    pub created: tokio::sync::broadcast::Sender<StreamName>,
    /// The consumer instances running in this process, so that deleting a group or a
    /// stream can stop what runs on it before its data goes.
    pub members: Mutex<Vec<std::sync::Weak<crate::group::Member>>>,
    /// Streams being deleted: members do not take their partitions meanwhile.
    pub deleting: Mutex<std::collections::HashSet<StreamName>>,
}

impl Shared {
    pub(crate) fn stream_created(&self, name: &StreamName) {
        // No receiver (no group running here) is not an error.
        let _ = self.created.send(name.clone());
    }

    /// Registers a consumer instance running in this process.
    pub(crate) fn member_started(&self, member: &Arc<crate::group::Member>) {
        let mut members = lock(&self.members);
        members.retain(|m| m.strong_count() > 0);
        members.push(Arc::downgrade(member));
    }

    /// The consumer instances still running in this process.
    pub(crate) fn running_members(&self) -> Vec<Arc<crate::group::Member>> {
        lock(&self.members)
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect()
    }

    pub(crate) fn is_deleting(&self, stream: &StreamName) -> bool {
        lock(&self.deleting).contains(stream)
    }

    /// Forgets the producer's state of a deleted stream: the next publish creates it anew,
    /// with an empty dedup window.
    pub(crate) async fn forget_stream(&self, name: &StreamName) {
        self.streams.lock().await.remove(name);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the producer keeps per stream.
pub(crate) struct StreamState {
    pub name: StreamName,
    pub partitions: u32,
    round_robin: AtomicU32,
    dedup: Mutex<DedupWindow>,
}

impl StreamState {
    pub fn new(name: StreamName, partitions: u32, window: DedupWindow) -> Self {
        Self {
            name,
            partitions,
            round_robin: AtomicU32::new(0),
            dedup: Mutex::new(window),
        }
    }

    pub fn lock_dedup(&self) -> MutexGuard<'_, DedupWindow> {
        self.dedup.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Same key, same partition; no key, the next partition in turn.
    pub fn choose_partition(&self, key: Option<&str>) -> Partition {
        match key {
            Some(key) => partition_for_key(key, self.partitions),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % self.partitions.max(1),
        }
    }
}

impl std::fmt::Debug for Runnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runnel")
            .field("backend", &self.shared.backend.kind())
            .finish_non_exhaustive()
    }
}

impl Runnel {
    /// A runtime over `backend`.
    pub fn open(cfg: RuntimeConfig, backend: Arc<dyn Backend>) -> Self {
        let registry = Arc::new(SchemaRegistry::new(
            backend.clone(),
            RegistryConfig {
                require_schema: cfg.require_schema,
                ..RegistryConfig::default()
            },
        ));
        Self {
            shared: Arc::new(Shared {
                schemas: Schemas::new(registry, cfg.require_schema),
                backend,
                cfg,
                streams: tokio::sync::Mutex::new(HashMap::new()),
                created: tokio::sync::broadcast::channel(64).0,
                members: Mutex::new(Vec::new()),
                deleting: Mutex::new(std::collections::HashSet::new()),
            }),
        }
    }

    /// The backend underneath.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.shared.backend
    }

    /// The schema registry publishes and consumes are checked against.
    pub fn schemas(&self) -> &Arc<SchemaRegistry> {
        &self.shared.schemas.registry
    }

    /// The configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.shared.cfg
    }

    /// Publishes one event; returns once it is durable by the backend's setting.
    pub async fn publish(&self, event: Event) -> Result<PublishAck> {
        match self.shared.publish_batch(vec![event]).await {
            Ok(mut acks) => acks.pop().ok_or(crate::RuntimeError::Closed),
            // One event: its error, not "event 0 of the batch".
            Err(crate::RuntimeError::InBatch { source, .. }) => Err(*source),
            Err(e) => Err(e),
        }
    }

    /// Publishes a batch, validated whole before anything is appended. Acks are in input order.
    pub async fn publish_batch(&self, events: Vec<Event>) -> Result<Vec<PublishAck>> {
        self.shared.publish_batch(events).await
    }

    /// Publishes a typed value as an event of its type and schema version.
    pub async fn publish_typed<T: TypedEvent>(&self, value: &T) -> Result<PublishAck> {
        let event = typed_event(value, &self.shared.cfg.source)?;
        self.publish(event).await
    }

    /// Creates a stream explicitly (streams are otherwise created on first publish).
    pub async fn create_stream(&self, name: &StreamName, config: StreamConfig) -> Result<()> {
        self.shared.backend.create_stream(name, config).await?;
        self.shared.stream_created(name);
        Ok(())
    }

    /// Creates a stream, or finds the one that exists as asked: returns it and whether this
    /// call created it. The partition count, and the retention when `retention_given`, are
    /// fixed at creation: an existing stream with another count is
    /// [`BackendError::StreamExists`], with another retention
    /// [`RuntimeError::StreamRetentionDiffers`] (rather than answered as if it were created).
    ///
    /// The name must be one an event type's domain can have (`a-z`, `0-9`, `_`): a stream
    /// named otherwise could never be published to, and names with `-` are Runnel's own
    /// (`replay-<group>`), so a user's stream cannot take a group's replay stream's name.
    pub async fn ensure_stream(
        &self,
        name: &StreamName,
        config: StreamConfig,
        retention_given: bool,
    ) -> Result<(runnel_backend::StreamInfo, bool)> {
        if name.as_str().contains('-') {
            return Err(crate::RuntimeError::Name(runnel_backend::InvalidName {
                what: "stream name",
                name: name.to_string(),
                reason: "no event type could publish to it: a stream is named by its event \
                         types' domain (`order` for `order.placed`: a-z, 0-9 and `_`); names \
                         with `-` are kept for Runnel's own streams (`replay-<group>`)",
            }));
        }
        let existed = match self.shared.backend.describe_stream(name).await {
            Ok(existing) => {
                if retention_given && existing.config.retention != config.retention {
                    return Err(crate::RuntimeError::StreamRetentionDiffers {
                        stream: name.to_string(),
                        existing: describe_retention(&existing.config.retention),
                        asked: describe_retention(&config.retention),
                    });
                }
                true
            }
            Err(BackendError::UnknownStream(_)) => false,
            Err(e) => return Err(e.into()),
        };
        self.shared.backend.create_stream(name, config).await?;
        let info = self.shared.backend.describe_stream(name).await?;
        if !existed {
            self.shared.stream_created(name);
        }
        Ok((info, !existed))
    }

    /// The last `last` events of each partition of `stream` (every event with `u64::MAX`),
    /// partition by partition, oldest first in each. A stream that does not exist yet reads
    /// as empty; a record that is not an event (a poison pill) is skipped and logged.
    pub async fn recent_events(&self, stream: &StreamName, last: u64) -> Result<Vec<Event>> {
        let backend = &self.shared.backend;
        let info = match backend.describe_stream(stream).await {
            Ok(info) => info,
            Err(BackendError::UnknownStream(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut events = Vec::new();
        for partition in info.partitions {
            let mut offset = partition
                .start_offset
                .max(partition.high_watermark.saturating_sub(last));
            while offset < partition.high_watermark {
                let records = match backend
                    .read(
                        stream,
                        partition.partition,
                        ReadFrom::Offset(offset),
                        1000,
                        4 << 20,
                    )
                    .await
                {
                    Ok(records) => records,
                    // Trimmed by retention in between: go on from the new start.
                    Err(BackendError::OffsetOutOfRange { .. }) => {
                        let now = backend.partition_info(stream, partition.partition).await?;
                        if now.start_offset <= offset {
                            break;
                        }
                        offset = now.start_offset;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let Some(end) = records.last().map(|r| r.offset + 1) else {
                    break;
                };
                for record in records {
                    match Event::decode_binary(&record.value) {
                        Ok(event) => events.push(event),
                        Err(error) => tracing::warn!(
                            %stream, partition = partition.partition, offset = record.offset, %error,
                            "a record that is not an event was skipped"
                        ),
                    }
                }
                offset = end;
            }
        }
        Ok(events)
    }
}

impl Shared {
    /// The producer state of a stream, creating the stream with the defaults on first use and
    /// rebuilding its dedup window from the log.
    pub(crate) async fn stream_state(&self, name: &StreamName) -> Result<Arc<StreamState>> {
        let mut streams = self.streams.lock().await;
        if let Some(state) = streams.get(name) {
            return Ok(state.clone());
        }
        // An existing stream keeps its own partition count; a new one gets the defaults.
        let info = match self.backend.describe_stream(name).await {
            Ok(info) => info,
            Err(BackendError::UnknownStream(_)) => {
                let defaults = StreamConfig {
                    partitions: self.cfg.default_partitions,
                    retention: self.cfg.default_retention,
                };
                match self.backend.create_stream(name, defaults).await {
                    Ok(info) => {
                        self.stream_created(name);
                        info
                    }
                    // Created by someone else in between.
                    Err(BackendError::StreamExists { .. }) => {
                        self.backend.describe_stream(name).await?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        let window = self
            .rebuild_dedup_window(name, info.config.partitions)
            .await?;
        let state = Arc::new(StreamState::new(
            name.clone(),
            info.config.partitions,
            window,
        ));
        streams.insert(name.clone(), state.clone());
        Ok(state)
    }

    /// Reads the ids of records appended within the dedup window, from every partition.
    async fn rebuild_dedup_window(
        &self,
        name: &StreamName,
        partitions: u32,
    ) -> Result<DedupWindow> {
        let window_us = self.cfg.dedup_window.as_micros() as u64;
        let mut window = DedupWindow::new(window_us, self.cfg.dedup_capacity);
        let since = self.cfg.clock.now_micros().saturating_sub(window_us);
        let mut found = Vec::new();
        for partition in 0..partitions {
            let mut offset = self.backend.offset_for_time(name, partition, since).await?;
            loop {
                let records = self
                    .backend
                    .read(name, partition, ReadFrom::Offset(offset), 10_000, 64 << 20)
                    .await?;
                let Some(last) = records.last() else { break };
                offset = last.offset + 1;
                for record in records {
                    if let Some(hash) = record_identity(&record) {
                        found.push((record.timestamp, hash, partition, record.offset));
                    }
                }
            }
        }
        // Oldest first, so capacity evicts the oldest.
        found.sort_unstable_by_key(|(at, ..)| *at);
        for (at, hash, partition, offset) in found {
            window.complete(hash, partition, offset, at);
        }
        Ok(window)
    }
}

/// The identity hash of a stored event: its header, or, for records written before the header
/// existed, the hash of the decoded event's source and id. `None` for a record that is neither
/// (a poison pill cannot be a duplicate of anything).
fn record_identity(record: &runnel_backend::StoredRecord) -> Option<u128> {
    let header = record
        .headers
        .iter()
        .find(|h| h.name.as_ref() == IDENTITY_HEADER.as_bytes());
    match header {
        Some(h) => std::str::from_utf8(&h.value)
            .ok()
            .and_then(|hex| u128::from_str_radix(hex, 16).ok()),
        None => Event::decode_binary(&record.value)
            .ok()
            .map(|event| event_identity(&event)),
    }
}

/// A retention as the HTTP API spells it: `{"max_age_ms":…,"max_bytes_per_partition":…}`.
fn describe_retention(retention: &runnel_backend::RetentionConfig) -> String {
    serde_json::json!({
        "max_age_ms": retention.max_age.map(|d| d.as_millis() as u64),
        "max_bytes_per_partition": retention.max_bytes_per_partition,
    })
    .to_string()
}
