//! Publishing: validate, route to a stream by the type's domain, choose a partition by the
//! partition key, deduplicate by event id, append, and answer with the position.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::{JoinAll, join_all};
use runnel_backend::{AppendAck, BackendError, Partition, Record, StreamName};
use runnel_envelope::{Event, EventType, Source};
use serde::Serialize;
use tokio::sync::watch;

use crate::dedup::{BatchOutcome, IdMap, Seen, event_identity};
use crate::error::{Result, RuntimeError};
use crate::runtime::{Shared, StreamState};

/// Record header carrying the event id, read to rebuild the dedup window without decoding.
pub(crate) const ID_HEADER: &str = "id";
/// Record header carrying the event's identity hash (of source and id, 32 hex digits): the
/// dedup window is rebuilt from it without decoding, and JetStream deduplicates on it.
pub(crate) const IDENTITY_HEADER: &str = "identity";
/// Record header carrying the event type, so consumers can filter without decoding.
pub(crate) const TYPE_HEADER: &str = "type";

/// Where a published event is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishAck {
    pub id: String,
    pub stream: StreamName,
    pub partition: Partition,
    pub offset: u64,
    /// True when the id was already published within the dedup window: nothing was appended
    /// and the position is the first publish's.
    pub duplicate: bool,
}

/// A Rust type that is the data of one event type at one schema version.
pub trait TypedEvent: Serialize {
    /// The event type, `domain.fact` (e.g. `order.placed`).
    const EVENT_TYPE: &'static str;
    /// The schema version of this shape. Default 1.
    const SCHEMA_VERSION: u32 = 1;

    /// The entity key events are ordered by (e.g. the order id). Default: none.
    fn partition_key(&self) -> Option<String> {
        None
    }
}

/// Builds the envelope of a typed event.
pub(crate) fn typed_event<T: TypedEvent>(value: &T, source: &str) -> Result<Event> {
    let event_type = EventType::new(T::EVENT_TYPE)?;
    let source = Source::new(source)?;
    let data = serde_json::to_value(value).map_err(|e| RuntimeError::Serialize(e.to_string()))?;
    let mut builder = Event::builder(event_type, source)
        .data_json(data)
        .schema_version(T::SCHEMA_VERSION);
    if let Some(key) = value.partition_key() {
        builder = builder.partition_key(key);
    }
    Ok(builder.build()?)
}

/// The log record of an event: partition key as the record key, the binary envelope as the
/// value, id, identity hash and type as headers.
pub(crate) fn event_record(event: &Event) -> Record {
    let key = event
        .partition_key()
        .map(|k| Bytes::copy_from_slice(k.as_bytes()))
        .unwrap_or_default();
    Record::new(key, event.encode_binary())
        .with_header(
            ID_HEADER,
            Bytes::copy_from_slice(event.id().as_str().as_bytes()),
        )
        .with_header(
            IDENTITY_HEADER,
            format!("{:032x}", event_identity(event)).into_bytes(),
        )
        .with_header(
            TYPE_HEADER,
            Bytes::copy_from_slice(event.event_type().as_str().as_bytes()),
        )
}

pub(crate) fn stream_of(event: &Event) -> Result<StreamName> {
    Ok(StreamName::new(event.event_type().domain())?)
}

/// The stable partition of a key: xxh3-64 of its bytes, modulo the partition count.
pub fn partition_for_key(key: &str, partitions: u32) -> Partition {
    (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % partitions.max(1) as u64) as Partition
}

enum Planned {
    Fresh { partition: Partition, hash: u128 },
    Duplicate(Seen),
    SameAsEarlier(usize),
}

impl Shared {
    /// Publishes a batch: every event is validated before anything is appended.
    pub(crate) async fn publish_batch(&self, events: Vec<Event>) -> Result<Vec<PublishAck>> {
        let mut checked_events: Vec<(StreamName, Event)> = Vec::with_capacity(events.len());
        for (index, event) in events.into_iter().enumerate() {
            let checked = match event.check_size(&self.cfg.limits) {
                Ok(()) => self.schemas.check_publish(event).await,
                Err(e) => Err(e.into()),
            };
            let checked = checked.and_then(|event| {
                // A run of events of one domain names its stream once.
                let stream = match checked_events.last() {
                    Some((previous, _)) if previous.as_str() == event.event_type().domain() => {
                        previous.clone()
                    }
                    _ => stream_of(&event)?,
                };
                Ok((stream, event))
            });
            match checked {
                Ok(checked) => checked_events.push(checked),
                Err(source) => {
                    return Err(RuntimeError::InBatch {
                        index,
                        source: Box::new(source),
                    });
                }
            }
        }
        // Most batches name one stream: publish them as they are.
        if let Some((first, _)) = checked_events.first()
            && checked_events.iter().all(|(stream, _)| stream == first)
        {
            let state = self.stream_state(first).await?;
            let events = checked_events.into_iter().map(|(_, e)| e).collect();
            return self.publish_to_stream(&state, events).await;
        }
        let mut by_stream: BTreeMap<StreamName, Vec<(usize, Event)>> = BTreeMap::new();
        for (index, (stream, event)) in checked_events.into_iter().enumerate() {
            by_stream.entry(stream).or_default().push((index, event));
        }
        let total = by_stream.values().map(Vec::len).sum();
        let mut acks: Vec<Option<PublishAck>> = vec![None; total];
        for (stream, items) in by_stream {
            let state = self.stream_state(&stream).await?;
            let indices: Vec<usize> = items.iter().map(|(i, _)| *i).collect();
            let events: Vec<Event> = items.into_iter().map(|(_, e)| e).collect();
            let stream_acks = self.publish_to_stream(&state, events).await?;
            for (index, ack) in indices.into_iter().zip(stream_acks) {
                acks[index] = Some(ack);
            }
        }
        Ok(acks.into_iter().flatten().collect())
    }

    async fn publish_to_stream(
        &self,
        state: &Arc<StreamState>,
        events: Vec<Event>,
    ) -> Result<Vec<PublishAck>> {
        let now = self.cfg.clock.now_micros();
        let (outcome_tx, outcome_rx) = watch::channel(None);
        let outcome_rx = Arc::new(outcome_rx);
        let mut plan = Vec::with_capacity(events.len());
        {
            let mut window = state.lock_dedup();
            let mut in_batch: IdMap<usize> = IdMap::default();
            for (i, event) in events.iter().enumerate() {
                let hash = event_identity(event);
                if let Some(seen) = window.lookup(hash, now) {
                    plan.push(Planned::Duplicate(seen));
                } else if let Some(first) = in_batch.get(&hash) {
                    plan.push(Planned::SameAsEarlier(*first));
                } else {
                    let partition = state.choose_partition(event.partition_key());
                    window.reserve(hash, outcome_rx.clone());
                    in_batch.insert(hash, i);
                    plan.push(Planned::Fresh { partition, hash });
                }
            }
        }

        let mut per_partition: BTreeMap<Partition, Vec<Reserved>> = BTreeMap::new();
        for (i, planned) in plan.iter().enumerate() {
            if let Planned::Fresh { partition, hash } = planned {
                per_partition.entry(*partition).or_default().push(Reserved {
                    index: i,
                    hash: *hash,
                });
            }
        }
        // From here the ids are reserved in the window. If this publish is dropped before its
        // appends settle (a client that disconnected, a timeout around the call), `Appending`
        // hands them to a task that finishes and settles them: no id stays reserved.
        let events = Arc::new(events);
        let positions = if per_partition.is_empty() {
            vec![None; events.len()]
        } else {
            Appending::start(
                self.backend.clone(),
                state.clone(),
                events.clone(),
                per_partition,
                outcome_tx,
            )
            .finish()
            .await?
        };

        // Every fresh event was appended (a failure returned above).
        let appended = |i: usize| {
            positions[i].ok_or_else(|| RuntimeError::FirstPublishFailed {
                id: events[i].id().as_str().to_string(),
                reason: "its append reported no position".into(),
            })
        };
        let mut acks = Vec::with_capacity(events.len());
        for (i, planned) in plan.into_iter().enumerate() {
            let id = events[i].id().as_str().to_string();
            let (partition, offset, duplicate) = match planned {
                Planned::Fresh { .. } => appended(i)?,
                Planned::SameAsEarlier(first) => {
                    let (p, o, _) = appended(first)?;
                    (p, o, true)
                }
                Planned::Duplicate(seen) => {
                    let identity = event_identity(&events[i]);
                    let (p, o) = self.resolve_duplicate(state, &id, identity, seen).await?;
                    (p, o, true)
                }
            };
            acks.push(PublishAck {
                id,
                stream: state.name.clone(),
                partition,
                offset,
                duplicate,
            });
        }
        Ok(acks)
    }

    /// Waits for an in-flight first publish of the same source and id and returns its position.
    async fn resolve_duplicate(
        &self,
        state: &StreamState,
        id: &str,
        identity: u128,
        mut seen: Seen,
    ) -> Result<(Partition, u64)> {
        loop {
            match seen {
                Seen::Done { partition, offset } => return Ok((partition, offset)),
                Seen::Pending(mut outcome) => {
                    let result = outcome
                        .wait_for(Option::is_some)
                        .await
                        .map(|r| r.clone())
                        .map_err(|_| RuntimeError::Closed)?;
                    if let Some(Err(reason)) = result {
                        return Err(RuntimeError::FirstPublishFailed {
                            id: id.to_string(),
                            reason,
                        });
                    }
                    let now = self.cfg.clock.now_micros();
                    match state.lock_dedup().lookup(identity, now) {
                        Some(next) => seen = next,
                        None => {
                            return Err(RuntimeError::FirstPublishFailed {
                                id: id.to_string(),
                                reason: "its position left the dedup window".into(),
                            });
                        }
                    }
                }
            }
        }
    }
}

/// A fresh event of a publish: its index in the publish and its reserved id in the window.
struct Reserved {
    index: usize,
    hash: u128,
}

type AppendFuture = Pin<Box<dyn Future<Output = runnel_backend::Result<AppendAck>> + Send>>;

/// Where each fresh event of a publish landed: partition, offset, and whether the engine found
/// it already stored (an engine-level dedup the window did not know of, e.g. another
/// process's publish).
type Positions = Vec<Option<(Partition, u64, bool)>>;

/// The appends of one publish's fresh events (one per partition, polled together) and what
/// settling their reservations in the dedup window takes. Dropped before it settled, it
/// moves its appends, as far as they got, into a task that finishes and settles them.
struct Appending {
    state: Arc<StreamState>,
    /// Events in the publish (fresh or not): the length of its positions.
    event_count: usize,
    partitions: Vec<(Partition, Vec<Reserved>)>,
    appends: Option<JoinAll<AppendFuture>>,
    outcome_tx: Option<watch::Sender<BatchOutcome>>,
    /// This is the task a dropped publish handed its appends to.
    handed_over: bool,
}

impl Appending {
    fn start(
        backend: Arc<dyn runnel_backend::Backend>,
        state: Arc<StreamState>,
        events: Arc<Vec<Event>>,
        per_partition: BTreeMap<Partition, Vec<Reserved>>,
        outcome_tx: watch::Sender<BatchOutcome>,
    ) -> Self {
        let partitions: Vec<(Partition, Vec<Reserved>)> = per_partition.into_iter().collect();
        // Each partition's records are encoded when its append is first polled, so the first
        // partition's records are on their way while the next ones are encoded.
        let appends = partitions.iter().map(|(partition, indices)| {
            let (backend, events, stream) = (backend.clone(), events.clone(), state.name.clone());
            let partition = *partition;
            let indices: Vec<usize> = indices.iter().map(|r| r.index).collect();
            Box::pin(async move {
                let records = indices.iter().map(|i| event_record(&events[*i])).collect();
                backend.append(&stream, partition, records).await
            }) as AppendFuture
        });
        Self {
            event_count: events.len(),
            appends: Some(join_all(appends)),
            state,
            partitions,
            outcome_tx: Some(outcome_tx),
            handed_over: false,
        }
    }

    async fn finish(mut self) -> Result<Positions> {
        let results = match self.appends.as_mut() {
            Some(appends) => appends.await,
            None => Vec::new(),
        };
        self.appends = None;
        self.settle(results)
    }

    /// Completes the window's reservations of what was appended, releases those of what
    /// failed, and tells publishes waiting on these ids.
    fn settle(&mut self, results: Vec<runnel_backend::Result<AppendAck>>) -> Result<Positions> {
        let mut positions: Positions = vec![None; self.event_count];
        let mut failure: Option<BackendError> = None;
        {
            let mut window = self.state.lock_dedup();
            for ((partition, reserved), result) in self.partitions.iter().zip(results) {
                match result {
                    Ok(AppendAck {
                        base_offset,
                        timestamp,
                        duplicate,
                        ..
                    }) => {
                        for (k, Reserved { index, hash }) in reserved.iter().enumerate() {
                            let offset = base_offset + k as u64;
                            window.complete(*hash, *partition, offset, timestamp);
                            positions[*index] = Some((*partition, offset, duplicate));
                        }
                    }
                    Err(error) => {
                        for Reserved { hash, .. } in reserved {
                            window.release(*hash);
                        }
                        failure.get_or_insert(error);
                    }
                }
            }
        }
        if let Some(outcome_tx) = self.outcome_tx.take() {
            let _ = outcome_tx.send(Some(match &failure {
                None => Ok(()),
                Some(error) => Err(error.to_string()),
            }));
        }
        match failure {
            Some(error) => Err(error.into()),
            None => Ok(positions),
        }
    }
}

impl Drop for Appending {
    fn drop(&mut self) {
        let Some(appends) = self.appends.take() else {
            return;
        };
        // Finished in a task, unless this already is that task, dropped unfinished (the
        // runtime is shutting down) or there is no runtime: then what was sent may or may
        // not land, and the ids are released so that a later publish is not held up.
        let runtime = tokio::runtime::Handle::try_current().ok();
        match runtime.filter(|_| !self.handed_over) {
            Some(runtime) => {
                let rest = Appending {
                    state: self.state.clone(),
                    event_count: self.event_count,
                    partitions: std::mem::take(&mut self.partitions),
                    appends: Some(appends),
                    outcome_tx: self.outcome_tx.take(),
                    handed_over: true,
                };
                runtime.spawn(rest.finish());
            }
            None => {
                let failed = self
                    .partitions
                    .iter()
                    .map(|_| {
                        Err(BackendError::Engine(
                            "the publish was dropped mid-append and could not be finished".into(),
                        ))
                    })
                    .collect();
                let _ = self.settle(failed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::DedupWindow;

    /// A publish whose appends never finish, handed to a task on a runtime that then shuts
    /// down: its ids are released and publishes waiting on them are told, rather than left
    /// reserved (and nothing recurses handing the appends over again).
    #[test]
    fn appends_dropped_by_a_runtime_shutting_down_release_their_ids() {
        let state = Arc::new(StreamState::new(
            StreamName::new("order").expect("name"),
            1,
            DedupWindow::new(120_000_000, 1_000),
        ));
        let (outcome_tx, outcome_rx) = watch::channel(None);
        let hash = crate::dedup::identity_hash("/s", "e1");
        state
            .lock_dedup()
            .reserve(hash, Arc::new(outcome_rx.clone()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let appending = Appending {
            state: state.clone(),
            event_count: 1,
            partitions: vec![(0, vec![Reserved { index: 0, hash }])],
            appends: Some(join_all(vec![
                Box::pin(std::future::pending()) as AppendFuture
            ])),
            outcome_tx: Some(outcome_tx),
            handed_over: false,
        };
        runtime.block_on(async {
            // The caller goes away: its appends are handed to a task, which never finishes.
            let caller = tokio::spawn(appending.finish());
            tokio::task::yield_now().await;
            caller.abort();
            tokio::task::yield_now().await;
        });
        drop(runtime);
        assert!(
            state.lock_dedup().lookup(hash, 0).is_none(),
            "the id is free for a later publish"
        );
        assert!(
            matches!(&*outcome_rx.borrow(), Some(Err(_))),
            "waiters were told the first publish failed"
        );
    }
}
