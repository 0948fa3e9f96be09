//! Consumption over HTTP: one runtime [`Consumer`] per group, started by the first pull or
//! event stream, and a receipt table that maps what a client holds back to the runtime's
//! [`Delivery`].
//!
//! It exists because HTTP clients settle deliveries in later requests. A pull takes what the
//! consumer has ready (waiting up to `wait_ms` for the first), files each delivery under a
//! fresh receipt and answers; `ack`/`nack` take the delivery back out and settle it. Nothing
//! is buffered beyond what the runtime hands out: the consumer's channel holds at most
//! `max_in_flight` deliveries and the runtime stops reading a partition at `max_ack_pending`
//! unsettled events, so a slow client makes the server hold back, never grow.
//!
//! A receipt lapses `ack_wait` after the pull that took it (the runtime then delivers the event
//! again; while a delivery waits in the consumer's channel, its clock does not run);
//! acking a lapsed receipt is a 409, an unknown one a 404. When the runtime redelivers an
//! event whose receipt is still held, the old receipt lapses at once. A consumer nobody pulled
//! from for `consumer_idle_secs` is stopped, releasing its partitions.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use runnel_backend::{Partition, StreamName};
use runnel_runtime::{
    Consumer, ConsumerHandle, Delivery, GroupConfig, GroupCounts, HandlerError, Runnel,
};
use serde_json::json;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::views::{ClassView, InFlightView, MessageView, rfc3339};

/// How often a running consumer's configuration is compared with the stored one (which
/// another server may have changed).
const CONFIG_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Lapsed receipts remembered (to answer 409 rather than 404), per group.
const EXPIRED_REMEMBERED: usize = 100_000;

/// Fires once when the server starts shutting down.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
        }
    }
}

impl Shutdown {
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once triggered.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}

struct Held {
    delivery: Delivery,
    handed_at: Instant,
    expires_at: Instant,
    /// When it was handed out, µs since the epoch (for operators).
    held_since: u64,
    /// The API key that pulled it.
    holder: Option<String>,
}

/// At most this many in-flight deliveries are listed per group.
const IN_FLIGHT_LISTED: usize = 1_000;

/// The wall clock in µs since the epoch.
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

type Position = (StreamName, Partition, u64);

#[derive(Default)]
struct Receipts {
    live: HashMap<String, Held>,
    by_position: HashMap<Position, String>,
    /// Receipts in hand-out order with their expiry (`ack_wait` is fixed per consumer, so
    /// this is also expiry order).
    order: VecDeque<(Instant, String)>,
    expired: HashSet<String>,
    expired_order: VecDeque<String>,
}

impl Receipts {
    fn lapse(&mut self, receipt: &str, why: &str) {
        if let Some(held) = self.live.remove(receipt) {
            let d = &held.delivery;
            self.by_position
                .remove(&(d.stream.clone(), d.partition, d.offset));
            tracing::info!(
                id = d.event.id().as_str(),
                correlationid = d.event.correlation_id().unwrap_or_default(),
                receipt,
                why,
                "receipt lapsed"
            );
            if self.expired.insert(receipt.to_string()) {
                self.expired_order.push_back(receipt.to_string());
                while self.expired_order.len() > EXPIRED_REMEMBERED {
                    if let Some(old) = self.expired_order.pop_front() {
                        self.expired.remove(&old);
                    }
                }
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if *at > now {
                break;
            }
            if let Some((_, receipt)) = self.order.pop_front() {
                self.lapse(&receipt, "ack_wait passed");
            }
        }
    }

    /// Files a delivery under a fresh receipt that lapses when the runtime would deliver it
    /// again (`ack_wait` after the pull took it).
    fn insert(&mut self, delivery: Delivery, now: Instant, holder: Option<String>) -> String {
        let position = (delivery.stream.clone(), delivery.partition, delivery.offset);
        if let Some(old) = self.by_position.get(&position).cloned() {
            self.lapse(&old, "delivered again");
        }
        let receipt = uuid::Uuid::now_v7().simple().to_string();
        let expires_at = delivery.ack_deadline;
        self.by_position.insert(position, receipt.clone());
        self.order.push_back((expires_at, receipt.clone()));
        self.live.insert(
            receipt.clone(),
            Held {
                delivery,
                handed_at: now,
                expires_at,
                held_since: now_micros(),
                holder,
            },
        );
        receipt
    }

    fn take(&mut self, receipt: &str, now: Instant) -> Result<Held, Missing> {
        match self.live.remove(receipt) {
            Some(held) if held.expires_at > now => {
                let d = &held.delivery;
                self.by_position
                    .remove(&(d.stream.clone(), d.partition, d.offset));
                Ok(held)
            }
            Some(held) => {
                self.live.insert(receipt.to_string(), held);
                self.lapse(receipt, "ack_wait passed");
                Err(Missing::Expired)
            }
            None if self.expired.contains(receipt) => Err(Missing::Expired),
            None => Err(Missing::Unknown),
        }
    }
}

enum Missing {
    Unknown,
    Expired,
}

/// One group's consumer on this server.
/// How long after a consumer starts its pulls gather across partitions.
const STARTING: Duration = Duration::from_secs(2);
/// While starting, a pull answers once no delivery came for this long.
const STARTING_QUIET: Duration = Duration::from_millis(100);

pub struct Session {
    pub config: GroupConfig,
    consumer: Mutex<Consumer>,
    handle: ConsumerHandle,
    stopper: StdMutex<Option<ConsumerHandle>>,
    receipts: StdMutex<Receipts>,
    last_used: StdMutex<Instant>,
    /// When the stored configuration was last compared with this consumer's.
    config_checked: StdMutex<Instant>,
    /// When the consumer started: its partitions' workers make their first reads one by
    /// one, so its first pulls gather across them (see [`STARTING`]).
    started: Instant,
    stopped: AtomicBool,
}

impl Session {
    fn receipts(&self) -> MutexGuard<'_, Receipts> {
        self.receipts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// True at most once per [`CONFIG_CHECK_EVERY`]: time to compare the stored
    /// configuration with this consumer's.
    fn config_check_due(&self) -> bool {
        let mut checked = self
            .config_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if checked.elapsed() < CONFIG_CHECK_EVERY {
            return false;
        }
        *checked = Instant::now();
        true
    }

    fn idle_since(&self) -> Instant {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Messages handed out and not settled or lapsed.
    pub fn outstanding(&self) -> usize {
        let mut receipts = self.receipts();
        receipts.sweep(Instant::now());
        receipts.live.len()
    }

    pub fn counts(&self) -> GroupCounts {
        self.handle.stats()
    }

    /// The deliveries clients hold, oldest first (at most [`IN_FLIGHT_LISTED`]).
    pub fn in_flight(&self) -> Vec<InFlightView> {
        let mut receipts = self.receipts();
        let now = Instant::now();
        receipts.sweep(now);
        let wall = now_micros();
        let mut held: Vec<&Held> = receipts.live.values().collect();
        held.sort_by_key(|h| (h.handed_at, h.delivery.offset));
        held.into_iter()
            .take(IN_FLIGHT_LISTED)
            .map(|h| {
                let d = &h.delivery;
                let left = h.expires_at.saturating_duration_since(now);
                let lapses_at =
                    wall.saturating_add(u64::try_from(left.as_micros()).unwrap_or(u64::MAX));
                InFlightView {
                    event_id: d.event.id().as_str().to_string(),
                    event_type: d.event.event_type().as_str().to_string(),
                    stream: d.stream.to_string(),
                    partition: d.partition,
                    offset: d.offset,
                    attempt: d.attempt,
                    held_since: rfc3339(h.held_since).unwrap_or_default(),
                    lapses_at: rfc3339(lapses_at).unwrap_or_default(),
                    held_by: h.holder.clone(),
                }
            })
            .collect()
    }
}

/// Every group's consumer on this server.
pub struct Consumers {
    runnel: Runnel,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Counters of stopped consumers, so totals survive restarts of a group's consumer.
    retired: StdMutex<HashMap<String, GroupCounts>>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    idle: Duration,
    /// Streams publishes went to, so a new one can be announced to running consumers.
    streams: StdMutex<HashSet<StreamName>>,
    /// The instance id this server's consumers join their groups as; random when `None`.
    instance: Option<String>,
    /// When this server started (µs since the epoch): counters count from then.
    started_at: u64,
    /// Groups being deleted: no consumer of theirs is started meanwhile (a pull or an event
    /// stream would otherwise start one between stopping the old one and the deletion, and
    /// hand out events of a group that is gone).
    deleting: StdMutex<HashSet<String>>,
}

impl Consumers {
    pub fn new(runnel: Runnel, metrics: Arc<Metrics>, shutdown: Shutdown, idle: Duration) -> Self {
        Self {
            runnel,
            sessions: Mutex::new(HashMap::new()),
            retired: StdMutex::new(HashMap::new()),
            metrics,
            shutdown,
            idle,
            streams: StdMutex::new(HashSet::new()),
            deleting: StdMutex::new(HashSet::new()),
            instance: None,
            started_at: now_micros(),
        }
    }

    /// Consumers of this server join their groups as `instance` (see `App::open`): a
    /// restarted server then re-adopts the partition leases it held instead of waiting for
    /// them to lapse.
    pub fn with_instance(mut self, instance: String) -> Self {
        self.instance = Some(instance);
        self
    }

    /// The instance id this server's consumers join their groups as, if it has a stable one.
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// When this server started (µs since the epoch): its counters count from then.
    pub fn started_at(&self) -> u64 {
        self.started_at
    }

    /// Called after a publish: a stream this server has not published to before may be new,
    /// and a running consumer would otherwise find it only at its next heartbeat (a third of
    /// the lease TTL, 5 s by default), so the consumers whose filter can match it rebalance now.
    pub async fn stream_published(&self, stream: &StreamName) {
        let new = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(stream.clone());
        if !new {
            return;
        }
        let sessions: Vec<Arc<Session>> = self.sessions.lock().await.values().cloned().collect();
        for session in sessions {
            if session.config.filter.matches_stream(stream.as_str())
                && let Err(error) = session.handle.rebalance_now().await
            {
                tracing::warn!(group = %session.config.name, %error, "rebalance after a new stream failed");
            }
        }
    }

    /// The group's running consumer, started if needed (404 for an unknown group).
    pub async fn session(&self, group: &str) -> Result<Arc<Session>, ApiError> {
        if self.shutdown.is_triggered() {
            return Err(shutting_down());
        }
        if self.is_deleting(group) {
            return Err(ApiError::not_found(
                "group.unknown",
                format!("consumer group `{group}` is being deleted"),
            ));
        }
        let running = self.sessions.lock().await.get(group).cloned();
        if let Some(session) = running {
            session.touch();
            if !session.config_check_due() {
                return Ok(session);
            }
            // Another server sharing the backend may have changed the group: a consumer
            // with the old filter would commit past events it should deliver.
            let current = self.runnel.group_config(group).await?;
            if current == session.config {
                return Ok(session);
            }
            tracing::info!(
                group,
                "the group's configuration changed elsewhere: restarting its consumer"
            );
            self.stop(group).await;
        }
        let mut sessions = self.sessions.lock().await;
        if let Some(session) = sessions.get(group) {
            session.touch();
            return Ok(session.clone());
        }
        let config = self.runnel.group_config(group).await?;
        // The server relays deliveries to HTTP clients: its own death is no event's crash.
        let mut builder = self.runnel.group(group).relay();
        if let Some(instance) = &self.instance {
            builder = builder.instance_id(instance.clone());
        }
        let consumer = builder.start().await?;
        let session = Arc::new(Session {
            config,
            handle: consumer.handle(),
            stopper: StdMutex::new(Some(consumer.handle())),
            consumer: Mutex::new(consumer),
            receipts: StdMutex::new(Receipts::default()),
            last_used: StdMutex::new(Instant::now()),
            config_checked: StdMutex::new(Instant::now()),
            started: Instant::now(),
            stopped: AtomicBool::new(false),
        });
        tracing::info!(group, "consumer started");
        sessions.insert(group.to_string(), session.clone());
        Ok(session)
    }

    /// After a DLQ replay: the group's replay stream may be new, and a running consumer
    /// would find it only at its next heartbeat.
    pub async fn rebalance(&self, group: &str) {
        if let Some(session) = self.running(group).await
            && let Err(error) = session.handle.rebalance_now().await
        {
            tracing::warn!(group, %error, "rebalance failed");
        }
    }

    /// The group's consumer if it is running.
    pub async fn running(&self, group: &str) -> Option<Arc<Session>> {
        self.sessions.lock().await.get(group).cloned()
    }

    /// Counters of the group's consumers on this server, over their restarts.
    pub async fn counts(&self, group: &str) -> Option<GroupCounts> {
        let running = self.running(group).await.map(|s| s.counts());
        let retired = self
            .retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(group)
            .copied();
        match (running, retired) {
            (None, None) => None,
            (a, b) => Some(add(a.unwrap_or_default(), b.unwrap_or_default())),
        }
    }

    /// Takes up to `max` messages, waiting up to `wait` for the first, for `holder` (the
    /// caller's API key name).
    pub async fn pull(
        &self,
        group: &str,
        max: usize,
        wait: Duration,
        holder: Option<&str>,
    ) -> Result<Vec<MessageView>, ApiError> {
        let session = self.session(group).await?;
        let deadline = Instant::now() + wait;
        let mut taken = Vec::new();
        {
            let mut consumer = tokio::select! {
                guard = session.consumer.lock() => guard,
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                _ = self.shutdown.wait() => return Ok(Vec::new()),
            };
            if session.stopped.load(AtomicOrdering::SeqCst) {
                return Ok(Vec::new());
            }
            let first = match consumer.next().now_or_never() {
                Some(d) => d,
                None if wait.is_zero() => None,
                None => tokio::select! {
                    d = consumer.next() => d,
                    _ = tokio::time::sleep_until(deadline) => None,
                    _ = self.shutdown.wait() => None,
                },
            };
            if let Some(delivery) = first {
                taken.push(delivery);
                while taken.len() < max {
                    match consumer.next().now_or_never() {
                        Some(Some(delivery)) => taken.push(delivery),
                        _ => break,
                    }
                }
                // A consumer that has just started has workers still making their first
                // reads: wait (within the pull's own wait) for what the other partitions
                // have ready, until they go quiet, instead of answering with one partition's.
                while taken.len() < max && session.started.elapsed() < STARTING {
                    let quiet = (Instant::now() + STARTING_QUIET).min(deadline);
                    match tokio::time::timeout_at(quiet, consumer.next()).await {
                        Ok(Some(delivery)) => taken.push(delivery),
                        _ => break,
                    }
                }
            }
        }
        // Answer once the hand-outs are durable: a restart then delivers them as the next
        // attempt (and events that stayed in the server keep theirs).
        let listed =
            futures::future::join_all(taken.iter_mut().map(|d| d.hand_out_recorded())).await;
        let unlisted = listed.iter().filter(|listed| !**listed).count();
        if unlisted > 0 {
            tracing::warn!(
                group,
                unlisted,
                "hand-outs could not be recorded; after a crash they may come back under the same attempt number"
            );
        }
        session.touch();
        let now = Instant::now();
        let mut receipts = session.receipts();
        receipts.sweep(now);
        Ok(taken
            .into_iter()
            .map(|delivery| {
                let view = MessageView {
                    receipt: String::new(),
                    attempt: delivery.attempt,
                    from_dlq: delivery.from_dlq,
                    stream: delivery.stream.to_string(),
                    partition: delivery.partition,
                    offset: delivery.offset,
                    event: crate::views::event_json(&delivery.event),
                };
                tracing::debug!(
                    group,
                    id = delivery.event.id().as_str(),
                    correlationid = delivery.event.correlation_id().unwrap_or_default(),
                    attempt = delivery.attempt,
                    "handed out"
                );
                let receipt = receipts.insert(delivery, now, holder.map(str::to_string));
                MessageView { receipt, ..view }
            })
            .collect())
    }

    /// Acknowledges every valid receipt; the problem lists the others.
    pub async fn ack(&self, group: &str, receipts: &[String]) -> Result<usize, ApiError> {
        let session = self.existing(group).await?;
        let now = Instant::now();
        let (mut acked, mut unknown, mut expired) = (0usize, Vec::new(), Vec::new());
        let mut settled = Vec::new();
        {
            let mut table = session.receipts();
            table.sweep(now);
            for receipt in receipts {
                match table.take(receipt, now) {
                    // Its partition moved to another server (or its worker was fenced): the
                    // event is delivered again there, so this receipt has lapsed.
                    Ok(held) if !held.delivery.is_current() => expired.push(receipt.clone()),
                    Ok(held) => settled.push(held),
                    Err(Missing::Unknown) => unknown.push(receipt.clone()),
                    Err(Missing::Expired) => expired.push(receipt.clone()),
                }
            }
        }
        let mut recording = Vec::with_capacity(settled.len());
        for held in settled {
            let d = &held.delivery;
            self.metrics.acked(
                group,
                d.stream.as_str(),
                d.event.event_type().as_str(),
                now.saturating_duration_since(held.handed_at).as_secs_f64(),
            );
            tracing::debug!(
                group,
                id = d.event.id().as_str(),
                correlationid = d.event.correlation_id().unwrap_or_default(),
                "acked"
            );
            recording.push(held.delivery.ack_recorded());
            acked += 1;
        }
        // Answer once the acks are durable (with `processed_ids`, their ids recorded): an
        // event acknowledged with a 200 is not handed out again, even after a crash.
        let not_recorded = futures::future::join_all(recording)
            .await
            .into_iter()
            .filter(|recorded| !recorded)
            .count();
        session.touch();
        if not_recorded > 0 {
            return Err(ApiError::unavailable(
                "ack.not_recorded",
                format!(
                    "{not_recorded} of {acked} acknowledgements could not be recorded (the \
                     store failed, or the delivery was superseded by a redelivery): those \
                     events may be delivered again"
                ),
            ));
        }
        if unknown.is_empty() && expired.is_empty() {
            return Ok(acked);
        }
        Err(missing_problem(acked, unknown, expired))
    }

    /// Settles one receipt as failed.
    pub async fn nack(
        &self,
        group: &str,
        receipt: &str,
        class: ClassView,
        reason: String,
    ) -> Result<(), ApiError> {
        let session = self.existing(group).await?;
        let now = Instant::now();
        let held = session.receipts().take(receipt, now);
        session.touch();
        match held {
            Ok(held) if !held.delivery.is_current() => Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "receipt.expired",
                "the receipt lapsed (its partition moved to another consumer); nothing was nacked",
            )),
            Ok(held) => {
                let d = &held.delivery;
                tracing::info!(
                    group,
                    id = d.event.id().as_str(),
                    correlationid = d.event.correlation_id().unwrap_or_default(),
                    class = ?class,
                    reason = reason.as_str(),
                    "nacked"
                );
                held.delivery.nack(HandlerError {
                    class: class.into(),
                    reason,
                });
                Ok(())
            }
            Err(Missing::Unknown) => Err(ApiError::not_found(
                "receipt.unknown",
                "the receipt is unknown to this group's consumer; nothing was nacked",
            )),
            Err(Missing::Expired) => Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "receipt.expired",
                "the receipt lapsed (past ack_wait or delivered again); nothing was nacked",
            )),
        }
    }

    /// The running session a receipt can belong to; a group without one holds no receipts.
    async fn existing(&self, group: &str) -> Result<Arc<Session>, ApiError> {
        match self.running(group).await {
            Some(session) => Ok(session),
            None => {
                // 404 for the group itself first, so a typo in the name says so.
                self.runnel.group_config(group).await?;
                Err(ApiError::not_found(
                    "receipt.unknown",
                    format!(
                        "group `{group}` has no consumer running on this server, so it holds no receipts"
                    ),
                ))
            }
        }
    }

    fn is_deleting(&self, group: &str) -> bool {
        self.deleting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(group)
    }

    /// Before a group's deletion: no consumer of it starts until [`Consumers::end_deletion`];
    /// with `stop`, the running one stops (its receipts lapse).
    pub async fn begin_deletion(&self, group: &str, stop: bool) {
        self.deleting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group.to_string());
        if stop {
            self.stop(group).await;
        }
    }

    /// After a group's deletion: when it was deleted, a consumer that started before
    /// [`Consumers::begin_deletion`] took effect stops, and the old group's counters go (a
    /// group created again starts with nothing of the old one).
    pub async fn end_deletion(&self, group: &str, deleted: bool) {
        if deleted {
            self.stop(group).await;
            self.retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(group);
        }
        self.deleting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(group);
    }

    /// Stops a group's consumer (after its configuration changed, or when idle).
    pub async fn stop(&self, group: &str) {
        let session = self.sessions.lock().await.remove(group);
        if let Some(session) = session {
            self.retire(group, &session).await;
        }
    }

    async fn retire(&self, group: &str, session: &Session) {
        session.stopped.store(true, AtomicOrdering::SeqCst);
        let stopper = session
            .stopper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = stopper
            && let Err(error) = handle.stop().await
        {
            tracing::warn!(group, %error, "stopping the consumer failed");
        }
        // Unsettled deliveries are dropped: the runtime delivers them again.
        let dropped = std::mem::take(&mut *session.receipts());
        if !dropped.live.is_empty() {
            tracing::info!(
                group,
                unsettled = dropped.live.len(),
                "consumer stopped with receipts outstanding; they will be delivered again"
            );
        }
        let counts = session.counts();
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        let entry = retired.entry(group.to_string()).or_default();
        *entry = add(*entry, counts);
        tracing::info!(group, "consumer stopped");
    }

    /// Stops consumers nobody used for the idle time.
    pub async fn stop_idle(&self) {
        let now = Instant::now();
        let idle: Vec<String> = self
            .sessions
            .lock()
            .await
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.idle_since()) >= self.idle)
            .map(|(g, _)| g.clone())
            .collect();
        for group in idle {
            tracing::info!(group, "consumer idle; stopping it");
            self.stop(&group).await;
        }
    }

    /// Stops every consumer (shutdown): workers commit what is done and release partitions.
    pub async fn stop_all(&self) {
        let sessions: Vec<(String, Arc<Session>)> = self.sessions.lock().await.drain().collect();
        for (group, session) in sessions {
            self.retire(&group, &session).await;
        }
    }

    /// Names of the groups with a running consumer.
    pub async fn running_groups(&self) -> Vec<String> {
        self.sessions.lock().await.keys().cloned().collect()
    }
}

fn shutting_down() -> ApiError {
    ApiError::unavailable("server.shutting_down", "the server is shutting down")
}

fn missing_problem(acked: usize, unknown: Vec<String>, expired: Vec<String>) -> ApiError {
    let (status, code) = if expired.is_empty() {
        (axum::http::StatusCode::NOT_FOUND, "receipt.unknown")
    } else {
        (axum::http::StatusCode::CONFLICT, "receipt.expired")
    };
    let detail = format!(
        "{} receipt(s) unknown and {} lapsed (past ack_wait or delivered again); {acked} acknowledged",
        unknown.len(),
        expired.len()
    );
    ApiError::new(status, code, detail)
        .with_member("acked", json!(acked))
        .with_member("unknown", json!(unknown))
        .with_member("expired", json!(expired))
}

fn add(a: GroupCounts, b: GroupCounts) -> GroupCounts {
    GroupCounts {
        delivered: a.delivered + b.delivered,
        redelivered: a.redelivered + b.redelivered,
        acked: a.acked + b.acked,
        skipped_duplicates: a.skipped_duplicates + b.skipped_duplicates,
        failed_transient: a.failed_transient + b.failed_transient,
        failed_service: a.failed_service + b.failed_service,
        failed_permanent: a.failed_permanent + b.failed_permanent,
        ack_timeouts: a.ack_timeouts + b.ack_timeouts,
        exhausted: a.exhausted + b.exhausted,
        undecodable: a.undecodable + b.undecodable,
        retries_scheduled: a.retries_scheduled + b.retries_scheduled,
        dead_lettered: a.dead_lettered + b.dead_lettered,
        quarantined: a.quarantined + b.quarantined,
        dlq_alert: a.dlq_alert || b.dlq_alert,
    }
}
