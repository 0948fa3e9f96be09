//! Sagas run over consumer groups, with their instances in the backend's key-value store.
//!
//! [`SagaDriver::start`] joins, per saga, the group `saga-<name>` over its trigger pattern
//! (it starts instances) and one group `saga-<name>-<domain>` per domain of its reply types
//! (`<domain>.>`; they apply replies). Many drivers may run one saga: each gets a share of
//! every group's partitions, like any consumer.
//!
//! Per event:
//! 1. the instance is read (a trigger's instance id is derived from the trigger, so a
//!    redelivered trigger finds the instance it started);
//! 2. the pure core ([`Saga`]) applies the event on the injected clock;
//! 3. the instance is written with compare-and-set on the revision read; on a conflict
//!    (another driver applied another reply meanwhile) it is read again and the event
//!    applied to that — so the transitions of one instance are serialised, and a command is
//!    issued by exactly one driver;
//! 4. only then are the commands published (their ids deterministic, so a command
//!    published again after a crash is the same command, dropped by deduplication) and the
//!    event acknowledged.
//!
//! Timers (reply deadlines, scheduled retries) of an instance run on the driver that owns
//! the trigger group's partition the instance's trigger was read from (its *home*): every
//! `timer_every`, it reads the active instances of each home partition it owns and ticks
//! those due. When a driver takes a home partition over (at start, or from a driver that
//! stopped or died), it first publishes again every command its instances have in flight:
//! a crash between a write and its publish loses no command.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use runnel_backend::{BackendError, Revision, StreamConfig, StreamName};
use runnel_clock::{Micros, SharedClock};
use runnel_envelope::{EnvelopeError, Event, EventId, EventType, Source};
use runnel_runtime::{
    ConsumerHandle, GroupConfig, HandlerError, Message, Runnel, RuntimeError, TypePattern,
};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::crash::{self, Boundary};
use crate::machine::{Command, Instance, Reply, SagaState, Transition, Trigger};
use crate::spec::Saga;
use crate::store::{InstanceStore, StoreError, Stored};

/// Most times an event is applied again after losing a compare-and-set.
const MAX_CONFLICTS: usize = 16;

/// Most instances a driver keeps as it last wrote them (so that a reply needs no read).
const CACHE_CAPACITY: usize = 16_384;

/// The consumer group that starts instances of saga `name`.
pub fn trigger_group(name: &str) -> String {
    format!("saga-{name}")
}

/// The consumer group that applies saga `name`'s replies of domain `domain`.
pub fn reply_group(name: &str, domain: &str) -> String {
    format!("saga-{name}-{domain}")
}

/// How a driver runs.
#[derive(Debug, Clone)]
pub struct SagaOptions {
    /// This driver's id within the groups (unique per driver). Default: a random id.
    pub instance_id: Option<String>,
    /// How often the timers of owned instances are checked. Default 1 s.
    pub timer_every: Duration,
    /// Settings of the groups (`ack_wait`, `lease_ttl`, `max_in_flight`, …); name and
    /// filter are set by the driver, `processed_ids` is off (the instance records what was
    /// applied). Default: the group defaults.
    pub group: Option<GroupConfig>,
}

impl Default for SagaOptions {
    fn default() -> Self {
        Self {
            instance_id: None,
            timer_every: Duration::from_secs(1),
            group: None,
        }
    }
}

/// Why a saga could not start, or an operation on an instance failed.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    /// The saga cannot be run (its name and a reply domain make too long a group name).
    #[error("saga `{saga}`: {reason}")]
    Config {
        /// The saga.
        saga: String,
        /// What is wrong.
        reason: String,
    },
    /// Joining a consumer group failed.
    #[error("consumer group: {0}")]
    Group(#[source] RuntimeError),
    /// An instance could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A command could not be made into an event.
    #[error("command event: {0}")]
    Envelope(#[from] EnvelopeError),
    /// Publishing commands failed.
    #[error("publishing commands: {0}")]
    Publish(#[source] RuntimeError),
    /// No saga of this name is run here.
    #[error("no saga `{0}`")]
    UnknownSaga(String),
    /// No saga has an instance with this id.
    #[error("no saga instance `{0}`")]
    NotFound(String),
    /// The instance is not stuck, so it cannot be retried.
    #[error(transparent)]
    NotStuck(#[from] crate::machine::NotStuck),
    /// An instance kept changing under this driver.
    #[error("saga instance `{0}` kept changing: gave up after {MAX_CONFLICTS} attempts")]
    Contended(String),
    /// A task of the driver failed.
    #[error("the saga driver's task failed: {0}")]
    Task(String),
}

/// Instances started and outcomes reached by one driver since it started (also on
/// `/metrics` as `runnel_saga_*_total`; these are for callers of the Rust API, such as
/// `runnel bench sagas`, that install no metrics recorder).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SagaCounts {
    /// Instances this driver started.
    pub started: u64,
    /// Instances this driver brought to `completed`.
    pub completed: u64,
    /// Instances this driver brought to `compensated`.
    pub compensated: u64,
    /// Instances this driver found `stuck`.
    pub stuck: u64,
}

#[derive(Default)]
struct Counters {
    started: AtomicU64,
    completed: AtomicU64,
    compensated: AtomicU64,
    stuck: AtomicU64,
}

/// What a saga's driver shares between its groups, its timers and [`crate::Sagas`].
pub(crate) struct Core {
    pub runnel: Runnel,
    pub saga: Saga,
    pub store: InstanceStore,
    pub clock: SharedClock,
    pub source: Source,
    counters: Counters,
    /// Instances by id as this driver last wrote them, with their revision.
    cache: Mutex<HashMap<String, Stored>>,
}

impl Core {
    pub fn new(runnel: &Runnel, saga: Saga) -> Result<Self, SagaError> {
        Ok(Self {
            store: InstanceStore::new(runnel.backend().clone()),
            clock: runnel.config().clock.clone(),
            source: Source::new(format!("runnel://sagas/{}", saga.name()))?,
            runnel: runnel.clone(),
            saga,
            counters: Counters::default(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn counts(&self) -> SagaCounts {
        let c = &self.counters;
        SagaCounts {
            started: c.started.load(Ordering::Relaxed),
            completed: c.completed.load(Ordering::Relaxed),
            compensated: c.compensated.load(Ordering::Relaxed),
            stuck: c.stuck.load(Ordering::Relaxed),
        }
    }

    fn now(&self) -> Micros {
        self.clock.now_micros()
    }

    /// The event of `command`.
    fn command_event(&self, instance: &Instance, command: &Command) -> Result<Event, SagaError> {
        let event = Event::builder(
            EventType::new(command.event_type.clone())?,
            self.source.clone(),
        )
        .id(EventId::new(command.id.clone())?)
        .correlation_id(instance.id.clone())
        .causation_id(EventId::new(command.caused_by.clone())?)
        .partition_key(instance.id.clone())
        .data_json(self.saga.command_data(instance, command))
        .build()?;
        Ok(event)
    }

    /// Publishes `commands` of `instance` (after it was written).
    pub async fn publish(
        &self,
        instance: &Instance,
        commands: &[Command],
    ) -> Result<(), SagaError> {
        if commands.is_empty() {
            return Ok(());
        }
        let events = commands
            .iter()
            .map(|c| self.command_event(instance, c))
            .collect::<Result<Vec<_>, _>>()?;
        crash::reached(Boundary::BeforePublish);
        self.runnel
            .publish_batch(events)
            .await
            .map_err(SagaError::Publish)?;
        metrics::counter!("runnel_saga_commands_total", "saga" => self.saga.name().to_string())
            .increment(commands.len() as u64);
        Ok(())
    }

    /// After a transition was written: the active index and the metrics of an outcome.
    pub async fn settled(&self, instance: &Instance, t: &Transition) -> Result<(), SagaError> {
        let Some(outcome) = t.outcome else {
            return Ok(());
        };
        self.store.deactivate(instance).await?;
        let saga = self.saga.name().to_string();
        let (name, counter) = match outcome {
            SagaState::Completed => ("runnel_saga_completed_total", &self.counters.completed),
            SagaState::Compensated => ("runnel_saga_compensated_total", &self.counters.compensated),
            _ => ("runnel_saga_stuck_total", &self.counters.stuck),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(name, "saga" => saga.clone()).increment(1);
        if let Some(ended) = instance.ended_at {
            let seconds = ended.saturating_sub(instance.started_at) as f64 / 1e6;
            metrics::histogram!(
                "runnel_saga_duration_seconds",
                "saga" => saga,
                "outcome" => outcome.as_str()
            )
            .record(seconds);
        }
        Ok(())
    }

    /// The instance `id` as this driver last wrote it, taken out of the cache.
    fn cached(&self, id: &str) -> Option<Stored> {
        lock(&self.cache).remove(id)
    }

    /// Keeps `instance` as written at `revision`, while it is not at an outcome.
    fn remember(&self, instance: &Instance, revision: Revision) {
        let mut cache = lock(&self.cache);
        if instance.state.is_outcome() {
            cache.remove(&instance.id);
            return;
        }
        if cache.len() >= CACHE_CAPACITY {
            // Bounded, and simple: a driver with more instances in flight than this reads
            // some of them again.
            cache.clear();
        }
        cache.insert(
            instance.id.clone(),
            Stored {
                instance: instance.clone(),
                revision,
            },
        );
    }

    /// Reads instance `id` (or takes it from the cache of what this driver wrote last),
    /// applies `apply` and writes it, again on a conflict; then publishes. A cached copy
    /// is only trusted for a write, which the compare-and-set on its revision checks: when
    /// applying to it writes nothing (a duplicate, a stale reply) or fails (an operator's
    /// retry of an instance the copy says is not stuck), the instance is read and the event
    /// applied again, so another driver's newer write is never overlooked.
    pub async fn transition<F>(&self, id: &str, mut apply: F) -> Result<Option<Instance>, SagaError>
    where
        F: FnMut(&Saga, &mut Instance, Micros) -> Result<Transition, SagaError>,
    {
        let mut cached = self.cached(id);
        for _ in 0..MAX_CONFLICTS {
            let from_cache = cached.is_some();
            let stored = match cached.take() {
                Some(stored) => stored,
                None => match self.store.get(self.saga.name(), id).await? {
                    Some(stored) => stored,
                    None => return Ok(None),
                },
            };
            let mut instance = stored.instance;
            let was = instance.state;
            let t = match apply(&self.saga, &mut instance, self.now()) {
                // A cached copy may be behind (an operator's retry refused as not stuck):
                // decide on what is stored.
                Err(_) if from_cache => continue,
                t => t?,
            };
            if from_cache && (t.duplicate || !t.changed) {
                continue;
            }
            if t.duplicate {
                // Applied before, but its commands may not have gone out (a crash between
                // the write and the publish): send them again, under the same ids.
                self.publish(&instance, &instance.in_flight()).await?;
                return Ok(Some(instance));
            }
            if !t.changed {
                return Ok(Some(instance));
            }
            if was == SagaState::Stuck && !instance.state.is_outcome() {
                // Out of stuck (resumed, or a late success): its timers run again.
                self.store.activate(&instance).await?;
            }
            let revision = match self.store.update(&instance, stored.revision).await {
                Ok(revision) => revision,
                Err(StoreError::Fenced { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            crash::reached(Boundary::AfterWrite);
            self.remember(&instance, revision);
            self.publish(&instance, &t.commands).await?;
            self.settled(&instance, &t).await?;
            return Ok(Some(instance));
        }
        Err(SagaError::Contended(id.to_string()))
    }

    /// Starts the instance of a trigger (or finds the one it started before).
    async fn start(&self, message: &Message) -> Result<(), SagaError> {
        let event = &message.event;
        let data = event.data().as_json().cloned().unwrap_or(Value::Null);
        if !self.saga.triggered_by(event.event_type().as_str(), &data) {
            return Ok(());
        }
        let trigger = Trigger {
            id: event.id().clone(),
            source: event.source().clone(),
            event_type: event.event_type().as_str().to_string(),
            data,
            correlation_id: event.correlation_id().map(str::to_string),
            stream: message.stream.to_string(),
            partition: message.partition,
        };
        let (instance, t) = self.saga.start(trigger, self.now());
        match self.store.create(&instance).await? {
            Some(revision) => {
                crash::reached(Boundary::AfterWrite);
                self.counters.started.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("runnel_saga_started_total", "saga" => self.saga.name().to_string())
                    .increment(1);
                self.remember(&instance, revision);
                // The index entry (for timers and a take-over) and the first commands at
                // once: the instance is written, and until both are done the trigger is not
                // acknowledged, so a crash in between delivers it again and it does both.
                let activate = async {
                    if instance.state.is_outcome() {
                        Ok(())
                    } else {
                        self.store.activate(&instance).await
                    }
                };
                let (activated, published) =
                    tokio::join!(activate, self.publish(&instance, &t.commands));
                activated?;
                published?;
                self.settled(&instance, &t).await?;
            }
            None => {
                // Delivered again: the instance exists. Finish what the first delivery may
                // not have: its index entry and its first commands.
                if let Some(stored) = self.store.get(self.saga.name(), &instance.id).await? {
                    let existing = stored.instance;
                    if !existing.state.is_outcome() {
                        self.store.activate(&existing).await?;
                    }
                    self.publish(&existing, &existing.in_flight()).await?;
                }
            }
        }
        Ok(())
    }

    /// Applies a reply to its instance.
    async fn reply(&self, message: &Message) -> Result<(), SagaError> {
        let event = &message.event;
        let event_type = event.event_type().as_str();
        if !self.saga.reply_types().contains(event_type) {
            return Ok(());
        }
        let Some(id) = event.correlation_id() else {
            return Ok(());
        };
        let reply = Reply {
            id: event.id().as_str().to_string(),
            event_type: event_type.to_string(),
            causation_id: event.causation_id().map(|c| c.as_str().to_string()),
            data: event.data().as_json().cloned().unwrap_or(Value::Null),
        };
        self.transition(id, |saga, instance, now| {
            Ok(saga.on_reply(instance, &reply, now))
        })
        .await?;
        crash::reached(Boundary::AfterReply);
        Ok(())
    }

    /// One timer pass over a home partition: ticks the instances due.
    async fn tick_partition(
        &self,
        stream: &str,
        partition: u32,
        resume: bool,
    ) -> Result<(), SagaError> {
        let ids = self
            .store
            .active(self.saga.name(), stream, partition)
            .await?;
        for id in ids {
            let Some(stored) = self.store.get(self.saga.name(), &id).await? else {
                continue;
            };
            let instance = stored.instance;
            match instance.state {
                SagaState::Completed | SagaState::Compensated => {
                    // Its outcome was written but not its removal from the index.
                    self.store.deactivate(&instance).await?;
                    continue;
                }
                // Left alone: an operator's retry lists it before writing it.
                SagaState::Stuck => continue,
                SagaState::Running | SagaState::Compensating => {}
            }
            if resume {
                self.publish(&instance, &instance.in_flight()).await?;
            }
            if instance.next_wake().is_some_and(|at| at <= self.now()) {
                self.transition(&id, |saga, instance, now| Ok(saga.on_tick(instance, now)))
                    .await?;
            }
        }
        Ok(())
    }
}

/// Locks `mutex`, also after a panic elsewhere (the cache is only an optimisation).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs sagas over consumer groups.
#[derive(Debug)]
pub struct SagaDriver;

impl SagaDriver {
    /// Joins `saga`'s groups and starts applying triggers, replies and timers.
    pub async fn start(
        runnel: &Runnel,
        saga: Saga,
        options: SagaOptions,
    ) -> Result<SagaHandle, SagaError> {
        let name = saga.name().to_string();
        let config_error = |reason: String| SagaError::Config {
            saga: name.clone(),
            reason,
        };
        let domains: BTreeSet<String> = saga
            .reply_types()
            .iter()
            .map(|t| t.split('.').next().unwrap_or(t).to_string())
            .collect();
        let mut groups = vec![(trigger_group(&name), saga.trigger().clone(), true)];
        for domain in &domains {
            let group = reply_group(&name, domain);
            runnel_runtime::validate_group_name(&group).map_err(|e| {
                config_error(format!(
                    "its replies of domain `{domain}` need group `{group}`: {e}"
                ))
            })?;
            let filter =
                TypePattern::new(format!("{domain}.>")).map_err(|e| config_error(e.to_string()))?;
            groups.push((group, filter, false));
        }
        // The streams the saga reads and writes, made now if missing: a group sees the
        // streams that exist when it balances its partitions.
        let mut streams: BTreeSet<String> = domains.clone();
        streams.extend(saga.steps().iter().flat_map(|s| {
            std::iter::once(s.command.domain().to_string()).chain(
                s.compensation
                    .as_ref()
                    .map(|c| c.command.domain().to_string()),
            )
        }));
        if let Some(domain) = saga.trigger().as_str().split('.').next()
            && !domain.contains(['*', '>'])
        {
            streams.insert(domain.to_string());
        }
        for stream in streams {
            ensure_stream(runnel, &stream).await?;
        }
        let core = Arc::new(Core::new(runnel, saga)?);
        let instance_id = options
            .instance_id
            .clone()
            .unwrap_or_else(|| EventId::new_v7().as_str().replace('-', ""));
        let mut consumers = Vec::new();
        for (group, filter, starts) in groups {
            let mut config = options
                .group
                .clone()
                .unwrap_or_else(|| GroupConfig::new(&group, filter.clone()));
            config.name = group.clone();
            config.filter = filter;
            config.processed_ids = false;
            let core = core.clone();
            let handler = move |message: Message| {
                let core = core.clone();
                async move {
                    let result = if starts {
                        core.start(&message).await
                    } else {
                        core.reply(&message).await
                    };
                    match result {
                        Ok(()) => Ok(Vec::new()),
                        Err(e @ (SagaError::Envelope(_) | SagaError::Config { .. })) => {
                            Err(HandlerError::permanent(e.to_string()))
                        }
                        Err(e) => Err(HandlerError::service(e.to_string())),
                    }
                }
            };
            let started = runnel
                .group(&group)
                .config(config)
                .instance_id(instance_id.clone())
                .blame_no_crashes()
                .run(handler)
                .await;
            match started {
                Ok(handle) => consumers.push(handle),
                Err(e) => {
                    for consumer in consumers {
                        let _ = consumer.stop().await;
                    }
                    return Err(SagaError::Group(e));
                }
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        let homes = Arc::new(consumers.remove(0));
        let timers = tokio::spawn(run_timers(
            core.clone(),
            homes.clone(),
            stop_rx,
            options.timer_every.max(Duration::from_millis(1)),
        ));
        Ok(SagaHandle {
            saga: name,
            homes,
            consumers,
            timers,
            stop,
            core,
        })
    }
}

/// Creates `name` with the runtime's default partitions unless it exists (as it was made).
async fn ensure_stream(runnel: &Runnel, name: &str) -> Result<(), SagaError> {
    let stream = StreamName::new(name).map_err(|e| SagaError::Group(e.into()))?;
    match runnel.backend().describe_stream(&stream).await {
        Ok(_) => return Ok(()),
        Err(BackendError::UnknownStream(_)) => {}
        Err(e) => return Err(SagaError::Group(e.into())),
    }
    let config = StreamConfig {
        partitions: runnel.config().default_partitions,
        ..StreamConfig::default()
    };
    match runnel.backend().create_stream(&stream, config).await {
        Ok(_) | Err(BackendError::StreamExists { .. }) => Ok(()),
        Err(e) => Err(SagaError::Group(e.into())),
    }
}

async fn run_timers(
    core: Arc<Core>,
    homes: Arc<ConsumerHandle>,
    mut stop: watch::Receiver<bool>,
    every: Duration,
) {
    let mut owned: BTreeSet<(String, u32)> = BTreeSet::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let now_owned: BTreeSet<(String, u32)> = homes
            .owned_partitions()
            .await
            .into_iter()
            .map(|(s, p)| (s.to_string(), p))
            .collect();
        for (stream, partition) in &now_owned {
            let taken_over = !owned.contains(&(stream.clone(), *partition));
            if let Err(error) = core.tick_partition(stream, *partition, taken_over).await {
                tracing::warn!(saga = core.saga.name(), %stream, partition, %error, "saga timers did not complete");
                continue;
            }
            owned.insert((stream.clone(), *partition));
        }
        owned.retain(|home| now_owned.contains(home));
    }
}

/// Controls a running saga driver.
pub struct SagaHandle {
    saga: String,
    /// The trigger group's consumer (shared with the timer task).
    homes: Arc<ConsumerHandle>,
    /// The reply groups' consumers.
    consumers: Vec<ConsumerHandle>,
    timers: JoinHandle<()>,
    stop: watch::Sender<bool>,
    core: Arc<Core>,
}

impl std::fmt::Debug for SagaHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaHandle")
            .field("saga", &self.saga)
            .finish_non_exhaustive()
    }
}

impl SagaHandle {
    /// The saga it runs.
    pub fn saga(&self) -> &str {
        &self.saga
    }

    /// The home partitions (of the trigger group) whose instances' timers this driver runs.
    pub async fn owned_homes(&self) -> Vec<(String, u32)> {
        self.homes
            .owned_partitions()
            .await
            .into_iter()
            .map(|(s, p)| (s.to_string(), p))
            .collect()
    }

    /// Instances this driver started and outcomes it reached, since it started.
    pub fn counts(&self) -> SagaCounts {
        self.core.counts()
    }

    /// Renews and rebalances every group's leases now.
    pub async fn rebalance_now(&self) -> Result<(), SagaError> {
        self.homes.rebalance_now().await.map_err(SagaError::Group)?;
        for consumer in &self.consumers {
            consumer.rebalance_now().await.map_err(SagaError::Group)?;
        }
        Ok(())
    }

    /// Stops cleanly: timers stop, events being applied finish, the groups commit and hand
    /// their partitions over.
    pub async fn stop(self) -> Result<(), SagaError> {
        let _ = self.stop.send(true);
        self.timers
            .await
            .map_err(|e| SagaError::Task(e.to_string()))?;
        let mut first_error = None;
        let mut consumers = self.consumers;
        match Arc::try_unwrap(self.homes) {
            Ok(homes) => consumers.insert(0, homes),
            Err(_) => {
                first_error = Some(SagaError::Task(
                    "the timer task still holds the trigger group".into(),
                ))
            }
        }
        for consumer in consumers {
            if let Err(e) = consumer.stop().await {
                first_error.get_or_insert(SagaError::Group(e));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
