//! A feature stage run over a consumer group, with durable checkpoints and the online store.
//!
//! [`FeaturePipeline::start`] joins the consumer group `features-<name>` (see [`group_name`])
//! subscribed to the spec's input pattern. Each instance runs the partitions it leases, one
//! [`FeatureStage`] per input partition: the state of a partition moves with its lease, and
//! its next owner restores it from the partition's checkpoint (see `checkpoint`). So a
//! pipeline scales out like any group, and a window is complete only if all its events are in
//! one partition: **the window key must be the partition key**, or a value that is a function
//! of it (a `/card_id` pointer whose value the producer also uses as the partition key). A key
//! read from data is accepted with a warning; with any other key a window's events would be
//! split between partitions and its results partial (one per partition, with one id: the
//! first published wins).
//!
//! Per partition, each cycle (a batch of deliveries, or a tick of `advance_every`):
//! 1. redelivered inputs whose offset the stage already reflects are acknowledged (or
//!    dead-lettered again, if the checkpoint says so) without being processed;
//! 2. new inputs are extracted and processed; an unusable one is reported to the stage with
//!    [`FeatureStage::skip`] and dead-lettered as permanent with the reason naming the field;
//!    a too-late one becomes an event for the late stream, with the reason;
//! 3. the stage advances on the injected clock, emitting the windows its watermark passed;
//! 4. the snapshot and the outputs (results, late events, dead letters) are written as one
//!    checkpoint, fenced by the previous checkpoint's revision;
//! 5. only then are inputs settled and outputs published (results with their deterministic
//!    ids, so a copy republished after a crash is deduplicated) and written to the store.
//!
//! Each partition has its own watermark: partitions never hold each other back, so a silent
//! partition cannot stall the others and idleness has nothing left to release. Within a
//! partition, events are processed in offset order (the group is configured with
//! `ordering = none`, so deliveries come in offset order, and every delivery taken is settled
//! in the same cycle).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use runnel_backend::{Partition, StreamName};
use runnel_clock::{Micros, SharedClock};
use runnel_envelope::{EnvelopeError, Event, EventType, Source};
use runnel_runtime::{
    Consumer, ConsumerHandle, Delivery, GroupConfig, HandlerError, Ordering, Runnel, RuntimeError,
    TypePattern,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::checkpoint::{CheckpointError, Checkpoints, Fence, Saved};
use crate::extract::EventTime;
use crate::result::WindowResult;
use crate::snapshot::{RestoreError, SnapshotError};
use crate::spec::{FeatureSpec, KeySource, SpecErrors};
use crate::stage::{FeatureStage, LateEvent, Outcome, StageCounters};
use crate::store::{FeatureStore, FeatureValue, StoreError};

/// Most characters of a feature name that a pipeline accepts: a group name has at most 56,
/// and the pipeline's is `features-<name>`.
pub const MAX_PIPELINE_NAME_LEN: usize = 56 - GROUP_PREFIX.len();

const GROUP_PREFIX: &str = "features-";

/// Feature-store writes of one cycle in flight at once.
const STORE_WRITES_AT_ONCE: usize = 64;

/// Extension attribute of a late event: why it was too late.
pub const LATE_REASON_EXTENSION: &str = "latereason";
/// Extension attribute of a late event: the feature it was too late for.
pub const LATE_FEATURE_EXTENSION: &str = "latefeature";

/// The consumer group of feature `name`'s pipeline.
pub fn group_name(name: &str) -> String {
    format!("{GROUP_PREFIX}{name}")
}

/// How a pipeline runs.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// This instance's id within the group (unique per instance). Default: a random id. An
    /// instance restarted with its old id takes its leases back at once; with a new id it
    /// waits for them to lapse (`lease_ttl`).
    pub instance_id: Option<String>,
    /// How often stages advance on the clock while no input arrives. Default 1 s.
    pub advance_every: Duration,
    /// Most deliveries taken into one cycle (one checkpoint per partition). Default 1000.
    pub max_batch: usize,
    /// After a cycle's first delivery, how long to wait for more before running it (up to
    /// `max_batch`): a checkpoint writes the partition's whole state, so cycles of a few
    /// deliveries each would write it once per few events. Default 20 ms (results and
    /// acknowledgements come that much later).
    pub linger: Duration,
    /// Settings of the consumer group (`ack_wait`, `lease_ttl`, `max_in_flight`, …); its
    /// name, filter, `ordering` (`none`) and `processed_ids` (off: checkpoints record what is
    /// done) are set by the pipeline. Default: the group defaults.
    pub group: Option<GroupConfig>,
    /// Where results are written for serving. Default: [`FeatureStore::new`] over the
    /// runtime's backend.
    pub store: Option<FeatureStore>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            instance_id: None,
            advance_every: Duration::from_secs(1),
            max_batch: 1000,
            linger: Duration::from_millis(20),
            group: None,
            store: None,
        }
    }
}

/// Why a pipeline failed to start or a partition failed to make progress.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The specification breaks a rule.
    #[error("feature specification: {0}")]
    Spec(#[from] SpecErrors),
    /// The feature cannot be run as a pipeline (its name or input pattern).
    #[error("feature `{name}`: {reason}")]
    Config {
        /// The feature.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Joining or reading the consumer group failed.
    #[error("consumer group: {0}")]
    Group(#[source] RuntimeError),
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A checkpoint could not be restored.
    #[error("restoring {stream}/{partition}: {source}")]
    Restore {
        /// The input stream.
        stream: StreamName,
        /// The input partition.
        partition: Partition,
        /// Why.
        source: RestoreError,
    },
    /// The stage could not be snapshotted.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A saved outbox could not be read back.
    #[error("the outbox of {stream}/{partition} is damaged: {reason}")]
    Outbox {
        /// The input stream.
        stream: StreamName,
        /// The input partition.
        partition: Partition,
        /// What is wrong.
        reason: String,
    },
    /// A result could not be made into an event.
    #[error("result event: {0}")]
    Envelope(#[from] EnvelopeError),
    /// Publishing results or late events failed (retried at the next cycle).
    #[error("publishing: {0}")]
    Publish(#[source] RuntimeError),
    /// Writing the online store failed (retried at the next cycle).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The pipeline's task panicked.
    #[error("the pipeline task failed: {0}")]
    Task(String),
}

/// A result waiting to be published, with the watermark that fired it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PendingResult {
    result: WindowResult,
    watermark: Option<EventTime>,
}

/// Outputs decided but not yet known to be out.
#[derive(Debug, Default)]
struct Outbox {
    results: Vec<PendingResult>,
    late: Vec<Event>,
    /// Inputs to dead-letter, kept until the group has committed past them.
    dead: Vec<(u64, String)>,
}

struct PartitionState {
    stage: FeatureStage,
    fence: Fence,
    outbox: Outbox,
    /// The stored checkpoint lists outputs published since: rewrite it without them.
    stored_outbox_stale: bool,
    checkpoint_bytes: usize,
}

/// What a partition of a running pipeline has done, as of its last cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    /// The next input offset to process.
    pub next_offset: u64,
    /// The partition's watermark.
    pub watermark: Option<EventTime>,
    /// The stage's running totals.
    pub counters: StageCounters,
    /// (key, window) pairs open.
    pub open_windows: u64,
    /// Approximate bytes of window state in memory.
    pub state_bytes: usize,
    /// Bytes of the last checkpoint written.
    pub checkpoint_bytes: usize,
    /// Results and late events not yet published.
    pub unpublished: usize,
}

/// What a running pipeline instance is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineStatus {
    /// Partitions this instance runs.
    pub partitions: BTreeMap<(StreamName, Partition), PartitionStatus>,
    /// Cycles run.
    pub cycles: u64,
    /// The last error of a partition (it is retried).
    pub last_error: Option<String>,
}

/// Runs feature stages over a consumer group.
#[derive(Debug)]
pub struct FeaturePipeline;

impl FeaturePipeline {
    /// Validates `spec`, joins its group and starts running the partitions this instance
    /// leases.
    pub async fn start(
        runnel: &Runnel,
        spec: FeatureSpec,
        options: PipelineOptions,
    ) -> Result<FeaturePipelineHandle, PipelineError> {
        spec.validate()?;
        let config_error = |reason: String| PipelineError::Config {
            name: spec.name.clone(),
            reason,
        };
        if spec.name.len() > MAX_PIPELINE_NAME_LEN {
            return Err(config_error(format!(
                "a pipeline's name has at most {MAX_PIPELINE_NAME_LEN} characters (its group is \
                 `{GROUP_PREFIX}<name>`)"
            )));
        }
        let filter = TypePattern::new(spec.input.clone())
            .map_err(|e| config_error(format!("input: {e}")))?;
        if let KeySource::Data(pointer) = &spec.key {
            tracing::warn!(
                feature = spec.name.as_str(),
                key = pointer.as_str(),
                "the window key is read from data: state is kept per input partition, so \
                 windows are complete only if the key is a function of the partition key"
            );
        }
        let source = Source::new(format!("runnel://features/{}", spec.name))?;
        let group = group_name(&spec.name);
        let mut config = options
            .group
            .clone()
            .unwrap_or_else(|| GroupConfig::new(&group, filter.clone()));
        config.name = group.clone();
        config.filter = filter;
        config.ordering = Ordering::None;
        config.processed_ids = false;
        // The pipeline's state survives a crash in its checkpoints, and a server dying is no
        // input's fault: as a relay, the group counts no crash against the inputs in flight
        // when it dies (otherwise a few kills dead-letter them as `crash_loop`, and their
        // windows miss them).
        let mut builder = runnel.group(&group).config(config).relay();
        if let Some(instance) = &options.instance_id {
            builder = builder.instance_id(instance.clone());
        }
        let consumer = builder.start().await.map_err(PipelineError::Group)?;
        let handle = consumer.handle();
        let status = Arc::new(Mutex::new(PipelineStatus::default()));
        let pipeline = Pipeline {
            store: options
                .store
                .clone()
                .unwrap_or_else(|| FeatureStore::new(runnel.backend().clone())),
            runnel: runnel.clone(),
            clock: runnel.config().clock.clone(),
            checkpoints: Checkpoints::new(&spec.name),
            output: spec.output.clone(),
            late_scope: format!("{group}/late"),
            group,
            source,
            spec,
            partitions: HashMap::new(),
            status: status.clone(),
        };
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(pipeline.run(
            consumer,
            stop_rx,
            options.advance_every.max(Duration::from_millis(1)),
            options.max_batch.max(1),
            options.linger,
        ));
        Ok(FeaturePipelineHandle {
            task,
            stop,
            status,
            consumer: handle,
        })
    }
}

/// Controls a running pipeline instance.
pub struct FeaturePipelineHandle {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
    status: Arc<Mutex<PipelineStatus>>,
    consumer: ConsumerHandle,
}

impl std::fmt::Debug for FeaturePipelineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeaturePipelineHandle")
            .field("instance", &self.consumer.instance_id())
            .finish_non_exhaustive()
    }
}

impl FeaturePipelineHandle {
    /// What the instance is doing.
    pub fn status(&self) -> PipelineStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// This instance's id in the group.
    pub fn instance_id(&self) -> &str {
        self.consumer.instance_id()
    }

    /// The input partitions this instance leases.
    pub async fn owned_partitions(&self) -> Vec<(StreamName, Partition)> {
        self.consumer.owned_partitions().await
    }

    /// Renews and rebalances the group's leases now (otherwise every third of `lease_ttl`).
    pub async fn rebalance_now(&self) -> Result<(), PipelineError> {
        self.consumer
            .rebalance_now()
            .await
            .map_err(PipelineError::Group)
    }

    /// Stops cleanly: the cycle under way finishes (everything taken is checkpointed and
    /// settled), then the group commits and releases its leases.
    pub async fn stop(self) -> Result<(), PipelineError> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| PipelineError::Task(e.to_string()))?;
        self.consumer.stop().await.map_err(PipelineError::Group)
    }

    /// Stops at once, as a crash would: nothing more is written or settled, and the leases
    /// stay until they lapse (or this instance id joins again).
    pub fn abort(self) {
        self.task.abort();
    }
}

struct Pipeline {
    runnel: Runnel,
    spec: FeatureSpec,
    group: String,
    output: EventType,
    source: Source,
    late_scope: String,
    checkpoints: Checkpoints,
    store: FeatureStore,
    clock: SharedClock,
    partitions: HashMap<(StreamName, Partition), PartitionState>,
    status: Arc<Mutex<PipelineStatus>>,
}

/// What to do with a delivery once the checkpoint is written.
enum Settle {
    Ack,
    DeadLetter(String),
}

impl Pipeline {
    async fn run(
        mut self,
        mut consumer: Consumer,
        mut stop: watch::Receiver<bool>,
        every: Duration,
        max_batch: usize,
        linger: Duration,
    ) {
        let handle = consumer.handle();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut batch = Vec::new();
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                delivery = consumer.next() => match delivery {
                    Some(delivery) => batch.push(delivery),
                    None => break,
                },
                _ = tick.tick() => {}
            }
            let lingered = tokio::time::Instant::now() + linger;
            while !batch.is_empty() && batch.len() < max_batch {
                let next = match consumer.next().now_or_never() {
                    Some(next) => next,
                    None if linger.is_zero() => break,
                    None => match tokio::time::timeout_at(lingered, consumer.next()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    },
                };
                match next {
                    Some(delivery) => batch.push(delivery),
                    None => break,
                }
            }
            self.cycle(&handle, batch).await;
        }
    }

    async fn cycle(&mut self, handle: &ConsumerHandle, batch: Vec<Delivery>) {
        let now = self.clock.now_micros();
        let owned: BTreeSet<(StreamName, Partition)> =
            handle.owned_partitions().await.into_iter().collect();
        // A partition that moved away is the new owner's, restored from its checkpoint.
        self.partitions.retain(|key, _| owned.contains(key));
        let mut by_partition: BTreeMap<(StreamName, Partition), Vec<Delivery>> = BTreeMap::new();
        for delivery in batch {
            // Settling a delivery of a partition that moved would not count.
            if delivery.is_current() {
                by_partition
                    .entry((delivery.stream.clone(), delivery.partition))
                    .or_default()
                    .push(delivery);
            }
        }
        let mut keys: BTreeSet<(StreamName, Partition)> = owned;
        keys.extend(by_partition.keys().cloned());
        let mut last_error = None;
        for key in keys {
            let deliveries = by_partition.remove(&key).unwrap_or_default();
            if let Err(error) = self.run_partition(&key, deliveries, now).await {
                tracing::warn!(
                    feature = self.spec.name.as_str(),
                    stream = %key.0,
                    partition = key.1,
                    %error,
                    "feature partition did not complete its cycle"
                );
                if matches!(
                    error,
                    PipelineError::Checkpoint(_)
                        | PipelineError::Restore { .. }
                        | PipelineError::Snapshot(_)
                        | PipelineError::Outbox { .. }
                ) {
                    // Its state may be ahead of its checkpoint: reload from the checkpoint
                    // (the deliveries left unsettled are delivered again).
                    self.partitions.remove(&key);
                }
                last_error = Some(error.to_string());
            }
        }
        self.report(now, last_error);
    }

    async fn run_partition(
        &mut self,
        key: &(StreamName, Partition),
        deliveries: Vec<Delivery>,
        now: Micros,
    ) -> Result<(), PipelineError> {
        if !self.partitions.contains_key(key) {
            let state = self.load(key, now).await?;
            self.partitions.insert(key.clone(), state);
        }
        let Some(mut state) = self.partitions.remove(key) else {
            return Ok(());
        };
        let result = self.step(key, &mut state, deliveries, now).await;
        self.partitions.insert(key.clone(), state);
        result
    }

    async fn load(
        &self,
        (stream, partition): &(StreamName, Partition),
        now: Micros,
    ) -> Result<PartitionState, PipelineError> {
        let backend = self.runnel.backend().as_ref();
        let Some(loaded) = self.checkpoints.load(backend, stream, *partition).await? else {
            return Ok(PartitionState {
                stage: FeatureStage::new(self.spec.clone(), [*partition], now)?,
                fence: Fence::default(),
                outbox: Outbox::default(),
                stored_outbox_stale: false,
                checkpoint_bytes: 0,
            });
        };
        let stage =
            FeatureStage::restore(self.spec.clone(), &loaded.saved.snapshot, [*partition], now)
                .map_err(|source| PipelineError::Restore {
                    stream: stream.clone(),
                    partition: *partition,
                    source,
                })?;
        let damaged = |reason: String| PipelineError::Outbox {
            stream: stream.clone(),
            partition: *partition,
            reason,
        };
        let results: Vec<PendingResult> = if loaded.saved.results_json.is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(&loaded.saved.results_json)
                .map_err(|e| damaged(e.to_string()))?
        };
        let late = loaded
            .saved
            .late
            .iter()
            .map(|bytes| Event::decode_binary(bytes).map_err(|e| damaged(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(
            feature = self.spec.name.as_str(),
            %stream,
            partition,
            results = results.len(),
            late = late.len(),
            "restored a feature partition from its checkpoint"
        );
        Ok(PartitionState {
            stage,
            fence: loaded.fence,
            outbox: Outbox {
                results,
                late,
                dead: loaded.saved.dead,
            },
            stored_outbox_stale: false,
            checkpoint_bytes: 0,
        })
    }

    async fn step(
        &self,
        (stream, partition): &(StreamName, Partition),
        state: &mut PartitionState,
        deliveries: Vec<Delivery>,
        now: Micros,
    ) -> Result<(), PipelineError> {
        let partition = *partition;
        let mut settle = Vec::with_capacity(deliveries.len());
        let mut changed = false;
        for delivery in deliveries {
            let next = state.stage.offsets().get(&partition).copied().unwrap_or(0);
            if delivery.offset < next {
                // Reflected by the checkpoint already: a redelivery after a crash or a move.
                let dead = state
                    .outbox
                    .dead
                    .iter()
                    .find(|(o, _)| *o == delivery.offset);
                let action = match dead {
                    Some((_, reason)) => Settle::DeadLetter(reason.clone()),
                    None => Settle::Ack,
                };
                settle.push((delivery, action));
                continue;
            }
            changed = true;
            let action = self.process(partition, state, &delivery);
            if let Settle::DeadLetter(reason) = &action {
                state.outbox.dead.push((delivery.offset, reason.clone()));
            }
            settle.push((delivery, action));
        }
        let results = state.stage.advance(now);
        if !results.is_empty() {
            changed = true;
            let watermark = state.stage.watermark();
            state.outbox.results.extend(
                results
                    .into_iter()
                    .map(|result| PendingResult { result, watermark }),
            );
        }
        if !state.outbox.dead.is_empty() {
            // Dead letters are kept (to be sent again after a crash) until the group has
            // committed past them, which it does only once they are in the queue.
            let committed = self
                .runnel
                .backend()
                .committed_offset(&self.group, stream, partition)
                .await
                .map_err(|e| PipelineError::Group(e.into()))?;
            if let Some(committed) = committed {
                let before = state.outbox.dead.len();
                state.outbox.dead.retain(|(o, _)| *o >= committed.offset);
                changed |= state.outbox.dead.len() != before;
            }
        }
        if changed || state.stored_outbox_stale {
            let saved = Saved {
                snapshot: state.stage.snapshot()?,
                results_json: if state.outbox.results.is_empty() {
                    Vec::new()
                } else {
                    serde_json::to_vec(&state.outbox.results).map_err(|e| {
                        PipelineError::Outbox {
                            stream: stream.clone(),
                            partition,
                            reason: e.to_string(),
                        }
                    })?
                },
                late: state
                    .outbox
                    .late
                    .iter()
                    .map(|e| e.encode_binary().to_vec())
                    .collect(),
                dead: state.outbox.dead.clone(),
            };
            let backend = self.runnel.backend().as_ref();
            state.checkpoint_bytes = self
                .checkpoints
                .store(backend, stream, partition, &saved, &mut state.fence)
                .await?;
            state.stored_outbox_stale = false;
        }
        for (delivery, action) in settle {
            match action {
                Settle::Ack => delivery.ack(),
                Settle::DeadLetter(reason) => delivery.nack(HandlerError::permanent(reason)),
            }
        }
        self.flush(state, now).await
    }

    /// Feeds one new delivery to the stage; says how to settle it.
    fn process(
        &self,
        partition: Partition,
        state: &mut PartitionState,
        delivery: &Delivery,
    ) -> Settle {
        let event = &delivery.event;
        let refused = match state.stage.extract(event) {
            Err(error) => Some(error.to_string()),
            Ok(record) => match state.stage.process(partition, delivery.offset, &record) {
                Err(error) => Some(error.to_string()),
                Ok(Outcome::TooLate(why)) => {
                    return match self.late_event(event, &why) {
                        Ok(late) => {
                            metrics::counter!("runnel_late_events_total", "feature" => self.spec.name.clone())
                                .increment(1);
                            state.outbox.late.push(late);
                            Settle::Ack
                        }
                        Err(reason) => Settle::DeadLetter(reason),
                    };
                }
                Ok(Outcome::Accepted | Outcome::Late) => None,
            },
        };
        match refused {
            None => Settle::Ack,
            Some(reason) => {
                let time = event.time().map(|t| t.timestamp_micros());
                state.stage.skip(partition, delivery.offset, time);
                metrics::counter!("runnel_feature_dead_lettered_total", "feature" => self.spec.name.clone())
                    .increment(1);
                Settle::DeadLetter(format!("feature `{}`: {reason}", self.spec.name))
            }
        }
    }

    /// The input re-addressed to the late stream: type `<late stream>.<fact>`, the same data,
    /// source, subject, key and time, a derived id, caused by the input, with the reason.
    fn late_event(&self, event: &Event, why: &LateEvent) -> Result<Event, String> {
        let (domain, fact) = event
            .event_type()
            .as_str()
            .split_once('.')
            .unwrap_or((event.event_type().as_str(), "late"));
        let stream = self
            .spec
            .late_stream()
            .unwrap_or_else(|| format!("{domain}_late"));
        let fail = |e: EnvelopeError| {
            format!(
                "feature `{}`: {why}; and it cannot go to the late stream `{stream}`: {e}",
                self.spec.name
            )
        };
        let event_type = EventType::new(format!("{stream}.{fact}")).map_err(fail)?;
        let mut builder = Event::builder(event_type, event.source().clone())
            .id(event.derived_id(&self.late_scope, 0))
            .caused_by(event)
            .data(
                event.data().clone(),
                event.data_content_type().map(str::to_string),
            )
            .extension(LATE_REASON_EXTENSION, why.to_string())
            .extension(LATE_FEATURE_EXTENSION, self.spec.name.clone());
        builder = match event.time() {
            Some(time) => builder.time(time),
            None => builder.without_time(),
        };
        if let Some(subject) = event.subject() {
            builder = builder.subject(subject);
        }
        if let Some(key) = event.partition_key() {
            builder = builder.partition_key(key);
        }
        builder.build().map_err(fail)
    }

    /// Publishes the outbox and writes results to the store; on failure it stays for the next
    /// cycle (the checkpoint holds it too).
    async fn flush(&self, state: &mut PartitionState, now: Micros) -> Result<(), PipelineError> {
        let outbox = &mut state.outbox;
        if outbox.results.is_empty() && outbox.late.is_empty() {
            return Ok(());
        }
        let mut events = Vec::with_capacity(outbox.results.len() + outbox.late.len());
        for pending in &outbox.results {
            events.push(pending.result.to_event(&self.output, &self.source)?);
        }
        events.extend(outbox.late.iter().cloned());
        self.runnel
            .publish_batch(events)
            .await
            .map_err(PipelineError::Publish)?;
        // Only the newest value of a key can stay in the store: one write per key, and the
        // keys written concurrently, so their durable writes share commits.
        let mut newest: HashMap<&str, FeatureValue> = HashMap::new();
        for pending in &outbox.results {
            let value = FeatureValue::of(&pending.result, pending.watermark, now);
            match newest.get(pending.result.key.as_str()) {
                Some(kept) if !value.supersedes(kept) => {}
                _ => {
                    newest.insert(pending.result.key.as_str(), value);
                }
            }
        }
        let set = self.spec.name.as_str();
        let newest: Vec<(&str, FeatureValue)> = newest.into_iter().collect();
        for chunk in newest.chunks(STORE_WRITES_AT_ONCE) {
            futures::future::try_join_all(
                chunk
                    .iter()
                    .map(|(key, value)| self.store.put(set, key, value)),
            )
            .await?;
        }
        metrics::counter!("runnel_feature_results_total", "feature" => self.spec.name.clone())
            .increment(outbox.results.len() as u64);
        outbox.results.clear();
        outbox.late.clear();
        state.stored_outbox_stale = true;
        Ok(())
    }

    fn report(&self, now: Micros, last_error: Option<String>) {
        let mut partitions = BTreeMap::new();
        for ((stream, partition), state) in &self.partitions {
            let stats = state.stage.stats();
            let watermark = state.stage.watermark();
            let labels = [
                ("feature", self.spec.name.clone()),
                ("stream", stream.to_string()),
                ("partition", partition.to_string()),
            ];
            if let Some(watermark) = watermark {
                let lag = (now as i128 - watermark as i128).max(0) as f64 / 1e6;
                metrics::gauge!("runnel_feature_watermark_lag_seconds", &labels).set(lag);
            }
            metrics::gauge!("runnel_feature_open_windows", &labels).set(stats.open_windows as f64);
            metrics::gauge!("runnel_feature_state_bytes", &labels).set(stats.state_bytes as f64);
            partitions.insert(
                (stream.clone(), *partition),
                PartitionStatus {
                    next_offset: state.stage.offsets().get(partition).copied().unwrap_or(0),
                    watermark,
                    counters: state.stage.counters(),
                    open_windows: stats.open_windows,
                    state_bytes: stats.state_bytes,
                    checkpoint_bytes: state.checkpoint_bytes,
                    unpublished: state.outbox.results.len() + state.outbox.late.len(),
                },
            );
        }
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.partitions = partitions;
        status.cycles += 1;
        if last_error.is_some() {
            status.last_error = last_error;
        }
    }
}
