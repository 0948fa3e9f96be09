//! A consumer instance: joins its group, holds partition leases, runs a worker per owned
//! partition, and (with [`GroupBuilder::run`]) runs the handler on what they deliver.
//!
//! Leases live in the backend's key-value store with a TTL and are renewed by heartbeat every
//! third of the TTL. Partitions are assigned deterministically: sorted partitions to sorted
//! live members, round robin, so every instance computes the same answer and hands over
//! without negotiation. An instance that stops heartbeating loses its membership and its
//! leases when the TTL passes (judged by the backend's clock), and the others take over.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::FutureExt;
use runnel_backend::{
    BackendError, Expect, Partition, PartitionInfo, ReadFrom, Revision, StreamName,
};
use runnel_clock::Micros;
use runnel_envelope::Event;
use tokio::sync::{Mutex, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use super::config::{GroupConfig, StartFrom};
use super::delivery::{Delivery, HandlerError, Outcome, Settlement, ack_expiry};
use super::keys;
use super::stats::{GroupCounts, GroupStats};
use super::worker::{self, DeliveryGate, WorkerCtx, WorkerExit};
use crate::error::{Result, RuntimeError};
use crate::pattern::TypePattern;
use crate::runtime::{Runnel, Shared};

/// What a handler sees of a delivery.
#[derive(Debug, Clone)]
pub struct Message {
    /// The consumer group handling it.
    pub group: Arc<str>,
    pub event: Arc<Event>,
    pub stream: StreamName,
    pub partition: Partition,
    pub offset: u64,
    /// 1 on the first delivery.
    pub attempt: u32,
    /// Replayed from the group's dead-letter queue.
    pub from_dlq: bool,
}

impl Message {
    /// An output of handling this message, for the handler to return: an event of type
    /// `event_type` with `data` as its JSON data and source `runnel://groups/<group>`, caused by
    /// this message's event (`causationid` = its id, `correlationid` inherited or its id), in a
    /// child of its trace context, with its partition key (the same entity stays in order
    /// downstream). Its id is derived when the runtime publishes it (see [`GroupBuilder::run`]).
    ///
    /// A bad type or data that cannot be JSON is a permanent failure naming what was wrong.
    pub fn reply(
        &self,
        event_type: &str,
        data: impl serde::Serialize,
    ) -> std::result::Result<Event, HandlerError> {
        let kind = runnel_envelope::EventType::new(event_type)
            .map_err(|e| HandlerError::permanent(format!("reply type: {e}")))?;
        let source = runnel_envelope::Source::new(format!("runnel://groups/{}", self.group))
            .map_err(|e| HandlerError::permanent(format!("reply source: {e}")))?;
        let data = serde_json::to_value(data)
            .map_err(|e| HandlerError::permanent(format!("reply data of {event_type}: {e}")))?;
        let mut builder = Event::builder(kind, source)
            .data_json(data)
            .caused_by(&self.event);
        if let Some(parent) = self.event.traceparent() {
            builder = builder.traceparent(parent.child());
        }
        if let Some(key) = self.event.partition_key() {
            builder = builder.partition_key(key);
        }
        builder
            .build()
            .map_err(|e| HandlerError::permanent(format!("reply {event_type}: {e}")))
    }
}

/// Joins a consumer group: `runnel.group("payments").subscribe("order.*").run(handler)`.
pub struct GroupBuilder {
    runnel: Runnel,
    name: String,
    filter: Option<String>,
    config: Option<GroupConfig>,
    instance: Option<String>,
    relay: bool,
}

/// Where a group starts on partitions it has not committed on, read once per group.
pub(crate) enum StartPoint {
    Earliest,
    /// From the first record appended at or after `since` (when the group was configured
    /// with `start: latest`), or the high watermark when that time is not recorded.
    Latest {
        since: Option<Micros>,
    },
}

impl Shared {
    /// The group's [`StartPoint`]: for `latest`, one read of when it was configured so.
    pub(crate) async fn start_point(&self, group: &GroupConfig) -> Result<StartPoint> {
        if group.start == StartFrom::Earliest {
            return Ok(StartPoint::Earliest);
        }
        let since = self
            .backend
            .kv_get(keys::LATEST_SINCE, &group.name)
            .await?
            .and_then(|entry| {
                std::str::from_utf8(&entry.value)
                    .ok()?
                    .parse::<Micros>()
                    .ok()
            });
        Ok(StartPoint::Latest { since })
    }

    /// Where a group that has not committed on a partition starts reading it.
    pub(crate) async fn uncommitted_start(
        &self,
        start: &StartPoint,
        stream: &StreamName,
        info: &PartitionInfo,
    ) -> Result<u64> {
        let since = match start {
            StartPoint::Earliest => return Ok(info.start_offset),
            StartPoint::Latest { since: None } => return Ok(info.high_watermark),
            StartPoint::Latest { since: Some(since) } => *since,
        };
        // `info` was read before this: a record appended since then is at or after its high
        // watermark, and after `since`.
        let first = self
            .backend
            .read(stream, info.partition, ReadFrom::Time(since), 1, usize::MAX)
            .await?;
        Ok(first.first().map_or(info.high_watermark, |r| {
            r.offset.clamp(info.start_offset, info.high_watermark)
        }))
    }
}

impl Runnel {
    /// Starts joining the consumer group `name`.
    pub fn group(&self, name: impl Into<String>) -> GroupBuilder {
        GroupBuilder {
            runnel: self.clone(),
            name: name.into(),
            filter: None,
            config: None,
            instance: None,
            relay: false,
        }
    }

    /// Creates or replaces a group's configuration.
    pub async fn put_group(&self, config: GroupConfig) -> Result<()> {
        config.validate()?;
        if let Some(version) = config.schema_version {
            self.check_pinned_version(&config, version).await?;
        }
        if config.start == StartFrom::Latest {
            // "Latest" means from now, when the group is created, not from whenever its
            // first consumer reads a partition. Kept if it was set before.
            let now = self.shared.cfg.clock.now_micros();
            match self
                .shared
                .backend
                .kv_put(
                    keys::LATEST_SINCE,
                    &config.name,
                    Bytes::from(now.to_string()),
                    Expect::Absent,
                    None,
                )
                .await
            {
                Ok(_) | Err(BackendError::CasConflict { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let value =
            serde_json::to_vec(&config).map_err(|e| RuntimeError::Serialize(e.to_string()))?;
        self.shared
            .backend
            .kv_put(keys::GROUPS, &config.name, value.into(), Expect::Any, None)
            .await?;
        Ok(())
    }

    /// A group pinned to a schema version gets every event adapted to it: each registered
    /// type the filter matches must have that version, or its events would all be
    /// dead-lettered. (Types registered later are checked when their events arrive.)
    async fn check_pinned_version(&self, config: &GroupConfig, version: u32) -> Result<()> {
        let registry = &self.shared.schemas.registry;
        let registry_error = |e| RuntimeError::Schema(runnel_schema::ValidationError::Registry(e));
        for subject in registry.subjects().await.map_err(registry_error)? {
            if !config.filter.matches(subject.as_str()) {
                continue;
            }
            let versions = registry.versions(&subject).await.map_err(registry_error)?;
            if !versions.contains(&version) {
                let have: Vec<String> = versions.iter().map(u32::to_string).collect();
                return Err(RuntimeError::GroupConfig(format!(
                    "schema_version {version}: `{subject}`, which the filter `{}` matches, has \
                     live version{} {}",
                    config.filter,
                    if have.len() == 1 { "" } else { "s" },
                    have.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// A group's configuration.
    pub async fn group_config(&self, name: &str) -> Result<GroupConfig> {
        let entry = self
            .shared
            .backend
            .kv_get(keys::GROUPS, name)
            .await?
            .ok_or_else(|| RuntimeError::UnknownGroup(name.to_string()))?;
        serde_json::from_slice(&entry.value).map_err(|e| {
            RuntimeError::GroupConfig(format!(
                "stored configuration of `{name}` is unreadable: {e}"
            ))
        })
    }

    /// Every group's configuration, by name.
    pub async fn list_groups(&self) -> Result<Vec<GroupConfig>> {
        let entries = self
            .shared
            .backend
            .kv_scan(keys::GROUPS, "", None, 100_000)
            .await?;
        Ok(entries
            .iter()
            .filter_map(|e| serde_json::from_slice(&e.value).ok())
            .collect())
    }
}

impl GroupBuilder {
    /// Receive events whose type matches `pattern` (stored as the group's filter).
    pub fn subscribe(mut self, pattern: impl Into<String>) -> Self {
        self.filter = Some(pattern.into());
        self
    }

    /// Use (and store) this full configuration.
    pub fn config(mut self, config: GroupConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Name this instance (default: a random id). Names must be unique within the group.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance = Some(id.into());
        self
    }

    /// This instance relays deliveries to clients in other processes (as the HTTP server
    /// does): its own death is then no event's crash. A delivery counts as handed out when
    /// [`Consumer::next`] takes it, and [`Delivery::hand_out_recorded`] says when that is
    /// durable; after an unclean stop the next owner keeps the attempts handed out, counts no
    /// crash against any event and delivers in batches as usual. Without it (the default),
    /// handlers are taken to run in this process: after an unclean stop every event that may
    /// have been in flight is a crash suspect, delivered alone, and quarantined as
    /// `crash_loop` after `max_crashes`.
    pub fn relay(mut self) -> Self {
        self.relay = true;
        self
    }

    /// This instance's death is no event's fault: its handlers are trusted code that does not
    /// take the process down (the server's own stages: saga drivers, models). After an unclean
    /// stop the next owner counts no crash against what it may have held, so a process killed
    /// again and again never dead-letters its inputs as `crash_loop`; they are delivered again
    /// in batches as usual. The price: an event that does kill the process every time is
    /// retried until someone steps in, and a redelivery in flight at a crash may be numbered
    /// as its previous attempt. A [`relay`](Self::relay) always blames no crash.
    pub fn blame_no_crashes(mut self) -> Self {
        self.relay = true;
        self
    }

    /// Joins the group and returns a stream of deliveries to settle by hand. Each
    /// delivery's `ack_wait` runs from the moment [`Consumer::next`] hands it out, so
    /// deliveries waiting for a slow puller are not redelivered (nor dead-lettered) unseen.
    pub async fn start(self) -> Result<Consumer> {
        self.start_with(AckClock::FromTake).await
    }

    async fn start_with(self, ack_clock: AckClock) -> Result<Consumer> {
        let runnel = self.runnel;
        let config = match (self.config, self.filter) {
            (Some(mut config), filter) => {
                if let Some(filter) = filter {
                    config.filter = TypePattern::new(filter)?;
                }
                config.name = self.name.clone();
                runnel.put_group(config.clone()).await?;
                config
            }
            (None, Some(filter)) => {
                let filter = TypePattern::new(filter)?;
                let config = match runnel.group_config(&self.name).await {
                    Ok(mut existing) => {
                        existing.filter = filter;
                        existing
                    }
                    Err(RuntimeError::UnknownGroup(_)) => GroupConfig::new(&self.name, filter),
                    Err(e) => return Err(e),
                };
                runnel.put_group(config.clone()).await?;
                config
            }
            (None, None) => runnel.group_config(&self.name).await?,
        };
        let instance = self
            .instance
            .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
        Consumer::start(
            runnel.shared.clone(),
            Arc::new(config),
            instance,
            ack_clock,
            self.relay,
        )
        .await
    }

    /// Joins the group and runs `handler` on every delivery, up to `max_in_flight` at once.
    /// `Ok(outputs)` publishes the outputs (with ids derived from the input's, so a retry
    /// cannot publish them twice) and acknowledges; `Err` settles by the error's class; a
    /// panic counts as a `service` failure and the consumer keeps going.
    pub async fn run<H, Fut>(self, handler: H) -> Result<ConsumerHandle>
    where
        H: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Vec<Event>, HandlerError>> + Send + 'static,
    {
        let runnel = self.runnel.clone();
        // The handler loop takes deliveries as soon as they come: the clock can start then.
        let consumer = self.start_with(AckClock::FromDelivery).await?;
        let member = consumer.member.clone();
        let (drain, drain_rx) = watch::channel(false);
        let runner = tokio::spawn(run_handler(runnel, consumer, Arc::new(handler), drain_rx));
        Ok(ConsumerHandle {
            member,
            runner: Some((runner, drain)),
        })
    }
}

/// When a delivery's `ack_wait` starts to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckClock {
    /// When the worker puts it in the consumer's channel (the handler loop takes at once).
    FromDelivery,
    /// When [`Consumer::next`] takes it out (a pull consumer may leave it there a while).
    FromTake,
}

/// Deliveries of one consumer instance.
pub struct Consumer {
    deliveries: mpsc::Receiver<Delivery>,
    member: Arc<Member>,
    heartbeat: Option<JoinHandle<()>>,
}

impl Consumer {
    async fn start(
        shared: Arc<Shared>,
        group: Arc<GroupConfig>,
        instance: String,
        ack_clock: AckClock,
        relay: bool,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel(group.max_in_flight);
        let (stop_tx, stop_rx) = watch::channel(false);
        let member = Arc::new(Member {
            shared,
            group,
            instance,
            stats: Arc::new(GroupStats::default()),
            deliveries: tx,
            owned: Mutex::new(HashMap::new()),
            heartbeat_paused: AtomicBool::new(false),
            stop: stop_tx,
            gate: Arc::default(),
            ack_clock,
            relay,
        });
        // Subscribed before the first rebalance, so a stream created in between is not missed.
        let created = member.shared.created.subscribe();
        member.shared.member_started(&member);
        member.rebalance().await?;
        let heartbeat = tokio::spawn(heartbeat_loop(member.clone(), stop_rx, created));
        Ok(Self {
            deliveries: rx,
            member,
            heartbeat: Some(heartbeat),
        })
    }

    /// The next delivery; `None` once the consumer is stopped (by [`ConsumerHandle::stop`],
    /// or because its group was deleted).
    pub async fn next(&mut self) -> Option<Delivery> {
        let mut stopped = self.member.stop.subscribe();
        let mut delivery = loop {
            let delivery = tokio::select! {
                biased;
                delivery = self.deliveries.recv() => delivery?,
                _ = stopped.wait_for(|stopped| *stopped) => return None,
            };
            // Queued by a worker that has stopped since (its partition moved to another
            // instance, or it was fenced): that instance delivers the event now; handing this
            // copy out too would be a duplicate whose ack cannot count.
            if delivery.is_current() {
                break delivery;
            }
        };
        if self.member.ack_clock == AckClock::FromTake {
            let ack_wait = self.member.group.ack_wait;
            let at = self.member.shared.cfg.clock.now_micros();
            delivery.ack_expires_at = ack_expiry(at, ack_wait);
            delivery.ack_deadline = tokio::time::Instant::now() + ack_wait;
            // A relay's hand-out is listed durably; the receiver says when.
            let recorded = if self.member.relay {
                let (tx, rx) = tokio::sync::oneshot::channel();
                delivery.hand_out = Some(rx);
                Some(tx)
            } else {
                None
            };
            let _ = delivery.settle.send(Settlement {
                offset: delivery.offset,
                attempt: delivery.attempt,
                outcome: Outcome::Taken { at },
                recorded,
            });
        }
        Some(delivery)
    }

    /// The group's configuration.
    pub fn group(&self) -> &GroupConfig {
        &self.member.group
    }

    /// Control of this instance (leases, stats, stop).
    pub fn handle(&self) -> ConsumerHandle {
        ConsumerHandle {
            member: self.member.clone(),
            runner: None,
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.member.stop.send(true);
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
    }
}

/// Controls a running consumer instance.
pub struct ConsumerHandle {
    member: Arc<Member>,
    /// The handler loop and the signal that tells it to finish what is running and stop.
    runner: Option<(JoinHandle<()>, watch::Sender<bool>)>,
}

impl ConsumerHandle {
    /// Partitions this instance holds, sorted.
    pub async fn owned_partitions(&self) -> Vec<(StreamName, Partition)> {
        let mut owned: Vec<_> = self.member.owned.lock().await.keys().cloned().collect();
        owned.sort();
        owned
    }

    /// Renews membership and leases and rebalances now (it also happens every third of the
    /// lease TTL).
    pub async fn rebalance_now(&self) -> Result<()> {
        self.member.rebalance().await
    }

    /// Stops renewing membership and leases, as a hung process would (for failover tests).
    pub fn pause_heartbeat(&self) {
        self.member.heartbeat_paused.store(true, Ordering::SeqCst);
    }

    /// This instance's counters.
    pub fn stats(&self) -> GroupCounts {
        self.member.stats.snapshot()
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.member.instance
    }

    /// Stops gracefully: no new deliveries are taken, running handlers finish (for up to
    /// `ack_wait`), then workers commit what is done and release their leases.
    pub async fn stop(mut self) -> Result<()> {
        if let Some((mut runner, drain)) = self.runner.take() {
            let _ = drain.send(true);
            if tokio::time::timeout(self.member.group.ack_wait, &mut runner)
                .await
                .is_err()
            {
                tracing::warn!(group = %self.member.group.name, "handlers still running after ack_wait; stopping anyway");
                runner.abort();
            }
        }
        let _ = self.member.stop.send(true);
        self.member.release_all().await
    }
}

struct OwnedPartition {
    lease_revision: Revision,
    stop: watch::Sender<bool>,
    worker: JoinHandle<Result<WorkerExit>>,
}

pub(crate) struct Member {
    shared: Arc<Shared>,
    group: Arc<GroupConfig>,
    instance: String,
    stats: Arc<GroupStats>,
    deliveries: mpsc::Sender<Delivery>,
    owned: Mutex<HashMap<(StreamName, Partition), OwnedPartition>>,
    heartbeat_paused: AtomicBool,
    stop: watch::Sender<bool>,
    gate: Arc<DeliveryGate>,
    ack_clock: AckClock,
    relay: bool,
}

async fn heartbeat_loop(
    member: Arc<Member>,
    mut stop: watch::Receiver<bool>,
    mut created: tokio::sync::broadcast::Receiver<StreamName>,
) {
    let every = member.group.lease_ttl / 3;
    let mut next_beat = tokio::time::Instant::now() + every;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_beat) => next_beat += every,
            _ = stop.changed() => return,
            stream = created.recv() => match stream {
                Ok(stream) if !super::dlq::group_reads_stream(&member.group, &stream) => continue,
                // A stream this group reads was created here (or some were missed): take
                // its partitions now; the heartbeats keep their own rhythm.
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    created = member.shared.created.subscribe();
                    continue;
                }
            },
        }
        if *stop.borrow() {
            return;
        }
        if let Err(error) = member.rebalance().await {
            tracing::warn!(group = %member.group.name, %error, "rebalance failed; retrying at the next heartbeat");
        }
    }
}

impl Member {
    pub(crate) fn group_name(&self) -> &str {
        &self.group.name
    }

    /// Stops this instance for good (its group is deleted): workers stop as in
    /// [`ConsumerHandle::stop`], committing what is done, leases and membership are given
    /// up, and [`Consumer::next`] answers `None`.
    pub(crate) async fn end(&self) -> Result<()> {
        let _ = self.stop.send(true);
        self.release_all().await
    }

    /// Stops the workers of a stream's partitions (they commit what is done) and gives up
    /// their leases: the stream is being deleted, and [`Shared::is_deleting`] keeps this
    /// instance from taking them again meanwhile.
    pub(crate) async fn drop_stream(&self, stream: &StreamName) -> Result<()> {
        let mut owned = self.owned.lock().await;
        let doomed: Vec<_> = owned.keys().filter(|k| &k.0 == stream).cloned().collect();
        for key in doomed {
            if let Some(giving_up) = owned.remove(&key) {
                let lease_key = keys::partition_key(&self.group.name, &key.0, key.1);
                release(&self.shared, &lease_key, giving_up).await?;
            }
        }
        Ok(())
    }

    /// Renews membership, computes this instance's share, renews, takes and releases leases.
    async fn rebalance(&self) -> Result<()> {
        if self.heartbeat_paused.load(Ordering::SeqCst) || *self.stop.borrow() {
            return Ok(());
        }
        let backend = &self.shared.backend;
        let group = &self.group.name;
        if backend.kv_get(keys::GROUPS, group).await?.is_none() {
            // Deleted (by another process: this one ends its own members first).
            tracing::info!(group, instance = %self.instance, "the group was deleted; this consumer stops");
            return self.end().await;
        }
        let ttl = Some(self.group.lease_ttl);
        backend
            .kv_put(
                keys::MEMBERS,
                &keys::member_key(group, &self.instance),
                Bytes::from(self.instance.clone()),
                Expect::Any,
                ttl,
            )
            .await?;
        let prefix = format!("{group}/");
        let mut members: Vec<String> = backend
            .kv_scan(keys::MEMBERS, &prefix, None, 100_000)
            .await?
            .into_iter()
            .map(|e| e.key[prefix.len()..].to_string())
            .collect();
        members.sort();
        let mut partitions = Vec::new();
        for stream in backend.list_streams().await? {
            if super::dlq::group_reads_stream(&self.group, &stream.name)
                && !self.shared.is_deleting(&stream.name)
            {
                for partition in 0..stream.config.partitions {
                    partitions.push((stream.name.clone(), partition));
                }
            }
        }
        partitions.sort();

        let mut owned = self.owned.lock().await;
        // Workers that ended (fenced, or failed) are forgotten; their lease is re-adopted below.
        let ended: Vec<_> = owned
            .iter()
            .filter(|(_, o)| o.worker.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        for key in ended {
            if let Some(done) = owned.remove(&key) {
                match done.worker.await {
                    Ok(Ok(exit)) => {
                        tracing::info!(group, stream = %key.0, partition = key.1, ?exit, "partition worker ended")
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(group, stream = %key.0, partition = key.1, %error, "partition worker failed")
                    }
                    Err(error) => {
                        tracing::error!(group, stream = %key.0, partition = key.1, %error, "partition worker panicked")
                    }
                }
            }
        }
        for (index, key) in partitions.iter().enumerate() {
            let mine = !members.is_empty() && members[index % members.len()] == self.instance;
            let lease_key = keys::partition_key(group, &key.0, key.1);
            if mine {
                if let Some(current) = owned.get_mut(key) {
                    match self.renew(&lease_key, current.lease_revision).await {
                        Ok(revision) => current.lease_revision = revision,
                        Err(RuntimeError::Backend(BackendError::CasConflict { .. })) => {
                            tracing::warn!(group, stream = %key.0, partition = key.1, "lease lost");
                            if let Some(lost) = owned.remove(key) {
                                let _ = lost.stop.send(true);
                            }
                        }
                        Err(e) => return Err(e),
                    }
                } else if let Some(revision) = self.acquire(&lease_key).await? {
                    owned.insert(key.clone(), self.start_worker(key.clone(), revision));
                }
            } else if let Some(giving_up) = owned.remove(key) {
                release(&self.shared, &lease_key, giving_up).await?;
            }
        }
        // Partitions of streams that no longer match (or exist) are released too.
        let stale: Vec<_> = owned
            .keys()
            .filter(|k| !partitions.contains(k))
            .cloned()
            .collect();
        for key in stale {
            if let Some(giving_up) = owned.remove(&key) {
                let lease_key = keys::partition_key(group, &key.0, key.1);
                release(&self.shared, &lease_key, giving_up).await?;
            }
        }
        Ok(())
    }

    async fn renew(&self, lease_key: &str, revision: Revision) -> Result<Revision> {
        Ok(self
            .shared
            .backend
            .kv_put(
                keys::LEASES,
                lease_key,
                Bytes::from(self.instance.clone()),
                Expect::Revision(revision),
                Some(self.group.lease_ttl),
            )
            .await?)
    }

    /// Takes a free lease, or re-adopts one this instance still holds.
    async fn acquire(&self, lease_key: &str) -> Result<Option<Revision>> {
        let backend = &self.shared.backend;
        let expect = match backend.kv_get(keys::LEASES, lease_key).await? {
            None => Expect::Absent,
            Some(entry) if entry.value.as_ref() == self.instance.as_bytes() => {
                Expect::Revision(entry.revision)
            }
            Some(_) => return Ok(None),
        };
        match backend
            .kv_put(
                keys::LEASES,
                lease_key,
                Bytes::from(self.instance.clone()),
                expect,
                Some(self.group.lease_ttl),
            )
            .await
        {
            Ok(revision) => Ok(Some(revision)),
            Err(BackendError::CasConflict { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn start_worker(
        &self,
        key: (StreamName, Partition),
        lease_revision: Revision,
    ) -> OwnedPartition {
        let (stop, stop_rx) = watch::channel(false);
        let ctx = WorkerCtx {
            gate: self.gate.clone(),
            shared: self.shared.clone(),
            group: self.group.clone(),
            stats: self.stats.clone(),
            stream: key.0,
            partition: key.1,
            deliveries: self.deliveries.clone(),
            stop: stop_rx,
            ack_clock: self.ack_clock,
            relay: self.relay,
        };
        OwnedPartition {
            lease_revision,
            stop,
            worker: tokio::spawn(worker::run(ctx)),
        }
    }

    async fn release_all(&self) -> Result<()> {
        let mut owned = self.owned.lock().await;
        let group = &self.group.name;
        for (key, giving_up) in owned.drain() {
            let lease_key = keys::partition_key(group, &key.0, key.1);
            release(&self.shared, &lease_key, giving_up).await?;
        }
        let _ = self
            .shared
            .backend
            .kv_delete(
                keys::MEMBERS,
                &keys::member_key(group, &self.instance),
                Expect::Any,
            )
            .await;
        Ok(())
    }
}

/// Stops a worker (it commits what is done) and then gives up its lease.
async fn release(shared: &Shared, lease_key: &str, owned: OwnedPartition) -> Result<()> {
    let _ = owned.stop.send(true);
    match owned.worker.await {
        Ok(Err(error)) => {
            tracing::warn!(%error, lease_key, "partition worker failed while stopping")
        }
        Err(error) => tracing::error!(%error, lease_key, "partition worker panicked"),
        Ok(Ok(_)) => {}
    }
    match shared
        .backend
        .kv_delete(
            keys::LEASES,
            lease_key,
            Expect::Revision(owned.lease_revision),
        )
        .await
    {
        Ok(()) | Err(BackendError::CasConflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Runs the handler on deliveries until told to drain; then waits for running handlers.
async fn run_handler<H, Fut>(
    runnel: Runnel,
    mut consumer: Consumer,
    handler: Arc<H>,
    mut drain: watch::Receiver<bool>,
) where
    H: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<Vec<Event>, HandlerError>> + Send + 'static,
{
    let max_in_flight = consumer.group().max_in_flight;
    let group: Arc<str> = consumer.group().name.as_str().into();
    let slots = Arc::new(Semaphore::new(max_in_flight));
    loop {
        let delivery = tokio::select! {
            delivery = consumer.next() => match delivery {
                Some(delivery) => delivery,
                None => break,
            },
            _ = drain.changed() => break,
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let handler = handler.clone();
        let runnel = runnel.clone();
        let group = group.clone();
        tokio::spawn(async move {
            let message = Message {
                group: group.clone(),
                event: delivery.event.clone(),
                stream: delivery.stream.clone(),
                partition: delivery.partition,
                offset: delivery.offset,
                attempt: delivery.attempt,
                from_dlq: delivery.from_dlq,
            };
            // A panic inside the handler is caught here and becomes a `service` failure.
            let result = AssertUnwindSafe(handler(message)).catch_unwind().await;
            match result {
                Ok(Ok(outputs)) if outputs.is_empty() => delivery.ack(),
                // Boxed: the publish future is large, and inline it would be copied into
                // every spawned handler task, outputs or not.
                Ok(Ok(outputs)) => {
                    match Box::pin(complete(&runnel, &group, &delivery.event, outputs)).await {
                        Ok(()) => delivery.ack(),
                        Err(error) => delivery.nack(HandlerError::service(format!(
                            "publishing the handler's outputs failed: {error}"
                        ))),
                    }
                }
                Ok(Err(error)) => delivery.nack(error),
                Err(panic) => {
                    let reason = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic payload".into());
                    tracing::error!(
                        id = delivery.event.id().as_str(),
                        reason = reason.as_str(),
                        "handler panicked"
                    );
                    delivery.nack(HandlerError::service(format!("handler panicked: {reason}")));
                }
            }
            drop(slot);
        });
    }
    // Every slot back means every running handler has settled its delivery.
    let _ = slots.acquire_many(max_in_flight as u32).await;
    // Keep `consumer` (and so the workers' channel) alive until then.
    drop(consumer);
}

/// Publishes a handler's outputs with ids derived from the group and the input (so a
/// redelivery republishes the same ids, which deduplication absorbs, and another group's
/// outputs of the same input never collide with these). The ack that follows records the
/// input as processed (in the partition worker, for every kind of consumer).
async fn complete(runnel: &Runnel, group: &str, input: &Event, outputs: Vec<Event>) -> Result<()> {
    if !outputs.is_empty() {
        let mut derived = Vec::with_capacity(outputs.len());
        for (index, output) in outputs.into_iter().enumerate() {
            let id = input.derived_id(group, index);
            derived.push(output.into_builder().id(id).caused_by(input).build()?);
        }
        runnel.publish_batch(derived).await?;
    }
    Ok(())
}
